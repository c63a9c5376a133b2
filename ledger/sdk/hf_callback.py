"""A ``transformers.TrainerCallback`` that records a Trainer's (or a TRL trainer's) run (docs/sdk.md).

* on_train_begin: records the TrainingArguments / TRL config as ``trainer.config``, whether the
  callback starts the run or joins one the user started. When the Run is not started yet, its
  hyperparameters/config are also filled from them (values the caller gave win) and the run
  starts (dataset.register, run.start): the callback then *manages* the run.
* on_log: a training log line becomes ``policy.update`` (or ``reward_model.update`` when the
  run's method is ``reward``) with loss, kl, rewards, grad_norm, ``param_delta_norm`` measured on
  the live model against the last checkpoint, and every logged value under ``metrics``; the
  final summary line (train_runtime, total_flos) becomes ``compute.usage``. With
  ``dp_sgd=True`` (the trainer's optimizer steps are DP-SGD steps, e.g. Opacus) each update also
  records ``dp_steps``, the trainer's ``global_step``: the verifier then requires the run's
  ``privacy.spend`` records to account for at least that many steps.
* on_evaluate: ``evaluation`` with the metrics.
* on_save: ``checkpoint.save`` (``reward_model.save`` for a reward run) with the model's weights
  digest and the digests of the saved ``checkpoint-<step>/*.safetensors`` files.
* on_train_end: a managed run names the final model as released and stays open, so
  ``trainer.evaluate()`` and other calls after ``train()`` are still recorded. It ends when the
  user calls ``callback.close()`` / ``run.end()``, or when the process exits (status ``failed``
  if an uncaught exception ends it). A run the user started is never ended by the callback.
* Distributed jobs: only the world process zero records (the Run is inactive on other ranks,
  and ``state.is_world_process_zero`` is checked as well).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from transformers import TrainerCallback

from rlhf_ledger.sdk.recorder import Run

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


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("transformers", "trl", "torch", "accelerate", "peft", "deepspeed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class LedgerCallback(TrainerCallback):
    def __init__(self, run: Run, *, track_param_delta: bool = True, device: str | None = None,
                 dp_sgd: bool = False):
        """``dp_sgd``: say True when every optimizer step of this trainer is a DP-SGD step (the
        optimizer clips per-sample gradients and adds noise, as Opacus' DPOptimizer does). Each
        update then records ``dp_steps`` = the trainer's global step, the run's cumulative DP
        step count (event-types.md). The run must declare a ``privacy_budget``, and its
        ``privacy.spend`` records (``run.privacy_spend``) must cover those steps, or the
        verifier's privacy-budget rule fails."""
        if dp_sgd and run.active and not (getattr(run, "declared", None) or {}).get("privacy_budget"):
            raise ValueError(f"run {run.run_id!r}: dp_sgd=True needs the run to declare a privacy_budget "
                             "(declared={'privacy_budget': {'epsilon': ..., 'delta': ...}}): DP-SGD updates are "
                             "checked against the run's privacy.spend records and its declared budget")
        self.run = run
        self.track_param_delta = track_param_delta
        self.device = device
        self.dp_sgd = bool(dp_sgd)
        self._started_here = False
        self._last_model: Any = None
        self._inactive = not run.active
        self._crashed: BaseException | None = None
        self._exit_lock = threading.Lock()

    @property
    def manages_run(self) -> bool:
        """True when this callback started the run (it then ends it at close() or process exit)."""
        return self._started_here

    def _skip(self, state: Any) -> bool:
        if self._inactive or not self.run.active:
            return True
        if state is not None and getattr(state, "is_world_process_zero", True) is False:
            self._inactive = True  # HF knows better than the environment: this is not rank 0
            return True
        return False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._skip(state):
            return
        run = self.run
        a = args.to_dict()
        hyper = {k: a[k] for k in _HYPER if k in a and a[k] is not None}
        scalars = _json_scalars(a)
        if not run.started:
            run.hyperparameters = {**hyper, **run.hyperparameters}
            run.config = {**scalars, **run.config}
            if model is not None and run._initial_model is None and self.track_param_delta:
                run._initial_model = model  # parameters at train begin are the delta reference
            run.start()
            self._started_here = True
            self._install_exit_hooks()
        elif model is not None and self.track_param_delta and run._ref_params is None:
            run.param_delta_norm(model)  # take the reference now
        run.event("trainer.config", {"config_class": type(args).__name__, "hyperparameters": hyper,
                                     "config": scalars, "versions": _versions(),
                                     "run_started_by": "callback" if self._started_here else "user"})

    # --- ending a managed run -------------------------------------------------------------

    def _install_exit_hooks(self) -> None:
        prev = sys.excepthook

        def hook(tp, value, tb):  # remember that an uncaught exception is ending the process
            self._crashed = value
            prev(tp, value, tb)

        sys.excepthook = hook
        atexit.register(self._end_at_exit)

    def close(self, status: str = "completed") -> None:
        """End the run if this callback started it (no effect on a run the user started)."""
        with self._exit_lock:
            if self._started_here and not self.run.ended:
                self.run.end(status)

    def _end_at_exit(self) -> None:
        status = "completed" if self._crashed is None else (
            "aborted" if isinstance(self._crashed, KeyboardInterrupt) else "failed")
        try:
            self.close(status)
        except Exception as e:  # at exit there is nobody to raise to
            print(f"rlhf-ledger: run {self.run.run_id}: run.end recorded in the spool but not delivered: {e}",
                  file=sys.stderr)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or self._skip(state):
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
        # The trainer's global step counts optimizer steps: with dp_sgd, each is one DP-SGD step.
        dp_steps = step if self.dp_sgd else None
        if run.method == "reward":
            run.reward_model_update(step, logs["loss"], accuracy=_first(logs, ("accuracy", "rewards/accuracies")),
                                    grad_norm=logs.get("grad_norm"), metrics=metrics, dp_steps=dp_steps)
            return
        delta = None
        if model is not None and self.track_param_delta:
            delta = run.param_delta_norm(model)
        run.policy_update(step, logs["loss"], _first(logs, _KL), _first(logs, _REWARD_MEAN), _first(logs, _REWARD_STD),
                          logs.get("grad_norm"), param_delta_norm=delta, metrics=metrics, dp_steps=dp_steps)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and not self._skip(state):
            self.run.evaluation("trainer.evaluate", {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                                step=int(state.global_step))

    def on_save(self, args, state, control, model=None, **kwargs):
        if model is None or self._skip(state):
            return
        ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        save = self.run.reward_model_save if self.run.method == "reward" else self.run.checkpoint
        save(int(state.global_step), model, path=ckpt if os.path.isdir(ckpt) else None)
        self._last_model = model

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._skip(state):
            return
        if self._started_here and not self.run.ended:
            final = model if model is not None else self._last_model
            if final is not None:
                self.run.release(final)  # named in run.end; the run stays open for evaluate() etc.
