"""Secrets from the environment, or from a file named by `<NAME>_FILE` (the Docker/Kubernetes
convention: a Secret mounted as a file is not visible in the process environment, /proc or
`kubectl describe`). The variable itself wins when both are set."""

from __future__ import annotations

import os
from collections.abc import Mapping

from rlhf_ledger.core.errors import LedgerError


def env_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return value
    path = env.get(name + "_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise LedgerError(f"{name}_FILE={path}: cannot read the secret file ({e.strerror})", code="config_error",
                          where=name + "_FILE") from None
    text = text.rstrip("\r\n")  # `kubectl create secret --from-file` keeps a trailing newline
    if not text:
        raise LedgerError(f"{name}_FILE={path}: the secret file is empty", code="config_error", where=name + "_FILE")
    return text
