"""Item 3: erasure that erases. After `erase_run`, no file of the data directory (database,
WAL, key files), and no PostgreSQL page (pageinspect), holds the run's data key, its wrapped
copy, or a KEK that unwraps such a copy; the payloads of other runs still decrypt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger.events import commit_fields, make_event, sign_event
from ledger.keys import Signer, read_secret_file
from ledger.payloads import PayloadError
from ledger.store import Ledger

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


def _setup(data_dir: Path, url: str | None) -> tuple[Ledger, list[int]]:
    """The ledger and the indices of the three events (victim, victim, keeper): they follow the
    producer's key event (docs/keys.md)."""
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
            from ledger.events import sha256_hex
            from ledger.jcs import canonicalize

            prev = sha256_hex(canonicalize(envs[0]["event"]))
        ev = make_event(log_id="erase", run_id=run, type="annotation.batch", producer=s.key_id, seq=seq, prev=prev, body=body)
        env = sign_event(ev, s)
        env["openings"] = op
        envs.append(env)
    results = ledger.append(envs, log_id="erase")
    return ledger, [r.index for r in results]


def _secrets_of_victim(ledger: Ledger) -> dict[str, bytes]:
    from ledger import db

    crypto = ledger._payload_crypto()
    with ledger.engine.connect() as conn:
        row = conn.execute(db.run_keys.select().where(db.run_keys.c.run_id == "victim")).first()
        conn.rollback()
    wrapped = bytes(row.wrapped_key)
    kid, kek, _ = crypto.ring.kek_for(wrapped)
    return {"data key": crypto.unwrap(wrapped, "erase", "victim"), "wrapped key": wrapped, "KEK": kek}


def _check(ledger: Ledger, indices: list[int], data_dir: Path, url: str | None) -> None:
    victim, _, keeper = indices
    assert ledger.read_payload("erase", victim)["prompt"]["value"] == "personal data victim 0"
    secrets = _secrets_of_victim(ledger)
    haystack = b"".join(_files(data_dir).values()) + (_pg_pages(url) if url else b"")
    assert secrets["wrapped key"] in haystack  # control: the search sees stored keys
    old_kek_files = {k: v for k, v in _files(data_dir).items() if "payload-kek" in k}

    assert ledger.erase_run("erase", "victim") == 1

    with pytest.raises(PayloadError):
        ledger.read_payload("erase", victim)
    assert ledger.read_payload("erase", keeper)["prompt"]["value"] == "personal data keeper 2"  # others still decrypt
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
    ledger, indices = _setup(d, None)
    try:
        _check(ledger, indices, d, None)
    finally:
        ledger.close()


@pytest.mark.postgres
def test_erasure_postgres(tmp_path):
    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = create_pg_database()
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    d = tmp_path / "data"
    ledger, indices = _setup(d, url)
    try:
        _check(ledger, indices, d, url)
    finally:
        ledger.close()
        drop_pg_database(name)
