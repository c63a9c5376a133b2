"""Names vulture cannot see being used (tests/test_lint.py runs it over the product and the
verifier only). Each entry says who uses it. Never executed: vulture only reads the names."""
# ruff: noqa: B018, F821 -- bare names are the whitelist's syntax; `_` stands for any object

# --- called by a framework ---------------------------------------------------------------

# click: commands loaded lazily by "module:attribute" strings (ledger/cli/main.py _LAZY) or
# registered by their decorators on a group
erase_run_command
erase_subject_command
export_command
migrate_command
migrate_keys_command
recover_command
record_command
runs_command
devchain_command
serve_command
token_command
status_command
flush_command
token_create
token_list
token_revoke
keygen
prove
show
_.format_message  # click.ClickException calls it to print CliError (ledger/cli/common.py)

# alembic: every migration module's revision chain and downgrade step
down_revision
branch_labels
depends_on
downgrade

# SQLAlchemy: @event.listens_for(...) hooks (ledger/store/db.py)
_sqlite_pragmas
_sqlite_begin

# transformers: Trainer calls the callback's on_* methods with (args, state, control, **kw)
LedgerCallback
_.on_train_begin
_.on_log
_.on_evaluate
_.on_save
_.on_train_end
control

# torch: nn.Module.__call__ calls forward (ledger/demo/rlhf.py)
_.forward

# --- fields read by name (TypedDict keys, record fields serialised or returned to callers) -

# verifier listings (TypedDicts, JSON output of `rlhf-verify --json`; docs/verifier.md)
contract_code
registered_at_index
revoked_at_index
anchored_statement
names_released_weights  # compliance reviews TypedDict, read by report/text.py and report/html.py
passed_integrity_checks
# decoded structures keep every field they parse (note.Checkpoint, evidence.BlockHeader)
_.extensions
_.note_text
_.parent_hash
# store/anchoring records: AnchorRecord.as_json lists every column (`rlhf-ledger anchors
# --json`), ReplicaStatus and ParsedManifest are what replica_status/verify_manifest return
_.gas_used
_.in_recovery
_.document

# --- public API whose callers live outside the scanned folders ----------------------------
# (tests, benchmarks, documented SDK/operator use)

# anchoring: contract administration and diagnostics (docs/contract.md; tests/anchoring/test_contract*.py)
_.is_authorized
_.pending_owner
_.rotate_log_key
_.transfer_ownership
_.accept_ownership
_.failovers  # ChainClient counters, read by tests/anchoring/test_chain.py and test_worker_failures.py
_.retries_done
_.set_automine  # dev chains (tests/anchoring/conftest.py)
HardhatNode  # the second EVM the contract is tested on (tests/anchoring/test_second_evm.py)
write_keystore  # keystore v3 writer (tests/anchoring/test_chain.py)
to_v0  # CID helpers (tests/anchoring/test_cid*.py, test_kubo_client.py, test_content_store.py)
to_v1
iter_links
manifest_cid  # tests/anchoring/test_manifest.py
_.watch  # AnchorWorker.watch: repeated passes with backoff (docs/anchoring.md; tests/anchoring/test_worker.py)

# core: the pure run-index builder tests/verifier/factory.py builds bundles with, and the
# single-event signature check (tests/install/test_sdk_install.py)
records_from_entries
sign_index
_.verify_signature
_.reads  # merkle.MemoryNodeStore counters (docs/merkle.md, docs/storage.md; tests, benchmarks)
_.calls

# store: auditor reads, lease introspection, and the v1 payload writer tests use to make rows
# as older code wrote them (tests/ledger/test_migrations.py, test_erasure.py)
_.read_payload
_.current_holder
_.seal

# SDK (docs/sdk.md)
NullRecorder  # the no-op recorder benchmarks/audit_overhead.py measures against
_.manages_run
replay_epsilon
_.delivery_error
_.rank_recorder
_.retries  # Sender counter (tests/sdk/test_delivery.py)

# verifier helpers the tests use
cid_for
load_producer_key

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
