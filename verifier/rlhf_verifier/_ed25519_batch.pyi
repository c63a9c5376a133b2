# Types of the optional C core (_ed25519_batch.c), for type checkers; shipped with the package.

def check(b: bytes, points: bytes, scalars: bytes, /) -> int:
    """1 if [8]([b]B - sum [s_i]P_i) is the identity, 0 if not, -(i+1) if point i does not decode
    strictly or has small order. b is 32 bytes; points and scalars n*32 bytes each (ValueError)."""
    ...
