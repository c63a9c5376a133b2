"""Gas per anchor on a real anvil with the on-chain RFC 9162 consistency check, measured in
this run, beside the figure before the check existed, and the amortised gas per audit event.

    .venv/bin/python benchmarks/gas.py

A log is registered once (its gas is printed). For each log size S (10^3, 10^6, 2^40) and
batch B (events since the previous anchor), a log is anchored at S - B and then at S with the
consistency proof from S - B: the second anchor is the steady-state cost at that size. Proofs
and roots for sizes no tree can be built for here (2^40) are synthetic: random proof nodes and
the two roots they imply (tests/anchoring/simlog.py); the contract does the same work as for a
real log of that size, since the work depends only on the sizes. Amortised gas per event =
gas per anchor / B. Target (issue 12): at most 60,000 gas per anchor at 10^6 events.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlhf_ledger.anchoring.chain import ChainClient, log_id_for_origin
from rlhf_ledger.anchoring.devchain import Anvil
from tests.anchoring.simlog import LOG_KEY, synthetic_consistency

LOG_SIZES = (1_000, 1_000_000, 2**40)
BATCHES = (1, 100, 1_000, 100_000)
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # 59 chars, a typical CIDv1
# docs/contract.md, "Gas", before the consistency check (anvil 1.7.1, this CID length):
BASELINE_SUBSEQUENT = 39_781
TARGET_AT_1M = 60_000


def gas_used(client: ChainClient, tx: str) -> int:
    return int(client.wait_for_receipt(tx)["gasUsed"], 16)


def main() -> None:
    with Anvil(accounts=1) as chain:
        client = ChainClient(chain.rpc_url, chain.private_keys[0])
        client.deploy()
        client.wait_for_receipt(client.authorize(client.address))
        print(f"anvil {chain.rpc_url} chain_id={chain.chain_id}; cid length {len(CID)} bytes")
        reg = gas_used(client, client.register_log("benchmark.local/registration", LOG_KEY))
        print(f"registerLog (once per log): {reg:,} gas")
        print(f"{'log size':>16} {'batch':>8} {'proof':>6} {'gas/anchor':>11} {'gas/event':>10}  "
              f"(before the check: {BASELINE_SUBSEQUENT:,} gas/anchor, no proof)")
        at_1m = []
        for size in LOG_SIZES:
            for batch in BATCHES:
                if batch >= size:
                    continue
                origin = f"benchmark.local/{size}-{batch}"
                log_id = log_id_for_origin(origin)
                client.wait_for_receipt(client.register_log(origin, LOG_KEY))
                root_m, root_n, proof = synthetic_consistency(size - batch, size)
                client.wait_for_receipt(client.anchor(log_id, size - batch, root_m, CID))
                gas = gas_used(client, client.anchor(log_id, size, root_n, CID, proof))
                if size == 1_000_000:
                    at_1m.append(gas)
                print(f"{size:>16,} {batch:>8,} {len(proof):>6} {gas:>11,} {gas / batch:>10,.2f}")
        print(f"\nat 10^6 events: at most {max(at_1m):,} gas per anchor (target {TARGET_AT_1M:,}; "
              f"{max(at_1m) - BASELINE_SUBSEQUENT:+,} against the figure without the check)")


if __name__ == "__main__":
    main()
