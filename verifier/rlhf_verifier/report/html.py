"""A self-contained HTML report: no scripts, no external resources, inline CSS and SVG only.

Order: verdict, what was trusted, failures, human reviews, per-rule compliance results, the anchor
timeline, then charts (reward, KL, loss over steps; privacy budget spent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

from ..compliance.rules import Evidence
from ..listings import AnchorListing
from ..verify import Result
from .text import CLAIMS_NOTE, _strict_text, as_dict, scope_text

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem}.verdict{padding:1rem 1.25rem;border-radius:8px;font-size:1.3rem;font-weight:600}
.valid{background:#e5f6ea;color:#0b5a23}.invalid{background:#fde8e8;color:#8a1010}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}td,th{border-bottom:1px solid #ddd;
padding:.35rem .5rem;text-align:left;vertical-align:top}th{background:#f5f5f7}
.pass{color:#0b5a23;font-weight:600}.fail{color:#8a1010;font-weight:600}.not_applicable{color:#666}
code{font-size:12px;word-break:break-all}.muted{color:#666}svg{background:#fafafa;border:1px solid #e5e5e5}
"""


def _e(x: object) -> str:
    return escape(str(x), quote=True)


def _chart(title: str, series: Mapping[str, Sequence[tuple[float, float]]], xlabel: str,
           hline: float | None = None) -> str:
    w, h, pad = 640, 220, 44
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + ([hline] if hline is not None else [])
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(y: float) -> float:
        return h - pad + (y - y0) / (y1 - y0) * -(h - 2 * pad)

    colours = ["#0a5bd3", "#d3530a", "#178a3a", "#8a1fa8"]
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'><title>{_e(title)}</title>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
             f'<text x="{pad}" y="{pad - 10}" font-size="12">{_e(title)}</text>',
             f'<text x="{w - pad}" y="{h - 10}" font-size="11" text-anchor="end">{_e(xlabel)} {x1:g}</text>',
             f'<text x="{pad}" y="{h - 10}" font-size="11">{x0:g}</text>',
             f'<text x="4" y="{pad + 4}" font-size="11">{y1:.4g}</text>',
             f'<text x="4" y="{h - pad}" font-size="11">{y0:.4g}</text>']
    if hline is not None:
        parts.append(f'<line x1="{pad}" y1="{sy(hline):.1f}" x2="{w - pad}" y2="{sy(hline):.1f}" stroke="#8a1010" '
                     f'stroke-dasharray="4 3"/><text x="{w - pad}" y="{sy(hline) - 4:.1f}" font-size="11" '
                     f'text-anchor="end" fill="#8a1010">declared budget {hline:g}</text>')
    for i, (name, s) in enumerate(series.items()):
        c = colours[i % len(colours)]
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(s))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{d}"/>')
        parts.append(f'<text x="{w - pad - 150}" y="{pad + 14 * i}" font-size="11" fill="{c}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _timeline(anchors: list[AnchorListing]) -> str:
    if not anchors:
        return "<p class='muted'>No verified anchors.</p>"
    w, h, pad = 640, 90, 30
    t0, t1 = anchors[0]["block_timestamp"], anchors[-1]["block_timestamp"]
    t1 = t1 if t1 > t0 else t0 + 1
    parts = [f'<svg role="img" aria-label="anchor timeline" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'><title>anchor timeline</title>',
             f'<line x1="{pad}" y1="45" x2="{w - pad}" y2="45" stroke="#999"/>']
    for a in anchors:
        x = pad + (a["block_timestamp"] - t0) / (t1 - t0) * (w - 2 * pad)
        colour = "#0b5a23" if a["status"].startswith("confirmed") else "#b07800"
        parts.append(f'<circle cx="{x:.1f}" cy="45" r="5" fill="{colour}"><title>checkpoint {a["checkpoint_size"]}, '
                     f'block {a["block_number"]}</title></circle>'
                     f'<text x="{x:.1f}" y="30" font-size="10" text-anchor="middle">{a["checkpoint_size"]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ts(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_html(r: Result, bundle: str) -> str:
    d = as_dict(r, bundle)
    v = "valid" if d["verdict"] == "valid" else "invalid"
    head = {"valid": "VALID", "invalid": "INVALID", "not-assessed": "INTEGRITY VALID &mdash; RULES NOT ASSESSED",
            "non-compliant": "INTEGRITY VALID &mdash; COMPLIANCE FAILED"}[d["verdict"]]
    c = d["counts"]
    o: list[str] = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
                    "<meta name='viewport' content='width=device-width, initial-scale=1'>",
                    f"<title>rlhf-verify: {_e(d['verdict'])}</title><style>{CSS}</style></head><body>",
                    f"<h1>Proof bundle verification</h1><div class='verdict {v}'>{head}"
                    f" &mdash; {_e(bundle)}</div>",
                    f"<p>{c['events']} events ({c['events_valid']} passed every check, {c['events_anchored']} under an "
                    f"anchored checkpoint), {c['checkpoints']} checkpoints, {c['anchors']} anchors, "
                    f"{c['findings']} failure(s).</p>", f"<p><b>Scope:</b> {_e(scope_text(r))}</p>"]
    if r.not_assessed:
        o.append(f"<p class='fail'>Rules not assessed: {_e(r.not_assessed)}</p>")
    o += [f"<p class='fail'>Warning: {_e(w)}</p>" for w in r.warnings]
    o.append(f"<p class='muted'>Claims (not proven): {_e(CLAIMS_NOTE)}</p><h2>What was trusted</h2><table>")
    for k, val in r.trusted.items():
        shown = "<br>".join(_e(x) for x in val) if isinstance(val, list) else _e(val)
        o.append(f"<tr><th>{_e(k)}</th><td><code>{shown or '(none)'}</code></td></tr>")
    o.append("</table>")
    if r.completeness:
        o.append(f"<h2>Completeness of the run</h2><p><b>{_e(r.completeness['status'])}</b>: "
                 f"{_e(r.completeness['detail'])}</p>")
    if r.weights:
        o.append(f"<h2>Released weights</h2><p><code>{_e(r.weights['path'])}</code>: <b>{_e(r.weights['status'])}</b>"
                 f"{(': ' + _e(r.weights['detail'])) if r.weights.get('detail') else ''}</p>")
    if r.findings:
        o.append("<h2>Failures</h2><table><tr><th>check</th><th>where</th><th>what</th></tr>")
        for f in r.findings:
            o.append(f"<tr><td class='fail'>{_e(f.check)}</td><td>{_e(f.where)}</td><td>{_e(f.message)}</td></tr>")
        o.append("</table>")
        if d["findings_truncated"]:
            o.append(f"<p class='muted'>Showing the first {len(r.findings)} of {r.finding_count}.</p>")
    for run in d["reviews"]:
        n_shown = len(run["reviews"])
        o.append(f"<h2>Human reviews of run <code>{_e(run['run_id'])}</code></h2><p>{run['count']} recorded"
                 f"{f', first {n_shown} shown' if n_shown < run['count'] else ''}; the notes' text is never shown.</p>"
                 "<table><tr><th>event</th><th>decision</th><th>subject</th><th>reviewer</th><th>notes</th></tr>")
        for x in run["reviews"]:
            subject = "the released weights<br>" if x["names_released_weights"] else ""
            bad = "" if x["passed_integrity_checks"] else " <span class='fail'>fails integrity checks</span>"
            bad += f" <span class='fail'>{_e(x['problem'])}</span>" if x.get("problem") else ""
            o.append(f"<tr><td>{_e(x['index'])}<br><code>{_e(x['event_id'])}</code></td><td>{_e(x['decision'])}{bad}</td>"
                     f"<td>{subject}<code>{_e(x['subject'])}</code></td><td><code>{_e(x['reviewer'])}</code></td>"
                     f"<td>{_e(x['notes'])}</td></tr>")
        o.append("</table>")
    if d["reviews_runs_omitted"]:
        o.append(f"<p class='muted'>{d['reviews_runs_omitted']} more run(s) with human reviews are not listed.</p>")
    if d["reviews_records_omitted"]:
        o.append(f"<p class='muted'>{d['reviews_records_omitted']} more human review(s) in other runs of this window "
                 "are not listed.</p>")
    if r.compliance is not None:
        o.append(f"<h2>Compliance rules</h2><p>Rule set <b>{_e(r.rule_set)}</b> (docs/compliance-eu-ai-act.md)</p>"
                 "<table><tr><th>result</th><th>rule</th><th>reference</th><th>runs</th></tr>")
        for rule in r.compliance:
            runs = "".join(
                f"<div><b>{_e(x['run_id'] if x['run_id'] is not None else 'every run')}</b>: "
                f"<span class='{_e(x['status'])}'>{_e(x['status'])}</span> "
                f"&mdash; {_e(x['detail'])}"
                + (f"<br><code>{_e('; '.join(_evidence(e) for e in x['evidence'][:6]))}</code>" if x["evidence"] else "")
                + "</div>" for x in rule["runs"])
            o.append(f"<tr><td class='{_e(rule['status'])}'>{_e(rule['status'])}</td><td>{_e(rule['title'])}"
                     f"<br><span class='muted'>{_e(rule['id'])}</span></td><td>{_e(rule['reference'])}</td>"
                     f"<td>{runs}</td></tr>")
        o.append("</table>")
    o.append("<h2>Anchor timeline</h2>" + _timeline(r.anchors))
    if r.anchors:
        o.append("<table><tr><th>checkpoint</th><th>block</th><th>time (block header)</th><th>status</th></tr>")
        for a in r.anchors:
            o.append(f"<tr><td>{a['checkpoint_size']}</td><td>{a['block_number']}<br><code>{_e(a['block_hash'])}</code>"
                     f"</td><td>{_ts(a['block_timestamp'])}</td><td>{_e(a['status'])}</td></tr>")
        o.append("</table>")
    charts = []
    for metric, label in (("reward_mean", "Reward (mean)"), ("kl", "KL divergence"), ("loss", "Loss")):
        series = {k.split(".")[0]: v.points for k, v in r.series.items() if k.endswith("." + metric) and v.points}
        charts.append(_chart(f"{label} over steps", series, "step"))
    for run_id, pts in r.privacy_series.items():
        if pts:
            charts.append(_chart(f"Privacy budget spent (epsilon), run {run_id}", {"claimed epsilon": pts},
                                 "steps", _declared_eps(r, run_id)))
    charts = [x for x in charts if x]
    if charts:
        o.append("<h2>Training record</h2>" + "".join(f"<figure>{x}</figure>" for x in charts))
    o.append("<p class='muted'>Generated by rlhf-verify; this page loads nothing and runs no scripts.</p></body></html>")
    return _strict_text("\n".join(o))


def _evidence(e: Evidence) -> str:
    return ", ".join(f"{k}={str(v)[:70]}" for k, v in e.items())


def _declared_eps(r: Result, run_id: str) -> float | None:
    return r.privacy_budgets.get(run_id)
