"""`rlhf-ledger export`: write a proof bundle for an event, a range or a run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rlhf_ledger.cli.common import CliError, _open_ledger, common
from rlhf_ledger.export.bundle import Scope, export_bundle


@click.command("export")
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--index", type=click.IntRange(min=0), help="bundle for one event")
@click.option("--range", "rng", nargs=2, type=click.IntRange(min=0), metavar="START END", help="bundle for entries START..END-1")
@click.option("--run", "run_id", help="bundle for every event of a run")
@click.option("--mode", type=click.Choice(["inclusion", "tree"]), default=None, help="default: inclusion up to 1000 events, else tree")
@click.option("--with-payloads", is_flag=True, help="include decrypted openings (auditor bundles; personal data!)")
@click.option("--no-manifests", is_flag=True, help="leave the anchored manifests out")
@click.option("--require-anchor", is_flag=True, help="fail unless a confirmed anchor covers every event")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True, help="output file (- for stdout)")
def export_command(data_dir, database_url, log_id, index, rng, run_id, mode, with_payloads, no_manifests, require_anchor, out) -> None:
    """Export an offline proof bundle (docs/bundle-format.md)."""
    given = [x for x in (index is not None, bool(rng), run_id is not None) if x]
    if len(given) != 1:
        raise CliError("give exactly one of --index, --range, --run")
    if index is not None:
        scope = Scope("event", index=index)
    elif rng:
        if rng[1] <= rng[0]:
            raise CliError("--range END must be greater than START")
        scope = Scope("range", start=rng[0], end=rng[1])
    else:
        scope = Scope("run", run_id=run_id)
    ledger = _open_ledger(data_dir, database_url)
    store = None
    if not no_manifests:
        from rlhf_ledger.anchoring.content_store import LocalContentStore

        content_dir = Path(ledger.keys_dir).parent / "content"
        store = LocalContentStore(content_dir) if content_dir.exists() else None
    kw = dict(mode=mode, include_openings=with_payloads, content_store=store, require_anchor=require_anchor)
    if str(out) == "-":
        n = export_bundle(ledger, log_id, sys.stdout, scope, **kw)
    else:
        tmp = out.with_name(out.name + ".partial")
        with open(tmp, "w", encoding="utf-8") as f:
            n = export_bundle(ledger, log_id, f, scope, **kw)
        tmp.replace(out)
    click.echo(f"wrote {n} records to {out}", err=True)
