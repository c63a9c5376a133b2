"""Response and request models (they define the published OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from rlhf_ledger.core.anchor_status import AnchorStatus
from rlhf_ledger.core.roles import TOKEN_ROLES, Role

LOG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # the API does not address log ids with '/'
KEY_ID_PATTERN = r"^[0-9a-f]{64}$"
MAX_INDEX = 2**53 - 1


def _token_role(value: str) -> Role:
    if value not in TOKEN_ROLES:
        raise ValueError(f"must be one of {', '.join(TOKEN_ROLES)}")
    return Role(value)


# A role a token can be minted with (docs/api.md, "Roles"): the Role enum without "public".
TokenRole = Annotated[str, AfterValidator(_token_role), WithJsonSchema({"type": "string", "enum": [str(r) for r in TOKEN_ROLES]})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogCreate(_Strict):
    log_id: str = Field(pattern=LOG_ID_PATTERN)
    # Printable characters only (no NUL: PostgreSQL cannot store it; no newline: it ends the
    # note's origin line); not starting with a space or an em dash. The ledger checks the same.
    origin: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^\x00-\x20\x7f-\x9f\u2014][^\x00-\x1f\x7f-\x9f]*$")
    checkpoint_every_events: int = Field(1000, ge=1, le=1_000_000)
    checkpoint_every_seconds: float = Field(60.0, gt=0, le=86400 * 365)


class LogOut(BaseModel):
    log_id: str
    origin: str
    public_key: str = Field(description="base64 Ed25519 public key of the log")
    vkey: str = Field(description="C2SP signed-note verifier key")
    size: int
    checkpoint_every_events: int
    checkpoint_every_seconds: float


class ProducerCreate(_Strict):
    public_key: str = Field(description="base64 of the raw 32-byte Ed25519 public key", max_length=64)
    label: str = Field("", max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")


class ProducerOut(BaseModel):
    key_id: str
    public_key: str
    label: str
    status: Literal["active", "revoked"]
    registered_at: float
    revoked_at: float | None
    registered_idx: int | None  # index of its producer.register key event (-1: legacy; None: not migrated yet)
    revoked_idx: int | None  # index of its producer.revoke key event


class KeyIdOut(BaseModel):
    log_id: str
    key_id: str
    status: Literal["active", "revoked"]


class TokenCreate(_Strict):
    role: TokenRole
    label: str = Field("", max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")
    log_ids: list[str] = Field(default_factory=list, max_length=100)
    producer_key_ids: list[str] = Field(default_factory=list, max_length=1000)
    run_ids: list[str] = Field(default_factory=list, max_length=1000, description="exact run ids or prefixes ending in '*' ('*': every run); "
                               "required for submitters and auditors")


class TokenOut(BaseModel):
    token_id: str
    role: Role
    label: str
    log_ids: list[str]
    producer_key_ids: list[str]
    run_ids: list[str]
    created_at: float | None = None
    revoked_at: float | None = None
    created_by: str | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="the bearer token; shown once, stored only as its SHA-256")


class Principal(BaseModel):
    token_id: str | None
    role: Role
    label: str
    log_ids: list[str]
    producer_key_ids: list[str]
    run_ids: list[str]


class SubmitIn(BaseModel):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000, description="signed envelopes (docs/event-format.md)")


class SubmitResult(BaseModel):
    index: int
    event_id: str
    leaf_hash: str
    duplicate: bool


class SubmitOut(BaseModel):
    results: list[SubmitResult]


class CheckpointOut(BaseModel):
    origin: str
    size: int
    root: str = Field(description="base64 root hash")
    note: str = Field(description="C2SP signed note")


class AnchorOut(BaseModel):
    id: int
    log_id: str
    status: AnchorStatus
    prev_size: int
    checkpoint_size: int
    covered_range: list[int] = Field(description="[prev_size, checkpoint_size): entry indices this anchor newly covers")
    cid: str | None
    chain_id: int | None
    contract: str | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    block_timestamp: int | None
    log_index: int | None
    confirmations: int | None
    attempts: int
    error: str | None
    created_at: float
    updated_at: float


class ProofOut(BaseModel):
    tree_size: int
    inclusion: list[str]
    checkpoint: CheckpointOut
    anchor: AnchorOut | None = None


class EntryOut(BaseModel):
    log_id: str
    index: int
    event_id: str
    leaf_hash: str
    run_id: str
    producer: str
    seq: int
    type: str
    ts: str
    appended_at: float
    envelope: dict[str, Any]
    proof: ProofOut | None = Field(description="null while no (anchored) checkpoint covers the entry yet")


class ConsistencyOut(BaseModel):
    first: int
    second: int
    proof: list[str]


class EntryAnchorOut(BaseModel):
    index: int
    covered: bool
    since: float | None = Field(description="unix time the covering anchor's block was produced (or confirmed)")
    anchor: AnchorOut | None
    pending: list[AnchorOut]


class PayloadOut(BaseModel):
    index: int
    event_id: str
    run_id: str
    openings: dict[str, Any] | None
    erased: dict[str, str] = Field(default_factory=dict, description='openings no longer readable: member -> "run" or "subject" (docs/storage.md)')


class Health(BaseModel):
    status: str
