"""The installed shape is the architecture (docs/architecture.md, issue 13): one namespace,
nothing generic on the import path, and layers that import only downward, checked with
import-linter's contracts from pyproject.toml (so .ci/run fails on a violation).

import-linter (grimp) and mypy find modules by walking folders, and rlhf_ledger is mapped from
three folders (ledger/, anchoring/, api/) by setuptools' package-dir: `namespace_tree` lays the
package out once as a tree of symlinks they can walk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def build_tree(dest: Path, extra: dict[str, str] | None = None) -> Path:
    """`dest`/rlhf_ledger as symlinks to the product's files (plus `extra` files: path in the
    package -> source), and `dest` on which rlhf_verifier is importable too."""
    pkg = dest / "rlhf_ledger"
    pkg.mkdir(parents=True)
    sources = {"": ROOT / "ledger", "anchoring": ROOT / "anchoring", "api": ROOT / "api"}
    extra = extra or {}
    for sub, folder in sources.items():
        for path in folder.rglob("*"):
            if "__pycache__" in path.parts or path.is_dir() or path.suffix not in (".py", ".pyi", ".typed"):
                continue
            rel = Path(sub) / path.relative_to(folder)
            target = pkg / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    for rel, text in extra.items():
        (pkg / rel).write_text(text)
    (dest / "rlhf_verifier").symlink_to(ROOT / "verifier" / "rlhf_verifier")
    return dest


@pytest.fixture(scope="session")
def namespace_tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("namespace"))


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lint-imports"), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold(namespace_tree):
    res = lint_imports(namespace_tree)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "5 kept, 0 broken" in res.stdout


def test_a_core_module_importing_the_store_breaks_the_contracts(tmp_path):
    """The contracts can fail: the same tree with one core module that imports the store."""
    tree = build_tree(tmp_path, {"core/_upward.py": "from rlhf_ledger.store import db  # noqa: F401\n"})
    res = lint_imports(tree)
    assert res.returncode == 1 and "rlhf_ledger.core._upward -> rlhf_ledger.store.db" in res.stdout, res.stdout[-3000:]


def test_one_namespace_and_nothing_generic_on_the_path(tmp_path):
    """Outside the checkout, the product imports as rlhf_ledger and rlhf_verifier only."""
    code = ("import importlib.util as u; "
            "print([n for n in ('ledger', 'anchoring', 'api', 'rlhf_ledger', 'rlhf_verifier') if u.find_spec(n)])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['rlhf_ledger', 'rlhf_verifier']", out.stdout + out.stderr
