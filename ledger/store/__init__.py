"""The storage layer: every table, every migration and the one gateway to them, `Ledger`
(store/ledger.py) with its repositories (docs/storage.md "One gateway", docs/architecture.md).
Imports only rlhf_ledger.core; the layers above call its typed methods, never an engine."""
