"""Encrypted payload store: openings (salts and clear values) sealed per run and per data subject.

Each run has a random 32-byte data key, and so has each data subject (a person, by pseudonym),
both stored only wrapped (ChaCha20-Poly1305) under the ledger's key-encryption key (KEK). An
entry's openings are sealed with ChaCha20-Poly1305 (IETF, 12-byte random nonce) under the run's
data key, with the log id, entry index and event id as associated data so ciphertexts cannot be
moved between entries; an opening that names subjects is first sealed on its own under a key
derived from all their subject keys, so it reads only while the run key and each of those keys
exist (docs/storage.md "Payloads and erasure").

Erasure (docs/storage.md "Payloads and erasure", ledger/erasure.py) destroys a run's or a
subject's data key so that no copy stays readable: the wrapped key is overwritten, every other
key is re-wrapped under a new KEK and the old KEK files are overwritten and deleted. A copy of the old wrapped key that survives
somewhere (a WAL frame, a dead PostgreSQL tuple, a backup) is then sealed under a KEK that no
longer exists.

KEK files: `keys/payload-kek-<seq>-<id>.json` (sealed with the ledger passphrase); the highest
`seq` is the current KEK. A wrapped key names its KEK: 0x01 || kek id (8 bytes) || nonce || box.
Keys wrapped before KEK ids (60 bytes, no prefix) belong to the legacy `keys/payload-kek.json`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt as _open,
)
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_encrypt as _seal,
)
from nacl.exceptions import CryptoError

from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import read_secret_file, write_secret_file

NONCE = 12
WRAP_V2 = b"\x01"
LEGACY_FILE = "payload-kek.json"
_KEK_FILE = re.compile(r"payload-kek-([0-9]{8})-([0-9a-f]{16})\.json")


class PayloadError(LedgerError):
    code = "payload_error"


class ErasedError(PayloadError):
    """The data asked for was erased (its run's data key destroyed): gone for good, not malformed
    (the API answers 410). Same code as PayloadError, so its problem type is unchanged."""


def _aad(log_id: str, idx: int, event_id: str) -> bytes:
    return f"rlhf-ledger-payload/v1\n{log_id}\n{idx}\n{event_id}".encode()


def _wrap_aad(log_id: str, run_id: str) -> bytes:
    return f"run-key\n{log_id}\n{run_id}".encode()


def _subject_wrap_aad(subject: str) -> bytes:
    return f"subject-key\n{subject}".encode()


SUBJECT_LABEL = "rlhf-ledger-subject-opening/v1"


def _aad_v2(log_id: str, idx: int, event_id: str, members_jcs: bytes) -> bytes:
    # Member names are arbitrary strings: JCS of the list keeps them unambiguous.
    return f"rlhf-ledger-payload/v2\n{log_id}\n{idx}\n{event_id}\n".encode() + members_jcs


def _subject_aad(log_id: str, idx: int, event_id: str, member: str, subjects: list[str]) -> bytes:
    return f"{SUBJECT_LABEL}\n{log_id}\n{idx}\n{event_id}\n{member}\n{','.join(subjects)}".encode()


def opening_key(subject_keys: list[bytes], log_id: str, idx: int, member: str, subjects: list[str]) -> bytes:
    """HKDF-SHA256 (RFC 5869, one output block) over every subject's key, in subject order:
    without any one of them the key cannot be computed."""
    prk = hmac.new(SUBJECT_LABEL.encode(), b"".join(subject_keys), hashlib.sha256).digest()
    info = f"{log_id}\n{idx}\n{member}\n{','.join(subjects)}".encode()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@dataclass
class Opened:
    """An entry's openings as far as they still read; `erased`: member -> "run" | "subject"."""

    openings: dict = field(default_factory=dict)
    erased: dict[str, str] = field(default_factory=dict)
    run_erased: bool = False


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
        """A new current KEK (the old ones stay until shred_older_than)."""
        files = self._files()
        return self.create((files[-1][0] + 1) if files else 1)

    def shred_older_than(self, kid: bytes) -> int:
        """Shred every KEK file older than `kid` (and the legacy file). Newer ones stay: another
        erasure may have rotated again since ours committed, and its keys are wrapped under them."""
        files = self._files()
        mine = [seq for seq, k, _ in files if k == kid]
        if not mine:
            return 0
        n = 0
        for seq, k, path in files:
            if seq < mine[0]:
                shred_file(path)
                self._keks.pop(k, None)
                n += 1
        legacy = self.keys_dir / LEGACY_FILE
        if legacy.exists():
            shred_file(legacy)
            self._keks.pop(b"", None)
            n += 1
        return n

    def files(self) -> list[tuple[int, bytes, Path]]:
        """The KEK files now: (seq, kek id, path), oldest first (pass to kek_for for many unwraps)."""
        return self._files()

    def kek_for(self, wrapped: bytes, files: list[tuple[int, bytes, Path]] | None = None) -> tuple[bytes, bytes, bytes]:
        """(kek id, KEK, the nonce-and-box part) for a stored wrapped key. The KEK must still have
        its file (`files`: a listing taken just before), so a KEK shredded by an erasure in another
        process is never used from this process's cache."""
        if len(wrapped) == NONCE + 48:  # legacy: no KEK id
            legacy = self.keys_dir / LEGACY_FILE
            if not legacy.exists():
                raise PayloadError("run data key was wrapped under a KEK that no longer exists")
            return b"", self._load(b"", legacy), wrapped
        if wrapped[:1] != WRAP_V2 or len(wrapped) != 1 + 8 + NONCE + 48:
            raise PayloadError("stored run data key has an unknown format")
        kid = wrapped[1:9]
        for _, k, path in (self._files() if files is None else files):
            if k == kid:
                return kid, self._load(kid, path), wrapped[9:]
        raise PayloadError("run data key was wrapped under a KEK that no longer exists (destroyed by an erasure)")


class PayloadCrypto:
    def __init__(self, ring: KeyRing):
        self.ring = ring

    def new_run_key(self, log_id: str, run_id: str) -> tuple[bytes, bytes]:
        key = os.urandom(32)
        return key, self.wrap(key, log_id, run_id)

    def new_subject_key(self, subject: str) -> tuple[bytes, bytes]:
        key = os.urandom(32)
        return key, self.wrap_subject(key, subject)

    def wrap(self, key: bytes, log_id: str, run_id: str, kek: tuple[bytes, bytes] | None = None) -> bytes:
        return self._wrap(key, _wrap_aad(log_id, run_id), kek)

    def wrap_subject(self, key: bytes, subject: str, kek: tuple[bytes, bytes] | None = None) -> bytes:
        return self._wrap(key, _subject_wrap_aad(subject), kek)

    def _wrap(self, key: bytes, aad: bytes, kek: tuple[bytes, bytes] | None) -> bytes:
        kid, k = kek or self.ring.current()
        nonce = os.urandom(NONCE)
        return WRAP_V2 + kid + nonce + _seal(key, aad, nonce, k)

    def unwrap(self, wrapped: bytes, log_id: str, run_id: str) -> bytes:
        return self._unwrap(wrapped, _wrap_aad(log_id, run_id), "run data key")

    def unwrap_subject(self, wrapped: bytes, subject: str, files: list | None = None) -> bytes:
        return self._unwrap(wrapped, _subject_wrap_aad(subject), "subject key", files)

    def _unwrap(self, wrapped: bytes, aad: bytes, what: str, files: list | None = None) -> bytes:
        _, k, body = self.ring.kek_for(bytes(wrapped), files)
        try:
            return _open(body[NONCE:], aad, body[:NONCE], k)
        except CryptoError:
            raise PayloadError(f"{what} does not unwrap under this ledger's KEK") from None

    @staticmethod
    def seal_entry(run_key: bytes, openings: dict, subjects: dict[str, list[str]], subject_keys: dict[str, bytes | None],
                   log_id: str, idx: int, event_id: str) -> tuple[bytes, bytes, str]:
        """The v2 payload of an entry: (nonce, ciphertext, members as JSON). Openings naming
        subjects are sealed under their subjects' keys inside the run key's layer; one naming a
        subject already erased (key None) is left out and marked erased."""
        members = sorted(openings)
        plain: dict = {}
        sealed: dict = {}
        for m in members:
            people = subjects.get(m)
            if not people:
                plain[m] = openings[m]
                continue
            keys = [subject_keys[s] for s in people]
            if any(k is None for k in keys):
                sealed[m] = {"subjects": people, "erased": True}
                continue
            k = opening_key(keys, log_id, idx, m, people)  # type: ignore[arg-type]
            nonce = os.urandom(NONCE)
            box = _seal(canonicalize(openings[m]), _subject_aad(log_id, idx, event_id, m, people), nonce, k)
            sealed[m] = {"subjects": people, "nonce": base64.b64encode(nonce).decode(), "box": base64.b64encode(box).decode()}
        nonce = os.urandom(NONCE)
        members_jcs = canonicalize(members)  # stored as is: the column is the AAD's tail
        ct = _seal(canonicalize({"openings": plain, "sealed": sealed}), _aad_v2(log_id, idx, event_id, members_jcs), nonce, run_key)
        return nonce, ct, members_jcs.decode("utf-8")

    @staticmethod
    def open_entry(run_key: bytes, nonce: bytes, ciphertext: bytes, members_json: str, log_id: str, idx: int, event_id: str,
                   subject_keys: Callable[[list[str]], dict[str, bytes | None]]) -> Opened:
        """Open a v2 payload; `subject_keys(pseudonyms)` gives each one's key (None: erased)."""
        try:
            doc = json.loads(_open(bytes(ciphertext), _aad_v2(log_id, idx, event_id, members_json.encode("utf-8")),
                                   bytes(nonce), run_key))
        except CryptoError:
            raise PayloadError("payload does not decrypt (wrong key or tampered)", where=f"entry {idx}") from None
        out = Opened(openings=dict(doc["openings"]))
        sealed = doc["sealed"]
        keys = subject_keys(sorted({s for part in sealed.values() for s in part["subjects"]})) if sealed else {}
        for m, part in sealed.items():
            people = part["subjects"]
            if part.get("erased") or any(keys.get(s) is None for s in people):
                out.erased[m] = "subject"
                continue
            k = opening_key([keys[s] for s in people], log_id, idx, m, people)  # type: ignore[misc]
            try:
                out.openings[m] = json.loads(_open(base64.b64decode(part["box"]), _subject_aad(log_id, idx, event_id, m, people),
                                                   base64.b64decode(part["nonce"]), k))
            except CryptoError:
                raise PayloadError("an opening does not decrypt under its subjects' keys (tampered)",
                                   where=f"entry {idx}, member {m}") from None
        return out

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
