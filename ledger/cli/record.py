"""`rlhf-ledger record`, `runs` and `devchain`: recording from the shell, listing runs, a dev chain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from rlhf_ledger.cli.common import CliError, _open_ledger, common
from rlhf_ledger.cli.spool import _sink, destination


@click.command("record")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the producer's key file (rlhf-ledger keygen)")
@click.option("--passphrase-env", default="RLHF_LEDGER_PASSPHRASE", show_default=True)
@click.option("--log", "log_id", required=True)
@click.option("--run", "run_id", required=True)
@click.option("--type", "event_type", required=True, help="event type, e.g. human.review (docs/event-types.md)")
@click.option("--body", default=None, help="the event body as a JSON object")
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False, allow_dash=True), default=None,
              help="read the body from a file (- for stdin)")
@click.option("--commit", "commit", multiple=True, help="a body field to replace by a commitment (repeatable)")
@click.option("--subject", "subjects", multiple=True, metavar="FIELD=PSEUDONYM",
              help="a committed field is this person's data (anp:<hex>; repeatable), so erase-subject can erase it")
@click.option("--spool", "spool_root", default=None,
              help="spool root keeping this key's chain state (default $RLHF_LEDGER_SPOOL or ./.rlhf-ledger-spool)")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1))
@destination
def record_command(key_file, passphrase_env, log_id, run_id, event_type, body, body_file, commit, subjects, spool_root,
                   timeout, url, token_env, data_dir, database_url) -> None:
    """Sign and submit one event (a human review, a CI evaluation, a sign-off) to a run.

    The chain state (seq, previous event hash) is kept in the same local spool the SDK uses, so
    successive records by one key in one run chain; an event not delivered stays there
    (rlhf-ledger spool flush). Prints the event's seq, id and log index.
    """
    from rlhf_ledger.core.events import valid_subject
    from rlhf_ledger.core.keys import read_key_file
    from rlhf_ledger.sdk.distributed import RankInfo
    from rlhf_ledger.sdk.recorder import SPOOL_ENV, _Recorder, _safe

    if (body is None) == (body_file is None):
        raise CliError("give exactly one of --body or --body-file")
    try:
        if body_file is not None:
            body = sys.stdin.read() if body_file == "-" else Path(body_file).read_text(encoding="utf-8")
        doc = json.loads(body)
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{body_file}: cannot read the body: {e}") from None
    except json.JSONDecodeError as e:
        raise CliError(f"{body_file or '--body'}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(doc, dict):
        raise CliError(f"{body_file or '--body'}: the body must be a JSON object, got {type(doc).__name__}")
    named: dict[str, list[str]] = {}
    for item in subjects:
        field, sep, person = item.partition("=")
        if not sep or field not in commit or not valid_subject(person):
            raise CliError(f"--subject {item[:200]!r}: give FIELD=anp:<64 lowercase hex>, with FIELD one of the --commit fields")
        named.setdefault(field, []).append(person)
    signer = read_key_file(key_file, env=passphrase_env)
    root = Path(spool_root or os.environ.get(SPOOL_ENV, ".rlhf-ledger-spool"))
    spool = root / _safe(log_id) / _safe(run_id) / signer.key_id[:16]
    sink, _ledger = _sink(url, token_env, log_id, data_dir, database_url)
    rec = _Recorder(log_id=log_id, run_id=run_id, signer=signer, sink=sink, active=True,
                    rank_info=RankInfo(0, 1, 0, "single"), spool_dir=spool, exit_timeout=timeout)
    try:
        rec.open()
        seq = rec.event(event_type, doc, commit=list(commit), subjects=named or None)
        rec.flush(timeout)
        ack = rec.sender.acks[-1] if rec.sender and rec.sender.acks else None
    except TimeoutError as e:
        raise CliError(f"not delivered: {e}") from None
    finally:
        rec._close_sender(timeout=0)
        sink.close()
    if ack is None:
        raise CliError("the ledger did not acknowledge the event")
    dup = " (already in the log)" if ack.duplicate else ""
    click.echo(f"recorded {event_type} seq {seq} in run {run_id}: event {ack.event_id} at index {ack.index}{dup}")


@click.command("runs")
@common
@click.option("--log", "log_id", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per run")
def runs_command(data_dir, database_url, log_id, as_json) -> None:
    """List the runs of a log with their status (open, or ended with run.end's status)."""
    from rlhf_ledger.store.run_list import list_runs

    ledger = _open_ledger(data_dir, database_url)
    after = None
    shown = 0
    while True:
        page = list_runs(ledger, log_id, after=after)
        for r in page:
            shown += 1
            if as_json:
                click.echo(json.dumps(r.as_json()))
            else:
                st = r.status + (f" ({r.end_status})" if r.end_status else "")
                flags = ("" if r.started else "; no run.start") + ("; payloads erased" if r.payloads_erased else "")
                click.echo(f"{r.run_id}\t{st}\t{r.events} events, {r.producers} producer(s), "
                           f"indexes {r.first_index}-{r.last_index}, {r.first_ts} .. {r.last_ts}{flags}")
        if len(page) < 1000:
            break
        after = page[-1].run_id
    if not shown and not as_json:
        click.echo(f"log {log_id} has no runs", err=True)


ANVIL_PACKAGE = "@foundry-rs/anvil-linux-amd64"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlhf-ledger" / "anvil"


def _pinned_anvil_version() -> str:
    """The version pinned in contracts/package.json (a source checkout), else the one this release uses."""
    pkg = Path(__file__).resolve().parents[2] / "contracts" / "package.json"  # ledger/cli/ -> the checkout
    try:
        v = json.loads(pkg.read_text()).get("devDependencies", {}).get(ANVIL_PACKAGE) or \
            json.loads(pkg.read_text()).get("dependencies", {}).get(ANVIL_PACKAGE)
        if v:
            return v.lstrip("^~=")
    except (OSError, ValueError):
        pass
    return "1.7.1"


def _find_anvil() -> Path | None:
    env = os.environ.get("RLHF_ANVIL_BIN")
    candidates = [Path(env)] if env else []
    rel = Path("node_modules") / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    candidates += [Path(__file__).resolve().parents[2] / "contracts" / rel, _CACHE / rel]
    which = shutil.which("anvil")
    if which:
        candidates.append(Path(which))
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


@click.command("devchain")
@click.option("--block-time", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="seconds between blocks (interval mining)")
@click.option("--port", default=8545, show_default=True, type=click.IntRange(0, 65535))
@click.option("--chain-id", default=None, type=click.IntRange(min=1))
@click.option("--install", is_flag=True, help=f"install the pinned {ANVIL_PACKAGE} with npm into {_CACHE} if missing")
def devchain_command(block_time, port, chain_id, install) -> None:
    """Run the pinned anvil dev chain on 127.0.0.1 in the foreground (Ctrl-C stops it)."""
    anvil = _find_anvil()
    version = _pinned_anvil_version()
    if anvil is None and install:
        npm = shutil.which("npm")
        if npm is None:
            raise CliError("--install needs npm (Node.js) on PATH")
        p = subprocess.run([npm, "install", "--no-save", "--prefix", str(_CACHE), f"{ANVIL_PACKAGE}@{version}"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise CliError(f"npm install {ANVIL_PACKAGE}@{version} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
        anvil = _find_anvil()
    if anvil is None:
        raise CliError(f"anvil not found: run `rlhf-ledger devchain --install` (npm installs {ANVIL_PACKAGE}@{version}), "
                       "or set RLHF_ANVIL_BIN to an anvil binary")
    argv = [str(anvil), "--host", "127.0.0.1", "--port", str(port), "--block-time", f"{block_time:g}"]
    if chain_id is not None:
        argv += ["--chain-id", str(chain_id)]
    click.echo(f"rlhf-ledger: starting {anvil} (block time {block_time:g} s) on 127.0.0.1:{port}", err=True)
    sys.stdout.flush()
    os.execv(argv[0], argv)
