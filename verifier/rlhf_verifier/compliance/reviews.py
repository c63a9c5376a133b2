"""A run's `human.review` records (docs/event-types.md), kept for the `human-oversight` rule and
for the reports, in memory bounded per run whatever the number of reviews."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, TypeAlias, TypedDict

from ..jsontypes import JSONObject
from ..listings import Released

if TYPE_CHECKING:
    from .collect import Ref, RunFacts

SHOWN_CAP = 20  # reviews listed per run in the reports (the count is always exact)
REFS_CAP = 20  # approvals / rejections kept per subject as evidence (the earliest, in log order)
SUBJECT_CAP = 256  # distinct subjects tracked per run; more is a documented limit, never a guess
RUNS_SHOWN = 100  # runs whose reviews the reports list (a window of the log may touch very many)
APPROVE, REJECT = "approve", "reject"


def _text(x: Any) -> bool:
    return isinstance(x, str) and bool(x.strip())


def subject_key(subject: str) -> str | bytes:
    """The key a subject is kept under: itself, or (as bytes, so it cannot equal a short
    subject) its SHA-256 when long: memory per subject stays bounded."""
    if len(subject) <= 128:
        return subject
    return hashlib.sha256(subject.encode("utf-8", "surrogatepass")).digest()


def notes_form(notes: Any) -> str:
    """How the notes are recorded (their text is never shown: it may be personal)."""
    if notes is None:
        return "none"
    if isinstance(notes, dict) and set(notes) == {"$commitment"}:
        return "committed"
    return "in the event"


@dataclass(slots=True)
class SubjectReviews:
    approvals: list[tuple[Ref, str]] = field(default_factory=list)  # (ref, reviewer), earliest first
    approval_count: int = 0
    rejections: list[tuple[Ref, str]] = field(default_factory=list)  # (ref, reviewer)
    rejection_count: int = 0
    invalid: list[Ref] = field(default_factory=list)  # reviews of this subject failing integrity checks


# (ref, reviewer, decision, subject, subject key, notes form, valid, problem); reviewer, decision
# and subject as signed (any JSON), strings cut to 200 characters.
ShownReview: TypeAlias = tuple["Ref", Any, Any, Any, str | bytes | None, str, bool, str | None]


@dataclass(slots=True)
class Reviews:
    count: int = 0
    shown: list[ShownReview] = field(default_factory=list)
    malformed: list[tuple[Ref, str]] = field(default_factory=list)  # (ref, problem)
    malformed_count: int = 0
    by_subject: dict[str | bytes, SubjectReviews] = field(default_factory=dict)  # subject_key(subject) -> reviews
    untracked: int = 0  # reviews whose subject was not kept (more than SUBJECT_CAP subjects)

    def add(self, ref: Ref, body: JSONObject, valid: bool) -> None:
        self.count += 1
        # Body members as signed (any JSON): _text checks them, which a type checker does not follow.
        reviewer: Any = body.get("reviewer")
        decision: Any = body.get("decision")
        subject: Any = body.get("subject")
        problem = None
        if not (_text(reviewer) and _text(decision) and _text(subject)):
            problem = "needs reviewer, decision and subject (non-empty strings)"
            self.malformed_count += 1
            if len(self.malformed) < REFS_CAP:
                self.malformed.append((ref, problem))
        key = subject_key(subject) if problem is None else None
        if len(self.shown) < SHOWN_CAP:
            self.shown.append((ref, _short(reviewer), _short(decision), _short(subject), key,
                               notes_form(body.get("notes")), valid, problem))
        if key is None:
            return
        s = self.by_subject.get(key)
        if s is None:
            if len(self.by_subject) >= SUBJECT_CAP:
                self.untracked += 1
                return
            s = self.by_subject[key] = SubjectReviews()
        if not valid:
            if len(s.invalid) < REFS_CAP:
                s.invalid.append(ref)
        elif decision == APPROVE:
            s.approval_count += 1
            if len(s.approvals) < REFS_CAP:
                s.approvals.append((ref, reviewer[:200]))
        elif decision == REJECT:
            s.rejection_count += 1
            if len(s.rejections) < REFS_CAP:
                s.rejections.append((ref, reviewer[:200]))


def _short(x: Any) -> Any:
    return x[:200] if isinstance(x, str) else x


class ReviewListing(TypedDict):
    """One human.review as the reports list it (the notes' text never: it may be personal)."""
    index: int
    event_id: str
    reviewer: Any
    decision: Any
    subject: Any
    notes: str  # none | committed | in the event
    names_released_weights: bool
    passed_integrity_checks: bool
    problem: NotRequired[str]


class ReviewedRun(TypedDict):
    run_id: str
    count: int
    reviews: list[ReviewListing]


def _listed(shown: ShownReview, dkey: str | bytes | None) -> ReviewListing:
    ref, who, decision, subject, key, notes, valid, problem = shown
    v: ReviewListing = {"index": ref.index, "event_id": ref.event_id.hex(), "reviewer": who, "decision": decision,
                        "subject": subject, "notes": notes, "names_released_weights": dkey is not None and key == dkey,
                        "passed_integrity_checks": valid}
    if problem:
        v["problem"] = problem
    return v


def listing(runs: Mapping[str, RunFacts], released: Mapping[str, Released]) -> tuple[list[ReviewedRun], int]:
    """The reports' "human reviews": per run with reviews (the first RUNS_SHOWN runs by id), the
    count and the first reviews, each saying whether it names that run's released weights
    (`released`: run id -> (index, released_weights_digest)); and how many more runs had reviews."""
    out: list[ReviewedRun] = []
    omitted = 0
    for run_id in sorted(runs):
        rv = runs[run_id].reviews
        if rv is None:
            continue
        if len(out) >= RUNS_SHOWN:
            omitted += 1
            continue
        digest = released.get(run_id, (None, None))[1]
        dkey = subject_key(digest) if isinstance(digest, str) and digest else None
        out.append({"run_id": run_id, "count": rv.count, "reviews": [_listed(x, dkey) for x in rv.shown]})
    return out, omitted
