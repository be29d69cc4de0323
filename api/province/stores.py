"""``open_store(settings)``: the store the platform's settings ask for.

- ``store: sqlite`` (the default): everything in the SQLite file ``db``
  (api/province/sqlite_store.py).
- ``store: es``: incidents, their history, advisories and acknowledgements, and the audit log in
  Elasticsearch (api/province/es_store.py); the registry, credentials, tokens and the replay cache
  stay in the SQLite file ``db``, which every signed request reads (store.py says why).
"""

from __future__ import annotations

import os

from api.province.settings import ProvinceSettings
from api.province.store import ProvinceStore, StoreError

ENV_ES_URL = "ICSWATCH_ES_URL"  # the enterprise side's variable: one cluster for both is the common case


def es_urls(settings: ProvinceSettings) -> list[str]:
    """``es_urls``, else ICSWATCH_ES_URL (comma- or space-separated)."""
    if settings.es_urls:
        return list(settings.es_urls)
    raw = os.environ.get(ENV_ES_URL, "")
    return [u.strip() for u in raw.replace(" ", ",").split(",") if u.strip()]


def open_store(settings: ProvinceSettings) -> ProvinceStore:
    from api.province.sqlite_store import SQLiteProvinceStore

    registry = SQLiteProvinceStore(settings.db, settings.synchronous, settings.max_nonces)
    if settings.store == "sqlite":
        return registry
    urls = es_urls(settings)
    if not urls:
        registry.close()
        raise StoreError("store=es needs Elasticsearch: give --es-url URL, es_urls or ICSWATCH_ES_URL")
    from api.province.es_store import ElasticsearchProvinceStore, es_settings

    try:
        return ElasticsearchProvinceStore(registry, es_settings(settings, urls))
    except Exception:
        registry.close()
        raise
