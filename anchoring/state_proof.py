"""The log key as the contract's storage holds it at an anchor's block (docs/anchor-evidence.md,
"Log key proof"; docs/trust-model.md).

The anchoring worker asks the node for an EIP-1186 proof (`eth_getProof`) of the contract's
`logKey[logId]` storage slot at the anchor's block. A verifier then walks, from the header's
stateRoot, the account proof of the contract (which also proves its code hash, so that the
contract is known to be the append-only ProvenanceAnchor) and the storage proof of the slot:
the log key is read from the chain, not given by the operator.
"""

from __future__ import annotations

import json
from typing import Any

import rlp
from eth_utils import keccak, to_checksum_address

from rlhf_ledger.anchoring.chain import ARTIFACT_PATH, ChainClient, ChainError

# Storage layout of contracts/ProvenanceAnchor.sol (solc assigns slots in declaration order:
# owner 0, pendingOwner 1, authorized 2, heads 3, logKey 4); a test compares it with the
# compiler's storageLayout output. A mapping's value lives at keccak256(key . slot).
LOG_KEY_MAPPING_SLOT = 4


class StateProofError(ChainError):
    code = "bad_state_proof"


def log_key_slot(log_id: bytes) -> bytes:
    """The storage slot of `logKey[log_id]`."""
    if len(log_id) != 32:
        raise ValueError("a log id is 32 bytes")
    return keccak(log_id + LOG_KEY_MAPPING_SLOT.to_bytes(32, "big"))


def runtime_code_hash(artifact_path: Any = ARTIFACT_PATH) -> bytes:
    """keccak-256 of the ProvenanceAnchor runtime code this package deploys."""
    with open(artifact_path, encoding="utf-8") as f:
        code = json.load(f)["deployedBytecode"]
    return keccak(bytes.fromhex(code[2:]))


def _hex_list(value: Any, method: str, field: str, where: str) -> list[bytes]:
    if not isinstance(value, list) or not value:
        raise StateProofError(f"{method}: {field} = {str(value)[:80]!r} is not a non-empty list of proof nodes", where=where)
    out = []
    for i, node in enumerate(value):
        if not (isinstance(node, str) and node.startswith("0x") and len(node) % 2 == 0):
            raise StateProofError(f"{method}: {field}[{i}] = {str(node)[:80]!r} is not 0x-hex", where=where)
        try:
            out.append(bytes.fromhex(node[2:]))
        except ValueError:
            raise StateProofError(f"{method}: {field}[{i}] = {node[:80]!r} is not 0x-hex", where=where) from None
    return out


def build_log_key_proof(client: ChainClient, contract: str, log_id: bytes, block_number: int,
                        state_root: bytes) -> dict[str, Any]:
    """The `log_key_proof` evidence member for `log_id` at `block_number` (checked before use)."""
    where = f"block {block_number}"
    slot = log_key_slot(log_id)
    answer = client.rpc("eth_getProof", [to_checksum_address(contract), ["0x" + slot.hex()], hex(block_number)])
    if not isinstance(answer, dict):
        raise StateProofError(f"eth_getProof: answer = {str(answer)[:80]!r} is not an object", where=where)
    account_proof = _hex_list(answer.get("accountProof"), "eth_getProof", "accountProof", where)
    storage = answer.get("storageProof")
    if not (isinstance(storage, list) and len(storage) == 1 and isinstance(storage[0], dict)):
        raise StateProofError(f"eth_getProof: storageProof = {str(storage)[:80]!r} is not one slot's proof", where=where)
    storage_proof = _hex_list(storage[0].get("proof"), "eth_getProof", "storageProof[0].proof", where)
    proof = {"account_proof": ["0x" + n.hex() for n in account_proof],
             "storage_proof": ["0x" + n.hex() for n in storage_proof]}
    verify_log_key_proof(state_root, bytes.fromhex(to_checksum_address(contract)[2:]), log_id, proof)
    return proof


def verify_log_key_proof(state_root: bytes, contract: bytes, log_id: bytes, proof: Any) -> tuple[bytes, bytes]:
    """(code hash, log key) proven by `proof` under `state_root`; StateProofError otherwise."""
    from rlhf_ledger.anchoring.evidence import EvidenceError, verify_mpt_proof

    if not isinstance(proof, dict) or set(proof) != {"account_proof", "storage_proof"}:
        raise StateProofError("must be {account_proof, storage_proof}", where="evidence.log_key_proof")
    try:
        nodes = {k: [bytes.fromhex(str(n)[2:]) for n in proof[k]] for k in ("account_proof", "storage_proof")}
        account = verify_mpt_proof(state_root, keccak(contract), nodes["account_proof"])
        fields = rlp.decode(account)
        if not (isinstance(fields, list) and len(fields) == 4 and all(isinstance(f, bytes) for f in fields)
                and len(fields[2]) == 32 and len(fields[3]) == 32):
            raise StateProofError("the proven account is not [nonce, balance, storageRoot, codeHash]",
                                  where="evidence.log_key_proof.account_proof")
        value = verify_mpt_proof(fields[2], keccak(log_key_slot(log_id)), nodes["storage_proof"])
        word = rlp.decode(value)
    except (EvidenceError, ValueError, TypeError, rlp.exceptions.DecodingError) as e:
        raise StateProofError(f"does not prove the log key: {e}", where="evidence.log_key_proof") from None
    if not isinstance(word, bytes) or not 0 < len(word) <= 32 or word[0] == 0:
        raise StateProofError("the proven slot value is not a non-zero minimal integer", where="evidence.log_key_proof")
    return fields[3], word.rjust(32, b"\x00")


__all__ = ["LOG_KEY_MAPPING_SLOT", "StateProofError", "build_log_key_proof", "log_key_slot", "runtime_code_hash",
           "verify_log_key_proof"]
