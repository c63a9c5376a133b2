"""Start-up errors of the real commands (subprocesses): each missing passphrase, database or
chain gives one line on stderr naming it and how to provide it, exit status 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "rlhf_ledger.cli"]
DEAD_PG = "postgresql://ledger:hunter2@127.0.0.1:1/ledger"


def run(args: list[str], env: dict[str, str | None], cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("RLHF_LEDGER_PASSPHRASE", "DATABASE_URL", "RLHF_CHAIN_RPC", "RLHF_ANCHOR_PRIVATE_KEY", "RLHF_ANCHOR_CONTRACT")}
    full["PYTHONPATH"] = str(ROOT)
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(CLI + args, capture_output=True, text=True, env=full, cwd=cwd, timeout=60)


def one_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


CASES = [
    ("serve without passphrase", ["serve", "--data-dir", "{d}"], {}, ["RLHF_LEDGER_PASSPHRASE", "RLHF_LEDGER_PASSPHRASE_FILE"]),
    ("serve with an unreadable passphrase file", ["serve", "--data-dir", "{d}"],
     {"RLHF_LEDGER_PASSPHRASE_FILE": "/nonexistent/pass"}, ["RLHF_LEDGER_PASSPHRASE_FILE", "/nonexistent/pass"]),
    ("serve with an unreachable database", ["serve", "--data-dir", "{d}", "--database-url", DEAD_PG],
     {"RLHF_LEDGER_PASSPHRASE": "p"}, ["cannot open the ledger database", "127.0.0.1:1", "DATABASE_URL"]),
    ("token list with an unreachable database", ["token", "list", "--database-url", DEAD_PG], {}, ["DATABASE_URL"]),
    ("init without passphrase", ["init", "--data-dir", "{d}"], {}, ["RLHF_LEDGER_PASSPHRASE"]),
    ("anchor without a chain", ["anchor", "--data-dir", "{d}"], {}, ["--rpc", "RLHF_CHAIN_RPC"]),
    ("anchor without a contract", ["anchor", "--data-dir", "{d}", "--rpc", "http://127.0.0.1:1"], {},
     ["--contract", "RLHF_ANCHOR_CONTRACT", "--deploy"]),
    ("anchor without a key", ["anchor", "--data-dir", "{d}", "--rpc", "http://127.0.0.1:1", "--contract", "0x" + "22" * 20],
     {}, ["RLHF_ANCHOR_PRIVATE_KEY", "keystore"]),
    ("anchor with an unreachable database", ["anchor", "--data-dir", "{d}", "--rpc", "http://127.0.0.1:1", "--deploy",
                                             "--database-url", DEAD_PG], {}, ["cannot open the ledger database"]),
    ("migrate with an unreachable database", ["migrate", "--database-url", DEAD_PG], {},
     ["cannot open the ledger database", "DATABASE_URL"]),
    ("recover with an unreachable database", ["recover", "--log", "l", "--database-url", DEAD_PG, "/dev/null"], {},
     ["cannot open the ledger database", "DATABASE_URL"]),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case's command, run side by side: each is a fresh Python process that spends
    most of a second importing, and they are independent."""

    def one(case: tuple) -> tuple[str, subprocess.CompletedProcess]:
        name, args, env, _ = case
        cwd = tmp_path_factory.mktemp("startup")
        return name, run([a.format(d=cwd / "data") for a in args], env, cwd)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("name,words", [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_one_line_naming_what_is_missing(name, words, outcomes):
    line = one_line(outcomes[name])
    for w in words:
        assert w in line, line
    assert "hunter2" not in line  # the database password is never printed


def test_serve_with_a_wrong_passphrase_names_the_key_file(tmp_path):
    d = tmp_path / "data"
    ok = run(["init", "--data-dir", str(d)], {"RLHF_LEDGER_PASSPHRASE": "right"}, tmp_path)
    assert ok.returncode == 0, ok.stderr
    line = one_line(run(["serve", "--data-dir", str(d)], {"RLHF_LEDGER_PASSPHRASE": "wrong"}, tmp_path))
    assert "does not open" in line and "keys" in line


def test_migrate_check_waits_for_the_schema(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    url = f"sqlite:///{d / 'ledger.sqlite3'}"
    line = one_line(run(["migrate", "--check", "--data-dir", str(d), "--database-url", url], {}, tmp_path))
    assert "newest is" in line and "rlhf-ledger migrate" in line  # nothing migrated yet
    ok = run(["migrate", "--data-dir", str(d), "--database-url", url], {}, tmp_path)
    assert ok.returncode == 0 and "newest" in ok.stdout, ok.stderr
    ok = run(["migrate", "--check", "--data-dir", str(d), "--database-url", url], {}, tmp_path)
    assert ok.returncode == 0 and "newest revision" in ok.stdout


def test_secrets_from_files(tmp_path):
    from rlhf_ledger.core.errors import LedgerError
    from rlhf_ledger.core.secret_env import env_secret

    f = tmp_path / "pass"
    f.write_text("s3cret\n")  # kubectl create secret --from-file keeps the newline
    assert env_secret("X", {"X_FILE": str(f)}) == "s3cret"
    assert env_secret("X", {"X": "direct", "X_FILE": str(f)}) == "direct"
    assert env_secret("X", {}) is None
    f.write_text("\n")
    with pytest.raises(LedgerError, match="empty"):
        env_secret("X", {"X_FILE": str(f)})
