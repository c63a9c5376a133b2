"""The per-event fast paths give exactly the results of the plain ones (docs/verifier.md,
"Performance"): reading a line without the strict reader's hooks, JCS of an event assembled
around its canonicalised body, and event times computed with a cached date.

Each is compared with the path it replaces, on honest lines and on lines built to fall off
the fast path (repeated member names at every level, escapes, overflowing numbers, NaN,
whitespace, openings, unknown members), so a verdict cannot depend on which path ran."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from factory import build_bundle
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_jcs_parsed import values

from rlhf_verifier import worker
from rlhf_verifier.events import EventCheckError, check_event, parse_ts
from rlhf_verifier.jcs import JCSError, canonicalize
from rlhf_verifier.verify import Options, Verifier

# ---- reading a line: fast vs strict -------------------------------------------------------


def _context(b) -> list[tuple[int, bytes]]:
    """Set up the worker context from the bundle's header and checkpoints, as the verifier
    does; return its event lines (number, raw bytes)."""
    from rlhf_verifier.cli import load_log_key, load_producer_key

    v = Verifier(Options(log_keys=[load_log_key(b.log_vkey)], producer_keys=[load_producer_key(k) for k in b.producer_keys]))
    path = b.path
    lines = path.read_bytes().split(b"\n")
    out = []
    for n, raw in enumerate(lines, 1):
        if not raw:
            continue
        obj = json.loads(raw)
        if obj["kind"] in ("event", "leaf", "end"):
            out.append((n, raw))
        else:
            v.record(n, obj)
    v.start_events()
    worker.init(worker.Context(v.mode, v.header_log_id, v.producer_map, dict(v.cps),
                               {hashlib.sha256(k.public_key).hexdigest(): k.public_key for k in v.log_keys}))
    return out


def _both(raw: bytes, monkeypatch) -> tuple:
    """check_line's result and signature list, normally and with the fast reader disabled."""
    out = []
    for fast in (True, False):
        sigs: list = []
        with monkeypatch.context() as m:
            if not fast:
                m.setattr(worker, "_parse_fast", lambda raw: None)
            res = worker.check_line(7, raw, sigs)
        out.append((res, [(list(e), p, msg, s) for e, p, msg, s in sigs]))
    return tuple(out)


def _dup(raw: bytes, path: tuple[str, ...], value: object = "x") -> bytes:
    """The line with a repeated member name in the object at `path` (its first member, given
    again first with another value: the strict reader keeps the last, as JSON parsers do)."""
    obj = json.loads(raw)
    target = obj
    for k in path:
        target = target[k]
    first = next(iter(target))
    text = json.dumps(obj)
    inner = json.dumps(target)
    assert text.count(inner) == 1
    doubled = "{" + json.dumps(first) + ": " + json.dumps(value) + ", " + inner[1:]
    return text.replace(inner, doubled).encode()


MUTATIONS = {
    "honest": lambda r: r,
    "dup record": lambda r: _dup(r, ()),
    "dup envelope": lambda r: _dup(r, ("envelope",)),
    "dup event": lambda r: _dup(r, ("envelope", "event")),
    "dup body": lambda r: _dup(r, ("envelope", "event", "body")),
    "dup same value": lambda r: _dup(r, ("envelope", "event", "body"), json.loads(r)["envelope"]["event"]["body"][
        next(iter(json.loads(r)["envelope"]["event"]["body"]))]),
    "escaped colon": lambda r: r.replace(b'"run-1"', b'"run\\u003a1"'),
    "escaped letter": lambda r: r.replace(b'"run-1"', b'"\\u0072un-1"'),
    "overflow": lambda r: r.replace(b'"step": ', b'"step": 1e400, "x": ', 1),
    "nan": lambda r: r.replace(b'"step": ', b'"step": NaN, "x": ', 1),
    "huge int": lambda r: r.replace(b'"step": ', b'"step": ' + b"9" * 5000 + b', "x": ', 1),
    "leading space": lambda r: b" " + r,
    "trailing space": lambda r: r + b"  ",
    "openings": lambda r: r[:-1] + b', "openings": {"prompts": {"salt": "AA==", "value": 1}}}',
    "unknown member": lambda r: r[:-1] + b', "extra": 1}',
    "colon in string": lambda r: r.replace(b'"run-1"', b'"run:1"'),
    "bad index": lambda r: r.replace(b'"index": ', b'"index": -', 1),
    "not utf-8": lambda r: r.replace(b'"run-1"', b'"run-\xff"'),
}


@pytest.mark.parametrize("mode", ["inclusion", "tree"])
def test_fast_and_strict_reading_agree(tmp_path, monkeypatch, mode):
    b = build_bundle(tmp_path / "b.jsonl", mode=mode, extra_leaves=1 if mode == "tree" else 0)
    lines = _context(b)
    events = [raw for _, raw in lines if b'"kind": "event"' in raw]
    assert len(events) > 5
    fast_hits = 0
    for name, mutate in MUTATIONS.items():
        for raw in events:
            try:
                line = mutate(raw)
            except (StopIteration, KeyError, TypeError, AttributeError):
                continue  # this event has no such member
            fast, strict = _both(line, monkeypatch)
            assert fast == strict, (name, line[:200])
            if name == "honest":
                fast_hits += worker._parse_fast(line) is not None
            if name.startswith("dup"):
                assert strict[0][0] == "event" and ("json.duplicate_key" in [c for c, _ in strict[0][-1]]), name
    assert fast_hits == len(events)  # the honest lines did take the fast path


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """An honest bundle's worker context and event lines."""
    b = build_bundle(tmp_path_factory.mktemp("h") / "b.jsonl")
    lines = [raw for _, raw in _context(b) if b'"kind": "event"' in raw]
    return worker._CTX, lines


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_repeated_name_anywhere_is_never_read_the_fast_way(honest, data):
    ctx, lines = honest
    worker.init(ctx)
    raw = data.draw(st.sampled_from(lines))
    obj = json.loads(raw)
    paths = []

    def walk(o, p):
        if isinstance(o, dict) and o:
            paths.append(p)
            for k, x in o.items():
                walk(x, p + (k,))

    walk(obj, ())
    path = data.draw(st.sampled_from(paths))
    value = data.draw(values)
    line = _dup(raw, path, value)
    sigs: list = []
    res = worker.check_line(1, line, sigs)
    assert ("json.duplicate_key" in [c for c, _ in res[-1]]), (path, line[:300])


# ---- JCS of an event ----------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,20}", fullmatch=True)
_hex = st.binary(min_size=32, max_size=32).map(bytes.hex)
_times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))


def _ts(t: datetime, digits: int) -> str:
    frac = ("." + f"{t.microsecond:06d}"[:digits]) if digits else ""
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}{frac}Z"


@settings(max_examples=500, deadline=None)
@given(log_id=_ids, run_id=_ids, typ=st.from_regex(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,3}", fullmatch=True),
       producer=_hex, seq=st.integers(0, 2**53 - 1), prev=_hex, t=_times, digits=st.integers(0, 6),
       body=st.dictionaries(st.text(max_size=8), values, max_size=6))
@pytest.mark.slow
def test_event_jcs_is_the_general_canonical_form(log_id, run_id, typ, producer, seq, prev, t, digits, body):
    ev = {"v": 1, "log_id": log_id, "run_id": run_id, "type": typ, "producer": producer, "seq": seq,
          "prev": prev if seq else None, "ts": _ts(t, digits), "body": body}
    assume(all(not (type(x) is dict and "$commitment" in x) for x in body.values()))
    try:
        want = canonicalize(ev)
    except JCSError:
        with pytest.raises(EventCheckError):
            check_event(ev)
        return
    if len(want) > 65536:
        return
    assert check_event(ev)[0] == want


# ---- event times --------------------------------------------------------------------------


def _old_parse_ts(ts: str) -> float:
    """The datetime computation parse_ts replaced (its result must not change)."""
    import re

    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z", ts)
    assert m
    y, mo, d, h, mi, s, frac = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    return dt.timestamp() + (int(frac.ljust(6, "0")) / 1e6 if frac else 0.0)


def _outcome(f, ts):
    try:
        return f(ts)
    except ValueError:
        return "invalid"


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(t=_times, digits=st.integers(0, 6))
def test_event_times_are_the_datetime_values(t, digits):
    ts = _ts(t, digits)
    assert parse_ts(ts) == _old_parse_ts(ts)


@pytest.mark.parametrize("ts", ["2026-02-29T00:00:00Z", "2024-02-29T23:59:59.999999Z", "2026-13-01T00:00:00Z",
                                "0000-01-01T00:00:00Z", "2026-01-31T24:00:00Z", "2026-01-31T23:60:00Z",
                                "2026-01-31T23:59:60Z", "9999-12-31T23:59:59.9Z", "2026-04-31T00:00:00.5Z",
                                "\u0662\u0660\u0662\u0666-01-31T12:00:00Z"])
def test_edge_times(ts):
    assert _outcome(parse_ts, ts) == _outcome(_old_parse_ts, ts)
    assert _outcome(parse_ts, ts) == _outcome(parse_ts, ts)  # and again, from the date cache
