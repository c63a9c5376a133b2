"""The API's /docs (Swagger UI) and /redoc pages with their assets served by the service itself,
so they work with no internet. The assets are the ones the pinned ``fastapi-offline`` wheel ships
(Swagger UI 5, which renders OpenAPI 3.1, and ReDoc); only its static files are used."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


router = APIRouter(include_in_schema=False)


def _title(request: Request) -> str:
    return f"{request.app.title} - API docs"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=request.app.openapi_url or "/openapi.json", title=_title(request),
                               swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
                               oauth2_redirect_url="/docs/oauth2-redirect")


@router.get("/docs/oauth2-redirect")
def swagger_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=request.app.openapi_url or "/openapi.json", title=_title(request),
                          redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                          redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)


def install_offline_docs(app: FastAPI) -> None:
    """Serve /docs, /docs/oauth2-redirect and /redoc from local assets (create the app with
    docs_url=None, redoc_url=None so FastAPI's CDN-backed pages are not registered)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    app.include_router(router)
