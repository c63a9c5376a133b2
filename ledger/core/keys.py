"""Ed25519 keys: derived key ids, signing, and key files encrypted at rest.

Key id (producers and the log alike) = lowercase hex SHA-256 of the raw 32-byte public key,
so an id can never be chosen, only derived (docs/event-format.md).

Key files (docs/keys.md) are JSON: the 32-byte Ed25519 seed sealed with XSalsa20-Poly1305
(nacl SecretBox) under a key stretched from a passphrase with Argon2id. The passphrase comes
from an environment variable (default RLHF_LEDGER_PASSPHRASE) or an interactive prompt; a key
is never written unencrypted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from rlhf_ledger.core.errors import KeyFileError

KEY_FILE_FORMAT = "rlhf-ledger-key/v1"


def _shown(path: Path) -> str:
    # Errors name a key file by its base name: they reach API clients (503) and logs, and the
    # data directory's location is nobody's business there.
    return f"key file {Path(path).name}"

PASSPHRASE_ENV = "RLHF_LEDGER_PASSPHRASE"


def log_key_file_name(log_id: str) -> str:
    """The key file of a log: "log-" + hex SHA-256(log id) + ".key.json" (docs/keys.md).

    Injective (distinct ids never share a file, unlike replacing '/' and ':' by '_'), safe on
    case-insensitive file systems and always a short, plain file name.
    """
    return "log-" + hashlib.sha256(log_id.encode("utf-8")).hexdigest() + ".key.json"


def valid_origin(origin: object) -> bool:
    """A checkpoint origin line: 1-256 printable characters, no C0/C1 control characters
    (a NUL cannot be stored by PostgreSQL, a newline would end the note line), not starting
    with a space or an em dash (the signed-note signature-line marker)."""
    return (
        type(origin) is str and 1 <= len(origin) <= 256 and origin.isprintable()
        and not origin.startswith((" ", "\u2014"))
    )


def key_id(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(public_key).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, *, what: str = "base64 value", length: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ValueError(f"{what} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise ValueError(f"{what} must decode to {length} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Signer:
    """An Ed25519 signing key with its derived id."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:  # never show key material
        return f"Signer(key_id={self.key_id[:16]}...)"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 (RFC 8032) verification of a detached signature."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        # The binding directly: VerifyKey objects cost a few microseconds each on the hot path.
        nacl.bindings.crypto_sign_open(signature + message, public_key)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False


def _kdf(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt, opslimit=opslimit, memlimit=memlimit
    )


def encrypt_key(signer: Signer, passphrase: str, *, label: str = "") -> dict:
    if not passphrase:
        raise KeyFileError("refusing to write a key file with an empty passphrase")
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    ops, mem = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, ops, mem))
    sealed = box.encrypt(bytes(signer.signing_key))
    return {
        "format": KEY_FILE_FORMAT,
        "label": label,
        "algorithm": "ed25519",
        "key_id": signer.key_id,
        "public_key": b64(signer.public_key),
        "kdf": {"name": "argon2id", "salt": b64(salt), "opslimit": ops, "memlimit": mem},
        "cipher": "xsalsa20-poly1305",
        "sealed_seed": b64(bytes(sealed)),
    }


def decrypt_key(doc: dict, passphrase: str, *, where: str = "key file") -> Signer:
    try:
        if doc.get("format") != KEY_FILE_FORMAT:
            raise KeyFileError(f"unknown key file format {doc.get('format')!r}", where=where)
        kdf = doc["kdf"]
        key = _kdf(passphrase, unb64(kdf["salt"]), int(kdf["opslimit"]), int(kdf["memlimit"]))
        seed = nacl.secret.SecretBox(key).decrypt(unb64(doc["sealed_seed"]))
    except nacl.exceptions.CryptoError:
        raise KeyFileError("wrong passphrase or corrupted key file", where=where) from None
    except (KeyError, TypeError, ValueError) as e:
        raise KeyFileError(f"malformed key file ({e})", where=where) from None
    signer = Signer.from_seed(seed)
    if signer.key_id != doc.get("key_id"):
        raise KeyFileError("key id in the file does not match its key", where=where)
    return signer


def write_key_file(path: Path, signer: Signer, passphrase: str, *, label: str = "") -> None:
    path = Path(path)
    if path.exists():
        raise KeyFileError("refusing to overwrite an existing key file", where=_shown(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(encrypt_key(signer, passphrase, label=label), f, indent=2)
        f.write("\n")


def read_key_file(path: Path, passphrase: str | None = None, *, env: str = PASSPHRASE_ENV) -> Signer:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError("no such key file", where=_shown(path)) from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file: {e.strerror}", where=_shown(path)) from None
    except ValueError as e:
        raise KeyFileError(f"cannot read key file: {e}", where=_shown(path)) from None
    if passphrase is None:
        passphrase = passphrase_from_env_or_prompt(env)
    return decrypt_key(doc, passphrase, where=_shown(path))


def read_public_key_file(path: Path) -> bytes:
    """The public key of a key file (no passphrase needed)."""
    try:
        doc = json.loads(Path(path).read_text())
        return unb64(doc["public_key"], what="public_key", length=32)
    except OSError as e:
        raise KeyFileError(f"cannot read public key: {e.strerror}", where=_shown(path)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise KeyFileError(f"cannot read public key: {e}", where=_shown(path)) from None


def passphrase_from_env_or_prompt(env: str = PASSPHRASE_ENV, *, confirm: bool = False) -> str:
    value = os.environ.get(env)
    if value:
        return value
    import sys

    if not sys.stdin.isatty():
        raise KeyFileError(f"no passphrase: set {env} or run interactively")
    import getpass

    value = getpass.getpass("Key passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != value:
        raise KeyFileError("passphrases do not match")
    if not value:
        raise KeyFileError("empty passphrase")
    return value


SECRET_FILE_FORMAT = "rlhf-ledger-secret/v1"


def write_secret_file(path: Path, secret: bytes, passphrase: str, *, label: str) -> None:
    """Seal an arbitrary 32-byte secret (e.g. the payload key-encryption key) like a key file."""
    if not passphrase:
        raise KeyFileError("refusing to write a secret file with an empty passphrase")
    path = Path(path)
    if path.exists():
        raise KeyFileError("refusing to overwrite an existing secret file", where=_shown(path))
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    ops, mem = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    sealed = nacl.secret.SecretBox(_kdf(passphrase, salt, ops, mem)).encrypt(secret)
    doc = {
        "format": SECRET_FILE_FORMAT,
        "label": label,
        "kdf": {"name": "argon2id", "salt": b64(salt), "opslimit": ops, "memlimit": mem},
        "cipher": "xsalsa20-poly1305",
        "sealed": b64(bytes(sealed)),
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)


def read_secret_file(path: Path, passphrase: str) -> bytes:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != SECRET_FILE_FORMAT:
            raise KeyFileError("unknown secret file format", where=_shown(path))
        kdf = doc["kdf"]
        key = _kdf(passphrase, unb64(kdf["salt"]), int(kdf["opslimit"]), int(kdf["memlimit"]))
        return nacl.secret.SecretBox(key).decrypt(unb64(doc["sealed"]))
    except nacl.exceptions.CryptoError:
        raise KeyFileError("wrong passphrase or corrupted secret file", where=_shown(path)) from None
    except FileNotFoundError:
        raise KeyFileError("no such secret file", where=_shown(path)) from None
    except OSError as e:
        raise KeyFileError(f"cannot read secret file: {e.strerror}", where=_shown(path)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise KeyFileError(f"malformed secret file ({e})", where=_shown(path)) from None
