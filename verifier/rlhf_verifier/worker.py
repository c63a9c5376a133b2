"""Per-line event checks, run in worker processes (or inline for small bundles).

Everything that costs CPU per event lives here: JSON parsing, JCS, hashing, the Ed25519
signature, the inclusion proof. The main process only keeps order-dependent state.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeGuard, overload

from . import ed25519
from .bundle import MAX_LINE_BYTES, BundleReadError, _depth_ok, _no_constant, parse_record
from .compliance.collect import BODY_TYPES
from .events import EventCheckError, check_envelope, check_erased, check_openings
from .jsontypes import JSONObject
from .keys import RESERVED_PREFIX
from .merkle import ProofError, root_from_inclusion

SAFE_INT = 2**53 - 1
SERIES_TYPES = frozenset(("policy.update", "reward_model.update"))
SERIES_KEYS = ("reward_mean", "kl", "loss")


@dataclass
class Context:
    mode: str
    log_id: str
    # key id -> (public key, index of its registration key event (-1: legacy or pinned), index of
    # its revocation key event or None): docs/keys.md, judged by log position
    producers: dict[str, tuple[bytes, int, int | None]]
    roots: dict[int, bytes]  # checkpoint size -> root
    log_keys: dict[str, bytes]  # key id -> public key of each trusted log key: the producers of reserved runs


_CTX: Context | None = None


def init(ctx: Context) -> None:
    global _CTX
    _CTX = ctx


# Result tuples (kept flat and small: they cross a process boundary for every event):
#   ("event", line, index, event_id, leaf_hash, run_id, producer, seq, prev, ts_epoch, type,
#    body (only for collect.BODY_TYPES, else None),
#    chart points (step, value of each SERIES_KEYS member or None, dp_steps or None) or None, errors)
#    event_id and prev are raw 32-byte hashes; run_id, producer and type shared string objects
#   ("leaf", line, index, hash, errors)
#   ("record", line, obj)          any other kind, handled by the main process
#   ("error", line, message)       unreadable line (exit 2)
Problem: TypeAlias = tuple[str, str]  # (check, message): a finding
Points: TypeAlias = tuple[float, *tuple[float | None, ...], int | None]  # step, SERIES_KEYS values, dp_steps
EventResult: TypeAlias = tuple[Literal["event"], int, int | None, bytes, bytes, str, str, int, bytes | None, float, str,
                               JSONObject | None, Points | None, list[Problem]]
# An event whose envelope failed its schema: no id, nothing more read from it.
UnreadEventResult: TypeAlias = tuple[Literal["event"], int, int | None, None, None, None, None, None, None, None, None,
                                     None, None, list[Problem]]
LeafResult: TypeAlias = tuple[Literal["leaf"], int, int | None, bytes | None, list[Problem]]
RecordResult: TypeAlias = tuple[Literal["record"], int, JSONObject]
ErrorResult: TypeAlias = tuple[Literal["error"], int, str]
LineResult: TypeAlias = EventResult | UnreadEventResult | LeafResult | RecordResult | ErrorResult
# A deferred signature check: (the event's findings, to get SIGNATURE_FAILURE; key, message, signature)
SigCheck: TypeAlias = tuple[list[Problem], bytes, bytes, bytes]


def _int(v: Any) -> TypeGuard[int]:
    return type(v) is int and 0 <= v <= SAFE_INT


SIGNATURE_FAILURE: Problem = ("signature", "Ed25519 signature does not verify against the producer key")


def check_line(line: int, raw: bytes, sigs: list[SigCheck]) -> LineResult:
    """Check one line. The signature check is deferred: (errors, key, message, signature) is
    appended to `sigs` for check_block to verify in batches.

    An event line is first read the fast way (`_parse_fast`: the C scanner without the
    per-object and per-float hooks); the result counts only when every check passed and the
    line provably has no duplicate member name (`_no_duplicates`). Any other line, and any line
    with a finding, is read again the strict way (bundle.parse_record) and checked from scratch,
    so findings and their messages are exactly the strict path's."""
    obj = _parse_fast(raw)
    if obj is not None:
        res = _check_parsed(line, obj, None, sigs, raw)
        if res is not None:
            return res
    try:
        obj, dup = parse_record(raw, line)
    except BundleReadError as e:
        return ("error", line, str(e))
    return _check_parsed(line, obj, dup, sigs, None)


# The C scanner JSONDecoder.__init__ sets (typeshed does not declare the attribute).
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(parse_constant=_no_constant).scan_once  # type: ignore[attr-defined]


def _parse_fast(raw: bytes) -> JSONObject | None:
    """The line as a dict, or None when it is not plainly an event record: anything unusual
    (no UTF-8, \\u escapes, deep nesting, NaN, huge integers, whitespace around the value) is
    left to the strict reader."""
    if b"\\u" in raw or not _depth_ok(raw):
        return None
    try:
        text = raw.decode("utf-8")
        obj, end = _scan_once(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    if end != len(text) or type(obj) is not dict or obj.get("kind") != "event":
        return None
    return obj


def _no_duplicates(raw: bytes, obj: JSONObject, event_bytes: bytes) -> bool:
    """True if the raw line repeats no member name, for an event record that passed every check
    (so its members are the known ones, and its sig and inclusion hashes canonical base64).

    Without \\u escapes, every colon in the raw text is one member name or one colon inside a
    string. The event's JCS bytes hold exactly the parsed event's member names and strings, and
    the record's other members hold no colon in their values. So the raw text has as many
    colons as len(record) + len(envelope) + colons of JCS(event) when nothing was dropped;
    a repeated name (and the value it displaced) only adds colons."""
    return raw.count(b":") == len(obj) + 2 + event_bytes.count(b":")


_names: dict[str, str] = {}


def _shared(s: str) -> str:
    """One object per distinct run id / producer / type within a worker, so a block's results
    pickle each once (pickle memoizes by identity) and the parent holds fewer strings."""
    x = _names.get(s)
    if x is None:
        if len(_names) < 8192:
            _names[s] = s
        x = s
    return x


@overload
def _check_parsed(line: int, obj: JSONObject, dup: str | None, sigs: list[SigCheck], fast_raw: None) -> LineResult: ...
@overload
def _check_parsed(line: int, obj: JSONObject, dup: str | None, sigs: list[SigCheck],
                  fast_raw: bytes) -> LineResult | None: ...
def _check_parsed(line: int, obj: JSONObject, dup: str | None, sigs: list[SigCheck],
                  fast_raw: bytes | None) -> LineResult | None:
    """The checks of one parsed line. `fast_raw`: the line was read the fast way; then None is
    returned (nothing recorded) unless every check passed and no member name repeats."""
    ctx = _CTX
    assert ctx is not None
    kind = obj["kind"]
    errors: list[tuple[str, str]] = [("json.duplicate_key", dup)] if dup else []
    if kind == "leaf":
        index, h = obj.get("index"), obj.get("hash")
        hb = None
        if obj.keys() != {"kind", "index", "hash"} or not _int(index) or type(h) is not str:
            errors.append(("schema", "leaf record must be {kind, index, hash}"))
        else:
            try:
                hb = base64.b64decode(h, validate=True)
                if len(hb) != 32 or base64.b64encode(hb).decode() != h:
                    raise ValueError
            except (binascii.Error, ValueError):
                errors.append(("schema", "leaf hash must be canonical base64 of 32 bytes"))
                hb = None
        if ctx.mode != "tree":
            errors.append(("schema", "leaf records only appear in tree mode"))
        return ("leaf", line, index if _int(index) else None, hb, errors)
    if kind != "event":
        if dup:  # a duplicate key in an end (or stray) record: reported by the main process
            obj = {**obj, "_duplicate_key": dup}
        return ("record", line, obj)
    if fast_raw is not None and ("openings" in obj or "erased" in obj):
        return None  # these members are not in the event's JCS: _no_duplicates cannot count them
    index = obj.get("index")
    members = _EVENT_MEMBERS_INCLUSION if ctx.mode == "inclusion" else _EVENT_MEMBERS
    if not members.issuperset(obj):
        errors.append(("schema", "unknown member(s) " + ", ".join(sorted(obj.keys() - members))))
    if not _int(index):
        errors.append(("schema", "index must be a non-negative integer"))
        index = None
    try:
        env = check_envelope(obj.get("envelope"), "envelope")
    except EventCheckError as e:
        if fast_raw is not None:
            return None
        errors.append(("schema", str(e)))
        return ("event", line, index, None, None, None, None, None, None, None, None, None, None, errors)
    ev = env.event
    ts_epoch = env.ts_epoch
    if ev["log_id"] != ctx.log_id:
        errors.append(("log_id", f"event is for log {ev['log_id']!r}, the bundle is for {ctx.log_id!r}"))
    sig_check: SigCheck | None = None
    if ev["run_id"].startswith(RESERVED_PREFIX):
        # The log's own records (docs/keys.md): signed by the log key, never by a producer.
        pub = ctx.log_keys.get(ev["producer"])
        if pub is None:
            errors.append(("producer_key", f"a record of the reserved run {ev['run_id'][:40]!r} not signed by a trusted "
                                           "log key"))
        else:
            sig_check = (errors, pub, env.event_bytes, env.sig)
    else:
        key = ctx.producers.get(ev["producer"])
        if key is None:
            errors.append(("producer_key", f"producer {ev['producer'][:16]}.. is not a trusted producer key"))
        else:
            pub, registered, revoked = key
            sig_check = (errors, pub, env.event_bytes, env.sig)
            if index is not None:  # keys are judged by log position (docs/keys.md)
                if index <= registered:
                    errors.append(("producer_key", f"the producer key's registration is at index {registered}, not "
                                                   "before this event"))
                elif revoked is not None and index > revoked:
                    errors.append(("producer_key", f"the producer key was revoked at index {revoked}, before this event"))
    if "openings" in obj:
        try:
            check_openings(ev["body"], obj["openings"], "openings")
        except EventCheckError as e:
            errors.append(("openings", str(e)))
    if "erased" in obj:
        try:
            check_erased(ev["body"], obj["erased"], obj.get("openings"), "erased")
        except EventCheckError as e:
            errors.append(("openings", str(e)))
    if ctx.mode == "inclusion" and index is not None:
        size, proof = obj.get("checkpoint_size"), obj.get("inclusion")
        if not _int(size) or (root := ctx.roots.get(size)) is None:
            errors.append(("inclusion", f"checkpoint_size {str(size)[:30]} is not a checkpoint of this bundle"))
        elif type(proof) is not list or len(proof) > 64:
            errors.append(("inclusion", "inclusion must be a list of at most 64 base64 hashes"))
        else:
            try:
                hashes = []
                for p in proof:
                    b = base64.b64decode(p, validate=True) if type(p) is str else b""
                    if len(b) != 32 or base64.b64encode(b).decode() != p:
                        raise ProofError("inclusion proof hash is not canonical base64 of 32 bytes")
                    hashes.append(b)
                if root_from_inclusion(index, size, env.leaf_hash, hashes) != root:
                    raise ProofError(f"inclusion proof does not lead to the root of checkpoint {size}")
            except (ProofError, binascii.Error, ValueError) as e:
                errors.append(("inclusion", str(e)))
    if fast_raw is not None and (errors or not _no_duplicates(fast_raw, obj, env.event_bytes)):
        return None
    if sig_check is not None:
        sigs.append(sig_check)
    typ, body = ev["type"], ev["body"]
    points: Points | None = None
    if typ in SERIES_TYPES:  # chart points, extracted here so the body need not travel
        step = body.get("step")
        if type(step) in (int, float):
            g = body.get
            points = (step, *[v if type(v := g(k)) in (int, float) else None for k in SERIES_KEYS],
                      dp if type(dp := g("dp_steps")) is int and 0 <= dp <= SAFE_INT else None)
    prev = ev["prev"]
    return ("event", line, index, env.event_id, env.leaf_hash, _shared(ev["run_id"]), _shared(ev["producer"]), ev["seq"],
            bytes.fromhex(prev) if prev is not None else None, ts_epoch, _shared(typ),
            body if typ in BODY_TYPES else None, points, errors)


_EVENT_MEMBERS = frozenset(("kind", "index", "envelope", "openings", "erased"))
_EVENT_MEMBERS_INCLUSION = _EVENT_MEMBERS | {"checkpoint_size", "inclusion"}


def check_block(task: tuple[int, bytes]) -> list[LineResult]:
    """Check a block of whole lines (raw bytes joined by newlines) whose first line is number
    `first`; the same line rules as bundle.iter_lines (length, CRLF, no empty line). The parent
    hands over raw bytes, not parsed objects, so it does no per-line work. The block's
    signatures are checked together at the end (ed25519.verify_many: batches)."""
    first, blob = task
    out: list[LineResult] = []
    sigs: list[SigCheck] = []
    for k, raw in enumerate(blob.split(b"\n")):
        n = first + k
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_LINE_BYTES:
            out.append(("error", n, f"line {n}: line longer than {MAX_LINE_BYTES} bytes"))
        elif not raw.strip():
            out.append(("error", n, f"line {n}: empty line (JSON Lines has one record per line)"))
        else:
            out.append(check_line(n, raw, sigs))
    if sigs:
        verdicts = ed25519.verify_many([(pub, msg, sig) for _, pub, msg, sig in sigs])
        for (errors, *_), ok in zip(sigs, verdicts, strict=True):
            if not ok:
                errors.append(SIGNATURE_FAILURE)
    return out
