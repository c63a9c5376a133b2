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
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from rlhf_ledger.api.tokens import create_token
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger
from tests.api.helpers import wait_for
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


class Prometheus:
    """The real Prometheus server on a free loopback port, scraping `target` every 0.5 s and
    evaluating the rules every 0.25 s (short, so the test waits for evaluations, not sleeps)."""

    def __init__(self, tmp_path: Path, target: str):
        self.port = service.free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "250ms"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "rlhf-ledger", "static_configs": [{"targets": [target]}]}],
        }))
        self.log_path = tmp_path / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                          f"--web.listen-address=127.0.0.1:{self.port}"], stdout=log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> dict:
        return httpx.get(f"{self.api}/query", params={"query": expr}, timeout=10).json()

    def rules(self) -> list[dict]:
        return httpx.get(f"{self.api}/rules", timeout=10).json()["data"]["groups"][0]["rules"]

    def stop(self) -> None:
        self.proc.kill()  # its data is thrown away: no need for the orderly TSDB shutdown (seconds)
        self.proc.wait(20)


@pytest.fixture
def stack(pg_url, tmp_path):
    """The real service on PostgreSQL (the same database as its 'replica', so the replica
    metrics exist), with traffic that makes every metric family appear, and Prometheus
    scraping it (both started side by side)."""
    data = tmp_path / "data"
    lg = Ledger.open(data, pg_url)
    lg.init_log(LOG, checkpoint_every_events=5)
    prod = Producer(LOG)
    lg.register_producer(LOG, prod.signer.public_key)
    lg.append(prod.events(12), log_id=LOG)
    token, _ = create_token(lg.tokens, "submitter", log_ids=[LOG], producer_key_ids=[prod.signer.key_id], run_ids=["*"])
    now = time.time()
    with lg.engine.begin() as c:  # an anchor row (the worker's table) so ledger_anchor_rows exists
        c.execute(db.anchors.insert().values(log_id=LOG, checkpoint_size=10, prev_size=0, status="failed", attempts=5,
                                             error="test row", created_at=now, updated_at=now))
    lg.close()
    svc = service.launch(data, pg_url, {"DATABASE_READ_URL": pg_url})
    prom = Prometheus(tmp_path, svc.url.removeprefix("http://"))
    try:
        svc.wait_alive()
        h = {"Authorization": f"Bearer {token}"}
        batch = prod.events(3)
        for _ in range(2):  # the second time: duplicates
            assert httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": batch}, headers=h).status_code == 200
        bad = prod.events(1)
        bad[0]["sig"] = bad[0]["sig"][:-4] + "AAA="
        assert httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": bad}, headers=h).status_code == 422
        assert httpx.get(f"{svc.url}/v1/logs", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{svc.url}/v1/logs/{LOG}/entries/3").status_code == 200
        yield svc, prom
    finally:
        prom.stop()
        svc.stop()


@needs_prometheus
def test_real_prometheus_evaluates_every_alert_and_dashboard_expression(stack):
    svc, prom = stack

    def scraped() -> float | None:
        """A time (the query's) by which a successful scrape holding the traffic's metrics happened."""
        try:
            res = prom.query('up{job="rlhf-ledger"}')
            if res["status"] == "success" and res["data"]["result"] and res["data"]["result"][0]["value"][1] == "1":
                if prom.query("ledger_proof_latency_seconds_count")["data"]["result"]:
                    return res["data"]["result"][0]["value"][0]
        except (httpx.HTTPError, ValueError):  # not listening yet, or its plain-text 503 while the TSDB starts
            pass
        return None

    t_scraped = wait_for(scraped, 60, f"Prometheus to scrape the service: {prom.log_path}")

    def evaluated_since_scrape() -> bool:
        rules = prom.rules()
        return all(r.get("lastEvaluation", "").startswith("2") and
                   datetime.fromisoformat(r["lastEvaluation"].replace("Z", "+00:00")).timestamp() > t_scraped for r in rules)

    wait_for(evaluated_since_scrape, 30, "every rule to be evaluated over the scraped metrics")
    exprs = rule_exprs() + dashboard_exprs()
    for name, expr in exprs:
        res = prom.query(expr)
        assert res["status"] == "success", (name, expr, res)
    # Not vacuous: every metric an expression names is exported by the service.
    names = {n for _, e in exprs for n in re.findall(r"\b(ledger_[a-z_]+|up)\b", e)}
    for n in sorted(names):
        assert prom.query(f'count({{__name__="{n}", job="rlhf-ledger"}})')["data"]["result"], f"{n} is not exported"
    rules = prom.rules()
    assert {r["name"] for r in rules} == {n for n, _ in rule_exprs()}
    for r in rules:
        assert r["health"] == "ok" and not r.get("lastError"), r
