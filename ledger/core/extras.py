"""Which optional extra (pyproject.toml) brings which third-party module, and the one line that
names it when a module is missing: shared by the CLI (ledger/cli/extras.py, per command) and the
SDK (ledger/sdk/__init__.py, HttpSink), which may not import the CLI. Pure data.
tests/install/test_extras.py keeps the table in step with pyproject.toml and the imports."""

from __future__ import annotations

# top-level module -> (distribution, the extra that brings it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "httpx": ("httpx", "sdk"),
    "yaml": ("pyyaml", "sdk"),
    "dp_accounting": ("dp-accounting", "privacy"),
    "numpy": ("numpy", "privacy"),
    "sqlalchemy": ("sqlalchemy", "store"),
    "alembic": ("alembic", "store"),
    "psycopg": ("psycopg", "store"),
    "tqdm": ("tqdm", "store"),
    "web3": ("web3", "anchoring"),
    "eth_abi": ("eth-abi", "anchoring"),
    "eth_account": ("eth-account", "anchoring"),
    "eth_utils": ("eth-utils", "anchoring"),
    "rlp": ("rlp", "anchoring"),
    "trie": ("trie", "anchoring"),
    "requests": ("requests", "anchoring"),
    "fastapi": ("fastapi", "server"),
    "fastapi_offline": ("fastapi-offline", "server"),
    "starlette": ("starlette", "server"),
    "pydantic": ("pydantic", "server"),
    "uvicorn": ("uvicorn", "server"),
    "prometheus_client": ("prometheus-client", "server"),
    "torch": ("torch", "train"),
    "transformers": ("transformers", "train"),
    "safetensors": ("safetensors", "train"),
}


def needs_extra(what: str, module: str, extra: str) -> str:
    """The one line for `what` run without `extra` (`module` is the import that failed)."""
    return f"{what} needs the [{extra}] extra ({module!r} is not installed): pip install 'rlhf-ledger[{extra}]'"
