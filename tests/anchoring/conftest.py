"""Fixtures for the chain tests: one real anvil per session (anchoring.devchain.Anvil), fresh
contract deployments per test where state matters, and an emulated flaky JSON-RPC proxy."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from rlhf_ledger.anchoring.chain import ChainClient, RetryPolicy
from rlhf_ledger.anchoring.devchain import Anvil


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil(accounts=6) as chain:
        yield chain


@pytest.fixture()
def owner(anvil: Anvil) -> ChainClient:
    """A client for dev account 0 with a freshly deployed contract, itself authorised."""
    client = ChainClient(anvil.rpc_url, anvil.private_keys[0])
    client.deploy()
    client.wait_for_receipt(client.authorize(client.address))
    return client


def client_for(anvil: Anvil, index: int, contract: str | None, **kw) -> ChainClient:
    return ChainClient(anvil.rpc_url, anvil.private_keys[index], contract_address=contract, **kw)


@pytest.fixture()
def manual_mining(anvil: Anvil) -> Iterator[Anvil]:
    """Automine off for the test (several transactions per block); restored afterwards."""
    anvil.set_automine(False)
    try:
        yield anvil
    finally:
        anvil.set_automine(True)


class EmulatedFlakyProxy:
    """EMULATED transient failures (not a real flaky node): an HTTP proxy in front of anvil that
    fails the first `failures` requests, either with HTTP 503 (`mode="503"`) or by closing the
    connection without an answer (`mode="drop"`), then forwards requests unchanged."""

    def __init__(self, upstream: str, *, failures: int, mode: str = "503") -> None:
        assert mode in ("503", "drop")
        self.upstream, self.failures, self.mode = upstream, failures, mode
        self.requests = 0
        self.methods: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.requests += 1
                proxy.methods.append(body.decode(errors="replace"))
                if proxy.requests <= proxy.failures:
                    if proxy.mode == "503":
                        self.send_response(503)
                        self.send_header("content-length", "0")
                        self.end_headers()
                    else:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                req = urllib.request.Request(proxy.upstream, data=body, headers={"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = resp.read()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> EmulatedFlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()



@pytest.fixture()
def flaky_proxy(anvil: Anvil):  # type: ignore[no-untyped-def]
    """Factory: flaky_proxy(failures=2, mode="503") -> a started EmulatedFlakyProxy in front of anvil."""
    started: list[EmulatedFlakyProxy] = []

    def make(*, failures: int, mode: str = "503") -> EmulatedFlakyProxy:
        proxy = EmulatedFlakyProxy(anvil.rpc_url, failures=failures, mode=mode).__enter__()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.__exit__(None, None, None)


@pytest.fixture()
def account_client(anvil: Anvil):  # type: ignore[no-untyped-def]
    """Factory: account_client(index, contract, **kw) -> ChainClient for dev account `index`."""
    return lambda index, contract=None, **kw: client_for(anvil, index, contract, **kw)


# Short backoff for tests that exercise retries (imported by other test modules).
FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)
