"""Throwaway virtual environments with this checkout installed the way a user installs it: a
wheel built from a copy of the sources, then ``pip install 'rlhf_ledger-*.whl[extra]'`` with its
dependencies resolved from the registry (not from requirements.lock).

Cached under the temp dir, one venv per variant and hash of the requirements pyproject.toml
declares for its extras: it keeps the dependencies they resolved to. The project itself is reinstalled (``--no-deps``)
whenever its sources changed, so a cached venv never runs stale code. A lock file serialises
building and using them (worktrees on one machine share the temp dir).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("ledger", "anchoring", "api")  # the folders pyproject.toml maps into rlhf_ledger
BUILD_FILES = ("pyproject.toml", "setup.py")
STALE_SECONDS = 6 * 3600  # cached venvs and wheels of other sources, unused this long, are removed
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "build", "*.egg-info")


def cache_root() -> Path:
    d = Path(tempfile.gettempdir()) / "rlhf-ledger-packaging"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def deps_hash(extras: tuple[str, ...], also: tuple[str, ...], lowest: bool) -> str:
    """What a venv's resolved dependencies depend on: the requirements pyproject.toml declares for
    its extras (not comments, tool settings or other extras; code changes reinstall the project only)."""
    doc = pyproject()
    keyed = {"build": doc["build-system"], "python": doc["project"]["requires-python"], "also": list(also),
             "requirements": sorted(map(str, requirements(extras))), "lowest": lowest}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def source_hash() -> str:
    files = [ROOT / f for f in BUILD_FILES]
    for d in PACKAGE_DIRS:
        files += sorted(p for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and p.suffix not in (".pyc", ".so"))
    return _hash(files)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The base dependencies and those of ``extras``, with self-references (rlhf-ledger[x]) expanded."""
    project = pyproject()["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, project["optional-dependencies"][extra]):
            if r.name == project["name"]:
                todo += sorted(r.extras)
            else:
                out.append(r)
    return out


def lower_bounds(extras: tuple[str, ...]) -> list[str]:
    """``name==X`` for each requirement's ``>=X``: installing these checks the declared lower bounds."""
    out = []
    for r in requirements(extras):
        lows = [s.version for s in r.specifier if s.operator == ">="]
        assert lows, f"{r}: no lower bound in pyproject.toml"
        out.append(f"{r.name}=={lows[0]}")
    return out


@contextmanager
def locked() -> Iterator[None]:
    with open(cache_root() / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pip(python: Path | str, *args: str, timeout: float = 900) -> None:
    p = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def build_wheel(src_hash: str) -> Path:
    """The project's wheel for these sources (built once per source hash, from a copy, so the
    checkout gets no build/ or egg-info)."""
    out = cache_root() / f"wheel-{src_hash[:16]}"
    if not (out / ".complete").exists():
        shutil.rmtree(out, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="rlhf-ledger-src-") as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            for f in BUILD_FILES:
                shutil.copy2(ROOT / f, src / f)
            for d in PACKAGE_DIRS:
                shutil.copytree(ROOT / d, src / d, ignore=_IGNORE)
            p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                                "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"building the wheel failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        (out / ".complete").write_text(src_hash + "\n")
    (out / ".complete").touch()
    (wheel,) = out.glob("rlhf_ledger-*.whl")
    return wheel


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for its processes: nothing of the project's venv or checkout on the path."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **extra}

    def run(self, args: list[str], *, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=str(cwd), env=self.env(**env), capture_output=True, text=True, timeout=timeout)


def _sweep(prefix: str, keep: Path) -> None:
    now = time.time()
    for d in cache_root().glob(prefix + "*"):
        mark = d / ".complete"
        if d != keep and (not mark.exists() or now - mark.stat().st_mtime > STALE_SECONDS):
            shutil.rmtree(d, ignore_errors=True)


def venv(variant: str, extras: tuple[str, ...], *, also: tuple[str, ...] = (), lowest: bool = False) -> Venv:
    """A venv with the project's wheel installed with ``extras`` (plus the requirements ``also``);
    with ``lowest``, every dependency of those extras at its declared lower bound. Call under
    :func:`locked`."""
    src = source_hash()
    wheel = build_wheel(src)
    root = cache_root() / f"venv-{variant}-{deps_hash(extras, also, lowest)[:16]}"
    target = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        args = [target, *also]
        if lowest:
            pins = root / "lower-bounds.txt"
            pins.write_text("".join(x + "\n" for x in lower_bounds(extras)))
            args = ["-c", str(pins), *args]
        _pip(root / "bin" / "python", *args)
        (root / ".source").write_text(src)
        (root / ".complete").write_text("ok\n")
    elif (root / ".source").read_text() != src:  # same dependencies, changed code: reinstall the project only
        _pip(root / "bin" / "python", "--no-deps", "--force-reinstall", str(wheel))
        (root / ".source").write_text(src)
    (root / ".complete").touch()
    _sweep(f"venv-{variant}-", root)
    _sweep("wheel-", wheel.parent)
    return Venv(root)
