"""Memory per run stays small and bounded (issue 10, item 9; docs/verifier.md "Performance").

A range bundle of many one-event runs is the worst case for per-run state: every event opens a
new (run, producer) chain. What the verifier still holds once the last event is folded is
measured with tracemalloc for N and 10 N such runs; the growth per run must stay under a
generous bound (about 220 bytes are expected: one packed chain state and the run id; per-run
compliance facts, which cost over 2 KB a run, are kept only for a run bundle's own run).
Not a timing test: the figure is bytes, the same on a loaded machine.
"""

from __future__ import annotations

import base64
import json
import tracemalloc

import pytest
from factory import MEDIA_TYPE, b64, ts

from rlhf_ledger.core.checkpoints import default_origin, sign_checkpoint
from rlhf_ledger.core.events import make_event, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.core.merkle import InMemoryTree
from rlhf_verifier.verify import Options, Verifier

BOUND_PER_RUN = 700  # bytes; was about 2,200 before the per-run state was made compact


def _one_event_runs(path, n: int) -> None:
    log, prod = Signer.from_seed(b"\x01" * 32), Signer.from_seed(b"\x02" * 32)
    origin = default_origin("mem")
    tree = InMemoryTree()
    lines = []
    for i in range(n):
        ev = make_event(log_id="mem", run_id=f"run-{i}", type="compute.usage", producer=prod.key_id, seq=0,
                        prev=None, body={"device": "cpu", "seconds": i}, ts=ts(i))
        env = sign_event(ev, prod)
        tree.append(canonicalize(env))
        lines.append({"kind": "event", "index": i, "envelope": env})
    header = {"kind": "header", "format": "rlhf-ledger-bundle", "version": 2, "media_type": MEDIA_TYPE,
              "created": "2026-02-01T00:00:00Z", "mode": "tree", "scope": {"type": "range", "start": 0, "end": n},
              "log": {"log_id": "mem", "origin": origin, "public_key": b64(log.public_key)}}
    cp = {"kind": "checkpoint", "size": n, "root": base64.b64encode(tree.root(n)).decode(),
          "note": sign_checkpoint(origin, n, tree.root(n), log)}
    recs = [header, cp, *lines, {"kind": "end", "events": n, "records": n + 2}]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")


def _retained(path) -> tuple[int, object]:
    """Bytes still allocated after verifying (the verifier and its state kept alive)."""
    from rlhf_ledger.core.checkpoints import vkey
    from rlhf_verifier.note import parse_vkey

    log, prod = Signer.from_seed(b"\x01" * 32), Signer.from_seed(b"\x02" * 32)
    opts = Options(log_keys=[parse_vkey(vkey(default_origin("mem"), log.public_key))], producer_keys=[prod.public_key],
                   jobs=1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        v = Verifier(opts)
        with open(path, "rb") as f:
            result = v.run(f)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert result.valid, [f.line() for f in result.findings[:3]]
    assert result.producer_chains == result.events  # one chain per run: the state under test
    return after - before, v


@pytest.mark.slow
def test_memory_per_one_event_run_is_small(tmp_path):
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _one_event_runs(small, 300)
    _one_event_runs(big, 3000)
    m_small, _ = _retained(small)
    m_big, v = _retained(big)
    per_run = (m_big - m_small) / 2700
    assert per_run < BOUND_PER_RUN, f"{per_run:.0f} bytes retained per one-event run (bound {BOUND_PER_RUN})"
    assert not v.collector.runs  # a range bundle keeps no per-run compliance facts
