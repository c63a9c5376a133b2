"""Gas per anchor on a real anvil, measured in this run, and the amortised gas per audit event.

    .venv/bin/python benchmarks/gas.py

For each batch size B (events per checkpoint) a fresh log is anchored at sizes B, 2B, 3B, ...:
the first anchor of a log pays for two fresh storage slots, later ones update them. Amortised gas
per event = gas per anchor / B. The baseline column is the figure documented in docs/contract.md.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anchoring.chain import ChainClient, log_id_for_origin  # noqa: E402
from anchoring.devchain import Anvil  # noqa: E402

BATCH_SIZES = (1, 100, 10_000, 1_000_000)
SUBSEQUENT_SAMPLES = 5
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # 59 chars, a typical CIDv1
# docs/contract.md, "Gas" (anvil 1.7.1, default hardfork, this CID length)
BASELINE_FIRST = 73_981
BASELINE_SUBSEQUENT = 39_781


def gas_used(client: ChainClient, tx: str) -> int:
    return int(client.wait_for_receipt(tx)["gasUsed"], 16)


def main() -> None:
    with Anvil(accounts=1) as chain:
        client = ChainClient(chain.rpc_url, chain.private_keys[0])
        client.deploy()
        client.wait_for_receipt(client.authorize(client.address))
        print(f"anvil {chain.rpc_url} chain_id={chain.chain_id}; cid length {len(CID)} bytes")
        print(f"{'batch':>10} {'first anchor':>13} {'next (median)':>14} {'gas/event first':>16} "
              f"{'gas/event next':>15}")
        firsts, nexts = [], []
        for batch in BATCH_SIZES:
            log_id = log_id_for_origin(f"benchmark.local/batch-{batch}")
            # non-zero root: a zero root written to a fresh slot would cost almost nothing and flatter the figure
            first = gas_used(client, client.anchor(log_id, batch, b"\xa5" * 32, CID))
            later = [gas_used(client, client.anchor(log_id, batch * (k + 2), bytes([k + 1]) * 32, CID))
                     for k in range(SUBSEQUENT_SAMPLES)]
            subsequent = int(statistics.median(later))
            firsts.append(first)
            nexts.append(subsequent)
            print(f"{batch:>10,} {first:>13,} {subsequent:>14,} {first / batch:>16,.2f} {subsequent / batch:>15,.4f}")
        print(f"\nmeasured: first anchor {max(firsts):,} gas (baseline {BASELINE_FIRST:,}), "
              f"subsequent {max(nexts):,} gas (baseline {BASELINE_SUBSEQUENT:,})")


if __name__ == "__main__":
    main()
