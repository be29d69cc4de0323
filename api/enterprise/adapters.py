"""Thin adapters between the API and the stores it reads, where their interfaces stop short.

- ``Datasets``: the live alert store (Elasticsearch when ``elasticsearch.urls`` names a cluster, else
  the SQLite file of ``outputs.sqlite``, or any ``AlertStore`` handed to ``create_app``) and one SQLite
  store per replay job (``upload_dir/<job>/``),
  so testers' uploads never mix with the plant's alerts. A dataset is named ``live`` or by its job id.
- ``AssetView``: the asset inventory (alerts/asset_store.py) of a dataset, cached until it changes,
  with the peers' protocols inferred (an asset's peers are stored without the protocol they spoke:
  the protocol of a pair is what one side speaks as client and the other answers as server).
- ``BaselineView``: the baseline YAML named by ``api.baseline`` (detectors/baseline): read, and
  changed by accepting a false-positive alert into it (detectors/baseline/accept.py), one writer
  at a time, atomically.
- ``Reporter``: marks an incident for the province. With ``linkage.enabled`` the report is queued
  in the linkage outbox (alerts/outbox.py ``OutboxWriter.mark``: redaction, idempotent updates,
  delivery by the forwarder); without it the mark is only recorded, and the answer says so.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from alerts.records import Observer
from alerts.store import AlertQuery, AlertStore
from api.enterprise.errors import ApiError
from api.enterprise.settings import EnterpriseSettings
from api.enterprise.state import StateStore

LIVE = "live"
JOB_ID_RE = re.compile(r"^job_[0-9a-f]{16}$")
MAX_OPEN_JOB_STORES = 8


def configured_store(settings: EnterpriseSettings) -> AlertStore | None:
    """The Elasticsearch store when the configuration names a cluster (``elasticsearch.urls`` or
    ICSWATCH_ES_URL), else None (SQLite)."""
    es_cfg = getattr(settings.config, "elasticsearch", None)
    if es_cfg is None:
        return None
    try:
        from alerts.es_sink import EsSettings
        from alerts.es_store import ElasticsearchStore
    except ImportError:
        return None
    es = EsSettings.from_config(es_cfg)
    if not es.enabled:
        return None
    return ElasticsearchStore(es, Observer.from_config(settings.config.sensor))


class Datasets:
    def __init__(self, settings: EnterpriseSettings, state: StateStore, live: AlertStore | None = None) -> None:
        from alerts.sqlite_store import SQLiteStore

        self.settings = settings
        self.state = state
        self.observer = Observer.from_config(settings.config.sensor)
        if live is None:
            live = configured_store(settings)
        self.live: AlertStore = live if live is not None else SQLiteStore(settings.db, self.observer)
        self.live_path: str | None = settings.db if live is None else None
        self._jobs: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def job_dir(self, job_id: str) -> Path:
        # The dataset name is a client's: only a well-formed job id ever becomes part of a path.
        if not JOB_ID_RE.match(job_id):
            raise ApiError(422, "invalid_dataset", "dataset is 'live' or a replay job id (job_ and 16 hex digits)")
        return self.settings.upload_dir / job_id

    def db_path(self, name: str) -> str | None:
        """The SQLite file of a dataset (its asset inventory lives there too)."""
        if name == LIVE:
            return self.live_path or self.settings.db
        return str(self.job_dir(name) / "dataset.db")

    def check(self, name: str) -> None:
        if name == LIVE:
            return
        if not JOB_ID_RE.match(name):
            raise ApiError(422, "invalid_dataset", "dataset is 'live' or a replay job id (job_ and 16 hex digits)")
        job = self.state.job(name)
        if job is None:
            raise ApiError(404, "not_found", f"no replay job {name!r}")
        if not (self.job_dir(name) / "dataset.db").exists():
            raise ApiError(409, "dataset_not_ready", f"job {name} has not stored anything yet (state {job['state']})")

    def store(self, name: str = LIVE) -> AlertStore:
        if name == LIVE:
            return self.live
        self.check(name)
        with self._lock:
            st = self._jobs.get(name)
            if st is None:
                from alerts.sqlite_store import SQLiteStore

                st = SQLiteStore(self.job_dir(name) / "dataset.db", self.observer)
                self._jobs[name] = st
                while len(self._jobs) > MAX_OPEN_JOB_STORES:
                    _, old = self._jobs.popitem(last=False)
                    old.close()
            else:
                self._jobs.move_to_end(name)
            return st

    def forget(self, name: str) -> None:
        with self._lock:
            st = self._jobs.pop(name, None)
        if st is not None:
            st.close()

    def close(self) -> None:
        with self._lock:
            stores = list(self._jobs.values())
            self._jobs.clear()
        for st in stores:
            st.close()
        self.live.close()


# --- assets -----------------------------------------------------------------------------------------


def pair_protocols(client: dict[str, Any], server: dict[str, Any]) -> list[str]:
    """Protocols one asset speaks as client and the other answers as server."""
    return sorted(set(client.get("client_protocols") or {}) & set(server.get("server_protocols") or {}))


class AssetView:
    """The inventory of one dataset's SQLite file, re-read only when it changed."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, list[dict[str, Any]], dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _open(path: str) -> Any:
        from alerts.asset_store import AssetStore

        return AssetStore(path)

    def records(self, path: str | None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        if not path or not os.path.exists(path):
            return [], {}
        import sqlite3

        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                has = con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'assets'").fetchone()
                if not has:
                    return [], {}
                version = con.execute("SELECT COUNT(*), MAX(updated_at), SUM(events), MAX(last_seen) FROM assets").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return [], {}
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == tuple(version):
                return hit[1], hit[2]
        store = self._open(path)
        try:
            recs = store.records()
        finally:
            store.close()
        by_addr = {r["address"]: r for r in recs}
        with self._lock:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[path] = (tuple(version), recs, by_addr)
        return recs, by_addr

    @staticmethod
    def talkers(asset: dict[str, Any], by_addr: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The asset's peers with the protocols of each relation and who is the client."""
        out = []
        for peer in asset.get("peers") or []:
            other = by_addr.get(peer) or {"address": peer}
            as_client = pair_protocols(asset, other)
            as_server = pair_protocols(other, asset)
            out.append(
                {
                    "address": peer,
                    "role": other.get("role"),
                    "protocols": sorted(set(as_client) | set(as_server)),
                    "direction": "both" if as_client and as_server else ("client" if as_client else ("server" if as_server else "unknown")),
                }
            )
        return out


def graph(records: list[dict[str, Any]], by_addr: dict[str, dict[str, Any]], alert_pairs: dict[tuple[str, str, str], int],
          limit: int = 500) -> dict[str, Any]:
    """Nodes (assets) and edges (client -> server, per protocol) for the communication graph."""
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    for a in records:
        for peer in a.get("peers") or []:
            other = by_addr.get(peer)
            if other is None:
                continue
            for proto in pair_protocols(a, other):
                key = (a["address"], peer, proto)
                edges.setdefault(key, {"source": a["address"], "target": peer, "protocol": proto, "alerts": 0})
    for (src, dst, proto), n in alert_pairs.items():
        key = (src, dst, proto)
        rev = (dst, src, proto)
        if rev in edges and key not in edges:
            key = rev
        e = edges.setdefault(key, {"source": key[0], "target": key[1], "protocol": proto, "alerts": 0})
        e["alerts"] += n
    alerts_per_node: dict[str, int] = {}
    for e in edges.values():
        for k in ("source", "target"):
            alerts_per_node[e[k]] = alerts_per_node.get(e[k], 0) + e["alerts"]
    names = {e["source"] for e in edges.values()} | {e["target"] for e in edges.values()} | set(by_addr)
    nodes = []
    for name in sorted(names):
        a = by_addr.get(name) or {}
        protos = sorted(set(a.get("client_protocols") or {}) | set(a.get("server_protocols") or {}))
        nodes.append(
            {
                "id": name,
                "role": a.get("role") or "unknown",
                "vendor": a.get("vendor") or a.get("mac_vendor"),
                "product": a.get("product"),
                "protocols": protos,
                "events": int(a.get("events") or 0),
                "alerts": alerts_per_node.get(name, 0),
            }
        )
    ordered = sorted(edges.values(), key=lambda e: (-e["alerts"], e["source"], e["target"], e["protocol"]))
    return {"nodes": nodes[: limit * 2], "edges": ordered[:limit], "truncated": len(ordered) > limit}


def alert_pairs(store: AlertStore, limit: int = 2000) -> dict[tuple[str, str, str], int]:
    """(src, dst, protocol) -> alerts, over the newest ``limit`` alerts (bounded work per request)."""
    out: dict[tuple[str, str, str], int] = {}
    cursor = None
    seen = 0
    while seen < limit:
        page = store.search_alerts(AlertQuery(limit=min(500, limit - seen), cursor=cursor))
        for d in page.items:
            src = (d.get("source") or {}).get("ip") or ""
            dst = (d.get("destination") or {}).get("ip") or ""
            proto = (d.get("network") or {}).get("protocol") or ""
            if src and dst:
                out[(src, dst, proto)] = out.get((src, dst, proto), 0) + 1
        seen += len(page.items)
        cursor = page.next_cursor
        if not cursor or not page.items:
            break
    return out


# --- baseline ----------------------------------------------------------------------------------------


class BaselineView:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[float, Any] | None = None

    @property
    def configured(self) -> bool:
        return bool(self.path)

    def load(self) -> Any:
        from detectors.baseline.model import BaselineFormatError
        from detectors.baseline.yamlio import load

        if not self.path:
            raise ApiError(404, "no_baseline", "no baseline is configured (api.baseline in the configuration)")
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            raise ApiError(404, "no_baseline", "the configured baseline file does not exist (learn one: icswatch learn)") from None
        with self._lock:
            if self._cache is not None and self._cache[0] == mtime:
                return self._cache[1]
            try:
                b = load(self.path)
            except BaselineFormatError as exc:
                raise ApiError(409, "bad_baseline", f"the baseline cannot be read: {exc}") from None
            self._cache = (mtime, b)
            return b

    def summary(self, b: Any) -> dict[str, Any]:
        from detectors.baseline.model import to_dict

        d = to_dict(b)
        return {
            "path": os.path.basename(self.path or ""),
            "version": d["version"],
            "learned": d["learned"],
            "settings": d["settings"],
            "truncated": d.get("truncated", {}),
            "counts": {
                "assets": len(d["assets"]),
                "pairs": len(d["pairs"]),
                "functions": sum(len(p.get("functions", [])) for p in d["pairs"]),
                "polls": sum(len(p.get("polls", [])) for p in d["pairs"]),
                "accepted": len(d["accepted"]),
            },
            "assets": d["assets"],
            "pairs": json.loads(json.dumps(d["pairs"])),  # int keys of value ranges become strings, as in JSON
        }

    def accept(self, alert_id: str, rule_id: str, details: dict[str, Any], by: str, why: str) -> dict[str, Any]:
        from detectors.baseline.accept import AcceptError, accept
        from detectors.baseline.yamlio import save

        with self._lock:
            self._cache = None
        b = self.load()
        with self._lock:
            try:
                record = accept(b, alert_id, rule_id, details, by, why)
            except AcceptError as exc:
                self._cache = None
                raise ApiError(409, "cannot_accept", str(exc)) from None
            save(b, self.path)  # type: ignore[arg-type]
            self._cache = None
        return record


# --- reporting to the province ----------------------------------------------------------------------------


class Reporter:
    def __init__(self, settings: EnterpriseSettings) -> None:
        self.settings = settings
        self._writer: Any = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.config.linkage.enabled)

    def mark(self, incident_doc: dict[str, Any], alert_docs: list[dict[str, Any]]) -> tuple[int, str]:
        """(entries queued, what happened) for the answer and the activity trail."""
        if not self.enabled:
            return 0, "recorded only: linkage is not enabled (linkage.enabled), nothing was queued for the province"
        from alerts.outbox import OutboxWriter

        with self._lock:
            if self._writer is None:
                self._writer = OutboxWriter.from_config(self.settings.config)
            n = self._writer.mark(incident_doc, alert_docs, by="analyst")
        if n:
            return n, f"queued in the linkage outbox ({n} entr{'y' if n == 1 else 'ies'}); the forwarder delivers it"
        return 0, "already queued or reported in this state: nothing new to send"

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
