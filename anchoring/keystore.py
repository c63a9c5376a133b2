"""The anchoring key: the secp256k1 key that signs anchor transactions.

Two sources, in this order of preference:
1. an encrypted Ethereum keystore (Web3 Secret Storage, "keystore v3" JSON, as written by geth,
   clef, foundry `cast wallet` and eth_account), decrypted with a passphrase taken from an
   environment variable (default RLHF_ANCHOR_PASSPHRASE) or, on a terminal, an interactive prompt;
2. the environment variable RLHF_ANCHOR_PRIVATE_KEY (0x-prefixed or bare 64 hex digits), for
   development and CI.

The key is never logged: errors name the file or variable, never the value, and the returned
LocalAccount's repr shows the address only.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from rlhf_ledger.core.errors import KeyFileError

PRIVATE_KEY_ENV = "RLHF_ANCHOR_PRIVATE_KEY"
PASSPHRASE_ENV = "RLHF_ANCHOR_PASSPHRASE"


def account_from_private_key(value: str | bytes, *, where: str = "private key") -> LocalAccount:
    """A LocalAccount from 32 raw bytes or 64 hex digits (optionally 0x-prefixed)."""
    if isinstance(value, str):
        text = value.strip()
        text = text[2:] if text[:2].lower() == "0x" else text
        if len(text) != 64:
            raise KeyFileError("must be 64 hex digits (32 bytes)", where=where)
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise KeyFileError("is not hexadecimal", where=where) from None
    else:
        raw = bytes(value)
        if len(raw) != 32:
            raise KeyFileError("must be 32 bytes", where=where)
    try:
        return Account.from_key(raw)
    except (ValueError, TypeError):
        # eth_keys rejects 0 and values >= the curve order; say so without echoing the key.
        raise KeyFileError("is not a valid secp256k1 private key", where=where) from None


def load_keystore(path: str | Path, passphrase: str | None = None, *,
                  passphrase_env: str = PASSPHRASE_ENV) -> LocalAccount:
    """Decrypt a keystore v3 JSON file. Passphrase: argument, else env var, else prompt."""
    where = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError("keystore file not found", where=where) from None
    except (OSError, ValueError) as e:
        raise KeyFileError(f"cannot read keystore JSON: {e.__class__.__name__}", where=where) from None
    if not isinstance(data, dict) or data.get("version") != 3 or "crypto" not in data and "Crypto" not in data:
        raise KeyFileError("not an Ethereum keystore v3 file (version 3 with a crypto section)", where=where)
    if passphrase is None:
        passphrase = os.environ.get(passphrase_env)
    if passphrase is None:
        if not sys.stdin.isatty():
            raise KeyFileError(f"no passphrase: set {passphrase_env} or run on a terminal", where=where)
        passphrase = getpass.getpass(f"Passphrase for anchoring keystore {where}: ")
    try:
        raw = Account.decrypt(data, passphrase)
    except ValueError:
        # eth_keyfile raises ValueError("MAC mismatch") for a wrong passphrase.
        raise KeyFileError("wrong passphrase or corrupted keystore (MAC mismatch)", where=where) from None
    account = account_from_private_key(bytes(raw), where=where)
    expected = data.get("address")
    if expected and account.address.lower() != "0x" + str(expected).lower().removeprefix("0x"):
        raise KeyFileError(f"decrypted key is for {account.address}, file says {expected}", where=where)
    return account


def write_keystore(account: LocalAccount, path: str | Path, passphrase: str, *, iterations: int | None = None) -> Path:
    """Encrypt `account` into a keystore v3 file (scrypt), created with mode 0600."""
    data = Account.encrypt(account.key, passphrase, iterations=iterations)
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return target


def load_anchor_account(keystore_path: str | Path | None = None, *,
                        env: dict[str, str] | None = None) -> LocalAccount:
    """The anchoring account: from `keystore_path` if given, else from RLHF_ANCHOR_PRIVATE_KEY."""
    environ = os.environ if env is None else env
    from rlhf_ledger.core.secret_env import env_secret  # NAME or NAME_FILE (a mounted Secret)

    if keystore_path is not None:
        return load_keystore(keystore_path, env_secret(PASSPHRASE_ENV, environ))
    value = env_secret(PRIVATE_KEY_ENV, environ)
    if not value:
        raise KeyFileError(f"no anchoring key: pass a keystore file or set {PRIVATE_KEY_ENV} (or {PRIVATE_KEY_ENV}_FILE)",
                           where=PRIVATE_KEY_ENV)
    return account_from_private_key(value, where=PRIVATE_KEY_ENV)
