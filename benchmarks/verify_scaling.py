"""Verifier scaling checks (issue 10 item 9): checkpoint handling is linear, memory per run bounded.

    python benchmarks/verify_scaling.py checkpoints [--n 20000]   # time for n vs n/4 checkpoints
    python benchmarks/verify_scaling.py runs [--n 100000]         # peak memory for n vs n/10 one-event runs

Bundles are built with the ledger's own code (ledger.checkpoints, ledger.merkle, ledger.events)
and verified inline in a fresh process; each figure is printed beside the smaller run's, from the
same invocation, so growth (linear or not) is read off the ratio.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "verifier")]
MEDIA = "application/vnd.rlhf-ledger.bundle.v2+jsonl"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def build(path: Path, *, checkpoints: int, runs: int) -> None:
    """A range bundle in tree mode: `runs` one-event runs (or `checkpoints` events), a signed
    checkpoint after every event when `checkpoints` is set, consistency proofs between them."""
    from rlhf_ledger.core.checkpoints import default_origin, sign_checkpoint
    from rlhf_ledger.core.events import make_event, sign_event
    from rlhf_ledger.core.jcs import canonicalize
    from rlhf_ledger.core.keys import Signer
    from rlhf_ledger.core.merkle import InMemoryTree

    log, prod = Signer.from_seed(b"\x01" * 32), Signer.from_seed(b"\x02" * 32)
    origin = default_origin("scale")
    n = max(checkpoints, runs)
    tree = InMemoryTree()
    events = []
    for i in range(n):
        ev = make_event(log_id="scale", run_id=f"run-{i if runs else 0}", type="compute.usage", producer=prod.key_id,
                        seq=0 if runs else i, prev=None if runs or i == 0 else events[-1][1],
                        body={"device": "cpu", "seconds": i}, ts="2026-02-01T00:00:00.000000Z")
        env = sign_event(ev, prod)
        tree.append(canonicalize(env))
        events.append((env, hashlib.sha256(canonicalize(ev)).hexdigest()))
    sizes = list(range(1, n + 1)) if checkpoints else [n]
    lines = [{"kind": "header", "format": "rlhf-ledger-bundle", "version": 2, "media_type": MEDIA,
              "created": "2026-02-01T00:00:00Z", "mode": "tree", "scope": {"type": "range", "start": 0, "end": n},
              "log": {"log_id": "scale", "origin": origin, "public_key": _b64(log.public_key)}}]
    for s in sizes:
        lines.append({"kind": "checkpoint", "size": s, "root": _b64(tree.root(s)),
                      "note": sign_checkpoint(origin, s, tree.root(s), log)})
    for a, b in itertools.pairwise(sizes):
        lines.append({"kind": "consistency", "from": a, "to": b, "proof": [_b64(h) for h in tree.consistency_proof(a, b)]})
    for i, (env, _) in enumerate(events):
        lines.append({"kind": "event", "index": i, "envelope": env})
    lines.append({"kind": "end", "events": n, "records": len(lines)})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def _here(path: str) -> None:
    from rlhf_verifier.verify import Options, verify_file

    t = time.perf_counter()
    from rlhf_ledger.core.checkpoints import default_origin
    from rlhf_ledger.core.keys import Signer
    from rlhf_verifier.note import VerifierKey

    log, prod = Signer.from_seed(b"\x01" * 32), Signer.from_seed(b"\x02" * 32)  # the keys _build signs with (pinned)
    r = verify_file(path, Options(log_keys=[VerifierKey.from_public_key(default_origin("scale"), log.public_key)],
                                  producer_keys=[prod.public_key], jobs=1))
    secs = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"valid": r.valid, "seconds": secs, "peak_rss_kib": rss,
                      "findings": [f.line() for f in r.findings[:3]]}))


def measure(kind: str, n: int) -> dict:
    path = Path(tempfile.gettempdir()) / f"rlhf-scale-{kind}-{n}.jsonl"
    if not path.exists():
        build(path, checkpoints=n if kind == "checkpoints" else 0, runs=n if kind == "runs" else 0)
    out = subprocess.run([sys.executable, __file__, "--_here", str(path)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if not res["valid"]:
        sys.exit(f"{path} did not verify: {res['findings']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", nargs="?", choices=("checkpoints", "runs"))
    ap.add_argument("--n", type=int)
    ap.add_argument("--_here", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._here:
        _here(a._here)
        return
    if a.kind == "checkpoints":
        n = a.n or 20_000
        small, big = measure("checkpoints", n // 4), measure("checkpoints", n)
        print(f"{n // 4:,} checkpoints: {small['seconds']:.2f} s; {n:,} checkpoints: {big['seconds']:.2f} s "
              f"(ratio {big['seconds'] / small['seconds']:.1f} for 4x the checkpoints; linear is ~4)")
    else:
        n = a.n or 100_000
        small, big = measure("runs", n // 10), measure("runs", n)
        per_run = (big["peak_rss_kib"] - small["peak_rss_kib"]) * 1024 / (n - n // 10)
        print(f"{n // 10:,} one-event runs: peak RSS {small['peak_rss_kib'] / 1024:.0f} MiB; {n:,}: "
              f"{big['peak_rss_kib'] / 1024:.0f} MiB -> {per_run:,.0f} bytes per run")


if __name__ == "__main__":
    main()
