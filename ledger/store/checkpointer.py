"""The checkpointer part of the `Ledger` gateway: signing checkpoints (docs/checkpoint-format.md)
under the C2SP witness rule, and the fork guard's calls (store/fork_guard.py): a checkpoint is
signed only if it extends the last one signed, published or anchored.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhf_ledger.core import merkle
from rlhf_ledger.core.checkpoints import Checkpoint, parse_and_verify, sign_checkpoint
from rlhf_ledger.core.errors import LedgerError, ProofError
from rlhf_ledger.store import db
from rlhf_ledger.store.keyring import KeyringMixin
from rlhf_ledger.store.reader import ReaderMixin, node_getter
from rlhf_ledger.store.records import LogInfo


class CheckpointerMixin(ReaderMixin, KeyringMixin):
    def _issue_checkpoint(
        self, conn: Connection, log_id: str, origin: str, size: int, public_key: bytes, *, optional: bool = False
    ) -> Checkpoint | None:
        try:
            signer = self.log_signer(log_id, public_key)
        except LedgerError:
            if optional:  # appends never fail for want of the log key; checkpoints wait for it
                return None
            raise
        get = node_getter(conn, log_id)
        root = merkle.root(size, get)
        last = conn.execute(
            sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id).order_by(db.checkpoints.c.size.desc()).limit(1)
        ).first()
        if last is not None:
            if last.size == size:
                return parse_and_verify(last.note, origin, public_key)
            if last.size > size:
                raise ProofError(f"a checkpoint for size {last.size} exists; refusing to sign a smaller tree", where=log_id)
            # C2SP witness rule: never sign a tree that does not extend the last signed one.
            proof = merkle.consistency_proof(last.size, size, get)
            if not merkle.verify_consistency(last.size, size, proof, last.root, root):
                raise ProofError(
                    f"stored tree at size {size} is not consistent with signed checkpoint {last.size}: storage is corrupt",
                    where=log_id,
                )
        if self.fork_guard is not None:
            # The same rule against what a restore cannot roll back (published record, chain).
            if optional and self.recovering:
                return None  # mid-recovery the tree is still short of the published size: sign later
            self.fork_guard.before_sign(log_id, origin, public_key, size, get)
        note = sign_checkpoint(origin, size, root, signer)
        conn.execute(db.checkpoints.insert().values(log_id=log_id, size=size, root=root, note=note, created_at=time.time()))
        return Checkpoint(origin, size, root, note)

    def checkpoint(self, log_id: str) -> Checkpoint:
        """Sign a checkpoint for the current size now (or return the one that exists)."""
        with self.database.write() as conn:
            log = self._lock_log(conn, log_id)
            cp = self._issue_checkpoint(conn, log_id, log.origin, log.size, log.public_key)
        assert cp is not None
        if self.fork_guard is not None:  # after the commit: only a committed checkpoint is published
            self.fork_guard.record(log_id, log.public_key, cp.size, cp.root, cp.note)
        return cp

    def fork_check(self, log_id: str) -> str | None:
        """Compare the log with its published references (store/fork_guard.py) on the primary.

        Returns why the log refuses to sign, or None; when consistent, the newest checkpoint in
        the database (e.g. one signed by an append) is recorded as published.
        """
        if self.fork_guard is None:
            return None

        def compare(conn: Connection) -> tuple[LogInfo, str | None, sa.Row | None]:
            info = self.log_info(log_id, conn)
            assert self.fork_guard is not None
            why = self.fork_guard.check(log_id, info.origin, info.public_key, info.size, node_getter(conn, log_id))
            last = None if why else conn.execute(
                sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id)
                .order_by(db.checkpoints.c.size.desc()).limit(1)
            ).first()
            return info, why, last

        # A read on the primary: readiness checks and every anchoring pass run it, and on SQLite
        # it must not queue behind appends for the write lock.
        info, why, last = self.database.read(compare)
        if last is not None:
            self.fork_guard.record(log_id, info.public_key, last.size, last.root, last.note)
        return why

    def maybe_checkpoint(self, log_id: str, now: float | None = None) -> Checkpoint | None:
        """Issue a checkpoint if the time or size policy says one is due."""
        now = time.time() if now is None else now
        if self.fork_check(log_id) is not None:
            return None  # refused: nothing is signed (the reason is logged and in /readyz)
        info = self.log_info(log_id)
        last = self.latest_checkpoint(log_id)
        if last is not None and last.size == info.size:
            return None
        created = self._checkpoint_created(log_id, last.size) if last else 0.0
        if last is None or info.size - last.size >= info.checkpoint_every_events or now - created >= info.checkpoint_every_seconds:
            return self.checkpoint(log_id)
        return None

    def _published(self, log_id: str, public_key: bytes, signed: Checkpoint | None) -> None:
        """A checkpoint an append signed (the size policy) is served as soon as the append
        commits, so it is recorded as published then, not at the next sweep: a restore in
        between could otherwise sign a second history under it (store/fork_guard.py)."""
        if signed is not None and self.fork_guard is not None:
            self.fork_guard.record(log_id, public_key, signed.size, signed.root, signed.note)
