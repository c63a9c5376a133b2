"""Proof-bundle export (docs/bundle-format.md): reads the store, takes anchors through an
interface (docs/architecture.md)."""
