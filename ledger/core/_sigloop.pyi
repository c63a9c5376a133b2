"""Types of the optional C extension built from _sigloop.c (setup.py); mypy cannot read the .so."""

from collections.abc import Sequence

def verify_many(fn_address: int, keys: Sequence[bytes], messages: Sequence[bytes], signatures: Sequence[bytes], /) -> bytes:
    """fn_address: libsodium's crypto_sign_verify_detached; one byte per item, 1 when it verifies."""
