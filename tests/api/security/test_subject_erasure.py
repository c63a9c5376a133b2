"""Erasure of one person (issue 14, item 7): after `erase_subject`, no file of the data directory
(database, WAL, key files; searched byte for byte, and with `strings` on the SQLite file and its
WAL) and no PostgreSQL page (pageinspect) holds the person's clear values, their subject key, a
stored copy of it that any KEK still present unwraps, or a key derived from it; the other
people's openings, in the same entries and runs, still read."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt as aead_open
from nacl.exceptions import CryptoError

from rlhf_ledger.core.events import commit_fields
from rlhf_ledger.core.keys import read_secret_file
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.payloads import opening_key
from tests.ledger.helpers import Producer

from ..conftest import PASSPHRASE, create_pg_database, drop_pg_database, pg_available
from .test_erasure import _files, _pg_pages

VICTIM = "anp:" + "7e" * 32
KEEPER = "anp:" + "4b" * 32


def _setup(data_dir: Path, url: str | None):
    """The victim's data in three runs of two logs; the keeper's beside it (same entries, other members)."""
    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    ledger = Ledger.open(data_dir, url)
    placed = []  # (log, index, {member: (subjects, clear value)})
    for log_id, runs in (("people-a", ["r1", "r2"]), ("people-b", ["r3"])):
        ledger.init_log(log_id)
        p = Producer(log_id)
        ledger.register_producer(log_id, p.signer.public_key)
        for run in runs:
            values = {"prompts": f"victim prompt {run} 31337", "responses": f"keeper response {run} 424242",
                      "notes": f"shared note {run} 8086"}
            body, op = commit_fields(dict(values), list(values))
            env = p.event(run_id=run, type="annotation.batch", body=body)
            env["openings"] = op
            env["subjects"] = {"prompts": [VICTIM], "responses": [KEEPER], "notes": [KEEPER, VICTIM]}
            [r] = ledger.append([env])
            placed.append((log_id, r.index, r.event_id, values))
    return ledger, placed


def _victim_secrets(ledger: Ledger, placed) -> dict[str, bytes]:
    crypto = ledger._payload_crypto()
    with ledger.engine.connect() as conn:
        wrapped = bytes(conn.execute(sa.select(db.subject_keys.c.wrapped_key).where(db.subject_keys.c.subject == VICTIM)).scalar_one())
        keeper = bytes(conn.execute(sa.select(db.subject_keys.c.wrapped_key).where(db.subject_keys.c.subject == KEEPER)).scalar_one())
        conn.rollback()
    _, kek, _ = crypto.ring.kek_for(wrapped)
    key = crypto.unwrap_subject(wrapped, VICTIM)
    keeper_key = crypto.unwrap_subject(keeper, KEEPER)
    out = {"subject key": key, "wrapped subject key": wrapped, "KEK": kek}
    for log_id, idx, _, _ in placed:  # the keys that sealed the victim's openings
        out[f"opening key {log_id}/{idx}/prompts"] = opening_key([key], log_id, idx, "prompts", [VICTIM])
        both = sorted([(KEEPER, keeper_key), (VICTIM, key)])
        out[f"opening key {log_id}/{idx}/notes"] = opening_key([k for _, k in both], log_id, idx, "notes", [s for s, _ in both])
    return out


def _strings(path: Path) -> str:
    if not path.exists():
        return ""
    return subprocess.run([shutil.which("strings") or "strings", "-a", "-n", "6", str(path)], capture_output=True, text=True,
                          check=True).stdout


def _check(ledger: Ledger, placed, data_dir: Path, url: str | None) -> None:
    victim_values = [v["prompts"] for *_, v in placed] + [v["notes"] for *_, v in placed]
    keeper_values = [v["responses"] for *_, v in placed]
    for log_id, idx, _, values in placed:  # everything reads before
        assert {k: o["value"] for k, o in ledger.read_payload(log_id, idx).items()} == values
    secrets = _victim_secrets(ledger, placed)
    haystack = b"".join(_files(data_dir).values()) + (_pg_pages(url) if url else b"")
    assert secrets["wrapped subject key"] in haystack and VICTIM.encode() in haystack  # control: the search sees the tables
    for v in victim_values + keeper_values:  # openings are never stored in clear, before or after
        assert v.encode() not in haystack
    old_kek_files = {k: v for k, v in _files(data_dir).items() if "payload-kek" in k}

    erased = ledger.erase_subject(VICTIM)
    assert sorted(lg for lg, _ in erased.recorded) == ["people-a", "people-b"]

    # what the ledger still reads: the keeper's openings, none of the victim's
    for log_id, idx, _, values in placed:
        opened = ledger.read_openings(log_id, idx)
        assert opened.erased == {"prompts": "subject", "notes": "subject"}
        assert {k: o["value"] for k, o in opened.openings.items()} == {"responses": values["responses"]}
    files = _files(data_dir)
    haystack = b"".join(files.values()) + (_pg_pages(url) if url else b"")
    for v in victim_values:
        assert v.encode() not in haystack, f"clear value {v!r} survives"
    for what, value in secrets.items():
        assert value not in haystack, f"the erased subject's {what} survives"
    for name, content in old_kek_files.items():
        assert name not in files and content not in haystack, f"old KEK file {name} survives"
    if url is None:  # the same search with strings(1) on the SQLite file and its WAL
        text = _strings(data_dir / "ledger.sqlite3") + _strings(data_dir / "ledger.sqlite3-wal")
        assert VICTIM in text  # control: strings sees the pseudonym column
        for v in victim_values:
            assert v not in text
        for value in secrets.values():
            assert base64.b64encode(value).decode() not in text
        wal = data_dir / "ledger.sqlite3-wal"
        assert not wal.exists() or secrets["wrapped subject key"] not in wal.read_bytes()
    # any KEK still present: none unwraps any stored byte string as the victim's key
    keks = [read_secret_file(data_dir / k, PASSPHRASE) for k in files if k.startswith("keys/payload-kek")]
    assert len(keks) == 1
    aad = f"subject-key\n{VICTIM}".encode()
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
            raise AssertionError(f"a stored copy of the erased subject key unwraps at offset {i}")
    assert tried > 0
    # the erasure events name the pseudonym only
    for log_id, at in erased.recorded:
        body = json.loads(ledger.get_entry(log_id, at).entry)["event"]["body"]
        assert body["subject"] == VICTIM and not any(v in json.dumps(body) for v in victim_values + keeper_values)


def test_subject_erasure_sqlite(tmp_path):
    d = tmp_path / "data"
    ledger, placed = _setup(d, None)
    try:
        _check(ledger, placed, d, None)
    finally:
        ledger.close()


@pytest.mark.postgres
def test_subject_erasure_postgres(tmp_path):
    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = create_pg_database()
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    d = tmp_path / "data"
    ledger, placed = _setup(d, url)
    try:
        _check(ledger, placed, d, url)
    finally:
        ledger.close()
        drop_pg_database(name)
