"""Terminal and JSON reports. Both state exactly what was trusted."""

from __future__ import annotations

import json
from typing import Any

from ..verify import Result


def compliance_failed(r: Result) -> list[str]:
    return [x["id"] for x in (r.compliance or []) if x["status"] == "fail"]


def verdict(r: Result) -> str:
    if not r.valid:
        return "invalid"
    return "non-compliant" if compliance_failed(r) else "valid"


def as_dict(r: Result, bundle: str) -> dict[str, Any]:
    return {
        "verdict": verdict(r),
        "integrity": "valid" if r.valid else "invalid",
        "compliance_failed": compliance_failed(r),
        "bundle": bundle,
        "trusted": r.trusted,
        "header": r.header,
        "counts": {"events": r.events, "events_valid": r.events_valid, "events_anchored": r.events_anchored,
                   "leaves": r.leaves, "checkpoints": len(r.checkpoints), "anchors": len(r.anchors),
                   "producer_chains": r.producer_chains, "findings": r.finding_count},
        "findings": [f.as_json() for f in r.findings],
        "findings_truncated": r.finding_count > len(r.findings),
        "checkpoints": r.checkpoints,
        "anchors": r.anchors,
        "compliance": r.compliance,
        "completeness": r.completeness,
    }


def render_json(r: Result, bundle: str) -> str:
    return json.dumps(as_dict(r, bundle), indent=2, sort_keys=False, default=str)


def render_text(r: Result, bundle: str) -> str:
    d = as_dict(r, bundle)
    head = {"valid": "VALID", "invalid": "INVALID",
            "non-compliant": "INTEGRITY VALID, COMPLIANCE FAILED (" + ", ".join(compliance_failed(r)) + ")"}[verdict(r)]
    out = [f"{bundle}: {head}", "", "Trusted:"]
    for k, v in r.trusted.items():
        out.append(f"  {k}: {v if not isinstance(v, list) else ', '.join(map(str, v)) or '(none)'}")
    c = d["counts"]
    out += ["", f"Events: {c['events']} ({c['events_valid']} passed every check, {c['events_anchored']} under an "
                f"anchored checkpoint); leaves: {c['leaves']}; producer chains: {c['producer_chains']}",
            f"Checkpoints: {', '.join(str(x['size']) for x in r.checkpoints) or 'none'}"]
    if r.completeness:
        out.append(f"Completeness of the run: {r.completeness['status']}: {r.completeness['detail']}")
    for a in r.anchors:
        out.append(f"Anchor: checkpoint {a['checkpoint_size']} in block {a['block_number']} ({a['block_hash'][:18]}..) "
                   f"chain {a['chain_id']}: {a['status']}")
    if r.findings:
        out += ["", f"Failures ({r.finding_count}{', first ' + str(len(r.findings)) + ' shown' if d['findings_truncated'] else ''}):"]
        out += ["  " + f.line() for f in r.findings]
    if r.compliance:
        out += ["", "Compliance:"]
        for rule in r.compliance:
            out.append(f"  {rule['status'].upper():15} {rule['id']}: {rule['title']} ({rule['reference']})")
            for run in rule["runs"]:
                if run["status"] != "pass":
                    out.append(f"      run {run['run_id']}: {run['detail']}")
    return "\n".join(out) + "\n"
