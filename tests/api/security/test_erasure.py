"""Item 3: erasure that erases. After `erase_run`, no file of the data directory (database,
WAL, key files), and no PostgreSQL page (pageinspect), holds the run's data key, its wrapped
copy, or a KEK that unwraps such a copy; the payloads of other runs still decrypt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf_ledger.core.events import commit_fields, make_event, sign_event
from rlhf_ledger.core.keys import Signer, read_secret_file
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.payloads import PayloadError

from ..conftest import PASSPHRASE, create_pg_database, drop_pg_database, pg_available


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def _pg_pages(url: str) -> bytes:
    """Every page of every relation of the database's public schema (heap, TOAST, indexes)."""
    import psycopg

    out = []
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        rels = conn.execute(
            "SELECT c.oid::regclass::text, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'pg_toast') AND c.relkind IN ('r', 'i', 't') AND c.relpersistence = 'p'"
        ).fetchall()
        for name, size in rels:
            for blk in range(size // 8192):
                try:
                    out.append(conn.execute("SELECT get_raw_page(%s, %s)", (name, blk)).fetchone()[0])
                except psycopg.Error:  # relations of other schemas' toast we may not read
                    continue
    return b"".join(out)


def _setup(data_dir: Path, url: str | None):
    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    ledger = Ledger.open(data_dir, url)
    ledger.init_log("erase")
    s = Signer.generate()
    ledger.register_producer("erase", s.public_key)
    envs = []
    for i, run in enumerate(["victim", "victim", "keeper"]):
        body, op = commit_fields({"prompt": f"personal data {run} {i}", "annotator": "alice@example.com"}, ["prompt", "annotator"])
        seq = {"victim": [0, 1], "keeper": [0]}[run][0 if i in (0, 2) else 1]
        prev = None
        if seq:
            from rlhf_ledger.core.events import sha256_hex
            from rlhf_ledger.core.jcs import canonicalize

            prev = sha256_hex(canonicalize(envs[0]["event"]))
        ev = make_event(log_id="erase", run_id=run, type="annotation.batch", producer=s.key_id, seq=seq, prev=prev, body=body)
        env = sign_event(ev, s)
        env["openings"] = op
        envs.append(env)
    results = ledger.append(envs, log_id="erase")
    return ledger, [r.index for r in results]  # the log's own key event comes first: not index 0


def _secrets_of_victim(ledger: Ledger) -> dict[str, bytes]:
    from rlhf_ledger.store import db

    crypto = ledger._payload_crypto()
    with ledger.engine.connect() as conn:
        row = conn.execute(db.run_keys.select().where(db.run_keys.c.run_id == "victim")).first()
        conn.rollback()
    wrapped = bytes(row.wrapped_key)
    kid, kek, _ = crypto.ring.kek_for(wrapped)
    return {"data key": crypto.unwrap(wrapped, "erase", "victim"), "wrapped key": wrapped, "KEK": kek}


def _check(ledger: Ledger, idx: list[int], data_dir: Path, url: str | None) -> None:
    assert ledger.read_payload("erase", idx[0])["prompt"]["value"] == "personal data victim 0"
    secrets = _secrets_of_victim(ledger)
    haystack = b"".join(_files(data_dir).values()) + (_pg_pages(url) if url else b"")
    assert secrets["wrapped key"] in haystack  # control: the search sees stored keys
    old_kek_files = {k: v for k, v in _files(data_dir).items() if "payload-kek" in k}

    erased = ledger.erase_run("erase", "victim")
    assert not erased.already and erased.recorded == [("erase", idx[-1] + 1)]  # the erasure event

    with pytest.raises(PayloadError):
        ledger.read_payload("erase", idx[0])
    assert ledger.read_payload("erase", idx[2])["prompt"]["value"] == "personal data keeper 2"  # others still decrypt
    files = _files(data_dir)
    haystack = b"".join(files.values()) + (_pg_pages(url) if url else b"")
    for what, value in secrets.items():
        assert value not in haystack, f"the erased run's {what} survives"
    for name, content in old_kek_files.items():
        assert name not in files and content not in haystack, f"old KEK file {name} survives"
    # any KEK still present: none unwraps any stored copy of the victim's key
    from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt as aead_open
    from nacl.exceptions import CryptoError

    keks = [read_secret_file(data_dir / k, PASSPHRASE) for k in files if k.startswith("keys/payload-kek")]
    assert keks
    aad = b"run-key\nerase\nvictim"
    tried = 0
    for kek in keks:
        start = 0
        while (i := haystack.find(b"\x01", start)) >= 0 and tried < 2_000_000:
            start = i + 1
            blob = haystack[i + 9:i + 9 + 60]
            if len(blob) < 60:
                break
            tried += 1
            try:
                aead_open(blob[12:], aad, blob[:12], kek)
            except CryptoError:
                continue
            raise AssertionError(f"a stored copy of the erased key unwraps at offset {i}")
    if url is None:
        wal = data_dir / "ledger.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size == 0 or secrets["wrapped key"] not in wal.read_bytes()


def test_erasure_sqlite(tmp_path):
    d = tmp_path / "data"
    ledger, idx = _setup(d, None)
    try:
        _check(ledger, idx, d, None)
    finally:
        ledger.close()


@pytest.mark.postgres
def test_erasure_postgres(tmp_path):
    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = create_pg_database()
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    d = tmp_path / "data"
    ledger, idx = _setup(d, url)
    try:
        _check(ledger, idx, d, url)
    finally:
        ledger.close()
        drop_pg_database(name)


@pytest.mark.postgres
def test_postgres_erasure_waits_for_older_snapshots(tmp_path):
    """A reader whose snapshot predates the erasure can still see the old row version, and VACUUM
    FULL must keep it for them: the erasure waits for it, or says so (`snapshot_busy`) and a
    second run finishes. Either way no copy of the wrapped key is left once it returns."""
    import threading

    import psycopg

    from rlhf_ledger.core.errors import LedgerError
    from rlhf_ledger.store import db

    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = create_pg_database()
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    ledger, idx = _setup(tmp_path / "data", url)
    try:
        def wrapped_now() -> dict[str, bytes]:
            with ledger.engine.connect() as conn:
                out = {r.run_id: bytes(r.wrapped_key) for r in conn.execute(db.run_keys.select()) if r.wrapped_key}
                conn.rollback()
            return out

        wrapped = wrapped_now()

        def reader() -> psycopg.Connection:
            c = psycopg.connect(url)
            c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            assert c.execute("SELECT count(*) FROM run_keys").fetchone()[0] >= 2  # the snapshot is taken
            return c

        # 1. a reader ends after a second: the erasure waits for it, then drops the old version
        old = reader()
        done: list = []
        t = threading.Thread(target=lambda: done.append(ledger.erase_run("erase", "victim")))
        t.start()
        t.join(1.0)
        assert t.is_alive()  # waiting for the reader
        old.rollback()
        old.close()
        t.join(30)
        assert done and done[0].recorded
        assert wrapped["victim"] not in _pg_pages(url)

        # 2. a transaction holding an xid in another database of the server also keeps the old
        #    version (its xid bounds what VACUUM may remove): waited for in the same way
        from tests.ledger.helpers import Producer

        p = Producer("erase")
        ledger.register_producer("erase", p.signer.public_key)
        body, op = commit_fields({"prompt": "more personal data"}, ["prompt"])
        ledger.append([{**p.event("victim-2", "annotation.batch", body), "openings": op}])
        victim2 = wrapped_now()["victim-2"]
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as other:
            other.execute("SELECT txid_current()")
            done.clear()
            t = threading.Thread(target=lambda: done.append(ledger.erase_run("erase", "victim-2")))
            t.start()
            t.join(1.0)
            assert t.is_alive()
            other.rollback()
        t.join(30)
        assert done and done[0].recorded and victim2 not in _pg_pages(url)

        # 3. a reader that stays: a clear error, the old version still there; a second run finishes
        ledger.erase_wait_seconds = 0.5
        wrapped = wrapped_now()  # the keeper's key was re-wrapped under a new KEK by steps 1 and 2
        old = reader()
        try:
            with pytest.raises(LedgerError, match="begun before the erasure still runs") as e:
                ledger.erase_run("erase", "keeper")
            assert e.value.code == "snapshot_busy"
            assert wrapped["keeper"] in _pg_pages(url)  # kept for the reader (under a KEK now shredded)
        finally:
            old.rollback()
            old.close()
        ledger.erase_wait_seconds = 30.0  # other users of the shared server may hold an xid for a moment
        again = ledger.erase_run("erase", "keeper")
        assert again.already and wrapped["keeper"] not in _pg_pages(url)
    finally:
        ledger.close()
        drop_pg_database(name)
