"""``create_app(settings)``: the enterprise SOC API and dashboard (FastAPI).

One router per resource (routers/): alerts, incidents, assets, baseline, rules, stats, sensors,
jobs (pcap upload and replay), tokens, audit, health (+ /metrics). Versioned under ``/api/v1``; the
OpenAPI document at ``/openapi.json``, browsable at ``/docs`` (Swagger UI served from this app, no
CDN); the dashboard at ``/`` (static HTML/JS, charts from the vendored Apache ECharts).

The API reads the alert store through the ``AlertStore`` protocol only (alerts/store.py): SQLite by
default, or any store handed in (``create_app(settings, store=...)``, e.g. Elasticsearch).

Layers around the routes, outermost first: security headers, CORS (only ``api.cors_origins``),
audit of writes, rate limit, body size limit (middleware.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from alerts.store import AlertStore
from api.enterprise import errors
from api.enterprise.adapters import AssetView, BaselineView, Datasets, Reporter
from api.enterprise.auth import Authenticator
from api.enterprise.jobs import JobManager
from api.enterprise.middleware import Audit, BodyLimit, Metrics, RateLimit, SecurityHeaders
from api.enterprise.routers import (
    alerts,
    assets,
    audit,
    baseline,
    health,
    incidents,
    jobs,
    rules,
    sensors,
    stats,
    tokens,
)
from api.enterprise.rules import RuleSet
from api.enterprise.settings import EnterpriseSettings
from api.enterprise.state import StateStore

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = HERE.parent / "static" / "vendor"
API_VERSION = "1.0.0"
ROUTERS = (alerts, incidents, assets, baseline, rules, stats, sensors, jobs, tokens, audit, health)


@dataclass
class Context:
    """What the routers share (``request.app.state.ctx``)."""

    settings: EnterpriseSettings
    state: StateStore
    datasets: Datasets
    assets: AssetView
    baseline: BaselineView
    rules: RuleSet
    reporter: Reporter
    jobs: JobManager
    metrics: Metrics

    def close(self) -> None:
        self.jobs.stop()
        self.reporter.close()
        self.datasets.close()
        self.state.close()


def build_context(settings: EnterpriseSettings, store: AlertStore | None = None) -> Context:
    state = StateStore(settings.state_db)
    datasets = Datasets(settings, state, store)
    return Context(
        settings=settings,
        state=state,
        datasets=datasets,
        assets=AssetView(),
        baseline=BaselineView(settings.api.baseline),
        rules=RuleSet(settings.config, state),
        reporter=Reporter(settings),
        jobs=JobManager(settings, state, on_delete=datasets.forget),
        metrics=Metrics(),
    )


def create_app(settings: EnterpriseSettings | None = None, store: AlertStore | None = None, *, start_jobs: bool = True) -> FastAPI:
    from alerts import logsafe

    logsafe.install()  # tokens, keys and URL passwords are masked in every log line (access log included)
    settings = settings or EnterpriseSettings.from_env()
    c = build_context(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_jobs:
            c.jobs.start()
        if settings.api.read_indexes and c.datasets.live_path:
            import threading

            from api.enterprise.indexes import ensure_read_indexes

            threading.Thread(target=ensure_read_indexes, args=(c.datasets.live_path,), name="icswatch-read-indexes",
                             daemon=True).start()
        try:
            yield
        finally:
            c.close()

    app = FastAPI(
        title="icswatch enterprise SOC API",
        version=API_VERSION,
        description="Alerts, incidents, assets, baseline, rules, statistics and sensors of one plant, the analysts' "
        "workflow, and pcap upload and replay for testers. Every route needs an API token "
        "(`Authorization: Bearer ...`, roles viewer < analyst < admin) except /api/v1/health. Guide: docs/api.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = c
    app.state.auth = Authenticator(c.state)
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/vendor", StaticFiles(directory=VENDOR), name="vendor")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html; charset=utf-8")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:
        return RedirectResponse("/static/favicon.svg")

    api = settings.api
    # add_middleware puts each new layer outside the previous ones: the last added runs first.
    app.add_middleware(BodyLimit, max_body=api.max_body_bytes, upload_max=api.upload_max_bytes, metrics=c.metrics)
    app.add_middleware(RateLimit, rate=api.rate_limit, burst=api.rate_burst, metrics=c.metrics,
                       anonymous_rate=api.anonymous_rate_limit, anonymous_burst=api.anonymous_rate_burst)
    app.add_middleware(Audit, state_of=lambda: c.state, metrics=c.metrics)
    if api.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(api.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    return app


def app_from_env() -> FastAPI:
    """The factory ``icswatch serve`` gives uvicorn (settings from ``ICSWATCH_API_SETTINGS``)."""
    return create_app(EnterpriseSettings.from_env())
