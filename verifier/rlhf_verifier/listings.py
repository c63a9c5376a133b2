"""The shapes of what a verification lists (verify.Result's report entries, docs/verifier.md
"Reports"). Plain dicts at run time, written to the JSON report as they are; typed here for
checkers. Key order is the order the reports print."""

from __future__ import annotations

from typing import Any, TypeAlias, TypedDict

# A value of Result.trusted: a statement ("not pinned ..."), a pinned chain id, or a list of keys
# or block hashes.
TrustedValue: TypeAlias = str | int | list[str]


class CheckpointListing(TypedDict):
    size: int
    root: str  # base64
    signed_by: str  # vkey of the trusted log key that verified the note


class AnchorListing(TypedDict):
    checkpoint_size: int
    chain_id: int | str  # the id, or the id marked as claimed when no chain id is pinned
    contract: str
    block_number: int
    block_hash: str
    block_timestamp: int
    tx_hash: str
    log_index: str
    cid: str
    status: str  # "confirmed (...)" or "unconfirmed"
    log_key: str
    contract_code: str


class ProducerKeyListing(TypedDict):
    key_id: str
    registered_at_index: int | None  # None: a legacy key, valid from index 0
    legacy: bool
    revoked_at_index: int | None


class CompletenessListing(TypedDict, total=False):
    """Empty until the verification finishes; then status and detail always, the rest for a
    run bundle whose run record verified."""
    status: str  # not claimed | not proven | failed | proven
    run_id: str
    size: int
    events: int
    ended: bool
    producers: int
    anchored_statement: bool
    detail: str


class WeightsListing(TypedDict, total=False):
    """Empty unless --weights was given; then path and status always."""
    path: str
    digest: str
    status: str  # not compared | unreadable | differs | matches
    detail: str


# The released_weights_digest of a run's one run.end is the body member as signed (any JSON).
Released: TypeAlias = tuple[int, Any]  # (index of the run.end, released_weights_digest)
