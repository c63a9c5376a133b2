"""Anchor evidence: an Anchored log proven against a block hash alone (docs/anchor-evidence.md).

Chain of checks, each from the public Ethereum specs:
1. keccak256(block_header_rlp) == block_hash (the one value a verifier must trust or fetch);
   the header's number equals block_number; its receiptsRoot and timestamp are read from it.
2. The receipt-trie proof proves receipt_rlp under key RLP(tx_index) in receiptsRoot.
3. The receipt (legacy RLP list, or EIP-2718 typed: type byte || RLP list) succeeded
   (status 1) and its log at receipt_log_position was emitted by the contract, with topic0 =
   keccak256("Anchored(bytes32,uint64,bytes32,string,address)") and topic1 = logId.
4. The ABI data decodes to (treeSize, rootHash, cid), which must equal the claimed fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .mpt import MPTError, verify_proof
from .rlp import RLPError, byte_strings, decode, encode, keccak256, to_int

ANCHORED_SIG = "Anchored(bytes32,uint64,bytes32,string,address)"
ANCHORED_TOPIC = keccak256(ANCHORED_SIG.encode())
_HEX = re.compile(r"0x([0-9a-f]{2})*")
_ADDR = re.compile(r"0x[0-9a-fA-F]{40}")
FORMAT, VERSION = "rlhf-anchor-evidence", 1
MAX_HEX_CHARS = 4 * 1024 * 1024


class EvidenceError(ValueError):
    """Evidence does not prove the anchor; the message names the failed check."""

    def __init__(self, message: str, check: str):
        super().__init__(message)
        self.check = check


def hexbytes(v: Any, what: str, length: int | None = None) -> bytes:
    if type(v) is not str or len(v) > MAX_HEX_CHARS or not _HEX.fullmatch(v):
        raise EvidenceError(f"{what} must be a 0x-prefixed even-length lower-case hex string", "evidence.schema")
    b = bytes.fromhex(v[2:])
    if length is not None and len(b) != length:
        raise EvidenceError(f"{what} must be {length} bytes, got {len(b)}", "evidence.schema")
    return b


def to_checksum(addr: bytes) -> str:
    """EIP-55 mixed-case checksum encoding of a 20-byte address."""
    h = addr.hex()
    k = keccak256(h.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(k[i], 16) >= 8 else c for i, c in enumerate(h))


def address(v: Any, what: str) -> bytes:
    """A 20-byte address written EIP-55 checksummed (docs/anchor-evidence.md)."""
    if type(v) is not str or not _ADDR.fullmatch(v):
        raise EvidenceError(f"{what} must be a 0x-prefixed 20-byte address", "evidence.schema")
    b = bytes.fromhex(v[2:])
    if v != to_checksum(b):
        raise EvidenceError(f"{what} is not EIP-55 checksummed (expected {to_checksum(b)})", "evidence.schema")
    return b


def uint(v: Any, what: str, bits: int = 64) -> int:
    if type(v) is not int or not 0 <= v < (1 << bits) or v > 2**53 - 1:
        raise EvidenceError(f"{what} must be a non-negative integer", "evidence.schema")
    return v


@dataclass(frozen=True)
class BlockHeader:
    hash: bytes
    number: int
    timestamp: int
    receipts_root: bytes
    parent_hash: bytes
    state_root: bytes


def decode_header(rlp_bytes: bytes) -> BlockHeader:
    try:
        fields = decode(rlp_bytes)
        if not isinstance(fields, list) or len(fields) < 15 or not byte_strings(fields):
            raise EvidenceError("block header must be an RLP list of at least 15 byte strings", "evidence.header")
        for i in (0, 3, 5):
            if not isinstance(fields[i], bytes) or len(fields[i]) != 32:
                raise EvidenceError("block header hash fields must be 32 bytes", "evidence.header")
        return BlockHeader(keccak256(rlp_bytes), to_int(fields[8], "header number"),
                           to_int(fields[11], "header timestamp"), fields[5], fields[0], fields[3])
    except RLPError as e:
        raise EvidenceError(f"block header is not valid RLP: {e}", "evidence.header") from None


@dataclass(frozen=True)
class Log:
    address: bytes
    topics: list[bytes]
    data: bytes


def decode_receipt(raw: bytes) -> tuple[int, int, list[Log]]:
    """Return (tx type, status, logs) of a legacy or EIP-2718 typed receipt."""
    if not raw:
        raise EvidenceError("receipt is empty", "evidence.receipt")
    tx_type = 0
    body = raw
    if raw[0] < 0x80:  # typed receipt: one type byte 0x00..0x7f, then the RLP payload
        tx_type, body = raw[0], raw[1:]
    try:
        r = decode(body)
    except RLPError as e:
        raise EvidenceError(f"receipt is not valid RLP: {e}", "evidence.receipt") from None
    # OP Stack deposit receipts (type 0x7e) since Canyon append [depositNonce, depositReceiptVersion].
    sizes = (4, 6) if tx_type == 0x7E else (4,)
    if not isinstance(r, list) or len(r) not in sizes or not isinstance(r[3], list):
        raise EvidenceError("receipt must be [status, cumulativeGas, bloom, logs]"
                            + (" (+ [depositNonce, depositReceiptVersion] for a deposit)" if tx_type == 0x7E else ""),
                            "evidence.receipt")
    if len(r) == 6 and not all(isinstance(x, bytes) and len(x) <= 8 and x[:1] != b"\x00" for x in r[4:]):
        raise EvidenceError("deposit receipt's depositNonce/depositReceiptVersion must be integers", "evidence.receipt")
    if not isinstance(r[0], bytes) or len(r[0]) > 1:
        raise EvidenceError("receipt has a pre-Byzantium state root, not a status", "evidence.receipt")
    status = int.from_bytes(r[0], "big")
    logs: list[Log] = []
    for lg in r[3]:
        if (not isinstance(lg, list) or len(lg) != 3 or not isinstance(lg[0], bytes) or len(lg[0]) != 20
                or not isinstance(lg[1], list) or not isinstance(lg[2], bytes)
                or not byte_strings(lg[1]) or any(len(t) != 32 for t in lg[1])):
            raise EvidenceError("receipt log must be [address, [topics], data]", "evidence.receipt")
        logs.append(Log(lg[0], list(lg[1]), lg[2]))
    return tx_type, status, logs


def decode_anchored_data(data: bytes) -> tuple[int, bytes, str]:
    """ABI-decode the non-indexed (uint64 treeSize, bytes32 rootHash, string cid), strictly."""
    if len(data) < 128 or len(data) % 32:
        raise EvidenceError("Anchored log data has the wrong length", "evidence.log")
    size_word, root, off_word = data[0:32], data[32:64], data[64:96]
    if size_word[:24] != bytes(24):
        raise EvidenceError("treeSize word exceeds uint64", "evidence.log")
    off = int.from_bytes(off_word, "big")
    if off != 96:
        raise EvidenceError("cid offset is not the canonical 0x60", "evidence.log")
    ln = int.from_bytes(data[96:128], "big")
    if ln > len(data) - 128:
        raise EvidenceError("cid length runs past the log data", "evidence.log")
    padded = (ln + 31) // 32 * 32
    if len(data) != 128 + padded or any(data[128 + ln :]):
        raise EvidenceError("cid is not canonically padded", "evidence.log")
    try:
        cid = data[128 : 128 + ln].decode("utf-8")
    except UnicodeDecodeError:
        raise EvidenceError("cid is not UTF-8", "evidence.log") from None
    return int.from_bytes(size_word, "big"), root, cid


@dataclass(frozen=True)
class Anchor:
    chain_id: int
    contract: bytes
    tx_hash: bytes
    block_number: int
    block_hash: bytes
    block_timestamp: int
    log_id: bytes
    tree_size: int
    root_hash: bytes
    cid: str
    submitter: bytes
    # From `log_key_proof` (anchor-evidence.md, "Log key proof"), when present: the contract's
    # code hash and its logKey[logId] at the end of this block.
    code_hash: bytes | None = None
    log_key: bytes | None = None


def verify_receipt_inclusion(block_hash: bytes, header_rlp: bytes, block_number: int, tx_index: int,
                             receipt_rlp: bytes, proof: list[bytes]) -> BlockHeader:
    """Checks 1 and 2: the header hashes to block_hash and has block_number, and the proof walks from
    its receiptsRoot to exactly receipt_rlp at key RLP(tx_index). Says nothing of the receipt's
    content (that is decode_receipt's), so it holds for any receipt of any block."""
    header = decode_header(header_rlp)
    if header.hash != block_hash:
        raise EvidenceError(f"block header hashes to 0x{header.hash.hex()}, not block_hash 0x{block_hash.hex()}",
                            "evidence.header_hash")
    if header.number != block_number:
        raise EvidenceError(f"block header number {header.number} != block_number {block_number}", "evidence.header")
    try:
        value = verify_proof(header.receipts_root, encode(_int_bytes(tx_index)), proof)
    except MPTError as e:
        raise EvidenceError(f"receipt-trie proof fails: {e}", "evidence.receipt_proof") from None
    if value != receipt_rlp:
        raise EvidenceError("receipt-trie proof proves a different receipt than receipt_rlp", "evidence.receipt_proof")
    return header


EVIDENCE_FIELDS = ("format", "version", "chain_id", "contract", "tx_hash", "tx_index", "block_number", "block_hash", "log_index",
                   "receipt_log_position", "block_header_rlp", "receipt_rlp", "receipt_proof", "log_id",
                   "tree_size", "root_hash", "cid")


def verify_evidence(ev: Any) -> Anchor:
    """Check the evidence's internal proof chain (not yet against what the verifier trusts)."""
    if type(ev) is not dict:
        raise EvidenceError("evidence must be a JSON object", "evidence.schema")
    missing = [f for f in EVIDENCE_FIELDS if f not in ev]
    if missing:
        raise EvidenceError("evidence lacks " + ", ".join(missing), "evidence.schema")
    if ev.get("format") != FORMAT or type(ev.get("version")) is not int or ev.get("version") != VERSION:
        raise EvidenceError(f"evidence format/version must be {FORMAT!r}/{VERSION}", "evidence.schema")
    chain_id = uint(ev["chain_id"], "chain_id")
    contract = address(ev["contract"], "contract")
    submitter = address(ev["submitter"], "submitter") if "submitter" in ev else None
    tx_hash = hexbytes(ev["tx_hash"], "tx_hash", 32)
    tx_index = uint(ev["tx_index"], "tx_index")
    block_number = uint(ev["block_number"], "block_number")
    block_hash = hexbytes(ev["block_hash"], "block_hash", 32)
    uint(ev["log_index"], "log_index")
    pos = uint(ev["receipt_log_position"], "receipt_log_position")
    header_rlp = hexbytes(ev["block_header_rlp"], "block_header_rlp")
    receipt_rlp = hexbytes(ev["receipt_rlp"], "receipt_rlp")
    if type(ev["receipt_proof"]) is not list or len(ev["receipt_proof"]) > 64:
        raise EvidenceError("receipt_proof must be a list of hex trie nodes", "evidence.schema")
    proof = [hexbytes(n, f"receipt_proof[{i}]") for i, n in enumerate(ev["receipt_proof"])]
    log_id = hexbytes(ev["log_id"], "log_id", 32)
    tree_size = uint(ev["tree_size"], "tree_size")
    root_hash = hexbytes(ev["root_hash"], "root_hash", 32)
    cid = ev["cid"]
    if type(cid) is not str:
        raise EvidenceError("cid must be a string", "evidence.schema")

    header = verify_receipt_inclusion(block_hash, header_rlp, block_number, tx_index, receipt_rlp, proof)
    _, status, logs = decode_receipt(receipt_rlp)
    if status != 1:
        raise EvidenceError("the anchoring transaction failed (receipt status 0)", "evidence.receipt")
    if pos >= len(logs):
        raise EvidenceError(f"receipt has {len(logs)} log(s); no log at position {pos}", "evidence.log")
    lg = logs[pos]
    if lg.address != contract:
        raise EvidenceError(f"log was emitted by 0x{lg.address.hex()}, not contract 0x{contract.hex()}", "evidence.log")
    if len(lg.topics) != 3 or lg.topics[0] != ANCHORED_TOPIC:
        raise EvidenceError("log is not an Anchored event", "evidence.log")
    if lg.topics[1] != log_id:
        raise EvidenceError("log's logId topic differs from log_id", "evidence.log")
    if lg.topics[2][:12] != bytes(12):
        raise EvidenceError("submitter topic is not an address", "evidence.log")
    if submitter is not None and lg.topics[2][12:] != submitter:
        raise EvidenceError("log's submitter differs from the evidence's submitter", "evidence.log")
    size, root, lcid = decode_anchored_data(lg.data)
    if size != tree_size or root != root_hash or lcid != cid:
        raise EvidenceError("Anchored log (treeSize, rootHash, cid) differs from the evidence's claimed fields",
                            "evidence.log")
    code_hash = log_key = None
    if "log_key_proof" in ev:
        from .logkey import verify_log_key_proof

        code_hash, log_key = verify_log_key_proof(header.state_root, contract, log_id, ev["log_key_proof"])
    return Anchor(chain_id, contract, tx_hash, block_number, block_hash, header.timestamp, log_id, tree_size,
                  root_hash, cid, lg.topics[2][12:], code_hash, log_key)


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
