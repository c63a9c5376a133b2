"""C2SP signed notes and tlog-checkpoints (docs/checkpoint-format.md).

    <origin>\\n<size>\\n<base64 root>\\n[extension lines\\n]
    \\n
    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n ...

Verifier keys are the C2SP vkey strings `<name>+<8 hex key id>+<base64(0x01 || pubkey)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

_SIG_PREFIX = "\u2014 "
_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,19})$")
MAX_NOTE_BYTES = 1 << 20


class NoteError(ValueError):
    """A note, checkpoint or key string is malformed or not signed by a trusted key."""


def b64decode_strict(text: object, what: str, length: int | None = None) -> bytes:
    """Standard base64 with padding; refuses non-canonical encodings (so bytes <-> text is 1:1).
    `text` may be any JSON value: anything but a string is refused (NoteError)."""
    if not isinstance(text, str):
        raise NoteError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    if length is not None and len(raw) != length:
        raise NoteError(f"{what} must decode to {length} bytes, got {len(raw)}")
    return raw


def note_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n\x01" + public_key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: bytes

    def vkey(self) -> str:
        key = base64.b64encode(b"\x01" + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{key}"

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> VerifierKey:
        if len(public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        return cls(name, note_key_id(name, public_key), public_key)


def parse_vkey(text: str) -> VerifierKey:
    """Parse `<name>+<hex key id>+<base64(0x01||key)>`; the key id must match the key."""
    text = text.strip()
    parts = text.split("+", 2)  # key names never contain '+'; the base64 key may
    if len(parts) != 3 or not parts[0]:
        raise NoteError("verifier key must look like <name>+<8 hex>+<base64 key>")
    name, hexid, b64 = parts
    if not re.fullmatch(r"[0-9a-f]{8}", hexid):
        raise NoteError("verifier key id must be 8 lower-case hex digits")
    raw = b64decode_strict(b64, "verifier key")
    if len(raw) != 33 or raw[0] != 0x01:
        raise NoteError("verifier key must be an Ed25519 key (0x01 followed by 32 bytes)")
    vk = VerifierKey.from_public_key(name, raw[1:])
    if vk.key_id.hex() != hexid:
        raise NoteError("verifier key id does not match its name and public key")
    return vk


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]
    body: bytes
    note_text: str
    signed_by: str  # vkey string of the trusted key that verified


def split_note(text: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Return (body text incl. final newline, [(key name, raw sig bytes)])."""
    if len(text.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError("note is larger than 1 MiB")
    sep = text.rfind("\n\n")
    if sep < 0 or not text.endswith("\n"):
        raise NoteError("note must have a body, a blank line and signature lines, each ending in a newline")
    body = text[: sep + 1]
    sig_lines = text[sep + 2 : -1].split("\n")
    sigs: list[tuple[str, bytes]] = []
    for line in sig_lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"signature line does not start with an em dash and a space: {line[:40]!r}")
        rest = line[len(_SIG_PREFIX):]
        name, sp, b64 = rest.rpartition(" ")
        if not sp or not name or " " in name:
            raise NoteError("signature line must be '— <name> <base64>'")
        raw = b64decode_strict(b64, "note signature")
        if len(raw) < 5:
            raise NoteError("note signature is too short")
        sigs.append((name, raw))
    if not sigs:
        raise NoteError("note carries no signature")
    return body, sigs


MAX_SIGNATURES = 100  # golang.org/x/mod/sumdb/note: "too many signatures"


def verify_note(text: str, trusted: list[VerifierKey]) -> tuple[str, VerifierKey]:
    """Verify a note as Go's note.Open does (c2sp.org/signed-note): at most 100 signature lines;
    lines from unknown keys are ignored; a line whose name and key id belong to a trusted key
    must verify, else the whole note is rejected (a later good line does not rescue it); at
    least one trusted key must have signed. Returns (body, the first key that verified)."""
    body, sigs = split_note(text)
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError(f"note carries {len(sigs)} signatures, more than {MAX_SIGNATURES}")
    body_bytes = body.encode("utf-8")
    verified: VerifierKey | None = None
    for name, raw in sigs:
        for k in trusted:
            if k.name != name or k.key_id != raw[:4]:
                continue
            try:
                if len(raw) != 68:
                    raise ValueError("wrong length")
                nacl.signing.VerifyKey(k.public_key).verify(body_bytes, raw[4:])
            except (nacl.exceptions.BadSignatureError, ValueError):
                raise NoteError(f"note signature by the trusted log key {name}/{raw[:4].hex()} does not verify "
                                "(the note is rejected)") from None
            verified = verified or k
    if verified is not None:
        return body, verified
    raise NoteError("note is not signed by any trusted log key (names/key ids: "
                    + ", ".join(f"{n}/{r[:4].hex()}" for n, r in sigs[:10]) + ")")


def parse_checkpoint_body(body: str) -> tuple[str, int, bytes, tuple[str, ...]]:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint body must have origin, size and root lines")
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    if not origin or origin.startswith("\u2014"):
        raise NoteError("checkpoint origin line is empty or starts with an em dash")
    if not _DECIMAL.match(size_s):
        raise NoteError(f"checkpoint size {size_s[:30]!r} is not a decimal without leading zeros")
    root = b64decode_strict(root_s, "checkpoint root", 32)
    ext = tuple(lines[3:-1])
    if any(e == "" for e in ext):
        raise NoteError("checkpoint body has an empty extension line")
    return origin, int(size_s), root, ext


def verify_checkpoint(text: str, trusted: list[VerifierKey]) -> Checkpoint:
    body, key = verify_note(text, trusted)
    origin, size, root, ext = parse_checkpoint_body(body)
    if origin != key.name:
        raise NoteError(f"checkpoint origin {origin!r} differs from the signing key's name {key.name!r}")
    return Checkpoint(origin, size, root, ext, body.encode("utf-8"), text, key.vkey())
