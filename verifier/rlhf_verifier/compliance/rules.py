"""The `eu-ai-act` rule sets (docs/compliance-eu-ai-act.md): rules as data, each a small
function of one run's collected facts returning (status, detail, evidence).

Versions are frozen: `eu-ai-act@1` gives the same verdicts and evidence on the same bundle as
when it was the only version (tests/verifier/golden/); a change is a new version. The bare name
`eu-ai-act` means the newest (`LATEST`), and every report names the exact version evaluated."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypedDict

from ..jsontypes import JSONObject
from .collect import Collector, Ref, RunFacts
from .reviews import APPROVE, REJECT, subject_key

PASS, FAIL, NA = "pass", "fail", "not_applicable"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MIN_RETENTION_DAYS = 183  # six months (Art. 19(1) / Art. 26(6): logs kept at least six months)
Evidence: TypeAlias = dict[str, Any]  # a record's index and event id, and what the rule read of it (any JSON)
Outcome: TypeAlias = tuple[str, str, list[Evidence]]  # (status, detail, evidence)


class RunOutcome(TypedDict):
    run_id: str | None  # None: every run (a window of the log, or no run at all)
    status: str
    detail: str
    evidence: list[Evidence]


class RuleResultJSON(TypedDict):
    id: str
    title: str
    reference: str
    status: str
    runs: list[RunOutcome]


@dataclass
class RuleResult:
    id: str
    title: str
    reference: str
    status: str
    per_run: list[RunOutcome] = field(default_factory=list)

    def as_json(self) -> RuleResultJSON:
        return {"id": self.id, "title": self.title, "reference": self.reference, "status": self.status,
                "runs": self.per_run}


def _ev(ref: Ref, **values: Any) -> Evidence:
    return {**ref.as_json(), **values}


def _declared(r: RunFacts) -> JSONObject:
    if r.start_count != 1:
        return {}
    d = r.starts[0][1].get("declared")
    return d if isinstance(d, dict) else {}


def run_start_end(r: RunFacts, c: Collector) -> Outcome:
    ev = [_ev(x[0], type="run.start") for x in r.starts] + [_ev(x[0], type="run.end", status=x[1].get("status"))
                                                             for x in r.ends]
    if r.start_count != 1 or r.end_count != 1:
        return FAIL, f"{r.start_count} run.start and {r.end_count} run.end records (need exactly one each)", ev
    if r.ends[0][1].get("status") not in ("completed", "failed", "aborted"):
        return FAIL, "run.end status is not completed/failed/aborted", ev
    return PASS, "one run.start and one run.end", ev


def dataset_provenance(r: RunFacts, c: Collector) -> Outcome:
    ids = r.starts[0][1].get("datasets") if r.start_count == 1 else None
    if not isinstance(ids, list) or not ids:
        return (NA, "run declares no datasets", []) if isinstance(ids, list) else (FAIL, "run.start lacks a datasets list", [])
    ev, bad = [], []
    for did in ids:
        d = c.datasets.get(did) if isinstance(did, str) else None
        if d is None:
            bad.append(f"dataset {str(did)[:64]!r} has no dataset.register record")
            continue
        problems = [k for k, v in (("source", d.source), ("licence", d.licence)) if not (isinstance(v, str) and v.strip())]
        if not (isinstance(d.digest, str) and _DIGEST.fullmatch(d.digest)):
            problems.append("digest")
        if not (type(d.size_bytes) is int and d.size_bytes >= 0):
            problems.append("size_bytes")
        ev.append(_ev(d.ref, dataset_id=did, source=d.source, licence=d.licence, digest=d.digest, size_bytes=d.size_bytes))
        if problems:
            bad.append(f"dataset {did!r} lacks or has malformed: {', '.join(problems)}")
    return (FAIL, "; ".join(bad), ev) if bad else (PASS, f"{len(ids)} dataset(s) with source, licence, digest, size", ev)


def annotation_guidelines(r: RunFacts, c: Collector) -> Outcome:
    if r.annotation_ok + r.annotation_bad_count == 0:
        return NA, "no annotation.batch records in scope", []
    if r.annotation_bad_count:
        return FAIL, f"{r.annotation_bad_count} annotation batch(es) without a guideline version", \
            [_ev(ref, problem=p) for ref, p in r.annotation_bad]
    more = f" and more (over {len(r.guideline_versions)} distinct)" if r.guideline_versions_more else ""
    return PASS, f"{r.annotation_ok} batch(es); guideline versions {sorted(r.guideline_versions)}{more}", []


def training_method(r: RunFacts, c: Collector) -> Outcome:
    if r.start_count != 1:
        return FAIL, "no single run.start record", []
    ref, b = r.starts[0]
    m, hp = b.get("method"), b.get("hyperparameters")
    ev = [_ev(ref, method=m, hyperparameters=sorted(hp)[:30] if isinstance(hp, dict) else hp)]
    if not (isinstance(m, str) and m.strip()):
        return FAIL, "run.start lacks the training method", ev
    if not (isinstance(hp, dict) and hp):
        return FAIL, "run.start lacks hyperparameters (non-empty object)", ev
    return PASS, f"method {m}, {len(hp)} hyperparameter(s)", ev


def compute_recorded(r: RunFacts, c: Collector) -> Outcome:
    ev = [_ev(ref, device=d, seconds=s) for ref, d, s in r.compute] + [_ev(ref, problem=p) for ref, p in r.compute_bad]
    if r.compute_bad_count:
        return FAIL, f"{r.compute_bad_count} malformed compute.usage record(s)", ev
    if not r.compute_count:
        return FAIL, "no compute.usage record", ev
    return PASS, f"{r.compute_count} record(s), {r.compute_seconds:.0f} device-seconds", ev


def evaluations_signed(r: RunFacts, c: Collector) -> Outcome:
    ev = [_ev(x) for x in r.evaluations]
    if r.evaluations_invalid:
        return FAIL, "evaluation record(s) failing integrity checks or without name/metrics", \
            ev + [_ev(x, problem="invalid") for x in r.evaluations_invalid]
    if not r.evaluation_count:
        return FAIL, "no evaluation record", []
    who = "signed by a trusted producer key"  # registered in the log's key events or pinned (docs/keys.md)
    return PASS, f"{r.evaluation_count} evaluation(s) {who}", ev


def released_weights(r: RunFacts, c: Collector) -> Outcome:
    if r.end_count != 1:
        return FAIL, "no single run.end record", []
    ref, b = r.ends[0]
    released = b.get("released_weights_digest")
    ev = [_ev(ref, released_weights_digest=released)]
    if released is None and b.get("status") != "completed":
        return NA, "run did not complete and released no weights", ev
    last = r.last_anchored_checkpoint
    if last is None:
        return FAIL, "no anchored checkpoint.save record to compare the released weights with", ev
    ev.append(_ev(last[0], weights_digest=last[1], anchored=True))
    if r.last_checkpoint and r.last_checkpoint[0].index != last[0].index:
        ev.append(_ev(r.last_checkpoint[0], weights_digest=r.last_checkpoint[1], anchored=False))
    if released != last[1]:
        return FAIL, "released weights digest differs from the last anchored checkpoint.save", ev
    return PASS, "released weights digest equals the last anchored checkpoint", ev


def _delta_bound(r: RunFacts, c: Collector) -> tuple[float | None, str]:
    """The largest acceptable declared delta: --max-delta, else 1/records of the largest dataset
    the run declares (docs/verifier.md, "Privacy replay"); None when neither is known."""
    if c.max_delta is not None:
        return c.max_delta, f"--max-delta {c.max_delta:g}"
    ids = r.starts[0][1].get("datasets") if r.start_count == 1 else None
    records = [d.records for did in (ids if isinstance(ids, list) else [])
               if isinstance(did, str) and (d := c.datasets.get(did)) is not None]
    records = [n for n in records if type(n) is int and n > 0]
    if not records:
        return None, "no declared dataset states its records and no --max-delta was given"
    return 1.0 / max(records), f"1/records of the run's largest dataset ({max(records)} records)"


def privacy_budget(r: RunFacts, c: Collector) -> Outcome:
    budget = _declared(r).get("privacy_budget")
    ev = [_ev(ref, problem=p) for ref, p in r.privacy_bad]
    if budget is None and not r.privacy_spends and not r.privacy_bad_count and not r.privacy_exceeded_count \
            and not r.dp_steps_recorded:
        return NA, "no privacy budget declared, no privacy.spend records and no DP-SGD updates", []
    if r.privacy_bad_count:
        return FAIL, "malformed privacy.spend record(s)", ev
    if r.privacy_exceeded_count:
        return FAIL, f"{r.privacy_exceeded_count} privacy.budget_exceeded record(s): the run tried to spend past its budget", \
            [_ev(x, type="privacy.budget_exceeded") for x in r.privacy_exceeded]
    if not (isinstance(budget, dict) and type(budget.get("epsilon")) in (int, float)
            and type(budget.get("delta")) in (int, float) and 0 < budget["delta"] < 1):
        return FAIL, "privacy.spend records or DP updates but no declared privacy_budget {epsilon, delta}", ev
    bound, why = _delta_bound(r, c)
    if bound is None:
        return FAIL, f"declared delta {budget['delta']:g} cannot be bounded: {why}", ev
    if budget["delta"] > bound:
        return FAIL, f"declared delta {budget['delta']:g} exceeds the bound {bound:.6g} ({why})", ev
    if r.dp_steps_recorded > r.privacy_steps:
        ref = r.dp_steps_ref
        return FAIL, (f"the run records {r.dp_steps_recorded} DP-SGD steps but its privacy.spend records account for "
                      f"only {r.privacy_steps}"), ev + ([_ev(ref, dp_steps=r.dp_steps_recorded)] if ref else [])
    eps = r.privacy.epsilon(float(budget["delta"])) if r.privacy is not None else 0.0
    detail = (f"replayed epsilon {eps:.6g} at delta {budget['delta']:g} over {r.privacy_steps} steps "
              f"(budget {budget['epsilon']:g}; delta bound {bound:.6g}, {why}; "
              f"{r.dp_steps_recorded} DP-SGD steps recorded by updates)")
    if r.privacy_understated_count:
        ev += [_ev(ref, claimed_epsilon=cl, delta=d, replayed_epsilon=rp) for ref, cl, d, rp in r.privacy_understated]
        return FAIL, detail + f"; {r.privacy_understated_count} claim(s) below the replay at their own delta", ev
    if r.privacy_last_claim:
        ref, claimed, cdelta = r.privacy_last_claim
        ev.append(_ev(ref, claimed_epsilon=claimed, delta=cdelta))
    if not eps <= budget["epsilon"]:
        return FAIL, detail + " exceeds the declared budget", ev
    return PASS, detail, ev


def anchoring_delay(r: RunFacts, c: Collector) -> Outcome:
    limit = _declared(r).get("anchoring_delay_seconds")
    worst = sorted(r.worst_delays, reverse=True)
    if type(limit) is not int or limit < 0:
        return FAIL, "run.start declares no anchoring_delay_seconds", []
    ev = [_ev(Ref(i, eid), delay_seconds=round(d, 3)) for d, i, eid in worst if d > limit]
    ev += [_ev(x, problem="not covered by any anchored checkpoint") for x in r.unanchored]
    if r.unanchored_count:
        return FAIL, f"{r.unanchored_count} event(s) not anchored", ev
    note = ("delays are confirmed anchor block time minus the event time, and event times are the producer's "
            "claim")
    if r.max_delay > limit:
        return FAIL, f"max delay {r.max_delay:.0f}s exceeds the declared {limit}s ({note})", ev
    neg = f"; {r.negative_delays} event(s) dated after their anchor block (negative delay, min {r.min_delay:.0f}s)" \
        if r.negative_delays else ""
    return PASS, f"all {r.events} event(s) under confirmed anchors; max delay {r.max_delay:.0f}s <= {limit}s{neg} ({note})", \
        [_ev(Ref(i, eid), delay_seconds=round(d, 3)) for d, i, eid in worst[:3]]


def retention(r: RunFacts, c: Collector) -> Outcome:
    days = _declared(r).get("retention_days")
    ev = [_ev(r.starts[0][0], retention_days=days)] if r.start_count == 1 else []
    if type(days) is not int:
        return FAIL, "run.start declares no retention_days", ev
    if days < MIN_RETENTION_DAYS:
        return FAIL, f"retention {days} days is below {MIN_RETENTION_DAYS}", ev
    return PASS, f"retention {days} days", ev


# ---- eu-ai-act@2: rules that fit the run's method, human oversight -----------------------------

REWARD_METHOD = "reward"  # docs/event-types.md: a reward-model run; every other method trains a policy


def _method(r: RunFacts) -> str | None:
    if len(r.starts) != 1:
        return None
    m = r.starts[0][1].get("method")
    return m if isinstance(m, str) and m.strip() else None


def release_type(method: str) -> str:
    """The save record whose weights a run of this method releases."""
    return "reward_model.save" if method == REWARD_METHOD else "checkpoint.save"


def _kind(method: str) -> str:
    return "reward-model run" if method == REWARD_METHOD else "policy run"


def dataset_provenance_v2(r: RunFacts, c: Collector) -> Outcome:
    ids = r.starts[0][1].get("datasets") if len(r.starts) == 1 else None
    if isinstance(ids, list) and not ids:
        m = _method(r)
        return FAIL, (f"run.start lists no datasets: every training method{f' ({m[:40]})' if m else ''} trains on data, "
                      "and the data's provenance must be recorded"), []
    return dataset_provenance(r, c)


def training_method_v2(r: RunFacts, c: Collector) -> Outcome:
    status, detail, ev = training_method(r, c)
    m = _method(r)
    if status == PASS and m is not None:
        detail += f" ({_kind(m)}: its released weights are its last {release_type(m)})"
    return status, detail, ev


def released_weights_v2(r: RunFacts, c: Collector) -> Outcome:
    if len(r.ends) != 1:
        return FAIL, "no single run.end record", []
    ref, b = r.ends[0]
    released = b.get("released_weights_digest")
    ev = [_ev(ref, released_weights_digest=released)]
    if released is None and b.get("status") != "completed":
        return NA, "run did not complete and released no weights", ev
    m = _method(r)
    if m is None:
        return FAIL, ("no single run.start with a method: which save record names the released weights "
                      "(checkpoint.save or reward_model.save) is unknown"), ev
    want = release_type(m)
    reward = m == REWARD_METHOD
    last, anchored = (r.last_reward_save, r.last_anchored_reward_save) if reward else \
        (r.last_checkpoint, r.last_anchored_checkpoint)
    other_type = "checkpoint.save" if reward else "reward_model.save"
    other = r.last_checkpoint if reward else r.last_reward_save
    hint = ""
    if other is not None and other[1] == released:
        ev.append(_ev(other[0], type=other_type, weights_digest=other[1]))
        hint = (f"; it equals a {other_type}, which names the {'policy' if reward else 'reward model'}, not what a "
                f"{m[:40]!r} run releases" + ("" if reward else " (a reward-model run records method \"reward\")"))
    if anchored is None:
        return FAIL, f"no anchored {want} record to compare the released weights with ({_kind(m)}){hint}", ev
    ev.append(_ev(anchored[0], type=want, weights_digest=anchored[1], anchored=True))
    if last and last[0].index != anchored[0].index:
        ev.append(_ev(last[0], type=want, weights_digest=last[1], anchored=False))
    if released != anchored[1]:
        return FAIL, f"released weights digest differs from the last anchored {want} ({_kind(m)}){hint}", ev
    return PASS, f"released weights digest equals the last anchored {want} ({_kind(m)} {m[:40]!r})", ev


def human_oversight(r: RunFacts, c: Collector) -> Outcome:
    """At least one signed human.review approving the released weights (subject = the released
    digest) before run.end, and none rejecting them (AI Act Art. 14)."""
    if len(r.ends) != 1:
        return FAIL, "no single run.end record", []
    end_ref, b = r.ends[0]
    released = b.get("released_weights_digest")
    if released is None and b.get("status") != "completed":
        return NA, "run did not complete and released no weights: there is no release to oversee", \
            [_ev(end_ref, type="run.end", status=b.get("status"))]
    if not (isinstance(released, str) and released):
        return FAIL, "run.end names no released weights, so no review of them can be shown", \
            [_ev(end_ref, type="run.end", released_weights_digest=released)]
    rv = r.reviews
    ev = []
    if rv is not None and rv.malformed_count:
        ev += [_ev(ref, type="human.review", problem=p) for ref, p in rv.malformed]
        return FAIL, f"{rv.malformed_count} malformed human.review record(s)", ev
    s = rv.by_subject.get(subject_key(released)) if rv is not None else None
    if s is not None and s.invalid:
        ev += [_ev(ref, type="human.review", problem="fails integrity checks") for ref in s.invalid]
        return FAIL, "review record(s) of the released weights failing integrity checks", ev
    if s is not None and s.rejection_count:
        ev += [_ev(ref, type="human.review", reviewer=who, decision=REJECT, subject=released) for ref, who in s.rejections]
        return FAIL, (f"{s.rejection_count} human.review record(s) reject the released weights (an approval does not "
                      "override a rejection of the same weights)"), ev
    before = [(ref, who) for ref, who in (s.approvals if s is not None else []) if ref.index < end_ref.index]
    if not before:
        if s is None and rv is not None and rv.untracked:
            return FAIL, (f"no approval of the released weights among the reviews kept; {rv.untracked} review(s) of "
                          f"further subjects were not kept (more than {len(rv.by_subject)} distinct subjects), so "
                          "approval cannot be shown"), ev
        reviewed = rv.count if rv is not None else 0
        return FAIL, (f"no human.review approving the released weights (decision \"approve\", subject "
                      f"{released[:80]}) before run.end; {reviewed} review record(s) in the run"), \
            [_ev(end_ref, type="run.end", released_weights_digest=released)]
    assert s is not None  # the approvals in `before` are its own
    who = "signed by a trusted producer key"  # registered in the log's key events or pinned (docs/keys.md)
    ev += [_ev(ref, type="human.review", reviewer=rev, decision=APPROVE, subject=released) for ref, rev in before]
    ev.append(_ev(end_ref, type="run.end", released_weights_digest=released))
    more = f" ({s.approval_count} in all)" if s.approval_count != len(before) else ""
    return PASS, (f"{len(before)} human.review approval(s){more} of the released weights before run.end, {who}; "
                  f"reviewer(s) {', '.join(sorted({rev for _, rev in before})[:5])}"), ev


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    reference: str
    check: Callable[[RunFacts, Collector], Outcome]


@dataclass(frozen=True)
class RuleSet:
    name: str  # exact and versioned: "eu-ai-act@2"
    rules: tuple[Rule, ...]
    # Over an event or range bundle (a window of the log): True: every rule is reported
    # not_applicable with the reason (@2); False: no per-rule results at all (@1, as it was).
    window_results: bool


EU_AI_ACT_1 = (
    Rule("run-records", "Each run has start and end records", "Art. 12(1), 12(2)", run_start_end),
    Rule("dataset-provenance", "Datasets carry source, licence, digest and size", "Art. 10(2); Annex IV 2(d)", dataset_provenance),
    Rule("annotation-guidelines", "Annotation batches reference a guideline version", "Art. 10(2)(c); Annex IV 2(d)", annotation_guidelines),
    Rule("training-method", "Training method and hyperparameters recorded", "Annex IV 2(b), 2(c)", training_method),
    Rule("compute", "Compute used is recorded", "Annex XI 1(2)(d)", compute_recorded),
    Rule("evaluations", "Evaluations present and signed", "Art. 15; Annex IV 2(g)", evaluations_signed),
    Rule("released-weights", "Released weights equal the last anchored checkpoint", "Art. 12(2)(a); Annex IV 2(b)", released_weights),
    Rule("privacy-budget", "Replayed privacy spend within the declared budget", "Art. 10(5)", privacy_budget),
    Rule("anchoring-delay", "Every event anchored within the declared delay", "Art. 12(1), 19(1)", anchoring_delay),
    Rule("retention", "Retention of at least six months", "Art. 19(1), 26(6)", retention),
)
EU_AI_ACT_2 = (
    Rule("run-records", "Each run has start and end records", "Art. 12(1), 12(2)", run_start_end),
    Rule("dataset-provenance", "Datasets carry source, licence, digest and size", "Art. 10(2); Annex IV 2(d)", dataset_provenance_v2),
    Rule("annotation-guidelines", "Annotation batches reference a guideline version", "Art. 10(2)(c); Annex IV 2(d)", annotation_guidelines),
    Rule("training-method", "Training method and hyperparameters recorded", "Annex IV 2(b), 2(c)", training_method_v2),
    Rule("compute", "Compute used is recorded", "Annex XI 1(2)(d)", compute_recorded),
    Rule("evaluations", "Evaluations present and signed", "Art. 15; Annex IV 2(g)", evaluations_signed),
    Rule("released-weights", "Released weights equal the last anchored save of the run's method",
         "Art. 12(2)(a); Annex IV 2(b)", released_weights_v2),
    Rule("human-oversight", "A human review approved the released weights before the run ended",
         "Art. 14(1), 14(4); Annex IV 2(e)", human_oversight),
    Rule("privacy-budget", "Replayed privacy spend within the declared budget", "Art. 10(5)", privacy_budget),
    Rule("anchoring-delay", "Every event anchored within the declared delay", "Art. 12(1), 19(1)", anchoring_delay),
    Rule("retention", "Retention of at least six months", "Art. 19(1), 26(6)", retention),
)
VERSIONS = {s.name: s for s in (RuleSet("eu-ai-act@1", EU_AI_ACT_1, False), RuleSet("eu-ai-act@2", EU_AI_ACT_2, True))}
LATEST = {"eu-ai-act": "eu-ai-act@2"}  # a bare name means the newest version of that rule set
RULE_SETS: dict[str, RuleSet] = {**VERSIONS, **{bare: VERSIONS[exact] for bare, exact in LATEST.items()}}


def resolve(rule_set: str) -> str:
    """The exact, versioned name a requested rule set means (KeyError if unknown)."""
    return RULE_SETS[rule_set].name


def evaluate(rule_set: str, c: Collector, not_assessed: str | None = None) -> list[RuleResult] | None:
    """Every rule per run. `not_assessed`: the bundle's scope cannot carry the run-scoped rules
    (an event or range bundle): each rule is not_applicable with that reason, or, for a rule set
    without window results (@1), None."""
    rs = RULE_SETS[rule_set]
    out: list[RuleResult] = []
    if not_assessed is not None:
        if not rs.window_results:
            return None
        # One entry per rule for every run the window touches (run_id null): the reason is the
        # same for all of them, and a window of many runs must not grow the report per run.
        return [RuleResult(rule.id, rule.title, rule.reference, NA,
                           [{"run_id": None, "status": NA, "detail": not_assessed, "evidence": []}]) for rule in rs.rules]
    for rule in rs.rules:
        per_run: list[RunOutcome] = []
        for run_id in sorted(c.runs):
            status, detail, evidence = rule.check(c.runs[run_id], c)
            per_run.append({"run_id": run_id, "status": status, "detail": detail, "evidence": evidence})
        statuses = {p["status"] for p in per_run}
        # A rule over no run at all is not "not applicable": nothing was shown (no vacuous success).
        status = FAIL if FAIL in statuses or not per_run else PASS if PASS in statuses else NA
        if not per_run:
            per_run.append({"run_id": None, "status": FAIL, "detail": "no run in scope", "evidence": []})
        out.append(RuleResult(rule.id, rule.title, rule.reference, status, per_run))
    return out
