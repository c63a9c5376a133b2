"""Producer keys from the log's own key events, written from docs/keys.md ("Producer keys are
log entries") and docs/bundle-format.md (`keys` and `key_event` records), not from the ledger.

Key events live in the reserved run `rlhf-ledger:keys` and are signed by the log key. The
bundle carries all of them below its final checkpoint, each with an inclusion proof to it, and
the run-index record of that run, which proves none is left out. From them: for each producer
key, the index of its registration (or "legacy": valid from index 0) and of its revocation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import ed25519
from .completeness import CompletenessError, RunCompleteness
from .events import EventCheckError, check_envelope
from .jsontypes import JSONObject
from .merkle import ProofError, root_from_inclusion
from .note import NoteError, VerifierKey, b64decode_strict

KEYS_RUN = "rlhf-ledger:keys"
RESERVED_PREFIX = "rlhf-ledger:"
REGISTER, REVOKE = "producer.register", "producer.revoke"
LEGACY = -1
MAX_PROOF = 64


class KeyEventsError(ValueError):
    pass


@dataclass
class ProducerKey:
    key_id: str
    public_key: bytes
    registered: int  # index of the producer.register key event, or LEGACY
    revoked: int | None = None  # index of the producer.revoke key event


class KeyEvents:
    """Folds the `keys` record and the `key_event` records of one bundle."""

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id
        self.keys: dict[str, ProducerKey] = {}
        self.record = RunCompleteness()
        self.seen = 0
        self._last_index = -1
        self._non_legacy = False

    def read_record(self, obj: JSONObject, trusted: list[VerifierKey], origin: str, final_size: int) -> None:
        """The `keys` record: the run-index record of KEYS_RUN at the final checkpoint."""
        try:
            self.record.read_record({**obj, "kind": "run"}, trusted, origin, KEYS_RUN)
        except CompletenessError as e:
            raise KeyEventsError(str(e)) from None
        if self.record.size != final_size:
            raise KeyEventsError(f"the keys record is for tree size {self.record.size}, the bundle's final checkpoint "
                                 f"is {final_size}")

    def add(self, obj: Any, log_keys: Callable[[int], dict[str, bytes]], final_size: int, final_root: bytes) -> None:
        """One `key_event` record; `log_keys(index)`: key id -> public key of each log key that may
        sign a key event at that index (the key in force there, docs/keys.md)."""
        if type(obj) is not dict or obj.keys() != {"kind", "index", "envelope", "inclusion"}:
            raise KeyEventsError("a key_event record is exactly {kind, index, envelope, inclusion}")
        index = obj["index"]
        if type(index) is not int or not 0 <= index < final_size:
            raise KeyEventsError(f"index must be an integer below the final checkpoint size {final_size}")
        if index <= self._last_index:
            raise KeyEventsError(f"index {index} does not follow {self._last_index} (key events ascend)")
        self._last_index = index
        try:
            env = check_envelope(obj["envelope"], "envelope")
        except EventCheckError as e:
            raise KeyEventsError(str(e)) from None
        ev = env.event
        if ev["log_id"] != self.log_id or ev["run_id"] != KEYS_RUN:
            raise KeyEventsError(f"a key event must be in run {KEYS_RUN!r} of log {self.log_id!r}")
        pub = log_keys(index).get(ev["producer"])
        if pub is None:
            raise KeyEventsError("not signed by a trusted log key in force at this index (its producer is not that "
                                 "log key's id)")
        if not ed25519.verify(pub, env.event_bytes, env.sig):
            raise KeyEventsError("the log key's signature does not verify")
        proof = obj["inclusion"]
        if type(proof) is not list or len(proof) > MAX_PROOF:
            raise KeyEventsError("inclusion must be a list of base64 hashes")
        try:
            hashes = [b64decode_strict(h, "inclusion hash", 32) for h in proof]
            if root_from_inclusion(index, final_size, env.leaf_hash, hashes) != final_root:
                raise ProofError(f"inclusion proof does not lead to the root of checkpoint {final_size}")
        except (NoteError, ProofError) as e:
            raise KeyEventsError(str(e)) from None
        self.seen += 1
        self.record.feed(index, env.leaf_hash, ev["producer"], ev["seq"], env.event_id, ev["type"])
        self._apply(index, ev["type"], ev["body"])

    def _apply(self, index: int, typ: str, body: JSONObject) -> None:
        kid = body.get("key_id")
        if type(kid) is not str:
            raise KeyEventsError("body must carry key_id")
        if typ == REGISTER:
            legacy = body.get("legacy", False)
            if set(body) - {"key_id", "public_key", "legacy"} or ("legacy" in body and legacy is not True):
                raise KeyEventsError("a producer.register body is {key_id, public_key[, legacy: true]}")
            text = body.get("public_key")
            try:
                pub = base64.b64decode(text, validate=True) if type(text) is str else b""
            except (binascii.Error, ValueError):
                pub = b""
            if len(pub) != 32 or hashlib.sha256(pub).hexdigest() != kid:
                raise KeyEventsError("key_id is not the SHA-256 of a 32-byte public_key")
            if kid in self.keys:
                raise KeyEventsError(f"key {kid[:16]}.. is registered a second time")
            if legacy and self._non_legacy:
                raise KeyEventsError("a legacy registration after a non-legacy key event (docs/keys.md)")
            self._non_legacy = self._non_legacy or not legacy
            self.keys[kid] = ProducerKey(kid, pub, LEGACY if legacy else index)
        elif typ == REVOKE:
            if set(body) != {"key_id"}:
                raise KeyEventsError("a producer.revoke body is {key_id}")
            k = self.keys.get(kid)
            if k is None or k.revoked is not None:
                raise KeyEventsError(f"revocation of key {kid[:16]}.., which is not registered and active")
            k.revoked = index
            self._non_legacy = True
        else:
            raise KeyEventsError(f"type {typ[:40]!r} is not a key event")

    def differences(self) -> list[str]:
        """What differs between the key events read and the keys record (a left-out key event)."""
        if self.record.record is None:
            return ["no valid keys record"]
        return self.record.differences()
