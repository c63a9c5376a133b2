"""`rlhf-ledger spool status|flush DIR`: a crashed run's leftovers, without the training script."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from rlhf_ledger.cli.common import CliError, common


def _sink(url: str | None, token_env: str, log_id: str, data_dir: str | None, database_url: str | None):
    from rlhf_ledger.sdk.sinks import HttpSink, LocalSink

    if url:
        token = os.environ.get(token_env)
        if not token:
            raise CliError(f"--url given but ${token_env} holds no token")
        return HttpSink(url, token, log_id), None
    from rlhf_ledger.cli.common import _open_ledger

    ledger = _open_ledger(data_dir, database_url)
    return LocalSink(ledger.append, log_id=log_id), ledger


def destination(f):
    f = common(f)
    f = click.option("--token-env", default="RLHF_LEDGER_TOKEN", show_default=True, help="env var holding the API token")(f)
    f = click.option("--url", default=None, help="the ledger API (else the local ledger: --data-dir/--database-url)")(f)
    return f


@click.group("spool")
def spool_command() -> None:
    """Inspect or deliver SDK spools (docs/sdk.md, "Spool layout")."""


@spool_command.command("status")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per spool")
def status_command(directory: Path, as_json: bool) -> None:
    """What each spool under DIRECTORY holds: acknowledged, pending, refused, who has it open."""
    from rlhf_ledger.sdk import spool_tools

    spools = spool_tools.find_spools(directory)
    if not spools:
        raise CliError(f"{directory}: no spool (no meta.json) here or below")
    for p in spools:
        st = spool_tools.status(p)
        if as_json:
            click.echo(json.dumps(st.as_json()))
            continue
        state = "ended" if st.ended else ("started" if st.started else "not started")
        lock = f"; open in process {st.locked_by}" if st.locked_by else ""
        click.echo(f"{p}: log {st.log_id} run {st.run_id} producer {st.producer[:16]}: run {state}; "
                   f"acknowledged up to seq {st.acked_seq}; {st.pending} pending{lock}")
        if st.dead_letters:
            click.echo(f"  {st.dead_letters} refused batch(es); last: {st.last_error}")


@spool_command.command("flush")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the producer's key file (the spool holds unsigned lines)")
@click.option("--passphrase-env", default="RLHF_LEDGER_PASSPHRASE", show_default=True)
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1), help="seconds per spool")
@destination
def flush_command(directory: Path, key_file: Path, passphrase_env: str, timeout: float, url: str | None, token_env: str,
                  data_dir: str | None, database_url: str | None) -> None:
    """Deliver every pending event of the spools under DIRECTORY that belong to --key."""
    from rlhf_ledger.core.keys import read_key_file
    from rlhf_ledger.sdk import spool_tools

    signer = read_key_file(key_file, env=passphrase_env)
    spools = spool_tools.find_spools(directory)
    mine = [p for p in spools if spool_tools.read_meta(p)["producer"] == signer.key_id]
    if not mine:
        raise CliError(f"{directory}: no spool of producer {signer.key_id[:16]}... ({len(spools)} of other keys)")
    failed = 0
    for p in mine:
        meta = spool_tools.read_meta(p)
        sink, ledger = _sink(url, token_env, meta["log_id"], data_dir, database_url)
        try:
            n = spool_tools.flush(p, signer, sink, timeout=timeout)
            click.echo(f"{p}: delivered {n} event(s) of run {meta['run_id']}; nothing pending")
        except (TimeoutError, Exception) as e:  # one line per spool, go on with the next
            failed += 1
            click.echo(f"{p}: not delivered: {type(e).__name__}: {e}", err=True)
        finally:
            sink.close()
    if failed:
        raise CliError(f"{failed} of {len(mine)} spool(s) not delivered; they keep their events")
