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

# The same encoder made once (JSONEncoder.encode builds it on every call): for values fresh from
# parsing, which cannot be circular, so without the circular-reference bookkeeping.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encoder = _c_make_encoder(None, None, json.encoder.encode_basestring, None, ":", ",", True, False, False)

    def _encode_compact(value: Any) -> str:
        return "".join(_c_encoder(value, 0))
else:  # no C accelerator (another Python): the same text, built per call

    def _encode_compact(value: Any) -> str:
        return _dumps(value)


_encode_str = json.encoder.encode_basestring
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
        n: int = v
        return -SAFE_INT <= n <= SAFE_INT
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


# For canonicalize_parsed: JSON strings as the stdlib encoder prints them and what the fast
# path must leave to the general one.
_STR_RE = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRINGS = re.compile(_STR_RE)
# Blanked text: repr's exponents ("1e-05", "1e+16") are not ES6; -0.0 and 16+ digit integers
# (maybe outside the safe range) need the general path too. Cheap substring tests run first.
_NEG_ZERO = re.compile(r"-0\.0(?![0-9])")
_DIGITS16 = re.compile(r"[0-9]{16}")
_LONG_INT = re.compile(r"(?<![0-9.])[0-9]{16,}(?![0-9.])")
_NUM16 = re.compile(r"[:,\[]-?[0-9]{16}")  # on the whole text: every 16+ digit integer, maybe some string text
_HIGH_OR_SURROGATE = re.compile("[\ud800-\uffff]")


def canonicalize_parsed(value: Any) -> bytes:
    """canonicalize() for a dict or list fresh from json parsing (string keys, no tuples).

    One pass of the stdlib C encoder, then a few C substring/regex passes instead of a Python
    walk: the encoder's text is already JCS except for floats whose repr differs from ES6
    (integral floats, fixed here when no string holds the same pattern; exponents and -0.0),
    16+ digit integers and code points >= U+D800 (UTF-16 key order, surrogates); all but the
    first go to the general path.
    Tested for byte equality with canonicalize() on generated values.
    """
    if type(value) not in (dict, list):
        return canonicalize(value)
    try:
        text = _encode_compact(value)
    except (ValueError, RecursionError, TypeError):
        return canonicalize(value)
    if not text.isascii() and _HIGH_OR_SURROGATE.search(text):
        return canonicalize(value)
    # Nothing number-like that JCS prints differently, anywhere in the text (strings included):
    # the text is already JCS. (A 16+ digit integer outside strings starts right after : , or [.)
    if ("e+" not in text and "e-" not in text and "-0.0" not in text and not _integral_floats(text)
            and not _NUM16.search(text)):
        return text.encode("utf-8")
    if "\\" in text:
        skeleton = _STRINGS.sub('""', text)
    else:
        # Without a backslash every quote delimits a string: the even parts are the text
        # outside strings (the same skeleton as the regex gives, at a fraction of the cost).
        skeleton = '""'.join(text.split('"')[::2])
    if ("e+" in skeleton or "e-" in skeleton or ("-0.0" in skeleton and _NEG_ZERO.search(skeleton))
            or (_DIGITS16.search(skeleton) and _LONG_INT.search(skeleton))):
        return canonicalize(value)
    if ".0" in skeleton:
        # An integral float prints "<digits>.0" right before , ] or } (compact encoder). Blanking
        # strings neither creates nor removes such a match outside them (a quote always
        # separates), so equal counts mean every match in `text` is a number: drop the ".0".
        in_numbers = _integral_floats(skeleton)
        if in_numbers:
            if _integral_floats(text) != in_numbers:  # a string holds something like "5.0," : general path
                return canonicalize(value)
            text = text.replace(".0,", ",").replace(".0]", "]").replace(".0}", "}")
    return text.encode("utf-8")


def _integral_floats(text: str) -> int:
    """Occurrences of ".0" followed by , ] or } (they cannot overlap)."""
    return text.count(".0,") + text.count(".0]") + text.count(".0}")


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
