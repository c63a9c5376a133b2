"""The per-producer chain rule is one pure function (rlhf_ledger.core.chain), and the appender
and `audit` use it: what append refuses, audit reports when it finds it stored."""

from __future__ import annotations

import pytest

from rlhf_ledger.core.chain import Break, chain_break
from rlhf_ledger.core.events import sha256_hex
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import BatchRejected, Ledger, audit
from tests.ledger.helpers import Producer

H1, H2 = "a" * 64, "b" * 64


def test_the_honest_chain_continues():
    assert chain_break(None, 0, None) is None
    assert chain_break((3, H1), 4, H1) is None


@pytest.mark.parametrize(("head", "seq", "prev", "kind", "expected"), [
    (None, 1, None, Break.FIRST_SEQ, 0),  # a first event that is not seq 0
    (None, 0, H1, Break.PREV, 0),  # a first event that claims a predecessor
    ((3, H1), 3, H1, Break.REPLAY, 4),  # the head's seq again: replay or fork
    ((3, H1), 1, H1, Break.REPLAY, 4),  # an older seq
    ((3, H1), 5, H1, Break.GAP, 4),  # skipping seq 4
    ((3, H1), 4, H2, Break.PREV, 4),  # seq continues, prev names another event
    ((3, H1), 4, None, Break.PREV, 4),
])
def test_each_break_is_named(head, seq, prev, kind, expected):
    brk = chain_break(head, seq, prev)
    assert brk is not None and brk.kind == kind and brk.expected_seq == expected and brk.message


def _id(env: dict) -> str:
    return sha256_hex(canonicalize(env["event"]))


def test_append_and_audit_apply_the_same_rule(tmp_path):
    ledger = Ledger.open(tmp_path / "data")
    try:
        ledger.init_log("default")
        p = Producer()
        ledger.register_producer("default", p.signer.public_key)
        ev = p.events(5)
        # Append refuses seq 0, 1, 3 (a gap) with the rule's own message ...
        with pytest.raises(BatchRejected) as err:
            ledger.append([ev[0], ev[1], ev[3]], log_id="default")
        gap = chain_break((1, _id(ev[1])), 3, ev[3]["event"]["prev"])
        assert gap is not None and gap.kind == Break.GAP
        [(pos, refused)] = err.value.errors
        assert pos == 2 and refused.code == "sequence_error" and refused.message == gap.message
        # ... and audit reports a break with the same rule when it finds one stored: the rows of
        # seq 1 and 2 swapped in place, as someone with write access to the database could.
        res = ledger.append(ev, log_id="default")
        assert audit(ledger, "default") == []
        a, b = res[1].index, res[2].index
        e = db.entries.c
        with ledger.engine.begin() as conn:
            conn.execute(db.entries.update().where(e.idx == a).values(idx=-1))
            conn.execute(db.entries.update().where(e.idx == b).values(idx=a))
            conn.execute(db.entries.update().where(e.idx == -1).values(idx=b))
        problems = audit(ledger, "default")
        at_a = chain_break((0, _id(ev[0])), 2, ev[2]["event"]["prev"])  # seq 2 right after seq 0: a gap
        at_b = chain_break((2, _id(ev[2])), 1, ev[1]["event"]["prev"])  # then seq 1 again: a replay
        assert at_a is not None and at_a.kind == Break.GAP and at_b is not None and at_b.kind == Break.REPLAY
        assert f"entry {a}: producer chain broken (seq 2, expected 1): {at_a.message}" in problems, problems
        assert f"entry {b}: producer chain broken (seq 1, expected 3): {at_b.message}" in problems, problems
    finally:
        ledger.close()
