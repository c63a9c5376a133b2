"""Leases in the `locks` table: at most one holder per name at a time, across processes and hosts.

A lease is a row (name, holder, expires_at). It is taken or renewed with one atomic conditional
statement, so two contenders never both succeed:

- UPDATE locks SET holder=me, expires_at=now+ttl WHERE name=n AND (holder=me OR expires_at<now)
  (PostgreSQL re-evaluates the WHERE clause on the newest row version after a concurrent
  update commits, under READ COMMITTED; SQLite serialises writers with BEGIN IMMEDIATE);
- if no row matched and none exists, INSERT; a concurrent INSERT of the same name fails on the
  primary key, and the loser simply does not hold the lease.

The holder renews well before expiry and checks the renewal right before each step that must
not run twice (sending a transaction), so a holder paused past its expiry finds out and stops
instead of acting on a lease someone else took over (a fencing check).

Clock: expires_at is wall-clock seconds from the holder's machine; holders must have roughly
synchronised clocks (NTP), and `ttl` should exceed any expected skew by a wide margin.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

import sqlalchemy as sa

from rlhf_ledger.store import db
from rlhf_ledger.store.database import Database

log = logging.getLogger(__name__)


def default_holder_id() -> str:
    """host:pid:random: unique per worker object, readable in the locks table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]


class Lease:
    """One named lease held (or wanted) by `holder` (`Ledger.lease(name)` makes one)."""

    def __init__(self, database: Database, name: str, *, holder: str | None = None, ttl: float = 30.0) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.database = database
        self.name = name
        self.holder = holder or default_holder_id()
        self.ttl = ttl
        self.expires_at = 0.0

    def acquire(self) -> bool:
        """Take the lease if free or expired, or extend it if ours; True if we hold it now."""
        now = time.time()
        expires = now + self.ttl
        t = db.locks.c
        try:
            with self.database.write() as conn:
                updated = conn.execute(
                    db.locks.update()
                    .where(t.name == self.name, sa.or_(t.holder == self.holder, t.expires_at < now))
                    .values(holder=self.holder, expires_at=expires)
                ).rowcount
                if updated == 1:
                    self.expires_at = expires
                    return True
                exists = conn.execute(sa.select(t.name).where(t.name == self.name)).first()
                if exists is not None:
                    return False
                conn.execute(db.locks.insert().values(name=self.name, holder=self.holder, expires_at=expires))
        except sa.exc.IntegrityError:
            return False  # another holder inserted the row first
        self.expires_at = expires
        return True

    renew = acquire  # renewing is re-acquiring while we still hold it

    def release(self) -> None:
        """Give the lease up now (only if we hold it), so another worker need not wait for expiry."""
        t = db.locks.c
        with self.database.write() as conn:
            conn.execute(db.locks.delete().where(t.name == self.name, t.holder == self.holder))
        self.expires_at = 0.0

    def current_holder(self) -> tuple[str, float] | None:
        """(holder, expires_at) of the lease row, or None if nobody ever took it."""
        t = db.locks.c
        rows = self.database.rows(sa.select(t.holder, t.expires_at).where(t.name == self.name))
        return None if not rows else (rows[0].holder, rows[0].expires_at)
