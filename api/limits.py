"""Process-wide interpreter limits the service depends on, and their guard.

An imported library can change them for the whole process: py_ecc (imported by web3, which
the bundle and anchor code paths load) sets the recursion limit to 100,000, and then a deeply
nested JSON text overflows the C stack of the event-loop thread (SIGSEGV) instead of raising
RecursionError. The service restores the limits after start-up imports and checks them on every
request (one integer comparison each), so no import path can leave them changed.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("api")

RECURSION_LIMIT = 1000  # CPython's default: far below what a thread's 8 MiB C stack survives
INT_MAX_STR_DIGITS = 4300  # CPython's default (CVE-2020-10735): no quadratic int parsing

# Modules the service imports lazily on some request path (bundles, anchors): imported at
# start-up so their side effects happen once, before the guard resets the limits.
LAZY_IMPORTS = ("rlhf_ledger.export.bundle", "rlhf_ledger.anchoring.worker", "rlhf_ledger.anchoring.evidence", "rlhf_ledger.anchoring.chain")


def restore_limits() -> bool:
    """Put the limits back to ours; True if something had changed them."""
    changed = False
    if sys.getrecursionlimit() != RECURSION_LIMIT:
        log.warning("recursion limit was changed to %d by an imported module; restored to %d", sys.getrecursionlimit(), RECURSION_LIMIT)
        sys.setrecursionlimit(RECURSION_LIMIT)
        changed = True
    if sys.get_int_max_str_digits() != INT_MAX_STR_DIGITS:
        log.warning("int max str digits was changed to %d; restored to %d", sys.get_int_max_str_digits(), INT_MAX_STR_DIGITS)
        sys.set_int_max_str_digits(INT_MAX_STR_DIGITS)
        changed = True
    return changed


def limits_ok() -> bool:
    return sys.getrecursionlimit() == RECURSION_LIMIT and sys.get_int_max_str_digits() == INT_MAX_STR_DIGITS


def preload() -> None:
    """Import the lazily used modules now (start-up), then restore the limits."""
    import importlib

    for name in LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError as e:  # an optional part missing: its routes answer 503 later
            log.warning("could not preload %s: %s", name, e)
    restore_limits()
