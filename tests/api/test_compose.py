"""docker-compose.yml and the Dockerfile (docker is not available here: parsed and cross-checked)."""

from __future__ import annotations

from pathlib import Path

import pytest
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
        assert env["DATABASE_URL_FILE"] == "/run/secrets/ledger_database_url" and "DATABASE_URL" not in env
        assert env["RLHF_LEDGER_HOME"] == "/data" and env["RLHF_LEDGER_PASSPHRASE_FILE"] == "/run/secrets/ledger_passphrase"
        assert {"ledger_database_url", "ledger_passphrase"} <= set(s[name]["secrets"])
        assert "ledger-data:/data" in s[name]["volumes"]  # keys and data shared by the two
    assert pg["POSTGRES_DB"] == "ledger"
    assert s["anchor"]["environment"]["RLHF_CHAIN_RPC"] == "http://anvil:8545"
    cmd = s["anchor"]["command"]
    assert cmd[:3] == ["rlhf-ledger", "anchor", "--watch"]
    assert cmd[cmd.index("--ipfs") + 1] == "http://kubo:5001" and cmd[cmd.index("--rpc") + 1] == "http://anvil:8545"
    assert set(c["volumes"]) >= {"pg-data", "ipfs-data", "ledger-data"}


def _walk_strings(x):
    if isinstance(x, dict):
        for k, v in x.items():
            yield str(k)
            yield from _walk_strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk_strings(v)
    elif x is not None:
        yield str(x)


def test_no_default_passwords_and_secrets_from_files():
    """Item 6: no secret in an environment variable or with a default; every secret a file."""
    c = _compose()
    text = (ROOT / "docker-compose.yml").read_text()
    assert ":-" not in text, "a ${VAR:-default} gives a default value"
    secret_words = ("PASSWORD", "PASSPHRASE", "PRIVATE_KEY", "SECRET", "TOKEN")
    for name, svc in c["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if any(w in var.upper() for w in secret_words):
                assert var.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, var)
            assert "://" not in str(value) or "@" not in str(value), (name, var)  # no credentials in URLs
        for secret in svc.get("secrets", []):
            assert secret in c["secrets"], (name, secret)
    for name, spec in c["secrets"].items():
        assert set(spec) == {"file"} and spec["file"].startswith("./secrets/"), name
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()


def test_service_role_is_not_the_superuser():
    c = _compose()
    pg = c["services"]["postgres"]
    init_mount = [v for v in pg["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro")]
    assert init_mount
    script = (ROOT / init_mount[0].split(":")[0]).resolve() / "10-ledger-role.sh"
    sql = script.read_text()
    assert "CREATE ROLE ledger_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in sql
    assert "/run/secrets/ledger_db_password" in sql and pg["environment"]["POSTGRES_USER"] != "ledger_app"
    assert "ledger_db_password" in pg["secrets"]


@pytest.mark.slow
def test_role_script_grants_what_the_service_needs_on_a_real_server():
    """The init script's SQL on the real PostgreSQL: the role migrates, appends, erases
    (VACUUM FULL of its own table), and is refused superuser actions."""
    import secrets as _s

    from .conftest import PG_ADMIN, pg_available

    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    import psycopg

    db = "rlhf_role_" + _s.token_hex(4)
    role = "ledger_app_" + _s.token_hex(4)
    sql = (ROOT / "compose/postgres-init/10-ledger-role.sh").read_text()
    body = sql.split("<<'SQL'\n", 1)[1].split("\nSQL", 1)[0].replace("ledger_app", role).replace("DATABASE ledger", f"DATABASE {db}")
    body = body.replace(":'pw'", "'pw-" + _s.token_hex(4) + "'")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + db, autocommit=True) as conn:
            for stmt in filter(None, (x.strip() for x in body.split(";"))):
                conn.execute(stmt)
        url = f"postgresql://{role}@127.0.0.1:5432/{db}"  # trust auth on the test machine
        import os
        import tempfile

        from rlhf_ledger.store.ledger import Ledger

        os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "x")
        d = tempfile.mkdtemp()
        ledger = Ledger.open(d, url)
        try:
            from rlhf_ledger.core.events import commit_fields
            from tests.ledger.helpers import Producer

            ledger.init_log("role-check")
            prod = Producer("role-check")
            ledger.register_producer("role-check", prod.signer.public_key)
            envs = []
            for run in ("r1", "r2"):  # erasure re-wraps keys and runs VACUUM FULL on run_keys, subject_keys
                body, op = commit_fields({"prompts": ["x"]}, ["prompts"])
                envs.append({**prod.event(run, "annotation.batch", body), "openings": op, "subjects": {"prompts": ["anp:" + "0" * 64]}})
            ledger.append(envs)
            assert ledger.erase_subject("anp:" + "0" * 64).recorded
            assert ledger.erase_run("role-check", "r1").recorded
        finally:
            ledger.close()
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE DATABASE x_should_fail")
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _options(cmd) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}


def test_commands_use_real_cli_options():
    from rlhf_ledger.cli.anchor import anchor_command as anchor
    from rlhf_ledger.cli.serve import serve

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
