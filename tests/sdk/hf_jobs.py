"""Tiny real Hugging Face / TRL jobs for the SDK tests: models built locally from a config (never
downloaded), a word-level tokenizer, small preference data. Used in-process by the pytest tests,
by the torchrun worker (torchrun_dpo_worker.py) and by benchmarks/sdk_overhead.py."""

from __future__ import annotations

import copy
import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "the a cat dog sat on mat good bad answer question yes no is what why".split()


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _config(tok: Any, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                       pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=False, **extra)


def tiny_policy(tok: Any, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_config(tok))


def tiny_reward_model(tok: Any, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(_config(tok, num_labels=1))


def prefs(n: int = 16) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"prompt": ["what is the cat", "why the dog"] * (n // 2),
                              "chosen": [" the cat sat on mat", " the dog is good"] * (n // 2),
                              "rejected": [" bad no", " no yes bad"] * (n // 2)})


def dpo_trainer(out_dir: str, callbacks: list, *, model: Any = None, tok: Any = None, max_steps: int = 4,
                save_steps: int = 2, **cfg: Any) -> Any:
    import trl

    tok = tok or tiny_tokenizer()
    model = model if model is not None else tiny_policy(tok)
    args = trl.DPOConfig(output_dir=out_dir, max_steps=max_steps, per_device_train_batch_size=4, logging_steps=1,
                         save_steps=save_steps, report_to=[], use_cpu=True, learning_rate=1e-3, max_length=32,
                         save_only_model=True, beta=0.2, disable_tqdm=True, **cfg)
    ds = prefs()
    return trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds, eval_dataset=ds,
                          processing_class=tok, callbacks=callbacks)


def reward_trainer(out_dir: str, callbacks: list, *, model: Any = None, tok: Any = None, max_steps: int = 4) -> Any:
    import trl

    tok = tok or tiny_tokenizer()
    model = model if model is not None else tiny_reward_model(tok)
    args = trl.RewardConfig(output_dir=out_dir, max_steps=max_steps, per_device_train_batch_size=4, logging_steps=1,
                            save_steps=2, report_to=[], use_cpu=True, learning_rate=1e-3, max_length=32,
                            save_only_model=True, disable_tqdm=True)
    ds = prefs()
    return trl.RewardTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, processing_class=tok,
                             callbacks=callbacks)
