"""End-to-end: the CLI on ledger-produced bundles, malformed input, compliance failures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from factory import build_bundle, run_events

from rlhf_verifier.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err


@pytest.mark.parametrize("mode", ["inclusion", "tree"])
def test_valid_bundle_json_report(tmp_path, capsys, mode):
    b = build_bundle(tmp_path / "b.jsonl", mode=mode, checkpoint_sizes=[5, 12 + 2 * (mode == "tree")],
                     extra_leaves=2 if mode == "tree" else 0)
    code, out, _ = run_cli(b.args("--rules", "eu-ai-act", "--json"), capsys)
    rep = json.loads(out)
    assert code == 0 and rep["verdict"] == "valid"
    assert rep["trusted"]["log_keys"] == [b.log_vkey]
    assert all(r["status"] == "pass" for r in rep["compliance"])
    assert all(a["status"].startswith("confirmed") for a in rep["anchors"])


def test_compliance_failures_name_evidence(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", events=run_events(2, epsilon_budget=1.0, released_ok=False, retention_days=30),
                     anchor_delay=7200)
    code, out, _ = run_cli(b.args("--rules", "eu-ai-act", "--json"), capsys)
    rep = json.loads(out)
    status = {r["id"]: r for r in rep["compliance"]}
    assert code == 1 and rep["integrity"] == "valid" and rep["verdict"] == "non-compliant"
    for rid in ("privacy-budget", "released-weights", "retention", "anchoring-delay"):
        assert status[rid]["status"] == "fail", rid
        assert status[rid]["runs"][0]["evidence"], rid
    assert status["compute"]["status"] == "pass"


def test_unanchored_events_and_untrusted_block(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", checkpoint_sizes=[5, 12], anchor_sizes=[5])
    b.block_hashes = ["0x" + "00" * 32]
    code, out, _ = run_cli(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and "is not the block of any anchor in this bundle" in out and "[anchor.coverage]" in out


def test_wrong_keys_and_tampered_event(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    other = build_bundle(tmp_path / "o.jsonl", log_id="other-log")
    from rlhf_ledger.core.checkpoints import vkey
    from rlhf_ledger.core.keys import Signer

    stranger = vkey("rlhf-ledger.local/log-1", Signer.generate().public_key)  # the right name, another key
    args = b.args()
    args[args.index("--log-key") + 1] = stranger
    code, out, _ = run_cli(args, capsys)
    assert code == 1 and "[log_key]" in out and "is not the key the contract holds" in out
    # with no anchor confirmed, the wrong pinned key is all there is: no checkpoint verifies
    code, out, _ = run_cli([b.path, "--log-key", other.log_vkey, "--producer-key", b.producer_keys[0]], capsys)
    assert code == 1 and "not signed by any trusted log key" in out
    lines = b.path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"kind": "event"' in line)
    rec = json.loads(lines[i])
    rec["envelope"]["event"]["body"]["method"] = "ppo"
    lines[i] = json.dumps(rec)
    b.path.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(b.args(), capsys)
    assert code == 1 and "[signature] event 0 (" in out and "[inclusion] event 0" in out


def test_dropped_event_breaks_chain_and_count(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    lines = b.path.read_text().splitlines()
    i = [k for k, line in enumerate(lines) if '"kind": "event"' in line][3]
    del lines[i]
    b.path.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(b.args(), capsys)
    assert code == 1 and "[seq_chain]" in out and "[truncation]" in out


MALFORMED = {
    "truncated": lambda lines: lines[:-3],
    "wrong_version": lambda lines: [lines[0].replace('"version": 2', '"version": 1')] + lines[1:],
    "not_json": lambda lines: lines[:3] + ["{not json"] + lines[4:],
    "huge_number": lambda lines: lines[:1] + [lines[1].replace('"size": ', '"size": 1' + "0" * 400 + ", \"x\": ")] + lines[2:],
    "huge_integer_5000_digits": lambda lines: lines[:1] + [lines[1].replace('"size": ', '"size": 1' + "0" * 5000 + ", \"x\": ")] + lines[2:],
    "huge_float": lambda lines: lines[:-2] + [lines[-2].replace('"index": ', '"index": 1e400, "y": ')] + lines[-1:],
    "deep_nesting": lambda lines: lines[:-2] + ['{"kind": "event", "x": ' + "[" * 100000 + "]" * 100000 + "}"] + lines[-1:],
    "wrong_types": lambda lines: lines[:1] + ['{"kind": "checkpoint", "size": "5", "root": 7, "note": []}'] + lines[1:],
    "empty": lambda lines: [],
    "binary": lambda lines: ["\udcff\udcfe"],
    "first_not_header": lambda lines: lines[1:],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_bundles(tmp_path, capsys, name):
    b = build_bundle(tmp_path / "b.jsonl")
    lines = MALFORMED[name](b.path.read_text().splitlines())
    b.path.write_bytes(("\n".join(lines) + ("\n" if lines else "")).encode("utf-8", "surrogateescape"))
    code, out, err = run_cli(b.args(), capsys)
    assert code in (1, 2), (name, code)
    msg = (out + err).strip()
    assert msg and len(err.strip().splitlines()) <= 1
    expect = {"truncated": "truncat", "wrong_version": "unsupported bundle version", "not_json": "not valid JSON",
              "huge_number": "checkpoint", "huge_integer_5000_digits": "line 2", "huge_float": "overflows", "deep_nesting": "nested deeper",
              "wrong_types": "checkpoint", "empty": "empty", "binary": "UTF-8", "first_not_header": "header"}[name]
    assert expect in msg, msg


def test_missing_trust_is_exit_2(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    code, _, err = run_cli([b.path], capsys)
    assert code == 2 and "nothing to verify against" in err
    code, _, err = run_cli([tmp_path / "missing.jsonl", "--trusted-block-hash", b.block_hashes[0]], capsys)
    assert code == 2 and "cannot open" in err


def test_console_script_and_pool_path(tmp_path):
    """The installed entry point, forced through the worker pool."""
    b = build_bundle(tmp_path / "b.jsonl", events=run_events(40))
    exe = Path(sys.executable).parent / "rlhf-verify"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rlhf_verifier"]
    p = subprocess.run(cmd + b.args("--jobs", "2", "--rules", "eu-ai-act"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "VALID" in p.stdout and "Events: 49 " in p.stdout


@pytest.mark.parametrize("size", ["5.0", "true"])
def test_a_consistency_size_that_is_not_an_integer_is_a_finding(tmp_path, capsys, size):
    """5.0 and true equal a checkpoint size as dict keys; they are still not sizes (bundle-format.md:
    from/to are integers), and 5.0 used to reach the proof arithmetic and crash the run (exit 2)."""
    b = build_bundle(tmp_path / "b.jsonl", checkpoint_sizes=[5, 12])
    code, _, _ = run_cli(b.args(), capsys)
    assert code == 0  # the honest bundle, with its consistency record 5 -> 12
    text = b.path.read_text()
    assert text.count('"from": 5,') == 1
    if size == "true":  # a checkpoint of size 1 for `true` to equal
        b = build_bundle(tmp_path / "b.jsonl", checkpoint_sizes=[1, 12])
        text = b.path.read_text()
        assert text.count('"from": 1,') == 1
        text = text.replace('"from": 1,', '"from": true,')
    else:
        text = text.replace('"from": 5,', '"from": 5.0,')
    b.path.write_text(text)
    code, out, err = run_cli(b.args(), capsys)
    assert code == 1 and "internal error" not in err, err
    assert "from/to are not verified checkpoint sizes" in out
