"""A dishonest exporter hides events of a run (issue 10, item 2; docs/run-index.md).

Each attack edits an honest run bundle the way an exporter could (every edit keeps the `end`
counts right, so only the run index can catch it) and must end INVALID with a `completeness`
finding; the honest bundle beside it must stay VALID.
"""

from __future__ import annotations

import base64
import json

import pytest
from factory import build_bundle, read_records, run_events, write_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_verifier.cli import main

settings.register_profile("completeness", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])


def _verify(b, capsys) -> tuple[int, dict]:
    code = main([str(a) for a in b.args("--json")])
    return code, json.loads(capsys.readouterr().out)


def _completeness(rep: dict) -> list[str]:
    return [f["message"] for f in rep["findings"] if f["check"] == "completeness"]


def _leaf_hash(env: dict) -> str:
    import hashlib

    from rlhf_ledger.core.jcs import canonicalize

    return base64.b64encode(hashlib.sha256(b"\x00" + canonicalize(env)).digest()).decode()


@pytest.mark.parametrize("mode", ["inclusion", "tree"])
def test_honest_run_bundle_is_complete(tmp_path, capsys, mode):
    b = build_bundle(tmp_path / "b.jsonl", mode=mode, producers=2, extra_leaves=3 if mode == "tree" else 0)
    code, rep = _verify(b, capsys)
    assert code == 0, rep["findings"]
    c = rep["completeness"]
    assert c["status"] == "proven" and c["ended"] is True and c["events"] == len(run_events())


def test_deleting_the_events_after_a_point_is_caught(tmp_path, capsys):
    """The tail of the run (its evaluation, compute and run.end) left out."""
    b = build_bundle(tmp_path / "b.jsonl", producers=2)
    objs = read_records(b)
    events = [i for i, o in enumerate(objs) if o["kind"] == "event"]
    write_records(b, objs[: events[-3]] + [objs[-1]])
    code, rep = _verify(b, capsys)
    msgs = _completeness(rep)
    assert code == 1
    assert any("the bundle holds" in m for m in msgs), msgs
    assert any("run.end for this run that the bundle omits" in m for m in msgs), msgs


def test_leaving_out_a_whole_producer_is_caught(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", producers=2)
    objs = read_records(b)
    second = sorted({o["envelope"]["event"]["producer"] for o in objs if o["kind"] == "event"},
                    key=lambda k: [o["envelope"]["event"]["producer"] for o in objs if o["kind"] == "event"].index(k))[1]
    kept = [o for o in objs if not (o["kind"] == "event" and o["envelope"]["event"]["producer"] == second)]
    write_records(b, kept)
    b.producer_keys = b.producer_keys[:1]  # the regulator pinned only the key the bundle shows
    code, rep = _verify(b, capsys)
    assert code == 1
    assert any(f"producer(s) {second[:16]} wrote events of this run that the bundle omits" in m
               for m in _completeness(rep)), rep["findings"]


def test_an_event_shown_as_a_hash_only_leaf_is_caught(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", mode="tree", extra_leaves=2)
    objs = read_records(b)
    i = next(i for i, o in enumerate(objs) if o["kind"] == "event" and o["envelope"]["event"]["type"] == "evaluation")
    objs[i] = {"kind": "leaf", "index": objs[i]["index"], "hash": _leaf_hash(objs[i]["envelope"])}
    write_records(b, objs)
    code, rep = _verify(b, capsys)
    assert code == 1
    assert any("the log has" in m and "the bundle holds" in m for m in _completeness(rep)), rep["findings"]
    # the tree itself still verifies: only the run index shows that leaf belongs to the run
    assert not [f for f in rep["findings"] if f["check"] == "inclusion"]


def test_a_run_bundle_without_its_run_record_is_not_complete(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", run_record=False)
    code, rep = _verify(b, capsys)
    assert code == 1
    assert any("must carry a run record" in m for m in _completeness(rep))
    assert rep["completeness"]["status"] == "not proven"


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["record"].__setitem__("events", r["record"]["events"] - 1), "not in the signed run index"),
    (lambda r: r["record"].__setitem__("ended", False), "not in the signed run index"),
    (lambda r: r.__setitem__("index", r["index"] + 1), "index must be an integer below"),
    (lambda r: r.__setitem__("note", r["note"].replace("\n1\n", "\n2\n", 1)), "does not verify"),
    (lambda r: r["record"].__setitem__("run_id", "run-2"), "is for run 'run-2'"),
    (lambda r: r.__setitem__("extra", 1), "exactly {kind, checkpoint_size, note, record, index, proof}"),
])
def test_a_forged_run_record_is_refused(tmp_path, capsys, edit, message):
    b = build_bundle(tmp_path / "b.jsonl", producers=2)
    objs = read_records(b)
    rec = next(o for o in objs if o["kind"] == "run")
    edit(rec)
    write_records(b, objs)
    code, rep = _verify(b, capsys)
    assert code == 1
    assert any(message in m for m in _completeness(rep)), rep["findings"]


def test_a_run_record_of_an_older_tree_size_is_refused(tmp_path, capsys):
    """The exporter proves the events at a later checkpoint but shows the run index of an
    earlier one (before the events it wants to hide)."""
    evs = run_events()
    b = build_bundle(tmp_path / "b.jsonl", checkpoint_sizes=[5, len(evs)], anchor_sizes=[5, len(evs)])
    old = build_bundle(tmp_path / "old.jsonl", checkpoint_sizes=[5], anchor_sizes=[5], events=evs[:5])
    objs = read_records(b)
    old_run = next(o for o in read_records(old) if o["kind"] == "run")
    objs = [old_run if o["kind"] == "run" else o for o in objs]
    write_records(b, objs)
    code, rep = _verify(b, capsys)
    assert code == 1
    assert any("the run record is for tree size 5" in m for m in _completeness(rep)), rep["findings"]


def test_showing_only_a_prefix_of_the_run_is_caught(tmp_path, capsys):
    """The exporter keeps the events below an earlier checkpoint (their proofs still hold), the
    later anchored checkpoint, and the run index of the earlier size, which the log signed
    honestly: the record must be for the newest checkpoint, so the prefix is not complete."""
    evs = run_events()
    b = build_bundle(tmp_path / "b.jsonl", checkpoint_sizes=[5, len(evs)], anchor_sizes=[5, len(evs)])
    old = build_bundle(tmp_path / "old.jsonl", checkpoint_sizes=[5], anchor_sizes=[5], events=evs[:5])
    old_run = next(o for o in read_records(old) if o["kind"] == "run")
    objs = [old_run if o["kind"] == "run" else o for o in read_records(b)
            if not (o["kind"] == "event" and o["index"] >= 5)]
    write_records(b, objs)
    code, rep = _verify(b, capsys)
    assert code == 1
    assert any("newest checkpoint is" in m for m in _completeness(rep)), rep["findings"]


@settings(settings.get_profile("completeness"))
@given(data=st.data())
def test_deleting_any_set_of_event_lines_is_invalid(tmp_path_factory, capsys, data):
    b = build_bundle(tmp_path_factory.mktemp("del") / "b.jsonl", producers=2)
    objs = read_records(b)
    events = [i for i, o in enumerate(objs) if o["kind"] == "event"]
    drop = set(data.draw(st.sets(st.sampled_from(events), min_size=1, max_size=len(events))))
    write_records(b, [o for i, o in enumerate(objs) if i not in drop])
    code, rep = _verify(b, capsys)
    assert code == 1 and _completeness(rep), rep["findings"]


@settings(settings.get_profile("completeness"))
@given(data=st.data())
def test_moving_any_event_to_a_hash_only_leaf_is_invalid(tmp_path_factory, capsys, data):
    b = build_bundle(tmp_path_factory.mktemp("leaf") / "b.jsonl", mode="tree", extra_leaves=2, producers=2)
    objs = read_records(b)
    events = [i for i, o in enumerate(objs) if o["kind"] == "event"]
    i = data.draw(st.sampled_from(events))
    objs[i] = {"kind": "leaf", "index": objs[i]["index"], "hash": _leaf_hash(objs[i]["envelope"])}
    write_records(b, objs)
    code, rep = _verify(b, capsys)
    assert code == 1 and _completeness(rep), rep["findings"]
