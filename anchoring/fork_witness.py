"""The chain as a fork-guard witness: the newest (size, root) anchored for a log.

ledger/fork_guard.py compares the database with what a restore cannot roll back; the contract's
`latest(logId)` is the strongest such fact. The answer is cached for `ttl` seconds so the guard
can run before every checkpoint without a chain round trip each time; an unreachable chain is
reported to the guard as unavailable (the published-checkpoint record still counts).
"""

from __future__ import annotations

import os
import threading
import time

from rlhf_ledger.anchoring.chain import ChainClient, ChainError, log_id_for_origin
from rlhf_ledger.store.fork_guard import Reference

RPC_ENV = "RLHF_CHAIN_RPC"
CONTRACT_ENV = "RLHF_ANCHOR_CONTRACT"


class ChainWitness:
    name = "chain"

    def __init__(self, client: ChainClient, *, ttl: float = 10.0):
        self.client = client
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Reference | None]] = {}
        self._lock = threading.Lock()

    def newest(self, log_id: str, origin: str, public_key: bytes) -> Reference | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(origin)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            size, root = self.client.latest(log_id_for_origin(origin))
        except ChainError:
            if hit is not None:  # keep the last answer: a larger anchored size never shrinks
                return hit[1]
            raise
        ref = Reference(size, root, f"chain {self.client.rpc_url} contract {self.client.contract_address}") if size else None
        with self._lock:
            self._cache[origin] = (now, ref)
        return ref


def witness_from_env(*, ttl: float = 10.0) -> ChainWitness | None:
    """A read-only witness from RLHF_CHAIN_RPC and RLHF_ANCHOR_CONTRACT (None if either is unset).

    Reading `latest` needs no key: the client is given a throwaway account it never signs with.
    """
    rpc, contract = os.environ.get(RPC_ENV), os.environ.get(CONTRACT_ENV)
    if not rpc or not contract:
        return None
    client = ChainClient(rpc, os.urandom(32), contract_address=contract)
    return ChainWitness(client, ttl=ttl)
