"""Streaming reader for proof bundles (docs/bundle-format.md): one pass, one line at a time.

Lines are parsed strictly: NaN/Infinity literals, numbers that overflow a double, integers
with more than 4300 digits, nesting beyond the parser's recursion limit and invalid UTF-8
all become a BundleReadError naming the line, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, BinaryIO

from .jsontypes import JSONObject

FORMAT = "rlhf-ledger-bundle"
VERSION = 2  # docs/bundle-format.md; version 1 (producer keys in the header) is not read
MEDIA_TYPE = "application/vnd.rlhf-ledger.bundle.v2+jsonl"
MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 128


class BundleReadError(Exception):
    """The bundle cannot be read at all (exit 2): unreadable, not JSON, unknown version."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class DuplicateKeyLine(BundleReadError):
    """A line that is JSON but has a duplicate member name: a finding (exit 1), not exit 2."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text[:40]}{'...' if len(text) > 40 else ''} overflows an IEEE-754 double")
    return x


class DuplicateKeyError(ValueError):
    """An object with the same member name twice (RFC 8259 leaves its meaning open; a
    verifier that keeps the last one would read a different value than another tool)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> JSONObject:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKeyError(f"duplicate member name {k[:40]!r} in a JSON object")
            seen.add(k)
    return d


_decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_object)


def _depth_ok(raw: bytes) -> bool:
    """Cheap pre-check on brackets (ignores those inside strings conservatively: only a
    line with more than MAX_DEPTH openers is scanned properly)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return True
    depth = 0
    in_str = esc = False
    for c in raw:
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif c in (0x5D, 0x7D):
            depth -= 1
    return True


def parse_line(raw: bytes, line: int) -> JSONObject:
    if len(raw) > MAX_LINE_BYTES:
        raise BundleReadError(f"line longer than {MAX_LINE_BYTES} bytes", line)
    if not _depth_ok(raw):
        raise BundleReadError(f"JSON nested deeper than {MAX_DEPTH} levels", line)
    try:
        text = raw.decode("utf-8")
        obj = _decoder.decode(text)
    except UnicodeDecodeError as e:
        raise BundleReadError(f"not valid UTF-8 at byte {e.start}", line) from None
    except RecursionError:
        raise BundleReadError("JSON nested too deeply", line) from None
    except DuplicateKeyError as e:
        raise DuplicateKeyLine(str(e), line) from None
    except ValueError as e:  # JSONDecodeError, overflow, huge ints (int max str digits)
        msg = str(e).split("\n")[0][:200]
        raise BundleReadError(f"not valid JSON: {msg}", line) from None
    if type(obj) is not dict or type(obj.get("kind")) is not str:
        raise BundleReadError("record is not a JSON object with a string 'kind'", line)
    return obj


def iter_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the newline); a final line without newline is allowed."""
    n = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        n += 1
        if len(raw) > MAX_LINE_BYTES + 1:
            raise BundleReadError(f"line longer than {MAX_LINE_BYTES} bytes", n)
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            raise BundleReadError("empty line (JSON Lines has one record per line)", n)
        yield n, raw


_lenient_decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def parse_record(raw: bytes, line: int) -> tuple[JSONObject, str | None]:
    """parse_line, except that a duplicate member name is returned as a finding (second item)
    with the record read last-one-wins, so the rest of the bundle can still be checked; the
    verdict is INVALID either way (docs/bundle-format.md, "Parsing")."""
    try:
        return parse_line(raw, line), None
    except DuplicateKeyLine as e:
        obj = _lenient_decoder.decode(raw.decode("utf-8"))
        if type(obj) is not dict or type(obj.get("kind")) is not str:
            raise BundleReadError("record is not a JSON object with a string 'kind'", line) from None
        return obj, str(e).split(": ", 1)[-1]
