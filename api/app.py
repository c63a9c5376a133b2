"""The ledger HTTP service: the FastAPI app factory (docs/api.md, docs/architecture.md "The API").

Run with `uvicorn --factory rlhf_ledger.api.app:create_app` (what `rlhf-ledger serve` does);
settings come from the environment (api/config.py). This module only composes: the per-process
state (api/service.py), the routers (api/routes/), the error map (api/errors.py), the OpenAPI
document (api/openapi.py) and the guard middleware. Handlers that touch the database are plain
`def`s, run in the thread pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from rlhf_ledger.api.config import Settings
from rlhf_ledger.api.docs_offline import install_offline_docs
from rlhf_ledger.api.errors import install_error_handlers
from rlhf_ledger.api.middleware import GuardMiddleware
from rlhf_ledger.api.openapi import install_openapi
from rlhf_ledger.api.routes import (
    access,
    anchors,
    bundles,
    checkpoints,
    logs,
    ops,
    payloads,
    proofs,
    runs,
    submission,
    tokens,
)
from rlhf_ledger.api.service import Service
from rlhf_ledger.store.ledger import Ledger

# In this order (route matching and the order of the published paths).
V1_ROUTERS = (access, logs, submission, proofs, checkpoints, anchors, bundles, payloads, tokens, runs)


def create_app(ledger: Ledger | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the service. With no ledger, open the one the settings (environment) point at."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns = ledger is None
        lg = ledger if ledger is not None else Ledger.open(settings.data_dir, settings.database_url)
        svc = Service(lg, settings, owns_ledger=owns)
        await run_in_threadpool(svc.start)
        app.state.service = svc
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(
        title="RLHF provenance ledger",
        version="1.0.0",
        description="Submission of signed audit events, Merkle proofs, checkpoints, anchors and proof bundles. See docs/api.md.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are served with local assets (api/docs_offline.py)
        redoc_url=None,
    )
    for module in V1_ROUTERS:
        app.include_router(module.router)
    install_offline_docs(app)
    app.include_router(ops.router)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, timeout=settings.request_timeout, exempt_timeout=())
    return app
