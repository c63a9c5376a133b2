"""The states of an anchor record (docs/anchoring.md): the anchoring worker moves a row along
pending -> submitted -> included -> confirmed -> finalized, or to reorged / failed. One
vocabulary for the worker, the store, the API, the metrics and bundle export."""

from __future__ import annotations

from enum import StrEnum


class AnchorStatus(StrEnum):
    PENDING = "pending"  # manifest stored, transaction not yet sent (or to be signed again)
    SUBMITTED = "submitted"  # transaction hash and nonce recorded, sent to the node
    INCLUDED = "included"  # mined; evidence recorded; fewer than the required confirmations
    CONFIRMED = "confirmed"  # deep enough: K confirmations
    FINALIZED = "finalized"  # at or below the chain's finalized (or safe) block
    REORGED = "reorged"  # its block left the canonical chain; the checkpoint is anchored again
    FAILED = "failed"  # given up after bounded attempts, or a terminal refusal (retry by hand)


IN_FLIGHT = (AnchorStatus.PENDING, AnchorStatus.SUBMITTED, AnchorStatus.INCLUDED)
ON_CHAIN = (AnchorStatus.INCLUDED, AnchorStatus.CONFIRMED)  # mined but not final: re-checked for reorgs
SETTLED = (AnchorStatus.CONFIRMED, AnchorStatus.FINALIZED)  # what a bundle may cite and a new anchor builds on
