"""Signed audit events: the format in docs/event-format.md, built, signed, parsed and checked.

An *event* is a JSON object; its canonical bytes are RFC 8785 (JCS). The producer signs those
bytes with Ed25519. The *envelope* {"event": ..., "sig": base64} is what goes into the log: the
Merkle leaf entry is JCS(envelope). Sensitive body values are replaced by salted SHA-256
commitments; their openings (salt and clear value) travel beside the envelope and are stored
encrypted, never in the leaf.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlhf_ledger.core.errors import CanonicalError, EventError, SignatureError
from rlhf_ledger.core.jcs import canonicalize, canonicalize_event
from rlhf_ledger.core.keys import Signer, verify

EVENT_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024  # canonical bytes of one event, body included
MAX_OPENINGS_BYTES = 1024 * 1024  # canonical bytes of one event's openings (clear payloads)
COMMITMENT_KEY = "$commitment"

# One id grammar (docs/event-format.md), always applied with fullmatch: `re.match` with `$`
# also accepts a trailing newline ("x\n"), which the verifier refuses. ASCII classes only, and
# [0-9] rather than \d (which matches every Unicode digit).
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
_ID_RE = re.compile(ID_PATTERN)
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,7}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_TS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
_COMMIT_RE = re.compile(r"sha256:[0-9a-f]{64}")
# A data subject: a keyed pseudonym (docs/sdk.md "Pseudonyms"; event-format.md `subjects`).
SUBJECT_RE = re.compile(r"anp:[0-9a-f]{64}")
MAX_SUBJECTS_PER_OPENING = 64


def valid_id(value: object) -> bool:
    """True if `value` is a log or run id (the grammar above, whole string)."""
    return type(value) is str and _ID_RE.fullmatch(value) is not None
_FIELDS = ("v", "log_id", "run_id", "type", "producer", "seq", "prev", "ts", "body")
_MAX_SEQ = 2**53 - 1


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(ts: str) -> datetime:
    """Parse an event time (already matched against _TS_RE); raises ValueError for impossible dates."""
    return datetime.fromisoformat(ts)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash of a log entry."""
    return hashlib.sha256(b"\x00" + entry).digest()


# --- commitments -------------------------------------------------------------------------


def commit_value(value: Any, salt: bytes) -> str:
    """Salted commitment: "sha256:" + hex SHA-256(salt || JCS(value)), salt 32 random bytes."""
    if len(salt) != 32:
        raise ValueError("commitment salt must be 32 bytes")
    return "sha256:" + hashlib.sha256(salt + canonicalize(value)).hexdigest()


def commit_fields(body: dict, fields: list[str] | tuple[str, ...]) -> tuple[dict, dict]:
    """Replace the named top-level body fields by commitments.

    Returns (committed body, openings) where openings = {field: {"salt": b64, "value": v}}.
    """
    out = dict(body)
    openings: dict[str, dict] = {}
    for name in fields:
        if name not in out:
            continue
        salt = os.urandom(32)
        openings[name] = {"salt": base64.b64encode(salt).decode(), "value": out[name]}
        out[name] = {COMMITMENT_KEY: commit_value(out[name], salt)}
    return out, openings


def check_openings(body: dict, openings: Any, *, where: str = "openings") -> None:
    """Every opening must open the commitment at the same body field."""
    if openings is None:
        return
    if not isinstance(openings, dict):
        raise EventError("must be an object of field -> {salt, value}", where=where)
    if len(canonicalize(openings)) > MAX_OPENINGS_BYTES:
        raise EventError(f"larger than {MAX_OPENINGS_BYTES} bytes", where=where)
    for name, op in openings.items():
        w = f"{where}.{name}"
        target = body.get(name)
        if not (isinstance(target, dict) and set(target) == {COMMITMENT_KEY}):
            raise EventError("body has no commitment at this field", where=w)
        if not isinstance(op, dict) or set(op) != {"salt", "value"} or not isinstance(op["salt"], str):
            raise EventError("opening must be {salt: base64, value: any}", where=w)
        try:
            salt = base64.b64decode(op["salt"], validate=True)
        except ValueError:
            raise EventError("salt is not base64", where=w) from None
        if len(salt) != 32 or commit_value(op["value"], salt) != target[COMMITMENT_KEY]:
            raise EventError("opening does not match the commitment", where=w)


def valid_subject(value: object) -> bool:
    """True if `value` is a data subject's pseudonym `anp:<64 lowercase hex>`."""
    return type(value) is str and SUBJECT_RE.fullmatch(value) is not None


def check_subjects(subjects: Any, openings: dict | None, *, where: str = "subjects") -> dict[str, list[str]] | None:
    """`subjects` of a submission (event-format.md): member -> 1..64 distinct pseudonyms, each
    member with an opening. Returns it with each list sorted (the stored form), or None."""
    if subjects is None:
        return None
    if not isinstance(subjects, dict):
        raise EventError("must be an object of opening member -> list of pseudonyms", where=where)
    out: dict[str, list[str]] = {}
    for name, people in subjects.items():
        w = f"{where}.{name}"
        if not openings or name not in openings:
            raise EventError("names a member without an opening in this submission", where=w)
        if not isinstance(people, list) or not 1 <= len(people) <= MAX_SUBJECTS_PER_OPENING:
            raise EventError(f"must be a list of 1 to {MAX_SUBJECTS_PER_OPENING} pseudonyms", where=w)
        for j, s in enumerate(people):
            if not valid_subject(s):
                raise EventError("a subject is a keyed pseudonym anp:<64 lowercase hex>", where=f"{w}[{j}]")
        if len(set(people)) != len(people):
            raise EventError("names a subject twice", where=w)
        out[name] = sorted(people)
    return out or None


# --- building and signing ----------------------------------------------------------------


def make_event(
    *,
    log_id: str,
    run_id: str,
    type: str,
    producer: str,
    seq: int,
    prev: str | None,
    body: dict,
    ts: str | None = None,
) -> dict:
    event = {
        "v": EVENT_VERSION,
        "log_id": log_id,
        "run_id": run_id,
        "type": type,
        "producer": producer,
        "seq": seq,
        "prev": prev,
        "ts": ts or now_ts(),
        "body": body,
    }
    validate_event(event)
    return event


def sign_event(event: dict, signer: Signer) -> dict:
    """Return the envelope {"event", "sig"}; the producer field must be the signer's key id."""
    if event.get("producer") != signer.key_id:
        raise EventError("producer is not the signing key's id", where="event.producer")
    sig = signer.sign(canonicalize(event))
    return {"event": event, "sig": base64.b64encode(sig).decode("ascii")}


# --- parsing and checking ----------------------------------------------------------------


def _req(cond: bool, msg: str, where: str) -> None:
    if not cond:
        raise EventError(msg, where=where)


_FIELD_SET = frozenset(_FIELDS)


def _well_formed(event: Any) -> bool:
    """The happy-path schema test as one expression (the append hot path); on False,
    _validate_event_detailed finds and names the problem."""
    if type(event) is not dict or event.keys() != _FIELD_SET:
        return False
    seq, prev, ts, body = event["seq"], event["prev"], event["ts"], event["body"]
    return (
        type(event["v"]) is int and event["v"] == EVENT_VERSION
        and type(event["log_id"]) is str and _ID_RE.fullmatch(event["log_id"]) is not None
        and type(event["run_id"]) is str and _ID_RE.fullmatch(event["run_id"]) is not None
        and type(event["type"]) is str and _TYPE_RE.fullmatch(event["type"]) is not None
        and type(event["producer"]) is str and _HEX64_RE.fullmatch(event["producer"]) is not None
        and type(seq) is int and 0 <= seq <= _MAX_SEQ
        and ((prev is None) if seq == 0 else (type(prev) is str and _HEX64_RE.fullmatch(prev) is not None))
        and type(ts) is str and _TS_RE.fullmatch(ts) is not None
        and type(body) is dict
        and not any(type(v) is dict and COMMITMENT_KEY in v for v in body.values())
    )


def validate_event(event: Any, where: str = "event") -> bytes:
    """Check the schema of an event; return its canonical bytes."""
    if _well_formed(event):
        try:
            parse_ts(event["ts"])
            raw = canonicalize_event(event)
        except (ValueError, CanonicalError):
            return _validate_event_detailed(event, where)
        if len(raw) <= MAX_EVENT_BYTES:
            return raw
    return _validate_event_detailed(event, where)


def _validate_event_detailed(event: Any, where: str) -> bytes:
    """Every schema rule in order, raising EventError that names the first broken one."""
    _req(isinstance(event, dict), "must be a JSON object", where)
    missing = [k for k in _FIELDS if k not in event]
    _req(not missing, f"missing field(s): {', '.join(missing)}", where)
    extra = sorted(set(event) - set(_FIELDS))
    _req(not extra, f"unknown field(s): {', '.join(extra)}", where)
    _req(type(event["v"]) is int and event["v"] == EVENT_VERSION, f"must be {EVENT_VERSION}", f"{where}.v")
    for k in ("log_id", "run_id"):
        v = event[k]
        _req(isinstance(v, str) and bool(_ID_RE.fullmatch(v)), "must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", f"{where}.{k}")
    _req(isinstance(event["type"], str) and bool(_TYPE_RE.fullmatch(event["type"])), "must be dotted lower-case words", f"{where}.type")
    _req(isinstance(event["producer"], str) and bool(_HEX64_RE.fullmatch(event["producer"])), "must be a 64-hex key id", f"{where}.producer")
    seq = event["seq"]
    _req(type(seq) is int and 0 <= seq <= _MAX_SEQ, "must be an integer >= 0", f"{where}.seq")
    prev = event["prev"]
    if seq == 0:
        _req(prev is None, "must be null when seq is 0", f"{where}.prev")
    else:
        _req(isinstance(prev, str) and bool(_HEX64_RE.fullmatch(prev)), "must be the 64-hex hash of the producer's previous event", f"{where}.prev")
    ts = event["ts"]
    _req(isinstance(ts, str) and bool(_TS_RE.fullmatch(ts)), "must be an RFC 3339 UTC time like 2026-01-31T12:00:00.000000Z", f"{where}.ts")
    try:
        parse_ts(ts)
    except ValueError:
        raise EventError("is not a valid date and time", where=f"{where}.ts") from None
    _req(isinstance(event["body"], dict), "must be a JSON object", f"{where}.body")
    for k, v in event["body"].items():
        if isinstance(v, dict) and COMMITMENT_KEY in v:
            _req(set(v) == {COMMITMENT_KEY} and isinstance(v[COMMITMENT_KEY], str) and bool(_COMMIT_RE.fullmatch(v[COMMITMENT_KEY])),
                 "a commitment must be {\"$commitment\": \"sha256:<64 hex>\"}", f"{where}.body.{k}")
    try:
        raw = canonicalize_event(event)
    except CanonicalError as e:
        raise EventError(e.message, where=where) from None
    _req(len(raw) <= MAX_EVENT_BYTES, f"canonical size {len(raw)} exceeds the limit of {MAX_EVENT_BYTES} bytes", where)
    return raw


@dataclass
class ParsedEvent:
    """An envelope that passed schema checks, with its derived bytes and hashes.

    Pickled (sent to or from a worker process), only the header members of `event` travel:
    the body stays in `event_bytes` (see __reduce__).
    """

    event: dict
    sig: bytes
    event_bytes: bytes
    entry: bytes
    openings: dict | None = None
    subjects: dict[str, list[str]] | None = None  # opening member -> pseudonyms (sorted)
    event_id: str = field(init=False)
    leaf_hash: bytes = field(init=False)
    producer: str = field(init=False)  # event["producer"], read several times per append

    def __post_init__(self) -> None:
        self.event_id = sha256_hex(self.event_bytes)
        self.leaf_hash = leaf_hash(self.entry)
        self.producer = self.event["producer"]

    def verify_signature(self, public_key: bytes, where: str = "sig") -> None:
        if not verify(public_key, self.event_bytes, self.sig):
            raise SignatureError("Ed25519 signature does not verify against the producer's key", where=where)

    def __reduce__(self):
        # Crossing a process boundary (parallel append) pickles the bytes and the header members
        # only: pickling the nested dicts costs more than parsing did, and the receiver (the
        # committing process) needs neither the body nor a second parse.
        e = self.event
        header = (e["log_id"], e["run_id"], e["type"], e["producer"], e["seq"], e["prev"], e["ts"])
        return (_parsed_from_wire, (header, self.sig, self.event_bytes, self.entry, self.openings, self.event_id, self.leaf_hash,
                                    self.subjects))


_HEADER = ("log_id", "run_id", "type", "producer", "seq", "prev", "ts")


def _parsed_from_wire(header: tuple, sig: bytes, event_bytes: bytes, entry: bytes, openings: dict | None,
                      event_id: str, leaf: bytes, subjects: dict | None = None) -> ParsedEvent:
    """The receiving side of ParsedEvent.__reduce__: `event` holds the header members, no body."""
    p = object.__new__(ParsedEvent)
    p.event = dict(zip(_HEADER, header, strict=True))
    p.sig, p.event_bytes, p.entry, p.openings, p.event_id, p.leaf_hash = sig, event_bytes, entry, openings, event_id, leaf
    p.subjects = subjects
    p.producer = p.event["producer"]
    return p


def parse_envelope(obj: Any, where: str = "event") -> ParsedEvent:
    """Check an envelope {"event", "sig"[, "openings"][, "subjects"]} and compute its bytes and hashes."""
    _req(isinstance(obj, dict), "must be a JSON object with 'event' and 'sig'", where)
    extra = sorted(set(obj) - {"event", "sig", "openings", "subjects"})
    _req(not extra, f"unknown field(s): {', '.join(extra)}", where)
    _req("event" in obj and "sig" in obj, "must have 'event' and 'sig'", where)
    event_bytes = validate_event(obj["event"], f"{where}.event")
    sig_text = obj["sig"]
    _req(isinstance(sig_text, str), "must be a base64 string", f"{where}.sig")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except ValueError:
        raise EventError("is not valid base64", where=f"{where}.sig") from None
    _req(len(sig) == 64, f"must decode to 64 bytes, got {len(sig)}", f"{where}.sig")
    canonical_sig = base64.b64encode(sig).decode("ascii")
    entry = b'{"event":' + event_bytes + b',"sig":"' + canonical_sig.encode() + b'"}'
    openings = obj.get("openings")
    check_openings(obj["event"]["body"], openings, where=f"{where}.openings")
    subjects = check_subjects(obj.get("subjects"), openings, where=f"{where}.subjects")
    return ParsedEvent(event=obj["event"], sig=sig, event_bytes=event_bytes, entry=entry, openings=openings, subjects=subjects)


def envelope_of(entry: bytes) -> dict:
    """Inverse of the leaf entry encoding (for display and export)."""
    import json

    return json.loads(entry)
