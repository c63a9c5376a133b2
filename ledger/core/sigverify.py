"""Ed25519 checks of many signatures at once for appends, with libsodium's verdicts.

The ledger's rule is libsodium's `crypto_sign_verify_detached` (docs/event-format.md, "Which
signatures are valid"). `verify_many` calls that same function, the copy PyNaCl bundles, from
a C loop (`_sigloop.c`) that releases the GIL once per batch instead of once per signature. Then
the batch can be checked in a thread while the calling thread parses the next batch or
commits: a Python-level loop would take the GIL back after each signature and wait for the
busy thread to hand it over.

If the loop was not built (no compiler) or PyNaCl's library does not export the function,
every signature goes through `keys.verify` (PyNaCl) one at a time: same verdicts, slower.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

from rlhf_ledger.core.keys import verify

_Loop = Callable[[int, Sequence[bytes], Sequence[bytes], Sequence[bytes]], bytes]


def _find_loop() -> tuple[_Loop, int] | None:
    try:
        import nacl._sodium
        import nacl.bindings

        from rlhf_ledger.core import _sigloop

        nacl.bindings.sodium_init()
        fn = ctypes.CDLL(nacl._sodium.__file__).crypto_sign_verify_detached
        addr = ctypes.cast(fn, ctypes.c_void_p).value
        return (_sigloop.verify_many, addr) if addr else None
    except (ImportError, OSError, AttributeError):
        return None


_LOOP = _find_loop()


def engine() -> str:
    if _LOOP is not None:
        return "libsodium crypto_sign_verify_detached, batches in a GIL-free loop"
    return "libsodium via PyNaCl, one call per signature"


def verify_many(keys: Sequence[bytes], messages: Sequence[bytes], signatures: Sequence[bytes]) -> list[bool]:
    """libsodium's verdict for each (key, message, signature), in order."""
    if _LOOP is None:
        return [verify(k, m, s) for k, m, s in zip(keys, messages, signatures, strict=True)]
    loop, addr = _LOOP
    return [b == 1 for b in loop(addr, keys, messages, signatures)]
