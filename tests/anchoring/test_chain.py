"""ChainClient against a real anvil: retries on (emulated) transient failures and on a closed port,
no retry on reverts, nonce recovery, fees, block reads and confirmations; keystore loading."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from eth_account import Account

from rlhf_ledger.anchoring.chain import ChainClient, ChainUnavailable, ContractRevert, RetryPolicy, log_id_for_origin
from rlhf_ledger.anchoring.keystore import PRIVATE_KEY_ENV, load_anchor_account, load_keystore, write_keystore
from rlhf_ledger.core.errors import KeyFileError
from tests.anchoring.simlog import LOG_KEY, SimLog, registered

pytestmark = pytest.mark.anvil

FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now: connections are refused
    return port


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_transient_failures_are_retried_then_anchor_succeeds(owner, anvil, flaky_proxy, mode) -> None:  # type: ignore[no-untyped-def]
    proxy = flaky_proxy(failures=3, mode=mode)
    delays: list[float] = []
    client = ChainClient(proxy.url, anvil.private_keys[0], contract_address=owner.contract_address,
                         retry=RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.02), sleep=delays.append)
    log_id = registered(owner, f"example.org/flaky-{mode}")
    tx = client.anchor(log_id, 1, b"\x31" * 32, "cid")
    client.wait_for_receipt(tx)
    assert client.latest(log_id) == (1, b"\x31" * 32)
    assert client.retries_done == 3
    assert delays == [0.01, 0.02, 0.02]  # exponential, capped at max_delay


def test_retries_are_bounded(anvil, flaky_proxy) -> None:  # type: ignore[no-untyped-def]
    proxy = flaky_proxy(failures=100, mode="503")
    delays: list[float] = []
    client = ChainClient(proxy.url, anvil.private_keys[0], retry=FAST, sleep=delays.append)
    with pytest.raises(ChainUnavailable, match="eth_chainId failed after 5 attempts"):
        _ = client.chain_id
    assert proxy.requests == 5 and len(delays) == 4
    assert delays == [0.01, 0.02, 0.04, 0.05]


def test_closed_port_is_retried_and_reported(anvil) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{_closed_port()}"
    client = ChainClient(url, anvil.private_keys[0], retry=FAST, sleep=lambda s: None)
    with pytest.raises(ChainUnavailable) as e:
        client.block_number()
    assert e.value.where == url and "ConnectionError" in str(e.value)
    assert client.retries_done == FAST.attempts - 1


def test_node_coming_back_after_outage(owner, anvil, flaky_proxy) -> None:  # type: ignore[no-untyped-def]
    """The endpoint is down (refusing) for the first attempts, then up: the call succeeds. The
    'outage' is a closed port that starts listening during the backoff (a real socket)."""
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    state = {"calls": 0, "server": None}

    def sleep_then_start_proxy(delay: float) -> None:
        state["calls"] += 1
        if state["calls"] == 2 and state["server"] is None:
            import http.server
            import threading
            import urllib.request

            class Forward(http.server.BaseHTTPRequestHandler):
                def do_POST(self) -> None:
                    body = self.rfile.read(int(self.headers["content-length"]))
                    with urllib.request.urlopen(urllib.request.Request(
                            anvil.rpc_url, data=body, headers={"content-type": "application/json"})) as r:
                        answer = r.read()
                    self.send_response(200)
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)

                def log_message(self, *a: object) -> None:
                    pass

            srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Forward)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            state["server"] = srv

    client = ChainClient(url, anvil.private_keys[0], retry=FAST, sleep=sleep_then_start_proxy)
    try:
        assert client.block_number() == owner.block_number()
        assert client.retries_done == 2
    finally:
        if state["server"] is not None:
            state["server"].shutdown()
            state["server"].server_close()


def test_reverts_are_not_retried(owner, anvil, flaky_proxy) -> None:  # type: ignore[no-untyped-def]
    proxy = flaky_proxy(failures=0)
    client = ChainClient(proxy.url, anvil.private_keys[5], contract_address=owner.contract_address, retry=FAST)
    _ = client.chain_id
    before = proxy.requests
    with pytest.raises(ContractRevert, match="NotAuthorized"):
        client.anchor(log_id_for_origin("x"), 1, b"\x00" * 32, "")
    estimates = [m for m in proxy.methods[before:] if "eth_estimateGas" in m]
    assert len(estimates) == 1
    assert not any("eth_sendRawTransaction" in m for m in proxy.methods)
    assert client.retries_done == 0


def test_nonce_recovery_after_another_sender_used_the_key(owner, anvil) -> None:  # type: ignore[no-untyped-def]
    # Two clients share one key (e.g. a restarted worker next to a stale one).
    a = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address)
    b = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address)
    log = SimLog("example.org/nonce")
    log.register(a)
    log_id = log.log_id
    a.wait_for_receipt(log.anchor(a, 1, "c1"))   # a caches nonce n+1
    b.wait_for_receipt(log.anchor(b, 2, "c2"))   # b uses n+1 from the node
    stale = a._nonce
    tx = log.anchor(a, 3, "c3")  # a's n+1 is now "nonce too low": must resync
    rcpt = a.wait_for_receipt(tx)
    assert int(rcpt["status"], 16) == 1
    assert a._nonce == stale + 2
    assert a.latest(log_id) == (3, log.root(3))
    sent = a.transaction(tx)
    assert int(sent["nonce"], 16) == stale + 1


def test_local_nonces_allow_several_pending_transactions(owner, manual_mining) -> None:  # type: ignore[no-untyped-def]
    regs = [owner.register_log(f"example.org/pending-{i}", LOG_KEY) for i in range(5)]
    manual_mining.mine()
    for h in regs:
        owner.wait_for_receipt(h)
    hashes = [owner.anchor(log_id_for_origin(f"example.org/pending-{i}"), 1, bytes([i]) * 32, "c")
              for i in range(5)]
    nonces = [int(owner.transaction(h)["nonce"], 16) for h in hashes]
    assert nonces == list(range(nonces[0], nonces[0] + 5))
    manual_mining.mine()
    blocks = {owner.wait_for_receipt(h)["blockNumber"] for h in hashes}
    assert len(blocks) == 1


def test_eip1559_fees_and_transaction_type(owner) -> None:  # type: ignore[no-untyped-def]
    max_fee, tip = owner.fees()
    base = int(owner.block("latest")["baseFeePerGas"], 16)
    assert tip >= owner.min_priority_fee_wei
    assert max_fee >= base + tip
    tx = owner.transaction(owner.anchor(registered(owner, "example.org/fees"), 1, b"\x51" * 32, "c"))
    assert tx["type"] == "0x2"
    assert int(tx["maxPriorityFeePerGas"], 16) == tip


def test_block_reads_and_confirmations(owner, anvil) -> None:  # type: ignore[no-untyped-def]
    tx = owner.anchor(registered(owner, "example.org/confirm"), 1, b"\x61" * 32, "c")
    rcpt = owner.wait_for_receipt(tx)
    assert owner.confirmations(tx) == 1
    anvil.mine(3)
    assert owner.confirmations(tx) == 4
    assert owner.confirmations("0x" + "ab" * 32) == 0
    by_number = owner.block(int(rcpt["blockNumber"], 16))
    by_hash = owner.block(rcpt["blockHash"])
    assert by_number["hash"] == by_hash["hash"] == rcpt["blockHash"]
    latest = owner.block_number("latest")
    assert latest is not None and latest >= int(rcpt["blockNumber"], 16) + 3
    for tag in ("safe", "finalized"):
        n = owner.block_number(tag)
        assert n is None or 0 <= n <= latest
    with pytest.raises(ValueError):
        owner.block_number("newest")


def test_private_key_never_in_repr(anvil) -> None:  # type: ignore[no-untyped-def]
    key = anvil.private_keys[0]
    client = ChainClient(anvil.rpc_url, key)
    assert key[2:] not in repr(client) and key[2:] not in repr(anvil)
    assert Account.from_key(key).address == anvil.addresses[0]


# -- keystore ------------------------------------------------------------------------------------

def test_keystore_roundtrip_with_env_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acct = Account.create()
    path = write_keystore(acct, tmp_path / "anchor.json", "correct horse", iterations=2)
    assert path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 3 and acct.key.hex() not in path.read_text()
    monkeypatch.setenv("RLHF_ANCHOR_PASSPHRASE", "correct horse")
    assert load_keystore(path).address == acct.address
    assert load_anchor_account(path).address == acct.address


def test_keystore_wrong_passphrase_is_one_clear_error(tmp_path: Path) -> None:
    acct = Account.create()
    path = write_keystore(acct, tmp_path / "anchor.json", "right", iterations=2)
    with pytest.raises(KeyFileError, match="wrong passphrase") as e:
        load_keystore(path, "wrong")
    assert e.value.where == str(path)
    (tmp_path / "bad.json").write_text('{"version": 1}')
    with pytest.raises(KeyFileError, match="not an Ethereum keystore v3"):
        load_keystore(tmp_path / "bad.json", "x")


def test_env_private_key_and_errors_do_not_echo_it() -> None:
    acct = Account.create()
    assert load_anchor_account(env={PRIVATE_KEY_ENV: acct.key.hex()}).address == acct.address
    assert load_anchor_account(env={PRIVATE_KEY_ENV: "0x" + acct.key.hex().removeprefix("0x")}).address == acct.address
    bad = "zz" + acct.key.hex().removeprefix("0x")[2:]
    with pytest.raises(KeyFileError) as e:
        load_anchor_account(env={PRIVATE_KEY_ENV: bad})
    assert bad not in str(e.value) and e.value.where == PRIVATE_KEY_ENV
    with pytest.raises(KeyFileError, match="not a valid secp256k1"):
        load_anchor_account(env={PRIVATE_KEY_ENV: "00" * 32})
    with pytest.raises(KeyFileError, match="no anchoring key"):
        load_anchor_account(env={})


# -- dev chain -----------------------------------------------------------------------------------

def test_missing_anvil_says_to_run_bootstrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rlhf_ledger.anchoring.devchain import Anvil, DevChainError

    monkeypatch.setenv("RLHF_ANVIL_BIN", str(tmp_path / "node_modules" / "anvil"))
    with pytest.raises(DevChainError, match="run scripts/bootstrap.sh"):
        Anvil().start()


def test_interval_mining_and_clean_shutdown() -> None:
    import time

    from rlhf_ledger.anchoring.devchain import Anvil

    with Anvil(accounts=1, block_time=0.5) as chain:
        client = ChainClient(chain.rpc_url, chain.private_keys[0])
        start = client.block_number()
        tx = client.send(chain.addresses[0], "0x", what="self-transfer", value=0)
        rcpt = client.wait_for_receipt(tx, timeout=10)
        assert int(rcpt["blockNumber"], 16) > start
        port = chain.port
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # answering while running
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # refused once the process is gone
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except ConnectionRefusedError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"anvil still listening on port {port} after stop()")
