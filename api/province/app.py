"""``create_app(settings)``: the provincial platform's FastAPI app (routers in api/province/routers/,
one per resource; the dashboard page and its static files; audit and body-limit middlewares)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.province import errors
from api.province.audit import AuditMiddleware, AuditWriter, BodyLimitMiddleware
from api.province.auth import Authenticator
from api.province.intake import GroupCommit, ReportIntake
from api.province.keys import SecretBox, load_master_key, verify_master
from api.province.routers import advisories, audit, credentials, enterprises, incidents, schema, situation, tokens
from api.province.service import ProvinceService
from api.province.settings import ProvinceSettings
from api.province.store import ProvinceStore
from api.province.stores import open_store
from api.province.throttle import ProvinceRateLimit

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = HERE.parent / "static" / "vendor"
API_VERSION = "1.0.0"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]


class SecurityHeaders:
    """Headers every answer carries (the dashboard is a page that handles a bearer token)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    settings: ProvinceSettings | None = None,
    store: ProvinceStore | None = None,
    *,
    master_key: bytes | None = None,
    clock: Callable[[], float] | None = None,
) -> FastAPI:
    import time

    from alerts import logsafe

    logsafe.install()  # tokens, secrets and the master key are masked in every log line
    settings = settings or ProvinceSettings.from_env()
    clock = clock or time.time
    store = store or open_store(settings)  # SQLite, or Elasticsearch with settings.store = "es"
    box = SecretBox(
        master_key if master_key is not None else load_master_key(settings.key_path(), settings.create_master_key)
    )
    verify_master(store, box)
    writer = AuditWriter(store, settings.audit_flush_seconds)
    committer = GroupCommit(store, settings.clock_skew, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        committer.close()
        writer.flush()
        writer.close()
        store.close()

    app = FastAPI(
        title="icswatch provincial platform",
        version=API_VERSION,
        description="Enterprise -> province incident reporting (signed, idempotent), advisories down, the regional "
        "situation. Protocol: docs/linkage.md.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.box = box
    app.state.auth = Authenticator(store, box, settings, clock)
    app.state.service = ProvinceService(store, settings, clock)
    app.state.intake = ReportIntake(app.state.service, committer)
    app.state.audit = writer
    errors.install(app)
    for module in (incidents, advisories, situation, enterprises, credentials, tokens, audit, schema):
        app.include_router(module.router)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/vendor", StaticFiles(directory=VENDOR), name="vendor")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    def openapi() -> dict[str, Any]:
        # The signed routes read raw bytes, so their body models are added to the components by hand.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            from pydantic.json_schema import models_json_schema

            from api.province.models import IncidentReport, IncidentUpdate

            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema(
                [(IncidentReport, "validation"), (IncidentUpdate, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            comps = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                comps.setdefault(name, schema)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Added last = outermost: the audit layer sees every answer, including the size refusals.
    app.add_middleware(BodyLimitMiddleware, max_body=settings.max_body)
    app.add_middleware(ProvinceRateLimit, settings=settings)  # inside the audit layer: 429s are audited
    app.add_middleware(AuditMiddleware, writer_of=lambda: writer, trusted_proxies=settings.trusted_proxies)
    app.add_middleware(SecurityHeaders)
    return app
