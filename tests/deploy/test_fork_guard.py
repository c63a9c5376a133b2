"""Fork guard on SQLite: a database restored from an older backup signs nothing, appends
nothing, says why, and recovers only with the original events in the original order.
(The PostgreSQL pg_dump / chain drill is tests/deploy/test_restore_drill.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlhf_ledger.cli.main import main as cli
from rlhf_ledger.core import merkle
from rlhf_ledger.store.fork_guard import SigningRefused
from rlhf_ledger.store.ledger import Ledger, audit
from tests.ledger.helpers import Producer

LOG = "train"


def _open(data: Path) -> Ledger:
    return Ledger.open(data, f"sqlite:///{data / 'ledger.sqlite3'}")


@pytest.fixture
def restored(tmp_path):
    """(data dir, producer, events lost by the restore): backup after the producer's key event and
    20 events (size 21, not yet checkpointed), 30 more and a checkpoint of 51 signed afterwards,
    then the backup copied back over the database."""
    data = tmp_path / "data"
    lg = _open(data)
    lg.init_log(LOG, checkpoint_every_events=10_000)
    p = Producer(LOG)
    lg.register_producer(LOG, p.signer.public_key)
    lg.append(p.events(20), log_id=LOG)
    lg.close()
    shutil.copy(data / "ledger.sqlite3", tmp_path / "backup.sqlite3")  # WAL checkpointed at close
    lg = _open(data)
    lost = p.events(30)
    lg.append(lost, log_id=LOG)
    published = lg.checkpoint(LOG)
    lg.close()
    for suffix in ("", "-wal", "-shm"):
        (data / f"ledger.sqlite3{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.sqlite3", data / "ledger.sqlite3")
    return data, p, lost, published


def test_consistent_log_signs_and_records_what_it_published(tmp_path):
    lg = _open(tmp_path / "d")
    lg.init_log(LOG)
    p = Producer(LOG)
    lg.register_producer(LOG, p.signer.public_key)
    lg.append(p.events(5), log_id=LOG)
    cp = lg.checkpoint(LOG)
    assert lg.fork_check(LOG) is None
    ref = lg.fork_guard.published.newest(LOG, cp.origin, lg.log_info(LOG).public_key)
    assert (ref.size, ref.root) == (6, cp.root)  # the key event and five events
    lg.close()


def test_a_checkpoint_signed_inside_an_append_is_published_when_the_append_returns(tmp_path):
    """The size policy signs inside the append's transaction, and the service serves that
    checkpoint at once; the record must hold it before any sweep or probe runs, or a restore
    in between could sign a second history under it."""
    lg = _open(tmp_path / "d")
    info = lg.init_log(LOG, checkpoint_every_events=10)
    p = Producer(LOG)
    lg.register_producer(LOG, p.signer.public_key)
    lg.append(p.events(8), log_id=LOG)  # after the producer's key event (index 0): size 9
    assert lg.fork_guard.published.newest(LOG, info.origin, info.public_key).size == 0  # the empty tree, at init
    lg.append(p.events(1), log_id=LOG)  # the 10th entry: the append signs a checkpoint of 10
    ref = lg.fork_guard.published.newest(LOG, info.origin, info.public_key)
    assert ref is not None and (ref.size, ref.root) == (10, lg.latest_checkpoint(LOG).root)
    lg.close()


def test_restored_database_refuses_to_sign_and_append(restored):
    data, p, lost, published = restored
    lg = _open(data)
    why = lg.fork_check(LOG)
    assert why is not None and "holds 21 entries" in why and "size 51" in why and "rlhf-ledger recover" in why
    assert "\n" not in why
    with pytest.raises(SigningRefused):  # the tree of 21 would be a second history
        lg.checkpoint(LOG)
    assert lg.maybe_checkpoint(LOG, now=1e12) is None
    assert lg.latest_checkpoint(LOG).size == 0
    # A new entry would take index 21, which the published checkpoint gives to another one: an
    # event, and a registration too (it is a key event of the log, docs/keys.md).
    with pytest.raises(SigningRefused):
        lg.register_producer(LOG, Producer(LOG).signer.public_key)
    with pytest.raises(SigningRefused):
        lg.append(Producer(LOG, signer=p.signer).events(1, run_id="run-2"), log_id=LOG)
    assert lg.size(LOG) == 21
    lg.close()


def test_recover_with_original_events_restores_the_published_tree(restored, tmp_path):
    data, p, lost, published = restored
    spool = tmp_path / "spool.jsonl"
    spool.write_text("".join(json.dumps(e) + "\n" for e in lost))
    r = CliRunner().invoke(cli, ["recover", "--data-dir", str(data), "--database-url",
                                 f"sqlite:///{data / 'ledger.sqlite3'}", "--log", LOG, str(spool)])
    assert r.exit_code == 0, r.output
    assert "size 21 -> 51" in r.output
    lg = _open(data)
    assert lg.fork_check(LOG) is None
    assert lg.root(LOG, 51) == published.root
    cp = lg.checkpoint(LOG)
    assert cp.size == 51 and cp.root == published.root
    assert audit(lg, LOG) == []
    lg.close()


def test_recover_refuses_an_order_that_forks_and_appends_nothing(restored, tmp_path):
    data, p, lost, published = restored
    spool = tmp_path / "spool.jsonl"
    spool.write_text("".join(json.dumps(e) + "\n" for e in lost[:29]))  # one event short
    args = ["recover", "--data-dir", str(data), "--database-url", f"sqlite:///{data / 'ledger.sqlite3'}", "--log", LOG, str(spool)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "only 29 events" in r.output
    lg = _open(data)
    assert lg.size(LOG) == 21
    lg.close()


def test_forked_history_is_reported_inconsistent(tmp_path):
    """The attack: after a restore, different events were stored at the published indices
    (here by a ledger without the guard). The guard names it inconsistent; recovery is refused."""
    data = tmp_path / "data"
    lg = _open(data)
    lg.init_log(LOG, checkpoint_every_events=10_000)
    p = Producer(LOG)
    lg.register_producer(LOG, p.signer.public_key)
    lg.append(p.events(3), log_id=LOG)
    lg.close()
    shutil.copy(data / "ledger.sqlite3", tmp_path / "b.sqlite3")
    lg = _open(data)
    lost = p.events(4)
    lg.append(lost, log_id=LOG)
    lg.checkpoint(LOG)
    lg.close()
    for suffix in ("", "-wal", "-shm"):
        (data / f"ledger.sqlite3{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "b.sqlite3", data / "ledger.sqlite3")
    lg = _open(data)
    guard, lg.fork_guard = lg.fork_guard, None  # an unguarded writer forks the restored log
    q = Producer(LOG)
    lg.register_producer(LOG, q.signer.public_key)
    lg.append(q.events(6), log_id=LOG)
    lg.fork_guard = guard
    why = lg.fork_check(LOG)
    assert why is not None and "another root" in why
    with pytest.raises(SigningRefused):
        lg.checkpoint(LOG)
    lg.close()


def test_published_record_only_advances(tmp_path):
    from rlhf_ledger.store.fork_guard import PublishedCheckpoints

    pc = PublishedCheckpoints(tmp_path)
    key = b"\x01" * 32
    assert pc.record("l", key, 5, merkle.EMPTY_ROOT, "n5")
    assert not pc.record("l", key, 3, merkle.EMPTY_ROOT, "n3")
    assert pc.newest("l", "o", key).size == 5
    assert pc.newest("l", "o", b"\x02" * 32) is None  # another log key: another log
    pc.path("l", key).write_text("{not json")
    with pytest.raises(SigningRefused):
        pc.newest("l", "o", key)
