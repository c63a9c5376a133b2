"""The header's declared scope: its shape is checked and every event must fall inside it.

The header is not signed, so these tests rewrite only the scope of an otherwise valid bundle:
every other check still passes and the findings are the scope's alone.
"""

import json

import pytest
from factory import build_bundle

from rlhf_verifier.cli import main


def _with_scope(b, scope) -> None:
    lines = b.path.read_text().splitlines()
    header = json.loads(lines[0])
    header["scope"] = scope
    lines[0] = json.dumps(header)
    b.path.write_text("\n".join(lines) + "\n")


def _run(b, capsys):
    code = main([str(a) for a in b.args("--json")])
    rep = json.loads(capsys.readouterr().out)
    return code, [f for f in rep["findings"] if f["check"] == "scope"], rep


@pytest.mark.parametrize("mode", ["inclusion", "tree"])
def test_declared_scopes_that_hold_pass(tmp_path, capsys, mode):
    b = build_bundle(tmp_path / "b.jsonl", mode=mode)
    n = sum('"kind": "event"' in line for line in b.path.read_text().splitlines())
    for scope in ({"type": "run", "run_id": "run-1"}, {"type": "range", "start": 0, "end": n}):
        _with_scope(b, scope)
        code, scope_findings, rep = _run(b, capsys)
        assert code == 0 and not scope_findings, rep["findings"]


def test_events_outside_a_run_scope_are_named(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    _with_scope(b, {"type": "run", "run_id": "run-2"})
    code, found, rep = _run(b, capsys)
    n = sum('"kind": "event"' in line for line in b.path.read_text().splitlines())
    per_event = [f for f in found if f["where"].startswith("event ")]
    assert code == 1 and len(per_event) == n
    assert all("outside the declared run scope 'run-2'" in f["message"] for f in per_event)
    assert per_event[0]["where"].startswith("event 0 ")
    # and the declared run itself is absent (no vacuous success)
    assert {"check": "scope", "where": "header.scope", "message": "run 'run-2' has no events in this bundle"} in found


def test_events_outside_a_range_scope_are_named(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    _with_scope(b, {"type": "range", "start": 0, "end": 3})
    code, found, _ = _run(b, capsys)
    assert code == 1 and found
    assert found[0]["where"].startswith("event 3 ") and "outside the declared range scope [0, 3)" in found[0]["message"]
    _with_scope(b, {"type": "event", "start": 2, "end": 3})
    code, found, _ = _run(b, capsys)
    assert code == 1 and [f["where"].split()[1] for f in found][:2] == ["0", "1"]


@pytest.mark.parametrize("scope, message", [
    ("run", "must be an object"),
    ({"type": "window", "start": 0, "end": 5}, "is not event, range or run"),
    ({"type": "run"}, "a run scope is exactly {type, run_id}"),
    ({"type": "run", "run_id": "run-1", "start": 0}, "a run scope is exactly {type, run_id}"),
    ({"type": "range", "start": 5, "end": 5}, "0 <= start < end"),
    ({"type": "range", "start": "0", "end": 5}, "0 <= start < end"),
    ({"type": "event", "start": 1, "end": 3}, "end = start + 1"),
])
def test_malformed_scope_is_a_named_failure(tmp_path, capsys, scope, message):
    b = build_bundle(tmp_path / "b.jsonl")
    _with_scope(b, scope)
    code, found, _ = _run(b, capsys)
    assert code == 1 and [f["where"] for f in found] == ["header.scope"] and message in found[0]["message"]
