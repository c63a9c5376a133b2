"""ChainClient: the ProvenanceAnchor contract over any EVM JSON-RPC endpoint (web3.py 8).

- Transactions are signed locally with the anchoring key (anchoring/keystore.py) and sent raw;
  the node never holds the key.
- Fees (`fee_mode`): "eip1559" (type 2): maxPriorityFeePerGas = the median tip of recent blocks
  (eth_feeHistory, 50th percentile), at least `min_priority_fee_wei`; maxFeePerGas = 2 x next base
  fee + tip, so a transaction stays valid through several blocks of base-fee growth. "legacy"
  (type 0): gasPrice = eth_gasPrice + 25 %, for chains without EIP-1559. "auto" (default): legacy
  when the latest block has no baseFeePerGas.
- Several RPC URLs (a list, or one comma-separated string): a transient failure moves to the next
  endpoint (failover), whose eth_chainId must equal the first one's.
- Every node answer used is validated where it arrives: a missing or malformed field is a
  one-line ChainError naming the RPC method, the field and the value.
- Nonces are tracked locally (one lock around sign-and-send) and resynchronised from the node's
  pending count when the node answers "nonce too low" or the transaction is a known replacement.
- Transient RPC failures (connection refused/reset, timeouts, HTTP 5xx and 429) are retried with
  bounded exponential backoff. Reverts are never retried: gas is estimated first, so a call that
  would revert fails before sending with ContractRevert naming the contract's custom error.

Spec of the contract: docs/contract.md. logId convention: log_id_for_origin().
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import ProviderConnectionError, RequestTimedOut, TooManyRequests

from rlhf_ledger.anchoring.keystore import account_from_private_key
from rlhf_ledger.core.errors import LedgerError

log = logging.getLogger(__name__)

ARTIFACT_PATH = Path(__file__).resolve().parent / "artifacts" / "ProvenanceAnchor.json"
T = TypeVar("T")


def log_id_for_origin(origin: str) -> bytes:
    """logId = SHA-256 of the log's origin string (the checkpoint's first line), UTF-8 encoded."""
    return hashlib.sha256(origin.encode("utf-8")).digest()


def load_artifact(path: Path = ARTIFACT_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


class ChainError(LedgerError):
    code = "chain_error"


class RPCError(ChainError):
    """The node answered a JSON-RPC error object (kept in `rpc_error`: code, message, data)."""

    code = "rpc_error"

    def __init__(self, method: str, error: Any, *, where: str):
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method}: {message}", where=where)
        self.rpc_error = error


class ChainUnavailable(ChainError):
    """The RPC endpoint kept failing transiently after all retries."""

    code = "chain_unavailable"


class ContractRevert(ChainError):
    """The contract rejected the call; `error_name` and `error_args` decode its custom error."""

    code = "contract_revert"

    def __init__(self, message: str, *, where: str, error_name: str | None, error_args: tuple[Any, ...] = ()):
        super().__init__(message, where=where)
        self.error_name = error_name
        self.error_args = error_args


class TransactionFailed(ChainError):
    """A mined transaction has status 0."""

    code = "tx_failed"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: delay_i = min(base * 2**i, max_delay), at most `attempts` tries."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0


def is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, HTTP 5xx/429: worth retrying. Anything else (reverts, bad input,
    JSON-RPC errors with a code) is not."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ProviderConnectionError,
                        RequestTimedOut, TooManyRequests, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is not None and (status >= 500 or status == 429)
    return False


class ChainClient:
    """The ProvenanceAnchor contract on one chain, driven by one locally held key."""

    def __init__(
        self,
        rpc_url: str | list[str] | tuple[str, ...],
        account: LocalAccount | str | bytes,
        *,
        contract_address: str | None = None,
        artifact: dict[str, Any] | None = None,
        request_timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        min_priority_fee_wei: int = 1_000_000,  # 0.001 gwei: dev chains report zero tips
        gas_margin: float = 1.25,
        sleep: Callable[[float], None] = time.sleep,
        fee_mode: str = "auto",
    ) -> None:
        urls = [u.strip() for u in rpc_url.split(",")] if isinstance(rpc_url, str) else [str(u) for u in rpc_url]
        urls = [u for u in urls if u]
        if not urls:
            raise ChainError("no RPC URL given", where="rpc")
        if fee_mode not in FEE_MODES:
            raise ValueError(f"fee_mode must be one of {', '.join(FEE_MODES)}, got {fee_mode!r}")
        self.fee_mode = fee_mode
        self.rpc_urls = urls
        self._active = 0  # index of the endpoint in use; transient failures move to the next one
        self.rpc_url = urls[0]
        self.account: LocalAccount = (
            account if isinstance(account, LocalAccount) else account_from_private_key(account, where="anchoring key")
        )
        # web3's own retry layer is off: retries are ours, bounded and visible (is_transient()).
        self._w3s = [Web3(HTTPProvider(u, request_kwargs={"timeout": request_timeout},
                                       exception_retry_configuration=None)) for u in urls]
        self._verified_chain = {0}  # endpoints whose eth_chainId was checked against the first one
        self.failovers = 0  # endpoint switches so far (observability, tests)
        self.artifact = artifact or load_artifact()
        self.retry_policy = retry
        self.min_priority_fee_wei = min_priority_fee_wei
        self.gas_margin = gas_margin
        self._sleep = sleep
        self._nonce: int | None = None
        self._lock = threading.Lock()
        self._chain_id: int | None = None
        self._eip1559: bool | None = None
        self._errors = {
            "0x" + keccak(text=f"{e['name']}({','.join(i['type'] for i in e['inputs'])})")[:4].hex():
                (e["name"], [i["type"] for i in e["inputs"]])
            for e in self.artifact["abi"] if e["type"] == "error"
        }
        self.contract_address = to_checksum_address(contract_address) if contract_address else None
        self.retries_done = 0  # transient failures retried so far (observability, tests)

    @property
    def w3(self) -> Web3:
        return self._w3s[self._active]

    def _fail_over(self, exc: BaseException) -> None:
        """Move to the next RPC endpoint after a transient failure (several URLs configured)."""
        if len(self._w3s) < 2:
            return
        previous = self.rpc_urls[self._active]
        self._active = (self._active + 1) % len(self._w3s)
        self.rpc_url = self.rpc_urls[self._active]
        self.failovers += 1
        log.warning("chain RPC %s failed (%s); failing over to %s", previous, exc.__class__.__name__, self.rpc_url)
        if self._active not in self._verified_chain and self._chain_id is not None:
            try:
                answer = self.w3.provider.make_request("eth_chainId", [])  # type: ignore[arg-type]
            except Exception:  # this endpoint may be down too; the retry loop decides
                return
            other = answer.get("result") if isinstance(answer, dict) else None
            try:
                same = _quantity(other, "eth_chainId", "result", where=self.rpc_url) == self._chain_id
            except ChainError:
                same = False
            if not same:
                raise ChainError(f"eth_chainId: endpoint {self.rpc_url} reports chain {other!r}, the first endpoint "
                                 f"reports {self._chain_id}; all --rpc URLs must serve the same chain",
                                 where=self.rpc_url)
            self._verified_chain.add(self._active)

    def __repr__(self) -> str:  # never show the key
        return f"ChainClient(rpc_url={self.rpc_url!r}, address={self.address}, contract={self.contract_address})"

    # -- basics ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            value = self.rpc("eth_chainId", [])
            self._chain_id = _quantity(value, "eth_chainId", "result", where=self.rpc_url)
        return self._chain_id

    @property
    def contract(self) -> Contract:
        if self.contract_address is None:
            raise ChainError("no contract address: deploy() first or pass contract_address", where=self.rpc_url)
        return self.w3.eth.contract(address=self.contract_address, abi=self.artifact["abi"])

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Run fn, retrying transient RPC failures with bounded exponential backoff."""
        policy = self.retry_policy
        for attempt in range(max(policy.attempts, len(self._w3s))):
            try:
                return fn()
            except Exception as exc:  # classified right below
                if not is_transient(exc):
                    raise
                if attempt >= max(policy.attempts, len(self._w3s)) - 1:
                    raise ChainUnavailable(
                        f"{what} failed after {attempt + 1} attempts over {len(self._w3s)} endpoint(s): "
                        f"{exc.__class__.__name__}: {exc}",
                        where=self.rpc_url,
                    ) from exc
                self._fail_over(exc)
                delay = min(policy.base_delay * (2 ** attempt), policy.max_delay)
                log.warning("%s: transient RPC failure (%s), retry %d in %.2fs",
                            what, exc.__class__.__name__, attempt + 1, delay)
                self.retries_done += 1
                self._sleep(delay)
        raise AssertionError("unreachable")

    def rpc(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call (results unformatted), with retries; JSON-RPC errors raise ChainError."""
        def call() -> Any:
            response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
            if "error" in response:
                raise RPCError(method, response["error"], where=self.rpc_url)
            return response.get("result")
        return self._retry(method, call)

    # -- reads -----------------------------------------------------------------------------------

    def receipt(self, tx_hash: str | bytes) -> dict[str, Any] | None:
        """The raw receipt, or None while pending/unknown."""
        rcpt = self.rpc("eth_getTransactionReceipt", [_hex(tx_hash)])
        if rcpt is not None:
            _require_object(rcpt, "eth_getTransactionReceipt", where=self.rpc_url)
            if rcpt.get("blockNumber") is not None:
                for name in ("blockNumber", "status", "transactionIndex", "gasUsed"):
                    _quantity(rcpt.get(name), "eth_getTransactionReceipt", name, where=self.rpc_url)
        return rcpt

    def transaction(self, tx_hash: str | bytes) -> dict[str, Any] | None:
        return self.rpc("eth_getTransactionByHash", [_hex(tx_hash)])

    def block(self, block: int | str | bytes, *, full_transactions: bool = False) -> dict[str, Any]:
        """A raw block by number, hash (0x + 64 hex or 32 bytes) or tag (latest, safe, finalized)."""
        if isinstance(block, bytes) or (isinstance(block, str) and len(block) == 66 and block.startswith("0x")):
            result = self.rpc("eth_getBlockByHash", [_hex(block), full_transactions])
        else:
            tag = hex(block) if isinstance(block, int) else block
            result = self.rpc("eth_getBlockByNumber", [tag, full_transactions])
        if result is None:
            raise ChainError(f"block {block!r} not found", where=self.rpc_url)
        method = "eth_getBlockByHash" if isinstance(block, bytes) or str(block).startswith("0x") and len(str(block)) == 66 else "eth_getBlockByNumber"
        _require_object(result, method, where=self.rpc_url)
        _quantity(result.get("number"), method, "number", where=self.rpc_url)
        h = result.get("hash")
        if not (isinstance(h, str) and len(h) == 66 and h.startswith("0x")):
            raise ChainError(f"{method}: hash = {str(h)[:80]!r} is not a 32-byte hex hash", where=self.rpc_url)
        return result

    def block_number(self, tag: str = "latest") -> int | None:
        """Number of the latest / safe / finalized block; None if the node has no such block yet."""
        if tag not in ("latest", "safe", "finalized", "earliest", "pending"):
            raise ValueError(f"unknown block tag {tag!r}")
        try:
            result = self.rpc("eth_getBlockByNumber", [tag, False])
        except RPCError as e:
            # Some nodes answer an error instead of null for a tag they do not have ("finalized
            # block not found", "unknown block", "invalid block tag", ...): whatever the wording,
            # that tag is absent. Confirmations still apply (docs/anchoring.md, "Confirmations").
            if tag in ("safe", "finalized"):
                log.debug("eth_getBlockByNumber(%s): %s; treating the tag as absent", tag, e)
                return None
            raise
        if result is None:
            return None
        _require_object(result, "eth_getBlockByNumber", where=self.rpc_url)
        return _quantity(result.get("number"), f"eth_getBlockByNumber({tag})", "number", where=self.rpc_url)

    def confirmations(self, tx_hash: str | bytes) -> int:
        """Blocks on top of and including the tx's block (1 = just mined); 0 if not mined."""
        rcpt = self.receipt(tx_hash)
        if rcpt is None or rcpt.get("blockNumber") is None:
            return 0
        head = self.block_number("latest")
        assert head is not None
        return max(0, head - int(rcpt["blockNumber"], 16) + 1)

    def latest(self, log_id: bytes) -> tuple[int, bytes]:
        """(size, root) of the latest anchored checkpoint of log_id; (0, 32 zero bytes) if none."""
        size, root = self._retry("latest()", lambda: self.contract.functions.latest(_b32(log_id)).call())
        return int(size), bytes(root)

    def is_authorized(self, account: str) -> bool:
        return bool(self._retry("authorized()", lambda: self.contract.functions.authorized(
            to_checksum_address(account)).call()))

    def owner(self) -> str:
        return str(self._retry("owner()", lambda: self.contract.functions.owner().call()))

    def pending_owner(self) -> str:
        return str(self._retry("pendingOwner()", lambda: self.contract.functions.pendingOwner().call()))

    def wait_for_receipt(self, tx_hash: str | bytes, *, timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll until mined; raises TransactionFailed if status is 0, ChainError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            rcpt = self.receipt(tx_hash)
            if rcpt is not None and rcpt.get("blockNumber") is not None:
                if int(rcpt["status"], 16) != 1:
                    raise TransactionFailed(f"transaction {_hex(tx_hash)} reverted in block "
                                            f"{int(rcpt['blockNumber'], 16)}", where=self.rpc_url)
                return rcpt
            if time.monotonic() >= deadline:
                raise ChainError(f"transaction {_hex(tx_hash)} not mined within {timeout}s", where=self.rpc_url)
            time.sleep(poll)

    # -- writes ----------------------------------------------------------------------------------

    def deploy(self, *, timeout: float = 60.0) -> str:
        """Deploy ProvenanceAnchor (the signer becomes owner); returns and remembers its address."""
        data = self.artifact["bytecode"]  # the constructor takes no arguments: init code only
        tx_hash = self.send(None, data, what="deploy")
        rcpt = self.wait_for_receipt(tx_hash, timeout=timeout)
        self.contract_address = to_checksum_address(rcpt["contractAddress"])
        return self.contract_address

    def anchor(self, log_id: bytes, tree_size: int, root_hash: bytes, cid: str,
               proof: Sequence[bytes] = ()) -> str:
        """Send anchor(logId, treeSize, rootHash, cid, proof); `proof` is the RFC 9162 consistency
        proof from the latest anchored (size, root) of the log (empty for its first anchor).
        Returns the tx hash (0x hex) once accepted by the node. Raises ContractRevert (e.g.
        InconsistentProof, LogNotRegistered, SizeNotIncreasing, NotAuthorized) before sending."""
        if not 0 < tree_size < 2**64:
            raise ValueError(f"tree_size {tree_size} out of uint64 range (and must be >= 1)")
        fn = self.contract.functions.anchor(_b32(log_id), tree_size, _b32(root_hash), cid, [_b32(h) for h in proof])
        return self.send(self.contract_address, fn._encode_transaction_data(), what="anchor")

    def register_log(self, origin: str, public_key: bytes) -> str:
        """Register a log (owner only): logId = SHA-256(origin) with its Ed25519 log key."""
        fn = self.contract.functions.registerLog(log_id_for_origin(origin), origin, _b32(public_key))
        return self.send(self.contract_address, fn._encode_transaction_data(), what="registerLog")

    def rotate_log_key(self, log_id: bytes, public_key: bytes) -> str:
        fn = self.contract.functions.rotateLogKey(_b32(log_id), _b32(public_key))
        return self.send(self.contract_address, fn._encode_transaction_data(), what="rotateLogKey")

    def log_key(self, log_id: bytes) -> bytes | None:
        """The log's registered Ed25519 key; None if the log is not registered."""
        key = bytes(self._retry("logKey()", lambda: self.contract.functions.logKey(_b32(log_id)).call()))
        return None if key == bytes(32) else key

    def authorize(self, account: str) -> str:
        fn = self.contract.functions.authorize(to_checksum_address(account))
        return self.send(self.contract_address, fn._encode_transaction_data(), what="authorize")

    def revoke(self, account: str) -> str:
        fn = self.contract.functions.revoke(to_checksum_address(account))
        return self.send(self.contract_address, fn._encode_transaction_data(), what="revoke")

    def transfer_ownership(self, new_owner: str) -> str:
        fn = self.contract.functions.transferOwnership(to_checksum_address(new_owner))
        return self.send(self.contract_address, fn._encode_transaction_data(), what="transferOwnership")

    def accept_ownership(self) -> str:
        fn = self.contract.functions.acceptOwnership()
        return self.send(self.contract_address, fn._encode_transaction_data(), what="acceptOwnership")

    def fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) from eth_feeHistory over the last 5 blocks."""
        method = "eth_feeHistory"
        history = self.rpc(method, [hex(5), "latest", [50]])
        _require_object(history, method, where=self.rpc_url)
        bases = history.get("baseFeePerGas")
        if not isinstance(bases, list) or not bases:
            raise ChainError(f"{method}: baseFeePerGas = {str(bases)[:80]!r}: no base fee (a chain without "
                             "EIP-1559 needs --fee-mode legacy)", where=self.rpc_url)
        next_base = _quantity(bases[-1], method, "baseFeePerGas[-1]", where=self.rpc_url)
        rewards = history.get("reward") or []
        if not isinstance(rewards, list):
            raise ChainError(f"{method}: reward = {str(rewards)[:80]!r} is not a list", where=self.rpc_url)
        tips = sorted(_quantity(r[0], method, f"reward[{i}][0]", where=self.rpc_url)
                      for i, r in enumerate(rewards) if isinstance(r, list) and r)
        tip = max(tips[len(tips) // 2] if tips else 0, self.min_priority_fee_wei)
        return 2 * next_base + tip, tip

    def legacy_gas_price(self) -> int:
        """eth_gasPrice with a 25 % margin, at least min_priority_fee_wei (type 0 transactions)."""
        price = _quantity(self.rpc("eth_gasPrice", []), "eth_gasPrice", "result", where=self.rpc_url)
        return max(price + price // 4, self.min_priority_fee_wei)

    def uses_eip1559(self) -> bool:
        """fee_mode 'eip1559'/'legacy' as configured; 'auto': the latest block has baseFeePerGas."""
        if self.fee_mode != "auto":
            return self.fee_mode == "eip1559"
        if self._eip1559 is None:
            self._eip1559 = self.block("latest").get("baseFeePerGas") is not None
        return self._eip1559

    def fee_fields(self) -> dict[str, int]:
        """Fee fields for a transaction: EIP-1559 (type 2) or legacy (type 0, gasPrice only)."""
        if self.uses_eip1559():
            max_fee, tip = self.fees()
            return {"type": 2, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}
        return {"gasPrice": self.legacy_gas_price()}  # no "type": eth_account signs a gasPrice-only dict as type 0

    def send(self, to: str | None, data: str, *, what: str, value: int = 0) -> str:
        """Estimate gas (reverts surface here as ContractRevert), sign locally with the next local
        nonce, send raw; resync the nonce and re-sign when the node says the nonce is stale."""
        tx: dict[str, Any] = {"from": self.address, "data": data, "value": value, "chainId": self.chain_id}
        if to is not None:
            tx["to"] = to
        gas = self._estimate_gas(tx, what)
        tx["gas"] = int(gas * self.gas_margin)
        tx.update(self.fee_fields())
        del tx["from"]
        with self._lock:
            for _attempt in range(3):
                if self._nonce is None:
                    self._nonce = self._pending_nonce()
                tx["nonce"] = self._nonce
                signed = self.account.sign_transaction(tx)
                tx_hash = "0x" + bytes(signed.hash).hex()
                raw = "0x" + bytes(signed.raw_transaction).hex()
                try:
                    self.rpc("eth_sendRawTransaction", [raw])
                except ChainError as e:
                    msg = str(e).lower()
                    if "already known" in msg or "known transaction" in msg:
                        pass  # an earlier (timed-out) attempt got through: same bytes, same hash
                    elif "nonce too low" in msg or "replacement transaction underpriced" in msg:
                        if self.transaction(tx_hash) is not None:
                            pass  # our own earlier attempt was mined or is pending
                        else:
                            log.warning("%s: node says nonce %d is stale (%s); resyncing", what, self._nonce,
                                        msg.split(":")[-1].strip()[:80])
                            self._nonce = None
                            continue
                    else:
                        raise
                self._nonce += 1
                return tx_hash
        raise ChainError(f"{what}: nonce kept being rejected after resync", where=self.rpc_url)

    def _pending_nonce(self) -> int:
        return _quantity(self.rpc("eth_getTransactionCount", [self.address, "pending"]),
                         "eth_getTransactionCount", "result", where=self.rpc_url)

    def _estimate_gas(self, tx: dict[str, Any], what: str) -> int:
        call = {k: (hex(v) if isinstance(v, int) else v) for k, v in tx.items() if k != "chainId"}
        try:
            answer = self.rpc("eth_estimateGas", [call])
        except ChainError as e:
            raise self._revert_error(e, what) from None
        return _quantity(answer, "eth_estimateGas", "result", where=self.rpc_url)

    def _revert_error(self, e: ChainError, what: str) -> ChainError:
        """Turn a JSON-RPC execution error into ContractRevert with the decoded custom error."""
        payload = e.rpc_error if isinstance(e, RPCError) else None
        data = payload.get("data") if isinstance(payload, dict) else None
        where = self.contract_address or self.rpc_url
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            selector = data[:10].lower()
            if selector in self._errors:
                name, types = self._errors[selector]
                args = tuple(abi_decode(types, bytes.fromhex(data[10:])))
                shown = ", ".join(_show(a) for a in args)
                return ContractRevert(f"{what} reverted: {name}({shown})", where=where,
                                      error_name=name, error_args=args)
        if "revert" in str(e).lower():
            return ContractRevert(f"{what} reverted: {e.message}", where=where, error_name=None)
        return e


FEE_MODES = ("auto", "eip1559", "legacy")


def _require_object(value: Any, method: str, *, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ChainError(f"{method}: answer = {str(value)[:80]!r} is not an object", where=where)
    return value


def _quantity(value: Any, method: str, field: str, *, where: str) -> int:
    """A JSON-RPC quantity ("0x" + hex); anything else is a one-line error naming method and field."""
    if isinstance(value, str) and value.startswith("0x") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ChainError(f"{method}: {field} = {str(value)[:80]!r} is not a 0x-hex quantity", where=where)


def _hex(value: str | bytes) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


def _b32(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError("expected 32 bytes")
    return bytes(value)


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


__all__ = [
    "ARTIFACT_PATH", "FEE_MODES", "ChainClient", "ChainError", "ChainUnavailable", "ContractRevert", "RPCError",
    "RetryPolicy", "TransactionFailed", "is_transient", "load_artifact", "log_id_for_origin",
]
