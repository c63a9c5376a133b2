"""Terminal and JSON reports. Both state exactly what was trusted."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..compliance.reviews import ReviewListing
from ..verify import Result


def compliance_failed(r: Result) -> list[str]:
    return [x["id"] for x in (r.compliance or []) if x["status"] == "fail"]


def verdict(r: Result) -> str:
    """valid (exit 0), or invalid / non-compliant / not-assessed (exit 1): docs/verifier.md."""
    if not r.valid:
        return "invalid"
    if r.not_assessed:
        return "not-assessed"
    return "non-compliant" if compliance_failed(r) else "valid"


CLAIMS_NOTE = ("header.created, header.declared and the anchors' tx_hash / log_index (and chain id / contract "
               "when not pinned) are the exporter's claims: no proof covers them; event times are the producer's claim")


def _strict(x: object) -> Any:
    """The report as strict JSON (RFC 8259): no NaN/Infinity tokens, no lone surrogates."""
    if isinstance(x, float):
        return x if math.isfinite(x) else ("Infinity" if x > 0 else "-Infinity" if x < 0 else "NaN")
    if isinstance(x, str):
        return _strict_text(x)
    if isinstance(x, dict):
        return _strict_object(x)
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if x is None or isinstance(x, (bool, int)):
        return x
    return _strict(str(x))


def _strict_text(x: str) -> str:
    """Text without lone surrogates (each written as its \\udxxx escape)."""
    return x.encode("utf-8", "backslashreplace").decode("utf-8")


def _strict_object(x: Mapping[Any, Any]) -> dict[str, Any]:
    return {_strict_text(str(k)): _strict(v) for k, v in x.items()}


def as_dict(r: Result, bundle: str) -> dict[str, Any]:
    return _strict_object({
        "verdict": verdict(r),
        "scope": r.scope,
        "not_assessed": r.not_assessed,
        "warnings": r.warnings,
        "claims": CLAIMS_NOTE,
        "integrity": "valid" if r.valid else "invalid",
        "compliance_failed": compliance_failed(r),
        "bundle": bundle,
        "trusted": r.trusted,
        "producer_keys": r.producer_keys,
        "header": r.header,
        "counts": {"events": r.events, "events_valid": r.events_valid, "events_anchored": r.events_anchored,
                   "leaves": r.leaves, "checkpoints": len(r.checkpoints), "anchors": len(r.anchors),
                   "producer_chains": r.producer_chains, "findings": r.finding_count},
        "findings": [f.as_json() for f in r.findings],
        "findings_truncated": r.finding_count > len(r.findings),
        "checkpoints": r.checkpoints,
        "anchors": r.anchors,
        "rule_set": r.rule_set,
        "compliance": r.compliance,
        "reviews": r.reviews,
        "reviews_runs_omitted": r.reviews_runs_omitted,
        "reviews_records_omitted": r.reviews_records_omitted,
        "completeness": r.completeness,
        "weights": r.weights or None,
    })


def render_json(r: Result, bundle: str) -> str:
    return json.dumps(as_dict(r, bundle), indent=2, sort_keys=False, allow_nan=False)


def render_text(r: Result, bundle: str) -> str:
    d = as_dict(r, bundle)
    head = {"valid": "VALID", "invalid": "INVALID", "not-assessed": "INTEGRITY VALID, RULES NOT ASSESSED",
            "non-compliant": "INTEGRITY VALID, COMPLIANCE FAILED (" + ", ".join(compliance_failed(r)) + ")"}[verdict(r)]
    out = [f"{bundle}: {head}", "", f"Scope: {scope_text(r)}"]
    if r.not_assessed:
        out.append(f"Rules not assessed: {r.not_assessed}")
    out += [f"WARNING: {w}" for w in r.warnings]
    out += [f"Claims (not proven): {CLAIMS_NOTE}", "", "Trusted:"]
    for k, v in r.trusted.items():
        out.append(f"  {k}: {v if not isinstance(v, list) else ', '.join(map(str, v)) or '(none)'}")
    c = d["counts"]
    out += ["", f"Events: {c['events']} ({c['events_valid']} passed every check, {c['events_anchored']} under an "
                f"anchored checkpoint); leaves: {c['leaves']}; producer chains: {c['producer_chains']}",
            f"Checkpoints: {', '.join(str(x['size']) for x in r.checkpoints) or 'none'}"]
    if r.completeness:
        out.append(f"Completeness of the run: {r.completeness['status']}: {r.completeness['detail']}")
    if r.weights:
        out.append(f"Released weights ({r.weights['path']}): {r.weights['status']}"
                   + (f": {r.weights['detail']}" if r.weights.get("detail") else ""))
    for a in r.anchors:
        out.append(f"Anchor: checkpoint {a['checkpoint_size']} in block {a['block_number']} ({a['block_hash'][:18]}..) "
                   f"chain {a['chain_id']}: {a['status']}")
    if r.findings:
        out += ["", f"Failures ({r.finding_count}{', first ' + str(len(r.findings)) + ' shown' if d['findings_truncated'] else ''}):"]
        out += ["  " + f.line() for f in r.findings]
    out += review_lines(r)
    if r.compliance:
        out += ["", f"Compliance (rule set {r.rule_set}):"]
        for rule in r.compliance:
            out.append(f"  {rule['status'].upper():15} {rule['id']}: {rule['title']} ({rule['reference']})")
            for run in rule["runs"]:
                if run["status"] != "pass":
                    who = f"run {run['run_id']}" if run["run_id"] is not None else "every run"
                    out.append(f"      {who}: {run['detail']}")
    return _strict_text("\n".join(out) + "\n")


def scope_text(r: Result) -> str:
    sc = r.scope
    if not sc:
        return "malformed (see findings)"
    if sc.get("type") == "run":
        return f"run {sc.get('run_id')!r}"
    return f"{sc.get('type')} of log indices [{sc.get('start')}, {sc.get('end')}) (completeness of a run is not claimed)"


def _abbrev(x: object, n: int) -> str:
    t = str(x)
    return t if len(t) <= n else t[:n] + ".."


def review_text(v: ReviewListing) -> str:
    """One human.review as the reports show it (the notes' text never: it may be personal)."""
    what = "the released weights" if v["names_released_weights"] else f"subject {_abbrev(v['subject'], 80)}"
    extra = "" if v["passed_integrity_checks"] else "; FAILS integrity checks"
    extra += f"; {v['problem']}" if v.get("problem") else ""
    return (f"event {v['index']} ({v['event_id']}): {_abbrev(v['decision'], 40)} of {what} by reviewer "
            f"{_abbrev(v['reviewer'], 24)}; notes {v['notes']}{extra}")


def review_lines(r: Result) -> list[str]:
    out = []
    for run in r.reviews:
        shown = len(run["reviews"])
        more = f", first {shown} shown" if shown < run["count"] else ""
        out += ["", f"Human reviews of run {run['run_id']!r} ({run['count']} recorded{more}):"]
        out += ["  " + review_text(v) for v in run["reviews"]]
    if r.reviews_runs_omitted:
        out.append(f"({r.reviews_runs_omitted} more run(s) with human reviews are not listed)")
    if r.reviews_records_omitted:
        out.append(f"({r.reviews_records_omitted} more human review(s) in other runs of this window are not listed)")
    return out
