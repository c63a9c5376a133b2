"""Encrypted payload store: openings (salts and clear values) sealed per run.

Each run has a random 32-byte data key, stored only wrapped (ChaCha20-Poly1305) under the
ledger's key-encryption key (KEK). Each event's openings are sealed with ChaCha20-Poly1305
(IETF, 12-byte random nonce) under the run's data key, with the log id, entry index and event
id as associated data so ciphertexts cannot be moved between entries.

Erasure (docs/storage.md "Payloads and erasure") destroys the run's data key so that no copy
stays readable: the wrapped key is overwritten, every other run key is re-wrapped under a new
KEK and the old KEK file is overwritten and deleted. A copy of the old wrapped key that survives
somewhere (a WAL frame, a dead PostgreSQL tuple, a backup) is then sealed under a KEK that no
longer exists.

KEK files: `keys/payload-kek-<seq>-<id>.json` (sealed with the ledger passphrase); the highest
`seq` is the current KEK. A wrapped key names its KEK: 0x01 || kek id (8 bytes) || nonce || box.
Keys wrapped before KEK ids (60 bytes, no prefix) belong to the legacy `keys/payload-kek.json`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt as _open,
    crypto_aead_chacha20poly1305_ietf_encrypt as _seal,
)
from nacl.exceptions import CryptoError

from .errors import LedgerError
from .jcs import canonicalize
from .keys import read_secret_file, write_secret_file

NONCE = 12
WRAP_V2 = b"\x01"
LEGACY_FILE = "payload-kek.json"
_KEK_FILE = re.compile(r"payload-kek-([0-9]{8})-([0-9a-f]{16})\.json")


class PayloadError(LedgerError):
    code = "payload_error"


def _aad(log_id: str, idx: int, event_id: str) -> bytes:
    return f"rlhf-ledger-payload/v1\n{log_id}\n{idx}\n{event_id}".encode()


def _wrap_aad(log_id: str, run_id: str) -> bytes:
    return f"run-key\n{log_id}\n{run_id}".encode()


def shred_file(path: Path) -> None:
    """Overwrite a file's bytes in place (fsync), then delete it. On copy-on-write or flash
    storage the old blocks may survive below the file system (docs/storage.md says what to do)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(os.urandom(size))
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
    except FileNotFoundError:
        pass


class KeyRing:
    """The KEK files of one ledger: the current one wraps, any present one unwraps."""

    def __init__(self, keys_dir: Path, passphrase: Callable[[], str]):
        self.keys_dir = Path(keys_dir)
        self._passphrase = passphrase
        self._keks: dict[bytes, bytes] = {}  # kek id (b"" = legacy) -> KEK

    def _files(self) -> list[tuple[int, bytes, Path]]:
        out = []
        if self.keys_dir.is_dir():
            for p in self.keys_dir.iterdir():
                m = _KEK_FILE.fullmatch(p.name)
                if m:
                    out.append((int(m.group(1)), bytes.fromhex(m.group(2)), p))
        return sorted(out)

    def _load(self, kid: bytes, path: Path) -> bytes:
        kek = self._keks.get(kid)
        if kek is None:
            kek = read_secret_file(path, self._passphrase())
            if len(kek) != 32:
                raise PayloadError("a payload KEK file does not hold a 32-byte key", where=f"key file {path.name}")
            self._keks[kid] = kek
        return kek

    def current(self) -> tuple[bytes, bytes]:
        """(kek id, KEK) of the newest KEK file, created if there is none."""
        files = self._files()
        if not files:
            return self.create(1)
        seq, kid, path = files[-1]
        return kid, self._load(kid, path)

    def create(self, seq: int) -> tuple[bytes, bytes]:
        kid, kek = os.urandom(8), os.urandom(32)
        path = self.keys_dir / f"payload-kek-{seq:08d}-{kid.hex()}.json"
        write_secret_file(path, kek, self._passphrase(), label="payload key-encryption key")
        self._keks[kid] = kek
        return kid, kek

    def rotate(self) -> tuple[bytes, bytes]:
        """A new current KEK (the old ones stay until shred_all_but)."""
        files = self._files()
        return self.create((files[-1][0] + 1) if files else 1)

    def shred_all_but(self, keep: bytes) -> int:
        n = 0
        for _, kid, path in self._files():
            if kid != keep:
                shred_file(path)
                self._keks.pop(kid, None)
                n += 1
        legacy = self.keys_dir / LEGACY_FILE
        if legacy.exists():
            shred_file(legacy)
            self._keks.pop(b"", None)
            n += 1
        return n

    def kek_for(self, wrapped: bytes) -> tuple[bytes, bytes, bytes]:
        """(kek id, KEK, the nonce-and-box part) for a stored wrapped key."""
        if len(wrapped) == NONCE + 48:  # legacy: no KEK id
            legacy = self.keys_dir / LEGACY_FILE
            if not legacy.exists():
                raise PayloadError("run data key was wrapped under a KEK that no longer exists")
            return b"", self._load(b"", legacy), wrapped
        if wrapped[:1] != WRAP_V2 or len(wrapped) != 1 + 8 + NONCE + 48:
            raise PayloadError("stored run data key has an unknown format")
        kid = wrapped[1:9]
        for _, k, path in self._files():
            if k == kid:
                return kid, self._load(kid, path), wrapped[9:]
        raise PayloadError("run data key was wrapped under a KEK that no longer exists (destroyed by an erasure)")


class PayloadCrypto:
    def __init__(self, ring: KeyRing):
        self.ring = ring

    def new_run_key(self, log_id: str, run_id: str) -> tuple[bytes, bytes]:
        key = os.urandom(32)
        return key, self.wrap(key, log_id, run_id)

    def wrap(self, key: bytes, log_id: str, run_id: str, kek: tuple[bytes, bytes] | None = None) -> bytes:
        kid, k = kek or self.ring.current()
        nonce = os.urandom(NONCE)
        return WRAP_V2 + kid + nonce + _seal(key, _wrap_aad(log_id, run_id), nonce, k)

    def unwrap(self, wrapped: bytes, log_id: str, run_id: str) -> bytes:
        _, k, body = self.ring.kek_for(bytes(wrapped))
        try:
            return _open(body[NONCE:], _wrap_aad(log_id, run_id), body[:NONCE], k)
        except CryptoError:
            raise PayloadError("run data key does not unwrap under this ledger's KEK") from None

    @staticmethod
    def seal(data_key: bytes, openings: dict, log_id: str, idx: int, event_id: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE)
        return nonce, _seal(canonicalize(openings), _aad(log_id, idx, event_id), nonce, data_key)

    @staticmethod
    def open(data_key: bytes, nonce: bytes, ciphertext: bytes, log_id: str, idx: int, event_id: str) -> dict:
        try:
            return json.loads(_open(ciphertext, _aad(log_id, idx, event_id), nonce, data_key))
        except CryptoError:
            raise PayloadError("payload does not decrypt (wrong key or tampered)", where=f"entry {idx}") from None
