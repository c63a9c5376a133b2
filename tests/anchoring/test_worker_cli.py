"""The `anchor` and `anchors` click commands against a real anvil and a SQLite ledger."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from rlhf_ledger.cli.anchor import anchor_command, anchors_command
from rlhf_ledger.store.ledger import Ledger
from tests.ledger.helpers import Producer

pytestmark = pytest.mark.anvil


def test_deploy_anchor_once_and_list(anvil, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    ledger = Ledger.open(data)
    ledger.init_log("train")
    p = Producer("train")
    ledger.register_producer("train", p.signer.public_key)
    ledger.append(p.events(4), log_id="train")
    size = ledger.checkpoint("train").size  # 4 events after the producer's key event
    env = {"RLHF_ANCHOR_PRIVATE_KEY": anvil.private_keys[3], "RLHF_CHAIN_RPC": anvil.rpc_url}
    runner = CliRunner()
    out = runner.invoke(anchor_command, ["--data-dir", str(data), "--deploy", "--confirmations", "1"], env=env)
    assert out.exit_code == 0, out.output
    address = re.search(r"deployed ProvenanceAnchor at (0x[0-9a-fA-F]{40})", out.output).group(1)
    assert f"train: checkpoint {size} sent" in out.output
    assert (data / "content").is_dir()

    listing = runner.invoke(anchors_command, ["--data-dir", str(data), "--log", "train", "--json"])
    assert listing.exit_code == 0, listing.output
    [row] = [json.loads(line) for line in listing.output.splitlines()]
    assert row["status"] == "confirmed" and row["contract"] == address and row["evidence"]["tree_size"] == size
    table = runner.invoke(anchors_command, ["--data-dir", str(data), "--log", "train"])
    assert "confirmed" in table.output and row["cid"] in table.output

    missing = runner.invoke(anchor_command, ["--data-dir", str(data)], env=env)
    assert missing.exit_code != 0 and "no contract" in missing.output
    bad = runner.invoke(anchor_command, ["--data-dir", str(data), "--contract", address, "--confirmations", "0"], env=env)
    assert bad.exit_code != 0 and "finalized" in bad.output
    ledger.close()
