"""RFC 8785 JSON Canonicalization Scheme, written from the RFC (no third-party code).

* Objects: members sorted by the UTF-16 code units of their names, no whitespace.
* Strings: only `"`, `\\` and control characters below U+0020 are escaped (short forms
  \\b \\t \\n \\f \\r, else \\u00xx in lower-case hex); everything else is literal UTF-8.
* Numbers: IEEE-754 doubles printed with ECMAScript's Number::toString (ES6 7.1.12.1).
  Integers outside [-(2^53-1), 2^53-1] are refused (the event format's rule: they would not
  survive a round-trip through a double), as are NaN and infinities.

A fast path hands values the standard library's C encoder provably prints identically
(ASCII keys, safe integers, floats whose shortest repr is already ES6 fixed notation) to it,
because canonicalisation is on the verifier's hot path.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

SAFE_INT = 2**53 - 1
MAX_DEPTH = 256


class JCSError(ValueError):
    """The value has no RFC 8785 canonical form (or breaks the verifier's limits)."""


_dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode

_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]
_SURROGATE = re.compile("[\ud800-\udfff]")


def format_number(x: float | int) -> str:
    """ECMAScript Number::toString of a double (RFC 8785 section 3.2.2.3)."""
    if isinstance(x, bool):
        raise JCSError("a boolean is not a number")
    if isinstance(x, int):
        if not -SAFE_INT <= x <= SAFE_INT:
            raise JCSError(f"integer {_short(x)} is outside the IEEE-754 safe range +-(2^53-1)")
        return str(x)
    if not math.isfinite(x):
        raise JCSError("NaN and infinities are not JSON numbers")
    if x == 0:
        return "0"  # also -0
    sign = "-" if x < 0 else ""
    # repr gives the shortest digit string that round-trips (as ES6 requires); re-lay it out.
    t = Decimal(repr(abs(x))).as_tuple()
    # value = int(all digits) * 10^exponent; move trailing zeros into the exponent
    all_digits = "".join(map(str, t.digits))
    stripped = all_digits.rstrip("0")
    exp = int(t.exponent) + (len(all_digits) - len(stripped))
    digits = stripped.lstrip("0")
    k = len(digits)
    n = k + exp  # value = 0.d1d2..dk * 10^n
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        es = ("+" if e >= 0 else "-") + str(abs(e))
        out = digits + "e" + es if k == 1 else digits[0] + "." + digits[1:] + "e" + es
    return sign + out


def _short(x: int) -> str:
    s = str(x) if x.bit_length() < 200 else f"~2^{x.bit_length()}"
    return s


def _string(s: str, out: list[str]) -> None:
    # The stdlib escaper (ensure_ascii=False) escapes exactly '"', '\\' and U+0000..U+001F, with
    # the short forms JCS uses and lower-case \u00xx otherwise: the RFC 8785 3.2.2.2 rules.
    if not s.isascii() and _SURROGATE.search(s):
        raise JCSError("string contains a lone surrogate (not valid Unicode)")
    out.append(_encode_str(s))


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def _serialize(v: Any, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise JCSError(f"nesting deeper than {MAX_DEPTH}")
    if type(v) in (dict, list) and _fast_ok(v, depth):
        out.append(_dumps(v))  # a subtree the stdlib prints identically
    elif v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        _string(v, out)
    elif isinstance(v, (int, float)):
        out.append(format_number(v))
    elif isinstance(v, dict):
        for k in v:
            if not isinstance(k, str):
                raise JCSError("object member names must be strings")
        out.append("{")
        first = True
        for k in sorted(v, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            _string(k, out)
            out.append(":")
            _serialize(v[k], out, depth + 1)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _serialize(item, out, depth + 1)
        out.append("]")
    else:
        raise JCSError(f"{type(v).__name__} is not a JSON value")


def _fast_ok(v: Any, depth: int = 0) -> bool:
    """True if the stdlib encoder prints exactly the JCS bytes of v (see module docstring)."""
    t = type(v)
    if t is str:
        return v.isascii() or not _SURROGATE.search(v)
    if v is None or t is bool:
        return True
    if t is int:
        return -SAFE_INT <= v <= SAFE_INT
    if t is float:
        if not math.isfinite(v):
            return False
        r = repr(v)
        # ES6 prints fixed notation for 1e-7 < |x| < 1e21; repr switches to exponent at 1e16
        # and 1e-4, so any repr without 'e' and not integral prints the same digits.
        return "e" not in r and not r.endswith(".0")
    if depth >= MAX_DEPTH:
        return False
    if t is dict:
        for k, x in v.items():
            if type(k) is not str or not k.isascii() or not _fast_ok(x, depth + 1):
                return False
        return True
    if t is list:
        for x in v:
            if not _fast_ok(x, depth + 1):
                return False
        return True
    return False


def canonicalize(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of a JSON value; JCSError if it has none."""
    try:
        if _fast_ok(value):
            return _dumps(value).encode("utf-8")
        out: list[str] = []
        _serialize(value, out, 0)
        return "".join(out).encode("utf-8")
    except RecursionError:
        raise JCSError(f"nesting deeper than {MAX_DEPTH}") from None
