"""Anchoring: publish checkpoints to an EVM chain (chain.py, contract spec docs/contract.md), build
offline anchor evidence (evidence.py, docs/anchor-evidence.md), run a dev chain (devchain.py), and
store manifests by content id (cid.py, content_store.py, kubo.py)."""
