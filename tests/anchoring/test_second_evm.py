"""End to end on a second EVM implementation: Hardhat 3's EDR node (pinned npm packages in
contracts/, started here on a free loopback port). Deploy, anchor, export a bundle, verify it with
the independent verifier pinned to the anchor block hashes.

EDR differs from anvil where it matters: it reports `finalized` = `safe` = latest (so only
--confirmations protects the anchor), and has neither eth_getBlockReceipts nor
debug_getRawHeader (receipts are fetched one by one, the header is rebuilt from its fields)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.devchain import HardhatNode
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.export.bundle import Scope, export_bundle
from rlhf_ledger.store.ledger import Ledger
from tests.anchoring.conftest import FAST_RETRY
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.anvil
LOG = "edr"


@pytest.fixture(scope="module")
def hardhat() -> Iterator[HardhatNode]:
    with HardhatNode(chain_id=31338) as node:
        yield node


def test_edr_reports_what_the_docs_say(hardhat):
    latest = hardhat.rpc("eth_getBlockByNumber", ["latest", False])
    assert hardhat.rpc("eth_getBlockByNumber", ["finalized", False])["number"] == latest["number"]
    with pytest.raises(Exception, match="not supported"):
        hardhat.rpc("eth_getBlockReceipts", ["latest"])


def test_deploy_anchor_export_and_verify_pinned_to_block_hashes(hardhat, tmp_path):
    owner = ChainClient(hardhat.rpc_url, hardhat.private_keys[0], retry=FAST_RETRY)
    owner.deploy()
    owner.wait_for_receipt(owner.authorize(owner.address))
    led = Ledger.open(tmp_path / "data", f"sqlite:///{tmp_path / 'l.sqlite3'}")
    led.init_log(LOG, checkpoint_every_events=10_000)
    p = Producer(LOG)
    led.register_producer(LOG, p.signer.public_key)
    keys = led.size(LOG)  # the producer's key event comes first (docs/keys.md)
    store = LocalContentStore(tmp_path / "content")
    worker = AnchorWorker(led, owner, store, LOG, confirmations=2)
    for n in (3, 4):
        led.append(p.events(n, run_id="run-a"), log_id=LOG)
        led.checkpoint(LOG)
        worker.run_once()
        # EDR says the block is finalized at once; the row still waits for its 2nd block.
        assert led.anchors.for_log(LOG)[-1].status == "included"
        hardhat.mine(1)
        worker.run_once()
    rows = led.anchors.for_log(LOG)
    assert [(r.checkpoint_size, r.status) for r in rows] == [(keys + 3, "finalized"), (keys + 7, "finalized")]
    assert all(r.evidence["chain_id"] == 31338 for r in rows)

    path = tmp_path / "edr.rlhfbundle.jsonl"
    with open(path, "w") as f:
        export_bundle(led, LOG, f, Scope("range", start=0, end=keys + 7), content_store=store)
    base = [sys.executable, "-m", "rlhf_verifier", str(path), "--log-key", led.log_info(LOG).vkey,
            "--chain-id", "31338", "--contract", owner.contract_address, "--json"]
    pinned = [a for r in rows for a in ("--trusted-block-hash", r.block_hash)]
    ok = subprocess.run(base + pinned, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report.get("valid") is True or report.get("verdict") == "valid"
    # No producer key was given: it is derived from its key event, the log's first entry.
    assert report["producer_keys"] == [{"key_id": p.signer.key_id, "registered_at_index": 0, "legacy": False,
                                        "revoked_at_index": None}]

    # Pinned to another block hash, the same bundle is refused.
    wrong = subprocess.run(base + ["--trusted-block-hash", "0x" + "00" * 32], capture_output=True, text=True,
                           timeout=120)
    assert wrong.returncode != 0
    led.close()
