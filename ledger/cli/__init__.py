"""`rlhf-ledger`, the command line: the composition root that wires the layers together
(docs/architecture.md). Nothing imports it."""
