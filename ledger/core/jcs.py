"""RFC 8785 JSON Canonicalization Scheme (JCS).

The maintained `rfc8785` package is the reference implementation here. Because canonicalisation
sits on the append hot path, values for which the standard library's C JSON encoder provably
emits the same bytes are encoded with it instead:

* object keys are ASCII (so code-point order equals JCS's UTF-16 code-unit order),
* integers lie in the IEEE-754 safe range (JCS serialises numbers as doubles),
* floats are finite and Python's shortest repr is already in ES6 fixed notation
  (no exponent, not integral): then ES6 Number::toString gives the same digits.

The fast path prints with orjson (sorted keys, compact), which for exactly these values writes
the same bytes as the standard library's encoder (`json.dumps(ensure_ascii=False,
sort_keys=True, separators=(",", ":"))`) at a tenth of the cost; a property test keeps the two
equal. Anything else goes through `rfc8785`. Tests check both paths agree with `rfc8785` on
random data.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

from rlhf_ledger.core.errors import CanonicalError, EventError

_SAFE_INT = 2**53 - 1
_SORTED = orjson.OPT_SORT_KEYS


def _dumps(value: Any) -> bytes:
    """Compact, sorted-key UTF-8 JSON of a value that passed _fast_ok."""
    return orjson.dumps(value, option=_SORTED)


def _fast_ok(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    if t is float:
        # Python's repr prints fixed notation exactly for 1e-4 <= |x| < 1e16 (a double outside
        # has a shortest form with another decimal exponent); there ES6 prints the same digits,
        # except for integral values, which repr ends in ".0". NaN and infinities fail the range.
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or not _fast_ok(v, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        return all(_fast_ok(v, depth + 1) for v in value)
    return False


def _check_round_trip(value: Any, depth: int = 0) -> None:
    """Refuse floats that JCS writes as integers beyond 2^53: parsed back, they become integers
    that no longer canonicalise, so a stored entry could not be re-checked."""
    if depth > 10_000:
        return
    t = type(value)
    if t is float and 2**53 <= abs(value) < 1e21:  # JCS writes these without exponent or fraction
        raise CanonicalError(f"number {value!r} lies in [2^53, 1e21): JCS writes it as an integer that would not survive a JSON round trip; send it as a string")
    if t is dict:
        for v in value.values():
            _check_round_trip(v, depth + 1)
    elif t is list or t is tuple:
        for v in value:
            _check_round_trip(v, depth + 1)


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value."""
    try:
        if _fast_ok(value):
            return _dumps(value)
        _check_round_trip(value)
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, orjson.JSONEncodeError, ValueError, TypeError, UnicodeEncodeError, RecursionError) as e:
        raise CanonicalError(f"value cannot be canonicalised with RFC 8785: {e}") from None


def canonicalize_event(event: dict) -> bytes:
    """canonicalize() for an event whose top-level members already passed the schema checks.

    Those members are ASCII strings, small integers or null, so only the body needs the
    fast-path test; this saves a walk over the envelope on the append hot path.
    """
    if _fast_ok(event["body"], 1):
        try:
            return _dumps(event)
        except orjson.JSONEncodeError:  # e.g. a lone surrogate: canonicalize() names the problem
            pass
    return canonicalize(event)


def is_fast(value: Any) -> bool:
    """True if canonicalize(value) takes the fast path (the API weighs slow-path events more)."""
    return _fast_ok(value)


# --- strict parsing: duplicate member names ------------------------------------------------
# RFC 8259 leaves duplicate names to the parser ("last one wins" in Python); RFC 7493 (I-JSON)
# forbids them. The ledger refuses them wherever it reads JSON text (API bodies, `rlhf-ledger
# append` lines): two parsers must never see two different events in one signed text.


class DuplicateKeyError(EventError):
    code = "duplicate_key"


class _Dup(dict):
    __slots__ = ("dup",)
    dup: str  # the repeated name; _dup_of sets it before the object is seen anywhere


def _dup_of(d: dict, pairs: list[tuple[str, Any]]) -> _Dup:
    seen: set[str] = set()
    out = _Dup(d)
    for k, _ in pairs:
        if k in seen:
            out.dup = k
            break
        seen.add(k)
    return out


def _find_dup(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    if depth > 10_000:
        return None
    if isinstance(value, _Dup):
        return path, value.dup
    if isinstance(value, dict):
        for k, v in value.items():
            found = _find_dup(v, f"{path}.{k}" if path else k, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_dup(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of the range of a double")
    return v


def loads_strict(text: str | bytes, *, where: str = "") -> Any:
    """json.loads that refuses duplicate member names, naming the object that repeats one
    (`where` prefixes the path, e.g. "line 3"). NaN, Infinity and numbers beyond a double's
    range are refused too. JSONDecodeError and ValueError pass through."""
    dups: list[bool] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        d = dict(pairs)
        if len(d) == len(pairs):
            return d
        dups.append(True)
        return _dup_of(d, pairs)

    value = json.loads(text, object_pairs_hook=hook, parse_constant=_no_constant, parse_float=_finite_float)
    if not dups:  # the walk below runs only when a duplicate was seen
        return value
    found = _find_dup(value, "")
    if found is not None:
        path, name = found
        full = ".".join(x for x in (where, path) if x) or "(top level)"
        raise DuplicateKeyError(f"duplicate member name {name!r} in one JSON object", where=full)
    return value
