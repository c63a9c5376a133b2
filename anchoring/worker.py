"""The anchoring worker: publishes a log's signed checkpoints on chain, manifests in a content store.

One pass (`run_once`), under the log's lease (`ledger.lease`, store/locks.py):

1. progress: every anchor row in flight moves along
   pending -> submitted (tx hash, nonce) -> included (block, log index, gas, evidence)
   -> confirmed (depth >= `confirmations`) -> finalized (block <= the chain's `finalized` tag);
   recorded block hashes of included/confirmed rows are re-checked, and a row whose block is no
   longer canonical becomes `reorged` (its checkpoint is anchored again by step 2);
2. start: if nothing is in flight, take the newest signed checkpoint larger than both the last
   settled anchor and the contract's `latest(logId)`, check it is consistent with the last
   settled anchor, build and store its manifest, sign the anchor transaction, record its hash and
   nonce, then broadcast it.

Idempotence. The signed transaction's hash and nonce are recorded before it is broadcast, so a
crash in between is resolved on the next pass by looking the hash up: known -> keep tracking it;
unknown -> the contract is asked (latest(logId) and its Anchored logs) whether the size is
already anchored, and only if not is a new transaction signed. The contract rejects a size that
does not grow (SizeNotIncreasing); that revert is handled as "already anchored": the existing
Anchored log is found and adopted instead of sending again.

Unavailability. Appends never touch the chain or the content store. When either is unreachable
the pass ends with `unavailable` set, `watch()` logs one line, backs off exponentially and logs
one line again when the dependency is back; the worker then catches up from the ledger's newest
checkpoint. Docs: docs/anchoring.md, docs/manifest-format.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rlhf_ledger.anchoring.chain import (
    ChainClient,
    ChainError,
    ChainUnavailable,
    ContractRevert,
    RPCError,
    log_id_for_origin,
)
from rlhf_ledger.anchoring.cid import cid_for_bytes, same_content
from rlhf_ledger.anchoring.content_store import ContentStore, ContentStoreUnavailable
from rlhf_ledger.anchoring.evidence import (
    ANCHORED_TOPIC,
    EvidenceError,
    build_evidence,
    decode_anchored_data,
    verify_evidence,
)
from rlhf_ledger.anchoring.manifest import ManifestError, build_manifest, encode_manifest
from rlhf_ledger.core.anchor_status import IN_FLIGHT, ON_CHAIN, AnchorStatus
from rlhf_ledger.core.checkpoints import Checkpoint
from rlhf_ledger.core.errors import LedgerError, NotFoundError
from rlhf_ledger.store.anchors import AnchorRecord
from rlhf_ledger.store.ledger import Ledger

V = TypeVar("V")


def _known(value: V | None, row: AnchorRecord, column: str) -> V:
    """A column the row's status guarantees (a submitted row has its tx_hash, an on-chain row its
    block); a row without it was not written by this worker, so say which."""
    if value is None:
        raise LedgerError(f"anchor record {row.id} is {row.status} but has no {column}", where=f"anchors.{column}")
    return value

log = logging.getLogger(__name__)

PENDING, SUBMITTED, INCLUDED = AnchorStatus.PENDING, AnchorStatus.SUBMITTED, AnchorStatus.INCLUDED
CONFIRMED, FINALIZED = AnchorStatus.CONFIRMED, AnchorStatus.FINALIZED
REORGED, FAILED = AnchorStatus.REORGED, AnchorStatus.FAILED
FINALIZED_MODE = "finalized"  # confirmations="finalized": wait for the chain's finalized tag too
DEFAULT_CONFIRMATIONS = 2


class LeaseLost(LedgerError):
    """Another worker holds the log's lease now; this pass stops before sending anything."""

    code = "lease_lost"


@dataclass
class PassResult:
    """What one pass did (for logs, the CLI and tests)."""

    leader: bool = True
    submitted: list[int] = field(default_factory=list)  # checkpoint sizes sent this pass
    transitions: list[tuple[int, str, str]] = field(default_factory=list)  # (row id, from, to)
    unavailable: str | None = None  # one line: which dependency, where, why
    errors: list[str] = field(default_factory=list)


def next_delay(delay: float, interval: float, max_backoff: float, *, unavailable: bool) -> float:
    """The wait before the next pass: doubled (up to `max_backoff`) while a dependency is
    unavailable, back to `interval` once it answers (AnchorWorker.watch, `anchor --watch`)."""
    return min(max(delay * 2, interval), max_backoff) if unavailable else interval


class AnchorWorker:
    """Anchors one log. Several workers may run against one database; the lease picks one."""

    def __init__(
        self,
        ledger: Ledger,
        chain_client: ChainClient,
        content_store: ContentStore,
        log_id: str,
        *,
        confirmations: int | str = 2,
        max_attempts: int = 5,
        lease_ttl: float = 30.0,
        holder: str | None = None,
        issue_checkpoints: bool = True,
        logs_from_block: int = 0,
        reorg_window: int = 4096,
        finality_tag: str | None = None,
        inclusion_wait: float = 2.0,
    ) -> None:
        if confirmations != FINALIZED_MODE and not (isinstance(confirmations, int) and not isinstance(
                confirmations, bool) and confirmations >= 1):
            raise ValueError(f"confirmations must be an integer >= 1 or 'finalized', got {confirmations!r}")
        if finality_tag not in (None, "finalized", "safe"):
            raise ValueError(f"finality_tag must be 'finalized', 'safe' or None, got {finality_tag!r}")
        self.ledger = ledger
        self.chain = chain_client
        self.store = content_store
        self.log_id = log_id
        info = ledger.log_info(log_id)
        self.origin = info.origin
        self.chain_log_id = log_id_for_origin(info.origin)
        self.confirmations = confirmations
        # K always applies; the chain's tag is an additional condition, never a replacement
        # (Hardhat and eth-tester report finalized = latest). "finalized" mode = K 2 + the tag.
        self.depth = DEFAULT_CONFIRMATIONS if confirmations == FINALIZED_MODE else int(confirmations)
        self.finality_tag = finality_tag or "finalized"
        self.max_attempts = max_attempts
        self.issue_checkpoints = issue_checkpoints
        self.logs_from_block = logs_from_block
        self.reorg_window = reorg_window  # without a finalized tag, stop re-checking rows this deep
        # A node that mines on submission (anvil, Hardhat automine) does so asynchronously: a
        # receipt may lag the send by a few ms. Waiting briefly lets one pass show the inclusion.
        self.inclusion_wait = inclusion_wait
        self._sent: list[str] = []
        self.lease = ledger.lease(f"anchor:{log_id}", holder=holder, ttl=lease_ttl)
        if ledger.fork_guard is not None:  # the chain's anchored root also guards signing (fork_witness.py)
            from rlhf_ledger.anchoring.fork_witness import ChainWitness

            if not any(getattr(w, "client", None) is chain_client for w in ledger.fork_guard.witnesses):
                ledger.fork_guard.add_witness(ChainWitness(chain_client))
        self._unavailable: str | None = None
        self._result = PassResult()

    @property
    def settled(self) -> tuple[AnchorStatus, ...]:
        """Statuses a new anchor may build on."""
        return (FINALIZED,) if self.confirmations == FINALIZED_MODE else (CONFIRMED, FINALIZED)

    # -- the pass ----------------------------------------------------------------------------

    def run_once(self) -> PassResult:
        self._result = result = PassResult()
        if not self.lease.acquire():
            result.leader = False
            return result
        try:
            if self.issue_checkpoints:
                self._maybe_checkpoint()
            self._progress()
            why = self.ledger.fork_check(self.log_id)
            if why is None:
                self._start_or_resume()
            else:  # the database is behind or forked: anchor nothing new (ledger/fork_guard.py)
                result.errors.append(why)
            self._await_inclusion()
            self._progress()  # a node that mines at once (automine) shows inclusion in the same pass
        except (ChainUnavailable, ContentStoreUnavailable) as e:
            result.unavailable = self._describe_unavailable(e)
        except LeaseLost as e:
            log.warning("anchoring %s: %s", self.log_id, e)
        except LedgerError as e:  # e.g. a malformed node answer (chain.py names method and field)
            result.errors.append(str(e))
            log.error("anchoring %s: pass stopped: %s", self.log_id, e)
        if result.unavailable is None and self._unavailable is not None:
            log.info("anchoring %s resumed: %s is reachable again", self.log_id, self._unavailable.split(" ")[0])
            self._unavailable = None
        return result

    def _await_inclusion(self) -> None:
        """Poll (at most `inclusion_wait` seconds) for receipts of what this pass sent."""
        sent, self._sent = self._sent, []
        deadline = time.monotonic() + self.inclusion_wait
        for tx_hash in sent:
            while self.chain.receipt(tx_hash) is None and time.monotonic() < deadline:
                time.sleep(0.02)

    def watch(self, interval: float = 5.0, *, stop: threading.Event | None = None,
              max_backoff: float = 300.0, passes: int | None = None) -> None:
        """Run passes until `stop` is set (or `passes` ran), sleeping `interval` between them and
        backing off exponentially (up to `max_backoff`) while a dependency is unavailable."""
        stop = stop or threading.Event()
        delay = interval
        done = 0
        while not stop.is_set() and (passes is None or done < passes):
            result = self.run_once()
            done += 1
            delay = next_delay(delay, interval, max_backoff, unavailable=bool(result.unavailable))
            if result.unavailable:
                log.debug("anchoring %s: next try in %.1fs", self.log_id, delay)
            if passes is not None and done >= passes:
                break
            stop.wait(delay)

    def _describe_unavailable(self, e: LedgerError) -> str:
        what = "chain" if isinstance(e, ChainUnavailable) else "content store"
        line = f"{what} unavailable ({e})"
        if self._unavailable is None:  # one line per outage, not one per pass
            log.warning("anchoring %s paused: %s; the ledger keeps accepting events, retrying with backoff",
                        self.log_id, line)
        self._unavailable = line
        return line

    def _maybe_checkpoint(self) -> None:
        try:
            self.ledger.maybe_checkpoint(self.log_id)
        except LedgerError as e:  # e.g. no passphrase for the log key: anchor what is signed already
            log.debug("anchoring %s: no new checkpoint issued (%s)", self.log_id, e)

    def _fence(self) -> None:
        """Renew the lease right before an action that must not run twice."""
        if not self.lease.renew():
            raise LeaseLost("lease was taken over by another worker", where=self.lease.name)

    # -- rows --------------------------------------------------------------------------------

    def _rows(self, statuses: tuple[AnchorStatus, ...]) -> list[AnchorRecord]:
        return self.ledger.anchors.for_log(self.log_id, statuses=statuses)

    def _insert(self, **values: Any) -> AnchorRecord:
        values = {"chain_id": self.chain.chain_id, "contract": self.chain.contract_address, **values}
        row = self.ledger.anchors.insert(self.log_id, **values)
        self._result.transitions.append((row.id, "", row.status))
        return row

    def _update(self, row: AnchorRecord, **values: Any) -> AnchorRecord:
        new = self.ledger.anchors.update(row, **values)
        if new.status != row.status:
            self._result.transitions.append((row.id, row.status, new.status))
            log.info("anchoring %s: checkpoint %d %s -> %s", self.log_id, row.checkpoint_size, row.status, new.status)
        return new

    def _attempt_failed(self, row: AnchorRecord, message: str, **reset: Any) -> AnchorRecord:
        """A non-transient error for this row: count it; fail the row after max_attempts."""
        attempts = row.attempts + 1
        text = f"checkpoint {row.checkpoint_size}: {message}"
        self._result.errors.append(text)
        if attempts >= self.max_attempts:
            log.error("anchoring %s: %s (attempt %d of %d, giving up on this row)", self.log_id, text,
                      attempts, self.max_attempts)
            return self._update(row, status=FAILED, error=message, attempts=attempts)
        log.warning("anchoring %s: %s (attempt %d of %d)", self.log_id, text, attempts, self.max_attempts)
        return self._update(row, error=message, attempts=attempts, **reset)

    # -- step 1: progress --------------------------------------------------------------------

    def _progress(self) -> None:
        rows = self._rows((SUBMITTED, INCLUDED, CONFIRMED))
        if not rows:
            return
        rows = [self._check_submitted(row) if row.status == SUBMITTED else row for row in rows]
        # The head is read after the receipts: a node that mines asynchronously can show a receipt
        # in a block newer than a head read before it, which would count as depth 0.
        head = self.chain.block_number("latest")
        assert head is not None
        finalized = self.chain.block_number(self.finality_tag)
        for row in rows:
            if row.status in ON_CHAIN:
                self._check_on_chain(row, head, finalized)

    def _check_submitted(self, row: AnchorRecord) -> AnchorRecord:
        tx_hash = _known(row.tx_hash, row, "tx_hash")
        rcpt = self.chain.receipt(tx_hash)
        if rcpt is None or rcpt.get("blockNumber") is None:
            if self.chain.transaction(tx_hash) is not None:
                return row  # still waiting in the node's pool
            return self._lost_transaction(row, "transaction is unknown to the node (dropped)")
        if int(rcpt["status"], 16) != 1:
            found = self._find_anchored(row.checkpoint_size)
            if found is not None:
                return self._adopt(row, found)
            return self._attempt_failed(row, f"transaction {tx_hash} reverted", status=PENDING, tx_hash=None,
                                        nonce=None)
        return self._record_inclusion(row, rcpt)

    def _record_inclusion(self, row: AnchorRecord, rcpt: dict[str, Any]) -> AnchorRecord:
        try:
            evidence = build_evidence(self.chain, _known(row.tx_hash, row, "tx_hash"), contract=self.chain.contract_address)
            verified = verify_evidence(evidence)
        except (EvidenceError, ChainError) as e:
            if isinstance(e, ChainUnavailable):
                raise
            return self._attempt_failed(row, f"building anchor evidence failed: {e}")
        checkpoint = self.ledger.get_checkpoint(self.log_id, row.checkpoint_size)
        if (verified.log_id, verified.tree_size, verified.root_hash) != (self.chain_log_id, checkpoint.size,
                                                                          checkpoint.root):
            return self._update(row, status=FAILED, error=(
                f"on-chain anchor (size {verified.tree_size}, root 0x{verified.root_hash.hex()}) differs from "
                f"signed checkpoint {checkpoint.size} (root 0x{checkpoint.root.hex()})"))
        return self._update(
            row, status=INCLUDED, cid=verified.cid, block_number=verified.block_number,
            block_hash=evidence["block_hash"], block_timestamp=verified.timestamp,
            log_index=evidence["log_index"], gas_used=int(rcpt["gasUsed"], 16),  # validated in chain.receipt()
            evidence=json.dumps(evidence, sort_keys=True), error=None,
        )

    def _check_on_chain(self, row: AnchorRecord, head: int, finalized: int | None) -> AnchorRecord:
        block_number = _known(row.block_number, row, "block_number")
        depth = head - block_number + 1
        if finalized is None and row.status == CONFIRMED and depth > self.reorg_window:
            return row  # a chain without a finalized tag: deep enough to stop re-checking
        block = self.chain.rpc("eth_getBlockByNumber", [hex(block_number), False])
        current = None if block is None else str(block["hash"]).lower()
        if current != row.block_hash:
            log.warning("anchoring %s: reorg: block %d of checkpoint %d anchor was %s, is now %s; anchoring again",
                        self.log_id, row.block_number, row.checkpoint_size, row.block_hash, current)
            return self._update(row, status=REORGED,
                                error=f"block {row.block_number} hash changed from {row.block_hash} to {current}")
        if depth < self.depth:
            return row  # K confirmations first, whatever the tag says
        if finalized is not None and block_number <= finalized:
            return self._update(row, status=FINALIZED)
        if row.status == INCLUDED and self.confirmations != FINALIZED_MODE:
            return self._update(row, status=CONFIRMED)
        return row

    # -- step 2: start or resume -------------------------------------------------------------

    def _start_or_resume(self) -> None:
        for row in self._rows((PENDING,)):
            self._resume_pending(row)
        if self._rows(IN_FLIGHT):
            return  # one anchor in flight at a time: the next builds on a settled one
        settled = self._rows(self.settled)
        base = max(settled, key=lambda r: r.checkpoint_size) if settled else None
        base_size = base.checkpoint_size if base is not None else 0
        chain_size, _ = self.chain.latest(self.chain_log_id)
        given_up = [r for r in self._rows((FAILED,)) if r.checkpoint_size == chain_size and r.tx_hash]
        if chain_size > base_size and given_up:
            # Our own anchor of this size is on chain but its row failed terminally (e.g. the
            # evidence could not be built): adopting it again would loop. It stays failed until
            # an operator retries it (`rlhf-ledger anchors --retry`); newer checkpoints are anchored meanwhile.
            log.debug("anchoring %s: checkpoint %d failed (%s); not adopting it again", self.log_id,
                      chain_size, given_up[-1].error)
        elif chain_size > base_size:
            # The contract is ahead of our settled rows: a reorg re-included our transaction, or
            # our record was lost. Adopt that anchor rather than send another.
            found = self._find_anchored(chain_size)
            if found is not None and self._matches_checkpoint(found):
                self._adopt(None, found, prev_size=base_size)
                return
            log.error("anchoring %s: the contract holds size %d which does not match a signed checkpoint of "
                      "this ledger", self.log_id, chain_size)
        newest = self.ledger.latest_checkpoint(self.log_id)
        if newest is None or newest.size <= max(base_size, chain_size):
            return
        if any(r.checkpoint_size == newest.size for r in self._rows((FAILED,))):
            return  # gave up on this checkpoint after max_attempts; a newer checkpoint is tried afresh
        previous = self.ledger.get_checkpoint(self.log_id, base_size) if base is not None else None
        try:
            doc = build_manifest(self.ledger, self.log_id, newest, previous)
        except (ManifestError, LedgerError) as e:
            # The log's storage disagrees with what it signed: never anchor that.
            self._result.errors.append(str(e))
            log.error("anchoring %s: not anchoring checkpoint %d: %s", self.log_id, newest.size, e)
            return
        row = self._insert(checkpoint_size=newest.size, prev_size=base_size, status=PENDING,
                           cid=cid_for_bytes(encode_manifest(doc)))
        self._resume_pending(row, doc)

    def _manifest_doc(self, row: AnchorRecord) -> dict[str, Any]:
        checkpoint = self.ledger.get_checkpoint(self.log_id, row.checkpoint_size)
        previous = self.ledger.get_checkpoint(self.log_id, row.prev_size) if row.prev_size else None
        return build_manifest(self.ledger, self.log_id, checkpoint, previous)

    def _resume_pending(self, row: AnchorRecord, doc: dict[str, Any] | None = None) -> None:
        # (a) a transaction was signed and recorded earlier: did it reach the node?
        if row.tx_hash is not None:
            if self.chain.receipt(row.tx_hash) is not None or self.chain.transaction(row.tx_hash) is not None:
                self._update(row, status=SUBMITTED)
                return
            row = self._lost_transaction(row, "recorded transaction never reached the node")
            if row.status != PENDING:
                return
        # (b) the manifest is stored (again: the store may have lost it) under the CID we compute.
        data = encode_manifest(doc if doc is not None else self._manifest_doc(row))
        cid = cid_for_bytes(data)
        stored = self.store.put(data)
        if not same_content(stored, cid):
            self._attempt_failed(row, f"content store returned CID {stored}, computed {cid}")
            return
        self.store.pin(cid)
        if cid != row.cid:  # e.g. payloads erased since the row was made; nothing was sent yet
            row = self._update(row, cid=cid)
        # (c) sign, record, broadcast.
        self._fence()
        checkpoint = self.ledger.get_checkpoint(self.log_id, row.checkpoint_size)
        try:
            problem = self._registration_problem()
            if problem is not None:
                self._update(row, status=FAILED, error=problem)
                return
            tx_hash, raw, nonce = self._sign_anchor(checkpoint, cid)
        except ContractRevert as e:
            if e.error_name == "InconsistentProof":  # terminal: the same proof would be refused again
                self._update(row, status=FAILED, error=f"the contract refused the consistency proof from its "
                             f"anchored root (this log does not extend what is anchored): {e}")
                return
            if e.error_name == "SizeNotIncreasing":
                found = self._find_anchored(row.checkpoint_size)
                if found is not None:
                    self._adopt(row, found)
                else:
                    self._update(row, status=FAILED, error=f"contract already holds a larger size: {e}")
                return
            self._attempt_failed(row, str(e))
            return
        row = self._update(row, tx_hash=tx_hash, nonce=nonce, chain_id=self.chain.chain_id,
                           contract=self.chain.contract_address)
        self._broadcast(row, raw)

    def _broadcast(self, row: AnchorRecord, raw: str) -> None:
        """Send the recorded signed transaction (a separate method so tests can crash around it)."""
        try:
            self.chain.rpc("eth_sendRawTransaction", [raw])
        except RPCError as e:
            msg = str(e).lower()
            if "already known" not in msg and self.chain.transaction(_known(row.tx_hash, row, "tx_hash")) is None:
                self._attempt_failed(row, f"node refused the transaction: {e}", tx_hash=None, nonce=None)
                return
        self._update(row, status=SUBMITTED, error=None)
        self._result.submitted.append(row.checkpoint_size)
        if row.tx_hash is not None:
            self._sent.append(row.tx_hash)

    def _sign_anchor(self, checkpoint: Checkpoint, cid: str) -> tuple[str, str, int]:
        """Sign anchor(logId, size, root, cid, proof) locally; gas estimation surfaces reverts first.
        The proof is the RFC 9162 consistency proof from what the contract holds now, which the
        contract checks (docs/contract.md): a log that does not extend its anchored root cannot
        be anchored at all."""
        c = self.chain
        on_chain, _ = c.latest(self.chain_log_id)
        proof = self._chain_proof(on_chain, checkpoint.size)
        data = c.contract.functions.anchor(self.chain_log_id, checkpoint.size, checkpoint.root,
                                           cid, proof)._encode_transaction_data()
        tx: dict[str, Any] = {"from": c.address, "to": c.contract_address, "data": data, "value": 0,
                              "chainId": c.chain_id}
        gas = c._estimate_gas(tx, "anchor")  # same package; decodes custom errors
        tx["gas"] = int(gas * c.gas_margin)
        tx.update(c.fee_fields())  # type 2 (EIP-1559) or type 0 (legacy gasPrice), chain.py
        # The node's pending count: only the lease holder sends with this key for this log, and a
        # recorded-but-unsent transaction is never in the pool, so its nonce is reused, not skipped.
        tx["nonce"] = int(c.rpc("eth_getTransactionCount", [c.address, "pending"]), 16)
        del tx["from"]
        signed = c.account.sign_transaction(tx)
        return "0x" + bytes(signed.hash).hex(), "0x" + bytes(signed.raw_transaction).hex(), tx["nonce"]

    def _chain_proof(self, on_chain: int, size: int) -> list[bytes]:
        """The consistency proof from the contract's anchored size (empty for a first anchor)."""
        return self.ledger.consistency_proof(self.log_id, on_chain, size) if 0 < on_chain < size else []

    def _registration_problem(self) -> str | None:
        """A log is registered on the contract (origin and log key) before its first anchor: the
        contract's owner registers it here. For another key the anchor itself reverts with
        LogNotRegistered (a bounded, retried failure: the owner may register it meanwhile). A
        registered key other than this log's is a terminal failure, returned as its reason."""
        c = self.chain
        info = self.ledger.log_info(self.log_id)
        key = c.log_key(self.chain_log_id)
        if key is None:
            if c.owner().lower() == c.address.lower():
                c.wait_for_receipt(c.register_log(info.origin, info.public_key))
                log.info("anchoring %s: registered the log %r and its key on the contract", self.log_id, info.origin)
            return None
        if key != info.public_key:
            return (f"the contract registers another key for log {info.origin!r} (0x{key.hex()[:16]}..) than this "
                    "ledger's log key: rotate it on chain (rotateLogKey) or anchor to the right contract")
        return None

    def _lost_transaction(self, row: AnchorRecord, why: str) -> AnchorRecord:
        """The node does not know the row's transaction: adopt an existing anchor of this size, or
        go back to pending so that a new transaction is signed (same size, same manifest)."""
        found = self._find_anchored(row.checkpoint_size)
        if found is not None:
            return self._adopt(row, found)
        log.warning("anchoring %s: checkpoint %d: %s (%s); signing it again", self.log_id, row.checkpoint_size,
                    why, row.tx_hash)
        return self._update(row, status=PENDING, tx_hash=None, nonce=None, error=why)

    # -- finding what the contract already holds ---------------------------------------------

    def _find_anchored(self, size: int) -> dict[str, Any] | None:
        """The canonical Anchored log of this log for tree size `size`, or None."""
        chain_size, _ = self.chain.latest(self.chain_log_id)
        if chain_size < size:
            return None
        logs = self.chain.rpc("eth_getLogs", [{
            "address": self.chain.contract_address, "fromBlock": hex(self.logs_from_block), "toBlock": "latest",
            "topics": ["0x" + ANCHORED_TOPIC.hex(), "0x" + self.chain_log_id.hex()],
        }])
        if not isinstance(logs, list):
            raise ChainError(f"eth_getLogs: answer = {str(logs)[:80]!r} is not a list", where=self.chain.rpc_url)
        for entry in logs:
            if not isinstance(entry, dict):
                raise ChainError(f"eth_getLogs: entry = {str(entry)[:80]!r} is not an object", where=self.chain.rpc_url)
            if entry.get("removed"):
                continue
            data, tx_hash = entry.get("data"), entry.get("transactionHash")
            if not (isinstance(data, str) and data.startswith("0x")) or not (
                    isinstance(tx_hash, str) and len(tx_hash) == 66 and tx_hash.startswith("0x")):
                raise ChainError(f"eth_getLogs: data = {str(data)[:40]!r} / transactionHash = {str(tx_hash)[:80]!r} "
                                 "is not 0x-hex", where=self.chain.rpc_url)
            try:
                tree_size, root, cid = decode_anchored_data(bytes.fromhex(data[2:]))
            except ValueError:
                raise ChainError(f"eth_getLogs: data = {data[:40]!r} is not 0x-hex", where=self.chain.rpc_url) from None
            if tree_size == size:
                return {"tx_hash": entry["transactionHash"].lower(), "size": tree_size, "root": root, "cid": cid}
        return None

    def _matches_checkpoint(self, found: dict[str, Any]) -> bool:
        try:
            return self.ledger.get_checkpoint(self.log_id, found["size"]).root == found["root"]
        except NotFoundError:
            return False

    def _adopt(self, row: AnchorRecord | None, found: dict[str, Any], *, prev_size: int = 0) -> AnchorRecord:
        """Track an Anchored log already on chain instead of sending another transaction."""
        if not self._matches_checkpoint(found):
            message = (f"the contract's anchor of size {found['size']} (tx {found['tx_hash']}) has a root that "
                       f"differs from this ledger's signed checkpoint")
            log.error("anchoring %s: %s", self.log_id, message)
            if row is None:
                return self._insert(checkpoint_size=found["size"], prev_size=prev_size, status=FAILED,
                                    tx_hash=found["tx_hash"], cid=found["cid"], error=message)
            return self._update(row, status=FAILED, error=message)
        log.info("anchoring %s: checkpoint %d is already anchored by %s; tracking that transaction",
                 self.log_id, found["size"], found["tx_hash"])
        tx = self.chain.transaction(found["tx_hash"]) or {}
        nonce = int(tx["nonce"], 16) if tx.get("nonce") else None
        if row is None:
            return self._insert(checkpoint_size=found["size"], prev_size=prev_size, status=SUBMITTED,
                                tx_hash=found["tx_hash"], nonce=nonce, cid=found["cid"])
        return self._update(row, status=SUBMITTED, tx_hash=found["tx_hash"], nonce=nonce, cid=found["cid"],
                            error=None)
