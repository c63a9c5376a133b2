"""`rlhf-ledger`: the command-line tool. Bad input gives one clear line and a non-zero exit."""

from __future__ import annotations

import base64
import collections
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from rlhf_ledger.cli.common import CliError, _open_ledger, common
from rlhf_ledger.cli.extras import extra_for, missing_module, missing_module_message
from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.core.jcs import DuplicateKeyError, loads_strict

# Commands that live with their subsystems, imported only when used (web3 and FastAPI take
# about a second to import; `append` and `prove` should not pay for them).
LAZY_COMMANDS = {
    "anchor": "rlhf_ledger.cli.anchor:anchor_command",
    "anchors": "rlhf_ledger.cli.anchor:anchors_command",
    "serve": "rlhf_ledger.cli.serve:serve_command",
    "token": "rlhf_ledger.cli.serve:token_command",
    "export": "rlhf_ledger.cli.export:export_command",
    "migrate": "rlhf_ledger.cli.ops:migrate_command",
    "migrate-keys": "rlhf_ledger.cli.ops:migrate_keys_command",
    "recover": "rlhf_ledger.cli.ops:recover_command",
    # recording from the shell, listing runs, SDK spools, a dev chain (ledger/cli_record.py, cli_spool.py)
    "record": "rlhf_ledger.cli.record:record_command",
    "runs": "rlhf_ledger.cli.record:runs_command",
    "devchain": "rlhf_ledger.cli.record:devchain_command",
    "spool": "rlhf_ledger.cli.spool:spool_command",
    # erasure of a run's or a person's openings, recorded in the log (ledger/cli_erase.py)
    "erase-run": "rlhf_ledger.cli.erase:erase_run_command",
    "erase-subject": "rlhf_ledger.cli.erase:erase_subject_command",
}


def _not_installed(name: str, exc: ModuleNotFoundError) -> click.Command | None:
    """Stands in for a command whose modules need an extra that is not installed: listed in
    --help with the extra to install; run, it prints one line naming it and exits 1."""
    message = missing_module_message(name, exc)
    if message is None:
        return None
    extra = extra_for(name, missing_module(exc) or "")
    short = f"(not installed: pip install 'rlhf-ledger[{extra}]')" if extra else "(not installed) " + message

    def refuse(**_: Any) -> None:
        raise CliError(message)

    return click.Command(name, callback=refuse, help=message, short_help=short,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []})


class LedgerGroup(click.Group):
    """Turns LedgerError anywhere in a command into one clean line, and so a module of a missing
    extra (ledger/cli/extras.py); loads subsystem commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str):
        if name in LAZY_COMMANDS:
            import importlib

            module, attr = LAZY_COMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as e:
                stand_in = _not_installed(name, e)
                if stand_in is None:
                    raise
                return stand_in
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LedgerError as e:
            raise CliError(str(e)) from None
        except ModuleNotFoundError as e:  # a command reached a module of an extra not installed
            message = missing_module_message(ctx.invoked_subcommand, e)
            if message is None:
                raise
            raise CliError(message) from None


@click.group(cls=LedgerGroup)
@click.version_option(package_name="rlhf-ledger")
def main() -> None:
    """A tamper-evident, chain-anchored provenance log for RLHF training."""


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--origin", default=None, help="checkpoint origin line (default rlhf-ledger.local/<log>)")
@click.option("--checkpoint-every-events", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--checkpoint-every-seconds", default=60.0, show_default=True, type=click.FloatRange(min=0.001))
def init(data_dir, database_url, log_id, origin, checkpoint_every_events, checkpoint_every_seconds) -> None:
    """Create a log with its own Ed25519 log key (encrypted at rest)."""
    ledger = _open_ledger(data_dir, database_url)
    info = ledger.init_log(
        log_id, origin=origin, checkpoint_every_events=checkpoint_every_events, checkpoint_every_seconds=checkpoint_every_seconds
    )
    click.echo(f"log {info.log_id} created; origin {info.origin}")
    click.echo(f"log verifier key: {info.vkey}")


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", default="", help="a label stored in the key file")
@click.option("--passphrase-env", default="RLHF_LEDGER_PASSPHRASE", show_default=True, help="env var holding the passphrase (else prompt)")
def keygen(out: Path, label: str, passphrase_env: str) -> None:
    """Write a new Ed25519 producer key, encrypted with a passphrase (Argon2id + XSalsa20-Poly1305)."""
    from rlhf_ledger.core.keys import Signer, passphrase_from_env_or_prompt, write_key_file

    signer = Signer.generate()
    write_key_file(out, signer, passphrase_from_env_or_prompt(passphrase_env, confirm=True), label=label)
    click.echo(f"key id {signer.key_id}")
    click.echo(f"public key {base64.b64encode(signer.public_key).decode()}")


def _public_key_arg(value: str) -> bytes:
    from rlhf_ledger.core.keys import read_public_key_file, unb64

    if os.path.exists(value):
        return read_public_key_file(Path(value))
    try:
        return unb64(value, what="public key", length=32)
    except ValueError as e:
        raise CliError(f"{value!r}: not a key file nor a base64 public key ({e})") from None


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--label", default="")
@click.argument("public_key")
def register(data_dir, database_url, log_id, label, public_key) -> None:
    """Register a producer's public key (key file or base64) with a log: appends its
    producer.register key event, signed by the log key (docs/keys.md)."""
    ledger = _open_ledger(data_dir, database_url)
    kid = ledger.register_producer(log_id, _public_key_arg(public_key), label=label)
    click.echo(f"registered producer {kid}")


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.argument("key_id")
def revoke(data_dir, database_url, log_id, key_id) -> None:
    """Revoke a producer key: appends its producer.revoke key event; its later events are
    refused; its old events stay verifiable."""
    ledger = _open_ledger(data_dir, database_url)
    ledger.revoke_producer(log_id, key_id)
    click.echo(f"revoked producer {key_id}")


class _BatchReader:
    """Batches of parsed JSON lines. A malformed line ends the reading without raising: the
    batches before it are still handed out (and committed), and `error` says where it was."""

    def __init__(self, stream: IO[str], batch_size: int, source: str) -> None:
        self.stream, self.batch_size, self.source = stream, batch_size, source
        # First line number of each batch handed out and not yet answered (popped in order).
        self.first_lines: collections.deque[int] = collections.deque()
        self.error: str | None = None

    def __iter__(self) -> Iterator[list]:
        batch: list = []
        first_line = 1
        for n, line in enumerate(self.stream, start=1):
            if not line.strip():
                continue
            try:
                obj = loads_strict(line)
            except json.JSONDecodeError as e:
                self.error = f"{self.source}:{n}: malformed JSON ({e.msg} at column {e.colno})"
                return
            except DuplicateKeyError as e:  # two parsers must never read two different events
                self.error = f"{self.source}:{n}: {e}"
                return
            except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4,300 digits
                self.error = f"{self.source}:{n}: malformed JSON ({str(e).splitlines()[0][:200]})"
                return
            if not batch:
                first_line = n
            batch.append(obj)
            if len(batch) >= self.batch_size:
                self.first_lines.append(first_line)
                yield batch
                batch = []
        if batch:
            self.first_lines.append(first_line)
            yield batch


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10000))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(0, 64),
              help="threads checking signatures while this one parses and commits (0: all inline)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON result per event")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when reading a file on a terminal)")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, allow_dash=True), default="-")
def append(data_dir, database_url, log_id, batch_size, threads, as_json, progress, source) -> None:
    """Append signed events (JSON lines of {"event","sig"}) from a file or stdin.

    Each batch is stored atomically; a refused batch is reported with the line and reason,
    and batches committed before it stay committed. The next batches are checked while the
    current one commits (docs/storage.md, "Append").
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from rlhf_ledger.store.ledger import BatchRejected

    ledger = _open_ledger(data_dir, database_url)
    ledger.log_info(log_id)
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")
    total = None
    if progress is None:
        progress = source != "-" and sys.stderr.isatty()
    if progress and source != "-":
        with open(source, "rb") as f:
            total = sum(1 for line in f if line.strip())
    bar = tqdm(total=total, unit="ev", disable=not progress, file=sys.stderr)
    appended = duplicates = 0
    name = "stdin" if source == "-" else source
    reader = _BatchReader(stream, batch_size, name)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="verify") if threads else None
    try:
        for results in _stream_or_refusal(ledger, reader, log_id, pool):
            first_line = reader.first_lines.popleft()
            if isinstance(results, BatchRejected):
                pos, err = results.errors[0]
                more = f" ({len(results.errors) - 1} more refused in this batch)" if len(results.errors) > 1 else ""
                raise CliError(
                    f"{name}:{first_line + pos}: {err.code}: {err}{more}; batch not stored; "
                    f"{appended} events appended before it"
                )
            for r in results:
                duplicates += r.duplicate
                appended += not r.duplicate
                if as_json:
                    click.echo(json.dumps(r.as_json()))
            bar.update(len(results))
        if reader.error:
            raise CliError(f"{reader.error}; {appended} events appended before it")
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if stream is not sys.stdin:
            stream.close()
    info = ledger.log_info(log_id)
    click.echo(f"appended {appended} events ({duplicates} already present); log {log_id} size {info.size}", err=as_json)


def _stream_or_refusal(ledger: Any, reader: _BatchReader, log_id: str, pool: Any) -> Iterator[Any]:
    """Each committed batch's results, then the BatchRejected of a refused batch (as a value,
    so the caller can name its line with the batch's position)."""
    from rlhf_ledger.store.ledger import BatchRejected

    try:
        yield from ledger.append_stream(reader, log_id=log_id, executor=pool)
    except BatchRejected as e:
        yield e


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--if-due", is_flag=True, help="only if the N-events / T-seconds policy says one is due")
def checkpoint(data_dir, database_url, log_id, if_due) -> None:
    """Sign a checkpoint of the current tree (C2SP signed note) and print it."""
    ledger = _open_ledger(data_dir, database_url)
    cp = ledger.maybe_checkpoint(log_id) if if_due else ledger.checkpoint(log_id)
    if cp is None:
        click.echo("no checkpoint due", err=True)
        return
    click.echo(cp.note, nl=False)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--index", type=click.IntRange(min=0), help="inclusion proof for this entry")
@click.option("--size", type=click.IntRange(min=0), help="tree size to prove against (default: latest checkpoint)")
@click.option("--consistency", nargs=2, type=click.IntRange(min=0), metavar="FIRST SECOND", help="consistency proof between two sizes")
@click.option("--tlog-proof", "tlog", is_flag=True, help="write the inclusion proof as a c2sp.org/tlog-proof@v1 file")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write to a file instead of stdout")
def prove(data_dir, database_url, log_id, index, size, consistency, tlog, out) -> None:
    """Inclusion or consistency proofs as JSON, or an inclusion proof as a tlog-proof file."""
    ledger = _open_ledger(data_dir, database_url)
    if (index is None) == (not consistency):
        raise CliError("give exactly one of --index or --consistency")
    if consistency:
        m, n = consistency
        proof = ledger.consistency_proof(log_id, m, n)
        doc = {"log_id": log_id, "first": m, "second": n, "first_root": _b64(ledger.root(log_id, m)),
               "second_root": _b64(ledger.root(log_id, n)), "proof": [_b64(h) for h in proof]}
        text = json.dumps(doc, indent=2) + "\n"
    elif tlog:
        text = ledger.tlog_proof(log_id, index, size)
    else:
        n, proof = ledger.inclusion_proof(log_id, index, size)
        entry = ledger.get_entry(log_id, index)
        cp = None
        try:
            cp = ledger.get_checkpoint(log_id, n).note
        except LedgerError:
            pass
        doc = {"log_id": log_id, "index": index, "tree_size": n, "leaf_hash": _b64(entry.leaf_hash),
               "event_id": entry.event_id, "proof": [_b64(h) for h in proof], "root": _b64(ledger.root(log_id, n)),
               "checkpoint": cp}
        text = json.dumps(doc, indent=2) + "\n"
    if out:
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--index", type=click.IntRange(min=0), help="show the event at this index")
@click.option("--event-id", help="show the event with this id")
@click.option("--checkpoint", "cp_size", is_flag=False, flag_value="latest", default=None, help="show a checkpoint (a size, or latest)")
@click.option("--log-key", is_flag=True, help="print the log's signed-note verifier key")
def show(data_dir, database_url, log_id, index, event_id, cp_size, log_key) -> None:
    """Show an event, a checkpoint, or the log's verifier key."""
    ledger = _open_ledger(data_dir, database_url)
    chosen = sum(x is not None and x is not False for x in (index, event_id, cp_size, log_key or None))
    if chosen != 1:
        raise CliError("give exactly one of --index, --event-id, --checkpoint, --log-key")
    if log_key:
        click.echo(ledger.log_info(log_id).vkey)
    elif cp_size is not None:
        if cp_size == "latest":
            cp = ledger.latest_checkpoint(log_id)
            if cp is None:
                raise CliError(f"log {log_id} has no checkpoint yet")
        else:
            if not cp_size.isdigit():
                raise CliError(f"--checkpoint takes a size or 'latest', got {cp_size!r}")
            cp = ledger.get_checkpoint(log_id, int(cp_size))
        click.echo(cp.note, nl=False)
    else:
        row = ledger.get_entry(log_id, index) if index is not None else ledger.find_event(log_id, event_id)
        doc = {"index": row.idx, "event_id": row.event_id, "leaf_hash": _b64(row.leaf_hash), **json.loads(row.entry)}
        click.echo(json.dumps(doc, indent=2))


@main.command()
@common
@click.option("--log", "log_id", default="default", show_default=True)
def audit(data_dir, database_url, log_id) -> None:
    """Re-check the stored log against its signed checkpoints (detects tampering)."""
    from rlhf_ledger.store.ledger import audit as run_audit

    ledger = _open_ledger(data_dir, database_url)
    problems = run_audit(ledger, log_id)
    for p in problems:
        click.echo(p)
    if problems:
        raise CliError(f"{len(problems)} problem(s) found in log {log_id}")
    click.echo(f"log {log_id}: {ledger.size(log_id)} entries, consistent with every signed checkpoint")


if __name__ == "__main__":
    main()
