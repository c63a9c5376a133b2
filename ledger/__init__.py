"""rlhf-ledger: a tamper-evident, chain-anchored provenance log for RLHF training."""

__version__ = "0.1.0"
