"""Test helpers: signed event chains built with the ledger's own producer-side functions."""

from __future__ import annotations

from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer


class Producer:
    """A producer that keeps its own seq/prev chain per run, as the SDK does."""

    def __init__(self, log_id: str = "default", signer: Signer | None = None):
        self.log_id = log_id
        self.signer = signer or Signer.generate()
        self.heads: dict[str, tuple[int, str | None]] = {}

    def event(self, run_id: str = "run-1", type: str = "policy.update", body: dict | None = None) -> dict:
        seq, prev = self.heads.get(run_id, (-1, None))
        ev = make_event(
            log_id=self.log_id,
            run_id=run_id,
            type=type,
            producer=self.signer.key_id,
            seq=seq + 1,
            prev=prev,
            body=body if body is not None else {"step": seq + 1, "loss": 0.25},
        )
        self.heads[run_id] = (ev["seq"], sha256_hex(canonicalize(ev)))
        return sign_event(ev, self.signer)

    def events(self, n: int, run_id: str = "run-1") -> list[dict]:
        return [self.event(run_id) for _ in range(n)]
