"""Independent verifier for rlhf-ledger proof bundles (imports nothing from the ledger)."""
__version__ = "0.1.0"
