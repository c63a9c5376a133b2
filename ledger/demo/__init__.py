"""The end-to-end demo (`python -m rlhf_ledger.demo`, run by scripts/demo.sh): a tiny RLHF job in
torch recorded through the SDK, anchored on a local anvil chain and verified (README)."""
