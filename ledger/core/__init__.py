"""The core: formats and rules with no storage, chain, service or CLI (docs/architecture.md).

Canonical JSON (jcs), keys, signed events, the RFC 9162 tree (merkle), C2SP checkpoints, the run
index's records and notes, key events, errors. Imports nothing else of rlhf_ledger.
"""
