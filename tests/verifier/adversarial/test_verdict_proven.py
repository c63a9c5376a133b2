"""A dishonest exporter tries to obtain VALID without proof (issue 10 items 1, 3, 5, 6, 7, 8, 9).

Each attack is built with the ledger's own code (tests/verifier/factory.py), edited the way an
exporter could, and must end with the exact finding; the honest bundle beside it stays VALID.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from factory import build_bundle, read_records, run_events, ts, write_records

from rlhf_verifier.cli import main


def _strict_loads(text: str) -> dict:
    def bad(name: str):
        raise AssertionError(f"non-JSON token {name} in the report")
    return json.loads(text, parse_constant=bad)


def _verify(args, capsys) -> tuple[int, dict, str]:
    code = main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "internal error" not in out.err, out.err
    return code, (_strict_loads(out.out) if out.out.strip() else {}), out.err


def _checks(rep: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in rep["findings"]:
        out.setdefault(f["check"], []).append(f)
    return out


def _rule(rep: dict, rule_id: str) -> dict:
    return next(r for r in rep["compliance"] if r["id"] == rule_id)


def _no_pins(b, *extra: str) -> list[str]:
    """Keys pinned, no chain pin at all."""
    a = [str(b.path), "--log-key", b.log_vkey]
    for k in b.producer_keys:
        a += ["--producer-key", k]
    return a + list(extra)


@pytest.fixture
def honest(tmp_path):
    return build_bundle(tmp_path / "b.jsonl", producers=2)


def test_honest_bundle_passes_every_rule(honest, capsys):
    code, rep, _ = _verify(honest.args("--rules", "eu-ai-act"), capsys)
    assert code == 0 and rep["verdict"] == "valid", rep["findings"]
    assert {r["status"] for r in rep["compliance"]} <= {"pass", "not_applicable"}
    assert rep["scope"] == {"type": "run", "run_id": "run-1"} and rep["warnings"] == []
    assert all(a["status"] == "confirmed (trusted block hash)" for a in rep["anchors"])
    assert "claimed locator" in rep["anchors"][0]["tx_hash"] and "claimed locator" in rep["anchors"][0]["log_index"]


# --- item 1: no vacuous success ----------------------------------------------------------------


def test_a_header_and_an_end_record_is_invalid(honest, capsys):
    objs = read_records(honest)
    write_records(honest, [objs[0]])
    code, rep, _ = _verify(honest.args("--rules", "eu-ai-act"), capsys)
    msgs = [f["message"] for f in _checks(rep)["vacuous"]]
    assert code == 1 and rep["verdict"] == "invalid"
    assert "no checkpoint signed by a trusted log key: nothing is proven" in msgs
    assert "no event in scope: nothing is proven" in msgs
    # a rule set over no run fails; nothing is "not applicable" without a reason
    assert all(r["status"] == "fail" for r in rep["compliance"])


def test_every_event_removed_is_invalid(honest, capsys):
    write_records(honest, [o for o in read_records(honest) if o["kind"] not in ("event", "run")])
    code, rep, _ = _verify(honest.args(), capsys)
    assert code == 1 and "no event in scope: nothing is proven" in [f["message"] for f in _checks(rep)["vacuous"]]


def test_a_header_naming_a_run_that_does_not_exist_is_invalid(honest, capsys):
    objs = read_records(honest)
    objs[0]["scope"] = {"type": "run", "run_id": "no-such-run"}
    write_records(honest, objs)
    code, rep, _ = _verify(honest.args(), capsys)
    assert code == 1
    assert {"check": "scope", "where": "header.scope",
            "message": "run 'no-such-run' has no events in this bundle"} in rep["findings"]


def test_a_run_without_run_start_is_invalid(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", events=run_events()[1:])
    code, rep, _ = _verify(b.args(), capsys)
    assert code == 1
    assert {"check": "scope", "where": "header.scope",
            "message": "run 'run-1' has no run.start record in this bundle"} in rep["findings"]


def test_run_scoped_rules_over_a_range_bundle_are_not_assessed(honest, capsys):
    objs = read_records(honest)
    n = sum(o["kind"] == "event" for o in objs)
    objs[0]["scope"] = {"type": "range", "start": 0, "end": n}
    write_records(honest, [o for o in objs if o["kind"] != "run"])
    code, rep, _ = _verify(honest.args(), capsys)
    assert code == 0, rep["findings"]  # integrity alone is proven
    code, rep, _ = _verify(honest.args("--rules", "eu-ai-act"), capsys)
    # eu-ai-act (= @2): every rule not_applicable, each saying why; still not VALID (exit 1)
    assert code == 1 and rep["verdict"] == "not-assessed" and rep["rule_set"] == "eu-ai-act@2"
    assert "cannot show a whole run" in rep["not_assessed"] and "eu-ai-act@2" in rep["not_assessed"]
    assert rep["compliance"] and {r["status"] for r in rep["compliance"]} == {"not_applicable"}
    assert all(x["detail"] == rep["not_assessed"] for r in rep["compliance"] for x in r["runs"])
    code, rep, _ = _verify(honest.args("--rules", "eu-ai-act@1"), capsys)
    assert code == 1 and rep["verdict"] == "not-assessed" and rep["compliance"] is None  # @1 as it was
    code = main([str(a) for a in honest.args("--rules", "eu-ai-act")])
    text = capsys.readouterr().out
    assert code == 1 and "RULES NOT ASSESSED" in text and "completeness of a run is not claimed" in text
    assert "NOT_APPLICABLE  human-oversight" in text


# --- item 3: only confirmed anchors count ------------------------------------------------------


def test_unconfirmed_anchors_count_for_nothing(tmp_path, capsys):
    # Anchored ten days late, and no block hash or --rpc to confirm the anchor.
    b = build_bundle(tmp_path / "b.jsonl", anchor_delay=10 * 86400)
    code, rep, _ = _verify(_no_pins(b, "--rules", "eu-ai-act"), capsys)
    assert rep["anchors"][0]["status"] == "unconfirmed" and rep["counts"]["events_anchored"] == 0
    assert code == 1
    assert _rule(rep, "anchoring-delay")["status"] == "fail"
    assert "not anchored" in _rule(rep, "anchoring-delay")["runs"][0]["detail"]
    assert _rule(rep, "released-weights")["status"] == "fail"
    assert "no anchored checkpoint.save" in _rule(rep, "released-weights")["runs"][0]["detail"]


def test_a_pinned_chain_requires_every_event_under_a_confirmed_anchor(honest, capsys):
    args = honest.args()
    i = args.index("--trusted-block-hash")
    del args[i:i + 2]  # chain id and contract pinned, no block hash, no --rpc
    code, rep, _ = _verify(args, capsys)
    uncovered = _checks(rep)["anchor.coverage"]
    assert code == 1 and len(uncovered) == rep["counts"]["events"]
    assert uncovered[0]["message"].startswith("not under a confirmed anchored checkpoint")
    code, rep, _ = _verify(args + ["--allow-unanchored"], capsys)
    assert code == 0 and rep["anchors"][0]["status"] == "unconfirmed"


def test_a_block_hash_that_is_not_trusted_confirms_nothing(honest, capsys):
    args = honest.args()
    args[args.index("--trusted-block-hash") + 1] = "0x" + "11" * 32
    code, rep, _ = _verify(args, capsys)
    # the anchor is listed as unconfirmed, so with the chain pinned no event is covered
    assert code == 1 and rep["anchors"][0]["status"] == "unconfirmed"
    assert len(_checks(rep)["anchor.coverage"]) == rep["counts"]["events"]
    assert any("0x" + "11" * 32 + " is not the block of any anchor" in w for w in rep["warnings"])


def test_events_beyond_the_last_anchor_are_uncovered_when_the_chain_is_pinned(tmp_path, capsys):
    n = len(run_events())
    b = build_bundle(tmp_path / "b.jsonl", checkpoint_sizes=[4, n], anchor_sizes=[4])
    code, rep, _ = _verify(b.args(), capsys)
    where = [f["where"].split(" ")[1] for f in _checks(rep)["anchor.coverage"]]
    assert code == 1 and where == [str(i) for i in range(4, n)]


# --- item 5: explicit trust inputs -------------------------------------------------------------


def test_a_key_value_is_never_read_as_a_file(honest, capsys, tmp_path, monkeypatch):
    # A directory shipped with the bundle carries a file named like the genuine key, holding another key.
    other = build_bundle(tmp_path / "other.jsonl", log_id="log-2")
    monkeypatch.chdir(tmp_path)
    Path("logkey").write_text(other.log_vkey)
    args = honest.args()
    args[args.index("--log-key") + 1] = "logkey"
    code, _, err = _verify(args, capsys)
    assert code == 2 and "--log-key logkey" in err  # "logkey" is not a vkey value; the file is not read
    # Files are read only when asked for, and the report names the source exactly.
    Path("genuine.vkey").write_text(honest.log_vkey + "\n")
    args[args.index("--log-key") + 1] = "@genuine.vkey"
    code, rep, _ = _verify(args, capsys)
    assert code == 0 and rep["trusted"]["log_keys_source"].endswith("pinned: --log-key @genuine.vkey (file)")
    i = args.index("--log-key")
    args[i:i + 2] = ["--log-key-file", str(tmp_path / "genuine.vkey")]
    Path("p.json").write_text(json.dumps({"public_key": honest.producer_keys[0]}))
    args += ["--producer-key-file", "p.json"]
    code, rep, _ = _verify(args, capsys)
    assert code == 0 and rep["trusted"]["log_keys_source"].endswith(f"pinned: --log-key-file {tmp_path / 'genuine.vkey'} (file)")
    assert "--producer-key-file p.json (file)" in rep["trusted"]["producer_keys_source"]


def test_keys_from_the_exporter_are_never_trusted(honest, capsys):
    """--trust-bundle-producers and --trust-bundle-log-key are gone (issue 12): a bundle whose
    producer keys are neither registered in the log's key events nor pinned proves nothing."""
    for flag in ("--trust-bundle-producers", "--trust-bundle-log-key"):
        with pytest.raises(SystemExit) as e:
            main([str(honest.path), flag])
        assert e.value.code == 2
    capsys.readouterr()
    args = [a for a in honest.args() if a not in honest.producer_keys and a != "--producer-key"]
    code, rep, _ = _verify(args, capsys)
    assert code == 1
    assert "no producer key is proven" in _checks(rep)["producer_key"][0]["message"]


def test_a_header_log_key_that_differs_from_the_pinned_key_is_flagged(honest, capsys):
    objs = read_records(honest)
    objs[0]["log"]["public_key"] = base64.b64encode(b"\x07" * 32).decode()
    write_records(honest, objs)
    code, rep, _ = _verify(honest.args(), capsys)
    assert code == 0 and any("header's log key differs" in w for w in rep["warnings"])


# --- item 6: clocks and revocation -------------------------------------------------------------


def test_an_event_dated_after_its_anchor_block_is_a_finding(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", anchor_delay=-3600)
    code, rep, _ = _verify(b.args(), capsys)
    clock = _checks(rep)["clock"]
    assert code == 1 and "after the block time of the anchor that covers it (allowed skew 300s)" in clock[-1]["message"]
    # within the configured skew: a negative delay, reported as such
    code, rep, _ = _verify(b.args("--max-clock-skew", "7200", "--rules", "eu-ai-act"), capsys)
    assert code == 0, rep["findings"]
    assert "negative delay" in _rule(rep, "anchoring-delay")["runs"][0]["detail"]
    assert "event times are the producer's claim" in _rule(rep, "anchoring-delay")["runs"][0]["detail"]


def test_timestamps_going_backwards_along_a_producer_chain_are_reported(tmp_path, capsys):
    n = len(run_events())
    times = [float(k) for k in range(n)]
    times[5] = -100.0
    b = build_bundle(tmp_path / "b.jsonl", times=times)
    code, rep, _ = _verify(b.args(), capsys)
    clock = _checks(rep)["clock"]
    assert code == 1 and len(clock) == 1 and clock[0]["where"].startswith("event 5 ")
    assert "earlier than a previous event of producer" in clock[0]["message"]


def test_revocation_is_judged_by_log_position_not_by_time(tmp_path, capsys):
    """A revoked key's events after its producer.revoke key event fail, whatever their times
    (back-dated before everything here); its events before it stay valid (docs/keys.md)."""
    n = len(run_events())
    b = build_bundle(tmp_path / "b.jsonl", producers=2, key_events=True, revoke_after=4,
                     times=[-1000.0 + k for k in range(n)])
    code, rep, _ = _verify(b.minimal_args(), capsys)
    found = _checks(rep)["producer_key"]
    # producer 0 wrote the even positions: those after position 4 (6, 8, 10) come after the revocation
    late = [k for k in range(n) if k % 2 == 0 and k > 4]
    assert code == 1 and len(found) == len(late), found
    assert all("was revoked at index" in f["message"] for f in found)
    keys = {p["key_id"]: p for p in rep["producer_keys"]}
    assert sorted(p["revoked_at_index"] is not None for p in keys.values()) == [False, True]
    # the same run without the revocation passes with nothing but chain id, contract and a block hash
    ok = build_bundle(tmp_path / "ok.jsonl", producers=2, key_events=True, times=[-1000.0 + k for k in range(n)])
    code, rep, _ = _verify(ok.minimal_args("--max-clock-skew", "100000"), capsys)
    assert code == 0, rep["findings"]


# --- item 7: privacy replay --------------------------------------------------------------------


def _privacy_run(tmp_path, *, spend: dict | None = None, extra: list | None = None, delta: float = 1e-5,
                 dp_steps: int | None = None):
    evs = run_events()
    start = evs[0][1]
    start["declared"]["privacy_budget"]["delta"] = delta
    out = []
    for typ, body in evs:
        if typ == "policy.update" and dp_steps is not None and body["step"] == 0:
            body = {**body, "dp_steps": dp_steps}
            typ = "reward_model.update"
        if typ == "privacy.spend" and spend is not None:
            body = {**body, **spend}
        out.append((typ, body))
    i = next(k for k, (t, _) in enumerate(out) if t == "run.end")
    out[i:i] = extra or []
    return build_bundle(tmp_path / "p.jsonl", events=out)


def _privacy(b, capsys, *extra) -> tuple[int, dict]:
    code, rep, _ = _verify(b.args("--rules", "eu-ai-act", *extra), capsys)
    return code, _rule(rep, "privacy-budget")


def test_honest_privacy_spend_passes(tmp_path, capsys):
    code, rule = _privacy(_privacy_run(tmp_path, dp_steps=1000), capsys)
    assert code == 0 and rule["status"] == "pass", rule


def test_under_claimed_steps_against_recorded_dp_updates_fail(tmp_path, capsys):
    code, rule = _privacy(_privacy_run(tmp_path, spend={"steps": 50, "epsilon": 0.1}, dp_steps=5000), capsys)
    assert code == 1 and rule["status"] == "fail"
    assert "records 5000 DP-SGD steps but its privacy.spend records account for only 50" in rule["runs"][0]["detail"]


def test_a_declared_delta_of_one_half_fails(tmp_path, capsys):
    code, rule = _privacy(_privacy_run(tmp_path, delta=0.5, spend={"delta": 0.5}), capsys)
    assert code == 1 and "declared delta 0.5 exceeds the bound 0.001 (1/records" in rule["runs"][0]["detail"]
    code, rule = _privacy(_privacy_run(tmp_path, delta=0.5, spend={"delta": 0.5}), capsys, "--max-delta", "0.6")
    assert rule["status"] != "fail" or "exceeds the bound" not in rule["runs"][0]["detail"]


def test_a_claim_at_another_delta_is_checked_at_its_own_delta(tmp_path, capsys):
    # claimed epsilon 0.5 at delta 1e-3: the replay at 1e-3 is ~1.1, so the claim understates
    code, rule = _privacy(_privacy_run(tmp_path, spend={"delta": 1e-3, "epsilon": 0.5}), capsys)
    assert code == 1 and "claim(s) below the replay at their own delta" in rule["runs"][0]["detail"]


def test_a_recorded_budget_exceeded_fails_with_the_event(tmp_path, capsys):
    exceeded = ("privacy.budget_exceeded", {"mechanism": "poisson_subsampled_gaussian", "noise_multiplier": 0.5,
                                            "sample_rate": 0.5, "steps": 10000, "delta": 1e-5, "epsilon": 90.0,
                                            "declared_epsilon": 8.0, "epsilon_before": 1.7})
    code, rule = _privacy(_privacy_run(tmp_path, extra=[exceeded]), capsys)
    assert code == 1 and "privacy.budget_exceeded" in rule["runs"][0]["detail"]
    assert rule["runs"][0]["evidence"][0]["type"] == "privacy.budget_exceeded"


def test_a_zero_step_zero_noise_spend_is_not_a_false_fail(tmp_path, capsys):
    zero = ("privacy.spend", {"accountant": "rdp", "library": "dp-accounting", "library_version": "0.6.0",
                              "mechanism": "poisson_subsampled_gaussian", "noise_multiplier": 0, "sample_rate": 0.01,
                              "steps": 0, "delta": 1e-5, "epsilon": 1.7117701662429012})
    code, rule = _privacy(_privacy_run(tmp_path, extra=[zero]), capsys)
    assert code == 0 and rule["status"] == "pass", rule


@pytest.mark.parametrize("sigma", [1e-200, 1e300])
def test_extreme_noise_multipliers_are_findings(tmp_path, capsys, sigma):
    code, rule = _privacy(_privacy_run(tmp_path, spend={"noise_multiplier": sigma}), capsys)
    assert code == 1 and rule["status"] == "fail"
    assert "outside the range the accountant can evaluate" in json.dumps(rule["runs"][0]["evidence"])


def test_an_infinite_replay_gives_a_strict_json_report(tmp_path, capsys):
    # no noise at all: the replayed epsilon is infinite; the report must still be strict JSON
    code, rule = _privacy(_privacy_run(tmp_path, spend={"noise_multiplier": 0}), capsys)
    assert code == 1 and rule["status"] == "fail"


# --- item 9: hostile input ---------------------------------------------------------------------


def test_a_block_timestamp_of_2_to_the_1100_is_a_finding(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", block_time=2**1100)
    html = tmp_path / "r.html"
    code, rep, _ = _verify(b.args("--html", html, "--rules", "eu-ai-act"), capsys)
    assert code == 1 and "before the year 10000" in _checks(rep)["anchor.timestamp"][0]["message"]
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_a_lone_surrogate_in_the_origin_is_a_finding(honest, capsys, tmp_path):
    objs = read_records(honest)
    objs[0]["log"]["origin"] = "rlhf\ud800"
    write_records(honest, objs)
    code, rep, _ = _verify(honest.args("--html", tmp_path / "r.html"), capsys)
    assert code == 1
    assert {"check": "header", "where": "header.log.origin",
            "message": "origin is not valid Unicode text (lone surrogate)"} in rep["findings"]


def test_duplicate_keys_are_rejected_in_lines_and_in_events(honest, capsys):
    text = honest.path.read_text().splitlines()
    k = next(i for i, line in enumerate(text) if '"kind": "event"' in line and '"run.end"' in line)
    # inside the signed event body: a second "status" that a last-one-wins reader would see
    text[k] = text[k].replace('"status": "completed"', '"status": "failed", "status": "completed"', 1)
    text[0] = text[0].replace('"mode": "inclusion"', '"mode": "tree", "mode": "inclusion"', 1)
    honest.path.write_text("\n".join(text) + "\n")
    code, rep, _ = _verify(honest.args(), capsys)
    dups = _checks(rep)["json.duplicate_key"]
    assert code == 1 and [d["where"] for d in dups][0] == "line 1"
    assert "duplicate member name 'status'" in dups[1]["message"] and "line" in dups[1]["where"]


def _resign(b, objs: list[dict], edit) -> None:
    for o in objs:
        if o["kind"] == "checkpoint":
            o["note"] = edit(o["note"])
    write_records(b, objs)


def test_a_failing_signature_by_the_trusted_key_rejects_the_note(honest, capsys):
    def bad_first(note: str) -> str:
        body, sigs = note.split("\n\n", 1)
        line = sigs.splitlines()[0]
        name, sig = line.rsplit(" ", 1)
        raw = bytearray(base64.b64decode(sig))
        raw[10] ^= 1
        return body + "\n\n" + name + " " + base64.b64encode(bytes(raw)).decode() + "\n" + line + "\n"
    objs = read_records(honest)
    _resign(honest, objs, bad_first)
    code, rep, _ = _verify(honest.args(), capsys)
    assert code == 1 and "does not verify (the note is rejected)" in _checks(rep)["checkpoint"][0]["message"]


def test_more_than_100_signatures_reject_the_note(honest, capsys):
    def many(note: str) -> str:
        body, sigs = note.split("\n\n", 1)
        filler = "".join(f"\u2014 other{i} {base64.b64encode(os.urandom(68)).decode()}\n" for i in range(100))
        return body + "\n\n" + sigs + filler
    objs = read_records(honest)
    _resign(honest, objs, many)
    code, rep, _ = _verify(honest.args(), capsys)
    assert code == 1 and "more than 100" in _checks(rep)["checkpoint"][0]["message"]
