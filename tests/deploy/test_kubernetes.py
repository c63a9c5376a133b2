"""deploy/kubernetes: rendered with the real `kubectl kustomize`, linted with checkov (zero
failed checks; skips only with a written reason), and cross-checked against the CLI and the
security rules the issue sets (probes, Secrets as files, non-root, read-only root fs)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production")
CHECKOV = ROOT / ".venv-lint" / "bin" / "checkov"


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests"
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {o: render(o) for o in OVERLAYS}


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]


def test_every_overlay_has_the_pieces(rendered):
    for overlay, docs in rendered.items():
        deps, jobs = _by_kind(docs, "Deployment"), _by_kind(docs, "Job")
        assert {"rlhf-ledger-api", "rlhf-ledger-anchor"} <= set(deps), overlay
        assert "rlhf-ledger-migrate" in jobs
        hpa = _by_kind(docs, "HorizontalPodAutoscaler")["rlhf-ledger-api"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == "rlhf-ledger-api"
        pdbs = _by_kind(docs, "PodDisruptionBudget")
        assert pdbs["rlhf-ledger-api"]["spec"]["selector"]["matchLabels"] == deps["rlhf-ledger-api"]["spec"]["selector"]["matchLabels"]
        assert "rlhf-ledger-anchor" in pdbs
        assert deps["rlhf-ledger-anchor"]["spec"]["replicas"] == 2  # the lease makes one active per log
        assert all(d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace")


def test_api_probes_and_migration_order(rendered):
    for docs in rendered.values():
        api = _by_kind(docs, "Deployment")["rlhf-ledger-api"]["spec"]["template"]["spec"]
        c = api["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["command"][:2] == ["rlhf-ledger", "serve"]
        init = api["initContainers"][0]["command"]
        assert init[:3] == ["rlhf-ledger", "migrate", "--check"] and "--wait" in init
        job = _by_kind(docs, "Job")["rlhf-ledger-migrate"]["spec"]["template"]["spec"]["containers"][0]
        assert job["command"] == ["rlhf-ledger", "migrate"]


def test_api_scrapes_one_process_and_knows_the_chain(rendered):
    """One uvicorn worker per pod (Prometheus counters are per process: a scrape of a pod with
    several would read one at random), and the API pods get the chain settings, so the fork
    guard also checks the anchored root (docs/operations.md)."""
    for docs in rendered.values():
        c = _by_kind(docs, "Deployment")["rlhf-ledger-api"]["spec"]["template"]["spec"]["containers"][0]
        assert c["command"][c["command"].index("--workers") + 1] == "1"
        chain = next(n for n in _by_kind(docs, "ConfigMap") if n.startswith("rlhf-ledger-chain"))
        assert {"configMapRef": {"name": chain}} in c["envFrom"]
        assert "RLHF_CHAIN_RPC" in _by_kind(docs, "ConfigMap")[chain]["data"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["ledger"]["command"]
    assert compose[compose.index("--workers") + 1] == "1"


def test_secrets_are_files_from_secrets_never_configmaps(rendered):
    secret_names = ("PASSPHRASE", "PRIVATE_KEY", "DATABASE_URL", "DATABASE_READ_URL")
    for docs in rendered.values():
        for cm in _by_kind(docs, "ConfigMap").values():
            for key, value in cm.get("data", {}).items():
                assert not any(key.startswith("RLHF_" + s) or key == s for s in secret_names), key
                assert "://" not in value or "@" not in value, (key, value)  # no credentialed URL
        assert not _by_kind(docs, "Secret"), "Secrets are created by the operator, never committed"
        for d, spec in _pod_specs(docs):
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for e in c.get("env", []):
                    assert "valueFrom" not in e, (d["metadata"]["name"], e)  # files, not env values
                    if e["name"].endswith("_FILE"):
                        mount = next(m for m in c["volumeMounts"] if e["value"].startswith(m["mountPath"] + "/"))
                        assert "secret" in vols[mount["name"]], e
        job = _by_kind(docs, "Job")["rlhf-ledger-migrate"]["spec"]["template"]["spec"]
        items = {v["name"]: v for v in job["volumes"]}["secrets"]["secret"]["items"]
        assert [i["key"] for i in items] == ["database-url"]  # the Job never sees the passphrase
    anchor = _by_kind(rendered["production"], "Deployment")["rlhf-ledger-anchor"]["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in anchor["volumes"]}
    assert vols["anchor-key"]["secret"]["secretName"] == "rlhf-ledger-anchor-key"
    cmd = anchor["containers"][0]["command"]
    assert cmd[cmd.index("--keystore") + 1].startswith("/secrets/anchor/")


def test_non_root_read_only_with_resources(rendered):
    for docs in rendered.values():
        for d, spec in _pod_specs(docs):
            name = d["metadata"]["name"]
            assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] >= 10000, name
            assert spec["automountServiceAccountToken"] is False, name
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                r = c["resources"]
                assert set(r["requests"]) == {"cpu", "memory"} and set(r["limits"]) == {"cpu", "memory"}, name


def _pod_env(docs: list[dict], container: dict, mounts: dict[str, Path], home: str) -> dict[str, str]:
    """The environment the manifests give `container`, with its Secret mount paths mapped to
    local directories and the data directory to `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "RLHF_LEDGER_", "RLHF_PUBLISHED", "RLHF_CHAIN", "RLHF_ANCHOR"))}
    maps = _by_kind(docs, "ConfigMap")
    for ref in container.get("envFrom", []):
        env.update(maps[ref["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    for k, v in list(env.items()):
        for mount, local in mounts.items():
            if v.startswith(mount + "/"):
                env[k] = str(local / v.removeprefix(mount + "/"))
    env.update(RLHF_LEDGER_HOME=home, RLHF_PUBLISHED_DIR=home + "/published", PYTHONPATH=str(ROOT))
    return env


def test_migration_job_and_init_containers_work_with_their_environment(rendered, pg_url, tmp_path):
    """The commands the manifests run, with the environment they give them (the database URL
    only as a mounted Secret file, DATABASE_URL_FILE; no writable data directory: the Job and
    the init containers mount none and the root filesystem is read-only): the init
    containers wait while the schema is behind, the Job migrates, then they pass."""
    docs = rendered["production"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database-url").write_text(pg_url.replace("postgresql+psycopg://", "postgresql://") + "\n")
    mounts = {"/secrets/ledger": secrets}
    home = "/proc/rlhf-ledger-no-data-volume"  # nothing can be created there, as on the read-only root

    def run(container: dict, wait: str | None = None) -> subprocess.CompletedProcess:
        cmd = list(container["command"])
        if wait is not None:
            cmd[cmd.index("--wait") + 1] = wait
        assert cmd[0] == "rlhf-ledger"
        return subprocess.run([sys.executable, "-m", "rlhf_ledger.cli", *cmd[1:]], capture_output=True, text=True,
                              env=_pod_env(docs, container, mounts, home), cwd=tmp_path, timeout=120)

    deps = _by_kind(docs, "Deployment")
    init = deps["rlhf-ledger-api"]["spec"]["template"]["spec"]["initContainers"][0]
    job = _by_kind(docs, "Job")["rlhf-ledger-migrate"]["spec"]["template"]["spec"]["containers"][0]
    probe = deps["rlhf-ledger-anchor"]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]
    before = run(init, wait="0")  # the same command without the 600 s patience
    assert before.returncode == 1 and "schema at revision none, newest is" in before.stderr, before.stderr
    done = run(job)
    assert done.returncode == 0 and "schema at revision" in done.stdout, done.stderr
    after = run(init)
    assert after.returncode == 0 and "newest revision" in after.stdout, after.stderr
    assert probe["command"] == init["command"][: init["command"].index("--wait")]  # the worker's probe: the same check


def test_commands_use_real_cli_options(rendered):
    from click import Command

    from rlhf_ledger.cli.main import main

    def options(cmd: Command) -> set[str]:
        return {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}

    for docs in rendered.values():
        for d, spec in _pod_specs(docs):
            for c in spec["containers"] + spec.get("initContainers", []):
                cmd = c["command"]
                if cmd[0] != "rlhf-ledger":
                    continue
                sub = main.get_command(None, cmd[1])
                assert sub is not None, cmd
                for part in cmd[2:]:
                    if part.startswith("--"):
                        assert part in options(sub), (d["metadata"]["name"], part)


@pytest.fixture(scope="module")
def checkov(rendered, tmp_path_factory) -> dict[str, dict[str, list]]:
    """One checkov run (it takes seconds to start) over both rendered overlays and an insecure
    copy of the production API Deployment; results by file name."""
    assert CHECKOV.exists(), "checkov is installed into .venv-lint by scripts/services.sh"
    d = tmp_path_factory.mktemp("checkov")
    for overlay, docs in rendered.items():
        (d / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs))
    api = copy.deepcopy(_by_kind(rendered["production"], "Deployment")["rlhf-ledger-api"])
    del api["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    api["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    (d / "insecure.yaml").write_text(yaml.safe_dump(api))
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_FILE": "1"}  # offline: no guideline download
    res = subprocess.run([str(CHECKOV), "-d", str(d), "--framework", "kubernetes", "--skip-download", "--output", "json"],
                         capture_output=True, text=True, env=env, timeout=300)
    results = json.loads(res.stdout)["results"]
    out: dict[str, dict[str, list]] = {}
    for kind in ("passed_checks", "failed_checks", "skipped_checks"):
        for c in results[kind]:
            out.setdefault(Path(c["file_path"]).name, {}).setdefault(kind, []).append(c)
    assert set(out) == {"dev.yaml", "production.yaml", "insecure.yaml"}, set(out)
    return out


def test_checkov_finds_no_failed_check(checkov):
    for overlay in OVERLAYS:
        report = checkov[f"{overlay}.yaml"]
        failed = [(c["check_id"], c["resource"]) for c in report.get("failed_checks", [])]
        assert failed == [], (overlay, failed)
        assert len(report["passed_checks"]) > 200, overlay
        assert report["skipped_checks"], overlay
        for skipped in report["skipped_checks"]:
            # Every skip carries a written reason (checkov.io/skipN: ID=reason).
            assert len(skipped["check_result"].get("suppress_comment", "")) > 30, skipped["check_id"]


def test_checkov_fails_an_insecure_manifest(checkov):
    """The linter is not vacuous: the API Deployment without its security context and
    readiness probe fails."""
    failed = {c["check_id"] for c in checkov["insecure.yaml"].get("failed_checks", [])}
    assert {"CKV_K8S_9", "CKV_K8S_22", "CKV_K8S_20"} <= failed, failed
