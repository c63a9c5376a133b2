"""Worker failure states on a real anvil: a failed evidence build is terminal and visible (one row
per transaction), later checkpoints keep being anchored, an operator retries one on purpose;
--confirmations always applies; the lease is released by the command; legacy sending; failover."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rlhf_ledger.anchoring import worker as worker_mod
from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.evidence import EvidenceError, verify_evidence
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.cli.anchor import anchor_command, anchors_command
from rlhf_ledger.store import db
from rlhf_ledger.store.anchors import RetryRefused
from rlhf_ledger.store.ledger import Ledger
from tests.anchoring.conftest import FAST_RETRY
from tests.anchoring.fixtures import LOG, ledger, producer  # shared fixtures
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.anvil


@pytest.fixture
def store(tmp_path):
    return LocalContentStore(tmp_path / "content")


def client(anvil, contract: str, **kw) -> ChainClient:
    return ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=contract, retry=FAST_RETRY, **kw)


def add(ledger, producer, n):
    ledger.append(producer.events(n), log_id=LOG)
    return ledger.checkpoint(LOG)


def test_failed_evidence_build_neither_loops_nor_blocks_later_checkpoints(anvil, owner, ledger, producer, store,
                                                                          monkeypatch):
    real_build = worker_mod.build_evidence
    broken = {"on": True}

    def build(chain, tx_hash, **kw):
        if broken["on"]:
            raise EvidenceError("rebuilt receipt trie root 0x00 != header receiptsRoot 0x11", where=f"block {tx_hash}")
        return real_build(chain, tx_hash, **kw)
    monkeypatch.setattr(worker_mod, "build_evidence", build)
    w = AnchorWorker(ledger, client(anvil, owner.contract_address), store, LOG, confirmations=1, max_attempts=3)
    first = add(ledger, producer, 3).size  # 3 events after the producer's key event
    for _ in range(8):  # many passes: the failed row must stay one row, not be re-adopted
        w.run_once()
    rows = ledger.anchors.for_log(LOG)
    assert [(r.checkpoint_size, r.status, r.attempts) for r in rows] == [(first, "failed", 3)]
    assert rows[0].error == ("building anchor evidence failed: block " + rows[0].tx_hash
                                + ": rebuilt receipt trie root 0x00 != header receiptsRoot 0x11")
    assert w.chain.latest(w.chain_log_id)[0] == first  # the transaction itself is on chain

    broken["on"] = False
    later = add(ledger, producer, 2).size  # a later checkpoint is anchored although the first failed
    w.run_once()
    anvil.mine(1)
    w.run_once()
    rows = ledger.anchors.for_log(LOG)
    assert [(r.checkpoint_size, r.prev_size, r.status) for r in rows] == [
        (first, 0, "failed"), (later, 0, "confirmed")]
    for _ in range(3):
        w.run_once()
    assert len(ledger.anchors.for_log(LOG)) == 2  # still one row per transaction

    # The operator retries the failed one on purpose: its transaction is looked up again.
    retried = ledger.anchors.retry(LOG, rows[0].id)
    assert retried.status == "submitted" and retried.attempts == 0
    assert retried.error.startswith("retry requested by operator (was: building anchor evidence failed")
    w.run_once()
    row = ledger.anchors.for_log(LOG)[0]
    assert row.status in ("included", "confirmed") and verify_evidence(row.evidence).tree_size == first
    with pytest.raises(RetryRefused, match=f"anchor {row.id} is {row.status}, only failed anchors"):
        ledger.anchors.retry(LOG, row.id)
    with pytest.raises(RetryRefused, match="no anchor 999 in log train"):
        ledger.anchors.retry(LOG, 999)


def test_the_finalized_tag_never_replaces_confirmations(anvil, owner, ledger, producer, store, monkeypatch):
    """Hardhat and eth-tester report finalized = latest: a row must still wait K blocks."""
    c = client(anvil, owner.contract_address)
    real = c.block_number
    monkeypatch.setattr(c, "block_number", lambda tag="latest": real("latest"))  # finalized == head
    w = AnchorWorker(ledger, c, store, LOG, confirmations=3)
    add(ledger, producer, 4)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["included"]  # depth 1 of 3
    anvil.mine(1)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["included"]  # depth 2 of 3
    anvil.mine(1)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["finalized"]  # depth 3 and the tag


def test_finalized_mode_also_needs_its_depth(anvil, owner, ledger, producer, store, monkeypatch):
    c = client(anvil, owner.contract_address)
    real = c.block_number
    monkeypatch.setattr(c, "block_number", lambda tag="latest": real("latest"))
    w = AnchorWorker(ledger, c, store, LOG, confirmations="finalized")
    add(ledger, producer, 4)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["included"]
    anvil.mine(1)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["finalized"]


def test_legacy_type0_sending_anchors_and_verifies(anvil, owner, ledger, producer, store):
    c = client(anvil, owner.contract_address, fee_mode="legacy")
    w = AnchorWorker(ledger, c, store, LOG, confirmations=1)
    cp = add(ledger, producer, 2)
    w.run_once()
    [row] = ledger.anchors.for_log(LOG)
    tx = c.transaction(row.tx_hash)
    assert tx["type"] == "0x0" and "maxFeePerGas" not in tx and int(tx["gasPrice"], 16) > 0
    assert verify_evidence(row.evidence).tree_size == cp.size and row.evidence["receipt_rlp"].startswith("0xf9")


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_rpc_failover_moves_to_the_next_url_and_anchoring_goes_on(anvil, owner, ledger, producer, store):
    dead = _closed_port_url()
    c = ChainClient(f"{dead},{anvil.rpc_url}", anvil.private_keys[0], contract_address=owner.contract_address,
                    retry=FAST_RETRY)
    w = AnchorWorker(ledger, c, store, LOG, confirmations=1)
    cp = add(ledger, producer, 2)
    result = w.run_once()
    assert result.unavailable is None and result.submitted == [cp.size] and c.failovers >= 1
    assert c.rpc_url == anvil.rpc_url


def test_failover_refuses_an_endpoint_of_another_chain(anvil, owner):
    from rlhf_ledger.anchoring.chain import ChainError
    from rlhf_ledger.anchoring.devchain import Anvil

    with Anvil(chain_id=4242) as other:
        c = ChainClient([anvil.rpc_url, other.rpc_url], anvil.private_keys[0], retry=FAST_RETRY)
        assert c.chain_id == 31337
        with pytest.raises(ChainError, match=r"eth_chainId: endpoint .* reports chain '0x1092', the first endpoint "
                                             r"reports 31337; all --rpc URLs must serve the same chain"):
            c._fail_over(ConnectionError("emulated outage"))  # the switch a transient error causes


def test_anchor_once_releases_its_lease_and_anchors_lists_and_retries(anvil, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    ledger = Ledger.open(data)
    ledger.init_log("train")
    p = Producer("train")
    ledger.register_producer("train", p.signer.public_key)
    ledger.append(p.events(4), log_id="train")
    ledger.checkpoint("train")
    env = {"RLHF_ANCHOR_PRIVATE_KEY": anvil.private_keys[4], "RLHF_CHAIN_RPC": anvil.rpc_url}
    runner = CliRunner()
    out = runner.invoke(anchor_command, ["--data-dir", str(data), "--deploy", "--confirmations", "1"], env=env)
    assert out.exit_code == 0, out.output
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(db.locks).where(db.locks.c.name == "anchor:train")).first() is None
    table = runner.invoke(anchors_command, ["--data-dir", str(data), "--log", "train"])
    assert table.output.splitlines()[0].split()[:3] == ["id", "size", "prev"]
    refused = runner.invoke(anchors_command, ["--data-dir", str(data), "--log", "train", "--retry", "1"])
    assert refused.exit_code != 0 and "anchor 1 is confirmed, only failed anchors can be retried" in refused.output
    ledger.close()


def test_malformed_node_answers_end_the_pass_with_one_line_not_a_traceback(anvil, owner, ledger, producer, store,
                                                                          monkeypatch):
    from rlhf_ledger.anchoring.chain import ChainError

    c = client(anvil, owner.contract_address)
    w = AnchorWorker(ledger, c, store, LOG, confirmations=1)
    cp = add(ledger, producer, 2)
    w.run_once()
    real_rpc = c.rpc

    def rpc(method, params):
        if method == "eth_getLogs":
            return "garbage"
        if method == "eth_getBlockByNumber" and params[0] == "latest":
            return {"number": "12", "hash": "0x" + "00" * 32}
        return real_rpc(method, params)
    monkeypatch.setattr(c, "rpc", rpc)
    with pytest.raises(ChainError, match="eth_getLogs: answer = 'garbage' is not a list"):
        w._find_anchored(cp.size)
    result = w.run_once()
    assert result.errors == [f"{c.rpc_url}: eth_getBlockByNumber(latest): number = '12' is not a 0x-hex quantity"]


def test_stored_anchor_errors_carry_no_rpc_credential(anvil, owner, ledger, producer, store):
    """An error quoting the RPC URL (which may carry an API key) is stored scrubbed, not only
    served scrubbed (issue 11, item 6)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    secret_url = f"http://user:hunter2secret@127.0.0.1:{port}/v3/0123456789abcdef0123456789abcdef"
    worker = AnchorWorker(ledger, ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address,
                                              retry=FAST_RETRY), store, LOG, max_attempts=1)
    ledger.append(producer.events(2), log_id=LOG)
    ledger.checkpoint(LOG)
    worker.run_once()
    [row] = ledger.anchors.for_log(LOG)
    ledger.anchors.update(row, error=f"node at {secret_url} refused: boom")  # any writer: the store scrubs
    stored = ledger.anchors.for_log(LOG)[0].error
    assert "hunter2secret" not in stored and "0123456789abcdef0123456789abcdef" not in stored
    assert "127.0.0.1" in stored and "refused: boom" in stored



def _settled_first_anchor(anvil, owner, ledger, producer, store, **kw) -> AnchorWorker:
    """A worker whose log key is registered and first checkpoint anchored (automine), so that
    the next pass sends exactly one transaction: the anchor."""
    w = AnchorWorker(ledger, client(anvil, owner.contract_address), store, LOG, confirmations=1, **kw)
    add(ledger, producer, 2)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["confirmed"]
    return w


def test_a_receipt_that_lags_the_send_is_seen_in_the_same_pass(anvil, owner, ledger, producer, store):
    """anvil and Hardhat mine on submission but asynchronously: the block comes a moment after the
    send. One pass waits (at most `inclusion_wait`) and records the inclusion, and reads the head
    after the receipt, so the row is not left at depth 0."""
    import threading

    w = _settled_first_anchor(anvil, owner, ledger, producer, store)
    add(ledger, producer, 3)
    anvil.set_automine(False)
    timer = threading.Timer(0.3, lambda: anvil.mine(1))
    try:
        timer.start()
        w.run_once()
    finally:
        timer.join()
        anvil.set_automine(True)
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["confirmed", "confirmed"]


def test_inclusion_wait_is_bounded(anvil, owner, ledger, producer, store):
    """A chain that does not mine on submission: the pass stops waiting after `inclusion_wait`."""
    import time

    w = _settled_first_anchor(anvil, owner, ledger, producer, store, inclusion_wait=0.2)
    add(ledger, producer, 3)
    anvil.set_automine(False)
    try:
        t0 = time.monotonic()
        w.run_once()
        assert time.monotonic() - t0 < 5
        assert [r.status for r in ledger.anchors.for_log(LOG)] == ["confirmed", "submitted"]
        anvil.mine(1)
    finally:
        anvil.set_automine(True)
    w.run_once()
    assert [r.status for r in ledger.anchors.for_log(LOG)] == ["confirmed", "confirmed"]
