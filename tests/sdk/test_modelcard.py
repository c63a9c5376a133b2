"""Model card: YAML front matter parses, provenance content, verify command."""

from __future__ import annotations

import base64
import shlex

import pytest
import torch
import yaml

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import LocalSink, Run, weights_digest
from rlhf_ledger.sdk.modelcard import model_card, model_card_for_run

from .helpers import RecordingAppendForTests, tiny_model

VKEY = "rlhf-ledger.example/log-a+1a2b3c4d+AXk1mNp0cX2dW4rTq1b0J5m9o0QeS3R1rVn6aL0qN5xF"
ANCHORS = [
    {"checkpoint_size": 6, "tx_hash": "0x" + "ab" * 32, "block_number": 17, "chain_id": 31337, "status": "confirmed"},
    {"checkpoint_size": 12, "tx_hash": "0x" + "cd" * 32, "block_number": 21, "chain_id": 31337, "status": "pending"},
]


def split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    _, fm, body = card.split("---\n", 2)
    return yaml.safe_load(fm), body


def test_card_from_a_run(tmp_path):
    s = Signer.generate()
    m = tiny_model()
    run = Run(log_id="log-a", run_id="run-9", signer=s, sink=LocalSink(RecordingAppendForTests(s)), method="dpo",
              hyperparameters={"beta": 0.1}, base_model={"name": "tiny-base", "weights_digest": weights_digest(m).digest},
              declared={"privacy_budget": {"epsilon": 3.0, "delta": 1e-6}}, spool_dir=tmp_path / "sp")
    with run:
        run.checkpoint(10, m)
        with torch.no_grad():
            m[0].bias.add_(1.0)
        run.checkpoint(20, m)
        eps = run.privacy_spend(1.2, 0.005, 300)
        run.release(m)
    card = model_card_for_run(run, model_name="tiny-dpo", log_key=VKEY, bundle="run-9.rlhfbundle.jsonl", anchors=ANCHORS,
                              contract="0x" + "11" * 20, license="apache-2.0")
    fm, body = split(card)
    p = fm["provenance"]
    assert fm["license"] == "apache-2.0" and fm["base_model"] == "tiny-base" and "rlhf" in fm["tags"]
    assert p["log_id"] == "log-a" and p["run_id"] == "run-9"
    assert p["weights_digest"] == weights_digest(m).digest == run.checkpoints[-1]["weights_digest"]
    assert [c["step"] for c in p["checkpoints"]] == [10, 20]
    assert p["anchors"] == ANCHORS
    assert p["privacy"] == {"declared": {"epsilon": 3.0, "delta": 1e-6}, "spent_epsilon": eps}
    argv = shlex.split(p["verify"])
    # the regulator's minimal command: chain, contract, the final confirmed anchor's block to look up
    assert argv[:2] == ["rlhf-verify", "run-9.rlhfbundle.jsonl"] and "--log-key" not in argv and "--producer-key" not in argv
    assert argv[argv.index("--chain-id") + 1] == "31337" and argv[argv.index("--rules") + 1] == "eu-ai-act@2"
    assert argv[argv.index("--contract") + 1] == "0x" + "11" * 20
    assert argv[argv.index("--trusted-block-hash") + 1] == "0x<hash of block 17>"  # the confirmed anchor's block
    assert p["verify_block"] == {"chain_id": 31337, "block_number": 17} and p["log_key"] == VKEY
    assert "Look up the hash of block **17** of chain 31337 on a source you trust" in body
    assert base64.b64encode(s.public_key).decode() not in card
    assert p["verify"] in body and "0x" + "ab" * 32 in body and f"{eps:.4f}" in body
    assert "## Provenance" in body and "| 12 | 31337 | 21 |" in body


def test_card_without_anchors_or_privacy_and_bad_anchor():
    card = model_card(model_name="m", log_id="l", run_id="r", weights_digest="sha256:" + "0" * 64, log_key=VKEY,
                      bundle="b.jsonl")
    fm, body = split(card)
    assert fm["provenance"]["anchors"] == [] and fm["provenance"]["privacy"] is None
    assert "No anchor yet." in body and "--chain-id" not in fm["provenance"]["verify"]
    with pytest.raises(ValueError, match=r"anchors\[0\]: missing tx_hash"):
        model_card(model_name="m", log_id="l", run_id="r", weights_digest=None, log_key=VKEY, bundle="b",
                   anchors=[{"checkpoint_size": 1, "block_number": 1, "chain_id": 1, "status": "x"}])
