"""One rank of a real `torchrun --nproc_per_node 2` job (CPU, gloo), run by test_distributed.py and by
benchmarks/sdk_overhead.py. Every rank runs the same script, as users write them.

    torchrun --nproc_per_node 2 tests/sdk/torchrun_dpo_worker.py MODE CONFIG.json

MODE ``clean``: the SDK's defaults. Every rank builds the same Run with the same key; only rank
0 records it (annotation batches, then a TRL DPOTrainer with LedgerCallback joining the run).
Each rank records its rank-local compute under its own key (RankRecorder), closes it, and waits
at a barrier before rank 0 ends the run.

MODE ``same_spool`` / ``same_key``: the old failure (both ranks recording the run with one key),
forced with ``rank=0`` on every rank: with one spool the second opener must be refused at once;
with a spool each, the ledger's refusal of the second writer must reach the process by name.

MODE ``bench``: no trainer; each rank times N policy_update calls (Run on rank 0, RankRecorder on
every rank) and reports per-call cost and the delivery rate.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import DatasetManifest, HttpSink, Run


def main() -> None:
    mode, cfg_path = sys.argv[1], sys.argv[2]
    cfg = json.loads(Path(cfg_path).read_text())
    rank = int(os.environ["RANK"])
    out = Path(cfg["out"]) / f"rank{rank}.json"
    signer = Signer.from_seed(bytes.fromhex(cfg["run_key"]))
    rank_signer = Signer.from_seed(bytes.fromhex(cfg["rank_keys"][rank]))
    sink = HttpSink(cfg["url"], cfg["token"], cfg["log_id"])
    common = dict(log_id=cfg["log_id"], run_id=cfg["run_id"], signer=signer, sink=sink, method="dpo",
                  hyperparameters={"note": "torchrun"}, base_model={"name": "tiny-llama", "weights_digest": "sha256:" + "1" * 64},
                  datasets=[DatasetManifest("prefs", "toy prefs", "generated", "CC0-1.0", "sha256:" + "2" * 64, 100, 16)],
                  pseudonym_key=b"k" * 32, exit_timeout=60.0)
    result: dict = {"rank": rank}
    if mode in ("same_spool", "same_key"):
        spool = Path(cfg["spool"]) / ("shared" if mode == "same_spool" else f"rank{rank}")
        try:
            if mode == "same_spool" and rank == 1:
                time.sleep(1.0)  # let rank 0 open first, so which rank is refused is known
            run = Run(rank=0, spool_dir=spool, **common)  # forced: what the old SDK did on every rank
            run.start()
            for i in range(4):
                run.annotation_batch(batch_id=f"b{i}", dataset_id="prefs", guideline_version="g1", annotators=["a"],
                                     prompts=["p"], responses=["r"], labels=["chosen"])
                time.sleep(0.3)  # the second writer's first events reach the ledger meanwhile
            run.end("completed")
            result["error"] = None
        except Exception as e:  # reported to the test
            result.update(error=type(e).__name__, code=getattr(e, "code", None), message=str(e))
        out.write_text(json.dumps(result))
        return

    import torch.distributed as dist

    os.environ.setdefault("RLHF_LEDGER_SPOOL", cfg["spool"])
    run = Run(**common)
    result["active"] = run.active
    if mode == "bench":
        dist.init_process_group("gloo")
        n = int(cfg["events"])
        rec = run.rank_recorder(rank_signer)
        with run, rec:
            for target in ([rec, run] if run.active else [rec]):
                pc = time.perf_counter_ns
                ns = []
                t0 = time.perf_counter()
                for i in range(n):
                    a = pc()
                    target.policy_update(i, 0.5, 0.01, 0.1, 0.02, 1.0, param_delta_norm=0.0)
                    ns.append(pc() - a)
                target.flush(120)
                result["rank_recorder" if target is rec else "run"] = {
                    "ns": sorted(ns)[len(ns) // 2], "p99": sorted(ns)[int(len(ns) * 0.99) - 1],
                    "delivered_per_s": n / (time.perf_counter() - t0)}
            dist.barrier()
        out.write_text(json.dumps(result))
        dist.destroy_process_group()
        return

    from rlhf_ledger.sdk.hf_callback import LedgerCallback
    from tests.sdk import hf_jobs

    t0 = time.time()
    rec = run.rank_recorder(rank_signer)
    with run:
        for i in range(4):  # same code on every rank; only rank 0's Run records
            run.annotation_batch(batch_id=f"b{i}", dataset_id="prefs", guideline_version="g1", annotators=["ann-1"],
                                 prompts=["what is the cat"], responses=["the cat sat"], labels=["chosen"])
        cb = LedgerCallback(run)
        trainer = hf_jobs.dpo_trainer(cfg["out"] + "/trainer", [cb], max_steps=2, save_steps=2)
        trainer.train()
        with rec:
            rec.compute_usage("cpu", time.time() - t0)
        result["manages_run"] = cb.manages_run
        run.release(trainer.model)
        dist.barrier()  # every rank's own events are delivered before rank 0 writes run.end
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
