"""`rlhf-ledger erase-run` / `erase-subject` as real subprocesses: what they print, that a second
erasure says so and writes nothing, clear one-line errors, and that an auditor bundle of an
erased run exports (erased openings marked) and verifies with `rlhf-verify`."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from rlhf_ledger.core.events import commit_fields
from rlhf_ledger.core.keys import read_key_file
from tests.ledger.helpers import Producer
from tests.ledger.test_cli import ok, one_line_error, run

ALICE = "anp:" + "a1" * 32
BOB = "anp:" + "b2" * 32


@pytest.fixture
def world(tmp_path):
    """Alice's annotations in runs r1, r2 (and Bob's in r2), appended through the CLI."""
    h = tmp_path / "home"
    ok(run(h, "init"))
    ok(run(h, "keygen", str(h / "producer.key")))
    ok(run(h, "register", str(h / "producer.key")))
    p = Producer(signer=read_key_file(h / "producer.key", "cli-test-passphrase"))
    lines = [p.event(r, "run.start", {"method": "dpo", "hyperparameters": {"lr": 1e-5}}) for r in ("r1", "r2")]
    for run_id, people in (("r1", [ALICE]), ("r2", [ALICE]), ("r2", [BOB])):
        body, op = commit_fields({"batch_id": run_id, "prompts": [f"{people[0][:8]} wrote this in {run_id}"]}, ["prompts"])
        env = p.event(run_id, "annotation.batch", body)
        env["openings"], env["subjects"] = op, {"prompts": people}
        lines.append(env)
    (h / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    ok(run(h, "append", str(h / "events.jsonl")))
    ok(run(h, "checkpoint"))
    return h, p


def test_erase_subject_dry_run_then_erase_then_again(world):
    h, _ = world
    out = ok(run(h, "erase-subject", ALICE, "--dry-run"))
    assert out.splitlines() == [f"subject {ALICE}: active", "  log default run r1: 1 entries with openings naming it",
                                "  log default run r2: 1 entries with openings naming it"]
    out = ok(run(h, "erase-subject", ALICE, "--yes"))
    assert f"subject {ALICE}: key destroyed, openings of 2 entries in 2 run(s) unreadable" in out
    assert "log default: erasure recorded at index 6 (2 entries, 2 runs)" in out  # after 1 key event + 5 events
    out = ok(run(h, "erase-subject", ALICE, "--yes"))
    assert out.strip() == f"subject {ALICE} was already erased (erasure events at log default index 6); no new event written"
    assert "erased (erasure events at log default index 6)" in ok(run(h, "erase-subject", ALICE, "--dry-run"))
    shown = json.loads(ok(run(h, "show", "--index", "6")))
    assert shown["event"]["run_id"] == "rlhf-ledger:erasures" and shown["event"]["body"]["subject"] == ALICE
    assert "no entry at index 7" in one_line_error(run(h, "show", "--index", "7"))  # the second erasure wrote nothing
    ok(run(h, "checkpoint"))
    assert "consistent with every signed checkpoint" in ok(run(h, "audit"))


def test_erase_subject_errors_are_one_line(world):
    h, _ = world
    carol = "anp:" + "c3" * 32
    assert one_line_error(run(h, "erase-subject", carol, "--yes")) == f"Error: subject: no stored opening names subject {carol}"
    err = one_line_error(run(h, "erase-subject", "alice@example.com", "--yes"))
    assert "keyed pseudonym anp:<64 lowercase hex>" in err
    err = one_line_error(run(h, "erase-subject", carol, "--dry-run"))
    assert "no stored opening names subject" in err


def test_erase_run_twice_and_unknown_run(world):
    h, _ = world
    out = ok(run(h, "erase-run", "--yes", "r2"))
    assert out.strip() == "run r2 (log default): payload key destroyed, openings of 2 entries unreadable; erasure recorded at index 6"
    out = ok(run(h, "erase-run", "--yes", "r2"))
    assert out.strip() == "run r2 (log default) was already erased (erasure event at log default index 6); no new event written"
    err = one_line_error(run(h, "erase-run", "--yes", "nope"))
    assert "run 'nope' has no stored openings in log 'default': nothing to erase" in err


def test_export_with_payloads_marks_erased_openings_and_verifies(world, tmp_path):
    h, p = world
    ok(run(h, "erase-subject", ALICE, "--yes"))
    ok(run(h, "erase-run", "--yes", "r2"))
    ok(run(h, "checkpoint"))
    vkey = ok(run(h, "show", "--log-key")).strip()

    def verify(path):
        v = subprocess.run([sys.executable, "-m", "rlhf_verifier", str(path), "--log-key", vkey,
                            "--producer-key", base64.b64encode(p.signer.public_key).decode(), "--json", "--no-progress"],
                           capture_output=True, text=True, timeout=120)
        return json.loads(v.stdout)

    events = {}
    for run_id in ("r1", "r2"):
        out = tmp_path / f"{run_id}.jsonl"
        ok(run(h, "export", "--run", run_id, "--with-payloads", "-o", str(out)))
        recs = [json.loads(x) for x in out.read_text().splitlines()]
        events[run_id] = [r for r in recs if r["kind"] == "event"]
        assert "wrote this" not in out.read_text()
        report = verify(out)
        assert report["integrity"] == "valid" and not report["findings"], report
    batches = [e for e in events["r1"] if e["envelope"]["event"]["type"] == "annotation.batch"]
    assert [e.get("erased") for e in batches] == [{"prompts": "subject"}] and "openings" not in batches[0]
    assert [e.get("erased") for e in events["r2"]] == [None, {"prompts": "run"}, {"prompts": "run"}]  # run.start has none
    # a forged mark (on a member that is not a commitment) is refused, though no signed byte changed
    lines = (tmp_path / "r1.jsonl").read_text().splitlines()
    i = next(k for k, x in enumerate(lines) if '"erased"' in x)
    lines[i] = lines[i].replace('"erased":{"prompts":"subject"}', '"erased":{"batch_id":"subject","prompts":"subject"}')
    (tmp_path / "forged.jsonl").write_text("\n".join(lines) + "\n")
    report = verify(tmp_path / "forged.jsonl")
    assert report["integrity"] == "invalid"
    assert [f["check"] for f in report["findings"]] == ["openings"] and "no commitment" in report["findings"][0]["message"]


def test_export_keeps_the_openings_of_others(world, tmp_path):
    h, _ = world
    ok(run(h, "erase-subject", ALICE, "--yes"))
    out = tmp_path / "r2.jsonl"
    ok(run(h, "export", "--run", "r2", "--with-payloads", "-o", str(out)))
    recs = [json.loads(x) for x in out.read_text().splitlines() if '"kind":"event"' in x]
    assert [r.get("erased") for r in recs] == [None, {"prompts": "subject"}, None]
    assert recs[2]["openings"]["prompts"]["value"] == [f"{BOB[:8]} wrote this in r2"]


def test_record_from_the_shell_names_the_subject(world, tmp_path):
    h, _ = world
    body = json.dumps({"reviewer": BOB, "decision": "approve", "subject": "model v1", "notes": "bob's private notes"})
    spool = ["--spool", str(tmp_path / "spool")]
    err = one_line_error(run(h, "record", "--key", str(h / "producer.key"), "--log", "default", "--run", "review",
                             "--type", "human.review", "--body", body, "--commit", "notes", "--subject", "notes=bob", *spool))
    assert "--subject 'notes=bob': give FIELD=anp:<64 lowercase hex>" in err
    out = ok(run(h, "record", "--key", str(h / "producer.key"), "--log", "default", "--run", "review", "--type", "human.review",
                 "--body", body, "--commit", "notes", "--subject", f"notes={BOB}", *spool))
    index = int(out.split("at index ")[1].split()[0])
    assert "log default run review: 1 entries" in ok(run(h, "erase-subject", BOB, "--dry-run"))
    ok(run(h, "erase-subject", BOB, "--yes"))
    ok(run(h, "checkpoint"))
    out_file = tmp_path / "review.jsonl"
    ok(run(h, "export", "--index", str(index), "--with-payloads", "-o", str(out_file)))
    [rec] = [json.loads(x) for x in out_file.read_text().splitlines() if '"kind":"event"' in x]
    assert rec["erased"] == {"notes": "subject"} and "private notes" not in out_file.read_text()
