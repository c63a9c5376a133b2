"""`rlhf-ledger erase-run` and `erase-subject`: crypto-shred a run's or a person's openings,
recorded in the log by an `erasure` event (docs/storage.md "Payloads and erasure")."""

from __future__ import annotations

import click

from rlhf_ledger.cli.common import _open_ledger, common


def _at(places: list[tuple[str, int]]) -> str:
    return ", ".join(f"log {log_id} index {idx}" for log_id, idx in places)


@click.command("erase-run")
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.argument("run_id")
@click.confirmation_option(prompt="Destroy this run's payload key? Its openings become unreadable forever.")
def erase_run_command(data_dir, database_url, log_id, run_id) -> None:
    """Crypto-shred a run's openings (proofs stay valid) and record the erasure in the log."""
    ledger = _open_ledger(data_dir, database_url)
    e = ledger.erase_run(log_id, run_id)
    if e.already:
        click.echo(f"run {run_id} (log {log_id}) was already erased (erasure event at {_at(e.previous)}); "
                   "no new event written")
        return
    (log, idx), = e.recorded
    click.echo(f"run {run_id} (log {log_id}): payload key destroyed, openings of {e.entries[log]} entries unreadable; "
               f"erasure recorded at index {idx}")


@click.command("erase-subject")
@common
@click.argument("subject")
@click.option("--dry-run", is_flag=True, help="only list the logs and runs that hold the subject's openings")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def erase_subject_command(data_dir, database_url, subject, dry_run, yes) -> None:
    """Crypto-shred one person's openings in every run and log (SUBJECT: their pseudonym
    anp:<hex>); each log that held them records an erasure event. Proofs stay valid."""
    from rlhf_ledger.store.erasure import subject_state

    ledger = _open_ledger(data_dir, database_url)
    state, places, events = subject_state(ledger, subject)
    if dry_run:
        click.echo(f"subject {subject}: {state}" + (f" (erasure events at {_at(events)})" if events else ""))
        for p in places:
            click.echo(f"  log {p.log_id} run {p.run_id}: {p.entries} entries with openings naming it")
        return
    if not yes:
        runs = len(places)
        click.confirm(f"Destroy the key of {subject}? Its openings in {runs} run(s) become unreadable forever.", abort=True)
    e = ledger.erase_subject(subject)
    if e.already:
        click.echo(f"subject {subject} was already erased (erasure events at {_at(e.previous)}); no new event written")
        return
    entries, runs = sum(e.entries.values()), sum(e.runs.values())
    click.echo(f"subject {subject}: key destroyed, openings of {entries} entries in {runs} run(s) unreadable")
    for log_id, idx in e.recorded:
        click.echo(f"  log {log_id}: erasure recorded at index {idx} ({e.entries[log_id]} entries, {e.runs[log_id]} runs)")
    if e.previous:
        click.echo(f"  recorded before: {_at(e.previous)}")
