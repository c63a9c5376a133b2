"""Per-event checks against what the chain proves about time and coverage (docs/verifier.md,
"Anchors and coverage" and "Clocks and revocation").

An event's `ts` is the producer's claim. The only time the verifier can prove is the block
time of a confirmed anchor whose checkpoint covers the event: the event was in the log no
later than that block. So:
- with a pinned chain every event must be under a confirmed anchor (unless --allow-unanchored);
- an event dated after its covering anchor's block time (beyond --max-clock-skew) is a finding.
Revocation is judged by log position, never by time (worker.py, docs/keys.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .verify import Verifier


def event_findings(v: Verifier, index: int | None, producer: str, ts: float, delay: float | None,
                   anchored: bool) -> list[tuple[str, str]]:
    """(check, message) findings for one event; `delay` = covering confirmed anchor's block time
    minus the event time (None: no confirmed anchor covers it)."""
    out: list[tuple[str, str]] = []
    o = v.o
    if v.chain_pinned and not o.allow_unanchored and not anchored:
        out.append(("anchor.coverage", "not under a confirmed anchored checkpoint (a chain is pinned; "
                                       "--allow-unanchored accepts this)"))
    if delay is not None and -delay > o.max_clock_skew:
        out.append(("clock", f"event time (producer's claim) is {-delay:.0f}s after the block time of the anchor "
                             f"that covers it (allowed skew {o.max_clock_skew:g}s)"))
    return out
