"""The storage layer: every table, every migration and the one gateway to them (docs/storage.md,
docs/architecture.md). Imports only rlhf_ledger.core."""
