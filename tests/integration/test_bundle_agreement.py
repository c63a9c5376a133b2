"""Agreement: every bundle the ledger exports (anchored on a real anvil chain) verifies with the
independent verifier, through its command line, and a tampered export is rejected."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.core.events import commit_fields
from rlhf_ledger.export.bundle import Scope, export_bundle
from rlhf_ledger.store.ledger import Ledger
from tests.anchoring.conftest import FAST_RETRY
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.anvil
LOG = "agree"


@pytest.fixture
def anchored(anvil, owner, backend):
    data_dir, url = backend
    led = Ledger.open(data_dir, url)
    led.init_log(LOG, checkpoint_every_events=10_000)
    prods = [Producer(LOG), Producer(LOG)]
    for p in prods:
        led.register_producer(LOG, p.signer.public_key)
    store = LocalContentStore(data_dir / "content")
    client = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address, retry=FAST_RETRY)
    worker = AnchorWorker(led, client, store, LOG, confirmations=1)
    for rnd in range(3):
        # each run starts with its run.start (a run bundle without one is invalid, docs/verifier.md)
        batch = [prods[0].event(r, "run.start", {"method": "dpo", "hyperparameters": {"lr": 1e-5}})
                 for r in ("run-a", "run-b")] if rnd == 0 else []
        for p in prods:
            batch += p.events(5, run_id="run-a")
            body, op = commit_fields({"step": rnd, "prompt": f"secret {rnd}"}, ["prompt"])
            env = p.event(run_id="run-b", type="annotation.batch", body=body)
            env["openings"] = op
            batch.append(env)
        led.append(batch, log_id=LOG)
        led.checkpoint(LOG)
        worker.run_once()
        anvil.mine(2)
        worker.run_once()
    assert {a.status for a in led.anchors.for_log(LOG)} <= {"confirmed", "finalized"}
    yield led, store, owner
    led.close()


def _verify(path, led, owner, anvil, *extra) -> subprocess.CompletedProcess:
    """The regulator's minimal command (issue 12): chain id, contract and their own node; no key
    from the exporter: the log key comes from the contract, producer keys from the log."""
    cmd = [sys.executable, "-m", "rlhf_verifier", str(path),
           "--chain-id", str(anvil.chain_id), "--contract", owner.contract_address, "--json",
           "--rpc", anvil.rpc_url, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _final_block_hash(path) -> str:
    anchors = [json.loads(x) for x in path.read_text().splitlines() if '"kind":"anchor"' in x]
    return anchors[-1]["evidence"]["block_hash"]


@pytest.mark.parametrize(
    "scope, mode",
    [
        (Scope("event", index=4), None),
        (Scope("range", start=3, end=20), None),
        (Scope("run", run_id="run-a"), "inclusion"),
        (Scope("run", run_id="run-b"), "tree"),
    ],
)
def test_exported_bundles_verify(anchored, anvil, tmp_path, scope, mode):
    led, store, owner = anchored
    path = tmp_path / "b.rlhfbundle.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, scope, mode=mode, content_store=store)
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["verdict"] == "valid"
    info = led.log_info(LOG)
    assert report["trusted"]["log_keys"] == [info.vkey]
    assert "the contract's storage at block" in report["trusted"]["log_keys_source"]
    assert len(report["trusted"]["producer_keys"]) == 2
    # offline, with one block hash the regulator trusts (the final anchor's block)
    cmd = [sys.executable, "-m", "rlhf_verifier", str(path), "--chain-id", str(anvil.chain_id),
           "--contract", owner.contract_address, "--trusted-block-hash", _final_block_hash(path), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_auditor_bundle_openings_verify(anchored, anvil, tmp_path):
    led, store, owner = anchored
    path = tmp_path / "audit.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-b"), include_openings=True)
    assert "secret 1" in path.read_text()
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 0, res.stdout + res.stderr


def test_auditor_bundle_of_an_erased_run_verifies(anchored, anvil, tmp_path):
    """After `erase_run` (recorded by an erasure event appended after the anchors), the auditor
    export of the run marks every opening erased instead of aborting, and still verifies."""
    led, store, owner = anchored
    e = led.erase_run(LOG, "run-b")
    assert e.recorded == [(LOG, led.size(LOG) - 1)]
    path = tmp_path / "erased.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-b"), include_openings=True, content_store=store)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    batches = [r for r in recs if r["kind"] == "event" and r["envelope"]["event"]["type"] == "annotation.batch"]
    assert len(batches) == 6 and all(r["erased"] == {"prompt": "run"} and "openings" not in r for r in batches)
    assert "secret" not in path.read_text()
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 0, res.stdout + res.stderr


def test_tampered_export_is_rejected(anchored, anvil, tmp_path):
    led, store, owner = anchored
    path = tmp_path / "b.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-a"), content_store=store)
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"kind":"event"' in line and '"loss":0.25' in line)
    lines[i] = lines[i].replace('"loss":0.25', '"loss":0.26', 1)
    path.write_text("\n".join(lines) + "\n")
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 1, res.stdout + res.stderr


def _rewrite(path, keep) -> None:
    """Keep the records `keep` accepts, with the end counts recomputed (as an exporter would)."""
    objs = [json.loads(x) for x in path.read_text().splitlines()]
    objs = [o for o in objs[:-1] if keep(o)]
    objs.append({"kind": "end", "events": sum(o["kind"] == "event" for o in objs), "records": len(objs)})
    path.write_text("\n".join(json.dumps(o) for o in objs) + "\n")


@pytest.mark.parametrize("mode", ["inclusion", "tree"])
def test_exported_run_bundle_proves_completeness_and_omissions_fail(anchored, anvil, tmp_path, mode):
    """The ledger's real export of a run written by two producers, anchored on anvil: the run
    index (docs/run-index.md) is in the anchored manifest and the bundle; leaving out one event,
    or every event of one producer, is INVALID even with the end counts fixed up."""
    led, store, owner = anchored
    path = tmp_path / "b.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-a"), mode=mode, content_store=store)
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 0, res.stdout + res.stderr
    c = json.loads(res.stdout)["completeness"]
    assert c["status"] == "proven" and c["events"] == 31 and c["anchored_statement"] is True

    first = next(json.loads(x) for x in path.read_text().splitlines() if '"kind":"event"' in x)["index"]
    _rewrite(path, lambda o: not (o["kind"] == "event" and o["index"] == first + 3))
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 1
    msgs = [f["message"] for f in json.loads(res.stdout)["findings"] if f["check"] == "completeness"]
    assert any("the log has 31 events of this run" in m and "the bundle holds 30" in m for m in msgs), msgs

    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-a"), mode=mode, content_store=store)
    gone = sorted({json.loads(x)["envelope"]["event"]["producer"] for x in path.read_text().splitlines()
                   if '"kind":"event"' in x})[1]
    _rewrite(path, lambda o: not (o["kind"] == "event" and o["envelope"]["event"]["producer"] == gone))
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 1
    msgs = [f["message"] for f in json.loads(res.stdout)["findings"] if f["check"] == "completeness"]
    assert any(f"producer(s) {gone[:16]} wrote events of this run that the bundle omits" in m for m in msgs), msgs


def test_anchored_manifest_and_bundle_must_carry_the_same_run_index(anchored, anvil, tmp_path):
    """An exporter cannot swap in a run index other than the one the anchored manifest holds."""
    from rlhf_ledger.core.run_index import sign_index

    led, store, owner = anchored
    path = tmp_path / "b.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-a"), content_store=store)
    objs = [json.loads(x) for x in path.read_text().splitlines()]
    run = next(o for o in objs if o["kind"] == "run")
    # The log key holder signs a second, different index for the same size (one run dropped).
    rec = run["record"]
    records = [("run-a", rec)]
    signer = led.log_signer(LOG)
    idx, _ = sign_index(led.log_info(LOG).origin, run["checkpoint_size"], records, signer)
    run.update(note=idx.note, index=0, proof=[])
    path.write_text("\n".join(json.dumps(o) for o in objs) + "\n")
    res = _verify(path, led, owner, anvil)
    assert res.returncode == 1
    msgs = [f["message"] for f in json.loads(res.stdout)["findings"] if f["check"] == "completeness"]
    assert any("anchored manifest of checkpoint" in m and "different run index" in m for m in msgs), msgs
