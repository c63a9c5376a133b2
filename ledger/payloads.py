"""Encrypted payload store: openings (salts and clear values) sealed per run.

Each run has a random 32-byte data key, stored only wrapped (ChaCha20-Poly1305) under the
ledger's key-encryption key (KEK). Each event's openings are sealed with ChaCha20-Poly1305
(IETF, 12-byte random nonce) under the run's data key, with the log id, entry index and event
id as associated data so ciphertexts cannot be moved between entries. Erasing a run deletes its
wrapped data key: its payloads become unreadable, while commitments and proofs stay valid.
"""

from __future__ import annotations

import json
import os

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt as _open,
    crypto_aead_chacha20poly1305_ietf_encrypt as _seal,
)
from nacl.exceptions import CryptoError

from .errors import LedgerError
from .jcs import canonicalize

NONCE = 12


class PayloadError(LedgerError):
    code = "payload_error"


def _aad(log_id: str, idx: int, event_id: str) -> bytes:
    return f"rlhf-ledger-payload/v1\n{log_id}\n{idx}\n{event_id}".encode()


class PayloadCrypto:
    def __init__(self, kek: bytes):
        if len(kek) != 32:
            raise ValueError("KEK must be 32 bytes")
        self._kek = kek

    def new_run_key(self, log_id: str, run_id: str) -> tuple[bytes, bytes]:
        key = os.urandom(32)
        return key, self.wrap(key, log_id, run_id)

    def wrap(self, key: bytes, log_id: str, run_id: str) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + _seal(key, f"run-key\n{log_id}\n{run_id}".encode(), nonce, self._kek)

    def unwrap(self, wrapped: bytes, log_id: str, run_id: str) -> bytes:
        try:
            return _open(wrapped[NONCE:], f"run-key\n{log_id}\n{run_id}".encode(), wrapped[:NONCE], self._kek)
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
