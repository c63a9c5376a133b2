"""The SDK installs into a training stack that is not ours: fresh virtual environments get this
checkout's wheel from pip with dependencies resolved from the registry, not from the lock.

* ``sdk``: ``pip install 'rlhf_ledger-*.whl[sdk]' transformers==5.22.2`` (the lock has another
  transformers), no torch. A run is recorded through the Hugging Face callback, driven with
  transformers' own TrainingArguments/TrainerState/TrainerControl as a Trainer would (a Trainer
  itself needs torch; tests/sdk/test_hf_lifecycle.py runs real trainers), over HTTP to the real
  service (uvicorn, in the project's venv).
* ``sdk-lowest``: the [sdk] extra with every dependency at its declared lower bound; a plain
  ``with Run(...)`` over HTTP.
* ``base``: no extra: the core imports and works, and the CLI names the extra a command needs
  in one line.

The venvs are cached in the temp dir (tests/install/venvs.py); the first build downloads from
the registry and takes about a minute, later runs reuse them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import textwrap
from pathlib import Path

import pytest
from packaging.version import Version

from rlhf_ledger.cli.extras import OPTIONAL_MODULES
from rlhf_ledger.core.events import parse_envelope
from rlhf_ledger.core.keys import Signer, write_key_file
from tests.install import venvs

api_conftest = pytest.importorskip("tests.api.conftest")

OTHER_TRANSFORMERS = "5.22.2"  # the lock has 5.24.0 (checked below); installs without torch
PASSPHRASE = "install-test-passphrase"

CHILD = textwrap.dedent('''
    import json, sys
    cfg = json.loads(sys.argv[1])
    from rlhf_ledger.core.keys import read_key_file
    from rlhf_ledger.sdk import DatasetManifest, HttpSink, Run

    signer = read_key_file(cfg["key"], env="RLHF_LEDGER_PASSPHRASE")
    run = Run(log_id=cfg["log"], run_id=cfg["run"], signer=signer, sink=HttpSink(cfg["url"], cfg["token"], cfg["log"]),
              method="dpo", hyperparameters={"beta": 0.1}, base_model={"name": "tiny", "weights_digest": "sha256:" + "0" * 64},
              datasets=[DatasetManifest("prefs", "prefs", "synthetic", "CC0-1.0", "sha256:" + "1" * 64, 2)],
              spool_dir=cfg["spool"], pseudonym_key=b"k" * 32, exit_timeout=60)
    batch = dict(batch_id="b1", dataset_id="prefs", guideline_version="g1", annotators=["ann-1"],
                 prompts=["p"], responses=["r"], labels=["a"])
    if cfg["trainer"]:
        import numpy as np
        from transformers import TrainerControl, TrainerState, TrainingArguments
        from rlhf_ledger.sdk.hf_callback import LedgerCallback

        cb = LedgerCallback(run, track_param_delta=False, device="cpu")  # args.device needs torch
        args = TrainingArguments(output_dir=cfg["out"], learning_rate=3e-4, per_device_train_batch_size=2, report_to=[])
        state, control = TrainerState(), TrainerControl()
        cb.on_train_begin(args, state, control)  # starts the run: dataset.register, run.start, trainer.config
        run.annotation_batch(**batch)
        state.global_step = 1
        cb.on_log(args, state, control, logs={"loss": 0.69, "grad_norm": 1.5, "rewards/chosen": 0.1})
        cb.on_evaluate(args, state, control, metrics={"eval_loss": 0.6})
        cb.on_log(args, state, control, logs={"train_runtime": 1.5, "total_flos": 1000.0, "train_loss": 0.69})
        digest = run.checkpoint(1, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}).digest
        cb.on_train_end(args, state, control)
        run.release(digest=digest)
        cb.close()  # run.end, waits for every acknowledgement
    else:
        with run:
            run.annotation_batch(**batch)
            run.policy_update(1, 0.69, 0.01, 0.1, 0.05, 1.5, param_delta_norm=0.0)
            run.evaluation("held-out", {"acc": 0.5})
            run.release(digest="sha256:" + "2" * 64)
    watched = ("torch", "transformers", "numpy", "dp_accounting", "sqlalchemy", "web3", "fastapi", "alembic", "uvicorn")
    print(json.dumps({"loaded": sorted(m for m in watched if m in sys.modules)}))
''')

DISTS = textwrap.dedent('''
    import json, sys
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in sys.argv[1:]:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    print(json.dumps(out))
''')

OPTIONAL_DISTS = sorted({dist for dist, _ in OPTIONAL_MODULES.values()} | {"dp-accounting", "trl", "psycopg-binary"})


@pytest.fixture(scope="module")
def install_venvs():
    """The three venvs, built or refreshed under the cache lock, which is held while they are used."""
    with venvs.locked():
        yield {
            "sdk": venvs.venv("sdk", ("sdk",), also=(f"transformers=={OTHER_TRANSFORMERS}",)),
            "sdk-lowest": venvs.venv("sdk-lowest", ("sdk",), lowest=True),
            "base": venvs.venv("base", ()),
        }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = api_conftest.start_server(tmp_path_factory.mktemp("install-api"), None, env={"RLHF_API_RATE": "0"})
    yield srv
    srv.stop()


def installed(env: venvs.Venv, names: list[str], cwd: Path) -> dict[str, str | None]:
    p = env.run([str(env.python), "-c", DISTS, *names], cwd=cwd)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def lock_version(name: str) -> str:
    for line in (venvs.ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not in requirements.lock")


def record(env: venvs.Venv, server, tmp_path: Path, *, trainer: bool) -> tuple[Signer, list[dict], dict]:
    """A fresh log with one producer; the child records one run; returns the log's entries and
    the child's report, with the log id and token under "log" and "token"."""
    s = Signer.generate()
    key = tmp_path / "producer.key"
    write_key_file(key, s, PASSPHRASE, label="install test")
    log_id = "inst-" + secrets.token_hex(4)
    admin = server.client(server.admin_token)
    assert admin.post("/v1/logs", json={"log_id": log_id}).status_code == 201
    r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(s.public_key).decode()})
    assert r.status_code == 201, r.text
    r = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [s.key_id], "run_ids": ["*"]})
    assert r.status_code == 201, r.text
    base = admin.get(f"/v1/logs/{log_id}").json()["size"]  # the producer's key event
    cfg = {"key": str(key), "log": log_id, "run": "run-1", "url": server.url, "token": r.json()["token"],
           "spool": str(tmp_path / "spool"), "out": str(tmp_path / "out"), "trainer": trainer}
    p = env.run([str(env.python), "-c", CHILD, json.dumps(cfg)], cwd=tmp_path, timeout=180,
                RLHF_LEDGER_PASSPHRASE=PASSPHRASE)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    child = {**json.loads(p.stdout.strip().splitlines()[-1]), "log": log_id, "token": cfg["token"]}
    size = admin.get(f"/v1/logs/{log_id}").json()["size"]
    entries = [admin.get(f"/v1/logs/{log_id}/entries/{i}").json() for i in range(base, size)]
    return s, entries, child


def check_chain(s: Signer, entries: list[dict]) -> list[dict]:
    """Every entry is this producer's, in run-1, seq 0.. in order, each signature valid."""
    events = []
    for i, e in enumerate(entries):
        p = parse_envelope(e["envelope"], where=f"entry {e['index']}")
        p.verify_signature(s.public_key, where=f"entry {e['index']}")
        assert (e["producer"], e["run_id"], e["seq"]) == (s.key_id, "run-1", i)
        events.append(p.event)
    return events


def test_sdk_extra_with_another_transformers_and_no_torch_records_a_run(install_venvs, server, tmp_path):
    env = install_venvs["sdk"]
    have = installed(env, ["rlhf-ledger", "transformers", *OPTIONAL_DISTS], tmp_path)
    assert have["rlhf-ledger"] == "0.1.0"
    assert have["transformers"] == OTHER_TRANSFORMERS != lock_version("transformers")
    for name in ("sqlalchemy", "web3", "fastapi", "alembic", "psycopg", "uvicorn", "torch", "dp-accounting", "trl"):
        assert have[name] is None, f"[sdk] installed {name} {have[name]}"
    assert have["httpx"] and have["pyyaml"]

    s, entries, child = record(env, server, tmp_path, trainer=True)
    events = check_chain(s, entries)
    assert [e["type"] for e in events] == ["dataset.register", "run.start", "trainer.config", "annotation.batch",
                                           "policy.update", "evaluation", "compute.usage", "checkpoint.save", "run.end"]
    config = events[2]["body"]
    assert config["versions"]["transformers"] == OTHER_TRANSFORMERS and "torch" not in config["versions"]
    assert config["hyperparameters"]["learning_rate"] == 3e-4 and config["run_started_by"] == "callback"
    # the checkpoint's digest of a numpy state dict is the one this (lock) environment computes
    import numpy as np

    from rlhf_ledger.sdk.weights import weights_digest

    want = weights_digest({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}).digest
    assert events[7]["body"]["weights_digest"] == want
    assert events[8]["body"] == {"status": "completed", "released_weights_digest": want, "steps": 1}
    assert "torch" not in child["loaded"] and "sqlalchemy" not in child["loaded"]


def test_sdk_extra_at_its_lower_bounds_records_a_run(install_venvs, server, tmp_path):
    env = install_venvs["sdk-lowest"]
    pins = dict(x.split("==") for x in venvs.lower_bounds(("sdk",)))
    have = installed(env, [*pins, *OPTIONAL_DISTS], tmp_path)
    for name, low in pins.items():
        assert have[name] is not None and Version(have[name]) == Version(low), f"{name}: {have[name]}, lower bound {low}"
    assert not [n for n in OPTIONAL_DISTS if n not in pins and have[n]]

    s, entries, child = record(env, server, tmp_path, trainer=False)
    events = check_chain(s, entries)
    assert [e["type"] for e in events] == ["dataset.register", "run.start", "annotation.batch", "policy.update",
                                           "evaluation", "run.end"]
    assert child["loaded"] == []  # no torch, numpy, transformers, dp-accounting, nor anything of the server

    # one event from the shell, as a CI job with only [sdk] records an evaluation
    body = {"name": "ci-eval", "metrics": {"acc": 1.0}}
    p = env.run([str(env.bin("rlhf-ledger")), "record", "--key", str(tmp_path / "producer.key"), "--log", child["log"],
                 "--run", "ci-1", "--type", "evaluation", "--body", json.dumps(body), "--url", server.url,
                 "--spool", str(tmp_path / "cli-spool")],
                cwd=tmp_path, RLHF_LEDGER_PASSPHRASE=PASSPHRASE, RLHF_LEDGER_TOKEN=child["token"])
    assert p.returncode == 0 and p.stdout.startswith("recorded evaluation seq 0 in run ci-1"), p.stdout + p.stderr
    index = entries[-1]["index"] + 1
    got = server.client(server.admin_token).get(f"/v1/logs/{child['log']}/entries/{index}").json()
    event = parse_envelope(got["envelope"], where="ci").event
    assert (event["run_id"], event["type"], event["body"], event["producer"]) == ("ci-1", "evaluation", body, s.key_id)

    # the run's spool, inspected and flushed from the shell (nothing left to deliver)
    p = env.run([str(env.bin("rlhf-ledger")), "spool", "status", str(tmp_path / "spool"), "--json"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout.strip().splitlines()[0])
    assert (st["run_id"], st["acked_seq"], st["pending"], st["ended"]) == ("run-1", 5, 0, True), st
    p = env.run([str(env.bin("rlhf-ledger")), "spool", "flush", str(tmp_path / "spool"), "--key", str(tmp_path / "producer.key"),
                 "--url", server.url], cwd=tmp_path, RLHF_LEDGER_PASSPHRASE=PASSPHRASE, RLHF_LEDGER_TOKEN=child["token"])
    assert p.returncode == 0 and "nothing pending" in p.stdout, p.stdout + p.stderr


def cli(env: venvs.Venv, tmp_path: Path, *args: str):
    return env.run([str(env.bin("rlhf-ledger")), *args], cwd=tmp_path, RLHF_LEDGER_PASSPHRASE=PASSPHRASE,
                   RLHF_LEDGER_HOME=str(tmp_path / "data"))


def assert_needs(p, command: str, extra: str):
    """Exit 1 with one line naming the extra (and whichever of its modules was missed first)."""
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    want = (rf"Error: rlhf-ledger {command} needs the \[{extra}\] extra \('\w+' is not installed\): "
            rf"pip install 'rlhf-ledger\[{extra}\]'")
    assert len(lines) == 1 and re.fullmatch(want, lines[0]), p.stderr


def test_cli_names_the_extra_a_command_needs(install_venvs, tmp_path):
    sdk, base = install_venvs["sdk"], install_venvs["base"]
    for env in (sdk, base):
        p = cli(env, tmp_path, "--help")
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        assert "serve" in p.stdout and "(not installed: pip install" in p.stdout
    assert_needs(cli(sdk, tmp_path, "serve"), "serve", "server")
    assert_needs(cli(sdk, tmp_path, "token", "create", "--role", "admin"), "token", "server")
    assert_needs(cli(sdk, tmp_path, "init"), "init", "store")
    assert_needs(cli(sdk, tmp_path, "runs"), "runs", "store")
    assert_needs(cli(sdk, tmp_path, "anchors"), "anchors", "anchoring")
    assert_needs(cli(sdk, tmp_path, "export", "--run", "r", "-o", "x.jsonl"), "export", "anchoring")

    # the base install: the core works, the SDK's commands name [sdk]
    have = installed(base, ["rlhf-ledger", *OPTIONAL_DISTS], tmp_path)
    assert have["rlhf-ledger"] == "0.1.0" and not [n for n in OPTIONAL_DISTS if have[n]], have
    p = cli(base, tmp_path, "keygen", str(tmp_path / "k.key"))
    assert p.returncode == 0 and p.stdout.startswith("key id "), p.stderr
    assert_needs(cli(base, tmp_path, "record", "--key", str(tmp_path / "k.key"), "--log", "l", "--run", "r",
                     "--type", "human.review", "--body", "{}"), "record", "sdk")
    assert_needs(cli(base, tmp_path, "init"), "init", "store")
    assert_needs(cli(base, tmp_path, "serve"), "serve", "server")
    core = textwrap.dedent('''
        import rlhf_ledger, rlhf_ledger.core
        from rlhf_ledger.core.events import make_event, parse_envelope, sign_event
        from rlhf_ledger.core.keys import Signer
        s = Signer.generate()
        env = sign_event(make_event(log_id="l", run_id="r", type="compute.usage", producer=s.key_id, seq=0, prev=None,
                                    body={"device": "cpu", "seconds": 1.5}), s)
        parse_envelope(env, where="e").verify_signature(s.public_key, where="e")
        print(rlhf_ledger.__version__)
    ''')
    p = base.run([str(base.python), "-c", core], cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "0.1.0", p.stderr
    p = base.run([str(base.python), "-c", "import rlhf_ledger.sdk"], cwd=tmp_path)
    assert p.returncode == 1 and re.fullmatch(
        r"ModuleNotFoundError: rlhf_ledger.sdk needs the \[sdk\] extra \('(yaml|httpx)' is not installed\): "
        r"pip install 'rlhf-ledger\[sdk\]'", p.stderr.strip().splitlines()[-1]), p.stderr
