"""The training-side recorder: ``with Run(...) as run:`` around a training run (docs/sdk.md).

Every helper builds an event body on the calling (training) thread, writes one unsigned
journal line to the spool (``os.write``, so it survives a crash of the process as soon as the
call returns) and enqueues it; a background :class:`~ledger.sdk.sender.Sender` assigns
``prev``, signs, fsyncs per batch and delivers. Event bodies follow docs/event-types.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import EventError
from ..events import MAX_EVENT_BYTES, commit_fields
from ..keys import Signer
from .privacy import PrivacyAccountant, PrivacyBudgetExceeded
from .sender import Sender
from .sinks import Sink
from .spool import Journal
from .weights import WeightsDigest, file_digest, file_manifest, weights_digest

PSEUDONYM_PREFIX = "anp:"
_PSEUDONYM_RE = re.compile(r"^anp:[0-9a-f]{64}$")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,7}$")
SPOOL_ENV = "RLHF_LEDGER_SPOOL"
DEFAULT_DECLARED = {"privacy_budget": None, "anchoring_delay_seconds": 3600, "retention_days": 365}


def pseudonym(key: bytes, person_id: str) -> str:
    """Keyed pseudonym ``anp:<hex HMAC-SHA256(key, id)>``: stable per key, unlinkable without it."""
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise ValueError("the pseudonym key must be at least 16 random bytes")
    return PSEUDONYM_PREFIX + hmac.new(bytes(key), person_id.encode("utf-8"), hashlib.sha256).hexdigest()


def _json_default(o: Any) -> Any:
    if hasattr(o, "item") and callable(o.item):  # numpy and torch scalars
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default).encode


def _num(x: Any) -> Any:
    """A metric as a JSON number; non-finite values (a diverged loss) as the strings NaN/Infinity/-Infinity."""
    if x is None:
        return None
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, got {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, float) and _UNSAFE_FLOAT_MIN <= abs(x) < 1e21:
        # JCS writes such a double as an integer literal (e.g. 3200000000000000000) that parses back as
        # an int outside the safe range, so the entry could not be re-canonicalised: keep it as text.
        return repr(x)
    if isinstance(x, int) and abs(x) > _SAFE_INT:
        return str(x)
    return x


_SAFE_INT = 2**53 - 1
_UNSAFE_FLOAT_MIN = float(2**53)
_ts_cache = [-1, ""]


def _ts() -> str:
    """RFC 3339 UTC with microseconds, cheaper than datetime.strftime on the hot path."""
    us = time.time_ns() // 1000
    s, frac = divmod(us, 1_000_000)
    if s != _ts_cache[0]:
        _ts_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        _ts_cache[0] = s
    return f"{_ts_cache[1]}.{frac:06d}Z"


@dataclass(frozen=True)
class DatasetManifest:
    """A dataset as ``dataset.register`` records it."""

    dataset_id: str
    name: str
    source: str
    licence: str
    digest: str  # "sha256:<hex>"
    size_bytes: int
    records: int | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, dataset_id: str, name: str, source: str, licence: str,
                  records: int | None = None) -> "DatasetManifest":
        p = Path(path)
        return cls(dataset_id, name, source, licence, file_digest(p), p.stat().st_size, records)

    def body(self) -> dict:
        b = {"dataset_id": self.dataset_id, "name": self.name, "source": self.source, "licence": self.licence,
             "digest": self.digest, "size_bytes": int(self.size_bytes)}
        if self.records is not None:
            b["records"] = int(self.records)
        return b


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


class Run:
    """Records one training run; use as a context manager (or call start()/end())."""

    def __init__(
        self,
        *,
        log_id: str,
        run_id: str,
        signer: Signer,
        sink: Sink,
        method: str,
        hyperparameters: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
        base_model: Mapping[str, Any],
        datasets: Sequence[DatasetManifest] = (),
        declared: Mapping[str, Any] | None = None,
        code: Mapping[str, str] | None = None,
        model: Any = None,
        pseudonym_key: bytes | None = None,
        enforce_privacy: bool = True,
        spool_dir: str | os.PathLike | None = None,
        fsync: str = "batch",
        resume: bool | None = None,
        exit_timeout: float = 60.0,
        queue_size: int = 65536,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
    ):
        if not hyperparameters:
            raise ValueError("hyperparameters must be a non-empty mapping (the EU AI Act rules need them)")
        if not isinstance(base_model, Mapping) or "name" not in base_model or "weights_digest" not in base_model:
            raise ValueError("base_model must be a mapping with 'name' and 'weights_digest'")
        self.log_id, self.run_id, self.signer, self.sink = log_id, run_id, signer, sink
        self.method = method
        self.hyperparameters = dict(hyperparameters)
        self.config = dict(config or {})
        self.base_model = dict(base_model)
        self.datasets = list(datasets)
        self.declared = {**DEFAULT_DECLARED, **dict(declared or {})}
        self.code = dict(code) if code else None
        self.pseudonym_key = pseudonym_key
        budget = self.declared.get("privacy_budget")
        self.privacy: PrivacyAccountant | None = (
            PrivacyAccountant(budget.get("epsilon"), budget["delta"], enforce=enforce_privacy) if budget else None
        )
        root = Path(spool_dir) if spool_dir is not None else Path(os.environ.get(SPOOL_ENV, ".rlhf-ledger-spool"))
        self.spool_dir = root if spool_dir is not None else root / _safe(log_id) / _safe(run_id) / signer.key_id[:16]
        self.fsync = fsync
        self.resume = resume
        self.exit_timeout = exit_timeout
        self._sender_opts = {"queue_size": queue_size, "backoff_base": backoff_base, "backoff_max": backoff_max}
        self._initial_model = model
        self._emit_lock = threading.Lock()
        self._ref_params: dict[str, Any] | None = None
        self.last_checkpoint: WeightsDigest | None = None
        self.checkpoints: list[dict[str, Any]] = []  # {step, weights_digest[, file_digest]} in order
        self.released_weights_digest: str | None = None
        self.max_step = 0
        self.journal: Journal | None = None
        self.sender: Sender | None = None
        self.started = False
        self.ended = False
        self.resumed = False

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> "Run":
        """Open the spool and start the sender (replaying anything a previous process left)."""
        if self.sender is None:
            self.journal = Journal(self.spool_dir, log_id=self.log_id, run_id=self.run_id,
                                   producer=self.signer.key_id, fsync=self.fsync)
            self.sender = Sender(self.journal, self.signer, self.sink, log_id=self.log_id, run_id=self.run_id,
                                 **self._sender_opts)
        return self

    def start(self) -> "Run":
        """Emit dataset.register and run.start (skipped when resuming a run already started)."""
        self.open()
        assert self.journal is not None
        already = "run.start" in self.journal.recovered.types_seen
        self.resumed = already if self.resume is None else self.resume
        if not self.resumed:
            for ds in self.datasets:
                self.event("dataset.register", ds.body())
            body: dict[str, Any] = {
                "method": self.method,
                "hyperparameters": self.hyperparameters,
                "config": self.config,
                "base_model": self.base_model,
                "datasets": [d.dataset_id for d in self.datasets],
                "declared": self.declared,
            }
            if self.code:
                body["code"] = self.code
            self.event("run.start", body)
        if self._initial_model is not None:
            self._ref_params = _snapshot(self._initial_model)
        self.started = True
        return self

    def end(self, status: str = "completed", *, released_weights_digest: str | None = None,
            timeout: float | None = None) -> None:
        """Emit run.end, wait for delivery (up to ``timeout``) and stop the sender."""
        if self.ended:
            return
        released = released_weights_digest or self.released_weights_digest or (
            self.last_checkpoint.digest if self.last_checkpoint else None)
        self.event("run.end", {"status": status, "released_weights_digest": released, "steps": self.max_step})
        self.ended = True
        try:
            self.flush(self.exit_timeout if timeout is None else timeout)
        finally:
            assert self.sender is not None
            self.sender.close(timeout=0)

    def __enter__(self) -> "Run":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("completed")
            return
        status = "aborted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        try:
            self.end(status)
        except Exception as e:  # noqa: BLE001 - never hide the training error behind a delivery error
            print(f"rlhf-ledger: run.end recorded in the spool but not delivered: {e}", file=sys.stderr)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event recorded so far is acknowledged by the ledger."""
        if self.sender is not None:
            self.sender.flush(timeout)

    # --- the hot path ---------------------------------------------------------------------

    def event(self, type: str, body: dict, *, commit: Iterable[str] = ()) -> int:
        """Record an event of any type; ``commit`` names body fields to replace by commitments.

        Returns the event's seq. Raises on the calling thread for anything that cannot become a
        valid event (bad type, non-JSON or non-finite values, oversize).
        """
        if self.sender is None or self.journal is None:
            raise RuntimeError("the run is not open: use `with Run(...) as run:` or call run.start()")
        if self.ended:
            raise RuntimeError(f"run {self.run_id} has ended; no more events can be recorded")
        if not _TYPE_RE.match(type):
            raise EventError("must be dotted lower-case words", where="event.type")
        openings = None
        if commit:
            body, openings = commit_fields(body, list(commit))
        rec: dict[str, Any] = {"seq": 0, "type": type, "ts": _ts(), "body": body}
        if openings:
            rec["openings"] = openings
        try:
            tail = _encode(rec)[len('{"seq":0'):]  # everything after the seq, encoded once
        except (TypeError, ValueError) as e:
            raise EventError(f"body is not valid JSON for an event: {e}", where=f"event.body ({type})") from None
        if len(tail) > MAX_EVENT_BYTES - 512 and len(_encode(body).encode()) > MAX_EVENT_BYTES - 1024:
            raise EventError(f"body is too large for one event (limit {MAX_EVENT_BYTES} bytes)", where=f"event.body ({type})")
        data = tail.encode("utf-8")
        with self._emit_lock:  # journal order must equal queue order
            seq, line = self.journal.append(lambda s: b'{"seq":%d' % s + data + b"\n")
            self.sender.submit(line)
        return seq

    # --- typed helpers (docs/event-types.md) ----------------------------------------------

    def _anon(self, person: str) -> str:
        if _PSEUDONYM_RE.match(person):
            return person
        if self.pseudonym_key is None:
            raise ValueError("people are recorded by keyed pseudonyms: pass pseudonym_key=... to Run, or pass 'anp:' pseudonyms")
        return pseudonym(self.pseudonym_key, person)

    def annotation_batch(self, *, batch_id: str, dataset_id: str, guideline_version: str, annotators: Sequence[str],
                         prompts: Sequence[Any], responses: Sequence[Any], labels: Mapping[str, int] | Sequence[str],
                         items: int | None = None, **extra: Any) -> int:
        if not isinstance(labels, Mapping):
            counts: dict[str, int] = {}
            for lab in labels:
                counts[str(lab)] = counts.get(str(lab), 0) + 1
            labels = counts
        body = {"batch_id": batch_id, "dataset_id": dataset_id, "guideline_version": guideline_version,
                "annotators": sorted({self._anon(a) for a in annotators}),
                "items": int(items if items is not None else len(prompts)), "labels": dict(labels),
                "prompts": list(prompts), "responses": list(responses), **extra}
        return self.event("annotation.batch", body, commit=("prompts", "responses"))

    def reward_model_update(self, step: int, loss: float, *, accuracy: float | None = None,
                            grad_norm: float | None = None, metrics: Mapping[str, Any] | None = None, **extra: Any) -> int:
        """``metrics`` keeps every other logged value (e.g. a trainer's full log line) as an object."""
        self.max_step = max(self.max_step, int(step))
        body = {"step": int(step), "loss": _num(loss), **{k: _num(v) for k, v in extra.items()}}
        if metrics:
            body["metrics"] = _metrics(metrics)
        if accuracy is not None:
            body["accuracy"] = _num(accuracy)
        if grad_norm is not None:
            body["grad_norm"] = _num(grad_norm)
        return self.event("reward_model.update", body)

    def policy_update(self, step: int, loss: float, kl: float | None, reward_mean: float | None,
                      reward_std: float | None, grad_norm: float | None, *, model: Any = None,
                      param_delta_norm: float | None = None, metrics: Mapping[str, Any] | None = None,
                      **extra: Any) -> int:
        """``param_delta_norm`` = L2 norm of (parameters - parameters at the last checkpoint, or at
        run start when Run(model=...) was given, or at the first call with ``model``)."""
        self.max_step = max(self.max_step, int(step))
        if model is not None and param_delta_norm is None:
            param_delta_norm = self.param_delta_norm(model)
        body = {"step": int(step), "loss": _num(loss), "kl": _num(kl), "reward_mean": _num(reward_mean),
                "reward_std": _num(reward_std), "grad_norm": _num(grad_norm),
                "param_delta_norm": _num(param_delta_norm), **{k: _num(v) for k, v in extra.items()}}
        if metrics:
            body["metrics"] = _metrics(metrics)
        return self.event("policy.update", body)

    def param_delta_norm(self, model: Any) -> float:
        if self._ref_params is None:
            self._ref_params = _snapshot(model)
            return 0.0
        return _delta_norm(model, self._ref_params)

    def checkpoint(self, step: int, model: Any, path: str | os.PathLike | None = None) -> WeightsDigest:
        """checkpoint.save: weights digest + tensor root of ``model``; file digest of ``path`` if given.

        ``path`` may be a file (file_digest = its SHA-256) or a directory (file_digest = the
        manifest digest over its *.safetensors files, listed in ``files``).
        """
        self.max_step = max(self.max_step, int(step))
        wd = weights_digest(model)
        body: dict[str, Any] = {"step": int(step), "weights_digest": wd.digest, "tensor_root": wd.tensor_root,
                                "tensors": len(wd.names)}
        if path is not None:
            p = Path(path)
            if p.is_dir():
                st = sorted(x.name for x in p.glob("*.safetensors"))
                man = file_manifest(p, st or None)
                body["file_digest"] = man["digest"]
                body["files"] = [{"name": r["name"], "digest": "sha256:" + r["digest"]} for r in man["resources"]]
            else:
                body["file_digest"] = file_digest(p)
            body["path"] = str(p)
        self.event("checkpoint.save", body)
        self.checkpoints.append({k: body[k] for k in ("step", "weights_digest", "file_digest") if k in body})
        self.last_checkpoint = wd
        if hasattr(model, "named_parameters"):
            self._ref_params = _snapshot(model)
        return wd

    def release(self, model: Any = None, *, digest: str | None = None) -> str:
        """Name the released weights (recorded in run.end)."""
        if (model is None) == (digest is None):
            raise ValueError("pass exactly one of model or digest")
        self.released_weights_digest = weights_digest(model).digest if model is not None else digest
        return self.released_weights_digest  # type: ignore[return-value]

    def evaluation(self, name: str, metrics: Mapping[str, Any], *, dataset_id: str | None = None,
                   step: int | None = None, **extra: Any) -> int:
        body: dict[str, Any] = {"name": name, "metrics": dict(metrics), **extra}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        if step is not None:
            body["step"] = int(step)
        return self.event("evaluation", body)

    def bias_examination(self, name: str, metrics: Mapping[str, Any], findings: str, *,
                         private_findings: bool = False, **extra: Any) -> int:
        body = {"name": name, "metrics": dict(metrics), "findings": findings, **extra}
        return self.event("bias.examination", body, commit=("findings",) if private_findings else ())

    def human_review(self, reviewer: str, decision: str, subject: str, *, notes: str | None = None, **extra: Any) -> int:
        body: dict[str, Any] = {"reviewer": self._anon(reviewer), "decision": decision, "subject": subject, **extra}
        if notes is not None:
            body["notes"] = notes
        return self.event("human.review", body, commit=("notes",) if notes is not None else ())

    def compute_usage(self, device: str, seconds: float, *, flops: float | None = None,
                      energy_kwh: float | None = None, metrics: Mapping[str, Any] | None = None, **extra: Any) -> int:
        body: dict[str, Any] = {"device": device, "seconds": _num(float(seconds)), **extra}
        if metrics:
            body["metrics"] = _metrics(metrics)
        if flops is not None:
            body["flops"] = str(int(flops))  # FLOP counts pass 2^53: a decimal string keeps them exact and JCS-safe
        if energy_kwh is not None:
            body["energy_kwh"] = _num(float(energy_kwh))
        return self.event("compute.usage", body)

    def privacy_spend(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Account and record a DP spend; returns the run's cumulative epsilon.

        When the declared budget would be exceeded (and enforcement is on) a
        ``privacy.budget_exceeded`` event records the refused attempt and PrivacyBudgetExceeded
        is raised; the refused steps are not part of the run's spend.
        """
        if self.privacy is None:
            raise ValueError("no privacy budget declared: pass declared={'privacy_budget': {'epsilon': ..., 'delta': ...}}")
        try:
            body = self.privacy.spend(noise_multiplier, sample_rate, steps)
        except PrivacyBudgetExceeded as e:
            self.event("privacy.budget_exceeded", e.attempted)
            raise
        self.event("privacy.spend", body)
        return body["epsilon"]


def _metrics(m: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        try:
            out[str(k)] = _num(v)
        except TypeError:
            out[str(k)] = str(v)  # a non-numeric log value is kept as text rather than dropped
    return out


def _snapshot(model: Any) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        return {n: p.detach().clone() for n, p in model.named_parameters()}


def _delta_norm(model: Any, ref: Mapping[str, Any]) -> float:
    import torch

    total = 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            r = ref.get(n)
            if r is None or r.shape != p.shape:
                raise ValueError(f"parameter {n} is not in the reference snapshot (architecture changed?)")
            total += float(torch.linalg.vector_norm(p.detach() - r, dtype=torch.float32)) ** 2
    return math.sqrt(total)
