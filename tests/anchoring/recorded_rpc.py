"""EmulatedRecordedRpc: an EMULATED JSON-RPC node (not a real client). A small local HTTP server
that answers from recorded JSON-RPC answers of one real public block (tests/fixtures/chains), so the
real ChainClient and the evidence builder can be run, over HTTP, on a real chain's data without
the network. It is never the only test of that path: every builder and worker test also runs on a
real anvil.

It answers only what was recorded: eth_chainId, eth_getBlockByHash (with or without transaction
objects, whichever the recording has: a recording with full objects also answers the hashes-only
form by reducing them to their hashes), eth_getBlockReceipts, eth_getTransactionReceipt and,
when a raw header is given, debug_getRawHeader. A method it has no recording for gets the JSON-RPC
error a node gives for an unknown method (-32601); an unknown block or transaction gets null.
Tests may tamper with the recorded answers (the attribute dicts are served as they are) to act
as a lying node.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
from typing import Any


class EmulatedRecordedRpc:
    """EMULATED node serving recorded answers of one real block; see the module docstring."""

    def __init__(self, *, chain_id: int, block: dict[str, Any], block_receipts: list[dict[str, Any]] | None,
                 tx_receipts: dict[str, dict[str, Any]] | None = None, raw_header: str | None = None) -> None:
        self.chain_id = chain_id
        self.block = copy.deepcopy(block)
        self.block_receipts = copy.deepcopy(block_receipts)  # None: the node has no eth_getBlockReceipts
        if tx_receipts is None and block_receipts is not None:
            tx_receipts = {r["transactionHash"].lower(): r for r in block_receipts}
        self.tx_receipts = {h.lower(): copy.deepcopy(r) for h, r in (tx_receipts or {}).items()}
        self.raw_header = raw_header
        self.calls: list[str] = []
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server naming
                request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                answer = json.dumps(node.answer(request)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # a short poll interval: shutdown() waits for it, and tests start one node each
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        method, params = request.get("method"), request.get("params") or []
        self.calls.append(method)
        base = {"jsonrpc": "2.0", "id": request.get("id")}
        try:
            result = self._result(method, params)
        except LookupError:
            return dict(base, error={"code": -32601, "message": f"the method {method} does not exist/is not available"})
        return dict(base, result=result)

    def _is_block(self, ref: Any) -> bool:
        return isinstance(ref, str) and ref.lower() == self.block["hash"].lower()

    def _result(self, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_getBlockByHash":
            if not self._is_block(params[0]):
                return None
            block = copy.deepcopy(self.block)
            has_objects = any(isinstance(t, dict) for t in block["transactions"])
            if has_objects and not params[1]:
                block["transactions"] = [t["hash"] for t in block["transactions"]]
            elif not has_objects and params[1]:
                raise LookupError("full transaction objects were not recorded")
            return block
        if method == "eth_getBlockReceipts":
            if self.block_receipts is None:
                raise LookupError(method)
            return copy.deepcopy(self.block_receipts) if self._is_block(params[0]) else None
        if method == "eth_getTransactionReceipt":
            return copy.deepcopy(self.tx_receipts.get(str(params[0]).lower()))
        if method == "debug_getRawHeader" and self.raw_header is not None:
            return self.raw_header if self._is_block(params[0]) else None
        raise LookupError(method)

    def __enter__(self) -> EmulatedRecordedRpc:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
