"""The HF/TRL lifecycle with real trainers (DPOTrainer, RewardTrainer) on tiny locally built models:
the callback records the trainer's config whether it starts the run or joins one, never ends a run
it did not start, keeps a run it manages open for trainer.evaluate() and ends it at close() or at
process exit. The same tests run again under an older transformers/trl pair (last test)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from rlhf_ledger.core.keys import Signer  # noqa: E402
from rlhf_ledger.sdk import DatasetManifest, LocalSink, Run, weights_digest  # noqa: E402
from rlhf_ledger.sdk.hf_callback import LedgerCallback  # noqa: E402

from . import hf_jobs  # noqa: E402
from .helpers import RecordingAppendForTests, check_chains  # noqa: E402

pytestmark = pytest.mark.slow  # the fast tier (`pytest --fast`) leaves these to the full suite

ROOT = Path(__file__).resolve().parents[2]
DS = DatasetManifest("prefs", "toy prefs", "generated in test", "CC0-1.0", "sha256:" + "2" * 64, 100, 16)


def make_run(tmp_path, signer, app, method="dpo", **kw):
    return Run(log_id="hf-log", run_id=f"{method}-1", signer=signer, sink=LocalSink(app), method=method,
               hyperparameters={"note": "tiny"}, base_model={"name": "tiny-llama", "weights_digest": "sha256:" + "1" * 64},
               datasets=[DS], spool_dir=tmp_path / "spool", pseudonym_key=b"k" * 32, **kw)


def types(events):
    return [e["type"] for e in events]


def test_managed_run_stays_open_for_evaluate_and_ends_at_close(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    run = make_run(tmp_path, s, app)
    cb = LedgerCallback(run)
    trainer = hf_jobs.dpo_trainer(str(tmp_path / "out"), [cb])
    trainer.train()
    assert cb.manages_run and run.started and not run.ended  # the HF idiom: evaluate() follows train()
    metrics = trainer.evaluate()
    cb.close()
    assert run.ended
    cb.close()  # idempotent
    events = app.events()
    check_chains(events)
    t = types(events)
    assert t[:3] == ["dataset.register", "run.start", "trainer.config"] and t[-1] == "run.end"
    assert t.count("run.end") == 1 and t[-2] == "evaluation"
    start = events[1]["body"]
    assert start["hyperparameters"]["beta"] == 0.2 and start["hyperparameters"]["learning_rate"] == 1e-3
    assert start["hyperparameters"]["note"] == "tiny"
    tc = events[2]["body"]
    assert tc["config_class"] == "DPOConfig" and tc["hyperparameters"]["beta"] == 0.2
    assert tc["run_started_by"] == "callback" and tc["versions"]["trl"] == trl.__version__
    assert events[-2]["body"]["metrics"]["eval_loss"] == metrics["eval_loss"]
    end = events[-1]["body"]
    assert end["status"] == "completed" and end["released_weights_digest"] == weights_digest(trainer.model).digest


def test_user_started_run_gets_the_trainer_config_and_is_not_ended(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with make_run(tmp_path, s, app) as run:
        run.annotation_batch(batch_id="b1", dataset_id="prefs", guideline_version="g1", annotators=["ann-1"],
                             prompts=["p"], responses=["r"], labels=["chosen"])
        cb = LedgerCallback(run)
        trainer = hf_jobs.dpo_trainer(str(tmp_path / "out"), [cb])
        trainer.train()
        assert not cb.manages_run and not run.ended
        trainer.evaluate()
        cb.close()  # not the callback's run: no effect
        assert not run.ended
        run.release(trainer.model)
    events = app.events()
    check_chains(events)
    t = types(events)
    assert t.count("run.start") == 1 and t.count("run.end") == 1 and t[-1] == "run.end"
    assert events[1]["body"]["hyperparameters"] == {"note": "tiny"}  # the user's run.start, as the user gave it
    tc = next(e["body"] for e in events if e["type"] == "trainer.config")
    # the silently lost config of the old callback: beta, learning rate and the full config are recorded
    assert tc["run_started_by"] == "user" and tc["hyperparameters"]["beta"] == 0.2
    assert tc["hyperparameters"]["learning_rate"] == 1e-3 and tc["config"]["max_steps"] == 4
    assert "policy.update" in t and t[-2] == "evaluation"


def test_reward_trainer_is_recorded(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    run = make_run(tmp_path, s, app, method="reward")
    cb = LedgerCallback(run)
    trainer = hf_jobs.reward_trainer(str(tmp_path / "out"), [cb])
    trainer.train()
    trainer.evaluate()
    cb.close()
    events = app.events()
    check_chains(events)
    t = types(events)
    assert "policy.update" not in t and "checkpoint.save" not in t
    ups = [e["body"] for e in events if e["type"] == "reward_model.update"]
    assert [u["step"] for u in ups] == [1, 2, 3, 4]
    logged = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert [u["loss"] for u in ups] == [h["loss"] for h in logged]
    saves = [e["body"] for e in events if e["type"] == "reward_model.save"]
    assert [x["step"] for x in saves] == [2, 4]
    tc = next(e["body"] for e in events if e["type"] == "trainer.config")
    assert tc["config_class"] == "RewardConfig"
    end = events[-1]["body"]
    assert end["released_weights_digest"] == weights_digest(trainer.model).digest == saves[-1]["weights_digest"]


_EXIT_CHILD = textwrap.dedent('''
    import sys
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from rlhf_ledger.core.keys import Signer
    from rlhf_ledger.sdk import LocalSink, Run
    from rlhf_ledger.sdk.hf_callback import LedgerCallback
    from rlhf_ledger.store.ledger import Ledger

    data, mode = sys.argv[1], sys.argv[2]
    ledger = Ledger.open(data)
    s = Signer.from_seed(bytes(32 * [7]))
    if mode == "completed":
        ledger.init_log("exit-log")
        ledger.register_producer("exit-log", s.public_key, "t")
    run = Run(log_id="exit-log", run_id="run-" + mode, signer=s, sink=LocalSink(ledger.append), method="sft",
              hyperparameters={"x": 1}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
              spool_dir=data + "/spool-" + mode)
    cb = LedgerCallback(run, track_param_delta=False)
    args = TrainingArguments(output_dir=data + "/out", report_to=[], use_cpu=True, learning_rate=3e-4)
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(args, state, control)
    cb.on_train_end(args, state, control)
    run.evaluation("after-train", {"acc": 0.5})
    print("recorded", flush=True)
    if mode == "failed":
        raise RuntimeError("the script crashed after training")
''')


def test_managed_run_ends_when_the_process_exits(tmp_path):
    from rlhf_ledger.store.ledger import Ledger

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for mode in ("completed", "failed"):
        p = subprocess.run([sys.executable, "-c", _EXIT_CHILD, str(tmp_path), mode], env=env, capture_output=True,
                           text=True, timeout=120)
        assert "recorded" in p.stdout, p.stderr
        assert (p.returncode == 0) == (mode == "completed"), p.stderr
    ledger = Ledger.open(str(tmp_path))
    entries = [e for e in ledger.iter_entries("exit-log")]
    import json

    evs = [json.loads(e.entry)["event"] for e in entries]
    for mode in ("completed", "failed"):
        mine = [e for e in evs if e["run_id"] == "run-" + mode]
        assert [e["type"] for e in mine] == ["run.start", "trainer.config", "evaluation", "run.end"], mine
        assert mine[-1]["body"]["status"] == mode
        assert mine[1]["body"]["hyperparameters"]["learning_rate"] == 3e-4


# --- the same tests under an older transformers/trl pair ------------------------------------------

OLDER = {"transformers": "5.22.2", "trl": "1.14.0"}  # the versions issue 14 was reported with


def _older_venv() -> Path:
    """A throwaway venv with the older pair from the registry; everything else (torch, datasets,
    pytest, the project's dependencies) comes from the project's venv through a .pth file."""
    import site
    import sysconfig

    # v2: parent site dirs read as site dirs. The parent venv's path is part of the name: the .pth
    # below points into it, and a cache made from another (since deleted) checkout would be broken.
    parent_id = hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]
    tag = "-".join(f"{k}{v}" for k, v in OLDER.items()) + f"-v2-{parent_id}"
    venv = Path(os.environ.get("TMPDIR", "/tmp")) / f"rlhf-ledger-hf-{tag}"
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        *(f"{k}=={v}" for k, v in OLDER.items())], check=True, timeout=300)
        purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        parent = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
        # appended after the venv's own site-packages, so the older pair wins over the lock's; as
        # site dirs, so that their own .pth files (the editable install's finder) are read too
        Path(purelib, "zz_project_venv.pth").write_text(
            "".join(f"import site; site.addsitedir({d!r})\n" for d in dict.fromkeys(parent)))
        (venv / ".complete").write_text("ok\n")
    return py


@pytest.mark.slow
def test_lifecycle_with_an_older_transformers_trl_pair(tmp_path):
    if os.environ.get("RLHF_HF_OLDER_PAIR") == "1":
        pytest.skip("already running under the older pair")
    py = _older_venv()
    got = subprocess.run([str(py), "-c", "import transformers, trl; print(transformers.__version__, trl.__version__)"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert got.stdout.split() == [OLDER["transformers"], OLDER["trl"]], got.stderr
    p = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
                        "-k", "not older", "--basetemp", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "RLHF_HF_OLDER_PAIR": "1"})
    tail = p.stdout[-3000:]
    assert p.returncode == 0, tail + p.stderr[-2000:]
    assert "4 passed" in tail, tail
