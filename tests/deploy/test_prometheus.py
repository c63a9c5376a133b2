"""Alert rules and the dashboard against the real Prometheus (Debian's package): `promtool
check rules`, `promtool test rules`, and a Prometheus server scraping the real service on
loopback that evaluates every alert and dashboard expression without error, over metrics the
service really exports (no expression names a metric that does not exist)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from api.tokens import create_token
from ledger import db
from ledger.store import Ledger
from tests.deploy import service
from tests.ledger.helpers import Producer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "ledger.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "ledger.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "rlhf-ledger.json"
LOG = "train"

needs_prometheus = pytest.mark.skipif(shutil.which("promtool") is None or shutil.which("prometheus") is None,
                                      reason="Debian's prometheus package (scripts/services.sh installs it)")


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    d = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p["targets"]]


@needs_prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(["promtool", "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {name for name, _ in rule_exprs()}  # every alert has a unit test


@needs_prometheus
def test_promtool_rejects_a_broken_rule(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(ledger_events_rejected_total[5m])\n")
    out = subprocess.run(["promtool", "check", "rules", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0


def test_compose_provisions_the_dashboard_and_rules():
    c = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    vols = c["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in vols
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in vols
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/rlhf-ledger.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    uids = {t["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]}
    assert uids == {ds["uid"]} and ds["url"] == "http://prometheus:9090"
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in c["prometheus"]["volumes"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["ledger:8080"]
    assert prom["scrape_configs"][0]["job_name"] == "rlhf-ledger"  # the job the rules name


@pytest.fixture
def live_service(pg_url, tmp_path):
    """The real service on PostgreSQL (the same database as its 'replica', so the replica
    metrics exist), with traffic that makes every metric family appear."""
    data = tmp_path / "data"
    lg = Ledger.open(data, pg_url)
    lg.init_log(LOG, checkpoint_every_events=5)
    prod = Producer(LOG)
    lg.register_producer(LOG, prod.signer.public_key)
    lg.append(prod.events(12), log_id=LOG)
    token, _ = create_token(lg.engine, "submitter", log_ids=[LOG], producer_key_ids=[prod.signer.key_id], run_ids=["*"])
    now = time.time()
    with lg.engine.begin() as c:  # an anchor row (the worker's table) so ledger_anchor_rows exists
        c.execute(db.anchors.insert().values(log_id=LOG, checkpoint_size=10, prev_size=0, status="failed", attempts=5,
                                             error="test row", created_at=now, updated_at=now))
    lg.close()
    svc = service.start(data, pg_url, {"DATABASE_READ_URL": pg_url})
    try:
        h = {"Authorization": f"Bearer {token}"}
        batch = prod.events(3)
        for _ in range(2):  # the second time: duplicates
            assert httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": batch}, headers=h).status_code == 200
        bad = prod.events(1)
        bad[0]["sig"] = bad[0]["sig"][:-4] + "AAA="
        assert httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": bad}, headers=h).status_code == 422
        assert httpx.get(f"{svc.url}/v1/logs", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{svc.url}/v1/logs/{LOG}/entries/3").status_code == 200
        yield svc
    finally:
        svc.stop()


@needs_prometheus
def test_real_prometheus_evaluates_every_alert_and_dashboard_expression(live_service, tmp_path):
    port = service.free_port()
    target = live_service.url.removeprefix("http://")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "rlhf-ledger", "static_configs": [{"targets": [target]}]}],
    }))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        def query(expr: str) -> dict:
            r = httpx.get(f"{api}/query", params={"query": expr}, timeout=10)
            return r.json()

        deadline = time.time() + 60
        while True:
            try:
                res = query('up{job="rlhf-ledger"}')
                if res["status"] == "success" and res["data"]["result"] and res["data"]["result"][0]["value"][1] == "1":
                    if query("ledger_proof_latency_seconds_count")["data"]["result"]:
                        break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.3)
        time.sleep(2.5)  # a few evaluations of the rules and enough samples for rate()

        exprs = rule_exprs() + dashboard_exprs()
        for name, expr in exprs:
            res = query(expr)
            assert res["status"] == "success", (name, expr, res)
        # Not vacuous: every metric an expression names is exported by the service.
        names = {n for _, e in exprs for n in re.findall(r"\b(ledger_[a-z_]+|up)\b", e)}
        for n in sorted(names):
            assert query(f'count({{__name__="{n}", job="rlhf-ledger"}})')["data"]["result"], f"{n} is not exported"
        rules = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} == {n for n, _ in rule_exprs()}
        for r in rules:
            assert r["health"] == "ok" and not r.get("lastError"), r
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
