"""The rlhf-ledger command line, run as a real subprocess: outputs, exit codes, one-line errors."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from rlhf_ledger.core import merkle
from rlhf_ledger.core.keys import read_key_file
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.slow  # the fast tier (`pytest --fast`) leaves these to the full suite


def run(home, *args, stdin: str | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLHF_LEDGER_HOME": str(home), "RLHF_LEDGER_PASSPHRASE": "cli-test-passphrase", **(env_extra or {})}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "rlhf_ledger.cli", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stderr
    return res.stdout


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    ok(run(h, "init", "--checkpoint-every-events", "4"))
    ok(run(h, "keygen", str(h / "producer.key"), "--label", "trainer"))
    ok(run(h, "register", str(h / "producer.key")))
    return h


@pytest.fixture
def events_file(home):
    p = Producer(signer=read_key_file(home / "producer.key", "cli-test-passphrase"))
    path = home / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in p.events(10)))
    return path, p


def test_keygen_writes_an_encrypted_key(home):
    doc = json.loads((home / "producer.key").read_text())
    assert doc["format"] == "rlhf-ledger-key/v1" and doc["kdf"]["name"] == "argon2id"
    assert oct((home / "producer.key").stat().st_mode)[-3:] == "600"
    seed = bytes(read_key_file(home / "producer.key", "cli-test-passphrase").signing_key)
    assert base64.b64encode(seed).decode() not in (home / "producer.key").read_text()
    err = one_line_error(run(home, "keygen", str(home / "producer.key")))
    assert "refusing to overwrite" in err


def test_keygen_without_passphrase_fails_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RLHF_LEDGER_PASSPHRASE"}
    res = subprocess.run([sys.executable, "-m", "rlhf_ledger.cli", "keygen", str(tmp_path / "k.key")], env=env,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert "RLHF_LEDGER_PASSPHRASE" in one_line_error(res)
    assert not (tmp_path / "k.key").exists()


def test_append_prove_show_audit(home, events_file):
    path, _ = events_file
    out = ok(run(home, "append", str(path)))
    assert "appended 10 events (0 already present)" in out
    again = ok(run(home, "append", "--json", str(path)))
    results = [json.loads(line) for line in again.splitlines()]
    # index 0 is the producer's key event (docs/keys.md)
    assert [r["index"] for r in results] == list(range(1, 11)) and all(r["duplicate"] for r in results)

    note = ok(run(home, "show", "--checkpoint"))
    assert note.splitlines()[1] == "11"  # checkpoint at the end of the 10-event batch (policy: every 4)
    proof = json.loads(ok(run(home, "prove", "--index", "3")))
    assert merkle.verify_inclusion(base64.b64decode(proof["leaf_hash"]), 3, proof["tree_size"],
                                   [base64.b64decode(h) for h in proof["proof"]], base64.b64decode(proof["root"]))
    assert proof["checkpoint"] == note
    cons = json.loads(ok(run(home, "prove", "--consistency", "4", "11")))
    assert merkle.verify_consistency(4, 11, [base64.b64decode(h) for h in cons["proof"]],
                                     base64.b64decode(cons["first_root"]), base64.b64decode(cons["second_root"]))
    tlog = ok(run(home, "prove", "--index", "3", "--tlog-proof"))
    assert tlog.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 3\n" in tlog
    event = json.loads(ok(run(home, "show", "--index", "2")))
    assert event["index"] == 2 and event["event"]["seq"] == 1
    key_event = json.loads(ok(run(home, "show", "--index", "0")))
    assert key_event["event"]["run_id"] == "rlhf-ledger:keys" and key_event["event"]["type"] == "producer.register"
    assert ok(run(home, "show", "--log-key")).startswith("rlhf-ledger.local/default+")
    assert "consistent with every signed checkpoint" in ok(run(home, "audit"))

    eng = sa.create_engine(f"sqlite:///{home / 'ledger.sqlite3'}")
    with eng.begin() as c:
        c.execute(sa.text("UPDATE entries SET entry = replace(entry, X'227374657022', X'227374617022') WHERE idx = 5"))
        c.execute(sa.text("DELETE FROM entries WHERE idx = 7"))
    eng.dispose()
    res = run(home, "audit")
    assert res.returncode == 1 and "entry index 7: missing" in res.stdout
    assert "entry 5:" in res.stdout and "Traceback" not in res.stderr


def test_append_reports_the_failing_line_and_keeps_earlier_batches(home, events_file):
    path, _ = events_file
    lines = path.read_text().splitlines()
    bad = json.loads(lines[6])
    bad["event"]["body"]["loss"] = 1.5  # signature no longer matches
    lines[6] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    err = one_line_error(run(home, "append", "--batch-size", "4", str(path)))
    assert f"{path}:7: bad_signature" in err and "4 events appended before it" in err
    assert json.loads(ok(run(home, "show", "--index", "4")))["index"] == 4
    assert "no entry at index 5" in one_line_error(run(home, "show", "--index", "5"))


@pytest.mark.parametrize(
    "stdin, expect",
    [
        ("{not json\n", "stdin:1: malformed JSON"),
        ('{"event": 1, "sig": "x"}\n', "stdin:1: invalid_event: events[0].event: must be a JSON object"),
        ("[1, 2]\n", "stdin:1: invalid_event"),
    ],
)
def test_bad_input_is_one_clear_line(home, stdin, expect):
    err = one_line_error(run(home, "append", stdin=stdin))
    assert expect in err


def test_unknown_key_and_wrong_usage(home):
    stranger = Producer()
    err = one_line_error(run(home, "append", stdin=json.dumps(stranger.events(1)[0]) + "\n"))
    assert "unknown_key" in err
    assert "exactly one" in one_line_error(run(home, "prove"))
    assert "no such log" in one_line_error(run(home, "show", "--log", "nope", "--log-key"))
    assert "log already exists" in one_line_error(run(home, "init"))
    assert "wrong passphrase" in one_line_error(run(home, "checkpoint", env_extra={"RLHF_LEDGER_PASSPHRASE": "wrong"}))


@pytest.mark.parametrize("threads", ["0", "1", "2"])
def test_append_keeps_whole_batches_before_a_malformed_line(home, events_file, threads):
    """The next batches are read and checked while one commits; a malformed line still leaves
    every whole batch before it committed and nothing of its own batch."""
    path, _ = events_file
    lines = path.read_text().splitlines()
    lines.insert(9, "{broken")
    path.write_text("\n".join(lines) + "\n")
    err = one_line_error(run(home, "append", "--batch-size", "4", "--threads", threads, str(path)))
    assert f"{path}:10: malformed JSON" in err and "8 events appended before it" in err
    assert json.loads(ok(run(home, "show", "--index", "8")))["index"] == 8
    assert "no entry at index 9" in one_line_error(run(home, "show", "--index", "9"))
