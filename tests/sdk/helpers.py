"""Test helpers for the SDK tests: emulated ledgers (named so), a tiny model, event checks."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rlhf_ledger.core.errors import ConflictError, LedgerError, SequenceError, SignatureError, UnknownKeyError
from rlhf_ledger.core.events import parse_envelope
from rlhf_ledger.core.keys import Signer


class RecordingAppendForTests:
    """EMULATED ledger append (tests only): an in-process stand-in for ``ledger.store.Ledger.append``.

    It applies the acceptance rules of docs/event-format.md that matter to the SDK (known key,
    signature, idempotent re-submission by event id, per-producer seq/prev chain, openings) and
    records every call, so tests can count deliveries. The real ``Ledger`` is tested separately
    (test_local_sink_real_ledger.py). ``fail_transient`` makes the next N calls raise
    ConnectionError (an outage).
    """

    def __init__(self, *signers: Signer):
        self.keys = {s.key_id: s.public_key for s in signers}
        self.entries: list[dict] = []
        self.index_of: dict[str, int] = {}
        self.chain: dict[tuple[str, str], tuple[int, str]] = {}
        self.ended: set[str] = set()  # runs closed by their run.end (the ledger refuses later events)
        self.calls: list[int] = []  # batch sizes
        self.fail_transient = 0
        self.lock = threading.Lock()

    def __call__(self, envelopes: list[dict]) -> list[dict]:
        with self.lock:
            self.calls.append(len(envelopes))
            if self.fail_transient > 0:
                self.fail_transient -= 1
                raise ConnectionError("emulated outage")
            chain = dict(self.chain)
            ended = set(self.ended)
            plan: list[tuple[str, Any, bool]] = []
            for i, env in enumerate(envelopes):
                p = parse_envelope(env, where=f"events[{i}]")
                if p.producer not in self.keys:
                    raise UnknownKeyError("producer key is not registered", where=f"events[{i}].event.producer")
                p.verify_signature(self.keys[p.producer], where=f"events[{i}].sig")
                if p.event_id in self.index_of or any(x[0] == p.event_id for x in plan):
                    plan.append((p.event_id, p, True))
                    continue
                k = (p.event["run_id"], p.producer)
                if k[0] in ended:
                    raise LedgerError(f"run {k[0]!r} was closed by its run.end", where=f"events[{i}].event.run_id",
                                      code="run_ended")
                if p.event["type"] == "run.end":
                    ended.add(k[0])
                last = chain.get(k)
                want_seq, want_prev = (0, None) if last is None else (last[0] + 1, last[1])
                if p.event["seq"] < want_seq:
                    raise ConflictError("a different event holds this seq", where=f"events[{i}].event.seq")
                if p.event["seq"] != want_seq or p.event["prev"] != want_prev:
                    raise SequenceError(f"expected seq {want_seq}", where=f"events[{i}].event.seq")
                chain[k] = (p.event["seq"], p.event_id)
                plan.append((p.event_id, p, False))
            out = []
            for event_id, p, dup in plan:
                if not dup and event_id not in self.index_of:
                    self.index_of[event_id] = len(self.entries)
                    self.entries.append(json.loads(p.entry))
                out.append({"index": self.index_of[event_id], "event_id": event_id,
                            "leaf_hash": base64.b64encode(p.leaf_hash).decode(), "duplicate": dup})
            self.chain = chain
            self.ended = ended
            return out

    def events(self) -> list[dict]:
        return [e["event"] for e in self.entries]


class EmulatedLedgerApiForTests:
    """EMULATED ledger HTTP API (tests only): a tiny local server speaking the submission contract
    (POST /v1/logs/{log_id}/events, bearer token, 200 results / RFC 9457 problems) over a
    RecordingAppendForTests. ``script`` is a list of status codes to answer before behaving
    normally (e.g. [503, 503] then success), to exercise retries. Not the real API (api/)."""

    def __init__(self, append: RecordingAppendForTests, *, token: str, log_id: str):
        self.append, self.token, self.log_id = append, token, log_id
        self.script: list[int] = []
        self.requests: list[dict] = []
        self.delay = 0.0  # seconds to wait before answering each request (a slow ledger)
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _reply(self, code: int, doc: dict, ctype: str = "application/json") -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if code == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.delay:
                    import time

                    time.sleep(outer.delay)
                try:
                    count = len(json.loads(body)["events"])
                except (ValueError, KeyError, TypeError):
                    count = -1
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "count": count})
                if self.path != f"/v1/logs/{outer.log_id}/events":
                    return self._reply(404, {"title": "not found"}, "application/problem+json")
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._reply(401, {"title": "unauthorized", "status": 401}, "application/problem+json")
                if outer.script:
                    code = outer.script.pop(0)
                    return self._reply(code, {"title": f"scripted {code}", "status": code}, "application/problem+json")
                try:
                    events = json.loads(body)["events"]
                    results = outer.append(events)
                except LedgerError as e:
                    return self._reply(422, {"title": "event refused", "status": 422, "code": e.code,
                                             "detail": e.message, "where": e.where}, "application/problem+json")
                except ConnectionError as e:
                    return self._reply(503, {"title": str(e), "status": 503}, "application/problem+json")
                self._reply(200, {"results": results})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_chains(events: list[dict]) -> None:
    """Every producer's events in a run form an unbroken seq/prev chain (hash = sha256 JCS)."""
    import hashlib

    from rlhf_ledger.core.jcs import canonicalize

    last: dict[tuple[str, str], tuple[int, str]] = {}
    for e in events:
        k = (e["run_id"], e["producer"])
        if k not in last:
            assert e["seq"] == 0 and e["prev"] is None, e
        else:
            assert e["seq"] == last[k][0] + 1 and e["prev"] == last[k][1], e
        last[k] = (e["seq"], hashlib.sha256(canonicalize(e)).hexdigest())


def tiny_model(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
