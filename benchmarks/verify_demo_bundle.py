"""Verification time of the demo's run bundle: keys derived from the chain and the log (issue 12)
beside keys given on the command line, measured in the same run.

Runs the demo (small training) once to get a real bundle anchored on anvil, then times
`rlhf-verify` (in process, `--jobs 1`, the way a demo-sized bundle is checked) on:
- the bundle as exported, with the regulator's minimal command: `--chain-id --contract
  --trusted-block-hash` (the log key from the anchors' log key proofs, the producer key from the
  log's key events);
- the baseline, the way the bundle was checked before issue 12: the same bundle without the log
  key proofs and key events, with the log key and the producer key pinned on the command line.
Prints the median of --repeat runs of each (alternating) and their ratio; the target is at most
1.10 (docs/verifier.md, "Performance").

    .venv/bin/python benchmarks/verify_demo_bundle.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "bench-passphrase-not-a-secret")


def _time(args: list[str]) -> tuple[float, int]:
    import contextlib
    import io

    from rlhf_verifier.cli import main

    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = main(args + ["--jobs", "1", "--no-progress", "--json"])
    return time.perf_counter() - t, code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=15)
    a = p.parse_args()

    from rlhf_ledger.demo.run import BUNDLE_NAME, run_demo

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        outcome = run_demo(out, "small")
        if outcome.verdict != "valid":
            print(f"the demo's bundle did not verify ({outcome.verdict}); nothing to measure", file=sys.stderr)
            return 1
        bundle = out / BUNDLE_NAME
        report = outcome.report
        final = max(report["anchors"], key=lambda x: x["checkpoint_size"])
        chain_id = str(final["chain_id"]).split(" ")[0]
        contract = final["contract"].split(" ")[0]
        minimal = [str(bundle), "--chain-id", chain_id, "--contract", contract,
                   "--trusted-block-hash", final["block_hash"], "--rules", "eu-ai-act@2"]

        # The baseline bundle: what the verifier read before issue 12 (keys pinned, none derived).
        objs = [json.loads(x) for x in bundle.read_text().splitlines()]
        kept = []
        for o in objs:
            if o["kind"] in ("keys", "key_event", "end"):
                continue
            if o["kind"] == "anchor":
                o["evidence"].pop("log_key_proof", None)
            kept.append(o)
        kept.append({"kind": "end", "events": sum(o["kind"] == "event" for o in kept), "records": len(kept)})
        base = Path(tmp) / "baseline.jsonl"
        base.write_text("\n".join(json.dumps(o) for o in kept) + "\n")
        pinned = [str(base), "--chain-id", chain_id, "--contract", contract, "--trusted-block-hash",
                  final["block_hash"], "--rules", "eu-ai-act@2", "--log-key", report["trusted"]["log_keys"][0]]
        for o in objs:  # the producer keys, as the training team would hand them over
            if o["kind"] == "key_event" and o["envelope"]["event"]["type"] == "producer.register":
                pinned += ["--producer-key", o["envelope"]["event"]["body"]["public_key"]]

        derived_t, pinned_t = [], []
        for _ in range(a.repeat):
            t, code = _time(minimal)
            assert code == 0, "the minimal command did not give VALID"
            derived_t.append(t)
            t, code = _time(pinned)
            assert code == 0, "the pinned command did not give VALID"
            pinned_t.append(t)
        d, b = statistics.median(derived_t), statistics.median(pinned_t)
        events = report["counts"]["events"]
        print(f"demo bundle: {events} events, {bundle.stat().st_size} bytes, {len(report['anchors'])} anchor(s)")
        print(f"keys derived from the chain and the log (minimal command): median {d * 1000:.1f} ms over {a.repeat} runs")
        print(f"keys pinned, no derivation (baseline, before issue 12):    median {b * 1000:.1f} ms over {a.repeat} runs")
        print(f"ratio {d / b:.3f} (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
