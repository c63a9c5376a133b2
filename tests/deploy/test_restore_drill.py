"""Restore drill on real PostgreSQL and a real anvil chain: pg_dump a live log, append and
anchor more, restore the dump into a new database, start the real service on it.

No conflicting checkpoint is ever signed or anchored (the published-checkpoint record and the
chain's anchored root both stop it; /readyz, /metrics, submissions and the worker say why);
after `rlhf-ledger recover` with the producer's events the log is consistent with every
anchored checkpoint and anchors again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rlhf_ledger.anchoring.chain import ChainClient, log_id_for_origin
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.evidence import ANCHORED_TOPIC, decode_anchored_data
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.api.audit import ensure_audit_log
from rlhf_ledger.api.tokens import create_token
from rlhf_ledger.cli.main import main as cli
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger, audit
from tests.anchoring.conftest import FAST_RETRY, anvil, owner  # session anvil, fresh contract
from tests.conftest import PG_ADMIN_URL
from tests.deploy import service
from tests.ledger.helpers import Producer

LOG = "train"
pytestmark = [pytest.mark.anvil,
              pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                                 reason="pg_dump/pg_restore not installed")]


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _new_db() -> str:
    import uuid

    name = f"rlhf_drill_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop(url: str) -> None:
    name = urllib.parse.urlparse(_libpq(url)).path.lstrip("/")
    eng = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def _anchored_on_chain(c: ChainClient, origin: str) -> list[tuple[int, bytes]]:
    logs = c.rpc("eth_getLogs", [{"address": c.contract_address, "fromBlock": "0x0", "toBlock": "latest",
                                  "topics": ["0x" + ANCHORED_TOPIC.hex(), "0x" + log_id_for_origin(origin).hex()]}])
    out = []
    for lg in logs:
        size, root, _cid = decode_anchored_data(bytes.fromhex(lg["data"][2:]))
        out.append((size, root))
    return out


@pytest.fixture
def dbs():
    made: list[str] = []

    def make() -> str:
        made.append(_new_db())
        return made[-1]

    yield make
    for u in made:
        _drop(u)


def test_restored_dump_never_forks_and_recovers(anvil, owner, dbs, tmp_path):
    data = tmp_path / "data"
    live = dbs()
    lg = Ledger.open(data, live)
    lg.init_log(LOG, checkpoint_every_events=100_000)
    prod = Producer(LOG)
    lg.register_producer(LOG, prod.signer.public_key)  # the key event at index 0 (docs/keys.md)
    store = LocalContentStore(data / "content")
    chain = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address, retry=FAST_RETRY)
    worker = AnchorWorker(lg, chain, store, LOG, confirmations=1, issue_checkpoints=False, holder="drill")

    lg.append(prod.events(30), log_id=LOG)
    lg.checkpoint(LOG)
    assert worker.run_once().submitted == [31]
    dump = tmp_path / "ledger.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), _libpq(live)], check=True, timeout=60)  # the nightly backup

    lost = prod.events(20)
    lg.append(lost, log_id=LOG)
    cp51 = lg.checkpoint(LOG)
    assert worker.run_once().submitted == [51]
    worker.run_once()
    origin = lg.log_info(LOG).origin
    assert chain.latest(log_id_for_origin(origin)) == (51, cp51.root)
    lg.close()

    restored = dbs()
    subprocess.run(["pg_restore", "--no-owner", "-d", _libpq(restored), str(dump)], check=True, timeout=60)

    # The published record alone protects the restored log; a second data dir without it (a new
    # machine with only the keys) is protected by the chain alone.
    bare = tmp_path / "bare"
    lg2 = Ledger.open(data, restored)
    ensure_audit_log(lg2)  # the service's audit log, before the keys are copied ("only the keys": all of them)
    lg2.close()
    shutil.copytree(data / "keys", bare / "keys")
    chain_env = {"RLHF_CHAIN_RPC": anvil.rpc_url, "RLHF_ANCHOR_CONTRACT": owner.contract_address}
    lg2 = Ledger.open(data, restored)
    token, _ = create_token(lg2.tokens, "submitter", log_ids=[LOG], producer_key_ids=[prod.signer.key_id], run_ids=["*"])
    lg2.close()
    # Both services at once (independent processes on the same restored database; nothing
    # they do can change it: that is the point).
    started = [(service.launch(data_dir, restored, env), source)
               for data_dir, env, source in ((data, {}, "published checkpoint file"), (bare, chain_env, "chain"))]
    try:
        for svc, source in started:
            svc.wait_alive()
            r = httpx.get(svc.url + "/readyz", timeout=10)
            assert r.status_code == 503, r.text
            detail = r.json()["detail"]
            assert "holds 31 entries" in detail and "size 51" in detail and source in detail, detail
            metrics = httpx.get(svc.url + "/metrics", timeout=10).text
            assert f'ledger_log_signing_refused{{log_id="{LOG}"}} 1.0' in metrics
            # A producer with new events is refused (503: retry later), nothing stored.
            fresh = Producer(LOG, prod.signer)
            fresh.heads = dict(prod.heads)
            r = httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": fresh.events(1)},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 503 and r.json()["type"].endswith("signing_refused"), r.text
            assert "refusing to sign: log train" in svc.log()
    finally:
        for svc, _ in started:
            svc.stop()

    # The anchoring worker on the restored database: nothing new is signed or anchored.
    lg3 = Ledger.open(bare, restored)
    w3 = AnchorWorker(lg3, chain, store, LOG, confirmations=1, holder="drill")
    res = w3.run_once()
    assert res.leader and res.submitted == [] and any("size 51" in e for e in res.errors), res
    with lg3.engine.connect() as c:
        sizes = [r.size for r in c.execute(sa.select(db.checkpoints.c.size).where(db.checkpoints.c.log_id == LOG))]
    assert max(sizes) == 31  # no checkpoint signed over the restored tree
    assert chain.latest(log_id_for_origin(origin)) == (51, cp51.root)
    lg3.close()

    # Recovery: the producer re-sends its events (same signatures and ids) through `recover`.
    spool = tmp_path / "producer-events.jsonl"
    spool.write_text("".join(json.dumps(e) + "\n" for e in lost))
    old = {k: os.environ.get(k) for k in chain_env}
    os.environ.update(chain_env)
    try:
        r = CliRunner().invoke(cli, ["recover", "--data-dir", str(data), "--database-url", restored, "--log", LOG, str(spool)])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert r.exit_code == 0, r.output
    lg4 = Ledger.open(data, restored)
    assert lg4.fork_check(LOG) is None
    lg4.append(prod.events(5), log_id=LOG)
    cp56 = lg4.checkpoint(LOG)
    w4 = AnchorWorker(lg4, chain, store, LOG, confirmations=1, issue_checkpoints=False, holder="drill")
    assert w4.run_once().submitted == [56]  # the contract accepts it: consistent with 51
    anchored = _anchored_on_chain(chain, origin)
    assert [s for s, _ in anchored] == [31, 51, 56]
    for size, root in anchored:
        assert lg4.root(LOG, size) == root
    assert cp56.size == 56 and audit(lg4, LOG) == []
    lg4.close()
