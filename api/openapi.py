"""The published OpenAPI document: FastAPI's, with every error documented as a Problem."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from rlhf_ledger.api.problems import COMMON_RESPONSES, Problem


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in comps["Problem"].pop("$defs", {}).items():
                comps.setdefault(name, sub)
            # FastAPI adds its own 422 (HTTPValidationError, application/json): ours is a Problem.
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    if isinstance(op, dict) and "responses" in op:
                        op["responses"]["422"] = COMMON_RESPONSES[422]
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
