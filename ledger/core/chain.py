"""The per-producer chain rule (docs/event-format.md, "Acceptance rules", rule 5): within a run,
a producer's events carry seq 0, 1, 2, ... and each `prev` is the event id of the one before.

One pure function, used by the appender (to refuse an event) and by `audit` (to report a stored
event that breaks its chain), so the two can never disagree about what continues a chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Head = tuple[int, str]  # (seq, event id) of the producer's last event in the run


class Break(StrEnum):
    FIRST_SEQ = "first_seq"  # no head yet, seq is not 0
    REPLAY = "replay"  # seq at or below the head: a replay or a fork
    GAP = "gap"  # seq skips past head + 1
    PREV = "prev"  # seq continues, prev is not the head's event id


@dataclass(frozen=True)
class ChainBreak:
    kind: Break
    expected_seq: int
    message: str


def chain_break(head: Head | None, seq: int, prev: str | None) -> ChainBreak | None:
    """Why an event (seq, prev) does not continue the chain whose last event is `head` (None:
    the producer has no event in the run yet); None when it does."""
    if head is None:
        if seq != 0:
            return ChainBreak(Break.FIRST_SEQ, 0, f"the producer's first event in a run must have seq 0, got {seq}")
        if prev is not None:
            return ChainBreak(Break.PREV, 0, "the producer's first event in a run must have prev null")
        return None
    last_seq, last_hash = head
    if seq <= last_seq:
        return ChainBreak(Break.REPLAY, last_seq + 1,
                          f"seq {seq} is already used by another event of this producer in this run (replay or fork)")
    if seq != last_seq + 1:
        return ChainBreak(Break.GAP, last_seq + 1, f"sequence gap: expected seq {last_seq + 1}, got {seq}")
    if prev != last_hash:
        return ChainBreak(Break.PREV, last_seq + 1, "prev is not the hash of the producer's previous event")
    return None
