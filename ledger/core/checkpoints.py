"""C2SP tlog-checkpoint bodies signed as C2SP signed notes (docs/checkpoint-format.md)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from rlhf_ledger.core.errors import ProofError
from rlhf_ledger.core.keys import Signer, verify

SIG_PREFIX = "\u2014 "  # em dash + space
ED25519_ALG = b"\x01"


def default_origin(log_id: str) -> str:
    return f"rlhf-ledger.local/{log_id}"


def note_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_ALG + public_key).digest()[:4]


def vkey(name: str, public_key: bytes) -> str:
    """The signed-note verifier key string: <name>+<hex key id>+<base64(0x01 || key)>."""
    return f"{name}+{note_key_id(name, public_key).hex()}+{base64.b64encode(ED25519_ALG + public_key).decode()}"


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if "\n" in origin or not origin or origin.startswith("\u2014"):
        raise ValueError("origin must be one non-empty line not starting with an em dash")
    if size < 0 or len(root) != 32:
        raise ValueError("size must be >= 0 and root 32 bytes")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, signer: Signer) -> str:
    body = checkpoint_body(origin, size, root)
    sig = signer.sign(body.encode())
    line = base64.b64encode(note_key_id(origin, signer.public_key) + sig).decode()
    return f"{body}\n{SIG_PREFIX}{origin} {line}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str


def parse_and_verify(note: str, origin: str, public_key: bytes) -> Checkpoint:
    """Parse a signed checkpoint note and check the log's signature on it."""
    body, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise ProofError("checkpoint note has no signature block")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise ProofError("checkpoint body needs origin, size and root lines")
    if lines[0] != origin:
        raise ProofError(f"checkpoint origin {lines[0]!r} is not {origin!r}")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise ProofError("checkpoint size is not a decimal without leading zeros")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise ProofError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise ProofError("checkpoint root is not 32 bytes")
    want_id = note_key_id(origin, public_key)
    for line in sigs[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise ProofError("malformed signature line in checkpoint note")
        name, _, sig_b64 = line[len(SIG_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(sig_b64, validate=True)
        except ValueError:
            raise ProofError("signature line is not base64") from None
        if name == origin and raw[:4] == want_id and len(raw) == 68:
            if verify(public_key, body.encode(), raw[4:]):
                return Checkpoint(origin, int(lines[1]), root, note)
            raise ProofError("log signature on the checkpoint does not verify")
    raise ProofError("checkpoint note carries no signature by the log key")
