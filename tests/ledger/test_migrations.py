"""Schema migrations on both backends: 0003 (entries.event_key) upgrades a populated 0002
database in place and downgrades back, and the ledger works the same afterwards."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from ledger import db
from ledger.migrate import alembic_config
from ledger.errors import NotFoundError
from ledger.store import BatchRejected, audit
from tests.ledger.helpers import Producer


def _migrate(engine: sa.Engine, fn, revision: str) -> None:
    cfg = alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, revision)
        conn.commit()


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("entries")}


def test_event_key_migration_round_trip(ledger):
    ledger.init_log("default", checkpoint_every_events=10)
    p, q = Producer(), Producer()
    for x in (p, q):
        ledger.register_producer("default", x.signer.public_key)
    first = ledger.append(p.events(7) + q.events(6, run_id="run-2"))
    ledger.engine.dispose()

    _migrate(ledger.engine, command.downgrade, "0002")
    assert "event_key" not in _columns(ledger.engine)
    uniques = {u["name"] for u in sa.inspect(ledger.engine).get_unique_constraints("entries")}
    assert "uq_entries_event" in uniques
    _migrate(ledger.engine, command.upgrade, "head")
    assert "event_key" in _columns(ledger.engine)
    uniques = {u["name"] for u in sa.inspect(ledger.engine).get_unique_constraints("entries")}
    assert "uq_entries_event" not in uniques

    with ledger.engine.connect() as c:
        rows = c.execute(sa.select(db.entries.c.event_id, db.entries.c.event_key)).all()
    assert len(rows) == 13 and all(k == db.event_key(e) for e, k in rows)
    for r in first:
        assert ledger.find_event("default", r.event_id).idx == r.index
    # the log goes on: resubmission answered, new events appended, forks refused, audit clean
    again = ledger.append([ledger_envelope(ledger, first[3].index)])
    assert again[0].duplicate and again[0].index == first[3].index
    more = ledger.append(p.events(3))
    assert [r.index for r in more] == [13, 14, 15]
    ledger.checkpoint("default")
    assert audit(ledger, "default") == []


def ledger_envelope(ledger, index: int) -> dict:
    import json

    return json.loads(bytes(ledger.get_entry("default", index).entry))


def test_resubmission_and_forks_are_found_without_an_event_id_index(ledger):
    ledger.init_log("default")
    p = Producer()
    ledger.register_producer("default", p.signer.public_key)
    evs = p.events(5)
    ledger.append(evs[:3])
    # already stored (seq <= head) and new ones in one batch: positions answered, rest appended
    res = ledger.append(evs[1:])
    assert [(r.index, r.duplicate) for r in res] == [(1, True), (2, True), (3, False), (4, False)]
    # another event at a stored seq, signed by the same key, is a fork
    fork = Producer(signer=p.signer)
    fork.events(2)
    with pytest.raises(BatchRejected) as ei:
        ledger.append([fork.event(body={"step": 99})])  # seq 2 again, other content
    assert ei.value.errors[0][1].code == "conflict"
    assert ledger.find_event("default", res[3].event_id).idx == 4
    with pytest.raises(NotFoundError, match="64 hex"):
        ledger.find_event("default", "not-an-id")


def test_run_index_migration_backfills_ended_runs(ledger):
    """0004 on a populated 0003 log: runs already closed by a run.end stay closed after upgrade."""
    ledger.init_log("default", checkpoint_every_events=1000)
    p = Producer()
    ledger.register_producer("default", p.signer.public_key)
    ledger.append([p.event("r1", "run.start", {}), p.event("r1", "run.end", {}), p.event("r2")])
    ledger.engine.dispose()
    _migrate(ledger.engine, command.downgrade, "0003")
    assert "ended_runs" not in sa.inspect(ledger.engine).get_table_names()
    _migrate(ledger.engine, command.upgrade, "head")
    with ledger.engine.connect() as c:
        assert c.execute(sa.select(db.ended_runs.c.run_id, db.ended_runs.c.end_idx)).all() == [("r1", 1)]
    with pytest.raises(BatchRejected) as exc:
        ledger.append([p.event("r1")])
    assert exc.value.errors[0][1].code == "run_ended"
    assert ledger.append([p.event("r2")])[0].index == 3
