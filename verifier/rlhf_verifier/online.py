"""Optional online checks (`--rpc`, `--ipfs`); each endpoint is trusted for nothing beyond
what is checked here (extra `online`: httpx).

--rpc URL: the anchor block is canonical (eth_getBlockByNumber returns the same hash) and at
    least `min_confirmations` deep; `latest(logId)` on the contract returns a size >= the
    anchored size, with the same root when the sizes are equal; without a log key proof in the
    evidence, the contract's code (eth_getCode) must be a known ProvenanceAnchor. No scan for
    other anchors of the log is needed: that contract refuses a root that does not extend the
    anchored one (docs/contract.md).
--ipfs URL: each anchor's manifest is fetched by CID (gateway `/ipfs/<cid>` or Kubo RPC
    `/api/v0/cat`) and must hash to that CID.
"""

from __future__ import annotations

from typing import Any

from .cid import CIDError, check_content
from .evidence import Anchor
from .logkey import KNOWN_CODE_HASHES
from .rlp import keccak256

LATEST_SELECTOR = keccak256(b"latest(bytes32)")[:4]
MAX_MANIFEST = 16 * 1024 * 1024


class OnlineError(Exception):
    pass


class OnlineUnavailable(OnlineError):
    """The endpoint the user asked for cannot be reached or does not speak JSON-RPC: the
    verification could not run as requested (exit 2), which is not a verdict on the bundle."""


def _client() -> Any:
    try:
        import httpx
    except ImportError:
        raise OnlineError("online checks need httpx: pip install 'rlhf-verifier[online]'") from None
    return httpx.Client(timeout=20.0, follow_redirects=False)


class RpcChecker:
    def __init__(self, url: str, min_confirmations: int = 1):
        self.url, self.min_conf = url, min_confirmations
        self.http = _client()
        self._head: int | None = None

    def probe(self) -> None:
        """Fail early (OnlineUnavailable) if the node cannot be reached, before any work."""
        self.call("eth_chainId", [])

    def call(self, method: str, params: list[Any]) -> Any:
        """The JSON-RPC result (any JSON: each caller checks what it reads)."""
        import httpx

        try:
            resp = self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        except httpx.HTTPError as e:
            raise OnlineUnavailable(f"--rpc {self.url} is unreachable ({method}: {type(e).__name__}: {e})") from None
        if resp.status_code != 200:
            raise OnlineUnavailable(f"--rpc {self.url} answered HTTP {resp.status_code} to {method}")
        try:
            data = resp.json()
        except ValueError:
            raise OnlineUnavailable(f"--rpc {self.url} does not answer JSON-RPC ({method} returned non-JSON)") from None
        if not isinstance(data, dict) or "error" in data or "result" not in data:
            raise OnlineError(f"{method} at {self.url} returned an error: {str(data)[:200]}")
        return data["result"]

    def __call__(self, a: Anchor) -> str | None:
        try:
            if self._head is None:
                self._head = int(self.call("eth_blockNumber", []), 16)
            block = self.call("eth_getBlockByNumber", [hex(a.block_number), False])
            if not isinstance(block, dict) or block.get("hash", "").lower() != "0x" + a.block_hash.hex():
                return f"block {a.block_number} on the chain has hash {block.get('hash') if isinstance(block, dict) else None}, not the anchor's (reorg or wrong chain)"
            chain_id = int(self.call("eth_chainId", []), 16)
            if chain_id != a.chain_id:
                return f"RPC chain id {chain_id} differs from the evidence's {a.chain_id}"
            depth = self._head - a.block_number + 1
            if depth < self.min_conf:
                return f"anchor block has {depth} confirmation(s), fewer than the required {self.min_conf}"
            out = self.call("eth_call", [{"to": "0x" + a.contract.hex(),
                                          "data": "0x" + (LATEST_SELECTOR + a.log_id).hex()}, "latest"])
            raw = bytes.fromhex(out[2:])
            if len(raw) != 64:
                return "latest(logId) returned malformed data"
            size, root = int.from_bytes(raw[:32], "big"), raw[32:]
            if size < a.tree_size:
                return f"contract's latest size {size} is below the anchored size {a.tree_size} (rolled back?)"
            if size == a.tree_size and root != a.root_hash:
                return f"contract's latest root for size {size} differs from the anchored root"
            if a.code_hash is None:  # no log key proof in the evidence: ask the node for the code
                code = self.call("eth_getCode", ["0x" + a.contract.hex(), hex(a.block_number)])
                h = keccak256(bytes.fromhex(code[2:]))
                if h not in KNOWN_CODE_HASHES:
                    return (f"the contract's code at block {a.block_number} (hash 0x{h.hex()}) is not a ProvenanceAnchor "
                            "version this verifier knows")
            return None
        except OnlineUnavailable:
            raise  # not a verdict on this anchor: the run cannot complete as asked (exit 2)
        except (OnlineError, ValueError, TypeError, AttributeError) as e:
            return str(e)


def check_ipfs(url: str, cid: str) -> str | None:
    """None if the content fetched for `cid` hashes to it, else what went wrong."""
    import httpx

    http = _client()
    base = url.rstrip("/")
    try:
        try:
            if "/api/v0" in base or base.endswith(":5001"):
                root = base if "/api/v0" in base else base + "/api/v0"
                resp = http.post(f"{root}/cat", params={"arg": cid})
            else:
                resp = http.get(f"{base}/ipfs/{cid}")
        except httpx.TransportError as e:
            raise OnlineUnavailable(f"--ipfs {url} is unreachable ({type(e).__name__}: {e})") from None
        if resp.status_code != 200:
            return f"fetching {cid} returned HTTP {resp.status_code}"
        content = resp.content[: MAX_MANIFEST + 1]
        if len(content) > MAX_MANIFEST:
            return f"content for {cid} is larger than {MAX_MANIFEST} bytes"
        check_content(cid, content)
        return None
    except CIDError as e:
        return f"content served for {cid} does not match it: {e}"
    except OnlineUnavailable:
        raise
    except Exception as e:
        return f"fetching {cid} from {url} failed: {e}"
