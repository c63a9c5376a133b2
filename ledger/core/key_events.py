"""Producer keys as log entries (docs/keys.md, "Producer keys are log entries").

The pure part, shared by the appender, the exporter and `audit`: the reserved runs, the key
event types and bodies, and the one rule that derives each key's state from the key events.
The verifier re-implements the rule from the same page.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.core.keys import key_id

RESERVED_RUN_PREFIX = "rlhf-ledger:"  # runs of the log itself, written only by the ledger
KEYS_RUN = "rlhf-ledger:keys"
REGISTER = "producer.register"
REVOKE = "producer.revoke"
LEGACY = -1  # `registered` of a legacy registration: valid from index 0


class KeyEventError(LedgerError):
    """The key events of a log break the rules of docs/keys.md."""

    code = "key_events"


def is_reserved_run(run_id: str) -> bool:
    return run_id.startswith(RESERVED_RUN_PREFIX)


def register_body(public_key: bytes, *, legacy: bool = False) -> dict:
    body: dict = {"key_id": key_id(public_key), "public_key": base64.b64encode(public_key).decode("ascii")}
    if legacy:
        body["legacy"] = True
    return body


def revoke_body(kid: str) -> dict:
    return {"key_id": kid}


@dataclass
class KeyState:
    key_id: str
    public_key: bytes
    registered: int  # index of the register event, or LEGACY
    revoked: int | None = None  # index of the revoke event

    def accepts(self, index: int) -> bool:
        """Whether an event of this key at log index `index` is valid."""
        return self.registered < index and (self.revoked is None or index < self.revoked)


def key_states(events: Iterable[tuple[int, dict]]) -> dict[str, KeyState]:
    """Each key's state from the key events of a log, in index order: (index, event) pairs.

    Raises KeyEventError for anything docs/keys.md does not allow (a second registration, a
    revocation of an unknown or revoked key, a legacy registration after a non-legacy key event,
    a body that does not match its type).
    """
    states: dict[str, KeyState] = {}
    non_legacy_seen = False
    for index, ev in events:
        where = f"key event at index {index}"
        body = ev.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("key_id"), str):
            raise KeyEventError("body must carry key_id", where=where)
        kid = body["key_id"]
        if ev.get("type") == REGISTER:
            if set(body) - {"key_id", "public_key", "legacy"} or body.get("legacy", True) is not True:
                raise KeyEventError("producer.register body is {key_id, public_key[, legacy: true]}", where=where)
            try:
                pub = base64.b64decode(body.get("public_key", ""), validate=True)
            except ValueError:
                pub = b""
            if len(pub) != 32 or key_id(pub) != kid:
                raise KeyEventError("key_id is not the SHA-256 of a 32-byte public_key", where=where)
            if kid in states:
                raise KeyEventError(f"key {kid[:16]} is registered twice", where=where)
            legacy = body.get("legacy") is True
            if legacy and non_legacy_seen:
                raise KeyEventError("a legacy registration after a non-legacy key event", where=where)
            non_legacy_seen = non_legacy_seen or not legacy
            states[kid] = KeyState(kid, pub, LEGACY if legacy else index)
        elif ev.get("type") == REVOKE:
            if set(body) != {"key_id"}:
                raise KeyEventError("producer.revoke body is {key_id}", where=where)
            st = states.get(kid)
            if st is None or st.revoked is not None:
                raise KeyEventError(f"revocation of key {kid[:16]}, which is not registered and active", where=where)
            st.revoked = index
            non_legacy_seen = True
        else:
            raise KeyEventError(f"type {str(ev.get('type'))[:40]!r} is not a key event", where=where)
    return states
