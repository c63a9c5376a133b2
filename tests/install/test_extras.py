"""The packaging metadata agrees with the code and with the lock (no venv is built here):

* pyproject.toml (both) declares ranges, and requirements.lock satisfies every one of them, pins
  everything exactly and holds torch at a CPU build (an open torch would pull a CUDA build);
* every third-party module the product imports belongs to the base install or to an extra, as
  the CLI's table of missing extras (ledger/cli/extras.py) says; the core imports only the
  base install, the SDK's own modules only the base and [sdk] at import time.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rlhf_ledger.cli.extras import COMMAND_EXTRA, OPTIONAL_MODULES, missing_module_message
from rlhf_ledger.cli.main import LAZY_COMMANDS, main
from tests.install.venvs import ROOT, pyproject, requirements

BASE_MODULES = {"nacl": "pynacl", "rfc8785": "rfc8785", "orjson": "orjson", "click": "click"}
PRODUCT_DIRS = {"ledger": "rlhf_ledger", "anchoring": "rlhf_ledger.anchoring", "api": "rlhf_ledger.api"}


def lock() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and not any(c in version for c in "<>,~=*"), f"requirements.lock: {line!r} is not an exact pin"
            out[canonicalize_name(name)] = version
    return out


def all_requirements(project: dict) -> list[tuple[str, Requirement]]:
    out = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        out += [(f"[{extra}]", Requirement(r)) for r in reqs]
    return [(where, r) for where, r in out if r.name != project["name"]]


@pytest.mark.parametrize("path", ["pyproject.toml", "verifier/pyproject.toml"])
def test_ranges_that_the_lock_satisfies(path):
    project = tomllib.loads((ROOT / path).read_text())["project"]
    pins = lock()
    for where, r in all_requirements(project):
        ops = {s.operator for s in r.specifier}
        assert ">=" in ops and ("<" in ops or "~=" in ops), f"{path} {where}: {r} is not a range with both bounds"
        assert "==" not in ops, f"{path} {where}: {r} pins an exact version (exact pins belong in requirements.lock)"
        name = canonicalize_name(r.name)
        assert name in pins, f"{path} {where}: {r.name} is not in requirements.lock"
        assert r.specifier.contains(pins[name], prereleases=True), f"{path} {where}: requirements.lock has {r.name}=={pins[name]}, outside {r.specifier}"


def test_the_lock_holds_torch_at_a_cpu_build():
    assert lock()["torch"].endswith("+cpu")


def test_every_extra_resolves_and_all_is_the_union():
    optional = pyproject()["project"]["optional-dependencies"]
    assert {"sdk", "store", "anchoring", "server", "train", "privacy", "test", "all"} <= set(optional)
    everything = {r.name for extra in optional if extra not in ("all", "test") for r in requirements((extra,))}
    assert {r.name for r in requirements(("all",))} == everything
    # the SDK's extra stays small: no storage, chain, service or training library
    sdk = {canonicalize_name(r.name) for r in requirements(("sdk",))}
    assert sdk == {"pynacl", "rfc8785", "orjson", "click", "httpx", "pyyaml"}


def test_the_missing_extra_table_matches_pyproject():
    for module, (dist, extra) in OPTIONAL_MODULES.items():
        names = {canonicalize_name(r.name) for r in requirements((extra,))}
        assert canonicalize_name(dist) in names, f"{module}: {dist} is not brought by [{extra}]"
    commands = set(LAZY_COMMANDS) | set(main.commands)
    for command, extra in COMMAND_EXTRA.items():
        assert command in commands and extra in pyproject()["project"]["optional-dependencies"]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Third-party top-level modules imported by a file: (at module level, anywhere)."""
    top, anywhere = set(), set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for n in names:
            root = n.split(".")[0]
            if root in sys.stdlib_module_names or root in ("rlhf_ledger", "__future__"):
                continue
            anywhere.add(root)
            if node.col_offset == 0:
                top.add(root)
    return top, anywhere


def _product_files() -> list[tuple[str, Path]]:
    out = []
    for folder, package in PRODUCT_DIRS.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            rel = p.relative_to(ROOT / folder).with_suffix("")
            out.append((".".join([package, *rel.parts]), p))
    return out


@pytest.mark.slow
def test_every_module_the_product_imports_comes_with_the_base_or_an_extra():
    unknown = {}
    for module, path in _product_files():
        _, anywhere = _imports(path)
        for m in anywhere - set(BASE_MODULES) - set(OPTIONAL_MODULES):
            unknown.setdefault(m, []).append(module)
    assert not unknown, f"imported but not in the base install nor in ledger/cli/extras.py: {unknown}"


def test_the_core_needs_only_the_base_install_and_the_sdk_only_its_extra():
    allowed_sdk = set(BASE_MODULES) | {m for m, (_, extra) in OPTIONAL_MODULES.items() if extra == "sdk"}
    for module, path in _product_files():
        top, anywhere = _imports(path)
        if module.startswith("rlhf_ledger.core"):
            assert anywhere <= set(BASE_MODULES), f"{module} imports {sorted(anywhere - set(BASE_MODULES))}"
        if module.startswith("rlhf_ledger.sdk") and module != "rlhf_ledger.sdk.hf_callback":
            # torch, numpy, dp-accounting: imported inside the functions that use them
            assert top <= allowed_sdk, f"{module} imports {sorted(top - allowed_sdk)} at import time"


def test_the_message_for_a_missing_module():
    e = ModuleNotFoundError("No module named 'fastapi'", name="fastapi")
    assert missing_module_message("serve", e) == (
        "rlhf-ledger serve needs the [server] extra ('fastapi' is not installed): pip install 'rlhf-ledger[server]'")
    e = ModuleNotFoundError("No module named 'sqlalchemy.orm'", name="sqlalchemy.orm")
    assert missing_module_message("init", e).startswith("rlhf-ledger init needs the [store] extra ('sqlalchemy'")
    e = ModuleNotFoundError("No module named 'leftpad'", name="leftpad")
    assert missing_module_message("init", e) == "rlhf-ledger init: the Python module 'leftpad' is not installed"
    # a module of the product itself missing is a broken installation, not a missing extra
    e = ModuleNotFoundError("No module named 'rlhf_ledger.gone'", name="rlhf_ledger.gone")
    assert missing_module_message("init", e) is None


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists the packages explicitly (the namespace is mapped from three folders): a new
    subpackage missing from the list works in the editable install and is absent from the wheel."""
    tool = pyproject()["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    for package, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((package, *rel))
            if not any(name.startswith(p + ".") for p in tool["package-dir"] if p != package and p.startswith(package)):
                found.add(name)
    assert found == listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}; " \
                            f"listed without a folder: {sorted(listed - found)}"


@pytest.mark.parametrize(("module", "code", "what"), [
    ("yaml", "import rlhf_ledger.sdk", "rlhf_ledger.sdk"),
    ("httpx", "from rlhf_ledger.sdk import HttpSink\nHttpSink('http://127.0.0.1:1', 't', 'l')", "HttpSink"),
])
def test_the_sdk_without_its_extra_names_the_extra(module, code, what):
    """The SDK without the [sdk] extra: one line naming it, not a bare module error. (The fresh
    base install in tests/install/test_sdk_install.py checks the import for real.)"""
    import subprocess

    p = subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None\n{code}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        f"ModuleNotFoundError: {what} needs the [sdk] extra ({module!r} is not installed): "
        "pip install 'rlhf-ledger[sdk]'"), p.stderr
    assert OPTIONAL_MODULES[module][1] == "sdk"  # the CLI's table says the same
