"""The training-side recorder: ``with Run(...) as run:`` around a training run (docs/sdk.md).

Every helper builds an event body on the calling (training) thread, writes one unsigned
journal line to the spool (``os.write``, so it survives a crash of the process as soon as the
call returns) and enqueues it; a background :class:`~ledger.sdk.sender.Sender` assigns
``prev``, signs, fsyncs per batch and delivers. Event bodies follow docs/event-types.md.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_ledger.core.errors import EventError, LedgerError
from rlhf_ledger.core.events import MAX_EVENT_BYTES, MAX_SUBJECTS_PER_OPENING, commit_fields
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk.distributed import RankInfo, detect
from rlhf_ledger.sdk.privacy import PrivacyAccountant, PrivacyBudgetExceeded
from rlhf_ledger.sdk.sender import Sender
from rlhf_ledger.sdk.sinks import Sink
from rlhf_ledger.sdk.spool import Journal
from rlhf_ledger.sdk.weights import WeightsDigest, file_digest, file_manifest, weights_digest

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


def _dp_steps(n: Any) -> int:
    """A cumulative DP-SGD step count: an integer >= 0 (numpy and torch integers too)."""
    if hasattr(n, "item") and not isinstance(n, (int, float)):
        n = n.item()
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= _SAFE_INT:
        raise ValueError(f"dp_steps must be an integer from 0 to 2^53-1 (the run's cumulative DP-SGD steps), got {n!r}")
    return int(n)


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
                  records: int | None = None) -> DatasetManifest:
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


def _recorded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Typed helpers do nothing (return None) on a process that does not record (rank != 0)."""

    @functools.wraps(fn)
    def wrapper(self: _Recorder, *args: Any, **kwargs: Any) -> Any:
        if not self.active:
            return None
        return fn(self, *args, **kwargs)

    return wrapper


DELIVERY_ERROR_MODES = ("raise", "warn")


class _Recorder:
    """What a Run and a RankRecorder share: the spool, the sender, the hot path, the typed helpers."""

    _refused_types: frozenset[str] = frozenset()
    _adds_to_body = False  # RankRecorder adds its rank to every body

    def __init__(self, *, log_id: str, run_id: str, signer: Signer, sink: Sink, active: bool,
                 rank_info: RankInfo, model: Any = None, pseudonym_key: bytes | None = None,
                 spool_dir: str | os.PathLike | None = None, fsync: str = "batch", exit_timeout: float = 60.0,
                 queue_size: int = 65536, backoff_base: float = 0.2, backoff_max: float = 30.0,
                 on_delivery_error: str = "raise"):
        if on_delivery_error not in DELIVERY_ERROR_MODES:
            raise ValueError(f"on_delivery_error must be one of {DELIVERY_ERROR_MODES}, got {on_delivery_error!r}")
        sink_log = getattr(sink, "log_id", None)
        if sink_log is not None and sink_log != log_id:
            raise ValueError(f"this sink delivers to log {sink_log!r}, but run {run_id!r} is in log {log_id!r}; "
                             "a sink serves any number of runs of its own log: make one sink per log")
        self.log_id, self.run_id, self.signer, self.sink = log_id, run_id, signer, sink
        self.rank_info = rank_info
        self.active = active
        self.pseudonym_key = pseudonym_key
        root = Path(spool_dir) if spool_dir is not None else Path(os.environ.get(SPOOL_ENV, ".rlhf-ledger-spool"))
        self.spool_dir = root if spool_dir is not None else root / _safe(log_id) / _safe(run_id) / signer.key_id[:16]
        self.fsync = fsync
        self.exit_timeout = exit_timeout
        self.on_delivery_error = on_delivery_error
        self._queue_size, self._backoff_base, self._backoff_max = queue_size, backoff_base, backoff_max
        self._initial_model = model
        self._emit_lock = threading.Lock()
        self._ref_params: dict[str, Any] | None = None
        self._error_raised = False
        self.last_checkpoint: WeightsDigest | None = None  # the last save of either type
        self.last_saves: dict[str, WeightsDigest] = {}  # "checkpoint.save" / "reward_model.save" -> its last digest
        self.checkpoints: list[dict[str, Any]] = []  # {step, weights_digest[, file_digest]} in order
        self.max_step = 0
        self.journal: Journal | None = None
        self.sender: Sender | None = None
        self.ended = False

    def open(self) -> _Recorder:
        """Open the spool (refused at once if another process has it) and start the sender,
        which first replays anything a previous process left."""
        if self.active and self.sender is None:
            self.journal = Journal(self.spool_dir, log_id=self.log_id, run_id=self.run_id,
                                   producer=self.signer.key_id, fsync=self.fsync)
            try:
                self.sender = Sender(self.journal, self.signer, self.sink, log_id=self.log_id, run_id=self.run_id,
                                     queue_size=self._queue_size, backoff_base=self._backoff_base,
                                     backoff_max=self._backoff_max)
            except BaseException:
                self.journal.close()
                raise
        return self

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event recorded so far is acknowledged by the ledger (or raise why not)."""
        if self.sender is not None:
            self.sender.flush(timeout)

    def _close_sender(self, timeout: float = 0) -> None:
        if self.sender is not None:
            self.sender.close(timeout=timeout)

    @property
    def delivery_error(self) -> Exception | None:
        """The permanent delivery failure that stopped this run's sender, if any."""
        return self.sender.error if self.sender is not None else None

    # --- the hot path ---------------------------------------------------------------------

    def _body(self, type: str, body: dict) -> dict:
        return body

    def event(self, type: str, body: dict, *, commit: Iterable[str] = (),
              subjects: Mapping[str, str | Sequence[str]] | None = None) -> int | None:
        """Record an event of any type; ``commit`` names body fields to replace by commitments.

        ``subjects`` says whose personal data a committed field is: field -> person or list of
        people (raw ids are pseudonymised with the run's pseudonym key; ``anp:`` pseudonyms pass),
        so that one person's openings can be erased on their own (``rlhf-ledger erase-subject``,
        docs/event-format.md). Each field named must be in ``commit``.

        Returns the event's seq (None on a process that does not record). Raises on the calling
        thread for anything that cannot become a valid event (bad type, non-JSON or non-finite
        values, oversize), and, once, the permanent delivery failure that stopped the sender
        (unless ``on_delivery_error="warn"``); the call that raises records nothing.
        """
        if not self.active:
            return None
        sender = self.sender
        if sender is None or self.journal is None:
            raise RuntimeError("the run is not open: use `with Run(...) as run:` or call run.start()")
        if sender.error is not None and not self._error_raised:
            self._error_raised = True
            if self.on_delivery_error == "raise":
                raise sender.error
        if self.ended:
            raise RuntimeError(f"run {self.run_id} has ended; no more events can be recorded")
        if self._refused_types and type in self._refused_types:
            raise EventError(f"{type} is a run-level event: only the Run on rank 0 records it", where="event.type")
        if not _TYPE_RE.match(type):
            raise EventError("must be dotted lower-case words", where="event.type")
        if self._adds_to_body:
            body = self._body(type, body)
        openings = None
        commit = list(commit)
        named = self._subjects(subjects, commit) if subjects else None
        if commit:
            body, openings = commit_fields(body, commit)
        rec: dict[str, Any] = {"seq": 0, "type": type, "ts": _ts(), "body": body}
        if openings:
            rec["openings"] = openings
            if named:
                named = {m: people for m, people in named.items() if m in openings}
                if named:
                    rec["subjects"] = named
        try:
            tail = _encode(rec)[len('{"seq":0'):]  # everything after the seq, encoded once
        except (TypeError, ValueError) as e:
            raise EventError(f"body is not valid JSON for an event: {e}", where=f"event.body ({type})") from None
        if len(tail) > MAX_EVENT_BYTES - 512 and len(_encode(body).encode()) > MAX_EVENT_BYTES - 1024:
            raise EventError(f"body is too large for one event (limit {MAX_EVENT_BYTES} bytes)", where=f"event.body ({type})")
        data = tail.encode("utf-8")
        with self._emit_lock:  # journal order must equal queue order
            seq, line = self.journal.append(lambda s: b'{"seq":%d' % s + data + b"\n")
            sender.submit(line)
        return seq

    def _subjects(self, subjects: Mapping[str, str | Sequence[str]], commit: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m, people in subjects.items():
            if m not in commit:
                raise EventError("names a field that is not committed (only openings belong to people)", where=f"subjects.{m}")
            names = [people] if isinstance(people, str) else list(people)
            if not 1 <= len(names) <= MAX_SUBJECTS_PER_OPENING:
                raise EventError(f"must name 1 to {MAX_SUBJECTS_PER_OPENING} people", where=f"subjects.{m}")
            out[m] = sorted({self._anon(str(x)) for x in names})
        return out

    # --- typed helpers (docs/event-types.md) ----------------------------------------------

    def _anon(self, person: str) -> str:
        if _PSEUDONYM_RE.match(person):
            return person
        if self.pseudonym_key is None:
            raise ValueError("people are recorded by keyed pseudonyms: pass pseudonym_key=... to Run, or pass 'anp:' pseudonyms")
        return pseudonym(self.pseudonym_key, person)

    @_recorded
    def annotation_batch(self, *, batch_id: str, dataset_id: str, guideline_version: str, annotators: Sequence[str],
                         prompts: Sequence[Any], responses: Sequence[Any], labels: Mapping[str, int] | Sequence[str],
                         items: int | None = None, **extra: Any) -> int | None:
        if not isinstance(labels, Mapping):
            counts: dict[str, int] = {}
            for lab in labels:
                counts[str(lab)] = counts.get(str(lab), 0) + 1
            labels = counts
        body = {"batch_id": batch_id, "dataset_id": dataset_id, "guideline_version": guideline_version,
                "annotators": sorted({self._anon(a) for a in annotators}),
                "items": int(items if items is not None else len(prompts)), "labels": dict(labels),
                "prompts": list(prompts), "responses": list(responses), **extra}
        # The batch's texts are its annotators' data: erasing any one of them erases them.
        people = body["annotators"] or None
        return self.event("annotation.batch", body, commit=("prompts", "responses"),
                          subjects={"prompts": people, "responses": people} if people else None)

    def reward_model_update(self, step: int, loss: float, *, accuracy: float | None = None,
                            grad_norm: float | None = None, metrics: Mapping[str, Any] | None = None,
                            dp_steps: int | None = None, **extra: Any) -> int | None:
        """``metrics`` keeps every other logged value (e.g. a trainer's full log line) as an object.
        ``dp_steps``: for a DP-SGD update, the run's cumulative number of DP optimizer steps so far;
        the verifier checks that the run's ``privacy.spend`` steps cover it (event-types.md)."""
        if not self.active:
            return None
        dp = _dp_steps(dp_steps) if dp_steps is not None else None  # refused before anything is recorded
        self.max_step = max(self.max_step, int(step))
        body = {"step": int(step), "loss": _num(loss), **{k: _num(v) for k, v in extra.items()}}
        if dp is not None:
            body["dp_steps"] = dp
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
                      dp_steps: int | None = None, **extra: Any) -> int | None:
        """``param_delta_norm`` = L2 norm of (parameters - parameters at the last checkpoint, or at
        run start when Run(model=...) was given, or at the first call with ``model``).
        ``dp_steps``: when the policy is trained with DP-SGD, the run's cumulative number of DP
        optimizer steps so far (as for :meth:`reward_model_update`; event-types.md)."""
        if not self.active:
            return None
        dp = _dp_steps(dp_steps) if dp_steps is not None else None  # refused before anything is recorded
        self.max_step = max(self.max_step, int(step))
        if model is not None and param_delta_norm is None:
            param_delta_norm = self.param_delta_norm(model)
        body = {"step": int(step), "loss": _num(loss), "kl": _num(kl), "reward_mean": _num(reward_mean),
                "reward_std": _num(reward_std), "grad_norm": _num(grad_norm),
                "param_delta_norm": _num(param_delta_norm), **{k: _num(v) for k, v in extra.items()}}
        if dp is not None:
            body["dp_steps"] = dp
        if metrics:
            body["metrics"] = _metrics(metrics)
        return self.event("policy.update", body)

    def param_delta_norm(self, model: Any) -> float:
        if self._ref_params is None:
            self._ref_params = _snapshot(model)
            return 0.0
        return _delta_norm(model, self._ref_params)

    @_recorded
    def reward_model_save(self, step: int, model: Any, path: str | os.PathLike | None = None) -> WeightsDigest:
        """reward_model.save: like :meth:`checkpoint`, for a reward model (a reward run's released weights)."""
        return self._save("reward_model.save", step, model, path)

    @_recorded
    def checkpoint(self, step: int, model: Any, path: str | os.PathLike | None = None) -> WeightsDigest:
        """checkpoint.save (the policy's weights): see :meth:`_save`."""
        return self._save("checkpoint.save", step, model, path)

    def _save(self, type: str, step: int, model: Any, path: str | os.PathLike | None) -> WeightsDigest:
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
        self.event(type, body)
        self.checkpoints.append({k: body[k] for k in ("step", "weights_digest", "file_digest") if k in body})
        self.last_checkpoint = self.last_saves[type] = wd
        if hasattr(model, "named_parameters"):
            self._ref_params = _snapshot(model)
        return wd

    @_recorded
    def evaluation(self, name: str, metrics: Mapping[str, Any], *, dataset_id: str | None = None,
                   step: int | None = None, **extra: Any) -> int | None:
        body: dict[str, Any] = {"name": name, "metrics": dict(metrics), **extra}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        if step is not None:
            body["step"] = int(step)
        return self.event("evaluation", body)

    @_recorded
    def bias_examination(self, name: str, metrics: Mapping[str, Any], findings: str, *,
                         private_findings: bool = False, **extra: Any) -> int | None:
        body = {"name": name, "metrics": dict(metrics), "findings": findings, **extra}
        return self.event("bias.examination", body, commit=("findings",) if private_findings else ())

    @_recorded
    def human_review(self, reviewer: str, decision: str, subject: str, *, notes: str | None = None, **extra: Any) -> int | None:
        """human.review: ``reviewer`` is pseudonymised, ``notes`` committed. ``decision`` is
        ``approve``, ``reject`` or another word; ``subject`` names what was reviewed: for the
        released weights, their digest (:meth:`Run.review_release` fills it in)."""
        for name, value in (("reviewer", reviewer), ("decision", decision), ("subject", subject)):
            if not (isinstance(value, str) and value.strip()):
                raise ValueError(f"human_review: {name} must be a non-empty string")
        body: dict[str, Any] = {"reviewer": self._anon(reviewer), "decision": decision, "subject": subject, **extra}
        if notes is not None:
            body["notes"] = notes
        return self.event("human.review", body, commit=("notes",) if notes is not None else (),
                          subjects={"notes": body["reviewer"]} if notes is not None else None)

    @_recorded
    def compute_usage(self, device: str, seconds: float, *, flops: float | None = None,
                      energy_kwh: float | None = None, metrics: Mapping[str, Any] | None = None, **extra: Any) -> int | None:
        body: dict[str, Any] = {"device": device, "seconds": _num(float(seconds)), **extra}
        if metrics:
            body["metrics"] = _metrics(metrics)
        if flops is not None:
            body["flops"] = str(int(flops))  # FLOP counts pass 2^53: a decimal string keeps them exact and JCS-safe
        if energy_kwh is not None:
            body["energy_kwh"] = _num(float(energy_kwh))
        return self.event("compute.usage", body)


class RunEndedError(LedgerError):
    """The run already has its run.end: it cannot be resumed (choose a new run id)."""

    code = "run_ended"


class Run(_Recorder):
    """Records one training run; use as a context manager (or call start()/end()).

    In a distributed job only the world process zero records (``run.active``); on the other
    ranks every call is a no-op returning None (docs/sdk.md, "Distributed training").
    """

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
        on_delivery_error: str = "raise",
        rank: int | None = None,
    ):
        if not hyperparameters:
            raise ValueError("hyperparameters must be a non-empty mapping (the EU AI Act rules need them)")
        if not isinstance(base_model, Mapping) or "name" not in base_model or "weights_digest" not in base_model:
            raise ValueError("base_model must be a mapping with 'name' and 'weights_digest'")
        info = detect() if rank is None else RankInfo(int(rank), max(1, int(rank) + 1), 0, "explicit")
        super().__init__(log_id=log_id, run_id=run_id, signer=signer, sink=sink, active=info.is_main, rank_info=info,
                         model=model, pseudonym_key=pseudonym_key, spool_dir=spool_dir, fsync=fsync,
                         exit_timeout=exit_timeout, queue_size=queue_size, backoff_base=backoff_base,
                         backoff_max=backoff_max, on_delivery_error=on_delivery_error)
        self.method = method
        self.hyperparameters = dict(hyperparameters)
        self.config = dict(config or {})
        self.base_model = dict(base_model)
        self.datasets = list(datasets)
        self.declared = {**DEFAULT_DECLARED, **dict(declared or {})}
        self.code = dict(code) if code else None
        self._budget = self.declared.get("privacy_budget")
        self._enforce_privacy = enforce_privacy
        self._privacy: PrivacyAccountant | None = None
        self.resume = resume
        self.released_weights_digest: str | None = None
        self.started = False
        self.resumed = False

    @property
    def privacy(self) -> PrivacyAccountant | None:
        """The run's accountant (dp-accounting is imported the first time it is needed)."""
        if self._privacy is None and self._budget:
            self._privacy = PrivacyAccountant(self._budget.get("epsilon"), self._budget["delta"], enforce=self._enforce_privacy)
        return self._privacy

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Run:
        super().open()
        return self

    def start(self) -> Run:
        """Emit dataset.register and run.start (skipped when resuming a run already started).

        Refused (RunEndedError) when the spool shows the run already ended."""
        if not self.active:
            self.started = True
            return self
        self.open()
        assert self.journal is not None
        seen = self.journal.recovered.types_seen
        if "run.end" in seen:
            where = str(self.journal.dir)
            self._close_sender(timeout=0)  # leave any undelivered leftovers in the spool
            self.sender = None
            raise RunEndedError(
                f"run {self.run_id!r} in log {self.log_id!r} has already ended (its run.end is recorded); an ended "
                f"run cannot be resumed: choose a new run id (leftovers, if any: rlhf-ledger spool flush {where})",
                where=where)
        already = "run.start" in seen
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
            if self.rank_info.world_size > 1:
                body["world_size"] = self.rank_info.world_size
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
        if not self.active:
            self.ended = True
            return
        released = released_weights_digest or self.released_digest
        self._error_raised = True  # run.end is journaled even after a delivery failure; flush raises it
        self.event("run.end", {"status": status, "released_weights_digest": released, "steps": self.max_step})
        self.ended = True
        try:
            self.flush(self.exit_timeout if timeout is None else timeout)
        finally:
            self._close_sender(timeout=0)

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("completed")
            return
        status = "aborted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        try:
            self.end(status)
        except Exception as e:  # never hide the training error behind a delivery error
            print(f"rlhf-ledger: run.end recorded in the spool but not delivered: {e}", file=sys.stderr)

    def rank_recorder(self, signer: Signer, *, sink: Sink | None = None, **kwargs: Any) -> RankRecorder:
        """A recorder for this process's rank-local facts, under its own key, in this run."""
        return RankRecorder(log_id=self.log_id, run_id=self.run_id, signer=signer, sink=sink or self.sink,
                            pseudonym_key=kwargs.pop("pseudonym_key", self.pseudonym_key), **kwargs)

    # --- typed helpers (docs/event-types.md) ----------------------------------------------

    @property
    def release_type(self) -> str:
        """The save record whose weights this run releases: ``reward_model.save`` for a
        reward-model run (method ``reward``), else ``checkpoint.save`` (the policy)."""
        return "reward_model.save" if self.method == "reward" else "checkpoint.save"

    @property
    def released_digest(self) -> str | None:
        """What run.end will name as released: :meth:`release`'s digest, else the last save of
        :attr:`release_type`."""
        last = self.last_saves.get(self.release_type)
        return self.released_weights_digest or (last.digest if last else None)

    @_recorded
    def review_release(self, reviewer: str, decision: str = "approve", *, notes: str | None = None,
                       **extra: Any) -> int | None:
        """A human.review of the weights this run releases (subject = their digest), the record
        the eu-ai-act@2 ``human-oversight`` rule asks for before run.end."""
        subject = self.released_digest
        if subject is None:
            raise ValueError(f"run {self.run_id!r} has no released weights to review yet: call run.release(model) "
                             f"or record the final {self.release_type} first")
        return self.human_review(reviewer, decision, subject, notes=notes, **extra)

    def release(self, model: Any = None, *, digest: str | None = None) -> str:
        """Name the released weights (recorded in run.end)."""
        if (model is None) == (digest is None):
            raise ValueError("pass exactly one of model or digest")
        if not self.active:
            return None  # type: ignore[return-value]
        self.released_weights_digest = weights_digest(model).digest if model is not None else digest
        return self.released_weights_digest  # type: ignore[return-value]

    @_recorded
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


class RankRecorder(_Recorder):
    """Rank-local facts of a distributed run, under the rank's own producer key.

    Every process of the job may hold one (rank 0 too, beside its Run). Its events chain under
    its key within the run and carry ``rank``, ``world_size`` and ``local_rank`` in the body;
    run-level types (run.start, run.end, dataset.register, privacy.*) are refused: the Run on
    rank 0 records those. Close it (``with`` or ``close()``, which waits for delivery) before
    rank 0 ends the run: the ledger refuses events after ``run.end``.
    """

    _refused_types = frozenset({"run.start", "run.end", "dataset.register", "privacy.spend", "privacy.budget_exceeded"})
    _adds_to_body = True

    def __init__(self, *, log_id: str, run_id: str, signer: Signer, sink: Sink, rank: int | None = None,
                 world_size: int | None = None, **kwargs: Any):
        info = detect()
        if rank is not None:
            info = RankInfo(int(rank), int(world_size or max(info.world_size, int(rank) + 1)), info.local_rank, "explicit")
        super().__init__(log_id=log_id, run_id=run_id, signer=signer, sink=sink, active=True, rank_info=info, **kwargs)
        self._rank_body = info.body()

    def _body(self, type: str, body: dict) -> dict:
        for k, v in self._rank_body.items():
            if k in body and body[k] != v:
                raise EventError(f"body says {k}={body[k]!r} but this recorder is {k} {v}", where=f"event.body.{k}")
        return {**body, **self._rank_body}

    def close(self, timeout: float | None = None) -> None:
        """Wait for delivery (up to ``timeout``, default exit_timeout) and stop the sender."""
        if self.ended:
            return
        self.ended = True
        try:
            self.flush(self.exit_timeout if timeout is None else timeout)
        finally:
            self._close_sender(timeout=0)

    def __enter__(self) -> RankRecorder:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:
            print(f"rlhf-ledger: rank {self.rank_info.rank} events kept in the spool, not delivered: {e}", file=sys.stderr)


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
