"""DP-SGD steps recorded by the Trainer callback are what the verifier's privacy replay checks
the run's spends against (issue 10, item 7; docs/sdk.md "Differential privacy").

One real TRL DPOTrainer job on a tiny local Llama, recorded into the real embedded ledger by two
callbacks with ``dp_sgd=True`` (two runs of the same training, so both see the same steps). After
training, one run records privacy.spend for every DP step taken, the other for one step only (an
under-stated spend). Each run's bundle, exported by the ledger, goes through the verifier with
``--rules eu-ai-act``: the honest run's privacy-budget rule passes, the other fails, naming the
recorded DP steps."""

from __future__ import annotations

import base64
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("trl")

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.export.bundle import Scope, export_bundle
from rlhf_ledger.sdk import DatasetManifest, LocalSink, Run, weights_digest
from rlhf_ledger.sdk.hf_callback import LedgerCallback
from rlhf_ledger.store.ledger import Ledger
from rlhf_verifier.cli import main as verify_main

from .hf_jobs import dpo_trainer, tiny_policy, tiny_tokenizer

LOG = "dp-log"
SIGMA, Q = 1.1, 0.01


def _run(run_id: str, signer: Signer, led: Ledger, base: str, tmp_path, **declared) -> Run:
    return Run(log_id=LOG, run_id=run_id, signer=signer, sink=LocalSink(led.append), method="dpo",
               hyperparameters={"note": "tiny"}, base_model={"name": "tiny-llama", "weights_digest": base},
               datasets=[DatasetManifest("prefs", "toy prefs", "generated in test", "CC0-1.0", "sha256:" + "2" * 64,
                                         100, 16)],
               declared=declared or {"privacy_budget": {"epsilon": 8.0, "delta": 1e-5}},
               spool_dir=tmp_path / f"spool-{run_id}")


def _privacy_rule(led: Ledger, run_id: str, signer: Signer, tmp_path, capsys) -> tuple[dict, dict]:
    path = tmp_path / f"{run_id}.rlhfbundle.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id=run_id))
    capsys.readouterr()
    verify_main([str(path), "--log-key", led.log_info(LOG).vkey, "--producer-key",
                 base64.b64encode(signer.public_key).decode(), "--rules", "eu-ai-act", "--json"])
    report = json.loads(capsys.readouterr().out)
    rule = next(r for r in report["compliance"] if r["id"] == "privacy-budget")
    return report, rule["runs"][0]


@pytest.mark.slow
def test_callback_dp_steps_are_checked_against_the_spends(tmp_path, capsys):
    led = Ledger.open(tmp_path / "data")
    try:
        led.init_log(LOG)
        signer = Signer.generate()
        led.register_producer(LOG, signer.public_key)
        tok = tiny_tokenizer()
        model = tiny_policy(tok)
        base = weights_digest(model).digest
        honest, under = _run("dp-honest", signer, led, base, tmp_path), _run("dp-under", signer, led, base, tmp_path)
        callbacks = [LedgerCallback(honest, dp_sgd=True), LedgerCallback(under, dp_sgd=True)]
        trainer = dpo_trainer(str(tmp_path / "out"), callbacks, model=model, tok=tok, max_steps=4, save_steps=4)
        trainer.train()
        steps = trainer.state.global_step
        honest.privacy_spend(SIGMA, Q, steps)  # every DP step taken
        under.privacy_spend(SIGMA, Q, 1)  # claims one step of four
        for cb in callbacks:
            cb.close()
        led.checkpoint(LOG)

        report, rule = _privacy_rule(led, "dp-honest", signer, tmp_path, capsys)
        assert report["integrity"] == "valid" and report["completeness"]["status"] == "proven"
        ups = [f for f in report["findings"] if f["check"] != "anchor.coverage"]
        assert not ups, ups
        assert rule["status"] == "pass", rule
        assert f"{steps} DP-SGD steps recorded by updates" in rule["detail"]

        report, rule = _privacy_rule(led, "dp-under", signer, tmp_path, capsys)
        assert report["integrity"] == "valid"  # the bundle is genuine: the run's own claim is what fails
        assert rule["status"] == "fail", rule
        assert (f"the run records {steps} DP-SGD steps but its privacy.spend records account for only 1"
                in rule["detail"])
        assert any(e.get("dp_steps") == steps for e in rule["evidence"])
    finally:
        led.close()


def test_dp_sgd_needs_a_declared_budget(tmp_path):
    led = Ledger.open(tmp_path / "data")
    try:
        run = _run("no-budget", Signer.generate(), led, "sha256:" + "0" * 64, tmp_path, privacy_budget=None)
        with pytest.raises(ValueError, match="dp_sgd=True needs the run to declare a privacy_budget"):
            LedgerCallback(run, dp_sgd=True)
        LedgerCallback(run)  # without DP-SGD nothing is needed
    finally:
        led.close()
