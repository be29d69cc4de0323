"""The enterprise SOC API and dashboard (FastAPI): ``create_app(settings)``; guide in docs/api.md.

Modules: ``app`` (create_app, the context the routers share), ``settings``, ``state`` (tokens, audit,
annotations, jobs), ``auth`` (tokens and roles), ``middleware`` (headers, audit, rate and size
limits), ``adapters`` (datasets, assets, baseline, province reporting), ``rules`` (the API's view of
the rule set), ``jobs`` and ``replay_job`` (pcap upload and replay), ``models``, ``views``,
``routers/`` (one per resource), ``static/`` (the dashboard).
"""

from typing import Any

__all__ = ["EnterpriseSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: the replay job process imports this package without needing FastAPI.
    if name == "create_app":
        from api.enterprise.app import create_app

        return create_app
    if name == "EnterpriseSettings":
        from api.enterprise.settings import EnterpriseSettings

        return EnterpriseSettings
    raise AttributeError(name)
