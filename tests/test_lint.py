"""The habits are gates (issue 13, item 7): ruff and mypy with zero findings, run by the test
suite so that .ci/run fails on one. Configuration: pyproject.toml ([tool.ruff], [tool.mypy];
strict for rlhf_verifier). Dead code: vulture, with the names only frameworks call listed in
tests/vulture_whitelist.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_architecture import build_tree

pytestmark = pytest.mark.slow  # the fast tier (`pytest --fast`) leaves these to the full suite

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LINTED = ["ledger", "anchoring", "api", "verifier", "tests", "benchmarks", "scripts"]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def test_ruff_finds_nothing():
    res = _run([str(BIN / "ruff"), "check", "--no-cache", *LINTED], cwd=ROOT)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def test_mypy_finds_nothing(tmp_path):
    """The product (non-strict) and the verifier (strict), through the symlinked namespace tree
    (mypy finds modules by folder; rlhf_ledger is mapped from three folders)."""
    tree = build_tree(tmp_path / "tree")
    env = {**os.environ, "MYPYPATH": str(tree)}
    res = _run([str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
                "-p", "rlhf_ledger", "-p", "rlhf_verifier"], cwd=tree, env=env)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def test_vulture_finds_no_dead_code():
    res = _run([str(BIN / "vulture"), "ledger", "anchoring", "api", "verifier/rlhf_verifier",
                "tests/vulture_whitelist.py", "--min-confidence", "60"], cwd=ROOT)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
