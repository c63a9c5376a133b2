"""docker-compose.yml and the Dockerfile (docker is not available here: parsed and cross-checked)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_images():
    s = _compose()["services"]
    assert set(s) >= {"ledger", "anchor", "postgres", "kubo", "anvil"}
    assert s["postgres"]["image"].startswith("postgres:")
    assert s["kubo"]["image"].startswith("ipfs/kubo:") and any("5001" in p for p in s["kubo"]["ports"])
    assert s["anvil"]["image"].startswith("ghcr.io/foundry-rs/foundry:") and "anvil" in " ".join(s["anvil"]["command"])
    assert s["ledger"]["build"]["dockerfile"] == "Dockerfile" and (ROOT / s["ledger"]["build"]["dockerfile"]).exists()
    assert s["anchor"]["image"] == s["ledger"]["image"]


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    s = _compose()["services"]
    for name, svc in s.items():
        hc = svc.get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL") and len(hc["test"]) > 1, name
    assert s["ledger"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    deps = s["anchor"]["depends_on"]
    assert set(deps) == {"ledger", "postgres", "kubo", "anvil"}
    assert all(d["condition"] == "service_healthy" for d in deps.values())


def test_environment_wiring():
    c = _compose()
    s = c["services"]
    pg = s["postgres"]["environment"]
    for name in ("ledger", "anchor"):
        env = s[name]["environment"]
        url = env["DATABASE_URL"]
        assert url.startswith(f"postgresql://{pg['POSTGRES_USER']}:") and url.endswith(f"@postgres:5432/{pg['POSTGRES_DB']}"), url
        assert env["RLHF_LEDGER_HOME"] == "/data" and "RLHF_LEDGER_PASSPHRASE" in env
        assert "ledger-data:/data" in s[name]["volumes"]  # keys and data shared by the two
    assert s["anchor"]["environment"]["RLHF_CHAIN_RPC"] == "http://anvil:8545"
    cmd = s["anchor"]["command"]
    assert cmd[:3] == ["rlhf-ledger", "anchor", "--watch"]
    assert cmd[cmd.index("--ipfs") + 1] == "http://kubo:5001" and cmd[cmd.index("--rpc") + 1] == "http://anvil:8545"
    assert set(c["volumes"]) >= {"pg-data", "ipfs-data", "ledger-data"}


def _options(cmd) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}


def test_commands_use_real_cli_options():
    from anchoring.cli import anchor_command as anchor
    from api.cli import serve

    s = _compose()["services"]
    serve_opts = _options(serve)
    for part in s["ledger"]["command"][2:]:
        if part.startswith("--"):
            assert part in serve_opts, part
    anchor_opts = _options(anchor)
    for part in s["anchor"]["command"][2:]:
        if part.startswith("--"):
            assert part in anchor_opts, part


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    assert "-c requirements.lock" in text and "USER ledger" in text and "HEALTHCHECK" in text
    assert '"serve"' in text and "/readyz" in text
