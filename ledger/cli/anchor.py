"""Click commands for anchoring: `anchor` (run the worker) and `anchors` (status listing).

Wired into the main CLI by ledger/cli.py; also usable alone (`python -m anchoring.cli --help`).

Configuration (options win over the environment):
  RLHF_CHAIN_RPC           JSON-RPC URL of the chain
  RLHF_ANCHOR_CONTRACT     ProvenanceAnchor address
  RLHF_ANCHOR_PRIVATE_KEY  anchoring key (development), or --keystore FILE with RLHF_ANCHOR_PASSPHRASE
  DATABASE_URL             ledger database (default: SQLite under the data directory)
  content store            --ipfs URL (Kubo RPC) or --content-store DIR (default <data_dir>/content)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from rlhf_ledger.anchoring.chain import FEE_MODES, ChainClient
from rlhf_ledger.anchoring.content_store import ContentStore, LocalContentStore
from rlhf_ledger.anchoring.keystore import load_anchor_account
from rlhf_ledger.anchoring.worker import FINALIZED_MODE, AnchorWorker, next_delay
from rlhf_ledger.core.anchor_status import AnchorStatus
from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.store.ledger import Ledger

RPC_ENV = "RLHF_CHAIN_RPC"
CONTRACT_ENV = "RLHF_ANCHOR_CONTRACT"


def _confirmations(value: str) -> int | str:
    if value == FINALIZED_MODE:
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter("an integer >= 1 or 'finalized'") from None
    if n < 1:
        raise click.BadParameter("an integer >= 1 or 'finalized'")
    return n


def open_ledger(data_dir: str | None, database_url: str | None) -> Ledger:
    from rlhf_ledger.cli.preflight import open_ledger as open_or_explain  # one line if the database is missing

    return open_or_explain(data_dir, database_url)


def content_store_for(data_dir: Path, content_dir: str | None, ipfs: str | None) -> ContentStore:
    if ipfs:
        from rlhf_ledger.anchoring.kubo import KuboContentStore

        return KuboContentStore(ipfs)
    return LocalContentStore(Path(content_dir) if content_dir else data_dir / "content")


@click.command("anchor")
@click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default="./data", show_default=True, help="ledger data directory")
@click.option("--database-url", envvar="DATABASE_URL", default=None, help="ledger database (default SQLite in data dir)")
@click.option("--log", "log_ids", multiple=True, help="log id(s) to anchor (default: every log)")
@click.option("--rpc", envvar=RPC_ENV, default=None,
              help=f"chain JSON-RPC URL; several comma-separated URLs fail over in order (env {RPC_ENV})")
@click.option("--contract", envvar=CONTRACT_ENV, default=None, help=f"ProvenanceAnchor address (env {CONTRACT_ENV})")
@click.option("--keystore", type=click.Path(dir_okay=False), default=None, help="keystore v3 file for the anchoring key")
@click.option("--confirmations", default="2", show_default=True,
              help="blocks deep before 'confirmed' (always applies), or 'finalized' (2 blocks and the finalized tag)")
@click.option("--finality-tag", type=click.Choice(["finalized", "safe"]), default="finalized", show_default=True,
              help="chain tag a row must also pass to become 'finalized' (an additional condition)")
@click.option("--fee-mode", type=click.Choice(list(FEE_MODES)), default="auto", show_default=True,
              help="eip1559 (type 2), legacy (type 0, gasPrice) or auto (legacy if blocks have no baseFeePerGas)")
@click.option("--content-store", "content_dir", default=None, help="content directory (default <data-dir>/content)")
@click.option("--ipfs", default=None, help="Kubo RPC URL, e.g. http://127.0.0.1:5001 (instead of --content-store)")
@click.option("--deploy", is_flag=True, help="deploy a new contract (dev chains) and authorise the key")
@click.option("--once/--watch", default=True, help="one pass (default) or keep running")
@click.option("--interval", default=5.0, show_default=True, help="seconds between passes with --watch")
def anchor_command(data_dir: str, database_url: str | None, log_ids: tuple[str, ...], rpc: str, contract: str | None,
                   keystore: str | None, confirmations: str, finality_tag: str, fee_mode: str,
                   content_dir: str | None, ipfs: str | None, deploy: bool, once: bool, interval: float) -> None:
    """Anchor signed checkpoints on chain and store their manifests."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema upgrades are not worker news
    if not rpc:
        raise click.ClickException(f"no chain: pass --rpc URL or set {RPC_ENV} (a JSON-RPC endpoint of the chain to anchor on)")
    if contract is None and not deploy:  # before the keys are opened: one line, like the other missing settings
        raise click.ClickException(f"no contract: pass --contract, set {CONTRACT_ENV} (the ProvenanceAnchor address), "
                                   "or --deploy on a dev chain")
    try:
        conf = _confirmations(confirmations)
        ledger = open_ledger(data_dir, database_url)
        client = ChainClient(rpc, load_anchor_account(keystore), contract_address=contract, fee_mode=fee_mode)
        if deploy:
            address = client.deploy()
            client.wait_for_receipt(client.authorize(client.address))
            click.echo(f"deployed ProvenanceAnchor at {address} (chain {client.chain_id}); set {CONTRACT_ENV}={address}")
        store = content_store_for(Path(data_dir), content_dir, ipfs)
        logs = list(log_ids) or [info.log_id for info in ledger.list_logs()]
        workers = [AnchorWorker(ledger, client, store, log_id, confirmations=conf, finality_tag=finality_tag)
                   for log_id in logs]
    except LedgerError as e:
        raise click.ClickException(str(e)) from None
    try:
        _run(workers, once, interval)
    finally:  # a finished --once run (or a stopped --watch) hands the lease on at once, not after its ttl
        for w in workers:
            w.lease.release()


def _run(workers: list[AnchorWorker], once: bool, interval: float, *, max_backoff: float = 300.0,
         passes: int | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Passes over every log; with --watch the delay between rounds doubles (up to `max_backoff`)
    while a chain or content store is unavailable, like AnchorWorker.watch (docs/anchoring.md)."""
    delay, done = interval, 0
    while True:
        unavailable = False
        for w in workers:
            r = w.run_once()
            if not r.leader:
                click.echo(f"{w.log_id}: another worker holds the lease; skipped")
            elif r.unavailable:
                unavailable = True
                click.echo(f"{w.log_id}: {r.unavailable}", err=True)
            else:
                for size in r.submitted:
                    click.echo(f"{w.log_id}: checkpoint {size} sent")
                for err in r.errors:
                    click.echo(f"{w.log_id}: {err}", err=True)
        done += 1
        if once or (passes is not None and done >= passes):
            break
        delay = next_delay(delay, interval, max_backoff, unavailable=unavailable)
        sleep(delay)


def _when(ts: float | int | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command("anchors")
@click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default="./data", show_default=True)
@click.option("--database-url", envvar="DATABASE_URL", default=None)
@click.option("--log", "log_id", required=True, help="log id")
@click.option("--json", "as_json", is_flag=True, help="JSON lines with every column (evidence included)")
@click.option("--retry", "retry_id", type=int, default=None,
              help="retry one failed anchor (by id): it goes back to submitted/pending for the worker")
def anchors_command(data_dir: str, database_url: str | None, log_id: str, as_json: bool, retry_id: int | None) -> None:
    """List a log's anchors and their status (failed rows show their reason)."""
    try:
        ledger = open_ledger(data_dir, database_url)
        if retry_id is not None:
            row = ledger.anchors.retry(log_id, retry_id)
            click.echo(f"anchor {retry_id} (checkpoint {row.checkpoint_size}): failed -> {row.status}; "
                       "the next worker pass takes it up")
            return
        rows = ledger.anchors.for_log(log_id)
    except LedgerError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.as_json(), sort_keys=True))
        return
    click.echo(f"{'id':>5} {'size':>8} {'prev':>8} {'status':<10} {'block':>9} {'tx':<68} {'anchored (block time)':<21} cid / error")
    for r in rows:
        failing = r.status in (AnchorStatus.FAILED, AnchorStatus.REORGED) or (r.error and r.status == AnchorStatus.PENDING)
        tail = r.error if failing else r.cid
        click.echo(f"{r.id:>5} {r.checkpoint_size:>8} {r.prev_size:>8} {r.status:<10} {r.block_number or '':>9} "
                   f"{r.tx_hash or '':<68} {_when(r.block_timestamp):<21} {tail or ''}")


@click.group("anchoring")
def cli() -> None:
    """Anchoring commands."""


cli.add_command(anchor_command)
cli.add_command(anchors_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())

__all__ = ["anchor_command", "anchors_command", "cli"]
