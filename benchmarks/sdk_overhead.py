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

from ledger.events import make_event, sign_event, validate_event  # noqa: E402
from ledger.keys import Signer  # noqa: E402
from ledger.sdk import LocalSink, Run  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--sync-events", type=int, default=2000)
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


if __name__ == "__main__":
    main()
