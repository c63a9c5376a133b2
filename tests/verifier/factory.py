"""Builds spec-conformant proof bundles for the verifier's tests, with the ledger's own code
(ledger.events / ledger.keys / ledger.merkle / ledger.checkpoints) on the producing side, so
every test that verifies one is also an agreement test between ledger and verifier.

Anchor evidence is built from the public Ethereum encodings with independent libraries
(`rlp`, py-`trie` HexaryTrie, `eth_abi`, eth-hash keccak): an EIP-1559-era block header whose
receiptsRoot is the root of a real receipt trie holding a typed (0x02) receipt with the
ProvenanceAnchor `Anchored` log. It is a synthetic block (not mined by a chain); the anvil
test in test_evidence_anvil.py covers a real one.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rlp
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from trie import HexaryTrie

from rlhf_ledger.anchoring.cid import cid_for_bytes
from rlhf_ledger.core.checkpoints import default_origin, sign_checkpoint, vkey
from rlhf_ledger.core.events import make_event, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.core.merkle import InMemoryTree
from rlhf_ledger.core.run_index import records_from_entries, sign_index

ANCHORED_TOPIC = keccak(b"Anchored(bytes32,uint64,bytes32,string,address)")
MEDIA_TYPE = "application/vnd.rlhf-ledger.bundle.v2+jsonl"
KEYS_RUN = "rlhf-ledger:keys"
# keccak256 of the ProvenanceAnchor runtime code (docs/contract.md, "Code hash"), from the artifact
CODE_HASH = keccak(bytes.fromhex(json.loads((Path(__file__).resolve().parents[2] / "anchoring" / "artifacts" /
                                             "ProvenanceAnchor.json").read_text())["deployedBytecode"][2:]))
CHAIN_ID = 31337
CONTRACT = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
SUBMITTER = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
T0 = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""


def state_for(log_id: bytes, log_key: bytes, code_hash: bytes = CODE_HASH) -> tuple[bytes, dict]:
    """(state root, log_key_proof) of a synthetic state: the contract's account (code hash, a
    storage trie holding logKey[log_id] at its ProvenanceAnchor slot and one other slot) beside
    another account, built with py-trie as EIP-1186 describes (docs/anchor-evidence.md)."""
    slot = keccak(log_id + (4).to_bytes(32, "big"))
    storage = HexaryTrie({})
    storage[keccak(slot)] = rlp.encode(log_key.lstrip(b"\x00"))
    storage[keccak((0).to_bytes(32, "big"))] = rlp.encode(SUBMITTER)  # owner
    state = HexaryTrie({})
    state[keccak(CONTRACT)] = rlp.encode([_int(1), _int(0), storage.root_hash, code_hash])
    state[keccak(SUBMITTER)] = rlp.encode([_int(7), _int(10**18), keccak(rlp.encode(b"")), keccak(b"")])
    proof = {"account_proof": ["0x" + rlp.encode(n).hex() for n in state.get_proof(keccak(CONTRACT))],
             "storage_proof": ["0x" + rlp.encode(n).hex() for n in storage.get_proof(keccak(slot))]}
    return state.root_hash, proof


def make_block(number: int, timestamp: int, size: int, root: bytes, cid: str, log_id: bytes,
               log_key: bytes | None = None, code_hash: bytes = CODE_HASH) -> dict[str, Any]:
    """A block with two receipts; ours is at tx index 1 with the Anchored log at position 1.
    With `log_key`, the evidence carries a log key proof against the header's state root."""
    other_log = [CONTRACT, [keccak(b"Authorized(address)"), b"\x00" * 12 + SUBMITTER], b""]
    data = abi_encode(["uint64", "bytes32", "string"], [size, root, cid])
    anchored = [CONTRACT, [ANCHORED_TOPIC, log_id, b"\x00" * 12 + SUBMITTER], data]
    receipts = [
        rlp.encode([_int(1), _int(21000), b"\x00" * 256, []]),  # legacy receipt
        b"\x02" + rlp.encode([_int(1), _int(90000), b"\x00" * 256, [other_log, anchored]]),
    ]
    t = HexaryTrie({})
    for i, r in enumerate(receipts):
        t[rlp.encode(i)] = r
    proof = [rlp.encode(n) for n in t.get_proof(rlp.encode(1))]
    state_root, key_proof = state_for(log_id, log_key, code_hash) if log_key is not None else (b"\x22" * 32, None)
    header = [
        b"\x11" * 32, keccak(rlp.encode([])), b"\x00" * 20, state_root, b"\x33" * 32, t.root_hash,
        b"\x00" * 256, _int(0), _int(number), _int(30_000_000), _int(111000), _int(timestamp), b"anvil",
        b"\x00" * 32, b"\x00" * 8, _int(7), b"\x44" * 32, _int(0), _int(0), b"\x55" * 32, b"\x66" * 32,
    ]
    header_rlp = rlp.encode(header)
    return {
        "format": "rlhf-anchor-evidence", "version": 1, "submitter": to_checksum_address(SUBMITTER),
        "chain_id": CHAIN_ID, "contract": to_checksum_address(CONTRACT), "tx_hash": "0x" + keccak(b"tx%d" % number).hex(),
        "tx_index": 1, "block_number": number, "block_hash": "0x" + keccak(header_rlp).hex(), "log_index": 1,
        "receipt_log_position": 1, "block_header_rlp": "0x" + header_rlp.hex(), "receipt_rlp": "0x" + receipts[1].hex(),
        "receipt_proof": ["0x" + n.hex() for n in proof], "log_id": "0x" + log_id.hex(), "tree_size": size,
        "root_hash": "0x" + root.hex(), "cid": cid,
    } | ({"log_key_proof": key_proof} if key_proof is not None else {})


REVIEWER = "anp:" + "77" * 32


def review(decision: str, subject: str, reviewer: str = REVIEWER) -> tuple[str, dict]:
    """A human.review (docs/event-types.md) with committed notes, as the SDK records it."""
    return ("human.review", {"reviewer": reviewer, "decision": decision, "subject": subject,
                             "notes": {"$commitment": "sha256:" + "88" * 32}})


def run_events(n_updates: int = 3, *, epsilon_budget: float = 8.0, released_ok: bool = True,
               retention_days: int = 365, review_decision: str | None = "approve") -> list[tuple[str, dict]]:
    """(type, body) of a complete small DPO run, in the order the SDK would emit them, with a
    human review of the released weights just before run.end (`review_decision` None: none)."""
    wd = "sha256:" + "ab" * 32
    released = wd if released_ok else "sha256:" + "99" * 32
    out: list[tuple[str, dict]] = [
        ("run.start", {"method": "dpo", "hyperparameters": {"lr": 5e-7, "beta": 0.1}, "config": {},
                       "base_model": {"name": "tiny", "weights_digest": "sha256:" + "00" * 32},
                       "datasets": ["prefs-1"],
                       "declared": {"privacy_budget": {"epsilon": epsilon_budget, "delta": 1e-5},
                                    "anchoring_delay_seconds": 3600, "retention_days": retention_days}}),
        ("dataset.register", {"dataset_id": "prefs-1", "name": "prefs", "source": "internal", "licence": "CC-BY-4.0",
                              "digest": "sha256:" + "cd" * 32, "size_bytes": 1234, "records": 1000}),
        ("annotation.batch", {"batch_id": "b1", "dataset_id": "prefs-1", "guideline_version": "v2.1",
                              "annotators": ["anp:" + "ee" * 16], "items": 10, "labels": {"chosen": 10},
                              "prompts": {"$commitment": "sha256:" + "12" * 32},
                              "responses": {"$commitment": "sha256:" + "34" * 32}}),
    ]
    for s in range(n_updates):
        out.append(("policy.update", {"step": s, "loss": 0.7 - 0.01 * s, "kl": 0.01 * s, "reward_mean": 0.1 * s,
                                      "reward_std": 1.0, "grad_norm": 1.5, "param_delta_norm": 0.01}))
    out += [
        ("privacy.spend", {"accountant": "rdp", "library": "dp-accounting", "library_version": "0.6.0",
                           "mechanism": "poisson_subsampled_gaussian", "noise_multiplier": 1.1, "sample_rate": 0.01,
                           "steps": 1000, "delta": 1e-5, "epsilon": 1.7117701662429012}),
        ("checkpoint.save", {"step": n_updates, "weights_digest": wd, "tensor_root": "sha256:" + "ef" * 32}),
        ("evaluation", {"name": "helpfulness", "metrics": {"win_rate": 0.61}}),
        ("compute.usage", {"device": "cpu", "seconds": 12.5}),
    ]
    if review_decision is not None:
        out.append(review(review_decision, released))
    out.append(("run.end", {"status": "completed", "released_weights_digest": released, "steps": n_updates}))
    return out


REWARD_DIGEST = "sha256:" + "5a" * 32


def reward_run_events(*, released: str = REWARD_DIGEST, review_decision: str | None = "approve") -> list[tuple[str, dict]]:
    """A reward-model run (method "reward") as docs/event-types.md prescribes: reward_model.update
    records, its weights in reward_model.save, which run.end releases; no checkpoint.save."""
    out: list[tuple[str, dict]] = [
        ("run.start", {"method": "reward", "hyperparameters": {"lr": 1e-5, "loss": "bradley-terry"}, "config": {},
                       "base_model": {"name": "tiny", "weights_digest": "sha256:" + "00" * 32}, "datasets": ["prefs-1"],
                       "declared": {"privacy_budget": None, "anchoring_delay_seconds": 3600, "retention_days": 365}}),
        ("dataset.register", {"dataset_id": "prefs-1", "name": "prefs", "source": "internal", "licence": "CC-BY-4.0",
                              "digest": "sha256:" + "cd" * 32, "size_bytes": 1234, "records": 1000}),
        ("reward_model.update", {"step": 1, "loss": 0.69, "accuracy": 0.5}),
        ("reward_model.update", {"step": 2, "loss": 0.6, "accuracy": 0.6}),
        ("reward_model.save", {"step": 2, "weights_digest": REWARD_DIGEST, "tensor_root": "sha256:" + "5b" * 32}),
        ("evaluation", {"name": "heldout-accuracy", "metrics": {"accuracy": 0.7}}),
        ("compute.usage", {"device": "cpu", "seconds": 3.0}),
    ]
    if review_decision is not None:
        out.append(review(review_decision, released))
    out.append(("run.end", {"status": "completed", "released_weights_digest": released, "steps": 2}))
    return out


@dataclass
class Built:
    path: Path
    log_vkey: str
    producer_keys: list[str]  # base64 public keys
    block_hashes: list[str]
    chain_id: int = CHAIN_ID
    contract: str = to_checksum_address(CONTRACT)
    lines: list[str] = field(default_factory=list)

    def args(self, *extra: str) -> list[str]:
        """Every pin: log key, producer keys, chain, contract and each anchor's block hash."""
        a = [str(self.path), "--log-key", self.log_vkey, "--chain-id", str(self.chain_id), "--contract", self.contract]
        for k in self.producer_keys:
            a += ["--producer-key", k]
        for h in self.block_hashes:
            a += ["--trusted-block-hash", h]
        return a + list(extra)

    def minimal_args(self, *extra: str) -> list[str]:
        """The regulator's minimal command (issue 12): chain id, contract, one trusted block hash."""
        return [str(self.path), "--chain-id", str(self.chain_id), "--contract", self.contract,
                "--trusted-block-hash", self.block_hashes[-1], *extra]


def build_bundle(path: Path, *, mode: str = "inclusion", checkpoint_sizes: list[int] | None = None,
                 anchor_sizes: list[int] | None = None, events: list[tuple[str, dict]] | None = None,
                 anchor_delay: int = 60, extra_leaves: int = 0, manifest: bool = True,
                 producers: int = 1, run_id: str = "run-1", log_id: str = "log-1", run_record: bool = True,
                 times: list[float] | None = None, block_time: int | None = None, key_events: bool = False,
                 revoke_after: int | None = None, key_proof: bool = True, rotate_after: int | None = None,
                 proven_key_override: bytes | None = None) -> Built:
    """Write a bundle. All events are in scope; `extra_leaves` foreign entries are appended first
    (in tree mode they appear as `leaf` records). `times`: each event's time in seconds after T0
    (default 0, 1, 2, ...); `block_time`: every anchor block's timestamp (default: the last
    covered event's time + `anchor_delay`). `key_events`: the log registers each producer with a
    key event (docs/keys.md) before the run, and the bundle carries them (`keys`, `key_event`);
    `revoke_after`: with key events, producer 0 is revoked right after the run's event of that
    position. `key_proof`: each anchor's evidence proves the log key from the contract's state.
    `rotate_after`: the log key was rotated (rotateLogKey) once the tree had that size: later
    checkpoints and run-index notes are signed by a second log key, and anchors above that size
    prove it. `proven_key_override`: every anchor's state proof shows this key instead (an
    attacker's contract state, or a rotation the notes do not follow)."""
    log_signer = Signer.from_seed(hashlib.sha256(b"log").digest())
    rotated = Signer.from_seed(hashlib.sha256(b"log rotated").digest())

    def signer_for(size: int) -> Signer:  # the log key in force for a statement about `size`
        return rotated if rotate_after is not None and size > rotate_after else log_signer
    signers = [Signer.from_seed(hashlib.sha256(b"producer%d" % i).digest()) for i in range(producers)]
    origin = default_origin(log_id)
    evs = events if events is not None else run_events()
    tree = InMemoryTree()
    foreign = []
    for i in range(extra_leaves):
        foreign.append(tree.append(b"foreign entry %d" % i))
    state: dict[str, tuple[int, str | None]] = {}
    records: list[tuple[int, dict, float]] = []
    index_entries: list[tuple[int, tuple]] = []  # for the run index (docs/run-index.md)
    key_records: list[tuple[int, dict]] = []
    key_state: list = [0, None]  # the log key's chain in KEYS_RUN

    def key_event(typ: str, body: dict) -> None:
        ev = make_event(log_id=log_id, run_id=KEYS_RUN, type=typ, producer=log_signer.key_id, seq=key_state[0],
                        prev=key_state[1], body=body, ts=ts(0))
        env = sign_event(ev, log_signer)
        eid = hashlib.sha256(canonicalize(ev)).hexdigest()
        idx = tree.append(canonicalize(env))
        key_records.append((idx, env))
        index_entries.append((idx, (KEYS_RUN, log_signer.key_id, key_state[0], eid, typ, tree.leaf_hash(idx))))
        key_state[:] = [key_state[0] + 1, eid]

    if key_events:
        for sg in signers:
            key_event("producer.register", {"key_id": sg.key_id, "public_key": b64(sg.public_key)})
    for k, (typ, body) in enumerate(evs):
        s = signers[k % producers]
        seq, prev = state.get(s.key_id, (0, None))
        t = float(times[k]) if times is not None else float(k)
        ev = make_event(log_id=log_id, run_id=run_id, type=typ, producer=s.key_id, seq=seq, prev=prev, body=body,
                        ts=ts(t))
        env = sign_event(ev, s)
        state[s.key_id] = (seq + 1, hashlib.sha256(canonicalize(ev)).hexdigest())
        idx = tree.append(canonicalize(env))
        records.append((idx, env, t))
        event_id = hashlib.sha256(canonicalize(ev)).hexdigest()
        index_entries.append((idx, (run_id, s.key_id, seq, event_id, typ, tree.leaf_hash(idx))))
        if key_events and revoke_after == k:
            key_event("producer.revoke", {"key_id": signers[0].key_id})
    total = tree.size
    cps = checkpoint_sizes or [total]
    anchors = anchor_sizes if anchor_sizes is not None else cps
    lines: list[dict] = [{
        "kind": "header", "format": "rlhf-ledger-bundle", "version": 2, "media_type": MEDIA_TYPE, "created": ts(9999),
        "mode": mode, "scope": {"type": "run", "run_id": run_id},
        "log": {"log_id": log_id, "origin": origin, "public_key": b64(log_signer.public_key)},
    }]
    notes = {}
    for size in cps:
        root = tree.root(size)
        notes[size] = sign_checkpoint(origin, size, root, signer_for(size))
        lines.append({"kind": "checkpoint", "size": size, "root": b64(root), "note": notes[size]})
    for a, b in itertools.pairwise(cps):
        lines.append({"kind": "consistency", "from": a, "to": b, "proof": [b64(x) for x in tree.consistency_proof(a, b)]})
    block_hashes = []
    log_id_hash = hashlib.sha256(origin.encode()).digest()
    for n, size in enumerate(anchors):
        man = json.dumps({"checkpoint": notes[size], "log_id": log_id}).encode()
        cid = cid_for_bytes(man)
        last_ts = max(r[2] for r in records if r[0] < size) if any(r[0] < size for r in records) else 0
        bt = block_time if block_time is not None else int((T0 + timedelta(seconds=last_ts)).timestamp()) + anchor_delay
        proven = proven_key_override or signer_for(size).public_key
        ev = make_block(100 + n, bt, size, tree.root(size), cid, log_id_hash, proven if key_proof else None)
        block_hashes.append(ev["block_hash"])
        rec = {"kind": "anchor", "checkpoint_size": size, "cid": cid, "evidence": ev}
        if manifest:
            rec["manifest"] = b64(man)
        lines.append(rec)
    final = cps[-1]
    run_records = records_from_entries(e for i, e in index_entries if i < final)
    ri, ri_tree = sign_index(origin, final, run_records, signer_for(final))
    if key_records:
        pos = next(i for i, (r, _) in enumerate(run_records) if r == KEYS_RUN)
        lines.append({"kind": "keys", "checkpoint_size": final, "note": ri.note, "record": run_records[pos][1],
                      "index": pos, "proof": [b64(x) for x in ri_tree.inclusion_proof(pos)]})
        for idx, env in key_records:
            if idx < final:
                lines.append({"kind": "key_event", "index": idx, "envelope": env,
                              "inclusion": [b64(x) for x in tree.inclusion_proof(idx, final)]})
    if run_record:
        pos = next(i for i, (r, _) in enumerate(run_records) if r == run_id)
        lines.append({"kind": "run", "checkpoint_size": final, "note": ri.note, "record": run_records[pos][1],
                      "index": pos, "proof": [b64(x) for x in ri_tree.inclusion_proof(pos)]})
    by_index = {r[0]: r[1] for r in records}
    n_events = 0
    if mode == "inclusion":
        for idx, env, _ in records:
            size = next((c for c in cps if c > idx), final)
            lines.append({"kind": "event", "index": idx, "envelope": env, "checkpoint_size": size,
                          "inclusion": [b64(x) for x in tree.inclusion_proof(idx, size)]})
            n_events += 1
    else:
        for idx in range(final):
            if idx in by_index:
                lines.append({"kind": "event", "index": idx, "envelope": by_index[idx]})
                n_events += 1
            else:
                lines.append({"kind": "leaf", "index": idx, "hash": b64(tree.leaf_hash(idx))})
    lines.append({"kind": "end", "events": n_events, "records": len(lines)})
    text = [json.dumps(x, ensure_ascii=False) for x in lines]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return Built(path, vkey(origin, log_signer.public_key), [b64(s.public_key) for s in signers], block_hashes,
                 lines=text)


def read_records(b: Built) -> list[dict]:
    """The bundle's records, parsed (for tests that edit a bundle as an exporter could)."""
    return [json.loads(x) for x in b.path.read_text().splitlines()]


def write_records(b: Built, objs: list[dict]) -> None:
    """Write edited records back with the `end` counts recomputed, as a careful exporter would,
    so only the checks that do not rely on those counts can catch the edit."""
    objs = [o for o in objs if o["kind"] != "end"]
    objs.append({"kind": "end", "events": sum(o["kind"] == "event" for o in objs), "records": len(objs)})
    b.path.write_text("\n".join(json.dumps(o) for o in objs) + "\n")
