"""The keyring part of the `Ledger` gateway: the ledger's passphrase, each log's signing key
(an encrypted key file under `keys/`, docs/keys.md) and the payload key ring (the KEK that
wraps the run and subject data keys, store/payloads.py)."""

from __future__ import annotations

from pathlib import Path

from rlhf_ledger.core.errors import LedgerError, NoPassphraseError
from rlhf_ledger.core.keys import PASSPHRASE_ENV, Signer, log_key_file_name, read_key_file
from rlhf_ledger.store.base import LedgerBase
from rlhf_ledger.store.payloads import KeyRing, PayloadCrypto


class KeyringMixin(LedgerBase):
    def key_passphrase(self) -> str:
        """The passphrase of the ledger's key files (given to open(), else from the environment)."""
        if self._passphrase is None:
            from rlhf_ledger.core.secret_env import env_secret

            value = env_secret(PASSPHRASE_ENV)
            if not value:
                raise NoPassphraseError(f"the ledger's keys are encrypted: set {PASSPHRASE_ENV} (or {PASSPHRASE_ENV}_FILE, "
                                  "a file holding it)", code="no_passphrase")
            self._passphrase = value
        return self._passphrase

    def _log_key_path(self, log_id: str) -> Path:
        return self.keys_dir / log_key_file_name(log_id)

    def _legacy_log_key_path(self, log_id: str) -> Path:
        # Before log_key_file_name: '/' and ':' both became '_', so "a:b" and "a_b" shared a
        # file. Still read (the key's public key is checked against the log's), never written.
        return self.keys_dir / f"log-{log_id.replace('/', '_').replace(':', '_')}.key.json"

    def log_signer(self, log_id: str, public_key: bytes | None = None) -> Signer:
        """The log's signing key (decrypted once). Pass `public_key` when inside a transaction."""
        signer = self._signers.get(log_id)
        if signer is None:
            path = self._log_key_path(log_id)
            if not path.exists() and self._legacy_log_key_path(log_id).exists():
                path = self._legacy_log_key_path(log_id)
            signer = read_key_file(path, self.key_passphrase())
            if public_key is None:
                public_key = self.log_info(log_id).public_key
            if signer.public_key != public_key:
                raise LedgerError("log key file does not match the log's registered public key", where=log_id)
            self._signers[log_id] = signer
        return signer

    def _payload_crypto(self) -> PayloadCrypto:
        if self._crypto is None:
            self._crypto = PayloadCrypto(KeyRing(self.keys_dir, self.key_passphrase))
        return self._crypto
