"""Pure-Python Ed25519 check with the verifier's acceptance rule, from RFC 8032 alone.

Used where the C batch core could not be built, for the signatures libsodium rejects: libsodium
accepts a subset of what the rule accepts (its cofactorless equation implies the cofactored one,
and it applies the same encoding and small-order rules), so "libsodium accepts, else this
check" gives exactly the verdicts of the C path on every machine (issue: one verdict per bundle).

The rule (docs/verifier.md, "Signatures"): S < L; R and A are canonical encodings of curve
points (RFC 8032 5.1.3, y < p and no x = 0 with the sign bit set); neither has small order; and
the cofactored equation [8][S]B = [8]R + [8][k]A holds, k = SHA-512(R || A || M) mod L.
Arithmetic is on extended twisted Edwards coordinates (RFC 8032 5.1.4). Slow (milliseconds per
signature): it only runs for signatures libsodium refused.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z
IDENTITY: Point = (0, 1, 1, 0)


def _add(p: Point, q: Point) -> Point:
    """RFC 8032 5.1.4 addition (complete for the twisted Edwards curve)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s: int, p: Point) -> Point:
    q = IDENTITY
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _is_identity(p: Point) -> bool:
    x, y, z, _ = p
    return x % P == 0 and (y - z) % P == 0


def _neg(p: Point) -> Point:
    x, y, z, t = p
    return (-x % P, y, z, -t % P)


def decode(b: bytes) -> Point | None:
    """RFC 8032 5.1.3 strict decoding; None for a non-canonical or off-curve encoding."""
    if len(b) != 32:
        return None
    n = int.from_bytes(b, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    if y >= P:
        return None
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 == u:
        pass
    elif vx2 == (-u) % P:
        x = x * SQRT_M1 % P
    else:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


_BY = 4 * pow(5, P - 2, P) % P
_B = decode(_BY.to_bytes(32, "little"))
assert _B is not None
B: Point = _B  # the base point (decodes: it is on the curve)


def _small_order(p: Point) -> bool:
    return _is_identity(_mul(8, p))


def verify(public_key: bytes, message: bytes, sig: bytes) -> bool:
    """The verifier's acceptance rule for one signature (see the module docstring)."""
    if len(public_key) != 32 or len(sig) != 64:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    a, r = decode(public_key), decode(sig[:32])
    if a is None or r is None or _small_order(a) or _small_order(r):
        return False
    k = int.from_bytes(hashlib.sha512(sig[:32] + public_key + message).digest(), "little") % L
    lhs = _add(_add(_mul(s, B), _neg(r)), _neg(_mul(k, a)))
    return _is_identity(_mul(8, lhs))
