"""Bearer tokens: minted once, stored only as SHA-256 hashes, bound to a role and a scope.

Token text: "rlt_" + URL-safe base64 (no padding) of 32 random bytes. The database keeps
hex SHA-256(token text) and a public token id (the first 16 hex digits of that hash).
Roles (docs/api.md, rlhf_ledger.core.roles.Role): admin, submitter (bound to logs, producer key
ids and runs), auditor (bound to logs and run ids). The public role needs no token. Tokens are
stored through the storage gateway's tokens repository (`ledger.tokens`, store/tokens.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from rlhf_ledger.core.errors import LedgerError, NotFoundError
from rlhf_ledger.core.events import valid_id
from rlhf_ledger.core.roles import TOKEN_ROLES, Role
from rlhf_ledger.store.tokens import TokenRecord, TokenStore

TOKEN_PREFIX = "rlt_"
_HEX64 = set("0123456789abcdef")


class TokenError(LedgerError):
    code = "invalid_token_request"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a stored token's role and scope, or the public (token_id None)."""

    role: Role
    token_id: str | None = None
    label: str = ""
    log_ids: frozenset[str] = field(default_factory=frozenset)
    producer_key_ids: frozenset[str] = field(default_factory=frozenset)
    run_ids: frozenset[str] = field(default_factory=frozenset)

    def as_json(self) -> dict:
        return {
            "token_id": self.token_id,
            "role": str(self.role),
            "label": self.label,
            "log_ids": sorted(self.log_ids),
            "producer_key_ids": sorted(self.producer_key_ids),
            "run_ids": sorted(self.run_ids),
        }


PUBLIC = Principal(role=Role.PUBLIC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_text() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode("ascii")


def run_in_scope(patterns: frozenset[str] | set[str], run_id: str) -> bool:
    """Exact run ids, or prefixes written "<prefix>*" ("*" alone: every run)."""
    if run_id in patterns:
        return True
    return any(p.endswith("*") and run_id.startswith(p[:-1]) for p in patterns)


def _check_run_patterns(runs: list[str]) -> None:
    for r in runs:
        if r != "*" and not valid_id(r[:-1] if r.endswith("*") else r):
            raise TokenError(f"not a run id or run-id prefix ending in '*': {r[:140]!r}", where="run_ids")


def _strings(values: list[str] | None, what: str) -> list[str]:
    values = list(values or [])
    if not all(isinstance(v, str) and v for v in values):
        raise TokenError(f"{what} must be non-empty strings", where=what)
    return sorted(set(values))


def create_token(
    tokens: TokenStore,
    role: str,
    *,
    label: str = "",
    log_ids: list[str] | None = None,
    producer_key_ids: list[str] | None = None,
    run_ids: list[str] | None = None,
    created_by: str | None = None,
) -> tuple[str, Principal]:
    """Mint a token; return (token text, shown once) and its stored principal."""
    if role not in TOKEN_ROLES:
        raise TokenError(f"role must be one of {', '.join(TOKEN_ROLES)}, got {role!r}", where="role")
    role = Role(role)
    logs = _strings(log_ids, "log_ids")
    kids = _strings(producer_key_ids, "producer_key_ids")
    runs = _strings(run_ids, "run_ids")
    if len(label) > 256:
        raise TokenError("label is longer than 256 characters", where="label")
    if not label.isprintable():
        raise TokenError("label holds control characters", where="label")
    bad_logs = [x for x in logs if not valid_id(x)]
    if bad_logs:
        raise TokenError(f"not a log id: {bad_logs[0][:140]!r}", where="log_ids")
    _check_run_patterns(runs)
    if role == Role.SUBMITTER:
        if not logs or not kids or not runs:
            raise TokenError("a submitter token needs at least one log id, one producer key id and one run id or "
                             "run-id prefix ('team-a-*'; '*' for every run)", where="role")
        bad = [k for k in kids if len(k) != 64 or not set(k) <= _HEX64]
        if bad:
            raise TokenError(f"not a 64-hex producer key id: {bad[0]!r}", where="producer_key_ids")
    elif role == Role.AUDITOR:
        if not logs or not runs:
            raise TokenError("an auditor token needs at least one log id and one run id", where="role")
        if kids:
            raise TokenError("producer_key_ids apply to submitter tokens only", where="producer_key_ids")
    elif logs or kids or runs:
        raise TokenError("an admin token is not bound to logs, keys or runs", where="role")
    text = new_token_text()
    digest = hash_token(text)
    record = tokens.insert(token_id=digest[:16], token_hash=digest, role=role, label=label, log_ids=logs,
                           producer_key_ids=kids, run_ids=runs, created_by=created_by)
    return text, _principal(record)


def _principal(record: TokenRecord) -> Principal:
    return Principal(record.role, record.token_id, record.label, frozenset(record.log_ids),
                     frozenset(record.producer_key_ids), frozenset(record.run_ids))


def lookup(tokens: TokenStore, token: str) -> Principal | None:
    """The principal of an active token, or None (unknown, malformed or revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    digest = hash_token(token)
    record = tokens.by_hash(digest)
    # compare_digest: the lookup is by hash already; this keeps the final check constant-time.
    if record is None or record.revoked_at is not None or not hmac.compare_digest(record.token_hash, digest):
        return None
    return _principal(record)


def revoke_token(tokens: TokenStore, token_id: str) -> None:
    if not tokens.revoke(token_id):
        raise NotFoundError("no active token with this id", where=f"token {token_id!r}")


def token_json(record: TokenRecord) -> dict:
    """A stored token as the API and `rlhf-ledger token list` show it (never its hash)."""
    d = _principal(record).as_json()
    d.update(created_at=record.created_at, revoked_at=record.revoked_at, created_by=record.created_by)
    return d


def list_tokens(tokens: TokenStore) -> list[dict]:
    return [token_json(r) for r in tokens.all()]


def create_admin_token(data_dir: str | None = None, database_url: str | None = None, label: str = "bootstrap") -> str:
    """Bootstrap: open (and migrate) the ledger database and mint an admin token (CLI helper)."""
    from rlhf_ledger.store.ledger import Ledger

    ledger = Ledger.open(data_dir, database_url)
    try:
        text, _ = create_token(ledger.tokens, Role.ADMIN, label=label)
    finally:
        ledger.close()
    return text
