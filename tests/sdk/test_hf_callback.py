"""The Trainer callback with a real TRL DPOTrainer on a tiny locally built Llama (CPU, offline)."""

from __future__ import annotations

import copy
import hashlib
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from rlhf_ledger.core.keys import Signer  # noqa: E402
from rlhf_ledger.sdk import DatasetManifest, LocalSink, Run, weights_digest  # noqa: E402
from rlhf_ledger.sdk.hf_callback import LedgerCallback  # noqa: E402

from .helpers import RecordingAppendForTests, check_chains  # noqa: E402


def tiny_tokenizer():
    words = "the a cat dog sat on mat good bad answer question yes no is what why".split()
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.mark.slow
def test_dpo_trainer_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    base_digest = weights_digest(model).digest
    ds = Dataset.from_dict({"prompt": ["what is the cat", "why the dog"] * 8,
                            "chosen": [" the cat sat on mat", " the dog is good"] * 8,
                            "rejected": [" bad no", " no yes bad"] * 8})
    signer = Signer.generate()
    app = RecordingAppendForTests(signer)
    run = Run(log_id="hf-log", run_id="dpo-1", signer=signer, sink=LocalSink(app), method="dpo",
              hyperparameters={"note": "tiny"}, base_model={"name": "tiny-llama", "weights_digest": base_digest},
              datasets=[DatasetManifest("prefs", "toy prefs", "generated in test", "CC0-1.0", "sha256:" + "2" * 64, 100, 16)],
              spool_dir=tmp_path / "spool")
    args = trl.DPOConfig(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, logging_steps=1,
                         save_steps=2, report_to=[], use_cpu=True, learning_rate=1e-3, max_length=32,
                         save_only_model=True, beta=0.2, disable_tqdm=True)
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                             processing_class=tok, callbacks=[LedgerCallback(run)])
    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, LedgerCallback))
    trainer.train()
    assert not run.ended  # the callback started the run: it stays open for evaluate() until close()
    cb.close()
    assert run.ended
    events = app.events()
    check_chains(events)
    types = [e["type"] for e in events]
    assert types[:3] == ["dataset.register", "run.start", "trainer.config"] and types[-1] == "run.end"
    start = events[1]["body"]
    assert start["hyperparameters"]["beta"] == 0.2 and start["hyperparameters"]["learning_rate"] == 1e-3
    assert start["hyperparameters"]["note"] == "tiny" and start["base_model"]["weights_digest"] == base_digest
    pols = [e["body"] for e in events if e["type"] == "policy.update"]
    logged = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert [p["step"] for p in pols] == [1, 2, 3, 4]
    assert [p["loss"] for p in pols] == [h["loss"] for h in logged]
    assert [p["grad_norm"] for p in pols] == [h["grad_norm"] for h in logged]
    assert [p["metrics"]["rewards/margins"] for p in pols] == [h["rewards/margins"] for h in logged]
    assert all(p["param_delta_norm"] > 0 for p in pols)  # the optimiser moved the weights
    ckpts = [e["body"] for e in events if e["type"] == "checkpoint.save"]
    assert [c["step"] for c in ckpts] == [2, 4]
    for c in ckpts:
        f = tmp_path / "out" / f"checkpoint-{c['step']}" / "model.safetensors"
        assert c["files"] == [{"name": "model.safetensors", "digest": "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()}]
        # the digest of the weights as saved equals the digest recorded from the live model
        assert weights_digest(load_file(f)).digest == c["weights_digest"]
    assert ckpts[0]["weights_digest"] != ckpts[1]["weights_digest"] != base_digest
    usage = next(e["body"] for e in events if e["type"] == "compute.usage")
    assert usage["device"] == "cpu" and usage["seconds"] > 0
    end = events[-1]["body"]
    assert end["status"] == "completed" and end["steps"] == 4
    assert end["released_weights_digest"] == weights_digest(trainer.model).digest == ckpts[-1]["weights_digest"]
