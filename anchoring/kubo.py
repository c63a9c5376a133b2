"""A small Kubo RPC client (httpx) implementing ContentStore; why not ipfshttpclient: docs/ipfs-client.md.

Every CID the node reports is compared with the one computed locally (anchoring/cid.py) and every
byte the node serves is verified before it is returned: the node is a storage and distribution
service, never a source of truth.
"""

from __future__ import annotations

import json
from types import TracebackType

import httpx

from rlhf_ledger.anchoring.cid import CidMismatchError, cid_for_bytes, parse_cid, verify_cid
from rlhf_ledger.anchoring.content_store import ContentNotFoundError, ContentStoreUnavailable
from rlhf_ledger.core.errors import LedgerError

# The add options that reproduce anchoring/cid.py's layout. Sent explicitly so that a node whose
# Import.* config changes the defaults (CidVersion, UnixFSRawLeaves, UnixFSChunker, HashFunction)
# still builds the same DAG. cid-version=0 on purpose: with cid-version=1 Kubo writes CIDv1 bytes
# into the links and files over one chunk get a different root (docs/content-ids.md).
ADD_PARAMS: dict[str, str] = {
    "cid-version": "0",
    "raw-leaves": "false",
    "chunker": "size-262144",
    "hash": "sha2-256",
    "trickle": "false",
    "inline": "false",
    "wrap-with-directory": "false",
    "pin": "true",
    "progress": "false",
}

# Proxies and load balancers in front of a node answer these while it is down or overloaded.
_TRANSIENT_STATUS = {502, 503, 504}


class KuboRpcError(LedgerError):
    """The node answered, but refused the command (Kubo error message, bad request, bad reply)."""

    code = "kubo_rpc_error"


class KuboContentStore:
    """ContentStore over a Kubo node's RPC API, e.g. KuboContentStore("http://127.0.0.1:5001")."""

    def __init__(self, api_url: str, timeout: float = 30.0, *, transport: httpx.BaseTransport | None = None):
        self.api_url = api_url.rstrip("/")
        self._client = httpx.Client(base_url=self.api_url + "/api/v0", timeout=timeout, transport=transport)

    # -- ContentStore --------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        expected = cid_for_bytes(data)
        reply = self._post("add", params=ADD_PARAMS, files={"file": ("manifest", data, "application/octet-stream")})
        assert reply is not None  # _post returns None only when not_found_ok
        reported = _last_add_hash(reply.text, self._where("add"))
        try:
            got = parse_cid(reported)
        except LedgerError as e:
            raise KuboRpcError(f"node returned an unparseable CID {reported!r}: {e}", where=self._where("add")) from None
        if got.multihash != parse_cid(expected).multihash:
            raise CidMismatchError(
                f"node stored {len(data)} bytes as {got.v1()} but the local layout gives {expected}; "
                "check the node's Import.* settings (e.g. UnixFSFileMaxLinks)",
                where=self._where("add"),
            )
        return expected

    def get(self, cid: str) -> bytes:
        v1 = parse_cid(cid).v1()
        reply = self._post("cat", params={"arg": v1}, not_found_ok=True)
        if reply is None:
            raise ContentNotFoundError("node does not have this CID", where=f"{self._where('cat')} {v1}")
        verify_cid(cid, reply.content)
        return reply.content

    def has(self, cid: str) -> bool:
        # put() always pins recursively, so "held by this store" means "recursively pinned";
        # offline=true keeps the node from searching the network for a CID it lacks.
        v1 = parse_cid(cid).v1()
        reply = self._post("pin/ls", params={"arg": v1, "type": "recursive", "offline": "true"}, not_found_ok=True)
        return reply is not None

    def pin(self, cid: str) -> None:
        v1 = parse_cid(cid).v1()
        reply = self._post("pin/add", params={"arg": v1, "recursive": "true"}, not_found_ok=True)
        if reply is None:
            raise ContentNotFoundError("node cannot pin this CID: content not found", where=f"{self._where('pin/add')} {v1}")

    # -- plumbing ------------------------------------------------------------------------------

    def version(self) -> str:
        """The node's Kubo version, e.g. '0.32.1' (a cheap reachability check)."""
        reply = self._post("version")
        assert reply is not None
        try:
            return str(reply.json()["Version"])
        except (ValueError, KeyError, TypeError):
            raise KuboRpcError("version reply is not Kubo's JSON", where=self._where("version")) from None

    def _where(self, command: str) -> str:
        return f"{self.api_url}/api/v0/{command}"

    def _post(self, command: str, *, not_found_ok: bool = False, **kwargs: object) -> httpx.Response | None:
        """POST one RPC command (Kubo's RPC accepts POST only). Returns None for 'not found'
        errors when `not_found_ok`; raises ContentStoreUnavailable for transport failures and
        transient statuses, KuboRpcError for everything else the node refuses."""
        where = self._where(command)
        try:
            reply = self._client.post(command, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException as e:
            raise ContentStoreUnavailable(f"Kubo RPC timed out ({type(e).__name__})", where=where) from None
        except httpx.TransportError as e:
            raise ContentStoreUnavailable(f"Kubo RPC unreachable: {type(e).__name__}: {e}", where=where) from None
        if reply.status_code == 200:
            return reply
        message = _kubo_message(reply)
        if reply.status_code in _TRANSIENT_STATUS:
            raise ContentStoreUnavailable(f"Kubo RPC answered HTTP {reply.status_code}: {message}", where=where)
        if not_found_ok and reply.status_code == 500 and _is_not_found(message):
            return None
        raise KuboRpcError(f"Kubo RPC answered HTTP {reply.status_code}: {message}", where=where)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> KuboContentStore:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _kubo_message(reply: httpx.Response) -> str:
    """Kubo errors are JSON {"Message", "Code", "Type": "error"}; anything else is shown cut short."""
    try:
        body = reply.json()
        if isinstance(body, dict) and "Message" in body:
            return str(body["Message"])
    except ValueError:
        pass
    text = reply.text.strip().replace("\n", " ")
    return text[:200] or "(empty body)"


def _is_not_found(message: str) -> bool:
    # Kubo words these as "block was not found locally (offline)", "...: not found",
    # "is not pinned" (pin/ls). Matching words is the only signal the RPC gives.
    m = message.lower()
    return "not found" in m or "not pinned" in m


def _last_add_hash(body: str, where: str) -> str:
    """/api/v0/add streams one JSON object per line; the last object with a Hash is the file."""
    found: str | None = None
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise KuboRpcError(f"add reply line is not JSON: {line[:100]!r}", where=where) from None
        if isinstance(obj, dict) and isinstance(obj.get("Hash"), str):
            found = obj["Hash"]
    if found is None:
        raise KuboRpcError("add reply carries no Hash", where=where)
    return found
