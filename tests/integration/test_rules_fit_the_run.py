"""Rules that fit the run, end to end: runs recorded with the SDK into the real ledger (SQLite),
anchored by the real AnchorWorker on a real anvil chain, exported as run bundles and checked by
`rlhf-verify --rules eu-ai-act` (= eu-ai-act@2) as a subprocess with every trust input pinned.

- a reward-model run recorded as docs/event-types.md prescribes (reward_model.save, run.end
  naming it, a review of the release) passes every rule;
- a DPO run that saves its reward model after its last policy checkpoint still releases the
  policy by default (Run.released_digest) and passes;
- a DPO run that names its reward model as the released weights fails `released-weights`;
- a run whose reviewer rejected the release fails `human-oversight`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.export.bundle import Scope, export_bundle
from rlhf_ledger.sdk import DatasetManifest, LocalSink, Run, weights_digest
from rlhf_ledger.store.ledger import Ledger
from tests.anchoring.conftest import FAST_RETRY
from tests.sdk.helpers import tiny_model

pytestmark = pytest.mark.anvil
LOG = "rules"


def _record(led: Ledger, signer: Signer, tmp_path, run_id: str, method: str, *, wrong_release: bool = False,
            decision: str = "approve") -> str:
    policy, rm = tiny_model(1), tiny_model(2)
    run = Run(log_id=LOG, run_id=run_id, signer=signer, sink=LocalSink(led.append), method=method,
              hyperparameters={"lr": 1e-5}, base_model={"name": "tiny", "weights_digest": weights_digest(policy).digest},
              datasets=[DatasetManifest("prefs", "prefs", "internal", "CC0-1.0", "sha256:" + "1" * 64, 10, 100)],
              spool_dir=tmp_path / "spool" / run_id, pseudonym_key=b"k" * 32, backoff_base=0.01)
    with run:
        if method == "reward":
            run.reward_model_update(1, 0.6, accuracy=0.7)
            run.reward_model_save(1, rm)
        else:
            run.policy_update(1, 0.5, 0.1, 0.2, 0.05, 1.0)
            run.checkpoint(1, policy)
            run.reward_model_save(1, rm)  # saved last, yet not what a policy run releases
            if wrong_release:
                run.release(rm)
        run.evaluation("heldout", {"accuracy": 0.7})
        run.compute_usage("cpu", 1.5)
        run.review_release("reviewer-1", decision, notes="checked the evaluation")
        released = run.released_digest
    return released


@pytest.fixture
def anchored_runs(anvil, owner, tmp_path):
    led = Ledger.open(tmp_path / "data", None)
    led.init_log(LOG, checkpoint_every_events=10_000)
    signer = Signer.generate()
    led.register_producer(LOG, signer.public_key, "trainer")
    released = {
        "reward-run": _record(led, signer, tmp_path, "reward-run", "reward"),
        "dpo-run": _record(led, signer, tmp_path, "dpo-run", "dpo"),
        "dpo-releases-rm": _record(led, signer, tmp_path, "dpo-releases-rm", "dpo", wrong_release=True),
        "rejected": _record(led, signer, tmp_path, "rejected", "reward", decision="reject"),
    }
    store = LocalContentStore(tmp_path / "content")
    client = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address, retry=FAST_RETRY)
    worker = AnchorWorker(led, client, store, LOG, confirmations=1)
    led.checkpoint(LOG)
    worker.run_once()
    anvil.mine(2)
    worker.run_once()
    assert {a.status for a in led.anchors.for_log(LOG)} <= {"confirmed", "finalized"}
    yield led, store, owner, signer, released
    led.close()


def _verify(anchored, anvil, tmp_path, run_id: str) -> tuple[int, dict]:
    led, store, owner, signer, _ = anchored
    path = tmp_path / f"{run_id}.rlhfbundle.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id=run_id), content_store=store, require_anchor=True)
    cmd = [sys.executable, "-m", "rlhf_verifier", str(path), "--log-key", led.log_info(LOG).vkey,
           "--producer-key", base64.b64encode(signer.public_key).decode(), "--chain-id", str(anvil.chain_id),
           "--contract", owner.contract_address, "--rpc", anvil.rpc_url, "--rules", "eu-ai-act", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip(), res.stderr
    return res.returncode, json.loads(res.stdout)


def _status(rep: dict) -> dict[str, str]:
    return {r["id"]: r["status"] for r in rep["compliance"]}


def test_a_reward_model_run_recorded_as_prescribed_passes(anchored_runs, anvil, tmp_path):
    code, rep = _verify(anchored_runs, anvil, tmp_path, "reward-run")
    assert code == 0 and rep["verdict"] == "valid" and rep["rule_set"] == "eu-ai-act@2", rep["compliance"]
    assert set(_status(rep).values()) <= {"pass", "not_applicable"}
    assert _status(rep)["released-weights"] == "pass" and _status(rep)["human-oversight"] == "pass"
    rw = next(r for r in rep["compliance"] if r["id"] == "released-weights")["runs"][0]
    assert "last anchored reward_model.save (reward-model run 'reward')" in rw["detail"]
    [reviews] = rep["reviews"]
    assert reviews["reviews"][0]["names_released_weights"] and reviews["reviews"][0]["notes"] == "committed"
    assert reviews["reviews"][0]["subject"] == anchored_runs[4]["reward-run"]


def test_a_policy_run_releases_its_policy_not_the_reward_model_saved_last(anchored_runs, anvil, tmp_path):
    code, rep = _verify(anchored_runs, anvil, tmp_path, "dpo-run")
    assert code == 0 and rep["verdict"] == "valid", rep["compliance"]
    code, rep = _verify(anchored_runs, anvil, tmp_path, "dpo-releases-rm")
    assert code == 1 and rep["verdict"] == "non-compliant" and rep["compliance_failed"] == ["released-weights"]
    detail = next(r for r in rep["compliance"] if r["id"] == "released-weights")["runs"][0]["detail"]
    assert "it equals a reward_model.save, which names the reward model" in detail


def test_a_rejected_release_fails_human_oversight(anchored_runs, anvil, tmp_path):
    code, rep = _verify(anchored_runs, anvil, tmp_path, "rejected")
    assert code == 1 and rep["compliance_failed"] == ["human-oversight"]
    assert rep["reviews"][0]["reviews"][0]["decision"] == "reject"
