"""The openings part of the `Ledger` gateway: sealing an entry's openings into its `payloads`
row when it is appended, and reading them back as far as their keys still exist (docs/storage.md,
"Payloads and erasure"). The cryptography is store/payloads.py; erasure is store/erasure.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhf_ledger.core.events import ParsedEvent
from rlhf_ledger.store import db
from rlhf_ledger.store.database import insert_many
from rlhf_ledger.store.keyring import KeyringMixin
from rlhf_ledger.store.payloads import ErasedError, Opened, PayloadCrypto, PayloadError
from rlhf_ledger.store.reader import ReaderMixin


class OpeningsMixin(ReaderMixin, KeyringMixin):
    def _store_payloads(self, conn: Connection, log_id: str, items: list[tuple[int, ParsedEvent]]) -> None:
        """Seal each entry's openings (v2, docs/storage.md): under its run's key, and those that
        name subjects also under their subject keys; record which opening names whom."""
        crypto = self._payload_crypto()
        keys: dict[str, bytes] = {}
        people = sorted({s for _, p in items if p.subjects for names in p.subjects.values() for s in names})
        subject_keys = self._subject_keys(conn, crypto, people) if people else {}
        rows, links = [], []
        for idx, p in items:
            run = p.event["run_id"]
            if run not in keys:
                keys[run] = self._run_key(conn, crypto, log_id, run)
            subjects = p.subjects or {}
            nonce, ct, members = crypto.seal_entry(keys[run], p.openings or {}, subjects, subject_keys, log_id, idx, p.event_id)
            rows.append((log_id, idx, run, nonce, ct, members))
            for m, names in subjects.items():
                if all(subject_keys[s] is not None for s in names):  # an erased subject's opening is not stored
                    links += [(s, log_id, idx, m, run) for s in names]
        insert_many(conn, db.payloads, ("log_id", "idx", "run_id", "nonce", "ciphertext", "members"), rows)
        insert_many(conn, db.subject_openings, ("subject", "log_id", "idx", "member", "run_id"), links)

    def _subject_keys(self, conn: Connection, crypto: PayloadCrypto, subjects: list[str]) -> dict[str, bytes | None]:
        """Each subject's data key (None: erased), made for subjects seen for the first time.

        PostgreSQL: rows are read FOR SHARE, so a subject erasure (which updates the row) cannot
        commit between this read and the append's commit; a new key is made under the advisory
        lock that KEK rotation takes, after reading again, so two logs creating the same
        subject's key at once end with one key (docs/storage.md)."""
        sk = db.subject_keys.c
        out: dict[str, bytes | None] = {}

        def fetch(names: list[str]) -> None:
            files = crypto.ring.files()  # one listing for the batch's unwraps
            for j in range(0, len(names), 400):
                q = sa.select(sk.subject, sk.wrapped_key).where(sk.subject.in_(names[j : j + 400]))
                if not self._sqlite:
                    q = q.with_for_update(read=True)
                for r in conn.execute(q):
                    out[r.subject] = None if r.wrapped_key is None else crypto.unwrap_subject(r.wrapped_key, r.subject, files)

        fetch(subjects)
        missing = [s for s in subjects if s not in out]
        if missing:
            if not self._sqlite:  # wrap under the current KEK, never one an erasure is replacing
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727276, 1)"))
                fetch(missing)
            new = []
            for s in missing:
                if s not in out:
                    key, wrapped = crypto.new_subject_key(s)
                    new.append({"subject": s, "wrapped_key": wrapped, "created_at": time.time()})
                    out[s] = key
            if new:
                conn.execute(db.subject_keys.insert(), new)
        return out

    def _run_key(self, conn: Connection, crypto: PayloadCrypto, log_id: str, run_id: str) -> bytes:
        row = conn.execute(
            sa.select(db.run_keys).where(db.run_keys.c.log_id == log_id, db.run_keys.c.run_id == run_id)
        ).first()
        if row is not None:
            if row.wrapped_key is None:
                raise ErasedError("run was erased: its data key is destroyed and it takes no new payloads", where=run_id)
            return crypto.unwrap(row.wrapped_key, log_id, run_id)
        if not self._sqlite:  # wrap under the current KEK, never one an erasure is replacing
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(727276, 1)"))
        key, wrapped = crypto.new_run_key(log_id, run_id)
        conn.execute(db.run_keys.insert().values(log_id=log_id, run_id=run_id, wrapped_key=wrapped, created_at=time.time()))
        return key

    def read_openings(self, log_id: str, index: int) -> Opened | None:
        """An entry's openings as far as they still read, and which are erased (member -> "run"
        or "subject"); None if the entry has no stored openings (docs/storage.md)."""
        rows = self.database.rows(sa.select(db.payloads).where(db.payloads.c.log_id == log_id, db.payloads.c.idx == index),
                                  replica=True)
        if not rows:
            return None
        row = rows[0]
        entry = self.get_entry(log_id, index)
        crypto = self._payload_crypto()
        rk = db.run_keys.c

        def run_key() -> bytes | None:
            keyrow = self.database.rows(sa.select(db.run_keys).where(rk.log_id == log_id, rk.run_id == row.run_id), replica=True)
            if not keyrow or keyrow[0].wrapped_key is None:
                return None
            return crypto.unwrap(keyrow[0].wrapped_key, log_id, row.run_id)

        key = _retry_rotation(run_key)
        if key is None:
            if row.members is not None:
                members = json.loads(row.members)
            else:  # v1 row: the members are not stored; every commitment of the body had one
                body = json.loads(entry.entry)["event"]["body"]
                members = sorted(m for m, v in body.items() if isinstance(v, dict) and set(v) == {"$commitment"})
            return Opened(erased={m: "run" for m in members}, run_erased=True)
        if row.members is None:
            return Opened(openings=crypto.open(key, row.nonce, row.ciphertext, log_id, index, entry.event_id))
        return crypto.open_entry(key, row.nonce, row.ciphertext, row.members, log_id, index, entry.event_id,
                                 lambda names: _retry_rotation(lambda: self._read_subject_keys(crypto, names)))

    def _read_subject_keys(self, crypto: PayloadCrypto, names: list[str]) -> dict[str, bytes | None]:
        sk = db.subject_keys.c
        rows = {r.subject: r.wrapped_key
                for r in self.database.rows(sa.select(sk.subject, sk.wrapped_key).where(sk.subject.in_(names)), replica=True)}
        missing = [s for s in names if s not in rows]
        if missing:
            raise PayloadError(f"no key is stored for subject {missing[0]} (storage is inconsistent)", where="subject_keys")
        files = crypto.ring.files()
        return {s: None if w is None else crypto.unwrap_subject(w, s, files) for s, w in rows.items()}

    def read_payload(self, log_id: str, index: int) -> dict | None:
        """The readable openings of an entry (auditor access); None if the entry has none.
        Raises ErasedError when the run was erased; openings of erased subjects are left out
        (read_openings says which)."""
        opened = self.read_openings(log_id, index)
        if opened is None:
            return None
        if opened.run_erased:
            raise ErasedError("the run's data key was erased: payload unreadable", where=f"entry {index}")
        return opened.openings


def _retry_rotation(fn: Callable[[], Any]) -> Any:
    """Unwrapping may race an erasure that re-wraps every key under a new KEK and shreds the old
    one between our read of the wrapped key and the KEK lookup: read again once."""
    try:
        return fn()
    except PayloadError:
        return fn()
