"""End-to-end demo: ``python -m ledger.demo [--out DIR] [--steps small|default]`` (scripts/demo.sh).

A small but real RLHF run on the CPU (ledger/demo_rlhf.py) is recorded through the SDK into the
embedded ledger (SQLite), its checkpoints are anchored on a local anvil chain with manifests in
the local content store, a proof bundle for the run is exported, the independent verifier checks
it (as a subprocess, with the exact command a regulator runs, and the eu-ai-act rules), and a
model card with the provenance section is written. Exit status 0 only if the verifier reports
the bundle valid and compliant.

Secrets: the anvil dev key lives in memory only; the ledger passphrase comes from
RLHF_LEDGER_PASSPHRASE or is generated for this run and printed once (never written to disk); the
log key and payload key on disk are encrypted with it; the annotator pseudonym key is random per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".rlhf-ledger-demo"  # only a directory carrying this marker is ever wiped
LOG_ID = "demo-rlhf"
BUNDLE_NAME = "proof-bundle.rlhfbundle.jsonl"
CONFIRMATIONS = 2


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def fresh_output_dir(out: Path) -> None:
    """Wipe a previous demo's output (identified by its marker file); refuse any other non-empty dir."""
    if out.exists():
        if (out / MARKER).is_file():
            shutil.rmtree(out)
        elif any(out.iterdir()):
            raise SystemExit(f"demo: {out} exists, is not empty and was not written by the demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by python -m ledger.demo; the next demo run wipes this directory\n")


def ledger_passphrase() -> str:
    from rlhf_ledger.core.keys import PASSPHRASE_ENV

    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        say(f"ledger passphrase: from {PASSPHRASE_ENV}")
        return value
    value = secrets.token_urlsafe(24)
    # Never printed or written: a passphrase on a terminal ends up in logs and scrollback.
    say(f"WARNING: {PASSPHRASE_ENV} is not set: the ledger's keys are sealed with a random passphrase held in "
        f"memory for this run only, so they cannot be reopened afterwards; set {PASSPHRASE_ENV} to keep them")
    return value


def git_code() -> dict[str, str] | None:
    root = Path(__file__).resolve().parents[2]  # the checkout (ledger/demo/run.py)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return {"repository": "rlhf-ledger (local checkout)", "commit": commit.stdout.strip()}


class BackgroundAnchoring:
    """The anchoring worker's passes during training, as the production worker runs beside the ledger.

    anvil automines each transaction; every pass also mines one block so anchors gain confirmations."""

    def __init__(self, worker: Any, chain: Any, interval: float = 1.0):
        self.worker, self.chain, self.interval = worker, chain, interval
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="demo-anchoring", daemon=True)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.pass_once()

    def pass_once(self) -> None:
        try:
            res = self.worker.run_once()
        except Exception as e:  # keep anchoring; the final settle step reports what is still missing
            res = None
            line = f"pass failed: {type(e).__name__}: {e}"
            if line not in self.errors:
                self.errors.append(line)
                say(f"anchoring: {line}")
        if res is None:
            self.chain.mine(1)
            return
        for line in [res.unavailable, *res.errors]:
            if line and line not in self.errors:
                self.errors.append(line)
                say(f"anchoring: {line}")
        for size in res.submitted:
            say(f"anchoring: checkpoint of size {size} sent to the chain")
        self.chain.mine(1)

    def __enter__(self) -> BackgroundAnchoring:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)


def settle_anchors(ledger: Any, worker: Any, chain: Any, size: int, timeout: float = 120.0) -> list[Any]:
    """Run worker passes (mining blocks) until checkpoint `size` is anchored and confirmed."""
    from rlhf_ledger.core.anchor_status import SETTLED

    deadline = time.monotonic() + timeout
    while ledger.anchors.settled_for_checkpoint(LOG_ID, size) is None:
        if time.monotonic() > deadline:
            rows = [(a.checkpoint_size, str(a.status), a.error) for a in ledger.anchors.for_log(LOG_ID)]
            raise SystemExit(f"demo: checkpoint {size} not confirmed on chain within {timeout}s; anchors: {rows}")
        res = worker.run_once()
        if res.unavailable or res.errors:
            say(f"anchoring: {res.unavailable or '; '.join(res.errors)}")
        chain.mine(1)
        time.sleep(0.05)
    return ledger.anchors.for_log(LOG_ID, statuses=SETTLED)


def verifier_argv0() -> list[str]:
    """How to run `rlhf-verify`: the installed script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "rlhf-verify"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("rlhf-verify")
    return [found] if found else [sys.executable, "-m", "rlhf_verifier"]


@dataclass
class Outcome:
    out: Path
    verdict: str
    returncode: int
    report: dict


def run_demo(out: Path, steps: str = "default", *, seed: int | None = None) -> Outcome:
    import torch

    from rlhf_ledger.anchoring.chain import ChainClient
    from rlhf_ledger.anchoring.content_store import LocalContentStore
    from rlhf_ledger.anchoring.devchain import Anvil
    from rlhf_ledger.anchoring.worker import AnchorWorker
    from rlhf_ledger.core.keys import Signer
    from rlhf_ledger.demo import rlhf as rl
    from rlhf_ledger.export.bundle import Scope, export_bundle
    from rlhf_ledger.sdk import (
        DatasetManifest,
        LocalSink,
        Run,
        model_card_for_run,
        pseudonym,
        verify_command,
        weights_digest,
    )
    from rlhf_ledger.sdk.modelcard import RULES
    from rlhf_ledger.store import db
    from rlhf_ledger.store.ledger import Ledger

    # dp-accounting logs (through absl) each RDP order it drops for not converging at a large sampling
    # rate; dropping orders only makes the bound more conservative, so these lines are noise here.
    logging.getLogger("absl").setLevel(logging.ERROR)
    t_start = time.monotonic()
    fresh_output_dir(out)
    cfg = rl.Config.small() if steps == "small" else rl.Config()
    if seed is not None:
        cfg.seed = seed
    torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves a core to signing and anchoring
    passphrase = ledger_passphrase()

    with Anvil(block_time=None) as chain:
        say(f"anvil: chain id {chain.chain_id} at {chain.rpc_url} (dev key held in memory only)")
        client = ChainClient(chain.rpc_url, chain.private_keys[0])
        contract = client.deploy()
        client.wait_for_receipt(client.authorize(client.address))
        say(f"anchor contract deployed at {contract}; anchoring account {client.address} authorised")

        # -- the embedded ledger ------------------------------------------------------------
        ledger_dir = out / "ledger"
        ledger = Ledger.open(ledger_dir, db.database_url(ledger_dir), passphrase=passphrase)  # SQLite, never DATABASE_URL
        try:
            info = ledger.init_log(LOG_ID, checkpoint_every_events=200, checkpoint_every_seconds=5.0)
            producer = Signer.generate()  # the training job's key: in memory for this run
            ledger.register_producer(LOG_ID, producer.public_key, label="demo training job")
            store = LocalContentStore(out / "content-store")
            worker = AnchorWorker(ledger, client, store, LOG_ID, confirmations=CONFIRMATIONS)
            say(f"ledger: {ledger_dir / 'ledger.sqlite3'} (log {LOG_ID}, key {info.vkey})")

            # -- data: prompts and simulated preference annotations -------------------------
            models = rl.build_models(cfg)
            pairs = rl.annotate(models.base, cfg.n_pairs, cfg.annotation_batch, cfg.seed)
            train_pairs, heldout = cfg.split(pairs)
            pseudonym_key = secrets.token_bytes(32)  # the team's key; never leaves this process here

            data_dir = out / "data"
            data_dir.mkdir()
            prompts_file = data_dir / "prompts.jsonl"
            prompts_file.write_text("".join(json.dumps({"topic": rl.TOPICS[t], "group": rl.GROUPS[g],
                                                        "prompt": rl.prompt_text(t, g)}) + "\n" for t, g in rl.PROMPTS))
            prefs_file = data_dir / "preferences.jsonl"
            prefs_file.write_text("".join(json.dumps({
                "batch": p.batch, "prompt": rl.prompt_text(p.topic, p.group), "response_a": rl.response_text(p.a),
                "response_b": rl.response_text(p.b), "label": "a" if p.chosen_a else "b",
                "annotator": pseudonym(pseudonym_key, rl.ANNOTATORS[p.annotator].person_id),
                "split": "train" if i < cfg.n_train else "heldout"}) + "\n" for i, p in enumerate(pairs)))
            source = f"synthetic: generated by ledger.demo (seed {cfg.seed})"
            datasets = [
                DatasetManifest.from_file(prompts_file, dataset_id="demo-prompts", name="Toy assistant prompts",
                                          source=source, licence="CC0-1.0", records=len(rl.PROMPTS)),
                DatasetManifest.from_file(prefs_file, dataset_id="demo-preferences",
                                          name="Simulated pairwise preferences", source=source, licence="CC0-1.0",
                                          records=len(pairs)),
            ]
            base_digest = weights_digest(models.base).digest
            run_id = f"demo-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
            budget = {"epsilon": 8.0, "delta": cfg.dp_delta}
            declared = {"privacy_budget": budget, "anchoring_delay_seconds": 600, "retention_days": 365}
            ckpt_dir = out / "checkpoints"
            ckpt_dir.mkdir()
            counters: dict[str, int] = {}

            say(f"training run {run_id}: {cfg.n_pairs} preference pairs, {cfg.rm_steps} reward-model steps "
                f"(DP-SGD), {cfg.policy_steps} policy steps (RLOO + KL)")
            with BackgroundAnchoring(worker, chain):
                run = Run(log_id=LOG_ID, run_id=run_id, signer=producer, sink=LocalSink(ledger.append),
                          method="rloo", hyperparameters=cfg.hyperparameters(),
                          config={"task": "toy assistant", "vocabulary": rl.V, "response_tokens": rl.RESPONSE_LEN,
                                  "prompts": len(rl.PROMPTS), "annotators": len(rl.ANNOTATORS),
                                  "heldout_pairs": len(heldout), "torch": torch.__version__, "device": "cpu",
                                  "torch_threads": torch.get_num_threads()},
                          base_model={"name": f"toy-gru-lm (random init, seed {cfg.seed})", "weights_digest": base_digest},
                          datasets=datasets, declared=declared, code=git_code(), model=models.policy,
                          pseudonym_key=pseudonym_key, spool_dir=out / "spool")
                t_train = time.monotonic()
                with run:
                    rl.record_annotations(run, pairs, cfg.annotation_batch)
                    rl.train_reward_model(models.rm, train_pairs, cfg, run, counters)
                    rm_wd = weights_digest(models.rm)
                    run.event("reward_model.save", {"step": cfg.rm_steps, "weights_digest": rm_wd.digest,
                                                    "tensor_root": rm_wd.tensor_root})
                    privacy = run.privacy
                    assert privacy is not None  # the run declares a privacy budget
                    say(f"reward model trained; privacy spent: epsilon {privacy.epsilon:.3f} of "
                        f"{budget['epsilon']} at delta {cfg.dp_delta}")
                    rl.train_policy(models.policy, models.ref, models.rm, cfg, run, counters, checkpoint_dir=ckpt_dir)
                    metrics = rl.evaluate(models.policy, models.ref, models.rm, heldout, cfg.seed + 3)
                    run.evaluation("policy-vs-reference", metrics, dataset_id="demo-preferences", step=cfg.policy_steps)
                    bias_metrics, findings = rl.bias_examination(models.policy, models.rm, heldout, cfg.seed + 4)
                    run.bias_examination("phrasing-group-parity", bias_metrics, findings)
                    train_seconds = time.monotonic() - t_train
                    run.compute_usage(f"cpu ({torch.get_num_threads()} torch thread)", train_seconds,
                                      flops=rl.flops_estimate(models, counters),
                                      metrics={**counters, "flops_method": "6*params*tokens estimate"})
                    approve = metrics["win_rate_vs_reference"] > 0.5 and "OUTSIDE" not in findings
                    released = run.release(models.policy)
                    if run.last_checkpoint is None or released != run.last_checkpoint.digest:
                        raise RuntimeError("released weights differ from the last checkpoint")
                    # Human oversight (AI Act Art. 14): a reviewer approves or rejects the release
                    # before run.end; eu-ai-act@2's human-oversight rule requires the approval.
                    run.review_release("release-reviewer-1", "approve" if approve else "reject",
                                       notes="simulated reviewer: approves when the policy beats the reference and "
                                             "the bias examination is within tolerance")
                    say(f"human review of the release ({released[:23]}..): {'approve' if approve else 'reject'}")
                say(f"run recorded: {run.max_step} steps, evaluation win rate {metrics['win_rate_vs_reference']}, "
                    f"true utility {metrics['reference_true_utility']} -> {metrics['policy_true_utility']}")

            # -- anchor everything ------------------------------------------------------------
            final = ledger.checkpoint(LOG_ID)
            say(f"final checkpoint: size {final.size}; anchoring until every checkpoint is confirmed "
                f"({CONFIRMATIONS} confirmations)")
            anchors = settle_anchors(ledger, worker, chain, final.size)
            for a in anchors:
                say(f"  anchor: checkpoint {a.checkpoint_size} in block {a.block_number} tx {a.tx_hash} "
                    f"manifest {a.cid} ({a.status})")

            # -- export the run's proof bundle --------------------------------------------------
            bundle = out / BUNDLE_NAME
            with open(bundle, "w", encoding="utf-8") as f:
                export_bundle(ledger, LOG_ID, f, Scope("run", run_id=run_id), content_store=store, require_anchor=True)
            say(f"proof bundle: {bundle} ({bundle.stat().st_size} bytes)")

            # -- verify as a regulator would --------------------------------------------------
            # The regulator's minimal command (docs/trust-model.md): chain id, contract and the
            # hash of the final anchor's block, which they read from their own node (here: the
            # chain itself). No key comes from us: the verifier reads the log key from the
            # contract and the producer key from the log's key events.
            final_anchor = max(anchors, key=lambda a: a.checkpoint_size)
            h = client.block(final_anchor.block_number)["hash"]
            trusted = h if isinstance(h, str) else "0x" + bytes(h).hex()
            say(f"the regulator looks up block {final_anchor.block_number} of chain {chain.chain_id} on a source "
                f"they trust (their own node, an explorer they trust): hash {trusted}")
            cmd = verify_command(bundle=BUNDLE_NAME, chain_id=chain.chain_id, contract=contract, trusted_block_hashes=[trusted],
                                 rules=RULES)
            report_html, report_json = out / "verification-report.html", out / "verification-report.json"
            argv = verifier_argv0() + shlex.split(cmd)[1:] + ["--json", "--html", report_html.name]
            say(f"verifying (in {out}):\n    {cmd} --json --html {report_html.name}")
            res = subprocess.run(argv, cwd=out, capture_output=True, text=True, timeout=300)
            report: dict = {}
            if res.stdout.strip():
                report_json.write_text(res.stdout)
                try:
                    report = json.loads(res.stdout)
                except ValueError:
                    pass
            verdict = report.get("verdict", "error")
            if res.returncode != 0:
                say(f"verifier exit {res.returncode}: {res.stderr.strip()[:2000]}")
                for f_ in report.get("findings", [])[:20]:
                    say(f"  finding: {f_}")
            for rule in report.get("compliance") or []:
                say(f"  rule {rule['id']:<22} {rule['status']}")

            # -- model card ----------------------------------------------------------------------
            card = out / "MODEL_CARD.md"
            card.write_text(model_card_for_run(
                run, model_name="toy-rlhf-assistant (demo)", log_key=info.vkey, bundle=BUNDLE_NAME,
                anchors=[a.as_json() for a in anchors], contract=contract, license="cc0-1.0",
                description=(f"A toy assistant policy trained with RLHF (RLOO against a DP-SGD reward model) by "
                             f"`python -m ledger.demo`. Independent verification of the proof bundle: "
                             f"**{verdict}** (rlhf-verify, rules {report.get('rule_set') or 'not evaluated'}, "
                             f"{len(anchors)} anchors on chain "
                             f"{chain.chain_id}).")))
        finally:
            ledger.close()

    artefacts = [("ledger database", ledger_dir / "ledger.sqlite3"), ("content store (manifests)", out / "content-store"),
                 ("proof bundle", bundle), ("verification report (HTML)", report_html),
                 ("verification report (JSON)", report_json), ("model card", card), ("checkpoints", ckpt_dir),
                 ("datasets", data_dir)]
    say("artefacts:")
    for name, path in artefacts:
        say(f"  {name:<28} {path}")
    say(f"VERDICT: {verdict.upper()} (verifier exit {res.returncode}); total {time.monotonic() - t_start:.1f}s")
    return Outcome(out, verdict, res.returncode, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ledger.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo-output", help="output directory (a previous demo's output there is wiped)")
    p.add_argument("--steps", choices=("small", "default"), default="default", help="training size")
    p.add_argument("--seed", type=int, help="training seed (default: the embedded one)")
    a = p.parse_args(argv)
    try:
        outcome = run_demo(Path(a.out), a.steps, seed=a.seed)
    except Exception as e:  # one line; the traceback only when asked for
        if os.environ.get("RLHF_DEMO_DEBUG"):
            raise
        print(f"demo: failed: {type(e).__name__}: {e} (set RLHF_DEMO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 0 if outcome.returncode == 0 and outcome.verdict == "valid" else 1


if __name__ == "__main__":
    sys.exit(main())
