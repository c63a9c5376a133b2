"""Events, envelopes and producer chains, checked as docs/event-format.md specifies.

Re-implemented from the spec (not from ledger code), so a ledger bug is not mirrored here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from datetime import date
from typing import Any, NamedTuple

from .jcs import JCSError, canonicalize, canonicalize_parsed
from .jsontypes import JSONObject

EVENT_VERSION = 1
MAX_EVENT_BYTES = 65536
SAFE_INT = 2**53 - 1
FIELDS = frozenset(("v", "log_id", "run_id", "type", "producer", "seq", "prev", "ts", "body"))
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,7}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z")
_COMMIT = re.compile(r"sha256:[0-9a-f]{64}")
COMMITMENT_KEY = "$commitment"
_sha256 = hashlib.sha256


class EventCheckError(ValueError):
    """An event breaks the format; `where` is the JSON path, `check` names the rule."""

    def __init__(self, message: str, where: str, check: str = "schema"):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.check = check


def parse_ts(ts: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC `...Z` time (format already checked)."""
    m = _TS.fullmatch(ts)
    if not m:
        raise ValueError("not an RFC 3339 UTC time")
    return _epoch(ts, m)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> seconds since the epoch at its midnight (a small cache)


def _epoch(ts: str, m: re.Match[str]) -> float:
    """parse_ts of a time that matched _TS: the same value as datetime(...).timestamp() plus the
    fraction, with the date's midnight cached (a bundle's events share few dates)."""
    day = _DAYS.get(ts[:10])
    if day is None:
        y, mo, d = m.group(1, 2, 3)
        day = (date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL) * 86400  # ValueError: no such date
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        _DAYS[ts[:10]] = day
    h, mi, sec, frac = int(ts[11:13]), int(ts[14:16]), int(ts[17:19]), m.group(7)
    if h > 23 or mi > 59 or sec > 59:
        raise ValueError("hour, minute or second out of range")
    t = float(day + h * 3600 + mi * 60 + sec)
    return t + (int(frac.ljust(6, "0")) / 1e6 if frac else 0.0)


def _fail(cond: bool, msg: str, where: str) -> None:
    if not cond:
        raise EventCheckError(msg, where)


class _Seen:
    """Strings already found to match a pattern (ids, types, producer key ids repeat across a
    bundle's events): a set lookup instead of a regex, capped so memory stays bounded."""

    __slots__ = ("pattern", "ok")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.ok: set[str] = set()

    def __call__(self, x: Any) -> bool:
        if type(x) is not str:
            return False
        if x in self.ok:
            return True
        if self.pattern.fullmatch(x) is None:
            return False
        if len(self.ok) < 4096:
            self.ok.add(x)
        return True


_id_ok, _type_ok, _key_id_ok = _Seen(_ID), _Seen(_TYPE), _Seen(_HEX64)


def check_event(event: Any, where: str = "event") -> tuple[bytes, float]:
    """Schema and limits of event-format.md; returns JCS(event) and its time (epoch seconds)."""
    _fail(type(event) is dict, "must be a JSON object", where)
    keys = event.keys()
    if keys != FIELDS:
        missing = sorted(FIELDS - keys)
        extra = sorted(keys - FIELDS)
        raise EventCheckError(
            ("missing " + ", ".join(missing) if missing else "") + ("; " if missing and extra else "")
            + ("unknown member(s) " + ", ".join(extra) if extra else ""), where)
    v = event["v"]
    if not (type(v) is int and v == EVENT_VERSION):
        raise EventCheckError(f"must be {EVENT_VERSION}", where + ".v")
    if not _id_ok(event["log_id"]):
        raise EventCheckError(_ID_RULE, where + ".log_id")
    if not _id_ok(event["run_id"]):
        raise EventCheckError(_ID_RULE, where + ".run_id")
    if not _type_ok(event["type"]):
        raise EventCheckError("must be dotted lower-case words", where + ".type")
    if not _key_id_ok(event["producer"]):
        raise EventCheckError("must be a 64 lower-case hex key id", where + ".producer")
    seq = event["seq"]
    if not (type(seq) is int and 0 <= seq <= SAFE_INT):
        raise EventCheckError("must be an integer in [0, 2^53-1]", where + ".seq")
    prev = event["prev"]
    if seq == 0:
        if prev is not None:
            raise EventCheckError("must be null when seq is 0", where + ".prev")
    elif not (type(prev) is str and _HEX64.fullmatch(prev) is not None):
        raise EventCheckError("must be the 64-hex hash of the previous event", where + ".prev")
    ts = event["ts"]
    m = _TS.fullmatch(ts) if type(ts) is str else None
    if m is None:
        raise EventCheckError("must be RFC 3339 UTC like 2026-01-31T12:00:00.000000Z", where + ".ts")
    try:
        ts_epoch = _epoch(ts, m)
    except ValueError:
        raise EventCheckError("is not a valid date and time", where + ".ts") from None
    body = event["body"]
    if type(body) is not dict:
        raise EventCheckError("must be a JSON object", where + ".body")
    for k, x in body.items():
        if type(x) is dict and COMMITMENT_KEY in x:
            _fail(len(x) == 1 and type(x[COMMITMENT_KEY]) is str and _COMMIT.fullmatch(x[COMMITMENT_KEY]) is not None,
                  'a commitment must be {"$commitment": "sha256:<64 hex>"}', f"{where}.body.{k}")
    try:
        raw = _event_jcs(event, body, prev, ts)  # event comes from json parsing
    except JCSError as e:
        raise EventCheckError(str(e), where) from None
    if len(raw) > MAX_EVENT_BYTES:
        raise EventCheckError(f"canonical size {len(raw)} exceeds {MAX_EVENT_BYTES} bytes", where)
    return raw, ts_epoch


def _event_jcs(event: JSONObject, body: JSONObject, prev: str | None, ts: str) -> bytes:
    """JCS(event) for an event whose members other than the body passed the checks above.

    Those members print the same in every JSON encoder and in RFC 8785 (ASCII names and
    strings that need no escape, integers in the safe range, null), in the fixed member order
    body, log_id, prev, producer, run_id, seq, ts, type, v; so only the body needs
    canonicalising (canonicalize_parsed). JCS of an object is built from the JCS of its member
    values, so the result is byte for byte canonicalize_parsed(event) (a test checks it)."""
    if not ts.isascii():  # \d matched a non-ASCII digit: let the general path print it
        return canonicalize_parsed(event)
    return b"".join((b'{"body":', canonicalize_parsed(body), b',"log_id":"', event["log_id"].encode(), b'","prev":',
                     b"null" if prev is None else b'"' + prev.encode() + b'"', b',"producer":"', event["producer"].encode(),
                     b'","run_id":"', event["run_id"].encode(), b'","seq":', b"%d" % event["seq"], b',"ts":"', ts.encode(),
                     b'","type":"', event["type"].encode(), _V_TAIL))


_V_TAIL = b'","v":%d}' % EVENT_VERSION


_ID_RULE = "must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
_ENVELOPE_KEYS = frozenset(("event", "sig"))


class CheckedEnvelope(NamedTuple):
    event: JSONObject  # checked against event-format.md
    event_bytes: bytes
    sig: bytes
    event_id: bytes  # SHA-256 of the event's JCS bytes (raw; its hex is the event id)
    leaf_hash: bytes  # SHA-256(0x00 || JCS(envelope)): the log entry's leaf hash
    ts_epoch: float


def check_envelope(env: Any, where: str = "envelope") -> CheckedEnvelope:
    """Schema of {"event", "sig"}; computes event id, log entry JCS(envelope) and leaf hash."""
    if not (type(env) is dict and env.keys() == _ENVELOPE_KEYS):
        raise EventCheckError("must be exactly {event, sig}", where)
    event_bytes, ts_epoch = check_event(env["event"], where + ".event")
    s = env["sig"]
    if type(s) is not str:
        raise EventCheckError("must be a base64 string", where + ".sig")
    try:
        sig = binascii.a2b_base64(s, strict_mode=True)  # = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise EventCheckError("is not valid base64", where + ".sig") from None
    if len(sig) != 64:
        raise EventCheckError(f"must decode to 64 bytes, got {len(sig)}", where + ".sig")
    # The entry is JCS of the envelope as given; a non-canonical base64 alias would be a
    # different entry, so insist on the canonical text (one signature, one entry).
    sb = binascii.b2a_base64(sig, newline=False)
    if sb.decode("ascii") != s:
        raise EventCheckError("is not canonical base64", where + ".sig")
    entry = b'\x00{"event":' + event_bytes + b',"sig":"' + sb + b'"}'
    return CheckedEnvelope(env["event"], event_bytes, sig, _sha256(event_bytes).digest(), _sha256(entry).digest(),
                           ts_epoch)


def check_openings(body: JSONObject, openings: Any, where: str) -> None:
    """Each opening {salt, value} must hash to the commitment at the same body member."""
    _fail(type(openings) is dict, "must be an object of member -> {salt, value}", where)
    for name, op in openings.items():
        w = f"{where}.{name}"
        target = body.get(name)
        if not (type(target) is dict and target.keys() == {COMMITMENT_KEY}):
            raise EventCheckError("the body has no commitment at this member", w)
        _fail(type(op) is dict and op.keys() == {"salt", "value"} and type(op["salt"]) is str,
              "an opening must be {salt: base64, value: any}", w)
        try:
            salt = base64.b64decode(op["salt"], validate=True)
            digest = hashlib.sha256(salt + canonicalize(op["value"])).hexdigest()
        except (binascii.Error, ValueError):
            raise EventCheckError("salt is not base64 or the value has no canonical form", w) from None
        _fail(len(salt) == 32, "salt must be 32 bytes", w)
        if "sha256:" + digest != target[COMMITMENT_KEY]:
            raise EventCheckError("opening does not match the commitment", w, "opening")


def check_erased(body: JSONObject, erased: Any, openings: Any, where: str) -> None:
    """`erased` (bundle-format.md): member -> "run" | "subject", each a commitment of the body
    that has no opening in the record."""
    _fail(type(erased) is dict and len(erased) > 0, 'must be a non-empty object of member -> "run" | "subject"', where)
    for name, why in erased.items():
        w = f"{where}.{name}"
        target = body.get(name)
        _fail(type(target) is dict and target.keys() == {COMMITMENT_KEY}, "the body has no commitment at this member", w)
        _fail(why in ("run", "subject"), 'must be "run" or "subject"', w)
        _fail(not (type(openings) is dict and name in openings), "a member cannot be both opened and erased", w)


_CHAIN_STATE = struct.Struct("<qd32s")  # last seq, greatest event time so far, last event id


class ChainTracker:
    """Per (run, producer): seq 0, 1, 2, ... and each `prev` = hash of the previous event; event
    times must not go backwards along the chain.

    Memory grows with the number of (run, producer) pairs, not with the number of events, and
    each pair costs one fixed-size 48-byte state (packed: seq, latest time, raw event id) under
    its run id, so a bundle of many small runs stays small (docs/verifier.md, "Performance").
    A bundle of a whole run (scope "run") must hold every chain from seq 0; an event or range
    bundle holds a window of the log, so its chains may start anywhere but must not break
    inside the window (docs/bundle-format.md).
    """

    def __init__(self, require_start: bool = True) -> None:
        self._runs: dict[str, dict[str, bytes]] = {}  # producer key id -> run id -> packed state
        self._pairs = 0
        self.require_start = require_start

    def step(self, run_id: str, producer: str, seq: int, prev: bytes | None, event_id: bytes,
             ts: float) -> tuple[str | None, str | None]:
        """(chain problem, clock problem) of the next event of (run_id, producer), each None if
        there is none. `prev` and `event_id` are raw 32-byte hashes; `ts` the event's time.

        A producer's event times are its own claims; a clock running backwards along its chain is
        reported (docs/verifier.md "Clocks")."""
        runs = self._runs.get(producer)
        if runs is None:
            runs = self._runs[producer] = {}
        last = runs.get(run_id)
        if last is None:
            self._pairs += 1
            runs[run_id] = _CHAIN_STATE.pack(seq, ts, event_id)
            if seq != 0 and self.require_start:
                return f"first event of producer {producer[:16]}.. in run {run_id} has seq {seq}, expected 0 (gap)", None
            return None, None
        lseq, lts, lid = _CHAIN_STATE.unpack(last)
        runs[run_id] = _CHAIN_STATE.pack(seq, ts if ts > lts else lts, event_id)
        chain = None
        if seq == lseq:
            chain = f"seq {seq} repeated for producer {producer[:16]}.. in run {run_id}"
        elif seq != lseq + 1:
            chain = f"seq {seq} follows seq {lseq} for producer {producer[:16]}.. in run {run_id} (gap or reorder)"
        elif prev != lid:
            shown = prev.hex()[:16] if prev is not None else "None"
            chain = f"prev {shown}.. is not the hash of seq {lseq} ({lid.hex()[:16]}..)"
        back = None
        if ts < lts:
            back = f"event time is {lts - ts:.3f}s earlier than a previous event of producer {producer[:16]}.. in run {run_id}"
        return chain, back

    def pairs(self) -> int:
        return self._pairs
