"""A ``transformers.TrainerCallback`` that records a Trainer's (or a TRL trainer's) run (docs/sdk.md).

* on_train_begin: if the Run is not started yet, fills its hyperparameters/config from the
  TrainingArguments (values the caller gave win) and starts it (dataset.register, run.start).
* on_log: a training log line becomes ``policy.update`` (or ``reward_model.update`` when the
  run's method is ``reward``) with loss, kl, rewards, grad_norm, ``param_delta_norm`` measured on
  the live model against the last checkpoint, and every logged value under ``metrics``; the
  final summary line (train_runtime, total_flos) becomes ``compute.usage``.
* on_evaluate: ``evaluation`` with the metrics.
* on_save: ``checkpoint.save`` with the weights digest of the model and the digests of the
  saved ``checkpoint-<step>/*.safetensors`` files.
* on_train_end: when this callback started the run, releases the final model and ends the run.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from .recorder import Run

# TrainingArguments fields worth naming as hyperparameters (TRL configs add their own: beta, ...)
_HYPER = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
          "max_steps", "weight_decay", "warmup_steps", "warmup_ratio", "lr_scheduler_type", "optim", "seed",
          "max_grad_norm", "beta", "loss_type", "label_smoothing", "max_length", "max_prompt_length",
          "num_generations", "kl_coef", "cliprange", "vf_coef", "gamma", "lam", "epsilon", "temperature",
          "center_rewards_coefficient", "bf16", "fp16")
_KL = ("kl", "objective/kl", "policy/kl", "kl_div")
_REWARD_MEAN = ("reward", "rewards/mean", "objective/scores", "reward_mean", "rewards/chosen")
_REWARD_STD = ("reward_std", "rewards/std", "objective/scores_std")
_SUMMARY = ("train_runtime", "train_loss", "total_flos")


def _first(logs: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in logs:
            return logs[k]
    return None


def _json_scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


class LedgerCallback(TrainerCallback):
    def __init__(self, run: Run, *, track_param_delta: bool = True, device: str | None = None):
        self.run = run
        self.track_param_delta = track_param_delta
        self.device = device
        self._started_here = False
        self._last_model: Any = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        run = self.run
        if not run.started:
            a = args.to_dict()
            hyper = {k: a[k] for k in _HYPER if k in a and a[k] is not None}
            run.hyperparameters = {**hyper, **run.hyperparameters}
            run.config = {**_json_scalars(a), **run.config}
            if model is not None and run._initial_model is None and self.track_param_delta:
                run._initial_model = model  # parameters at train begin are the delta reference
            run.start()
            self._started_here = True
        elif model is not None and self.track_param_delta and run._ref_params is None:
            run.param_delta_norm(model)  # take the reference now

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs:
            return
        self._last_model = model if model is not None else self._last_model
        run, step = self.run, int(state.global_step)
        if any(k in logs for k in _SUMMARY) and "loss" not in logs:
            device = self.device or str(getattr(args, "device", "unknown"))
            flops = logs.get("total_flos", getattr(state, "total_flos", None))
            run.compute_usage(device, float(logs.get("train_runtime", 0.0)), flops=flops or None,
                              metrics={k: v for k, v in logs.items() if isinstance(v, (int, float))})
            return
        if "loss" not in logs:  # evaluation lines come through on_evaluate
            return
        metrics = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if run.method == "reward":
            run.reward_model_update(step, logs["loss"], accuracy=_first(logs, ("accuracy", "rewards/accuracies")),
                                    grad_norm=logs.get("grad_norm"), metrics=metrics)
            return
        delta = None
        if model is not None and self.track_param_delta:
            delta = run.param_delta_norm(model)
        run.policy_update(step, logs["loss"], _first(logs, _KL), _first(logs, _REWARD_MEAN), _first(logs, _REWARD_STD),
                          logs.get("grad_norm"), param_delta_norm=delta, metrics=metrics)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            self.run.evaluation("trainer.evaluate", {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                                step=int(state.global_step))

    def on_save(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.run.checkpoint(int(state.global_step), model, path=ckpt if os.path.isdir(ckpt) else None)
        self._last_model = model

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._started_here and not self.run.ended:
            final = model if model is not None else self._last_model
            if final is not None:
                self.run.release(final)
            self.run.end("completed")
