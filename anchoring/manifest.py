"""Batch manifests: what one anchored checkpoint adds to the log (format: docs/manifest-format.md).

A manifest is RFC 8785 (JCS) JSON stored in the content store under its CID; the CID goes on
chain beside the checkpoint root. It carries the signed checkpoint, the previously anchored one,
the RFC 9162 consistency proof between them, the compact range of the old tree, the leaf hashes
of the new entries and references to their encrypted payloads, so that a reader holding only
the log's public key can check that the new leaves are exactly what extends the old tree into
the new one. Nothing in it is personal or in clear: leaves commit to salted hashes, payload
references are digests of ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_ledger.anchoring.cid import cid_for_bytes, verify_cid
from rlhf_ledger.core import merkle
from rlhf_ledger.core.checkpoints import Checkpoint, parse_and_verify
from rlhf_ledger.core.errors import LedgerError, ProofError
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.run_index import RunIndex
from rlhf_ledger.core.run_index import parse_and_verify_note as parse_run_index_note
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.run_index import run_index

MANIFEST_FORMAT = "rlhf-ledger-manifest"
MANIFEST_VERSION = 2
MEDIA_TYPE = "application/vnd.rlhf-ledger.manifest.v2+json"
READABLE_VERSIONS = (1, 2)  # v1 manifests (no run index) of older anchors still verify
_REF_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEYS = {"format", "version", "log_id", "origin", "checkpoint", "previous", "consistency_proof",
         "prefix", "range", "leaf_hashes", "payloads"}
_KEYS_V2 = _KEYS | {"runs"}


class ManifestError(LedgerError):
    code = "bad_manifest"


@dataclass(frozen=True)
class ParsedManifest:
    """A manifest whose signatures, proofs and hashes all checked out."""

    log_id: str
    origin: str
    checkpoint: Checkpoint
    previous: Checkpoint | None
    runs: RunIndex | None  # the signed run index at the checkpoint's size (v2), None for v1
    start: int
    end: int
    leaf_hashes: list[bytes]
    payloads: list[tuple[int, str]]
    document: dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def payload_ref(nonce: bytes, ciphertext: bytes) -> str:
    """Reference to a stored encrypted payload: sha256 of nonce || ciphertext (no clear data)."""
    return "sha256:" + hashlib.sha256(bytes(nonce) + bytes(ciphertext)).hexdigest()


# -- building (ledger side) ----------------------------------------------------------------------

def _stored_nodes(ledger: Ledger, log_id: str, keys: list[merkle.NodeKey]) -> list[bytes]:
    """Stored node hashes for `keys`, in order (the ledger's own node reads)."""
    if not keys:
        return []
    found = ledger.stored_nodes(log_id, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise ManifestError(f"Merkle node (level {missing[0][0]}, index {missing[0][1]}) is not stored",
                            where=f"log {log_id!r}")
    return [found[k] for k in keys]


def build_manifest(ledger: Ledger, log_id: str, checkpoint: Checkpoint,
                   previous: Checkpoint | None) -> dict[str, Any]:
    """The manifest document for anchoring `checkpoint` after `previous` (None: first anchor).

    The consistency proof comes from stored nodes and is verified here against both signed roots
    before anything is published; a failure means the log's storage disagrees with what it signed.
    """
    info = ledger.log_info(log_id)
    cp = parse_and_verify(checkpoint.note, info.origin, info.public_key)
    prev = parse_and_verify(previous.note, info.origin, info.public_key) if previous is not None else None
    start = prev.size if prev is not None else 0
    if cp.size <= start:
        raise ManifestError(f"checkpoint size {cp.size} does not grow past the previous anchor {start}",
                            where=f"log {log_id!r}")
    proof = ledger.consistency_proof(log_id, start, cp.size) if prev is not None else []
    if prev is not None:
        try:
            merkle.check_consistency(start, cp.size, proof, prev.root, cp.root)
        except ProofError as e:
            raise ManifestError(f"checkpoint {cp.size} is not consistent with anchored checkpoint {start}: {e}",
                                where=f"log {log_id!r}") from None
    prefix = _stored_nodes(ledger, log_id, merkle.perfect_subtrees(0, start))
    leaves = [h for _, h in ledger.iter_leaf_hashes(log_id, start, cp.size)]
    if len(leaves) != cp.size - start:
        raise ManifestError(f"expected {cp.size - start} leaf hashes in [{start}, {cp.size}), found {len(leaves)}",
                            where=f"log {log_id!r}")
    rows = ledger.sealed_payloads(log_id, start, cp.size)
    doc: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "log_id": log_id,
        "origin": info.origin,
        "checkpoint": cp.note,
        "previous": None if prev is None else {"size": prev.size, "note": prev.note},
        "consistency_proof": [_b64(h) for h in proof],
        "prefix": [_b64(h) for h in prefix],
        "range": {"start": start, "end": cp.size},
        "leaf_hashes": [_b64(h) for h in leaves],
        "payloads": [{"index": r.idx, "ref": payload_ref(r.nonce, r.ciphertext)} for r in rows],
        "runs": run_index(ledger, log_id, cp.size).note,
    }
    # Self-check with the independent reading path before publishing anything.
    verify_manifest(encode_manifest(doc), public_key=info.public_key)
    return doc


def encode_manifest(doc: dict[str, Any]) -> bytes:
    """The stored bytes: JCS of the document (what the CID names)."""
    return canonicalize(doc)


def manifest_cid(doc: dict[str, Any]) -> str:
    return cid_for_bytes(encode_manifest(doc))


# -- reading and checking ------------------------------------------------------------------------

def _hash_list(value: Any, where: str) -> list[bytes]:
    if not isinstance(value, list):
        raise ManifestError("must be a list of base64 hashes", where=where)
    out = []
    for i, item in enumerate(value):
        try:
            raw = base64.b64decode(item, validate=True) if isinstance(item, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32 or _b64(raw) != item:
            raise ManifestError("not a canonical base64 32-byte hash", where=f"{where}[{i}]")
        out.append(raw)
    return out


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError("must be a non-negative integer", where=where)
    return value


def root_from_range(prefix: Sequence[bytes], start: int, leaves: Sequence[bytes]) -> bytes:
    """MTH of the tree of size start + len(leaves), from the compact range of [0, start)
    (its perfect subtrees left to right, as perfect_subtrees(0, start) lists them) and the leaf
    hashes of [start, end). Each subtree has the size of one set bit of `start`, largest first."""
    sizes = [1 << b for b in reversed(range(start.bit_length())) if start >> b & 1]
    if len(sizes) != len(prefix):
        raise ManifestError(f"prefix has {len(prefix)} hashes, a tree of size {start} needs {len(sizes)}",
                            where="manifest.prefix")
    stack: list[tuple[int, bytes]] = list(zip(sizes, prefix, strict=True))
    for h in leaves:
        merkle.compact_push(stack, h)
    return merkle.compact_root(stack)


def verify_manifest(data: bytes, *, public_key: bytes, cid: str | None = None,
                    origin: str | None = None) -> ParsedManifest:
    """Check manifest bytes (docs/manifest-format.md, "Verification"): CID (if given), JCS form,
    fields, both checkpoint signatures, the consistency proof, and that prefix + leaf hashes
    rebuild both signed roots. Raises ManifestError / ProofError naming the failing field."""
    if cid is not None:
        verify_cid(cid, data)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"not UTF-8 JSON: {e}", where="manifest") from None
    if not isinstance(doc, dict):
        raise ManifestError("must be a JSON object", where="manifest")
    if canonicalize(doc) != data:
        raise ManifestError("bytes are not the JCS (RFC 8785) form of the document", where="manifest")
    version = doc.get("version")
    if doc.get("format") != MANIFEST_FORMAT or type(version) is not int or version not in READABLE_VERSIONS:
        raise ManifestError(f"format/version must be {MANIFEST_FORMAT}/{' or '.join(map(str, READABLE_VERSIONS))}",
                            where="manifest.format")
    keys = _KEYS_V2 if version == 2 else _KEYS
    if set(doc) != keys:
        extra, missing = sorted(set(doc) - keys), sorted(keys - set(doc))
        raise ManifestError(f"members differ from the spec (missing {missing}, unknown {extra})", where="manifest")
    if not isinstance(doc["log_id"], str) or not isinstance(doc["origin"], str):
        raise ManifestError("log_id and origin must be strings", where="manifest.log_id")
    log_origin = doc["origin"]
    if origin is not None and log_origin != origin:
        raise ManifestError(f"origin {log_origin!r} is not the expected {origin!r}", where="manifest.origin")
    if not isinstance(doc["checkpoint"], str):
        raise ManifestError("must be the signed note text", where="manifest.checkpoint")
    cp = parse_and_verify(doc["checkpoint"], log_origin, public_key)
    runs: RunIndex | None = None
    if version == 2:
        if not isinstance(doc["runs"], str):
            raise ManifestError("must be the signed run-index note text", where="manifest.runs")
        try:
            runs = parse_run_index_note(doc["runs"], log_origin, public_key)
        except ProofError as e:
            raise ManifestError(str(e), where="manifest.runs") from None
        if runs.size != cp.size:
            raise ManifestError(f"run index is for size {runs.size}, the checkpoint's is {cp.size}", where="manifest.runs")
    prev_doc = doc["previous"]
    prev: Checkpoint | None = None
    if prev_doc is not None:
        if not isinstance(prev_doc, dict) or set(prev_doc) != {"size", "note"} or not isinstance(prev_doc["note"], str):
            raise ManifestError("must be null or {size, note}", where="manifest.previous")
        prev = parse_and_verify(prev_doc["note"], log_origin, public_key)
        if prev.size != _int(prev_doc["size"], "manifest.previous.size"):
            raise ManifestError(f"size {prev_doc['size']} differs from the note's {prev.size}", where="manifest.previous.size")
    rng = doc["range"]
    if not isinstance(rng, dict) or set(rng) != {"start", "end"}:
        raise ManifestError("must be {start, end}", where="manifest.range")
    start, end = _int(rng["start"], "manifest.range.start"), _int(rng["end"], "manifest.range.end")
    if start != (prev.size if prev is not None else 0) or end != cp.size or end <= start:
        raise ManifestError(f"range [{start}, {end}) must run from the previous size to the checkpoint size "
                            f"({prev.size if prev else 0} to {cp.size}) and be non-empty", where="manifest.range")
    proof = _hash_list(doc["consistency_proof"], "manifest.consistency_proof")
    if prev is not None:
        merkle.check_consistency(prev.size, cp.size, proof, prev.root, cp.root)
    elif proof:
        raise ManifestError("must be empty when previous is null", where="manifest.consistency_proof")
    prefix = _hash_list(doc["prefix"], "manifest.prefix")
    leaves = _hash_list(doc["leaf_hashes"], "manifest.leaf_hashes")
    if len(leaves) != end - start:
        raise ManifestError(f"has {len(leaves)} hashes for the range [{start}, {end})", where="manifest.leaf_hashes")
    if prev is not None and root_from_range(prefix, start, []) != prev.root:
        raise ManifestError("prefix does not rebuild the previous checkpoint's root", where="manifest.prefix")
    if root_from_range(prefix, start, leaves) != cp.root:
        raise ManifestError("prefix + leaf hashes do not rebuild the checkpoint's root", where="manifest.leaf_hashes")
    if not isinstance(doc["payloads"], list):
        raise ManifestError("must be a list", where="manifest.payloads")
    payloads: list[tuple[int, str]] = []
    last = start - 1
    for i, item in enumerate(doc["payloads"]):
        where = f"manifest.payloads[{i}]"
        if not isinstance(item, dict) or set(item) != {"index", "ref"}:
            raise ManifestError("must be {index, ref}", where=where)
        index = _int(item["index"], where + ".index")
        if not last < index < end:
            raise ManifestError(f"index {index} must be ascending and inside [{start}, {end})", where=where)
        if not isinstance(item["ref"], str) or not _REF_RE.match(item["ref"]):
            raise ManifestError("ref must be sha256:<64 lowercase hex>", where=where + ".ref")
        payloads.append((index, item["ref"]))
        last = index
    return ParsedManifest(doc["log_id"], log_origin, cp, prev, runs, start, end, leaves, payloads, doc)
