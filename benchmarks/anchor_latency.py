"""Time from a signed checkpoint to its confirmed anchor, on anvil with 1-second blocks.

For each of --anchors rounds: append events, sign a checkpoint, then run worker passes every
--poll seconds until the anchor row is `confirmed`; the latency is checkpoint creation -> that
pass. Prints the median (and min/max) beside the block time and confirmations; the expected
range is (confirmations - 1) to confirmations block times (inclusion waits 0-1 block, depth 1 is
the inclusion block itself).

    .venv/bin/python benchmarks/anchor_latency.py --anchors 5 --confirmations 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.devchain import Anvil
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.store.ledger import Ledger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchors", type=int, default=5)
    ap.add_argument("--events", type=int, default=100, help="events per checkpoint")
    ap.add_argument("--block-time", type=float, default=1.0)
    ap.add_argument("--confirmations", type=int, default=2)
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between worker passes")
    args = ap.parse_args()
    os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "benchmark-passphrase-not-a-secret")

    with tempfile.TemporaryDirectory() as tmp, Anvil(block_time=args.block_time) as chain:
        ledger = Ledger.open(Path(tmp) / "data", f"sqlite:///{tmp}/ledger.sqlite3")
        ledger.init_log("bench", checkpoint_every_events=10**9)
        signer = Signer.generate()
        ledger.register_producer("bench", signer.public_key)
        client = ChainClient(chain.rpc_url, chain.private_keys[0])
        client.deploy()
        client.wait_for_receipt(client.authorize(client.address))
        worker = AnchorWorker(ledger, client, LocalContentStore(Path(tmp) / "content"), "bench",
                              confirmations=args.confirmations, issue_checkpoints=False)
        seq, prev = 0, None
        latencies = []
        for _ in range(args.anchors):
            batch = []
            for _ in range(args.events):
                ev = make_event(log_id="bench", run_id="r", type="policy.update", producer=signer.key_id,
                                seq=seq, prev=prev, body={"step": seq})
                prev, seq = sha256_hex(canonicalize(ev)), seq + 1
                batch.append(sign_event(ev, signer))
            ledger.append(batch, log_id="bench")
            cp = ledger.checkpoint("bench")
            t0 = time.perf_counter()
            while True:
                worker.run_once()
                rows = [r for r in ledger.anchors.for_log("bench") if r.checkpoint_size == cp.size]
                if rows and rows[-1].status in ("confirmed", "finalized"):
                    break
                time.sleep(args.poll)
            latencies.append(time.perf_counter() - t0)
        ledger.close()

    med = statistics.median(latencies)
    print(f"anchor latency (checkpoint -> confirmed), {args.anchors} anchors, {args.events} events each")
    print(f"  block time      : {args.block_time:.2f} s   confirmations: {args.confirmations}")
    lo, hi = (args.confirmations - 1) * args.block_time, args.confirmations * args.block_time
    print(f"  expected        : {lo:.2f}-{hi:.2f} s (wait for the next block to include, 0-1 block, "
          f"then confirmations - 1 more blocks)")
    print(f"  median          : {med:.2f} s   min {min(latencies):.2f} s   max {max(latencies):.2f} s")
    print(f"  median / block  : {med / args.block_time:.2f} blocks")


if __name__ == "__main__":
    main()
