"""Streams verified events and keeps what the rules need, in memory bounded by the number of
runs and datasets and by capped evidence lists, not by the number of events.

The verifier feeds it only the events of a run bundle's own run (docs/verifier.md,
"Performance"): every list here is capped, every count is a number.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

from ..jsontypes import JSONObject
from ..privacy import RdpAccountant
from .reviews import RUNS_SHOWN, Reviews

EVIDENCE_CAP = 20
GUIDELINE_VERSIONS_CAP = 100  # distinct guideline versions listed per run (more are counted, not listed)


T = TypeVar("T")


def capped_append(lst: list[T], item: T, cap: int = EVIDENCE_CAP) -> None:
    if len(lst) < cap:
        lst.append(item)


class RefJSON(TypedDict):
    index: int
    event_id: str  # hex


@dataclass(slots=True)
class Ref:
    index: int
    event_id: bytes  # raw SHA-256 of the event's JCS bytes

    def as_json(self) -> RefJSON:
        return {"index": self.index, "event_id": self.event_id.hex()}


@dataclass(slots=True)
class RunFacts:
    run_id: str
    starts: list[tuple[Ref, JSONObject]] = field(default_factory=list)  # the first EVIDENCE_CAP run.start records (body)
    start_count: int = 0
    ends: list[tuple[Ref, JSONObject]] = field(default_factory=list)  # the first EVIDENCE_CAP run.end records (body)
    end_count: int = 0
    events: int = 0
    invalid_events: list[Ref] = field(default_factory=list)
    annotation_ok: int = 0
    annotation_bad: list[tuple[Ref, str]] = field(default_factory=list)
    annotation_bad_count: int = 0
    guideline_versions: set[str] = field(default_factory=set)
    guideline_versions_more: bool = False  # more distinct versions than GUIDELINE_VERSIONS_CAP
    evaluations: list[Ref] = field(default_factory=list)
    evaluation_count: int = 0
    evaluations_invalid: list[Ref] = field(default_factory=list)
    compute: list[tuple[Ref, str, float]] = field(default_factory=list)
    compute_count: int = 0
    compute_seconds: float = 0.0
    compute_bad: list[tuple[Ref, str]] = field(default_factory=list)
    compute_bad_count: int = 0
    last_checkpoint: tuple[Ref, str] | None = None
    last_anchored_checkpoint: tuple[Ref, str] | None = None
    last_reward_save: tuple[Ref, str] | None = None  # reward_model.save: a reward run's released weights
    last_anchored_reward_save: tuple[Ref, str] | None = None
    reviews: Reviews | None = None  # human.review records, created at the first one
    privacy: RdpAccountant | None = None  # created at the first spend (memory per run stays small)
    privacy_exceeded: list[Ref] = field(default_factory=list)
    privacy_exceeded_count: int = 0
    privacy_understated: list[tuple[Ref, float, float, float]] = field(default_factory=list)  # ref, claim, delta, replay
    privacy_understated_count: int = 0
    dp_steps_recorded: int = 0  # max cumulative dp_steps of the run's valid DP-marked updates
    dp_steps_ref: Ref | None = None
    privacy_spends: int = 0
    privacy_bad: list[tuple[Ref, str]] = field(default_factory=list)
    privacy_bad_count: int = 0
    privacy_last_claim: tuple[Ref, float, float] | None = None  # (ref, claimed eps, delta)
    privacy_points: list[tuple[int, float]] = field(default_factory=list)  # (cumulative steps, claimed eps)
    privacy_steps: int = 0
    unanchored: list[Ref] = field(default_factory=list)
    unanchored_count: int = 0
    worst_delays: list[tuple[float, int, bytes]] = field(default_factory=list)  # min-heap of (delay, index, id)
    max_delay: float = -math.inf
    min_delay: float = math.inf
    negative_delays: int = 0


@dataclass(slots=True)
class DatasetFacts:
    """What the rules read of a dataset.register body (not the whole body): the members as
    signed, any JSON; the rules check their types."""
    ref: Ref
    source: Any
    licence: Any
    digest: Any
    size_bytes: Any
    records: Any


# The event types whose body feed() reads; for every other type the body is not needed (the
# worker processes do not send it back, to keep the per-event result small).
BODY_TYPES = frozenset(("run.start", "run.end", "dataset.register", "annotation.batch", "evaluation",
                        "compute.usage", "checkpoint.save", "privacy.spend", "reward_model.save",
                        "human.review"))


class Collector:
    def __init__(self) -> None:
        self.runs: dict[str, RunFacts] = {}
        self.datasets: dict[str, DatasetFacts] = {}
        self.dataset_dups: list[Ref] = []
        self.max_delta: float | None = None  # --max-delta
        # human.review records of runs the rules do not assess (an event or range bundle): listed
        # in the reports only, for at most RUNS_SHOWN runs (in log order); the rest are counted.
        self.review_runs: dict[str, RunFacts] = {}
        self.review_records_omitted = 0

    def review_only(self, index: int, event_id: bytes, run_id: str, body: JSONObject, valid: bool) -> None:
        r = self.review_runs.get(run_id)
        if r is None:
            if len(self.review_runs) >= RUNS_SHOWN:
                self.review_records_omitted += 1
                return
            r = self.review_runs[run_id] = RunFacts(run_id)
        if r.reviews is None:
            r.reviews = Reviews()
        r.reviews.add(Ref(index, event_id), body, valid)

    def dp_update(self, run_id: str, index: int, event_id: bytes, dp_steps: int, valid: bool) -> None:
        """A DP-SGD update recording the run's cumulative DP step count (event-types.md)."""
        r = self.run(run_id)
        if valid and dp_steps > r.dp_steps_recorded:
            r.dp_steps_recorded, r.dp_steps_ref = dp_steps, Ref(index, event_id)

    def run(self, run_id: str) -> RunFacts:
        r = self.runs.get(run_id)
        if r is None:
            r = self.runs[run_id] = RunFacts(run_id)
        return r

    def feed(self, index: int, event_id: bytes, run_id: str, typ: str, body: JSONObject, valid: bool,
             anchored: bool, delay: float | None) -> None:
        """One event. `valid`: passed every integrity check. `delay`: anchor block time minus event
        time (None if no anchor covers it)."""
        r = self.run(run_id)
        ref = Ref(index, event_id)
        r.events += 1
        if not valid:
            capped_append(r.invalid_events, ref)
        if delay is None:
            r.unanchored_count += 1
            capped_append(r.unanchored, ref)
        else:
            r.max_delay = max(r.max_delay, delay)
            if delay < 0:
                r.negative_delays += 1
                r.min_delay = min(r.min_delay, delay)
            item = (delay, index, event_id)
            if len(r.worst_delays) < EVIDENCE_CAP:
                heapq.heappush(r.worst_delays, item)
            elif item > r.worst_delays[0]:
                heapq.heapreplace(r.worst_delays, item)
        if typ == "run.start":
            r.start_count += 1
            capped_append(r.starts, (ref, body))
        elif typ == "run.end":
            r.end_count += 1
            capped_append(r.ends, (ref, body))
        elif typ == "dataset.register":
            did = body.get("dataset_id")
            if isinstance(did, str):
                if did in self.datasets:
                    capped_append(self.dataset_dups, ref)
                else:
                    g = body.get
                    self.datasets[did] = DatasetFacts(ref, g("source"), g("licence"), g("digest"), g("size_bytes"),
                                                      g("records"))
        elif typ == "annotation.batch":
            gv = body.get("guideline_version")
            if isinstance(gv, str) and gv.strip():
                r.annotation_ok += 1
                if len(r.guideline_versions) < GUIDELINE_VERSIONS_CAP:
                    r.guideline_versions.add(gv[:64])
                elif gv[:64] not in r.guideline_versions:
                    r.guideline_versions_more = True
            else:
                r.annotation_bad_count += 1
                capped_append(r.annotation_bad, (ref, "guideline_version missing or empty"))
        elif typ == "evaluation":
            r.evaluation_count += 1
            if valid and isinstance(body.get("name"), str) and isinstance(body.get("metrics"), dict) and body["metrics"]:
                capped_append(r.evaluations, ref)
            else:
                capped_append(r.evaluations_invalid, ref)
        elif typ == "compute.usage":
            secs: Any = body.get("seconds")  # any JSON: a number only by exact type (not a boolean)
            if isinstance(body.get("device"), str) and type(secs) in (int, float) and secs >= 0:
                r.compute_count += 1
                r.compute_seconds += secs
                capped_append(r.compute, (ref, body["device"], float(secs)))
            else:
                r.compute_bad_count += 1
                capped_append(r.compute_bad, (ref, "needs device (string) and seconds (number >= 0)"))
        elif typ == "checkpoint.save":
            wd = body.get("weights_digest")
            if isinstance(wd, str):
                r.last_checkpoint = (ref, wd)
                if anchored and valid:
                    r.last_anchored_checkpoint = (ref, wd)
        elif typ == "reward_model.save":
            wd = body.get("weights_digest")
            if isinstance(wd, str):
                r.last_reward_save = (ref, wd)
                if anchored and valid:
                    r.last_anchored_reward_save = (ref, wd)
        elif typ == "human.review":
            if r.reviews is None:
                r.reviews = Reviews()
            r.reviews.add(ref, body, valid)
        elif typ == "privacy.spend":
            self._privacy(r, ref, body)
        elif typ == "privacy.budget_exceeded":
            r.privacy_exceeded_count += 1
            capped_append(r.privacy_exceeded, ref)

    def _privacy(self, r: RunFacts, ref: Ref, body: JSONObject) -> None:
        # Body members as signed (any JSON): their types are checked here, by exact type (a
        # boolean is not a number), which a type checker does not follow.
        q: Any = body.get("sample_rate")
        sigma: Any = body.get("noise_multiplier")
        steps: Any = body.get("steps")
        eps: Any = body.get("epsilon")
        delta: Any = body.get("delta")
        num = (int, float)
        if (body.get("mechanism") != "poisson_subsampled_gaussian" or type(q) not in num or type(sigma) not in num
                or type(steps) is not int or not 0 <= q <= 1 or sigma < 0 or steps < 0):
            r.privacy_bad_count += 1
            capped_append(r.privacy_bad, (ref, "needs mechanism poisson_subsampled_gaussian, sample_rate in [0,1], "
                                               "noise_multiplier >= 0, integer steps >= 0"))
            return
        r.privacy_spends += 1
        r.privacy_steps += steps
        if r.privacy is None:
            r.privacy = RdpAccountant()
        if steps and q:  # zero steps or a zero sample rate add no privacy loss (not 0 * inf)
            try:
                r.privacy.compose(float(q), float(sigma), steps)
            except (OverflowError, ZeroDivisionError, ValueError):
                r.privacy_bad_count += 1
                capped_append(r.privacy_bad, (ref, f"noise_multiplier {sigma:.6g} / sample_rate {q:.6g} are outside "
                                                   "the range the accountant can evaluate"))
                return
        if type(eps) in num and type(delta) in num:
            if not 0 < delta < 1:
                r.privacy_bad_count += 1
                capped_append(r.privacy_bad, (ref, f"claimed delta {delta:.6g} is not in (0, 1)"))
                return
            # Each claim is checked at its own delta against the replay so far.
            try:
                replay = r.privacy.epsilon(float(delta))
            except (OverflowError, ValueError):
                replay = math.inf
            if eps < replay * (1 - 1e-6) - 1e-12:
                r.privacy_understated_count += 1
                capped_append(r.privacy_understated, (ref, float(eps), float(delta), replay))
            r.privacy_last_claim = (ref, float(eps), float(delta))
            r.privacy_points.append((r.privacy_steps, float(eps)))
            if len(r.privacy_points) > 1000:
                r.privacy_points = r.privacy_points[::2]
