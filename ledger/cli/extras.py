"""Which optional extra (pyproject.toml) brings what a command needs, so that a command run
without it ends in one line naming the extra to install, not in a traceback.

The base install is the core and the CLI's frame; `keygen` and `--help` work with it alone.
tests/install/test_extras.py keeps these tables in step with pyproject.toml and with the
modules the product's code imports.
"""

from __future__ import annotations

from rlhf_ledger.core.extras import OPTIONAL_MODULES, needs_extra

# Commands whose extra is named whatever module is missing: installing it brings everything
# the command needs (e.g. `serve` on a base install misses SQLAlchemy first, but [store] alone
# would not run it). Other commands name the extra of the module that is missing.
COMMAND_EXTRA: dict[str, str] = {
    "serve": "server",
    "token": "server",
    "anchor": "anchoring",
    "anchors": "anchoring",
    "export": "anchoring",  # bundles carry anchor evidence (rlhf_ledger.anchoring)
}


def missing_module(exc: ModuleNotFoundError) -> str | None:
    """The top-level module an import missed, or None when it is part of rlhf_ledger itself (a
    broken installation: not something an extra fixes)."""
    module = (exc.name or "").split(".")[0]
    return None if not module or module == "rlhf_ledger" else module


def extra_for(command: str | None, module: str) -> str | None:
    return COMMAND_EXTRA.get(command or "") or OPTIONAL_MODULES.get(module, (None, None))[1]


def missing_module_message(command: str | None, exc: ModuleNotFoundError) -> str | None:
    """One line for a module missing from the installation (None: see missing_module)."""
    module = missing_module(exc)
    if module is None:
        return None
    what = f"rlhf-ledger {command}" if command else "rlhf-ledger"
    extra = extra_for(command, module)
    if extra is None:
        return f"{what}: the Python module {module!r} is not installed"
    return needs_extra(what, module, extra)
