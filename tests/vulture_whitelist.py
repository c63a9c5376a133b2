"""Names only frameworks call (vulture cannot see the call): none needed yet."""

# api
# Names only FastAPI, uvicorn, pydantic or prometheus_client call: route functions registered by
# decorator, the app factory uvicorn loads by name, collectors' collect(),
# pydantic fields and model_config.
from rlhf_ledger.api import app, docs_offline, metrics, models, ops_metrics, tokens  # noqa: E402
from rlhf_ledger.api.routes import access, anchors, bundles, checkpoints, logs, ops, payloads, proofs  # noqa: E402

_ = (
    app.create_app,  # uvicorn --factory rlhf_ledger.api.app:create_app
    access.whoami,
    anchors.list_anchors, anchors.get_anchor, anchors.entry_anchor,
    bundles.bundle_event, bundles.bundle_range, bundles.bundle_run,
    checkpoints.latest_note,
    logs.get_log, logs.list_producers,
    ops.healthz, ops.readyz,
    payloads.get_payload,
    proofs.get_event, proofs.get_tlog_proof, proofs.get_consistency,
    docs_offline.swagger_ui, docs_offline.swagger_redirect, docs_offline.redoc,
    metrics.LagCollector.collect, ops_metrics.OpsCollector.collect,
    models.AnchorOut.covered_range, models._Strict.model_config,
    tokens.create_admin_token,  # the documented Python bootstrap (docs/api.md), used by the API tests
)
