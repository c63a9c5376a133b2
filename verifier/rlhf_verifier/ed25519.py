"""Ed25519 signature checks for events: batch verification, with libsodium as the fallback.

RFC 8032 section 5.1.7 defines verification as the cofactored group equation
``[8][S]B = [8]R + [8][k]A`` (k = SHA-512(R || A || M) mod L) and allows the cofactorless one
as an alternative. Many signatures are checked at once with the batch equation of Bernstein
et al. ("High-speed high-security signatures", section 5): with verifier-chosen random 128-bit
weights z_i,

    [8] ( [sum z_i S_i] B  -  sum [z_i] R_i  -  sum_A [sum_{i: A_i = A} z_i k_i] A ) = 0.

If every signature is valid the sum is zero; if any is not, it is non-zero except with
probability about 2^-128. Signatures by the same key share one point term, so a batch costs
one point decompression (R) and one short scalar multiplication per signature instead of a
full verification. A failed batch is re-checked one signature at a time with the same
(cofactored) equation, so each signature's verdict does not depend on its batch.

Beyond the equation, the rules libsodium applies are kept: S < L, R and A are canonical
encodings of curve points and neither has small order. What this accepts and libsodium does
not: only signatures made on purpose with torsion components by the key holder (no forgery),
docs/verifier.md "Signatures". The multi-scalar check is C (`_ed25519_batch.c`); where it
could not be built, each signature goes to libsodium, and one libsodium rejects is decided by the
pure-Python check of the same rule (`ed25519_ref`), so the verdicts are the same on every
machine; only the speed differs (`engine()` says which path ran).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Protocol

import nacl.bindings


class _Core(Protocol):
    """The C core's interface (_ed25519_batch.pyi)."""

    def check(self, b: bytes, points: bytes, scalars: bytes, /) -> int: ...


_core: _Core | None
try:
    from . import _ed25519_batch as _core
except ImportError:  # no C compiler at install time: the libsodium path below still holds
    _core = None

L = 2**252 + 27742317777372353535851937790883648493
BATCH = 128  # signatures per batch: the 253 doublings the batch shares are a few percent of its cost


def engine() -> str:
    """The rule and implementation in use, for reports."""
    if _core is not None:
        return "Ed25519 batches: cofactored RFC 8032 5.1.7 equation, random 128-bit weights (C core)"
    return ("Ed25519 one at a time: cofactored RFC 8032 5.1.7 equation (C core not built: libsodium, "
            "and a pure-Python check of the same rule for what libsodium rejects)")


_ZERO32 = bytes(32)
_ZERO16 = bytes(16)
_ONE32 = (1).to_bytes(32, "little")
_key_ok: dict[bytes, bool] = {}


def verify_one_libsodium(public_key: bytes, message: bytes, sig: bytes) -> bool:
    """libsodium's (stricter, cofactorless) check; False on any failure."""
    try:
        nacl.bindings.crypto_sign_open(sig + message, public_key)
        return True
    except Exception:  # BadSignatureError, ValueError on wrong lengths
        return False


def verify_many_without_core(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """The same rule without the C core: libsodium's accept implies the rule's (its cofactorless
    equation implies the cofactored one and it applies the same encoding and small-order rules);
    what it rejects is decided by the pure-Python check of the rule."""
    from .ed25519_ref import verify as verify_ref

    return [verify_one_libsodium(p, m, s) or verify_ref(p, m, s) for p, m, s in items]


def _key_valid(core: _Core, pub: bytes) -> bool:
    ok = _key_ok.get(pub)
    if ok is None:
        # scalar 0: the equation holds trivially, so the answer is whether A decodes strictly
        # and is not of small order.
        ok = len(pub) == 32 and core.check(_ZERO32, pub, _ZERO32) == 1
        if len(_key_ok) < 4096:
            _key_ok[pub] = ok
    return ok


def _single(core: _Core, pub: bytes, r: bytes, s: int, k: int) -> bool:
    """[8]([S]B - R - [k]A) == 0 for one signature (the weight 1 needs no randomness)."""
    return core.check(s.to_bytes(32, "little"), r + pub, _ONE32 + k.to_bytes(32, "little")) == 1


def verify_many(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """Verdict per (public key, message, signature), in order."""
    core = _core
    if core is None:
        return verify_many_without_core(items)
    out = [False] * len(items)
    for start in range(0, len(items), BATCH):
        _batch(core, items, start, min(len(items), start + BATCH), out)
    return out


def verify(public_key: bytes, message: bytes, sig: bytes) -> bool:
    return verify_many([(public_key, message, sig)])[0]


def _batch(core: _Core, items: Sequence[tuple[bytes, bytes, bytes]], lo: int, hi: int, out: list[bool]) -> None:
    sha512 = hashlib.sha512
    frombytes = int.from_bytes
    todo: list[tuple[int, bytes, bytes, int, int]] = []  # (position, key, R, S, k)
    for i in range(lo, hi):
        pub, msg, sig = items[i]
        if len(sig) != 64 or len(pub) != 32 or not _key_valid(core, pub):
            continue
        s = frombytes(sig[32:], "little")
        if s >= L:
            continue
        r = sig[:32]
        todo.append((i, pub, r, s, frombytes(sha512(r + pub + msg).digest(), "little") % L))
    if not todo:
        return
    weights = bytearray(os.urandom(16 * len(todo)))
    bsum = 0
    per_key: dict[bytes, int] = {}
    rs, zs = [], []
    for j, (_, pub, r, s, k) in enumerate(todo):
        weights[16 * j] |= 1  # odd, so never zero
        zb = bytes(weights[16 * j : 16 * j + 16])
        z = frombytes(zb, "little")
        bsum += z * s
        per_key[pub] = per_key.get(pub, 0) + z * k
        rs.append(r)
        zs.append(zb + _ZERO16)
    keys = list(per_key)
    points = b"".join(rs) + b"".join(keys)
    scalars = b"".join(zs) + b"".join((per_key[a] % L).to_bytes(32, "little") for a in keys)
    if core.check((bsum % L).to_bytes(32, "little"), points, scalars) == 1:
        for t in todo:
            out[t[0]] = True
        return
    # Some signature is bad (the equation fails, or an R does not decode or has small order):
    # decide each on its own. Not "drop the bad one and retry": a batch full of bad R values
    # would then cost a quadratic number of decompressions.
    for i, pub, r, s, k in todo:
        out[i] = _single(core, pub, r, s, k)
