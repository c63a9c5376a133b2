"""uvicorn's h11 protocol with a header-read deadline and a connection cap (docs/security.md).

uvicorn arms its keep-alive timer only after a response, and the first byte received cancels
it, so a connection that sends nothing, or trickles a header line a minute, is held forever; at
the file-descriptor limit everyone is locked out. Here every connection must deliver a complete
request head within `RLHF_API_HEADER_TIMEOUT` seconds of opening (or of the previous response),
and connections beyond `RLHF_API_MAX_CONNECTIONS` are closed at once.
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


HEADER_TIMEOUT = _env_float("RLHF_API_HEADER_TIMEOUT", 10.0)
MAX_CONNECTIONS = int(_env_float("RLHF_API_MAX_CONNECTIONS", 1024))


class GuardedH11Protocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._cycle_seen: RequestResponseCycle | None = None  # the cycle whose head disarmed the deadline
        if len(self.connections) > self.max_connections:
            self.logger.warning("connection cap of %d reached; closing a new connection", self.max_connections)
            self.transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout > 0:
            self._deadline = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()  # type: ignore[union-attr]
            self._deadline = None

    def _header_deadline(self) -> None:
        self._deadline = None
        # Still no complete request head on this connection (none since the last response).
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._cycle_seen and not self.cycle.response_complete:
            self._cycle_seen = self.cycle  # a request head arrived: the app's own timeout takes over
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request head must arrive in time too (keep-alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
