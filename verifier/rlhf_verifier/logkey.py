"""The log key and the contract's code, read from the chain's state (docs/anchor-evidence.md,
"Log key proof"; docs/contract.md, "Storage layout and code hash").

An anchor's `log_key_proof` carries EIP-1186 proofs: the contract's account in the state trie
(root: the block header's stateRoot) and the `logKey[logId]` slot in the account's storage
trie. Once the block is confirmed, they prove the code the contract runs and the log key it
held at that block, so the log key is taken from the chain, not from the exporter.
"""

from __future__ import annotations

from typing import Any

from .evidence import EvidenceError, hexbytes
from .mpt import MPTError, verify_proof
from .rlp import RLPError, byte_strings, decode, keccak256

# keccak256 of the runtime code of each released ProvenanceAnchor version (docs/contract.md,
# "Code hash"): contracts whose storage layout and append-only rule this verifier knows.
KNOWN_CODE_HASHES = {
    bytes.fromhex("7e5d008d572f5e2f60f47ed68bc86dca6932d133bd93fbd00b43ac951dbfb4a5"): "ProvenanceAnchor (solc 0.8.37, 2026-12)",
}
LOG_KEY_SLOT = 4  # `mapping(bytes32 => bytes32) logKey` in ProvenanceAnchor's storage layout
MAX_NODES = 64


def log_key_slot(log_id: bytes) -> bytes:
    return keccak256(log_id + LOG_KEY_SLOT.to_bytes(32, "big"))


def _nodes(v: Any, what: str) -> list[bytes]:
    if type(v) is not list or not v or len(v) > MAX_NODES:
        raise EvidenceError(f"{what} must be a non-empty list of at most {MAX_NODES} hex trie nodes", "evidence.log_key_proof")
    return [hexbytes(n, f"{what}[{i}]") for i, n in enumerate(v)]


def verify_log_key_proof(state_root: bytes, contract: bytes, log_id: bytes, proof: Any) -> tuple[bytes, bytes]:
    """(code hash, log key) that `proof` proves under `state_root`; EvidenceError otherwise."""
    if type(proof) is not dict or set(proof) != {"account_proof", "storage_proof"}:
        raise EvidenceError("log_key_proof must be exactly {account_proof, storage_proof}", "evidence.log_key_proof")
    account_nodes = _nodes(proof["account_proof"], "log_key_proof.account_proof")
    storage_nodes = _nodes(proof["storage_proof"], "log_key_proof.storage_proof")
    try:
        account = decode(verify_proof(state_root, keccak256(contract), account_nodes))
    except (MPTError, RLPError) as e:
        raise EvidenceError(f"the contract's account is not proven under the block's state root: {e}",
                            "evidence.log_key_proof") from None
    if not (isinstance(account, list) and len(account) == 4 and byte_strings(account)
            and len(account[2]) == 32 and len(account[3]) == 32):
        raise EvidenceError("the proven account is not [nonce, balance, storageRoot, codeHash]", "evidence.log_key_proof")
    storage_root, code_hash = account[2], account[3]
    try:
        word = decode(verify_proof(storage_root, keccak256(log_key_slot(log_id)), storage_nodes))
    except (MPTError, RLPError) as e:
        raise EvidenceError(f"the log key slot is not proven under the contract's storage root (is the log "
                            f"registered?): {e}", "evidence.log_key_proof") from None
    if not isinstance(word, bytes) or not 0 < len(word) <= 32 or word[0] == 0:
        raise EvidenceError("the proven log key slot is not a non-zero 32-byte word in minimal form", "evidence.log_key_proof")
    return code_hash, word.rjust(32, b"\x00")
