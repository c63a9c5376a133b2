"""Outermost ASGI guard: body size limit (413), time to first response byte (503), last-resort 500.

All three answer with application/problem+json. A timed-out handler running in a worker thread
cannot be interrupted; its result is discarded (a submission may still commit, which is why
clients retry: re-submission is idempotent).
"""

from __future__ import annotations

import asyncio
import json
import logging

from rlhf_ledger.api import limits
from rlhf_ledger.api.problems import PROBLEM_MEDIA_TYPE, problem_body

log = logging.getLogger("api")


class BodyTooLarge(Exception):
    pass


DRAIN_CAP = 4 * 1024 * 1024  # read (and drop) up to this much of a refused body before answering


async def _drain(receive, already: int = 0) -> None:
    """Consume a refused body so the client reads our 413 instead of a connection reset (a
    server that closes with unread input makes the kernel send RST). Beyond the cap we stop."""
    seen = already
    while seen <= DRAIN_CAP:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


class GuardMiddleware:
    def __init__(self, app, *, max_body_bytes: int, timeout: float, exempt_timeout: tuple[str, ...] = ()):
        self.app = app
        self.max_body = max_body_bytes
        self.timeout = timeout
        self.exempt = exempt_timeout

    async def _problem(self, send, status: int, code: str, detail: str, path: str, headers: list | None = None) -> None:
        body = json.dumps(problem_body(status, code, detail, path)).encode()
        hdrs = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not limits.limits_ok():  # a module imported since the last request changed them
            limits.restore_limits()
        path = scope.get("path", "")
        limit = self.max_body
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    return await self._problem(send, 400, "bad_content_length", "Content-Length is not a number", path)
                if n > limit:
                    if n <= limit + DRAIN_CAP:
                        await _drain(receive)
                    return await self._problem(
                        send, 413, "body_too_large", f"request body of {n} bytes exceeds the limit of {limit} bytes", path
                    )
        seen = 0
        tripped = False
        ended = False

        async def limited_receive():
            nonlocal seen, tripped, ended
            msg = await receive()
            if msg["type"] == "http.request":
                ended = not msg.get("more_body", False)
                seen += len(msg.get("body", b""))
                if seen > limit and not tripped:
                    tripped = True  # raise once; later reads (draining) pass through
                    raise BodyTooLarge()
            return msg

        async def drain_rest() -> None:
            if not ended:
                await _drain(limited_receive, seen)

        scope["rlhf.drain"] = drain_rest  # the app's 413 handler drains before answering
        started = asyncio.Event()

        async def tracking_send(msg):
            if msg["type"] == "http.response.start":
                started.set()
            await send(msg)

        task = asyncio.ensure_future(self.app(scope, limited_receive, tracking_send))
        try:
            if self.timeout > 0 and not path.startswith(self.exempt):
                waiter = asyncio.ensure_future(started.wait())
                done, _ = await asyncio.wait({task, waiter}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not done:
                    task.cancel()
                    return await self._problem(
                        send, 503, "timeout", f"no response within {self.timeout:g} s; retry (submission is idempotent)", path,
                        [(b"retry-after", b"1")],
                    )
            await task
        except BodyTooLarge:
            if not started.is_set():
                await drain_rest()
                await self._problem(send, 413, "body_too_large", f"request body exceeds the limit of {limit} bytes", path)
        except Exception:  # noqa: BLE001 - last resort: never a bare 500 page
            log.exception("unhandled error on %s", path)
            if not started.is_set():
                await self._problem(send, 500, "internal", "internal error; the request was not completed (see server log)", path)
