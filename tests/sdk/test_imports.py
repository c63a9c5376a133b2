"""A run that uses no DP, no torch model and no Trainer works where dp-accounting, torch,
transformers (and numpy) are not installed: a subprocess blocks those imports and records a run
into the real embedded ledger; the DP helper then fails with a clear install hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent('''
    import sys, importlib.abc

    BLOCKED = ("torch", "transformers", "dp_accounting", "numpy", "trl", "accelerate", "datasets")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    import json
    from rlhf_ledger.core.keys import Signer
    from rlhf_ledger.sdk import DatasetManifest, LocalSink, Run
    from rlhf_ledger.store.ledger import Ledger

    data = sys.argv[1]
    ledger = Ledger.open(data)
    ledger.init_log("imp")
    s = Signer.generate()
    ledger.register_producer("imp", s.public_key, "t")
    base = ledger.size("imp")  # the producer's key event
    with Run(log_id="imp", run_id="r", signer=s, sink=LocalSink(ledger.append), method="sft",
             hyperparameters={"lr": 1e-4}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
             datasets=[DatasetManifest("d", "n", "s", "CC0-1.0", "sha256:" + "1" * 64, 1)],
             spool_dir=data + "/spool", pseudonym_key=b"k" * 32) as run:
        run.annotation_batch(batch_id="b", dataset_id="d", guideline_version="g", annotators=["x"],
                             prompts=["p"], responses=["r"], labels=["a"])
        run.policy_update(1, 0.5, 0.1, 0.2, 0.05, 1.0)
        run.evaluation("e", {"acc": 1.0})
        run.release(digest="sha256:" + "2" * 64)
    dp = Run(log_id="imp", run_id="dp", signer=s, sink=LocalSink(ledger.append), method="sft",
             hyperparameters={"lr": 1e-4}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
             declared={"privacy_budget": {"epsilon": 8.0, "delta": 1e-6}}, spool_dir=data + "/spool-dp")
    try:
        dp.start()
        dp.privacy_spend(1.0, 0.01, 10)
        hint = None
    except ImportError as e:
        hint = str(e)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"size": ledger.size("imp") - base, "loaded": loaded, "hint": hint}))
''')


@pytest.mark.slow
def test_a_run_without_torch_transformers_or_dp_accounting(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["size"] == 6  # events after the key event: dataset.register, run.start, annotation.batch, policy.update, evaluation, run.end
    assert "dp-accounting" in out["hint"] and "pip install" in out["hint"]
