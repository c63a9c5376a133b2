"""Offline anchor evidence: proof that an Anchored event is in a block, checkable against the block
hash alone (format: docs/anchor-evidence.md).

build_evidence() fetches, for one anchor transaction, the block header, every receipt of the block,
rebuilds the receipt trie (py-trie) and checks it against the header's receiptsRoot (prove_receipt(),
which holds for any receipt of any block), then returns a JSON-able dict: the header RLP, the
receipt's consensus encoding, the Merkle-Patricia proof of the receipt, and the decoded Anchored log.

verify_evidence() re-checks such a dict with no network and without py-trie (its own small
Merkle-Patricia proof walker), so a builder bug is not mirrored in the check.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import rlp
from eth_utils import keccak, to_checksum_address
from trie import HexaryTrie

from rlhf_ledger.anchoring.chain import ChainClient, ChainError, ChainUnavailable, RPCError
from rlhf_ledger.anchoring.state_proof import build_log_key_proof, verify_log_key_proof
from rlhf_ledger.core.errors import ProofError

log = logging.getLogger("rlhf_ledger.anchoring.evidence")

EVIDENCE_FORMAT = "rlhf-anchor-evidence"
EVIDENCE_VERSION = 1
ANCHORED_SIGNATURE = "Anchored(bytes32,uint64,bytes32,string,address)"
ANCHORED_TOPIC = keccak(text=ANCHORED_SIGNATURE)

# Header fields in consensus order: (JSON-RPC name, kind). The first 15 are the pre-London header;
# each later fork appends fields. A header has a prefix of this list: a field is included when
# the node reports it (the fork is active), and a later field never appears without the earlier ones.
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("parentHash", "hash"),
    ("sha3Uncles", "hash"),
    ("miner", "address"),
    ("stateRoot", "hash"),
    ("transactionsRoot", "hash"),
    ("receiptsRoot", "hash"),
    ("logsBloom", "bloom"),
    ("difficulty", "int"),
    ("number", "int"),
    ("gasLimit", "int"),
    ("gasUsed", "int"),
    ("timestamp", "int"),
    ("extraData", "bytes"),
    ("mixHash", "hash"),
    ("nonce", "nonce"),
    ("baseFeePerGas", "int"),          # London (EIP-1559)
    ("withdrawalsRoot", "hash"),       # Shanghai (EIP-4895)
    ("blobGasUsed", "int"),            # Cancun (EIP-4844)
    ("excessBlobGas", "int"),          # Cancun (EIP-4844)
    ("parentBeaconBlockRoot", "hash"), # Cancun (EIP-4788)
    ("requestsHash", "hash"),          # Prague (EIP-7685)
)
_FIXED_LEN = {"hash": 32, "address": 20, "bloom": 256, "nonce": 8}


class EvidenceError(ProofError):
    code = "bad_anchor_evidence"


# -- encoding helpers (shared by builder and checker only where they are pure data conversions) --

def _unhex(value: str, *, where: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EvidenceError("expected a 0x-prefixed hex string", where=where)
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise EvidenceError("invalid hex", where=where) from None


def _int_bytes(value: int) -> bytes:
    """RLP integer: big-endian with no leading zeros; zero is the empty string."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


DEPOSIT_TX_TYPE = 0x7E  # OP Stack deposit transactions (op-geth core/types/deposit_tx.go)


def _field(obj: dict[str, Any], name: str, *, method: str, where: str) -> Any:
    """A field the builder needs from a node answer; missing -> one line naming method and field."""
    if not isinstance(obj, dict) or obj.get(name) is None:
        raise EvidenceError(f"{method}: answer has no {name}", where=where)
    return obj[name]


def _qty(obj: dict[str, Any], name: str, *, method: str, where: str) -> int:
    """A JSON-RPC quantity (0x-hex, no leading zeros tolerated only as geth emits them)."""
    value = _field(obj, name, method=method, where=where)
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        raise EvidenceError(f"{method}: {name} = {str(value)[:80]!r} is not a 0x-hex quantity", where=where)
    try:
        return int(value, 16)
    except ValueError:
        raise EvidenceError(f"{method}: {name} = {value[:80]!r} is not a 0x-hex quantity", where=where) from None


def _data(obj: dict[str, Any], name: str, *, method: str, where: str, length: int | None = None) -> bytes:
    value = _field(obj, name, method=method, where=where)
    if not isinstance(value, str) or not value.startswith("0x") or len(value) % 2:
        raise EvidenceError(f"{method}: {name} = {str(value)[:80]!r} is not 0x-hex data", where=where)
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise EvidenceError(f"{method}: {name} = {value[:80]!r} is not 0x-hex data", where=where) from None
    if length is not None and len(raw) != length:
        raise EvidenceError(f"{method}: {name} = {value[:80]!r} must be {length} bytes, got {len(raw)}", where=where)
    return raw


# Fields a node reports in a block object that are not header fields (JSON-RPC extras).
_NON_HEADER_KEYS = frozenset({
    "hash", "size", "totalDifficulty", "transactions", "uncles", "withdrawals", "sealFields", "author",
    "l1BlockNumber", "sendCount", "sendRoot",  # Arbitrum: derived from extraData/mixHash/nonce
    "requests", "blockAccessList", "signature", "committee",
})
# Header fields a chain reports beyond HEADER_FIELDS, in consensus order after requestsHash, that
# this builder knows how to encode. Anything else is refused with its name (see header_rlp()).
EXTRA_TRAILING_FIELDS: tuple[tuple[str, str], ...] = (
    ("blockAccessListHash", "hash"),   # Amsterdam (EIP-7928), appended after requestsHash
)


def header_rlp(block: dict[str, Any], *, chain: str = "chain", method: str = "eth_getBlockByHash") -> bytes:
    """RLP of the header of a JSON-RPC block object, fields per HEADER_FIELDS (then the known
    trailing fields of EXTRA_TRAILING_FIELDS). A field the node reports that is neither a known
    header field nor a known JSON-RPC extra is refused with its name: the builder cannot know
    where it goes in the header, and guessing would emit evidence that does not hash."""
    where = f"{chain} block {block.get('hash') if isinstance(block, dict) else None}"
    if not isinstance(block, dict):
        raise EvidenceError(f"{method}: answer is not a block object", where=where)
    items: list[bytes] = []
    missing_from: str | None = None
    fields = HEADER_FIELDS + EXTRA_TRAILING_FIELDS
    for name, kind in fields:
        if block.get(name) is None:
            missing_from = missing_from or name
            continue
        if missing_from is not None:
            raise EvidenceError(f"{method}: header has {name} but not the earlier field {missing_from}",
                                where=where)
        if kind == "int":
            items.append(_int_bytes(_qty(block, name, method=method, where=where)))
        else:
            items.append(_data(block, name, method=method, where=where, length=_FIXED_LEN.get(kind)))
    known = {name for name, _ in fields}
    unknown = sorted(k for k in block if k not in known and k not in _NON_HEADER_KEYS)
    if unknown:
        raise EvidenceError(
            f"{method}: block has header field(s) {', '.join(unknown)} this builder cannot place on {chain}; "
            "use a node that offers debug_getRawHeader, or extend anchoring/evidence.py", where=where)
    return rlp.encode(items)


def _status_byte(receipt: dict[str, Any], *, method: str, where: str) -> bytes:
    if receipt.get("status") is None:
        if receipt.get("root") is not None:
            # Pre-Byzantium (EIP-658): the post-transaction state root stands where the status is.
            # It encodes for the receipt trie; anchor evidence still refuses it (no status to check).
            return _data(receipt, "root", method=method, where=where, length=32)
        raise EvidenceError(f"{method}: receipt has no status", where=where)
    status = _qty(receipt, "status", method=method, where=where)
    if status not in (0, 1):
        raise EvidenceError(f"{method}: status = {receipt['status']!r} is neither 0x0 nor 0x1", where=where)
    return _int_bytes(status)


def receipt_rlp(receipt: dict[str, Any], *, method: str = "eth_getBlockReceipts") -> bytes:
    """Consensus encoding of a JSON-RPC receipt (EIP-2718), the value stored in the receipt trie.

    - legacy (type 0): rlp([status, cumulativeGasUsed, logsBloom, logs]); before Byzantium the
      32-byte post-state `root` stands where the status is;
    - typed (0x01 access list, 0x02 EIP-1559, 0x03 blob, 0x04 set-code, Arbitrum 0x64..0x6a, ...):
      type_byte || the same RLP list;
    - OP Stack deposit (0x7e): before Canyon as a typed receipt; since Canyon the node reports
      depositReceiptVersion and the list gains [..., depositNonce, depositReceiptVersion]
      (op-geth core/types/receipt.go, EncodeIndex). A Regolith receipt carries depositNonce in
      JSON but not in the trie encoding.
    Every field is validated; a missing or malformed one is named with the RPC method."""
    where = f"receipt {receipt.get('transactionHash') if isinstance(receipt, dict) else None}"
    if not isinstance(receipt, dict):
        raise EvidenceError(f"{method}: receipt is not an object", where=where)
    status = _status_byte(receipt, method=method, where=where)
    cumulative = _qty(receipt, "cumulativeGasUsed", method=method, where=where)
    bloom = _data(receipt, "logsBloom", method=method, where=where, length=256)
    raw_logs = _field(receipt, "logs", method=method, where=where)
    if not isinstance(raw_logs, list):
        raise EvidenceError(f"{method}: logs = {str(raw_logs)[:80]!r} is not a list", where=where)
    logs = []
    for i, lg in enumerate(raw_logs):
        lw = f"{where} log {i}"
        topics = _field(lg, "topics", method=method, where=lw)
        if not isinstance(topics, list):
            raise EvidenceError(f"{method}: topics = {str(topics)[:80]!r} is not a list", where=lw)
        logs.append([
            _data(lg, "address", method=method, where=lw, length=20),
            [_data({"topic": t}, "topic", method=method, where=lw, length=32) for t in topics],
            _data(lg, "data", method=method, where=lw),
        ])
    tx_type = _qty(receipt, "type", method=method, where=where) if receipt.get("type") is not None else 0
    if tx_type > 0x7F:
        raise EvidenceError(f"{method}: type = {receipt['type']!r} is not an EIP-2718 type (0x00..0x7f)", where=where)
    fields: list[Any] = [status, _int_bytes(cumulative), bloom, logs]
    if tx_type == DEPOSIT_TX_TYPE and receipt.get("depositReceiptVersion") is not None:
        fields += [_int_bytes(_qty(receipt, "depositNonce", method=method, where=where)),
                   _int_bytes(_qty(receipt, "depositReceiptVersion", method=method, where=where))]
    body = rlp.encode(fields)
    return body if tx_type == 0 else bytes([tx_type]) + body


def decode_anchored_data(data: bytes, *, where: str = "log.data") -> tuple[int, bytes, str]:
    """Strict ABI decoding of the Anchored data (uint64 treeSize, bytes32 rootHash, string cid):
    exactly the canonical encoding Solidity emits, nothing more."""
    if len(data) < 128 or len(data) % 32:
        raise EvidenceError(f"Anchored data must be 128+32k bytes, got {len(data)}", where=where)
    size_word, root, offset_word, len_word = data[0:32], data[32:64], data[64:96], data[96:128]
    if size_word[:24] != bytes(24):
        raise EvidenceError("treeSize does not fit uint64", where=where)
    if int.from_bytes(offset_word, "big") != 96:
        raise EvidenceError("string offset must be 96 (0x60)", where=where)
    length = int.from_bytes(len_word, "big")
    padded = (length + 31) // 32 * 32
    if len(data) != 128 + padded:
        raise EvidenceError(f"data length {len(data)} does not match cid length {length}", where=where)
    raw, padding = data[128:128 + length], data[128 + length:]
    if padding != bytes(len(padding)):
        raise EvidenceError("non-zero padding after cid", where=where)
    try:
        cid = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EvidenceError("cid is not UTF-8", where=where) from None
    return int.from_bytes(size_word, "big"), root, cid


# -- building ------------------------------------------------------------------------------------

RECEIPT_CALLS_IN_PARALLEL = 8  # bound for eth_getTransactionReceipt fallback calls


def _block_receipts(client: ChainClient, block: dict[str, Any]) -> list[dict[str, Any]]:
    """Every receipt of the block: eth_getBlockReceipts when the node offers it, else one
    eth_getTransactionReceipt per transaction, at most RECEIPT_CALLS_IN_PARALLEL at a time."""
    where = f"block {block['hash']}"
    hashes = block.get("transactions")
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise EvidenceError("eth_getBlockByHash: transactions is not a list of hashes", where=where)
    method = "eth_getBlockReceipts"
    receipts: Any = None
    if getattr(client, "block_receipts_supported", True):
        try:
            receipts = client.rpc(method, [block["hash"]])
        except ChainError as e:
            if isinstance(e, ChainUnavailable):
                raise
            # not every node has eth_getBlockReceipts (method not found): remember, then fall back
            try:
                client.block_receipts_supported = False  # type: ignore[attr-defined]
            except AttributeError:
                pass
            receipts = None
    if receipts is None:
        method = "eth_getTransactionReceipt"
        if hashes:
            with ThreadPoolExecutor(max_workers=min(RECEIPT_CALLS_IN_PARALLEL, len(hashes))) as pool:
                receipts = list(pool.map(client.receipt, hashes))
        else:
            receipts = []
    if not isinstance(receipts, list):
        raise EvidenceError(f"{method}: answer is not a list of receipts", where=where)
    for i, r in enumerate(receipts):
        if r is None:
            raise EvidenceError(f"{method}: no receipt for transaction {hashes[i] if i < len(hashes) else i}",
                                where=where)
        _qty(r, "transactionIndex", method=method, where=where)
    receipts = sorted(receipts, key=lambda r: int(r["transactionIndex"], 16))
    if len(receipts) != len(hashes):
        raise EvidenceError(f"{method}: got {len(receipts)} receipts for {len(hashes)} transactions", where=where)
    for i, r in enumerate(receipts):
        if int(r["transactionIndex"], 16) != i or str(r.get("transactionHash", "")).lower() != hashes[i].lower():
            raise EvidenceError(f"{method}: receipt {i} is for transaction {r.get('transactionHash')!r} at index "
                                f"{r['transactionIndex']}, the block lists {hashes[i]}", where=where)
    return receipts


def block_header_bytes(client: ChainClient, block: dict[str, Any]) -> bytes:
    """The header RLP: debug_getRawHeader when the node offers it (checked against the block hash),
    else built from the block object's fields (header_rlp)."""
    chain = f"chain {client.chain_id}"
    block_hash = _data(block, "hash", method="eth_getBlockByHash", where=chain, length=32)
    raw: bytes | None = None
    if getattr(client, "raw_header_supported", True):
        try:
            answer = client.rpc("debug_getRawHeader", [block["hash"]])
        except ChainError as e:
            if isinstance(e, ChainUnavailable):
                raise
            answer = None
            try:
                client.raw_header_supported = False  # type: ignore[attr-defined]
            except AttributeError:
                pass
        if answer is not None:
            raw = _data({"result": answer}, "result", method="debug_getRawHeader", where=chain)
            if keccak(raw) != block_hash:
                raise EvidenceError(f"debug_getRawHeader: keccak of the raw header is 0x{keccak(raw).hex()}, "
                                    f"not the block hash {block['hash']}", where=chain)
            return raw
    header = header_rlp(block, chain=chain)
    if keccak(header) != block_hash:
        n = len(rlp.decode(header))
        raise EvidenceError(
            f"eth_getBlockByHash: the header rebuilt from its {n} fields hashes to 0x{keccak(header).hex()}, not "
            f"the block hash {block['hash']}: a field value differs from the consensus header (extraData of "
            f"{len(_data(block, 'extraData', method='eth_getBlockByHash', where=chain))} bytes as reported, or a "
            "field this builder does not know); use a node that offers debug_getRawHeader", where=chain)
    return header


def build_receipt_trie(encoded_receipts: list[bytes]) -> HexaryTrie:
    t = HexaryTrie(db={})
    for index, value in enumerate(encoded_receipts):
        t.set(rlp.encode(index), value)
    return t


def trie_proof(t: HexaryTrie, key: bytes) -> list[bytes]:
    """Proof nodes for `key` as RLP, root first, hash-referenced nodes only: a node whose RLP is
    shorter than 32 bytes is embedded in its parent and is not a proof entry (geth's eth_getProof
    convention). py-trie lists embedded nodes too, so they are dropped here."""
    nodes = [rlp.encode(node) for node in t.get_proof(key)]
    return [n for i, n in enumerate(nodes) if i == 0 or len(n) >= 32]


@dataclass(frozen=True)
class ReceiptInclusion:
    """A receipt proven against its block header: the part of anchor evidence that does not depend
    on what the receipt's logs say (so it can be exercised on any real block's real receipt)."""

    block: dict[str, Any]        # the node's block object (its hash is the header's keccak)
    header: bytes                # consensus header RLP, keccak == block hash
    receipts: list[dict[str, Any]]  # every receipt of the block, in transaction order
    tx_index: int
    receipt: bytes               # consensus encoding of receipts[tx_index] (the trie value)
    proof: list[bytes]           # receipt-trie proof nodes, root first


def prove_receipt(client: ChainClient, block_hash: str, tx_index: int, *, tx_hash: str | None = None) -> ReceiptInclusion:
    """Fetch the block's header and every receipt, rebuild the receipt trie, require its root to be
    the header's receiptsRoot, and prove receipt `tx_index` (which must be `tx_hash` when given)."""
    where = tx_hash or f"block {block_hash} index {tx_index}"
    block = client.block(block_hash)
    header = block_header_bytes(client, block)
    _data(block, "receiptsRoot", method="eth_getBlockByHash", where=where, length=32)
    _qty(block, "number", method="eth_getBlockByHash", where=where)

    receipts = _block_receipts(client, block)
    method = "eth_getBlockReceipts" if getattr(client, "block_receipts_supported", True) else "eth_getTransactionReceipt"
    encoded = [receipt_rlp(r, method=method) for r in receipts]
    receipts_trie = build_receipt_trie(encoded)
    header_receipts_root = rlp.decode(header)[5]  # from the hashed header, not the JSON answer
    if receipts_trie.root_hash != header_receipts_root:
        raise EvidenceError(f"rebuilt receipt trie root 0x{receipts_trie.root_hash.hex()} != header receiptsRoot "
                            f"0x{header_receipts_root.hex()} ({len(receipts)} receipts of types "
                            f"{sorted({str(r.get('type') or '0x0') for r in receipts})})", where=f"block {block['hash']}")
    if not 0 <= tx_index < len(receipts):
        raise EvidenceError(f"transactionIndex {tx_index} is outside the block's {len(receipts)} transactions",
                            where=where)
    mine = receipts[tx_index]
    if tx_hash is not None and mine["transactionHash"].lower() != tx_hash.lower():
        raise EvidenceError(f"receipt at index {tx_index} is for {mine['transactionHash']}", where=tx_hash)
    proof = trie_proof(receipts_trie, rlp.encode(tx_index))
    return ReceiptInclusion(block=block, header=header, receipts=receipts, tx_index=tx_index,
                            receipt=encoded[tx_index], proof=proof)


def build_evidence(client: ChainClient, tx_hash: str, *, contract: str | None = None) -> dict[str, Any]:
    """Evidence for the single Anchored log of `contract` (default: client's contract) in tx_hash."""
    contract_addr = to_checksum_address(contract or client.contract_address or "")
    rcpt = client.receipt(tx_hash)
    if rcpt is None or rcpt.get("blockHash") is None:
        raise EvidenceError("transaction not mined (no receipt)", where=tx_hash)
    if _qty(rcpt, "status", method="eth_getTransactionReceipt", where=tx_hash) != 1:
        raise EvidenceError("transaction reverted: no anchor", where=tx_hash)
    tx_index = _qty(rcpt, "transactionIndex", method="eth_getTransactionReceipt", where=tx_hash)
    inclusion = prove_receipt(client, rcpt["blockHash"], tx_index, tx_hash=tx_hash)
    block, header, receipts, proof = inclusion.block, inclusion.header, inclusion.receipts, inclusion.proof
    method = "eth_getBlockReceipts" if getattr(client, "block_receipts_supported", True) else "eth_getTransactionReceipt"
    mine = receipts[tx_index]

    positions = [
        i for i, lg in enumerate(mine["logs"])
        if to_checksum_address(lg["address"]) == contract_addr and lg["topics"]
        and _unhex(lg["topics"][0], where="topic0") == ANCHORED_TOPIC
    ]
    if len(positions) != 1:
        raise EvidenceError(f"expected exactly one Anchored log of {contract_addr}, found {len(positions)}",
                            where=tx_hash)
    position = positions[0]
    lg = mine["logs"][position]
    if len(lg["topics"]) != 3:
        raise EvidenceError("Anchored log must have 3 topics", where=tx_hash)
    tree_size, root_hash, cid = decode_anchored_data(_unhex(lg["data"], where="log.data"))
    submitter_word = _unhex(lg["topics"][2], where="topic2")
    chain_id = client.chain_id

    evidence = {
        "format": EVIDENCE_FORMAT,
        "version": EVIDENCE_VERSION,
        "chain_id": chain_id,
        "contract": contract_addr,
        "tx_hash": "0x" + _unhex(tx_hash, where="tx_hash").hex(),
        "tx_index": tx_index,
        "block_number": int(block["number"], 16),
        "block_hash": block["hash"].lower(),
        "log_index": _qty(lg, "logIndex", method=method, where=tx_hash),
        "receipt_log_position": position,
        "block_header_rlp": "0x" + header.hex(),
        "receipt_rlp": "0x" + inclusion.receipt.hex(),
        "receipt_proof": ["0x" + node.hex() for node in proof],
        "log_id": lg["topics"][1].lower(),
        "tree_size": tree_size,
        "root_hash": "0x" + root_hash.hex(),
        "cid": cid,
        "submitter": to_checksum_address(submitter_word[12:]),
    }
    # Builder's own consistency: the block-level log index is the logs of earlier receipts + position.
    earlier = sum(len(r["logs"]) for r in receipts[:tx_index])
    if earlier + position != evidence["log_index"]:
        raise EvidenceError(f"log_index {evidence['log_index']} != {earlier} earlier logs + position {position}",
                            where=tx_hash)
    # The log key as the contract's storage holds it at this block (docs/anchor-evidence.md,
    # "Log key proof"): what lets a verifier take the log key from the chain.
    try:
        evidence["log_key_proof"] = build_log_key_proof(
            client, contract_addr, _unhex(lg["topics"][1], where="topic1"), evidence["block_number"], rlp.decode(header)[3])
    except RPCError as e:  # no eth_getProof (or no state for that block): the anchor stands, the key is not proven
        log.warning("anchor %s: no log key proof (%s); verifiers must pin the log key for this anchor", tx_hash, e)
    verify_evidence(evidence)
    return evidence


# -- independent check ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifiedAnchor:
    """What verified evidence proves (given that block_hash is trusted / on the canonical chain)."""

    chain_id: int
    contract: str
    block_number: int
    block_hash: bytes
    timestamp: int
    log_id: bytes
    tree_size: int
    root_hash: bytes
    cid: str
    submitter: str
    log_key: bytes | None = None  # the contract's logKey[logId] at this block, when log_key_proof is present
    code_hash: bytes | None = None  # the contract's code hash at this block (same proof)


def _nibbles(key: bytes) -> list[int]:
    out: list[int] = []
    for b in key:
        out += [b >> 4, b & 0x0F]
    return out


def _decode_compact_path(encoded: bytes) -> tuple[list[int], bool]:
    """Hex-prefix encoding (Yellow Paper appendix C): returns (nibbles, is_leaf)."""
    if not encoded:
        raise EvidenceError("empty hex-prefix path", where="receipt_proof")
    flag = encoded[0] >> 4
    if flag > 3:
        raise EvidenceError("bad hex-prefix flag", where="receipt_proof")
    nibbles = _nibbles(encoded)
    nibbles = nibbles[1:] if flag & 1 else nibbles[2:]
    return nibbles, bool(flag & 2)


def verify_mpt_proof(root: bytes, key: bytes, proof: list[bytes]) -> bytes:
    """Walk a Merkle-Patricia proof from `root`; return the value stored at `key`.

    proof[0] must hash to root; each later node must hash to the 32-byte reference in its parent.
    A child reference shorter than 32 bytes is an embedded node (its RLP inline in the parent) and
    takes no proof entry. Every proof entry must be used."""
    path = _nibbles(key)
    expected: bytes | list = root  # a 32-byte hash, or an already-decoded embedded node
    used = 0
    while True:
        if isinstance(expected, bytes):
            if used >= len(proof):
                raise EvidenceError(f"proof ends after {used} nodes before the key was reached", where="receipt_proof")
            raw = proof[used]
            if keccak(raw) != expected:
                raise EvidenceError(f"node {used} does not hash to the reference in its parent"
                                    + (" (receiptsRoot)" if used == 0 else ""), where=f"receipt_proof[{used}]")
            used += 1
            try:
                node = rlp.decode(raw)
            except rlp.exceptions.DecodingError:
                raise EvidenceError("node is not RLP", where=f"receipt_proof[{used - 1}]") from None
        else:
            node = expected
        if not isinstance(node, list):
            raise EvidenceError("trie node is not a list", where=f"receipt_proof[{used - 1}]")
        if len(node) == 17:
            if not path:
                value = node[16]
                break
            child = node[path[0]]
            path = path[1:]
        elif len(node) == 2:
            node_path, is_leaf = _decode_compact_path(node[0])
            if path[:len(node_path)] != node_path:
                raise EvidenceError("key not in trie (path diverges)", where="receipt_proof")
            path = path[len(node_path):]
            if is_leaf:
                if path:
                    raise EvidenceError("key not in trie (leaf for a different key)", where="receipt_proof")
                value = node[1]
                break
            child = node[1]
        else:
            raise EvidenceError(f"trie node with {len(node)} items", where=f"receipt_proof[{used - 1}]")
        if isinstance(child, list):
            expected = child  # embedded node
        elif len(child) == 32:
            expected = child
        elif child == b"":
            raise EvidenceError("key not in trie (empty branch)", where="receipt_proof")
        else:
            raise EvidenceError("child reference is neither a 32-byte hash nor an embedded node",
                                where="receipt_proof")
    if not isinstance(value, bytes) or value == b"":
        raise EvidenceError("no value at key", where="receipt_proof")
    if used != len(proof):
        raise EvidenceError(f"{len(proof) - used} unused proof nodes", where="receipt_proof")
    return value


def _require(ev: dict[str, Any], name: str, typ: type) -> Any:
    if name not in ev:
        raise EvidenceError("missing field", where=f"evidence.{name}")
    value = ev[name]
    if typ is int and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise EvidenceError("must be a non-negative integer", where=f"evidence.{name}")
    if typ is not int and not isinstance(value, typ):
        raise EvidenceError(f"must be a {typ.__name__}", where=f"evidence.{name}")
    return value


def verify_evidence(ev: dict[str, Any], *, block_hash: str | bytes | None = None) -> VerifiedAnchor:
    """Check anchor evidence offline (docs/anchor-evidence.md, "Verification"). If `block_hash` is
    given (the caller's trusted block hash), the evidence must be for that block."""
    if ev.get("format") != EVIDENCE_FORMAT or ev.get("version") != EVIDENCE_VERSION:
        raise EvidenceError(f"format/version must be {EVIDENCE_FORMAT}/{EVIDENCE_VERSION}", where="evidence")
    bhash = _unhex(_require(ev, "block_hash", str), where="evidence.block_hash")
    if block_hash is not None:
        trusted = block_hash if isinstance(block_hash, bytes) else _unhex(block_hash, where="block_hash")
        if trusted != bhash:
            raise EvidenceError("evidence is for another block than the trusted block hash", where="evidence.block_hash")

    # 1. header hashes to the block hash; take number and receiptsRoot from it.
    header = _unhex(_require(ev, "block_header_rlp", str), where="evidence.block_header_rlp")
    if keccak(header) != bhash:
        raise EvidenceError("keccak-256(block_header_rlp) != block_hash", where="evidence.block_header_rlp")
    fields = rlp.decode(header)
    if not isinstance(fields, list) or len(fields) < 15 or not all(isinstance(f, bytes) for f in fields):
        raise EvidenceError("header is not a list of at least 15 byte strings", where="evidence.block_header_rlp")
    receipts_root, number, timestamp = fields[5], int.from_bytes(fields[8], "big"), int.from_bytes(fields[11], "big")
    if number != _require(ev, "block_number", int):
        raise EvidenceError(f"block_number {ev['block_number']} != header number {number}", where="evidence.block_number")

    # 2. the receipt is in the receipt trie at key rlp(tx_index).
    tx_index = _require(ev, "tx_index", int)
    receipt = _unhex(_require(ev, "receipt_rlp", str), where="evidence.receipt_rlp")
    proof_hex = _require(ev, "receipt_proof", list)
    proof = [_unhex(p, where=f"evidence.receipt_proof[{i}]") for i, p in enumerate(proof_hex)]
    value = verify_mpt_proof(receipts_root, rlp.encode(tx_index), proof)
    if value != receipt:
        raise EvidenceError("receipt_rlp differs from the value proven in the receipt trie", where="evidence.receipt_rlp")

    # 3. decode the receipt: optional type byte (< 0x80 for typed receipts), then the RLP list.
    body = receipt[1:] if receipt and receipt[0] < 0x80 else receipt
    try:
        decoded = rlp.decode(body)
        # OP Stack deposit receipts (0x7e) since Canyon: [..., depositNonce, depositReceiptVersion]
        if receipt[:1] == bytes([DEPOSIT_TX_TYPE]) and isinstance(decoded, list) and len(decoded) == 6:
            decoded = decoded[:4]
        status, _cumulative, _bloom, logs = decoded
    except (rlp.exceptions.DecodingError, ValueError, TypeError):
        raise EvidenceError("receipt is not [status, cumulativeGasUsed, logsBloom, logs]", where="evidence.receipt_rlp") from None
    if status != b"\x01":
        raise EvidenceError("receipt status is not success (1)", where="evidence.receipt_rlp")

    # 4. the Anchored log at receipt_log_position, emitted by `contract`.
    pos = _require(ev, "receipt_log_position", int)
    if pos >= len(logs):
        raise EvidenceError(f"receipt has {len(logs)} logs", where="evidence.receipt_log_position")
    address, topics, data = logs[pos]
    contract = _require(ev, "contract", str)
    if to_checksum_address(contract) != contract:
        raise EvidenceError("must be an EIP-55 checksummed address", where="evidence.contract")
    if address != _unhex(contract, where="evidence.contract"):
        raise EvidenceError(f"log emitted by 0x{address.hex()}, not the contract", where="evidence.contract")
    if len(topics) != 3 or topics[0] != ANCHORED_TOPIC:
        raise EvidenceError(f"log is not {ANCHORED_SIGNATURE} (topic0 and 3 topics)", where="evidence.receipt_log_position")
    tree_size, root_hash, cid = decode_anchored_data(data, where="evidence.receipt_rlp log data")
    if topics[2][:12] != bytes(12):
        raise EvidenceError("submitter topic is not a left-padded address", where="evidence.receipt_rlp")
    submitter = to_checksum_address(topics[2][12:])

    # 5. the decoded fields the evidence states must be the log's.
    claims = {
        "log_id": "0x" + topics[1].hex(), "tree_size": tree_size, "root_hash": "0x" + root_hash.hex(), "cid": cid,
    }
    for name, actual in claims.items():
        stated = ev.get(name)
        if isinstance(stated, str) and name in ("log_id", "root_hash"):
            stated = stated.lower()
        if stated != actual:
            raise EvidenceError(f"states {ev.get(name)!r} but the log has {actual!r}", where=f"evidence.{name}")
    if "submitter" in ev and ev["submitter"] != submitter:
        raise EvidenceError(f"states {ev['submitter']} but the log has {submitter}", where="evidence.submitter")
    _require(ev, "chain_id", int)
    code_hash = log_key = None
    if "log_key_proof" in ev:  # 6. the log key in the contract's storage at this block
        code_hash, log_key = verify_log_key_proof(fields[3], address, topics[1], ev["log_key_proof"])
    return VerifiedAnchor(
        chain_id=ev["chain_id"], contract=contract, block_number=number, block_hash=bhash, timestamp=timestamp,
        log_id=topics[1], tree_size=tree_size, root_hash=root_hash, cid=cid, submitter=submitter,
        log_key=log_key, code_hash=code_hash,
    )
