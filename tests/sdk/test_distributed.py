"""A real `torchrun --nproc_per_node 2` job (CPU, gloo) with TRL's DPOTrainer on a tiny local model,
delivering over HTTP to the real API (uvicorn): the run is recorded once and verifies; and the old
failure mode (every rank recording the run with one key) is refused by name, not left to corrupt
the run. Each rank process is torchrun's own (tests/sdk/torchrun_dpo_worker.py)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
api_conftest = pytest.importorskip("tests.api.conftest")

from rlhf_ledger.core.keys import Signer  # noqa: E402

from .helpers import check_chains  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("torchrun_dpo_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(mode: str, cfg: dict, tmp: Path, timeout: float = 240) -> list[dict]:
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp / f"cfg-{mode}.json"
    cfg_path.write_text(json.dumps(cfg))
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    p = subprocess.run([exe, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        str(WORKER), mode, str(cfg_path)], env=env, cwd=str(tmp), capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-5000:])
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)], p.stderr


def setup_log(srv, n_rank_keys: int = 2):
    log_id = "dist-" + secrets.token_hex(3)
    admin = srv.client(srv.admin_token)
    assert admin.post("/v1/logs", json={"log_id": log_id}).status_code == 201
    run_seed = secrets.token_bytes(32)
    run_key = Signer.from_seed(run_seed)
    rank_seeds = [secrets.token_bytes(32) for _ in range(n_rank_keys)]
    signers = [run_key, *(Signer.from_seed(x) for x in rank_seeds)]
    for s in signers:
        r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(s.public_key).decode()})
        assert r.status_code == 201, r.text
    r = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [s.key_id for s in signers], "run_ids": ["*"]})
    return log_id, r.json()["token"], run_key, run_seed, rank_seeds, signers


@pytest.fixture
def api_server(tmp_path):
    srv = api_conftest.start_server(tmp_path / "api", None, env={"RLHF_API_RATE": "0"})
    yield srv
    srv.stop()


def _events(srv, log_id: str, run_id: str) -> list[dict]:
    from rlhf_ledger.store.ledger import Ledger

    ledger = Ledger.open(str(srv.data_dir))
    try:
        return [json.loads(e.entry)["event"] for e in ledger.iter_entries(log_id, run_id=run_id)]
    finally:
        ledger.close()


def test_torchrun_two_ranks_record_one_clean_run_that_verifies(tmp_path, api_server):
    srv = api_server
    log_id, token, run_key, run_seed, rank_seeds, signers = setup_log(srv)
    cfg = {"url": srv.url, "token": token, "log_id": log_id, "run_id": "dpo-ddp", "run_key": run_seed.hex(),
           "rank_keys": [x.hex() for x in rank_seeds], "spool": str(tmp_path / "spool"), "out": str(tmp_path / "out")}
    ranks, _ = torchrun("clean", cfg, tmp_path)
    assert [r["active"] for r in ranks] == [True, False]  # world process zero records the run
    assert ranks[0]["manages_run"] is False  # the user started it; the callback joined
    events = _events(srv, log_id, "dpo-ddp")
    check_chains(events)
    by_type: dict[str, list[dict]] = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
    assert len(by_type["run.start"]) == 1 and len(by_type["run.end"]) == 1 and events[-1]["type"] == "run.end"
    assert by_type["run.start"][0]["body"]["world_size"] == 2
    assert len(by_type["annotation.batch"]) == 4  # the old failure recorded 8
    assert [p["body"]["step"] for p in by_type["policy.update"]] == [1, 2]  # rank 0's trainer log only
    run_level = {e["producer"] for e in events if e["type"] != "compute.usage" or "rank" not in e["body"]}
    assert run_level == {run_key.key_id}
    usage = [e for e in by_type["compute.usage"] if "rank" in e["body"]]
    assert sorted((e["body"]["rank"], e["producer"]) for e in usage) == [(0, signers[1].key_id), (1, signers[2].key_id)]
    assert all(e["body"]["world_size"] == 2 for e in usage)
    assert by_type["trainer.config"][0]["body"]["hyperparameters"]["beta"] == 0.2

    # the run's bundle verifies with the verifier: nothing is anchored, so the log key is pinned;
    # the producer keys and their registration come from the log's key events
    vkey = srv.client().get(f"/v1/logs/{log_id}").json()["vkey"]
    srv.stop()
    bundle = tmp_path / "run.rlhfbundle.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLHF_LEDGER_PASSPHRASE": api_conftest.PASSPHRASE}
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "rlhf-ledger"), "checkpoint", "--data-dir", str(srv.data_dir), "--log", log_id],
                   env=env, check=True, capture_output=True, timeout=120)
    p = subprocess.run([str(bin_dir / "rlhf-ledger"), "export", "--data-dir", str(srv.data_dir), "--log", log_id,
                        "--run", "dpo-ddp", "-o", str(bundle)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    args = [str(bin_dir / "rlhf-verify"), str(bundle), "--log-key", vkey, "--json", "--no-progress"]
    v = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout[-3000:] + v.stderr[-3000:]
    report = json.loads(v.stdout)
    assert report["verdict"] == "valid" and report["integrity"] == "valid" and not report["findings"]
    assert report["counts"]["events"] == report["counts"]["events_valid"] == len(events)
    assert report["counts"]["producer_chains"] == 3  # the run key and one key per rank
    assert sorted(report["trusted"]["producer_keys"]) == sorted(s.key_id for s in signers)
    assert report["completeness"]["status"] == "proven" and report["completeness"]["ended"] is True
    assert sorted((k["key_id"], k["registered_at_index"]) for k in report["producer_keys"]) == sorted(
        (s.key_id, i) for i, s in enumerate(signers))  # each registered by its key event, in order


def test_old_failure_one_spool_two_ranks_is_refused_at_once(tmp_path, api_server):
    log_id, token, run_key, run_seed, rank_seeds, _ = setup_log(api_server)
    cfg = {"url": api_server.url, "token": token, "log_id": log_id, "run_id": "dpo-old", "run_key": run_seed.hex(),
           "rank_keys": [x.hex() for x in rank_seeds], "spool": str(tmp_path / "spool"), "out": str(tmp_path / "out")}
    ranks, _ = torchrun("same_spool", cfg, tmp_path, timeout=120)
    assert ranks[0]["error"] is None
    assert ranks[1]["error"] == "SpoolLockedError" and ranks[1]["code"] == "spool_locked"
    assert "in use by process" in ranks[1]["message"] and "rank 0" in ranks[1]["message"]
    events = _events(api_server, log_id, "dpo-old")
    check_chains(events)
    assert [e["type"] for e in events].count("annotation.batch") == 4


def test_old_failure_one_key_two_spools_names_the_ledgers_refusal(tmp_path, api_server):
    log_id, token, run_key, run_seed, rank_seeds, _ = setup_log(api_server)
    cfg = {"url": api_server.url, "token": token, "log_id": log_id, "run_id": "dpo-old2", "run_key": run_seed.hex(),
           "rank_keys": [x.hex() for x in rank_seeds], "spool": str(tmp_path / "spool"), "out": str(tmp_path / "out")}
    ranks, stderr = torchrun("same_key", cfg, tmp_path, timeout=120)
    errors = [r for r in ranks if r["error"]]
    assert len(errors) == 1, ranks  # one rank's chain is accepted, the other is refused by name
    e = errors[0]
    assert e["error"] == "ChainConflictError", e
    assert "already used" in e["message"] and "Another process is writing this producer's chain" in e["message"]
    assert "HTTP 422" in e["message"] and "rank 0 only" in e["message"]
    assert "delivery of run dpo-old2" in stderr  # printed when it happened
    events = _events(api_server, log_id, "dpo-old2")
    check_chains(events)
    assert len({e["producer"] for e in events}) == 1
