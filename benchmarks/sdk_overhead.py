"""Per-event cost of the SDK on the training thread, beside two baselines; and the fsync lag.

    .venv/bin/python benchmarks/sdk_overhead.py [--events 20000]

Measures, per call, with time.perf_counter_ns around each call:
  * a bare Python function call with the same arguments (the floor),
  * run.policy_update(...) (fsync="batch": journal write on this thread; prev/sign/fsync/deliver
    on the sender thread), delivering to an in-process sink that acknowledges with the real
    event ids (no network, so the sender competes for the GIL at full speed),
  * the same with fsync="always" (an fsync inside every call),
  * the synchronous design: build + sign + append one envelope line + fsync, on this thread.
Then, for fsync="batch", the time from each call's return until a group-commit fsync covered
its line (what could be lost on power loss; a process crash loses nothing once the call
returned). Target: policy_update median <= 20 us.

Distributed (--http-events N, 0 to skip): the real API (uvicorn, SQLite) on loopback; first one
process recording N events over HTTP (training-thread cost, end-to-end delivery rate = N / time
from the first call until all are acknowledged), then a real `torchrun --nproc_per_node 2` job
(tests/sdk/torchrun_dpo_worker.py bench) where each rank records N rank-local events under its
own key (RankRecorder) at the same time, and rank 0 then N run events: per-rank cost and rate,
beside the single-process figures of the same run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_ledger.core.events import make_event, sign_event, validate_event
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import LocalSink, Run


class AckingAppend:
    """In-process acknowledgement with the event ids a ledger would compute (benchmark only)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, envs):
        out = []
        for e in envs:
            raw = validate_event(e["event"])
            out.append({"index": self.n, "event_id": hashlib.sha256(raw).hexdigest(), "leaf_hash": base64.b64encode(b"\0" * 32).decode(), "duplicate": False})
            self.n += 1
        return out


def stats(ns: list[int]) -> str:
    us = sorted(x / 1000 for x in ns)
    p99 = us[int(len(us) * 0.99) - 1]
    return f"median {statistics.median(us):8.2f} us   p99 {p99:8.2f} us   mean {statistics.fmean(us):8.2f} us"


def bare(step, loss, kl, reward_mean, reward_std, grad_norm, param_delta_norm=None):
    return None


def time_calls(fn, n: int) -> list[int]:
    out = []
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        fn(i, 0.5 + i * 1e-6, 0.01, 0.2, 0.05, 1.3, param_delta_norm=0.001)
        out.append(pc() - t0)
    return out


def sdk_run(tmp: Path, fsync: str, n: int) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    s = Signer.generate()
    run = Run(log_id="bench", run_id=f"run-{fsync}", signer=s, sink=LocalSink(AckingAppend()), method="ppo",
              hyperparameters={"lr": 1e-6}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
              spool_dir=tmp / fsync, fsync=fsync)
    run.start()
    syncs: list[tuple[int, int]] = []  # (time the fsync completed, last seq it covered)
    journal = run.journal
    orig_sync = journal.sync

    def traced_sync():
        covered = journal.next_seq - 1
        orig_sync()
        syncs.append((time.perf_counter_ns(), covered))

    journal.sync = traced_sync  # type: ignore[method-assign]
    returns: list[tuple[int, int]] = []
    pc = time.perf_counter_ns
    times = []
    for i in range(n):
        t0 = pc()
        seq = run.policy_update(i, 0.5 + i * 1e-6, 0.01, 0.2, 0.05, 1.3, param_delta_norm=0.001)
        t1 = pc()
        times.append(t1 - t0)
        returns.append((t1, seq))
    run.end("completed", timeout=300)
    return times, returns, syncs


def sync_design(tmp: Path, n: int) -> list[int]:
    s = Signer.generate()
    fd = os.open(tmp / "sync.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    prev = None
    out = []
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        body = {"step": i, "loss": 0.5 + i * 1e-6, "kl": 0.01, "reward_mean": 0.2, "reward_std": 0.05,
                "grad_norm": 1.3, "param_delta_norm": 0.001}
        ev = make_event(log_id="bench", run_id="sync", type="policy.update", producer=s.key_id, seq=i, prev=prev, body=body)
        env = sign_event(ev, s)
        prev = hashlib.sha256(validate_event(ev)).hexdigest()
        os.write(fd, (json.dumps(env) + "\n").encode())
        os.fsync(fd)
        out.append(pc() - t0)
    os.close(fd)
    return out


def fsync_lag(returns, syncs) -> list[int]:
    lag, j = [], 0
    for t_ret, seq in returns:
        while j < len(syncs) and (syncs[j][1] < seq or syncs[j][0] < t_ret):
            j += 1
        if j < len(syncs):
            lag.append(syncs[j][0] - t_ret)
    return lag


def distributed(tmp: Path, n: int) -> None:
    """Single process vs two torchrun ranks, both delivering over HTTP to the real API."""
    import base64
    import secrets
    import shutil
    import socket
    import subprocess

    root = Path(__file__).resolve().parents[1]
    from rlhf_ledger.sdk import HttpSink
    from tests.api.conftest import start_server

    srv = start_server(tmp / "api", None, env={"RLHF_API_RATE": "0"})
    try:
        admin = srv.client(srv.admin_token)
        admin.post("/v1/logs", json={"log_id": "bench"}).raise_for_status()
        seeds = [secrets.token_bytes(32) for _ in range(4)]
        signers = [Signer.from_seed(x) for x in seeds]
        for sg in signers:
            admin.post("/v1/logs/bench/producers", json={"public_key": base64.b64encode(sg.public_key).decode()}).raise_for_status()
        r = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": ["bench"], "run_ids": ["*"],
                                           "producer_key_ids": [sg.key_id for sg in signers]})
        r.raise_for_status()
        token = r.json()["token"]
        # one process, over HTTP
        run = Run(log_id="bench", run_id="single", signer=signers[3], sink=HttpSink(srv.url, token, "bench"), method="ppo",
                  hyperparameters={"lr": 1e-6}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
                  spool_dir=tmp / "single")
        run.start()
        run.flush(60)
        pc = time.perf_counter_ns
        times = []
        t0 = time.perf_counter()
        for i in range(n):
            a = pc()
            run.policy_update(i, 0.5, 0.01, 0.1, 0.02, 1.0, param_delta_norm=0.0)
            times.append(pc() - a)
        run.flush(600)
        rate = n / (time.perf_counter() - t0)
        run.end()
        print(f"{'1 process, HTTP: run.policy_update':42s} {stats(times)}   delivered {rate:8.0f} ev/s")
        # two ranks under torchrun
        out = tmp / "ranks"
        out.mkdir()
        cfg = {"url": srv.url, "token": token, "log_id": "bench", "run_id": "ddp", "run_key": seeds[0].hex(),
               "rank_keys": [seeds[1].hex(), seeds[2].hex()], "spool": str(tmp / "spool"), "out": str(out), "events": n}
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
        t0 = time.perf_counter()
        p = subprocess.run([exe, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
                            str(root / "tests" / "sdk" / "torchrun_dpo_worker.py"), "bench", str(tmp / "cfg.json")],
                           env=env, capture_output=True, text=True, timeout=1200)
        if p.returncode != 0:
            raise SystemExit(f"torchrun failed: {p.stderr[-3000:]}")
        for rank in (0, 1):
            res = json.loads((out / f"rank{rank}.json").read_text())
            rr = res["rank_recorder"]
            print(f"{f'2 ranks, rank {rank}: RankRecorder (both at once)':42s} median {rr['ns'] / 1000:8.2f} us   "
                  f"p99 {rr['p99'] / 1000:8.2f} us   delivered {rr['delivered_per_s']:8.0f} ev/s")
            if "run" in res:
                rn = res["run"]
                print(f"{f'2 ranks, rank {rank}: run.policy_update':42s} median {rn['ns'] / 1000:8.2f} us   "
                      f"p99 {rn['p99'] / 1000:8.2f} us   delivered {rn['delivered_per_s']:8.0f} ev/s")
        print(f"torchrun job wall time {time.perf_counter() - t0:.1f} s (start-up, 2 x {n} + {n} events)")
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--sync-events", type=int, default=2000)
    ap.add_argument("--http-events", type=int, default=5000, help="events per recorder in the HTTP/torchrun cases (0: skip)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        tmp = Path(d)
        print(f"{a.events} calls per case; spool on {tmp} ({os.cpu_count()} cpus)")
        print(f"{'bare Python call':42s} {stats(time_calls(bare, a.events))}")
        t_batch, returns, syncs = sdk_run(tmp, "batch", a.events)
        print(f"{'run.policy_update, fsync=batch':42s} {stats(t_batch)}")
        t_always, _, _ = sdk_run(tmp, "always", a.sync_events)
        print(f"{'run.policy_update, fsync=always':42s} {stats(t_always)}")
        print(f"{'synchronous sign + fsync append':42s} {stats(sync_design(tmp, a.sync_events))}")
        lag = fsync_lag(returns, syncs)
        print(f"{'fsync=batch: return -> covered by fsync':42s} {stats(lag)}  ({len(syncs)} group commits)")
        med = statistics.median(t_batch) / 1000
        print(f"target: policy_update median <= 20 us -> {'MET' if med <= 20 else 'NOT MET'} ({med:.2f} us)")
        if a.http_events:
            distributed(tmp, a.http_events)


if __name__ == "__main__":
    main()
