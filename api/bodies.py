"""Bounded request bodies: read after authorisation, size-, depth- and count-checked by this
project before any JSON parser sees them (docs/security.md).

Why not leave it to the parser: the C JSON parser recurses once per nesting level and relies on
the interpreter's recursion limit, which an imported library may raise (py_ecc, pulled in by
web3, sets it to 100,000); deep nesting then overflows the C stack (SIGSEGV) instead of raising.
Here the nesting depth and the number of values are measured with C-speed byte operations first,
so a hostile body costs O(its size) and is refused with 400 `malformed_json`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from rlhf_ledger.api.middleware import BodyTooLarge
from rlhf_ledger.api.problems import ApiProblem
from rlhf_ledger.core.jcs import DuplicateKeyError, loads_strict

MAX_DEPTH = 64  # arrays/objects nested deeper than this are refused (an envelope needs about 6)
ADMIN_MAX_BODY_BYTES = 64 * 1024  # admin bodies are small (a log id, a key, a token scope)

# A JSON string: quote, then runs of ordinary characters and escapes, then quote. Unrolled so
# the regex engine does not backtrack per character.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_KEEP_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the four brackets
_PAIR = re.compile(rb"\[\]|\{\}")
_VALUE_MARKS = bytes(range(256)).translate(None, b",:[{")


def _skeleton(raw: bytes) -> bytes:
    """The body with every string literal removed (brackets inside strings do not nest)."""
    return _STRING.sub(b"0", raw)


def nesting_depth_exceeds(skeleton: bytes, limit: int) -> bool:
    """True if the brackets of `skeleton` nest deeper than `limit` (or do not balance).

    Each pass removes every innermost empty pair at once (one C-speed regex substitution); a
    document of depth d empties in exactly d passes, so at most `limit` passes run.
    """
    b = skeleton.translate(None, _KEEP_BRACKETS)
    for passes in range(limit):  # after k passes, every container of height <= k is gone
        if not b:
            return False
        shorter = _PAIR.sub(b"", b)
        if len(shorter) == len(b):
            # Unbalanced or mismatched: the parser refuses it, and names where, if it cannot
            # descend too deep first; it descends at most once per remaining opener.
            return passes + b.count(b"[") + b.count(b"{") > limit
        b = shorter
    return bool(b)


def check_shape(raw: bytes, *, max_depth: int = MAX_DEPTH, max_values: int) -> None:
    """Refuse (400 malformed_json) bodies nested deeper than max_depth or holding more than
    max_values JSON values, before parsing. Values are bounded because parsed JSON costs
    far more memory than its text (about 100 bytes per small value)."""
    skel = _skeleton(raw)
    if nesting_depth_exceeds(skel, max_depth):
        raise ApiProblem(400, "malformed_json", f"JSON nested deeper than {max_depth} levels")
    # Every value but the first is preceded by ',' or ':' or an opening bracket.
    n = len(skel.translate(None, _VALUE_MARKS)) + 1
    if n > max_values:
        raise ApiProblem(400, "malformed_json", f"JSON with more than {max_values} values")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond `limit` bytes (checked against Content-Length
    first and while reading, so at most `limit` bytes are ever buffered)."""
    cl = request.headers.get("content-length")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        raise ApiProblem(413, "body_too_large", f"request body of {int(cl)} bytes exceeds the limit of {limit} bytes for this route")
    parts: list[bytes] = []
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise ApiProblem(413, "body_too_large", f"request body exceeds the limit of {limit} bytes for this route")
            parts.append(chunk)
    except BodyTooLarge:
        raise
    return b"".join(parts)


def parse_json(raw: bytes, *, max_depth: int = MAX_DEPTH, max_values: int) -> Any:
    """Bounded, strict parse: UTF-8, depth and value count checked first; duplicate member
    names refused (naming where); numbers beyond Python's 4,300-digit limit refused."""
    check_shape(raw, max_depth=max_depth, max_values=max_values)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiProblem(400, "malformed_json", f"the body is not UTF-8 text (byte {e.start})") from None
    try:
        return loads_strict(text)
    except DuplicateKeyError as e:
        raise ApiProblem(400, "malformed_json", f"malformed JSON: {e}",
                         errors=[{"index": None, "code": "duplicate_key", "where": e.where, "detail": e.message}]) from None
    except json.JSONDecodeError as e:
        raise ApiProblem(400, "malformed_json", f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer beyond sys.get_int_max_str_digits()
        raise ApiProblem(400, "malformed_json", f"malformed JSON: {str(e).splitlines()[0][:200]}") from None


async def read_json(request: Request, *, limit: int, max_values: int, max_depth: int = MAX_DEPTH) -> Any:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiProblem(415, "unsupported_media_type", f"the body must be application/json, got {ctype[:64]!r}")
    return parse_json(await read_limited(request, limit), max_depth=max_depth, max_values=max_values)
