"""End-to-end cost of auditing on the demo's RLHF training loop (ledger/demo_rlhf.py).

    .venv/bin/python benchmarks/audit_overhead.py [--steps small|default] [--repeats 3]

The same loop with the same seeds runs twice per repeat, alternating the order:
  * baseline: every recorder call goes to NullRecorder (nothing recorded);
  * audited: the SDK Run (spool fsync "batch", signing on the sender thread) delivering through
    LocalSink into a real embedded ledger (SQLite, WAL) in a temporary directory, as the demo does;
    the reward-model save, evaluation, bias examination and compute events are recorded too.
Both write the same safetensors checkpoints. Anchoring is not on this path (the worker runs
beside the ledger, not in the training process), so it is not measured here.

Printed side by side: mean wall time per reward-model step and per policy step, the whole loop,
the training thread's CPU time for the loop
(insensitive to other load on a shared machine), the overhead in percent (median over repeats), the
time spent inside each recorder call, the events recorded, and the time
the audited run then waits at run.end for the last acknowledgements (not training time). A check
that auditing does not change training: the final policy weights digest must be identical.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.demo import rlhf as rl
from rlhf_ledger.sdk import LocalSink, Run, weights_digest
from rlhf_ledger.store.ledger import Ledger


class Timed:
    """Wraps a recorder and sums the wall time spent inside each of its methods (training thread)."""

    def __init__(self, inner: object) -> None:
        self.inner, self.spent = inner, {}

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        fn = getattr(self.inner, name)
        if not callable(fn):
            return fn

        def timed(*args, **kw):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t
        return timed


def one_pass(cfg: rl.Config, audited: bool, work: Path) -> dict:
    models = rl.build_models(cfg)
    pairs = rl.annotate(models.base, cfg.n_pairs, cfg.annotation_batch, cfg.seed)
    train, heldout = cfg.split(pairs)
    ckpt = work / ("ckpt-audited" if audited else "ckpt-baseline")
    ckpt.mkdir(exist_ok=True)
    counters: dict[str, int] = {}
    ledger = run = None
    if audited:
        ledger = Ledger.open(work / "ledger", f"sqlite:///{work / 'ledger' / 'ledger.sqlite3'}", passphrase="benchmark-only")
        log_id = f"bench-{os.getpid()}-{time.monotonic_ns()}"
        ledger.init_log(log_id, checkpoint_every_events=100_000)
        signer = Signer.generate()
        ledger.register_producer(log_id, signer.public_key)
        run = Run(log_id=log_id, run_id="bench", signer=signer, sink=LocalSink(ledger.append), method="rloo",
                  hyperparameters=cfg.hyperparameters(), base_model={"name": "toy", "weights_digest": weights_digest(models.base).digest},
                  declared={"privacy_budget": {"epsilon": 50.0, "delta": cfg.dp_delta}}, model=models.policy,
                  pseudonym_key=os.urandom(32), spool_dir=work / f"spool-{log_id}")
        run.start()
    rec = Timed(run if run is not None else rl.NullRecorder())
    c0, t0 = time.thread_time(), time.perf_counter()
    rl.record_annotations(rec, pairs, cfg.annotation_batch)
    t1 = time.perf_counter()
    rl.train_reward_model(models.rm, train, cfg, rec, counters)
    if run is not None:
        wd = weights_digest(models.rm)
        run.event("reward_model.save", {"step": cfg.rm_steps, "weights_digest": wd.digest, "tensor_root": wd.tensor_root})
    t2 = time.perf_counter()
    rl.train_policy(models.policy, models.ref, models.rm, cfg, rec, counters, checkpoint_dir=ckpt)
    t3 = time.perf_counter()
    metrics = rl.evaluate(models.policy, models.ref, models.rm, heldout, cfg.seed + 3)
    bias, findings = rl.bias_examination(models.policy, models.rm, heldout, cfg.seed + 4)
    if run is not None:
        run.evaluation("policy-vs-reference", metrics, step=cfg.policy_steps)
        run.bias_examination("phrasing-group-parity", bias, findings)
        run.compute_usage("cpu", t3 - t0, flops=rl.flops_estimate(models, counters))
    t4, c4 = time.perf_counter(), time.thread_time()
    events = 0
    if run is not None:
        run.end("completed")
        events = ledger.size(run.log_id)  # type: ignore[union-attr]
        ledger.close()  # type: ignore[union-attr]
    t5 = time.perf_counter()
    return {"annotations": t1 - t0, "rm": t2 - t1, "policy": t3 - t2, "loop": t4 - t0, "loop_cpu": c4 - c0, "drain": t5 - t4,
            "events": events, "digest": weights_digest(models.policy).digest, "calls": rec.spent}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", choices=("small", "default"), default="default")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    torch.set_num_threads(1)  # as the demo
    cfg = rl.Config.small() if a.steps == "small" else rl.Config()
    base: list[dict] = []
    aud: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="audit-overhead-") as tmp:
        one_pass(cfg, False, Path(tmp))  # warm-up (imports, allocator, first SQLite open)
        for i in range(a.repeats):
            order = (False, True) if i % 2 == 0 else (True, False)
            for audited in order:
                (aud if audited else base).append(one_pass(cfg, audited, Path(tmp)))
    same = {r["digest"] for r in base + aud}
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    rows = [("reward-model step (DP-SGD)", "rm", cfg.rm_steps), ("policy step (RLOO + KL)", "policy", cfg.policy_steps),
            ("annotation batches", "annotations", -(-cfg.n_pairs // cfg.annotation_batch)), ("whole loop (wall)", "loop", 1),
            ("whole loop (training-thread CPU)", "loop_cpu", 1)]
    print(f"audit overhead on the demo's training loop ({a.steps}: {cfg.rm_steps} reward-model steps, "
          f"{cfg.policy_steps} policy steps; torch {torch.__version__}, 1 thread; {os.cpu_count()} cores; "
          f"median of {a.repeats} repeats)")
    print(f"{'':<34}{'baseline':>14}{'audited':>14}{'overhead':>11}")
    for name, key, n in rows:
        b, x = med(base, key) / n, med(aud, key) / n
        unit, scale = ("ms", 1e3) if n > 1 else ("s", 1.0)
        print(f"{name:<34}{b * scale:>11.3f} {unit:<2}{x * scale:>11.3f} {unit:<2}{(x - b) / b * 100:>+10.1f}%")
    print("(wall time includes the sender thread's signing and SQLite appends competing for the 2 cores, and any other\n"
          " load on a shared machine; training-thread CPU is the work added to the training thread itself)")
    names = sorted({k for r in aud for k in r["calls"]})
    print("time inside recorder calls on the training thread, whole loop (audited; baseline NullRecorder):")
    for k in names:
        print(f"  {k:<26}{statistics.median(r['calls'].get(k, 0.0) for r in base) * 1e3:>11.1f} ms"
              f"{statistics.median(r['calls'].get(k, 0.0) for r in aud) * 1e3:>13.1f} ms")
    print(f"events recorded (audited): {int(med(aud, 'events'))}; wait at run.end for the last acknowledgements: "
          f"{med(aud, 'drain') * 1e3:.0f} ms (after training)")
    print(f"final policy weights identical with and without auditing: {'yes' if len(same) == 1 else 'NO'}")
    return 0 if len(same) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
