"""The verification engine: one pass over a bundle (docs/bundle-format.md).

Header, checkpoints, consistency proofs and anchors are checked in this process; event lines
are checked in blocks by `worker.check_block` (in a process pool for large bundles), and
their results are folded back in file order: index order, tree roots (tree mode), producer
chains, anchoring coverage and delay, compliance facts and chart series.
"""

from __future__ import annotations

import base64
import bisect
import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from typing import Any, BinaryIO, Literal, TypeAlias

from . import clock, ed25519, worker
from .bundle import FORMAT, MAX_LINE_BYTES, MEDIA_TYPE, VERSION, BundleReadError, iter_lines, parse_record
from .cid import CIDError, check_content
from .completeness import CompletenessError, RunCompleteness
from .compliance import RULE_SETS, Collector, evaluate, resolve
from .compliance.reviews import ReviewedRun
from .compliance.reviews import listing as review_listing
from .compliance.rules import RuleResultJSON
from .events import ChainTracker
from .evidence import Anchor, EvidenceError, verify_evidence
from .jsontypes import JSONObject
from .keys import LEGACY, KeyEvents, KeyEventsError
from .listings import (
    AnchorListing,
    CheckpointListing,
    CompletenessListing,
    ProducerKeyListing,
    Released,
    TrustedValue,
    WeightsListing,
)
from .logkey import KNOWN_CODE_HASHES
from .merkle import CompactRange, ProofError, verify_consistency
from .note import NoteError, VerifierKey, b64decode_strict, verify_checkpoint

MAX_FINDINGS = 200
MAX_BLOCK_TIME = 253402300800  # 10000-01-01T00:00:00Z: later block times are findings, not overflows
BLOCK_BYTES = 1 << 20  # raw bytes handed to a worker at once (about 2,000 events)
IN_FLIGHT_PER_JOB = 3
POOL_MIN_BYTES = 4 * 1024 * 1024  # below this, check inline (process start-up costs more)

# The declared scope, checked for shape: ("run", run id) or ("event" | "range", start, end).
RunScope: TypeAlias = tuple[Literal["run"], str]
WindowScope: TypeAlias = tuple[Literal["event", "range"], int, int]
Scope: TypeAlias = RunScope | WindowScope


class CannotRun(Exception):
    """Verification could not run (exit 2)."""


@dataclass
class Options:
    # Optional pins: the log key and producer keys are proven by the chain and the log
    # (docs/trust-model.md); pinned keys must agree with what is proven.
    log_keys: list[VerifierKey] = field(default_factory=list)
    producer_keys: list[bytes] = field(default_factory=list)
    chain_id: int | None = None
    contract: bytes | None = None
    trusted_block_hashes: set[bytes] = field(default_factory=set)
    rules: str | None = None
    jobs: int | None = None  # None: pool for large bundles with os.cpu_count() workers; 0/1: inline
    online_block_check: Callable[[Anchor], str | None] | None = None  # returns an error or None
    progress: Callable[[int, int], None] | None = None  # (bytes read, total bytes)
    # Where each trust input came from, as the report names it (cli.py fills these).
    log_key_sources: list[str] = field(default_factory=list)
    producer_key_sources: list[str] = field(default_factory=list)
    allow_unanchored: bool = False  # with chain pins: events outside confirmed anchors are not findings
    max_clock_skew: float = 300.0  # seconds an event time may lie after its covering anchor's block time
    max_delta: float | None = None  # user bound on a run's declared privacy delta (default: 1/records)


@dataclass
class Finding:
    check: str
    where: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "where": self.where, "message": self.message}

    def line(self) -> str:
        return f"[{self.check}] {self.where}: {self.message}"


class Series:
    """A bounded, evenly thinned series of (x, y) points (for charts)."""

    __slots__ = ("cap", "stride", "n", "points")

    def __init__(self, cap: int = 1000):
        self.cap, self.stride, self.n = cap, 1, 0
        self.points: list[tuple[float, float]] = []

    def add(self, x: float, y: float) -> None:
        if self.n % self.stride == 0:
            self.points.append((x, y))
            if len(self.points) >= 2 * self.cap:
                self.points = self.points[::2]
                self.stride *= 2
        self.n += 1


@dataclass
class Result:
    valid: bool = True
    findings: list[Finding] = field(default_factory=list)
    finding_count: int = 0
    trusted: dict[str, TrustedValue] = field(default_factory=dict)
    header: JSONObject = field(default_factory=dict)  # the header's claims, as given
    checkpoints: list[CheckpointListing] = field(default_factory=list)
    anchors: list[AnchorListing] = field(default_factory=list)
    events: int = 0
    leaves: int = 0
    events_valid: int = 0
    events_anchored: int = 0
    producer_chains: int = 0
    compliance: list[RuleResultJSON] | None = None
    rule_set: str | None = None  # the exact, versioned rule set evaluated (e.g. eu-ai-act@2)
    reviews: list[ReviewedRun] = field(default_factory=list)  # human.review records per run (docs/verifier.md, "Reports")
    reviews_runs_omitted: int = 0  # runs with reviews beyond those listed, counted only
    reviews_records_omitted: int = 0  # window bundles: review records of runs beyond the first listed ones
    # what the bundle proves about the run's membership
    completeness: CompletenessListing = field(default_factory=CompletenessListing)
    released: dict[str, Released] = field(default_factory=dict)  # run id -> (index, released_weights_digest) of its one run.end
    weights: WeightsListing = field(default_factory=WeightsListing)  # --weights: the artefact's digest and how it compares
    series: dict[str, Series] = field(default_factory=dict)
    privacy_series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (steps, claimed epsilon)
    privacy_budgets: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    producer_keys: list[ProducerKeyListing] = field(default_factory=list)  # each trusted producer key and its log positions
    not_assessed: str | None = None  # why --rules could not be assessed over this bundle's scope
    scope: JSONObject | None = None  # the declared scope, when well-formed

    def fail(self, check: str, where: str, message: str) -> None:
        self.valid = False
        self.finding_count += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(check, where, message))


def _ev_where(index: Any, event_id: bytes | None, line: int) -> str:
    shown = event_id.hex()[:16] if event_id is not None else "id unknown"
    return f"event {index if index is not None else '?'} ({shown}) line {line}"


class Verifier:
    def __init__(self, opts: Options):
        for what, keys, sources in (("log", opts.log_keys, opts.log_key_sources),
                                    ("producer", opts.producer_keys, opts.producer_key_sources)):
            if sources and len(sources) != len(keys):  # each pinned key is reported with its own source
                raise CannotRun(f"Options.{what}_key_sources names {len(sources)} source(s) for {len(keys)} pinned "
                                f"{what} key(s): give one per key, or none")
        self.o = opts
        self.r = Result()
        self.collector = Collector()
        self.collector.max_delta = opts.max_delta
        self.chains = ChainTracker()
        self.cps: dict[int, bytes] = {}
        self.cp_notes: dict[int, str] = {}
        self.anchor_sizes: list[int] = []  # sorted verified-anchor sizes
        self.anchor_times: list[int] = []
        self.tree = CompactRange()
        self.next_index = 0
        self.last_index = -1
        self.origin = ""
        self.mode = "inclusion"
        self.records = 0
        self.event_count = 0
        self.state = "header"
        self.end_seen = False
        self.scope: Scope | None = None
        self.max_cp = -1
        self._consistent: set[tuple[int, int]] = set()
        self.chain_pinned = False
        self.log_keys: list[VerifierKey] = []
        self.producer_map: dict[str, tuple[bytes, int, int | None]] = {}
        self.cp_records: dict[int, tuple[bytes, str, str]] = {}  # size -> (root, note, where): notes checked once the log key is known
        self.pending_anchors: list[tuple[int, Anchor, str, list[str], str]] = []  # (size, anchor, where, confirmed_by, ev log_index)
        self.keys_obj: tuple[int, JSONObject] | None = None
        self.key_event_objs: list[tuple[int, JSONObject]] = []
        self.run_obj: tuple[int, JSONObject] | None = None
        self.trusted_hashes_used: set[bytes] = set()
        self.anchor_keys: list[tuple[int, bytes, int]] = []  # (anchored size, proven log key, block), ascending
        self.last_listed_anchor = -1
        self.run_check = RunCompleteness()
        self.fact_run: str | None = None  # the run whose facts are collected (a run bundle's run)
        self._series: dict[str, list[Series | None]] = {}  # update type -> its chart series (or None), in worker.SERIES_KEYS order
        self.manifest_runs: dict[int, Any] = {}  # anchored size -> its manifest's run-index note (v2, any JSON)
        # Set from the header (header()) and when the events start (start_events()).
        self.header_log_id: str
        self.header_log_pub: bytes
        self.max_anchored: int
        self.final_size: int

    # ---- driver -----------------------------------------------------------------------------

    def run(self, f: BinaryIO, total_bytes: int = 0) -> Result:
        lines = iter_lines(f)
        pending: list[tuple[int, bytes]] = []
        try:
            for n, raw in lines:
                obj, dup = parse_record(raw, n)
                if dup:
                    self.r.fail("json.duplicate_key", f"line {n}", dup)
                if obj["kind"] in ("event", "leaf", "end"):
                    pending.append((n, raw))
                    break
                self.records += 1
                self.record(n, obj)
            else:
                self.record_end_missing()
                return self.finish()
            self.start_events()
            self.events_phase(pending, lines, f, total_bytes)
        except BundleReadError as e:
            raise CannotRun(f"unreadable bundle: {e}") from None
        return self.finish()

    def events_phase(self, first: list[tuple[int, bytes]], lines: Iterator[tuple[int, bytes]], f: BinaryIO,
                     total: int) -> None:
        del lines  # from here on the file is read in blocks, not line by line
        ctx = worker.Context(self.mode, self.header_log_id, self.producer_map, dict(self.cps),
                             {hashlib.sha256(k.public_key).hexdigest(): k.public_key for k in self.log_keys})
        blocks = self._blocks(first, f, total)
        jobs = self.o.jobs
        if jobs is None:
            jobs = (os.cpu_count() or 1) if total >= POOL_MIN_BYTES else 1
        if jobs <= 1:
            worker.init(ctx)
            for task in blocks:
                for res in worker.check_block(task):
                    self.fold(res)
            return
        # forkserver, not fork: as a library the verifier may run inside a process with other
        # threads (a service, a test runner), and a forked child can inherit a lock one of them
        # held and hang. The fork server starts clean and forks workers from itself.
        mp = multiprocessing.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
        with mp.Pool(jobs, initializer=worker.init, initargs=(ctx,)) as pool:
            # A bounded window of blocks in flight (Pool.imap would read the whole file ahead
            # into its queue): memory stays flat whatever the bundle's size.
            window: collections.deque[AsyncResult[list[worker.LineResult]]] = collections.deque()
            for task in blocks:
                window.append(pool.apply_async(worker.check_block, (task,)))
                if len(window) >= IN_FLIGHT_PER_JOB * jobs:
                    for res in window.popleft().get():
                        self.fold(res)
            while window:
                for res in window.popleft().get():
                    self.fold(res)

    def _blocks(self, first: list[tuple[int, bytes]], f: BinaryIO, total: int) -> Iterator[tuple[int, bytes]]:
        """(first line number, whole lines joined by newlines) of about BLOCK_BYTES each."""
        n, raw = first[0]
        yield n, raw
        line, buf = n + 1, b""
        while True:
            data = f.read(BLOCK_BYTES)
            if self.o.progress:
                self.o.progress(f.tell(), total)
            if not data:
                if buf:
                    yield line, buf  # a final line without a newline
                return
            buf += data
            cut = buf.rfind(b"\n")
            if cut < 0:
                if len(buf) > MAX_LINE_BYTES + 1:
                    raise BundleReadError(f"line {line}: line longer than {MAX_LINE_BYTES} bytes")
                continue
            blob, buf = buf[:cut], buf[cut + 1:]
            yield line, blob
            line += blob.count(b"\n") + 1

    # ---- header, checkpoints, consistency, anchors ------------------------------------------

    def record(self, n: int, obj: JSONObject) -> None:
        kind = obj["kind"]
        if self.state == "header":
            if kind != "header":
                raise CannotRun(f"line {n}: the first record must be the header, got {kind!r}")
            self.header(obj)
            self.state = "checkpoint"
            return
        order = {"checkpoint": 0, "consistency": 1, "anchor": 2, "keys": 3, "key_event": 4, "run": 5}
        if kind not in order:
            self.r.fail("structure", f"line {n}", f"unexpected record kind {kind[:40]!r} before the events")
            return
        if order[kind] < order[self.state]:
            self.r.fail("structure", f"line {n}", f"{kind} record after {self.state} records (order is checkpoint, "
                                                  "consistency, anchor, keys, key_event, run)")
        self.state = kind
        if kind == "keys":
            if self.keys_obj is not None:
                self.r.fail("keys", f"line {n}", "more than one keys record")
            self.keys_obj = (n, obj)
        elif kind == "key_event":
            self.key_event_objs.append((n, obj))
        elif kind == "run":
            if self.run_obj is not None:
                self.r.fail("completeness", f"run record (line {n})", "more than one run record")
            else:
                self.run_obj = (n, obj)
        else:
            getattr(self, kind)(n, obj)

    def header(self, h: JSONObject) -> None:
        if h.get("format") != FORMAT:
            raise CannotRun(f"not an rlhf-ledger bundle (format {str(h.get('format'))[:60]!r})")
        if h.get("version") != VERSION or type(h.get("version")) is not int:
            raise CannotRun(f"unsupported bundle version {str(h.get('version'))[:20]} (this verifier reads version {VERSION})")
        if h.get("media_type") != MEDIA_TYPE:
            self.r.fail("header", "header.media_type", f"must be {MEDIA_TYPE}")
        mode = h.get("mode")
        if mode not in ("inclusion", "tree"):
            raise CannotRun(f"unknown bundle mode {str(mode)[:30]!r}")
        self.mode = mode
        log = h.get("log")
        if not isinstance(log, dict) or not all(isinstance(log.get(k), str) for k in ("log_id", "origin", "public_key")):
            raise CannotRun("header.log must carry log_id, origin and public_key strings")
        self.origin, self.header_log_id = log["origin"], log["log_id"]
        try:
            self.origin.encode("utf-8")
        except UnicodeEncodeError:
            self.r.fail("header", "header.log.origin", "origin is not valid Unicode text (lone surrogate)")
            self.origin = self.origin.encode("utf-8", "backslashreplace").decode("utf-8")
        try:
            self.header_log_pub = b64decode_strict(log["public_key"], "header.log.public_key", 32)
        except NoteError as e:
            raise CannotRun(str(e)) from None
        if "producers" in h:
            self.r.fail("header", "header.producers", "not part of bundle format v2: producer keys come from the "
                                                      "log's key events (docs/keys.md), never from the header")
        trusted: dict[str, TrustedValue] = {}
        trusted["chain_id"] = self.o.chain_id if self.o.chain_id is not None else "not pinned (taken from the evidence)"
        trusted["contract"] = ("0x" + self.o.contract.hex()) if self.o.contract else "not pinned (taken from the evidence)"
        trusted["block_hashes"] = sorted("0x" + b.hex() for b in self.o.trusted_block_hashes) or (
            "none pinned (anchors confirmed online with --rpc)" if self.o.online_block_check else
            "none: anchors are unconfirmed and count for nothing")
        self.chain_pinned = bool(self.o.chain_id is not None or self.o.contract is not None
                                 or self.o.trusted_block_hashes or self.o.online_block_check)
        trusted["log_keys"] = "derived from the chain (below, once the anchors are read)"
        trusted["producer_keys"] = "derived from the log's key events (below)"
        # How event signatures are checked (the batch check also relies on this machine's
        # randomness for its weights), so a reader knows the rule that was applied.
        trusted["signature_check"] = ed25519.engine()
        self.r.trusted = trusted
        self.r.header = {k: h.get(k) for k in ("created", "mode", "scope", "declared")} | {
            "log_id": self.header_log_id, "origin": self.origin}
        self.scope = self._check_scope(h.get("scope"))
        self.r.scope = h.get("scope") if self.scope is not None else None
        # Only a whole-run bundle must hold each producer chain from seq 0 (docs/bundle-format.md).
        self.chains.require_start = self.scope is None or self.scope[0] == "run"

    def _check_scope(self, scope: Any) -> Scope | None:
        """The declared scope, checked for shape: ("run", run_id) or (type, start, end) for
        event/range; None (after a finding) when it is malformed, so no event is held to it."""
        w = "header.scope"
        if not isinstance(scope, dict):
            self.r.fail("scope", w, "must be an object with a type of event, range or run")
            return None
        typ = scope.get("type")
        if typ == "run":
            rid = scope.get("run_id")
            if scope.keys() != {"type", "run_id"} or type(rid) is not str or not rid:
                self.r.fail("scope", w, "a run scope is exactly {type, run_id} with a non-empty run_id string")
                return None
            return ("run", rid)
        if typ in ("event", "range"):
            a, b = scope.get("start"), scope.get("end")
            if scope.keys() != {"type", "start", "end"} or not (type(a) is int and type(b) is int and 0 <= a < b):
                self.r.fail("scope", w, f"a {typ} scope is exactly {{type, start, end}} with integers 0 <= start < end")
                return None
            if typ == "event" and b != a + 1:
                self.r.fail("scope", w, "an event scope covers one index (end = start + 1)")
                return None
            return (typ, a, b)
        self.r.fail("scope", w, f"type {str(typ)[:30]!r} is not event, range or run")
        return None

    def checkpoint(self, n: int, obj: JSONObject) -> None:
        size = obj.get("size")
        where = f"checkpoint {size if type(size) is int else '?'} (line {n})"
        if type(size) is not int or size < 0:
            self.r.fail("checkpoint", where, "size must be a non-negative integer")
            return
        if self.cps and size <= self.max_cp:
            self.r.fail("checkpoint", where, "checkpoint sizes must be strictly ascending")
        try:
            root = b64decode_strict(obj.get("root"), "root", 32)
            note = obj.get("note")
            if not isinstance(note, str):
                raise NoteError("note must be a string")
        except NoteError as e:
            self.r.fail("checkpoint", where, str(e))
            return
        # The note's signature is checked once the log key is known (start_events): the key
        # comes from the anchors' log key proofs, which follow the checkpoints.
        self.cps[size] = root
        self.max_cp = max(self.max_cp, size)
        self.cp_notes[size] = note
        self.cp_records[size] = (root, note, where)

    def consistency(self, n: int, obj: JSONObject) -> None:
        a, b = obj.get("from"), obj.get("to")
        where = f"consistency {a}->{b} (line {n})"
        # Integers (bundle-format.md): 5.0 or true equal a size as dict keys, but are not sizes.
        if type(a) is not int or type(b) is not int or a not in self.cps or b not in self.cps:
            self.r.fail("consistency", where, "from/to are not verified checkpoint sizes")
            return
        try:
            proof = obj.get("proof")
            if not isinstance(proof, list) or len(proof) > 128:
                raise ProofError("proof must be a list of base64 hashes")
            hashes = [b64decode_strict(p, "proof hash", 32) for p in proof]
            verify_consistency(a, b, self.cps[a], self.cps[b], hashes)
        except (ProofError, NoteError) as e:
            self.r.fail("consistency", where, str(e))
            return
        self._consistent.add((a, b))

    def anchor(self, n: int, obj: JSONObject) -> None:
        size = obj.get("checkpoint_size")
        where = f"anchor of checkpoint {size} (line {n})"
        if type(size) is not int or size not in self.cps:
            self.r.fail("anchor", where, "checkpoint_size is not a verified checkpoint of this bundle")
            return
        root = self.cps[size]
        try:
            a = verify_evidence(obj.get("evidence"))
        except EvidenceError as e:
            self.r.fail(e.check, where, str(e))
            return
        problems = []
        if a.log_id != hashlib.sha256(self.origin.encode("utf-8")).digest():
            problems.append(("anchor.log_id", "log_id is not SHA-256 of the origin"))
        if a.tree_size != size or a.root_hash != root:
            problems.append(("anchor.checkpoint", "anchored (tree_size, root_hash) differ from the checkpoint"))
        if a.cid != obj.get("cid"):
            problems.append(("anchor.cid", "anchored cid differs from the record's cid"))
        if self.o.chain_id is not None and a.chain_id != self.o.chain_id:
            problems.append(("anchor.chain_id", f"chain id {a.chain_id} is not the trusted {self.o.chain_id}"))
        if self.o.contract is not None and a.contract != self.o.contract:
            problems.append(("anchor.contract", f"contract 0x{a.contract.hex()} is not the trusted contract"))
        if not 0 <= a.block_timestamp < MAX_BLOCK_TIME:
            problems.append(("anchor.timestamp", f"block timestamp {str(a.block_timestamp)[:30]} is not a time before "
                                                 "the year 10000"))
        # Confirmed: every confirmation the user asked for holds (docs/verifier.md, "Anchors and
        # coverage"): with trusted block hashes, its block is one of them; with --rpc, the node
        # confirms it. An anchor in another block is unconfirmed (it counts for nothing, the
        # events it covers may still be covered by a later confirmed anchor); a failed online
        # check is a finding.
        confirmed_by: list[str] = []
        in_trusted = a.block_hash in self.o.trusted_block_hashes
        if in_trusted:
            confirmed_by.append("trusted block hash")
            self.trusted_hashes_used.add(a.block_hash)
        if self.o.online_block_check:
            err = self.o.online_block_check(a)
            if err:
                problems.append(("anchor.online", err))
            else:
                confirmed_by.append("online")
        if self.o.trusted_block_hashes and not in_trusted:
            confirmed_by = []
        if "manifest" in obj:
            try:
                manifest = base64.b64decode(obj["manifest"], validate=True) if isinstance(obj["manifest"], str) else None
                if manifest is None:
                    raise CIDError("manifest must be base64")
                check_content(a.cid, manifest)
                m = json.loads(manifest)
                if not isinstance(m, dict) or m.get("checkpoint") != self.cp_notes[size]:
                    raise CIDError("manifest's checkpoint member is not this checkpoint's note")
                if m.get("version") == 2:
                    self.manifest_runs[size] = m.get("runs")
            except (CIDError, ValueError) as e:
                problems.append(("anchor.manifest", str(e)))
        for check, msg in problems:
            self.r.fail(check, where, msg)
        if problems:
            return
        if size <= self.last_listed_anchor:
            self.r.fail("anchor", where, "anchors must be in ascending checkpoint size")
            return
        self.last_listed_anchor = size
        ev = obj["evidence"]  # an object: verify_evidence accepted it
        self.pending_anchors.append((size, a, where, confirmed_by, str(ev.get("log_index"))))

    def _settle_anchors(self) -> None:
        """Anchors whose checkpoint verified, in order: listed with their status; confirmed ones
        count for coverage and times; their log key proofs gave the log key (_derive_log_keys)."""
        for size, a, where, confirmed_by, log_index in self.pending_anchors:
            if size not in self.cps:
                self.r.fail("anchor", where, "its checkpoint did not verify")
                continue
            status = f"confirmed ({' and '.join(confirmed_by)})" if confirmed_by else "unconfirmed"
            self.r.anchors.append({
                "checkpoint_size": size,
                "chain_id": a.chain_id if self.o.chain_id is not None else f"{a.chain_id} (claimed: chain id not pinned)",
                "contract": "0x" + a.contract.hex() + ("" if self.o.contract is not None else " (claimed: contract not pinned)"),
                "block_number": a.block_number, "block_hash": "0x" + a.block_hash.hex(),
                "block_timestamp": a.block_timestamp,
                "tx_hash": "0x" + a.tx_hash.hex() + " (claimed locator, not proven)",
                "log_index": f"{log_index} (claimed locator, not proven)",
                "cid": a.cid, "status": status,
                "log_key": ("0x" + a.log_key.hex()) if a.log_key is not None else "not proven (no log key proof)",
                "contract_code": (KNOWN_CODE_HASHES.get(a.code_hash, "unknown code 0x" + a.code_hash.hex())
                                  if a.code_hash is not None else "not proven (no log key proof)"),
            })
            if status == "unconfirmed":
                continue  # listed, but counts for nothing (not coverage, not delay, not any rule)
            self.anchor_sizes.append(size)
            self.anchor_times.append(a.block_timestamp)
        unconfirmed = [x["checkpoint_size"] for x in self.r.anchors if x["status"] == "unconfirmed"]
        if unconfirmed and self.anchor_sizes:
            self.r.warnings.append(
                f"{len(unconfirmed)} anchor(s) of this bundle are unconfirmed (checkpoint(s) "
                f"{', '.join(map(str, unconfirmed[:5]))}{' ...' if len(unconfirmed) > 5 else ''}): each event's anchoring "
                "time is that of the first confirmed anchor after it, an upper bound; confirm them too "
                "(--trusted-block-hash for their blocks, or --rpc) to prove tighter times")

    def _derive_log_keys(self) -> None:
        """The trusted log keys: the contract's logKey at each confirmed anchor's block (its log key
        proof, from a contract whose code this verifier knows), and any pinned key, which must
        agree (docs/verifier.md, "What is trusted")."""
        r = self.r
        chain: dict[bytes, list[int]] = {}
        unproven_code = []
        for size, a, where, confirmed_by, _ in self.pending_anchors:
            if not confirmed_by:
                continue
            if a.code_hash is None:
                unproven_code.append(a.block_number)
                continue
            if a.code_hash not in KNOWN_CODE_HASHES:
                r.fail("anchor.contract_code", where, f"the contract's code hash 0x{a.code_hash.hex()} is not a "
                       "ProvenanceAnchor version this verifier knows: its storage and its append-only rule are unknown")
                confirmed_by.clear()  # an unknown contract proves nothing this verifier can read
                continue
            if a.log_key is not None:
                chain.setdefault(a.log_key, []).append(a.block_number)
                self.anchor_keys.append((size, a.log_key, a.block_number))
        for h in sorted(self.o.trusted_block_hashes - self.trusted_hashes_used):
            r.warnings.append(f"trusted block hash 0x{h.hex()} is not the block of any anchor in this bundle")
        if unproven_code:
            r.warnings.append(f"anchor block(s) {', '.join(map(str, unproven_code[:5]))}: the evidence carries no log "
                              "key proof, so the contract's code (and with it that the chain refuses a history that is "
                              "not append-only) and the log key are not proven from them")
        keys: dict[bytes, VerifierKey] = {pub: VerifierKey.from_public_key(self.origin, pub) for pub in chain}
        sources = [f"the contract's storage at block(s) {', '.join(map(str, blocks[:5]))}"
                   f"{' ...' if len(blocks) > 5 else ''} (log key proof of a confirmed anchor)" for blocks in chain.values()]
        for k, src in zip(self.o.log_keys, self.o.log_key_sources or ["given by the caller"] * len(self.o.log_keys),
                          strict=True):
            if chain and k.public_key not in chain:
                r.fail("log_key", src, f"the pinned log key {k.vkey()} is not the key the contract holds for this log "
                       f"({', '.join(v.vkey() for v in keys.values())})")
            if k.public_key in keys:
                i = list(keys).index(k.public_key)
                sources[i] += f", and pinned: {src}"
            else:
                keys[k.public_key] = k
                sources.append(f"pinned: {src}")
        self.log_keys = list(keys.values())
        if not self.log_keys:
            r.fail("log_key", "bundle", "no log key is proven: no confirmed anchor carries a log key proof (confirm one "
                   "with --trusted-block-hash or --rpc, or pin the log key with --log-key)")
        elif self.header_log_pub not in keys:
            r.warnings.append("the bundle header's log key differs from the proven/pinned log key "
                              f"(header: {VerifierKey.from_public_key(self.origin, self.header_log_pub).vkey()})")
        r.trusted["log_keys"] = [k.vkey() for k in self.log_keys]
        r.trusted["log_keys_source"] = "; ".join(sources) or "none"

    def keys_for_size(self, size: int) -> tuple[list[VerifierKey], str | None]:
        """The log key(s) that must sign a statement about tree size `size` (a checkpoint, a
        run-index note; a key event at index i speaks for size i + 1): the key the contract held
        at the first confirmed anchor at or above that size, so that a key rotated away before it
        (or never registered) signs nothing (contract.md: checkpoints anchored up to a rotation's
        fromSize stay under the old key). With no such anchor: any trusted key. Also says which
        anchor decided, for the finding."""
        k = bisect.bisect_left(self.anchor_keys, (size, b""))
        if k == len(self.anchor_keys):
            return self.log_keys, None
        _, pub, block = self.anchor_keys[k]
        return [VerifierKey.from_public_key(self.origin, pub)], f"the key the contract held at block {block}"

    def _verify_checkpoints(self) -> None:
        """Each checkpoint note against the log key in force for its size (linear in the number
        of checkpoints)."""
        for size in sorted(self.cp_records):
            root, note, where = self.cp_records[size]
            keys, which = self.keys_for_size(size)
            try:
                try:
                    cp = verify_checkpoint(note, keys)
                except NoteError:
                    if which is not None and len(self.log_keys) > 1:
                        try:
                            verify_checkpoint(note, self.log_keys)
                        except NoteError:
                            pass
                        else:
                            raise NoteError(f"signed by a log key other than {which}, the anchor that covers this size: "
                                            "a rotated-away or unregistered log key") from None
                    raise
                if cp.origin != self.origin:
                    raise NoteError(f"note origin {cp.origin!r} differs from the header's {self.origin!r}")
                if cp.size != size or cp.root != root:
                    raise NoteError("note size/root differ from the record's size/root")
            except NoteError as e:
                self.r.fail("checkpoint", where, str(e))
                del self.cps[size]
                continue
            self.r.checkpoints.append({"size": size, "root": base64.b64encode(root).decode(), "signed_by": cp.signed_by})

    def _derive_producers(self) -> None:
        """Producer keys and their log positions from the key events (docs/keys.md), and pins."""
        r = self.r
        final = max(self.cps) if self.cps else 0
        kev = KeyEvents(self.header_log_id)
        derived: dict[str, tuple[bytes, int, int | None]] = {}
        problems: list[tuple[str, str]] = []
        if self.keys_obj is not None and self.cps:
            n, obj = self.keys_obj
            try:
                kev.read_record(obj, self.keys_for_size(final)[0], self.origin, final)
            except KeyEventsError as e:
                problems.append((f"keys record (line {n})", str(e)))
            def log_keys(index: int) -> dict[str, bytes]:  # a key event at index i speaks for size i + 1
                return {hashlib.sha256(k.public_key).hexdigest(): k.public_key for k in self.keys_for_size(index + 1)[0]}

            for n, obj in self.key_event_objs:
                try:
                    kev.add(obj, log_keys, final, self.cps[final])
                except KeyEventsError as e:
                    problems.append((f"key_event (line {n})", str(e)))
            if kev.record.record is not None:
                problems += [("keys", msg) for msg in kev.differences()]
        elif self.key_event_objs:
            problems.append(("keys", "key_event records without a keys record: that none is left out is not proven"))
        for where, msg in problems:
            r.fail("keys", where, msg)
        if not problems and kev.record.record is not None:
            derived = {k.key_id: (k.public_key, k.registered, k.revoked) for k in kev.keys.values()}
        sources = []
        if self.o.producer_keys:
            for pub, src in zip(self.o.producer_keys,
                                self.o.producer_key_sources or ["given by the caller"] * len(self.o.producer_keys), strict=True):
                kid = hashlib.sha256(pub).hexdigest()
                if kid in derived:
                    self.producer_map[kid] = derived[kid]
                    sources.append(f"{kid[:16]}..: registered in the log's key events and pinned ({src})")
                else:
                    self.producer_map[kid] = (pub, LEGACY, None)
                    sources.append(f"{kid[:16]}..: pinned ({src}); not registered in the log's key events, so its "
                                   "registration and revocation are not proven")
        else:
            self.producer_map = derived
            if derived:
                sources.append(f"{len(derived)} key(s) registered in the log's key events (run rlhf-ledger:keys, complete "
                               f"to tree size {final} by its run-index record, signed by the proven log key)")
        if not self.producer_map:
            r.fail("producer_key", "bundle", "no producer key is proven: the bundle carries no complete key events "
                   "(re-export it, or run `rlhf-ledger migrate-keys` on the log) and no --producer-key is pinned")
        r.trusted["producer_keys"] = sorted(self.producer_map)
        r.trusted["producer_keys_source"] = "; ".join(sources) or "none"
        r.producer_keys = [
            {"key_id": kid, "registered_at_index": None if reg == LEGACY else reg, "legacy": reg == LEGACY,
             "revoked_at_index": rev} for kid, (_, reg, rev) in sorted(self.producer_map.items())]

    # ---- events -----------------------------------------------------------------------------

    def start_events(self) -> None:
        # Trust, in dependency order: confirmed anchors give the log key; the log key verifies
        # the checkpoints and the key events; the key events give the producer keys.
        self._derive_log_keys()
        self._verify_checkpoints()
        self._settle_anchors()
        sizes = sorted(self.cps)
        consistent = self._consistent
        for a, b in itertools.pairwise(sizes):
            if (a, b) not in consistent:
                self.r.fail("consistency", f"checkpoints {a}->{b}", "no verified consistency proof between successive checkpoints")
        self._derive_producers()
        if self.run_obj is not None:
            self.run_record(*self.run_obj)
        self.max_anchored = self.anchor_sizes[-1] if self.anchor_sizes else 0
        self.final_size = sizes[-1] if sizes else 0
        # Per-run facts (compliance, completeness, released weights) are kept for a run bundle's
        # own run only: an event or range bundle is a window of the log whose rules are not
        # assessed, so memory per run stays one chain state per producer (docs/verifier.md).
        self.fact_run = self.scope[1] if self.scope is not None and self.scope[0] == "run" else None
        self.state = "events"

    def fold(self, res: worker.LineResult) -> None:
        r = self.r
        self.records += 1
        if self.end_seen:
            r.fail("structure", f"line {res[1]}", "record after the end record")
            return
        if res[0] == "error":
            raise BundleReadError(res[2])
        if res[0] == "record":
            obj = res[2]
            if "_duplicate_key" in obj:
                r.fail("json.duplicate_key", f"line {res[1]}", obj["_duplicate_key"])
            if obj["kind"] == "end":
                self.records -= 1
                self.end(res[1], obj)
            else:
                r.fail("structure", f"line {res[1]}", f"{obj['kind'][:40]!r} record among the events")
            return
        if res[0] == "leaf":
            _, line, index, h, errors = res
            r.leaves += 1
            for check, msg in errors:
                r.fail(check, f"leaf {index} (line {line})", msg)
            self._place(index, h, line)
            return
        if res[3] is None:  # the envelope failed its schema: the event has no id and was read no further
            _, line, index, *_, errors = res
            r.events += 1
            self.event_count += 1
            where = _ev_where(index, None, line)
            for check, msg in errors:
                r.fail(check, where, msg)
            self._place(index, None, line, None)
            return
        (_, line, index, eid, lh, run_id, producer, seq, prev, ts_epoch, typ, body, points, errors) = res
        r.events += 1
        self.event_count += 1
        # `where` is formatted only when something failed (most events pass).
        if errors:
            where = _ev_where(index, eid, line)
            for check, msg in errors:
                r.fail(check, where, msg)
        if self.mode == "tree":
            self._place(index, lh, line, eid)
        else:
            if index is not None and index <= self.last_index:
                r.fail("order", _ev_where(index, eid, line), f"index {index} does not follow {self.last_index} (must ascend)")
            if index is not None:
                self.last_index = index
        sc = self.scope
        if sc is not None:
            if sc[0] == "run":
                if run_id != sc[1]:
                    r.fail("scope", _ev_where(index, eid, line),
                           f"run {run_id[:40]!r} is outside the declared run scope {sc[1][:40]!r}")
                    errors = errors + [("scope", "outside the declared scope")]
            elif index is not None and not sc[1] <= index < sc[2]:
                r.fail("scope", _ev_where(index, eid, line),
                       f"index {index} is outside the declared {sc[0]} scope [{sc[1]}, {sc[2]})")
                errors = errors + [("scope", "outside the declared scope")]
        chain_err, back = self.chains.step(run_id, producer, seq, prev, eid, ts_epoch)
        fact_run = run_id == self.fact_run
        if fact_run and index is not None:
            self.run_check.feed(index, lh, producer, seq, eid, typ)
        if chain_err:
            r.fail("seq_chain", _ev_where(index, eid, line), chain_err)
            errors = errors + [("seq_chain", chain_err)]
        if back:
            r.fail("clock", _ev_where(index, eid, line), back)
            errors = errors + [("clock", back)]
        anchored = index is not None and index < self.max_anchored
        delay = None
        if index is not None:
            k = bisect.bisect_right(self.anchor_sizes, index)
            if k < len(self.anchor_sizes):
                delay = self.anchor_times[k] - ts_epoch
        extra = clock.event_findings(self, index, producer, ts_epoch, delay, anchored)
        for check, msg in extra:
            r.fail(check, _ev_where(index, eid, line), msg)
        if extra:
            errors = errors + extra
        valid = not errors
        if valid:
            r.events_valid += 1
        if anchored:
            r.events_anchored += 1
        if fact_run:  # per-run facts only for a run bundle's run (the rules are assessed on nothing else)
            self.collector.feed(index if index is not None else -1, eid, run_id, typ, body if body is not None else {},
                                valid, anchored, delay)
        elif typ == "human.review" and body is not None:  # still listed in the reports (bounded)
            self.collector.review_only(index if index is not None else -1, eid, run_id, body, valid)
        if points:
            step = points[0]
            series = self._series.get(typ)
            if series is None:
                series = self._series[typ] = [None] * len(worker.SERIES_KEYS)
            for i, v in enumerate(points[1:-1]):
                if v is not None:
                    s = series[i]
                    if s is None:  # created at its first point: a value never logged shows no series
                        s = series[i] = r.series.setdefault(f"{typ.split('.')[0]}.{worker.SERIES_KEYS[i]}", Series())
                    s.add(step, v)
            if points[-1] is not None and fact_run:  # a DP-SGD update (event-types.md)
                self.collector.dp_update(run_id, index if index is not None else -1, eid, points[-1], not errors)

    def _place(self, index: int | None, h: bytes | None, line: int, eid: bytes | None | Literal[False] = False) -> None:
        """Tree mode: leaves must come as 0, 1, 2, ...; roots are checked at checkpoint sizes.
        `eid` False: a leaf record; else the event's id (or None), for the failure's place."""
        if self.mode != "tree":
            return
        if index != self.next_index:
            where = f"leaf {index} (line {line})" if eid is False else _ev_where(index, eid, line)
            self.r.fail("order", where, f"expected leaf index {self.next_index} (tree mode lists every leaf in order)")
        self.next_index = (index if index is not None else self.next_index) + 1
        self.tree.append(h if h is not None else b"\x00" * 32)
        size = self.tree.size
        root = self.cps.get(size)
        if root is not None and self.tree.root() != root:
            self.r.fail("inclusion", f"checkpoint {size}", "recomputed tree root differs from the checkpoint root")

    # ---- completeness of a run (docs/run-index.md) -------------------------------------------

    def run_record(self, n: int, obj: JSONObject) -> None:
        where = f"run record (line {n})"
        if self.scope is None or self.scope[0] != "run":
            return  # a window of the log claims no run's completeness: the record is not used
        try:
            keys = self.keys_for_size(max(self.cps))[0] if self.cps else self.log_keys
            self.run_check.read_record(obj, keys, self.origin, self.scope[1])
        except CompletenessError as e:
            self.r.fail("completeness", where, str(e))

    def _finish_completeness(self) -> None:
        r, rc = self.r, self.run_check
        if self.scope is None or self.scope[0] != "run":
            r.completeness = {"status": "not claimed",
                              "detail": "an event or range bundle is a window of the log: that it holds every event "
                                        "of a run is not claimed"}
            return
        if rc.record is None:
            if not rc.seen_record:
                r.fail("completeness", "bundle", "a run bundle must carry a run record (the log's signed run index): "
                       "without it, that no event of the run was left out is not proven")
            r.completeness = {"status": "not proven", "detail": "no valid run record"}
            return
        assert rc.size is not None  # read_record sets the size with the record
        problems: list[str] = []
        # The record must speak for the bundle's newest checkpoint: one of an older size would
        # let an exporter show a prefix of the run and prove only that prefix complete.
        newest = max(self.cps) if self.cps else 0
        if rc.size != newest:
            problems.append(f"the run record is for tree size {rc.size}, the bundle's newest checkpoint is {newest}")
        anchored_note = self.manifest_runs.get(rc.size)
        if rc.size in self.manifest_runs and anchored_note != rc.note:
            problems.append(f"the anchored manifest of checkpoint {rc.size} carries a different run index")
        problems += rc.differences()
        for msg in problems:
            r.fail("completeness", f"run {self.scope[1][:40]!r}", msg)
        r.completeness = {
            "status": "failed" if problems else "proven",
            "run_id": self.scope[1], "size": rc.size, "events": rc.record["events"], "ended": rc.record["ended"],
            "producers": len(rc.record["producers"]),
            "anchored_statement": rc.size in self.manifest_runs,
            "detail": ("the bundle holds every event the log had for this run at tree size "
                       f"{rc.size} (the log's signed run index" + (", anchored in the manifest" if rc.size in self.manifest_runs else "")
                       + ")" + ("; the run was closed by its run.end, so no later event can exist" if rc.record["ended"] else
                                "; the run was still open: later events may exist"))
            if not problems else "; ".join(problems),
        }

    def end(self, line: int, obj: JSONObject) -> None:
        self.end_seen = True
        if obj.get("events") != self.event_count or obj.get("records") != self.records:
            self.r.fail("truncation", f"end record (line {line})",
                        f"counts events={obj.get('events')} records={obj.get('records')} differ from what was read "
                        f"(events={self.event_count}, records={self.records}): truncated or spliced bundle")

    def record_end_missing(self) -> None:
        if self.state == "header":
            raise CannotRun("the bundle is empty (no header)")
        if self.state != "events":
            self.start_events()

    def finish(self) -> Result:
        r = self.r
        if not self.end_seen:
            r.fail("truncation", "end of file", "no end record: the bundle is truncated")
        # The checkpoint the events are proven against: the first one after the last event
        # (inclusion mode) or the one the listed leaves end at (tree mode). Later checkpoints are
        # anchored ones the bundle ties in by consistency proofs (docs/bundle-format.md).
        sizes = sorted(self.cps)
        if self.mode == "tree" and self.tree.size in self.cps:
            self.final_size = self.tree.size
        elif self.mode == "inclusion" and sizes:
            self.final_size = next((c for c in sizes if c > self.last_index), sizes[-1])
        if self.mode == "tree" and self.tree.size != self.final_size:
            r.fail("inclusion", f"checkpoint {self.final_size}",
                   f"tree mode lists {self.tree.size} leaves, which is not the size of a checkpoint of the bundle")
        if self.mode == "inclusion" and self.last_index >= 0 and self.last_index >= getattr(self, "final_size", 0):
            r.fail("inclusion", f"event {self.last_index}", "index beyond the final checkpoint")
        r.producer_chains = self.chains.pairs()
        self._finish_completeness()
        for run_id, facts in self.collector.runs.items():
            if facts.end_count == 1:
                ref, body = facts.ends[0]
                r.released[run_id] = (ref.index, body.get("released_weights_digest"))
        _nonvacuous(self)
        r.reviews, r.reviews_runs_omitted = review_listing({**self.collector.review_runs, **self.collector.runs}, r.released)
        r.reviews_records_omitted = self.collector.review_records_omitted
        if self.o.rules:
            r.rule_set = resolve(self.o.rules)
            results = evaluate(self.o.rules, self.collector, r.not_assessed)
            r.compliance = [x.as_json() for x in results] if results is not None else None
        if self.o.rules and not r.not_assessed:
            for run_id, facts in self.collector.runs.items():
                r.privacy_series[run_id] = facts.privacy_points
                if facts.start_count == 1:
                    decl = facts.starts[0][1].get("declared")
                    b = decl.get("privacy_budget") if isinstance(decl, dict) else None
                    if isinstance(b, dict) and type(b.get("epsilon")) in (int, float):
                        r.privacy_budgets[run_id] = float(b["epsilon"])
        return r


def _nonvacuous(v: Verifier) -> None:
    """No vacuous success (docs/verifier.md, "What VALID means")."""
    r = v.r
    if not v.cps:
        r.fail("vacuous", "bundle", "no checkpoint signed by a trusted log key: nothing is proven")
    if r.events == 0:
        r.fail("vacuous", "bundle", "no event in scope: nothing is proven")
    if v.scope is not None and v.scope[0] == "run":
        facts = v.collector.runs.get(v.scope[1])
        if facts is None or not facts.events:
            r.fail("scope", "header.scope", f"run {v.scope[1][:40]!r} has no events in this bundle")
        elif not facts.start_count:
            r.fail("scope", "header.scope", f"run {v.scope[1][:40]!r} has no run.start record in this bundle")
    if v.o.rules:
        if v.scope is None:
            r.not_assessed = "the bundle's scope is malformed, so the run-scoped rules cannot be assessed"
        elif v.scope[0] != "run":
            r.not_assessed = (f"a {v.scope[0]} bundle is a window of the log: it cannot show a whole run, so the "
                              f"run-scoped rule set {resolve(v.o.rules)} was not assessed (ask for a run bundle)")


def verify_file(path: str, opts: Options) -> Result:
    if opts.rules and opts.rules not in RULE_SETS:
        raise CannotRun(f"unknown rule set {opts.rules!r} (known: {', '.join(sorted(RULE_SETS))})")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CannotRun(f"cannot open {path}: {e.strerror}") from None
    with f:
        try:
            total = os.fstat(f.fileno()).st_size
        except OSError:
            total = 0
        try:
            return Verifier(opts).run(f, total)
        except OSError as e:
            raise CannotRun(f"cannot read {path}: {e}") from None
