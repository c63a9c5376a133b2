"""Where signed envelopes go: the ledger's HTTP API or an embedded ledger's append function.

A sink's ``send(envelopes)`` delivers one batch and returns one :class:`Ack` per envelope, in
order, or raises :class:`TransientDeliveryError` (retry later: 5xx, 408, 429, connection
errors) or :class:`PermanentDeliveryError` (the ledger refused the batch: 4xx, or a
``LedgerError`` from the embedded ledger). Retrying, backoff and dead-lettering live in the
sender (``ledger/sdk/sender.py``), not in the sinks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from ..errors import LedgerError

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


class Sink(Protocol):
    max_batch: int

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
        import httpx

        self.url = f"{base_url.rstrip('/')}/v1/logs/{log_id}/events"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
        self._client = client or httpx.Client(timeout=timeout)
        self._httpx = httpx

    def __repr__(self) -> str:  # never show the token
        return f"HttpSink({self.url!r})"

    def send(self, envelopes: Sequence[dict]) -> list[Ack]:
        httpx = self._httpx
        if len(envelopes) > self.max_batch:
            raise ValueError(f"at most {self.max_batch} envelopes per batch, got {len(envelopes)}")
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
        msg = f"HTTP {r.status_code}: {problem.get('title') or r.reason_phrase}"
        if problem.get("detail"):
            msg += f": {problem['detail']}"
        if r.status_code in (408, 425, 429) or r.status_code >= 500:
            raise TransientDeliveryError(msg, where=self.url, retry_after=_retry_after(r))
        raise PermanentDeliveryError(msg, where=problem.get("where") or self.url, code=problem.get("code"), problem=problem)

    def close(self) -> None:
        self._client.close()


def _problem(r: Any) -> dict:
    """RFC 9457 problem details, when the reply is one."""
    try:
        doc = r.json()
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {"detail": r.text[:300]}


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

    def __init__(self, append: Callable[[list[dict]], list]):
        self._append = append

    def send(self, envelopes: Sequence[dict]) -> list[Ack]:
        try:
            results = self._append(list(envelopes))
        except LedgerError as e:
            raise PermanentDeliveryError(e.message, where=e.where, code=e.code, problem={"code": e.code, "detail": e.message, "where": e.where}) from None
        except Exception as e:  # noqa: BLE001 - anything else is an outage, retried with backoff
            raise TransientDeliveryError(f"{type(e).__name__}: {e}", where="LocalSink.append") from None
        if len(results) != len(envelopes):
            raise PermanentDeliveryError(f"ledger acknowledged {len(results)} of {len(envelopes)} events", where="LocalSink.append")
        return [_ack_from(x, i, "append") for i, x in enumerate(results)]

    def close(self) -> None:
        pass
