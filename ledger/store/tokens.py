"""The tokens repository of the storage gateway (`ledger.tokens`): the API's bearer tokens,
stored only as SHA-256 hashes (table `api_tokens`; minting, scopes and checks are
rlhf_ledger.api.tokens, docs/api.md). Lookups run on every authenticated request: they read on
the primary's read engine, so on SQLite they never wait behind an append for the write lock,
and never from a replica (a token revoked on the primary must not pass on a lagging replica)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from rlhf_ledger.core.roles import Role
from rlhf_ledger.store.api_tables import api_tokens
from rlhf_ledger.store.database import Database


@dataclass(frozen=True)
class TokenRecord:
    token_id: str  # public handle: the first 16 hex digits of token_hash
    token_hash: str  # hex SHA-256 of the token text
    role: Role
    label: str
    log_ids: tuple[str, ...]
    producer_key_ids: tuple[str, ...]
    run_ids: tuple[str, ...]  # exact run ids, or prefixes ending in '*'
    created_by: str | None
    created_at: float
    revoked_at: float | None

    @classmethod
    def of(cls, row: Any) -> TokenRecord:
        return cls(row.token_id, row.token_hash, Role(row.role), row.label, tuple(json.loads(row.log_ids)),
                   tuple(json.loads(row.producer_key_ids)), tuple(json.loads(row.run_ids)), row.created_by,
                   float(row.created_at), None if row.revoked_at is None else float(row.revoked_at))


class TokenStore:
    """Typed reads and writes of API tokens (`ledger.tokens`)."""

    def __init__(self, database: Database):
        self.database = database

    def insert(self, *, token_id: str, token_hash: str, role: Role, label: str, log_ids: list[str],
               producer_key_ids: list[str], run_ids: list[str], created_by: str | None) -> TokenRecord:
        now = time.time()
        with self.database.write() as conn:
            conn.execute(api_tokens.insert().values(
                token_id=token_id, token_hash=token_hash, role=str(Role(role)), label=label, log_ids=json.dumps(log_ids),
                producer_key_ids=json.dumps(producer_key_ids), run_ids=json.dumps(run_ids), created_by=created_by,
                created_at=now))
        return TokenRecord(token_id, token_hash, Role(role), label, tuple(log_ids), tuple(producer_key_ids), tuple(run_ids),
                           created_by, now, None)

    def by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token stored under this hash (revoked or not), or None."""
        rows = self.database.rows(sa.select(api_tokens).where(api_tokens.c.token_hash == token_hash))
        return TokenRecord.of(rows[0]) if rows else None

    def revoke(self, token_id: str) -> bool:
        """Revoke an active token; False if there is none with this id."""
        with self.database.write() as conn:
            n = conn.execute(api_tokens.update()
                             .where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
                             .values(revoked_at=time.time())).rowcount
        return bool(n)

    def all(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        return [TokenRecord.of(r) for r in self.database.rows(sa.select(api_tokens).order_by(api_tokens.c.created_at))]
