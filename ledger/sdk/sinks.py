"""Where signed envelopes go: the ledger's HTTP API or an embedded ledger's append function.

A sink's ``send(envelopes)`` delivers one batch and returns one :class:`Ack` per envelope, in
order, or raises :class:`TransientDeliveryError` (retry later: 5xx, 408, 429, connection
errors) or :class:`PermanentDeliveryError` (the ledger refused the batch: 4xx, or a
``LedgerError`` from the embedded ledger). Retrying, backoff and dead-lettering live in the
sender (``ledger/sdk/sender.py``), not in the sinks.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.core.extras import needs_extra

MAX_BATCH = 1000  # the API accepts at most 1000 envelopes per request


@dataclass(frozen=True)
class Ack:
    index: int  # the event's position in the log
    event_id: str  # hex SHA-256 of JCS(event), as the ledger computed it
    leaf_hash: str  # base64 RFC 9162 leaf hash
    duplicate: bool  # True when the event was already in the log (idempotent re-submission)


class DeliveryError(LedgerError):
    code = "delivery_error"


class TransientDeliveryError(DeliveryError):
    """Try again later (server error, overload, connection failure)."""

    def __init__(self, message: str, *, where: str | None = None, retry_after: float | None = None):
        super().__init__(message, where=where)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The ledger refused this batch; retrying the same bytes will not help."""

    def __init__(self, message: str, *, where: str | None = None, code: str | None = None, problem: dict | None = None):
        super().__init__(message, where=where, code=code or "delivery_refused")
        self.problem = problem or {}


class ChainConflictError(PermanentDeliveryError):
    """The ledger already holds a different event at this producer's seq in this run (or the chain
    does not continue): another process writes the same producer chain. Typical causes: several
    ranks of a distributed job recording with one key, two copies of a job, or a run id reused
    after its spool was deleted."""


class RunEndedDeliveryError(PermanentDeliveryError):
    """The ledger refused the events because the run already has its ``run.end`` (code run_ended)."""


class DeliveryAuthError(PermanentDeliveryError):
    """The ledger refused the credentials (401) or this key/token may not write here (403)."""


_CHAIN_CODES = frozenset({"conflict", "sequence_error"})
_AUTH_CODES = frozenset({"unauthorized", "forbidden", "unknown_key", "revoked_key", "not_authorized"})


def refusal(message: str, *, where: str | None, code: str | None, problem: dict, status: int | None = None,
            run_id: str | None = None) -> PermanentDeliveryError:
    """The named permanent error for a refusal, with the ledger's own reason in the message."""
    if code == "run_ended":
        return RunEndedDeliveryError(
            f"{message}. The run has ended in the ledger: events after its run.end are refused; "
            "choose a new run id to record another run", where=where, code=code, problem=problem)
    if code in _CHAIN_CODES:
        return ChainConflictError(
            f"{message}. Another process is writing this producer's chain in this run: under torchrun/"
            "accelerate/DeepSpeed record run-level events from rank 0 only (the SDK default) and give each "
            "rank that records its own key (RankRecorder); or the run id was used before: choose a new run id",
            where=where, code=code, problem=problem)
    if status in (401, 403) or code in _AUTH_CODES:
        return DeliveryAuthError(message, where=where, code=code, problem=problem)
    return PermanentDeliveryError(message, where=where, code=code, problem=problem)


class Sink(Protocol):
    """``log_id`` (when not None) is the only log the sink can deliver to; ``close`` is its owner's call."""

    max_batch: int
    log_id: str | None

    def send(self, envelopes: Sequence[dict]) -> list[Ack]: ...

    def close(self) -> None: ...


def _ack_from(obj: Any, i: int, where: str) -> Ack:
    """Accept the API's result dict or an object with the same attributes (the embedded ledger)."""
    get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
    index, event_id, leaf, dup = get("index"), get("event_id"), get("leaf_hash"), get("duplicate")
    if isinstance(leaf, (bytes, bytearray)):
        leaf = base64.b64encode(bytes(leaf)).decode("ascii")
    if type(index) is not int or not isinstance(event_id, str) or not isinstance(leaf, str):
        raise PermanentDeliveryError(f"malformed acknowledgement {obj!r}", where=f"{where}[{i}]")
    return Ack(index=index, event_id=event_id, leaf_hash=leaf, duplicate=bool(dup))


class HttpSink:
    """POST {base_url}/v1/logs/{log_id}/events with {"events": [envelope, ...]}, bearer token."""

    max_batch = MAX_BATCH

    def __init__(self, base_url: str, token: str, log_id: str, *, timeout: float = 30.0, client: Any = None):
        try:
            import httpx
        except ModuleNotFoundError:  # imported here so that LocalSink users need no httpx
            raise ModuleNotFoundError(needs_extra("HttpSink", "httpx", "sdk"), name="httpx") from None

        self.log_id = log_id
        self.url = f"{base_url.rstrip('/')}/v1/logs/{log_id}/events"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
        self._client = client or httpx.Client(timeout=timeout)
        self._httpx = httpx

    def __repr__(self) -> str:  # never show the token
        return f"HttpSink({self.url!r})"

    def send(self, envelopes: Sequence[dict]) -> list[Ack]:
        httpx = self._httpx
        if len(envelopes) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} envelopes per batch, got {len(envelopes)}")
        try:
            r = self._client.post(self.url, json={"events": list(envelopes)}, headers=self._headers)
        except httpx.HTTPError as e:
            raise TransientDeliveryError(f"{type(e).__name__}: {e}", where=self.url) from None
        if r.status_code == 200:
            try:
                results = r.json()["results"]
            except (ValueError, KeyError, TypeError):
                raise TransientDeliveryError("200 reply without a JSON 'results' list", where=self.url) from None
            if not isinstance(results, list) or len(results) != len(envelopes):
                raise PermanentDeliveryError(
                    f"ledger acknowledged {len(results) if isinstance(results, list) else '?'} of {len(envelopes)} events",
                    where=self.url,
                )
            return [_ack_from(x, i, "results") for i, x in enumerate(results)]
        problem = _problem(r)
        if r.status_code == 422 and _problem_code(problem) == "batch_too_costly" and len(envelopes) > 1:
            # The service caps a request's CPU cost (events needing the slow canonical encoder count
            # more, docs/api.md "Cost caps"): send halves, and keep the smaller size for later batches.
            # A half delivered before a later failure is re-sent as a duplicate, which is idempotent.
            half = len(envelopes) // 2
            self.max_batch = max(1, min(self.max_batch, half))
            return self.send(envelopes[:half]) + self.send(envelopes[half:])
        msg = f"HTTP {r.status_code}: {problem.get('title') or r.reason_phrase}"
        if _problem_code(problem):
            msg += f" [{_problem_code(problem)}]"
        if problem.get("detail"):
            msg += f": {problem['detail']}"
        for item in (problem.get("errors") or [])[:3]:  # per-event reasons, when the ledger lists them
            if isinstance(item, dict) and item.get("detail") and item.get("detail") != problem.get("detail"):
                msg += f"; {item.get('where') or ''} {item['detail']}".rstrip()
        if r.status_code in (408, 425, 429) or r.status_code >= 500:
            raise TransientDeliveryError(msg, where=self.url, retry_after=_retry_after(r))
        code = _problem_code(problem)
        errors = problem.get("errors")
        items = errors if isinstance(errors, list) else []
        inner = [x.get("code") for x in items if isinstance(x, dict) and isinstance(x.get("code"), str)]
        if inner and (code in (None, "batch_rejected")):
            code = inner[0]  # the first refused event's own reason names the error
        raise refusal(msg, where=problem.get("where") or self.url, code=code, problem=problem, status=r.status_code)

    def close(self) -> None:
        """Close the HTTP client. A sink may serve several runs: its owner closes it, not a Run."""
        self._client.close()

    def __enter__(self) -> HttpSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _problem(r: Any) -> dict:
    """RFC 9457 problem details, when the reply is one."""
    try:
        doc = r.json()
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {"detail": r.text[:300]}


def _problem_code(problem: dict) -> str | None:
    """The problem's machine-readable reason: ``code``, else the last segment of its ``type`` URI."""
    code = problem.get("code")
    if isinstance(code, str) and code:
        return code
    t = problem.get("type")
    if isinstance(t, str) and "/problems/" in t:
        return t.rsplit("/", 1)[-1] or None
    return None


def _retry_after(r: Any) -> float | None:
    v = r.headers.get("Retry-After")
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


class LocalSink:
    """Delivers to an embedded ledger: ``append(envelopes: list[dict]) -> list`` (``Ledger.append``).

    A ``LedgerError`` from append is the ledger refusing the batch (permanent); any other
    exception (a locked database, a dropped connection) is treated as transient.
    """

    max_batch = MAX_BATCH

    def __init__(self, append: Callable[[list[dict]], list], *, log_id: str | None = None):
        self._append = append
        self.log_id = log_id  # None: whatever log the events name (the ledger checks it)

    def send(self, envelopes: Sequence[dict]) -> list[Ack]:
        try:
            results = self._append(list(envelopes))
        except LedgerError as e:
            errs = getattr(e, "errors", None)  # BatchRejected: the first refused event's own error
            if errs and isinstance(errs, list) and isinstance(errs[0], tuple) and isinstance(errs[0][1], LedgerError):
                i, e = errs[0]
            raise refusal(f"{e.code}: {e.message}", where=e.where, code=e.code,
                          problem={"code": e.code, "detail": e.message, "where": e.where}) from None
        except Exception as e:  # anything else is an outage, retried with backoff
            raise TransientDeliveryError(f"{type(e).__name__}: {e}", where="LocalSink.append") from None
        if len(results) != len(envelopes):
            raise PermanentDeliveryError(f"ledger acknowledged {len(results)} of {len(envelopes)} events", where="LocalSink.append")
        return [_ack_from(x, i, "append") for i, x in enumerate(results)]

    def close(self) -> None:
        pass
