"""`--rpc` and `--ipfs` against real components: a bundle exported by the ledger after the real
AnchorWorker anchored it on a real anvil chain, then checked online against that chain (also
after a real `anvil_reorg`), against an emulated lying JSON-RPC proxy, against an unreachable
endpoint, and against the real embedded Kubo (behind the emulated RPC layer of the anchoring
tests) and an emulated lying gateway.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import urllib.request
from pathlib import Path

import httpx
import pytest

from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.export.bundle import Scope, export_bundle
from rlhf_ledger.store.ledger import Ledger
from rlhf_verifier.cli import main
from tests.anchoring.conftest import FAST_RETRY
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.anvil
LOG = "online"


class Anchored:
    def __init__(self, led: Ledger, bundle: Path, anchors: list[dict], owner: ChainClient):
        self.led, self.bundle, self.anchors, self.owner = led, bundle, anchors, owner

    def args(self, anvil, *extra: str) -> list[str]:
        """The regulator's minimal command (issue 12): no key from the exporter."""
        return [str(self.bundle), "--chain-id", str(anvil.chain_id), "--contract", self.owner.contract_address,
                "--json", *extra]

    def manifests(self) -> dict[str, bytes]:
        out = {}
        for line in self.bundle.read_text().splitlines():
            rec = json.loads(line)
            if rec["kind"] == "anchor":
                out[rec["cid"]] = base64.b64decode(rec["manifest"])
        return out


@pytest.fixture
def anchored(anvil, owner, tmp_path):
    """Two checkpoints anchored (and confirmed) by the real AnchorWorker, exported as a run bundle."""
    led = Ledger.open(tmp_path / "data", None)
    led.init_log(LOG, checkpoint_every_events=10_000)
    prod = Producer(LOG)
    led.register_producer(LOG, prod.signer.public_key)
    store = LocalContentStore(tmp_path / "data" / "content")
    client = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address, retry=FAST_RETRY)
    worker = AnchorWorker(led, client, store, LOG, confirmations=1)
    for k in range(2):
        # a run bundle needs its run.start (docs/verifier.md, "What VALID means")
        start = [prod.event("run-a", "run.start", {"method": "dpo", "hyperparameters": {"lr": 1e-5}})] if k == 0 else []
        evs = start + prod.events(4 - len(start), run_id="run-a")
        led.append(evs, log_id=LOG)
        led.checkpoint(LOG)
        worker.run_once()
        anvil.mine(2)
        worker.run_once()
    anchors = led.anchors.for_log(LOG)
    assert len(anchors) == 2 and {a.status for a in anchors} <= {"confirmed", "finalized"}
    path = tmp_path / "b.rlhfbundle.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("run", run_id="run-a"), content_store=store)
    yield Anchored(led, path, anchors, owner)
    led.close()


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err


def _online_findings(out: str) -> list[dict]:
    return [f for f in json.loads(out)["findings"] if f["check"].startswith("anchor") and f["check"] != "anchor.coverage"]


def _uncovered(out: str) -> list[dict]:
    return [f for f in json.loads(out)["findings"] if f["check"] == "anchor.coverage"]


# --- --rpc ---------------------------------------------------------------------------------------


def test_rpc_confirms_anchors_on_the_real_chain(anchored, anvil, capsys):
    code, out, err = run(anchored.args(anvil, "--rpc", anvil.rpc_url, "--min-confirmations", "2"), capsys)
    rep = json.loads(out)
    assert code == 0, out + err
    assert [a["status"] for a in rep["anchors"]] == ["confirmed (online)"] * 2
    assert "rpc" in rep["trusted"]
    # More confirmations than the chain has: named, exit 1.
    code, out, _ = run(anchored.args(anvil, "--rpc", anvil.rpc_url, "--min-confirmations", "100000"), capsys)
    found = _online_findings(out)
    assert code == 1 and found and all("fewer than the required 100000" in f["message"] for f in found)


def test_rpc_after_a_real_reorg_reports_the_anchor_not_canonical(anchored, anvil, capsys):
    last = anchored.anchors[-1]
    head = int(anvil.rpc("eth_blockNumber", []), 16)
    # Replace every block from the last anchor's block to the head (the anchor tx is dropped).
    anvil.rpc("anvil_reorg", [head - last.block_number + 1, []])
    code, out, err = run(anchored.args(anvil, "--rpc", anvil.rpc_url), capsys)
    found = _online_findings(out)
    assert code == 1, out + err
    assert [f["where"].split(" (")[0] for f in found] == [f"anchor of checkpoint {last.checkpoint_size}"]
    assert "not the anchor's (reorg or wrong chain)" in found[0]["message"]
    # The events under the dropped anchor are no longer under a confirmed anchor.
    assert _uncovered(out) and all(f["where"].startswith("event ") for f in _uncovered(out))
    # Offline with the chain pinned (and the log key pinned) but nothing to confirm the anchors
    # with: they are unconfirmed and count for nothing (issue 10 item 3), so every event is uncovered ...
    pin = ["--log-key", anchored.led.log_info(LOG).vkey]
    code, out, _ = run(anchored.args(anvil, *pin), capsys)
    rep = json.loads(out)
    assert code == 1 and len(_uncovered(out)) == rep["counts"]["events"]
    assert {a["status"] for a in rep["anchors"]} == {"unconfirmed"} and rep["counts"]["events_anchored"] == 0
    # ... unless the user accepts unanchored events; the anchors stay listed as unconfirmed.
    code, out, _ = run(anchored.args(anvil, "--allow-unanchored", *pin), capsys)
    assert code == 0 and {a["status"] for a in json.loads(out)["anchors"]} == {"unconfirmed"}


class EmulatedLyingRpcProxy:
    """EMULATED dishonest JSON-RPC node (not a real client): forwards every request to anvil but
    rewrites the `hash` of the block it returns for `eth_getBlockByNumber`, as a node serving a
    different fork (or lying) would."""

    def __init__(self, upstream: str):
        proxy = self
        self.upstream = upstream

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = urllib.request.Request(proxy.upstream, data=body, headers={"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = json.loads(resp.read())
                if json.loads(body).get("method") == "eth_getBlockByNumber" and isinstance(answer.get("result"), dict):
                    h = answer["result"]["hash"]
                    answer["result"]["hash"] = h[:-4] + ("0000" if not h.endswith("0000") else "1111")
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_rpc_that_lies_about_the_block_hash_is_caught(anchored, anvil, capsys):
    proxy = EmulatedLyingRpcProxy(anvil.rpc_url)
    try:
        code, out, _ = run(anchored.args(anvil, "--rpc", proxy.url), capsys)
    finally:
        proxy.close()
    found = _online_findings(out)
    assert code == 1 and len(found) == 2
    assert all(f["check"] == "anchor.online" and "not the anchor's" in f["message"] for f in found)


def _dead_port() -> int:
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("option", ["--rpc", "--ipfs"])
def test_unreachable_endpoint_cannot_run(anchored, anvil, capsys, option):
    url = f"http://127.0.0.1:{_dead_port()}"
    code, out, err = run(anchored.args(anvil, option, url, "--log-key", anchored.led.log_info(LOG).vkey), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"{option} {url} is unreachable" in err


# --- --ipfs --------------------------------------------------------------------------------------


def _kubo_add(kubo_rpc, data: bytes) -> str:
    r = httpx.post(f"{kubo_rpc.url}/api/v0/add", files={"file": ("manifest", data)})
    r.raise_for_status()
    return json.loads(r.text.splitlines()[-1])["Hash"]


def test_ipfs_fetches_each_manifest_from_real_kubo(anchored, anvil, kubo_rpc, capsys):
    manifests = anchored.manifests()
    assert len(manifests) == 2
    for data in manifests.values():
        _kubo_add(kubo_rpc, data)
    kubo_rpc.requests.clear()
    code, out, err = run(anchored.args(anvil, "--ipfs", kubo_rpc.url + "/api/v0", "--rpc", anvil.rpc_url), capsys)
    assert code == 0, out + err
    assert sorted(p["arg"] for c, p in kubo_rpc.requests if c == "cat") == sorted(manifests)
    assert "ipfs" in json.loads(out)["trusted"]


def test_ipfs_content_missing_from_the_node_is_named(anchored, anvil, kubo_rpc, capsys):
    code, out, _ = run(anchored.args(anvil, "--ipfs", kubo_rpc.url + "/api/v0", "--rpc", anvil.rpc_url), capsys)
    found = [f for f in json.loads(out)["findings"] if f["check"] == "anchor.ipfs"]
    assert code == 1 and len(found) == 2 and all("HTTP 500" in f["message"] for f in found)


class EmulatedLyingIpfsGateway:
    """EMULATED dishonest IPFS gateway (no IPFS code): answers GET /ipfs/<cid> with the real
    manifest bytes for that CID, one byte altered."""

    def __init__(self, content: dict[str, bytes]):
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = gateway.content.get(self.path.removeprefix("/ipfs/"))
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.content = content
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ipfs_gateway_serving_altered_bytes_is_rejected(anchored, anvil, capsys):
    gw = EmulatedLyingIpfsGateway(anchored.manifests())
    try:
        code, out, _ = run(anchored.args(anvil, "--ipfs", gw.url, "--rpc", anvil.rpc_url), capsys)
    finally:
        gw.close()
    found = [f for f in json.loads(out)["findings"] if f["check"] == "anchor.ipfs"]
    assert code == 1 and len(found) == 2
    assert all("does not match it" in f["message"] for f in found)


def test_the_contract_refuses_equivocation_so_later_anchors_do_not_matter(anchored, anvil, capsys):
    """Issue 12: the contract refuses a root that does not extend the anchored one, so the
    verifier needs no scan of the contract's Anchored events: a later anchor the bundle does not
    hold is consistent with it by construction, and the bundle stays VALID as of its own final
    checkpoint. The code the contract runs is proven (state proof), which is what makes this hold."""
    import hashlib

    from rlhf_ledger.anchoring.chain import ContractRevert

    code, out, err = run(anchored.args(anvil, "--rpc", anvil.rpc_url), capsys)
    assert code == 0, out + err
    assert {a["contract_code"] for a in json.loads(out)["anchors"]} == {"ProvenanceAnchor (solc 0.8.37, 2026-12)"}
    led = anchored.led
    origin = led.log_info(LOG).origin
    log_id = hashlib.sha256(origin.encode()).digest()
    anchored_size = anchored.anchors[-1].checkpoint_size
    with pytest.raises(ContractRevert) as e:
        anchored.owner.anchor(log_id, anchored_size + 5, b"\x42" * 32, "bafkreiequivocation")
    assert e.value.error_name == "InconsistentProof"
    later = Producer(LOG)
    led.register_producer(LOG, later.signer.public_key)
    led.append(later.events(5, run_id="run-b"), log_id=LOG)
    size = led.checkpoint(LOG).size
    proof = led.consistency_proof(LOG, anchored_size, size)
    tx = anchored.owner.anchor(log_id, size, led.root(LOG, size), "bafkreilater", proof)
    anchored.owner.wait_for_receipt(tx)
    code, out, err = run(anchored.args(anvil, "--rpc", anvil.rpc_url), capsys)
    assert code == 0, out + err


def test_evidence_without_a_log_key_proof(anchored, anvil, capsys):
    """An exporter strips the log key proofs: offline, nothing proves the log key (INVALID unless
    pinned) nor the contract's code (a warning); with --rpc the node is asked for the code."""
    objs = [json.loads(x) for x in anchored.bundle.read_text().splitlines()]
    for o in objs:
        if o["kind"] == "anchor":
            del o["evidence"]["log_key_proof"]
    anchored.bundle.write_text("\n".join(json.dumps(o) for o in objs) + "\n")
    final = [o for o in objs if o["kind"] == "anchor"][-1]["evidence"]["block_hash"]
    code, out, _ = run(anchored.args(anvil, "--trusted-block-hash", final), capsys)
    rep = json.loads(out)
    assert code == 1 and "no log key is proven" in [f for f in rep["findings"] if f["check"] == "log_key"][0]["message"]
    vkey = anchored.led.log_info(LOG).vkey
    code, out, _ = run(anchored.args(anvil, "--trusted-block-hash", final, "--log-key", vkey), capsys)
    rep = json.loads(out)
    assert code == 0 and any("no log key proof" in w and "not proven" in w for w in rep["warnings"])
    code, out, err = run(anchored.args(anvil, "--rpc", anvil.rpc_url, "--log-key", vkey), capsys)
    assert code == 0, out + err


def test_rpc_and_trusted_block_hashes_are_both_enforced(anchored, anvil, capsys):
    """Issue 10 item 3: with --rpc and --trusted-block-hash both given, an anchor counts only if
    both confirm it; a node that confirms does not excuse a block hash the user did not trust
    (that anchor stays unconfirmed, and the events only it covers are uncovered)."""
    hashes = [a.block_hash for a in anchored.anchors]
    both = ["--rpc", anvil.rpc_url]
    for h in hashes:
        both += ["--trusted-block-hash", h]
    code, out, err = run(anchored.args(anvil, *both), capsys)
    assert code == 0, out + err
    code, out, _ = run(anchored.args(anvil, "--rpc", anvil.rpc_url, "--trusted-block-hash", hashes[0]), capsys)
    rep = json.loads(out)
    assert code == 1 and _uncovered(out)
    assert {a["block_hash"]: a["status"] for a in rep["anchors"]} == {
        hashes[0]: "confirmed (trusted block hash and online)", hashes[1]: "unconfirmed"}
    # the final anchor's block alone (the regulator's one trusted hash) covers every event
    code, out, err = run(anchored.args(anvil, "--rpc", anvil.rpc_url, "--trusted-block-hash", hashes[1]), capsys)
    assert code == 0, out + err
