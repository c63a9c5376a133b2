"""The anchoring worker on a real anvil chain with real SQLite ledgers: end to end, reorg, crash
recovery, lost records, unavailable chain / content store and catch-up."""

from __future__ import annotations

import http.server
import logging
import threading
import urllib.request

import pytest
import sqlalchemy as sa

from rlhf_ledger.anchoring.chain import ChainClient, log_id_for_origin
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.devchain import Anvil
from rlhf_ledger.anchoring.evidence import ANCHORED_TOPIC, verify_evidence
from rlhf_ledger.anchoring.kubo import KuboContentStore
from rlhf_ledger.anchoring.manifest import verify_manifest
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger
from tests.anchoring.conftest import FAST_RETRY
from tests.anchoring.fixtures import LOG, ledger, producer  # shared fixtures
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.anvil


@pytest.fixture
def store(tmp_path):
    return LocalContentStore(tmp_path / "content")


def client(anvil: Anvil, contract: str, url: str | None = None) -> ChainClient:
    return ChainClient(url or anvil.rpc_url, anvil.private_keys[0], contract_address=contract, retry=FAST_RETRY)


def add(ledger: Ledger, producer: Producer, n: int):
    ledger.append(producer.events(n), log_id=LOG)
    return ledger.checkpoint(LOG)


def chain_anchors(c: ChainClient, ledger: Ledger) -> list[dict]:
    log_id = log_id_for_origin(ledger.log_info(LOG).origin)
    return c.rpc("eth_getLogs", [{"address": c.contract_address, "fromBlock": "0x0", "toBlock": "latest",
                                  "topics": ["0x" + ANCHORED_TOPIC.hex(), "0x" + log_id.hex()]}])


def test_end_to_end_pending_to_finalized(anvil, owner, ledger, producer, store):
    worker = AnchorWorker(ledger, client(anvil, owner.contract_address), store, LOG, confirmations=3)
    assert worker.run_once().submitted == []  # only the signed empty tree: nothing to anchor
    k = ledger.size(LOG)  # the producer's key event comes first (docs/keys.md)
    cp1 = add(ledger, producer, 7)
    result = worker.run_once()
    assert result.submitted == [k + 7] and result.unavailable is None
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "included" and row.prev_size == 0 and row.nonce is not None
    assert [t[2] for t in result.transitions] == ["pending", "submitted", "included"]

    anchored = verify_evidence(row.evidence, block_hash=row.block_hash)
    assert (anchored.tree_size, anchored.root_hash, anchored.cid) == (k + 7, cp1.root, row.cid)
    assert anchored.block_number == row.block_number and anchored.timestamp == row.block_timestamp
    assert row.gas_used > 21000 and row.log_index == row.evidence["log_index"]
    manifest = verify_manifest(store.get(row.cid), public_key=ledger.log_info(LOG).public_key, cid=row.cid)
    assert manifest.checkpoint.note == cp1.note and manifest.previous is None

    add(ledger, producer, 2)
    worker.run_once()  # not yet confirmed: the next checkpoint waits (one anchor in flight)
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["included"]
    anvil.mine(2)
    worker.run_once()  # depth 3 reached -> confirmed, then the next anchor starts from it
    rows = ledger.anchors.for_log(LOG)
    assert [(r.checkpoint_size, r.prev_size, r.status) for r in rows] == [
        (k + 7, 0, "confirmed"), (k + 9, k + 7, "included")]
    second = verify_manifest(store.get(rows[1].cid), public_key=ledger.log_info(LOG).public_key)
    assert second.previous.size == k + 7 and second.start == k + 7 and len(second.leaf_hashes) == 2

    anvil.mine(70)  # anvil's finalized tag trails the head by 64 blocks
    worker.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["finalized", "finalized"]
    assert ledger.anchors.settled_for_checkpoint(LOG, k + 9).tx_hash == rows[1].tx_hash
    assert len(chain_anchors(owner, ledger)) == 2
    assert owner.latest(log_id_for_origin(ledger.log_info(LOG).origin))[0] == k + 9


def test_finalized_mode_waits_for_the_finalized_tag(anvil, owner, ledger, producer, store):
    worker = AnchorWorker(ledger, client(anvil, owner.contract_address), store, LOG, confirmations="finalized")
    first = add(ledger, producer, 3)
    worker.run_once()
    anvil.mine(10)
    second = add(ledger, producer, 3)
    worker.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["included"]  # depth 11 is not final
    anvil.mine(70)
    worker.run_once()
    assert [(r.checkpoint_size, r.status) for r in ledger.anchors.for_log(LOG)] == [
        (first.size, "finalized"), (second.size, "included")]


def test_reorg_marks_the_anchor_and_anchors_again(anvil, owner, ledger, producer, store):
    c = client(anvil, owner.contract_address)
    worker = AnchorWorker(ledger, c, store, LOG, confirmations=5)
    cp = add(ledger, producer, 4)
    worker.run_once()
    [before] = ledger.anchors.for_log(LOG)
    assert before.status == "included"
    head = c.block_number("latest")
    # A real reorg on anvil: replace the blocks from the anchor's block to the head (only its block:
    # one block deeper would also drop the fixture's authorize transaction).
    anvil.rpc("anvil_reorg", [head - before.block_number + 1, []])
    assert c.block(before.block_number)["hash"].lower() != before.block_hash
    worker.run_once()
    rows = ledger.anchors.for_log(LOG)
    assert [r.status for r in rows][0] == "reorged" and "hash changed" in rows[0].error
    after = rows[-1]
    assert len(rows) == 2 and after.checkpoint_size == cp.size and after.status == "included"
    assert after.block_hash != before.block_hash
    assert c.block(after.block_number)["hash"].lower() == after.block_hash
    verify_evidence(after.evidence, block_hash=after.block_hash)
    assert [int(lg["data"][2:66], 16) for lg in chain_anchors(c, ledger)] == [cp.size]  # one canonical anchor


class Crash(Exception):
    """Stands in for the process dying at a chosen point."""


class CrashBeforeBroadcast(AnchorWorker):
    def _broadcast(self, row, raw):
        raise Crash("killed after recording the signed transaction, before sending it")


class CrashAfterBroadcast(AnchorWorker):
    def _broadcast(self, row, raw):
        self.chain.rpc("eth_sendRawTransaction", [raw])
        raise Crash("killed after sending, before recording 'submitted'")


@pytest.mark.parametrize("crashing", [CrashBeforeBroadcast, CrashAfterBroadcast])
def test_crash_around_broadcast_anchors_exactly_once(anvil, owner, ledger, producer, store, crashing):
    cp = add(ledger, producer, 5)
    with pytest.raises(Crash):
        crashing(ledger, client(anvil, owner.contract_address), store, LOG, holder="node-1").run_once()
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "pending" and row.tx_hash and row.nonce is not None
    # The restarted worker (same holder id, so it need not wait for the lease to expire).
    restarted = AnchorWorker(ledger, client(anvil, owner.contract_address), store, LOG, holder="node-1")
    restarted.run_once()
    [done] = ledger.anchors.for_log(LOG)
    assert done.status == "included" and done.checkpoint_size == cp.size
    if crashing is CrashAfterBroadcast:
        assert done.tx_hash == row.tx_hash  # found by hash, not sent again
    logs = chain_anchors(owner, ledger)
    assert len(logs) == 1 and logs[0]["transactionHash"].lower() == done.tx_hash


def test_lost_records_adopt_the_existing_anchor(anvil, owner, ledger, producer, store):
    cp = add(ledger, producer, 3)
    worker = AnchorWorker(ledger, client(anvil, owner.contract_address), store, LOG)
    worker.run_once()
    [original] = ledger.anchors.for_log(LOG)
    with ledger.engine.begin() as conn:  # the database lost the anchor rows (restored backup)
        conn.execute(db.anchors.delete())
    worker.run_once()
    [adopted] = ledger.anchors.for_log(LOG)
    assert adopted.tx_hash == original.tx_hash and adopted.status == "included"

    # A pending row without a transaction for a size the contract already holds: the gas
    # estimate reverts with SizeNotIncreasing, handled as "already anchored".
    with ledger.engine.begin() as conn:
        conn.execute(db.anchors.delete())
        conn.execute(db.anchors.insert().values(log_id=LOG, checkpoint_size=cp.size, prev_size=0, status="pending",
                                                cid=original.cid, attempts=0, created_at=0.0, updated_at=0.0))
    worker.run_once()
    [again] = ledger.anchors.for_log(LOG)
    assert again.tx_hash == original.tx_hash and again.status == "included"
    assert len(chain_anchors(owner, ledger)) == 1


class ForwardingProxy:
    """A plain HTTP forwarder to anvil on a fixed port that can be stopped and started again, so
    the chain endpoint really goes away (connection refused) and comes back at the same URL."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        upstream = self.upstream

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = urllib.request.Request(upstream, data=body, headers={"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = resp.read()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def test_chain_unavailable_then_catch_up(anvil, owner, ledger, producer, store, caplog):
    proxy = ForwardingProxy(anvil.rpc_url)
    proxy.start()
    worker = AnchorWorker(ledger, client(anvil, owner.contract_address, proxy.url), store, LOG, confirmations=1)
    first = add(ledger, producer, 2)
    worker.run_once()
    proxy.stop()
    caplog.set_level(logging.INFO, logger="rlhf_ledger.anchoring.worker")
    cp = add(ledger, producer, 6)  # appends and checkpoints never touch the chain
    for _ in range(2):
        result = worker.run_once()
        assert result.unavailable and result.unavailable.startswith("chain unavailable")
    add(ledger, producer, 1)
    paused = [r for r in caplog.records if "paused" in r.getMessage()]
    assert len(paused) == 1 and proxy.url in paused[0].getMessage()
    proxy.start()  # same port: the endpoint is back
    result = worker.run_once()
    assert result.unavailable is None and result.submitted == [cp.size + 1]
    assert any("resumed" in r.getMessage() for r in caplog.records)
    assert [(r.checkpoint_size, r.status) for r in ledger.anchors.for_log(LOG)] == [
        (first.size, "confirmed"), (cp.size + 1, "confirmed")]
    proxy.stop()


def test_content_store_unavailable_then_catch_up(anvil, owner, ledger, producer, store):
    with socket_closed_port() as port:
        kubo = KuboContentStore(f"http://127.0.0.1:{port}", timeout=2)
        worker = AnchorWorker(ledger, client(anvil, owner.contract_address), kubo, LOG)
        cp = add(ledger, producer, 4)
        result = worker.run_once()
    assert result.unavailable and result.unavailable.startswith("content store unavailable")
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "pending" and row.tx_hash is None  # nothing signed or sent
    assert chain_anchors(owner, ledger) == []
    worker.store = store  # the content store is back
    assert worker.run_once().submitted == [cp.size]
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "included" and store.has(row.cid)


class socket_closed_port:
    """A loopback port that nothing listens on (bound then closed)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


def test_unauthorized_key_fails_after_bounded_attempts(anvil, owner, ledger, producer, store):
    stranger = ChainClient(anvil.rpc_url, anvil.private_keys[5], contract_address=owner.contract_address,
                           retry=FAST_RETRY)
    worker = AnchorWorker(ledger, stranger, store, LOG, max_attempts=2)
    add(ledger, producer, 2)
    first = worker.run_once()
    assert "NotAuthorized" in first.errors[0]
    worker.run_once()
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "failed" and row.attempts == 2 and "NotAuthorized" in row.error
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.anchors)).scalar() == 1


def test_watch_backs_off_while_unavailable_and_stops(anvil, owner, ledger, producer, store, caplog):
    with socket_closed_port() as port:
        dead = client(anvil, owner.contract_address, f"http://127.0.0.1:{port}")
    add(ledger, producer, 2)
    worker = AnchorWorker(ledger, dead, store, LOG)
    waits: list[float] = []

    class RecordingStop(threading.Event):
        def wait(self, timeout=None):  # records the backoff instead of sleeping
            waits.append(timeout)
            return False

    caplog.set_level(logging.INFO, logger="rlhf_ledger.anchoring.worker")
    worker.watch(0.5, stop=RecordingStop(), passes=4, max_backoff=3.0)
    assert waits == [1.0, 2.0, 3.0]  # doubled per failed pass, capped; no wait after the last pass
    assert len([r for r in caplog.records if "paused" in r.getMessage()]) == 1
    worker.chain = client(anvil, owner.contract_address)
    worker.watch(0.5, stop=RecordingStop(), passes=1)
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["included"]


def test_cli_watch_backs_off_while_unavailable_like_the_worker(anvil, owner, ledger, producer, store, capsys):
    """`rlhf-ledger anchor --watch` runs its own loop over several logs: it backs off the same way."""
    from rlhf_ledger.cli.anchor import _run

    with socket_closed_port() as port:
        dead = client(anvil, owner.contract_address, f"http://127.0.0.1:{port}")
    add(ledger, producer, 2)
    worker = AnchorWorker(ledger, dead, store, LOG)
    waits: list[float] = []
    _run([worker], False, 0.5, max_backoff=3.0, passes=4, sleep=waits.append)
    assert waits == [1.0, 2.0, 3.0]
    assert "chain unavailable" in capsys.readouterr().err
    worker.chain = client(anvil, owner.contract_address)
    waits.clear()
    _run([worker], False, 0.5, max_backoff=3.0, passes=2, sleep=waits.append)
    assert waits == [0.5]  # reachable again: back to the interval
    assert [r.status for r in ledger.anchors.for_log(LOG)][0] in ("included", "confirmed")
