"""The Elasticsearch output: alerts, incidents and (optionally) ICS events as ECS documents, in bulk,
never lost and never duplicated while the cluster is slow or down. Operator's guide:
docs/elasticsearch.md; mappings and index names: alerts/es_templates.py; the spool: alerts/es_spool.py.

Shape. ``ElasticsearchSink`` is an alert output (``write(batch)``/``close()``, alerts/store.py). The
sensor thread only turns each batch into documents (ECS, serialised once) and appends them to an
in-memory queue; one background thread ("icswatch-es-sink") sends them with the official client:

- **Bulk batching** by count (``bulk_max_docs``), size (``bulk_max_bytes``) and time: a partial bulk
  leaves at most ``flush_seconds`` after its first document was queued.
- **Retry with backoff** (exponential, capped at ``retry_max``, with jitter) when the request fails
  (connection refused or reset, timeout, HTTP 429, 5xx, 401/403 such as a read-only cluster block) and
  for the items of a bulk that come back 429/5xx; after ``retries`` retries the documents go to the
  spool and the sink is "down".
- **Per-item errors**: an item refused for good (a 4xx such as a mapping rejection) is counted
  (``rejected``), logged at ERROR with its index, id, reason and the document itself (the first 2 KB),
  kept in ``recent_rejections``, and does not hold back the others of its bulk.
- **Durable spool**: while the sink is down, and while anything is still spooled, every document goes
  to the on-disk spool (in the order the sensor produced them); the thread probes the cluster with the
  same backoff and, once it answers, replays the spool oldest first, while the sensor keeps running and
  the newest documents queue behind. A queue above ``queue_max_mb`` (the cluster slower than the
  sensor) spills to the spool too: the sensor never waits for Elasticsearch.
- **No duplicates**: ``_id`` is deterministic (the alert id, the incident id, a hash of the event),
  alerts/events/context use the ``create`` op, so a retry of a document that did land gets 409
  (counted as ``already_present``, not an error) and an analyst's status change on a stored alert is
  never overwritten by a replay; an incident is an ``update`` carrying its whole state as ``doc``
  (without the status, which belongs to the analyst) and as ``upsert``. Within a bulk, successive
  states of one incident are coalesced into the newest.
- **Counters** (``stats()``): sent, already_present, retried, spooled, spool_pending, spool_dropped,
  rejected, bulks, failed requests, state (up / down / catching up), last error; written every few
  seconds and at close to ``<spool>.stats.json`` for ``icswatch es stats``.

Servers 8.x and 9.x: the client 9.x asks for ``compatible-with=9`` which an 8.x server refuses, so the
first request reads the server's version with ``compatible-with=8`` (which both accept) and keeps that
header for an 8.x server.

``close()`` sends what is queued and replays the spool for at most ``close_timeout`` seconds; whatever
Elasticsearch did not take by then stays in the spool for the next run. Documents still in memory are
the only ones a ``kill -9`` can lose (at most ``flush_seconds`` of them, as with the SQLite store's
pending batch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alerts import es_templates
from alerts.es_spool import Spool
from alerts.records import Incident, Observer, _jsonable, evidence_of, iso_time
from alerts.store import WriteBatch
from sensor.events import IcsEvent

log = logging.getLogger(__name__)

ENV_URL = "ICSWATCH_ES_URL"
COMPAT_8 = "application/vnd.elasticsearch+json; compatible-with=8"
EVENT_MODES = ("off", "sampled", "all")
MAX_INCIDENT_INDEX_MEMO = 100_000  # incident id -> its daily index (an incident stays in one index)
STATS_EVERY = 5.0  # seconds between two writes of the stats file
LOGGED_DOC_BYTES = 2048  # how much of a rejected document the log shows
# The bulk answer carries only what the sink reads (statuses and errors): a smaller answer to parse.
BULK_FILTER = "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.reason"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DOWN_STATUSES = frozenset({401, 403})  # credentials or a cluster block (read-only, flood stage): retry later


@dataclass
class EsSettings:
    """What the sink and the store need, from ``config.elasticsearch`` (duck-typed: ``alerts/`` does not
    import the CLI's pydantic model) plus the secrets read from the environment."""

    urls: list[str] = field(default_factory=list)
    api_key: str | None = None
    username: str = ""
    password: str | None = None
    ca_file: str | None = None
    verify_certs: bool = True
    index_prefix: str = "icswatch"
    incidents: bool = True
    context: bool = True
    events: str = "off"
    events_sample: int = 100
    bulk_max_docs: int = 1000
    bulk_max_bytes: int = 5_000_000
    flush_seconds: float = 1.0
    queue_max_mb: int = 64
    timeout: float = 10.0
    retries: int = 3
    retry_base: float = 0.5
    retry_max: float = 30.0
    spool: str = "var/es-spool.db"
    spool_max_mb: int = 512
    close_timeout: float = 15.0
    install_templates: bool = True
    shards: int = 1
    replicas: int | None = None
    ilm_policy: str = ""
    compress: bool = False

    @classmethod
    def from_config(cls, cfg: Any, environ: Any = None) -> EsSettings:
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in ("api_key", "password"):
                continue
            if hasattr(cfg, name):
                kw[name] = getattr(cfg, name)
        urls = list(kw.get("urls") or [])
        if not urls and env.get(ENV_URL):
            urls = split_urls(env[ENV_URL])
        kw["urls"] = urls
        key_env = getattr(cfg, "api_key_env", "ICSWATCH_ES_API_KEY")
        pass_env = getattr(cfg, "password_env", "ICSWATCH_ES_PASSWORD")
        out = cls(**kw, api_key=env.get(key_env) or None, password=env.get(pass_env) or None)
        out.register_secrets()
        return out

    def register_secrets(self) -> None:
        """Mask the API key, the password and any password written in a URL in every log line."""
        from alerts.logsafe import register_secret

        register_secret(self.api_key)
        register_secret(self.password)
        for u in self.urls:
            try:
                register_secret(urlsplit(u).password)
            except ValueError:
                pass

    def __repr__(self) -> str:  # a traceback or a debug line shows the settings, never their secrets
        return (
            f"EsSettings(urls={[redact_url(u) for u in self.urls]!r}, api_key={'***' if self.api_key else None}, "
            f"username={self.username!r}, password={'***' if self.password else None}, "
            f"index_prefix={self.index_prefix!r}, spool={self.spool!r})"
        )

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def template_settings(self) -> dict[str, Any]:
        return {"shards": self.shards, "replicas": self.replicas, "ilm_policy": self.ilm_policy}


def split_urls(text: str) -> list[str]:
    return [u.strip() for u in text.replace(" ", ",").split(",") if u.strip()]


def redact_url(url: str) -> str:
    """The URL without a password (for logs and summaries): alerts/logsafe.py's, kept here for callers."""
    from alerts.logsafe import redact_url as _redact_url

    return _redact_url(url)


# --- the client ---------------------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """A transport error with its cause ("ConnectionError: ... Connection refused")."""
    text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    for cause in getattr(exc, "errors", ()) or ():
        inner = str(cause)
        if inner and inner not in text:
            text += f" ({inner[:200]})"
            break
    return text


def make_client(settings: EsSettings) -> Any:
    """The official client for these settings; retries are the sink's own (``max_retries=0``)."""
    from elasticsearch import Elasticsearch

    if not settings.urls:
        raise ValueError("no Elasticsearch URL: set elasticsearch.urls, --es-url or ICSWATCH_ES_URL")
    kw: dict[str, Any] = {
        "request_timeout": settings.timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
        "http_compress": settings.compress,
    }
    if settings.api_key:
        kw["api_key"] = settings.api_key
    elif settings.username:
        kw["basic_auth"] = (settings.username, settings.password or "")
    if settings.ca_file:
        kw["ca_certs"] = settings.ca_file
    if not settings.verify_certs:
        kw["verify_certs"] = False
        kw["ssl_show_warn"] = False
    return Elasticsearch(settings.urls, **kw)


def client_major() -> int:
    import elasticsearch

    return int(elasticsearch.__version__[0])


def connect(client: Any) -> tuple[Any, dict[str, Any]]:
    """Read the server's version and return ``(client to use, info)``.

    The 9.x client sends ``compatible-with=9``, which an 8.x server refuses; both 8.x and 9.x accept
    ``compatible-with=8``, so the probe uses it and the returned client keeps it for an 8.x server (and
    when the version cannot be read: a key without the ``monitor`` privilege gets 403 on ``GET /``)."""
    from elasticsearch import ApiError

    compat8 = client.options(headers={"accept": COMPAT_8, "content-type": COMPAT_8})
    try:
        info = dict(compat8.info())
    except ApiError as exc:
        if exc.meta.status != 403:
            raise
        # A writer without the `monitor` privilege cannot read the version; the server accepted the
        # compatible-with=8 header (it would answer 400 otherwise), and 8.x and 9.x both serve it.
        return compat8, {"version": {"number": "unknown (no monitor privilege)"}}
    number = str(info.get("version", {}).get("number", "0"))
    try:
        server_major = int(number.split(".")[0])
    except ValueError:
        server_major = 0
    use = compat8 if (client_major() >= 9 and server_major < 9) else client
    return use, info


# --- documents ----------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def is_ip(text: str) -> bool:
    if not text:
        return False
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


_DAYS: dict[int, str] = {}


def day_of(ts: float) -> str:
    """Capture time -> ``YYYY.MM.DD`` (UTC), the daily index suffix."""
    d = int(ts // 86400)
    s = _DAYS.get(d)
    if s is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        s = _DAYS[d] = time.strftime("%Y.%m.%d", time.gmtime(d * 86400))
    return s


def _endpoint(side: dict[str, Any]) -> dict[str, Any]:
    """ECS endpoint for Elasticsearch: the raw address in ``address``, ``ip`` only when it is one."""
    out = dict(side)
    addr = out.get("ip")
    if addr is None:
        return out
    out["address"] = addr
    if not is_ip(addr):
        del out["ip"]
    return out


def es_source(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as indexed: a shallow copy with ``source/destination.address`` and only valid IPs
    under ``*.ip`` (``doc`` is shared with the other outputs and is not modified)."""
    out = dict(doc)
    if "source" in out:
        out["source"] = _endpoint(out["source"])
    if "destination" in out:
        out["destination"] = _endpoint(out["destination"])
    rel = out.get("related")
    if rel and rel.get("ip"):
        ips = [ip for ip in rel["ip"] if is_ip(ip)]
        out["related"] = dict(rel, ip=ips)
    return out


def event_doc_id(observer_name: str, ev: IcsEvent, dup: int) -> str:
    key = (
        f"{observer_name}|{ev.ts!r}|{ev.src}|{ev.sport}|{ev.dst}|{ev.dport}|{ev.protocol}|{ev.direction}|"
        f"{ev.function}|{ev.unit}|{ev.address}|{ev.size}|{dup}"
    )
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def context_doc_id(alert_id: str, role: str, seq: int) -> str:
    return hashlib.blake2b(f"context|{alert_id}|{role}|{seq}".encode(), digest_size=12).hexdigest()


def _side(ip: str, port: int, mac: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"address": ip, "port": port}
    if is_ip(ip):
        out["ip"] = ip
    if mac:
        out["mac"] = mac
    return out


def event_source(
    ev: IcsEvent, doc_id: str, observer: Observer, observer_ecs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An ICS event as an ECS document (``event.kind: event``, ``ics.*`` as in alerts)."""
    ics: dict[str, Any] = {
        "protocol": ev.protocol,
        "direction": ev.direction,
        "function": ev.function,
        "function_name": ev.function_name,
        "category": ev.category,
        "result": ev.result,
        "size": ev.size,
    }
    for key in ("unit", "address", "quantity", "code", "latency", "anomaly"):
        value = getattr(ev, key)
        if value is not None:
            ics[key] = value
    if ev.values is not None:
        ics["values"] = [_jsonable(v) for v in ev.values]
    if ev.objects is not None:
        ics["objects"] = list(ev.objects)
    if ev.fields:
        ics[ev.protocol or "fields"] = {k: _jsonable(v) for k, v in ev.fields.items()}
    doc: dict[str, Any] = {
        "@timestamp": iso_time(ev.ts),
        "event": {
            "id": doc_id,
            "kind": "event",
            "category": ["network"],
            "type": ["protocol"],
            "module": "icswatch",
            "dataset": "icswatch.ics",
            "action": ev.function_name,
            "outcome": "success" if ev.result == "ok" else "failure",
        },
        "source": _side(ev.src, ev.sport, ev.src_mac),
        "destination": _side(ev.dst, ev.dport, ev.dst_mac),
        "network": {"protocol": ev.protocol, "transport": ev.transport},
        "observer": observer_ecs or observer.ecs(),
        "ics": ics,
        "icswatch": {"flow_id": ev.flow_id},
    }
    if observer.enterprise_id:
        doc["organization"] = {"id": observer.enterprise_id}
    return doc


def context_source(
    alert_id: str, role: str, seq: int, ev: IcsEvent, observer: Observer, observer_ecs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One event of an alert's context (the flow's events just before or after it)."""
    doc: dict[str, Any] = {
        "@timestamp": iso_time(ev.ts),
        "event": {
            "id": context_doc_id(alert_id, role, seq),
            "kind": "event",
            "category": ["network"],
            "type": ["protocol"],
            "module": "icswatch",
            "dataset": "icswatch.alert_context",
            "action": ev.function_name,
        },
        "source": _side(ev.src, ev.sport, ev.src_mac),
        "destination": _side(ev.dst, ev.dport, ev.dst_mac),
        "network": {"protocol": ev.protocol, "transport": ev.transport},
        "observer": observer_ecs or observer.ecs(),
        "icswatch": {
            "alert_id": alert_id,
            "role": role,
            "seq": seq,
            "flow_id": ev.flow_id,
            "evidence": evidence_of(ev),
        },
    }
    if observer.enterprise_id:
        doc["organization"] = {"id": observer.enterprise_id}
    return doc


def incident_partial(full: dict[str, Any]) -> dict[str, Any]:
    """The incident document without the analyst's status (the ``doc`` of its update)."""
    out = dict(full)
    ic = dict(out["icswatch"])
    inc = dict(ic["incident"])
    inc.pop("status", None)
    ic["incident"] = inc
    out["icswatch"] = ic
    return out


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def bulk_item(op: str, index: str, doc_id: str, source: dict[str, Any]) -> bytes:
    """The two NDJSON lines of one bulk item."""
    return (_encode({op: {"_index": index, "_id": doc_id}}) + "\n" + _encode(source) + "\n").encode()


def parse_action(body: bytes) -> tuple[str, str, str]:
    """(op, index, id) of a bulk item."""
    head = json.loads(body[: body.index(b"\n")])
    op, meta = next(iter(head.items()))
    return op, meta["_index"], meta["_id"]


class DocumentBuilder:
    """Turns write batches and events into bulk items: (op, index, id, body)."""

    def __init__(self, settings: EsSettings, observer: Observer) -> None:
        self.prefix = settings.index_prefix
        self.observer = observer
        self.incidents = settings.incidents
        self.context = settings.context
        self._incident_index: OrderedDict[str, str] = OrderedDict()
        self._last_event_key: tuple[Any, ...] | None = None
        self._dup = 0
        self._observers: dict[Observer, dict[str, Any]] = {}

    def observer_ecs(self, observer: Observer) -> dict[str, Any]:
        """``observer.ecs()``, built once (documents are serialised at once, so sharing it is safe)."""
        ecs = self._observers.get(observer)
        if ecs is None:
            ecs = self._observers[observer] = observer.ecs()
        return ecs

    def index(self, kind: str, ts: float) -> str:
        return f"{self.prefix}-{kind}-{day_of(ts)}"

    def incident_index(self, inc: Incident) -> str:
        """An incident stays in the daily index of the day it was first written (its first time may move)."""
        memo = self._incident_index
        name = memo.get(inc.id)
        if name is None:
            name = memo[inc.id] = self.index("incidents", inc.first_ts)
            if len(memo) > MAX_INCIDENT_INDEX_MEMO:
                memo.popitem(last=False)
        else:
            memo.move_to_end(inc.id)
        return name

    def batch_items(self, batch: WriteBatch) -> list[bytes]:
        items = []
        for a in batch.alerts:
            items.append(bulk_item("create", self.index("alerts", a.ts), a.id, es_source(batch.doc(a))))
        if self.context:
            obs = self.observer_ecs(batch.observer)
            for alert_id, role, seq, ev in batch.events:
                if role == "evidence":
                    continue  # in the alert's document already (ics.evidence)
                src = context_source(alert_id, role, seq, ev, batch.observer, obs)
                items.append(bulk_item("create", self.index("context", ev.ts), src["event"]["id"], src))
        if self.incidents:
            for inc in batch.incidents:
                items.append(self.incident_item(inc, batch.observer))
        return items

    def incident_item(self, inc: Incident, observer: Observer) -> bytes:
        full = es_source(inc.to_ecs(observer))
        index = self.incident_index(inc)
        head = _encode({"update": {"_index": index, "_id": inc.id, "retry_on_conflict": 3}})
        body = _encode({"doc": incident_partial(full), "upsert": full})
        return (head + "\n" + body + "\n").encode()

    def event_item(self, ev: IcsEvent) -> bytes:
        key = (
            ev.ts,
            ev.src,
            ev.sport,
            ev.dst,
            ev.dport,
            ev.protocol,
            ev.direction,
            ev.function,
            ev.unit,
            ev.address,
            ev.size,
        )
        if key == self._last_event_key:
            self._dup += 1  # two PDUs alike in one packet: still two documents
        else:
            self._last_event_key = key
            self._dup = 0
        doc_id = event_doc_id(self.observer.name, ev, self._dup)
        src = event_source(ev, doc_id, self.observer, self.observer_ecs(self.observer))
        return bulk_item("create", self.index("events", ev.ts), doc_id, src)


# --- the sink -----------------------------------------------------------------------------------------


class _Retryable(Exception):
    """The whole request failed in a way worth retrying (connection, timeout, 429, 5xx, 401/403)."""


@dataclass
class _Outcome:
    done: list[int] = field(default_factory=list)  # seqs taken (or superseded)
    retry: list[tuple[int, bytes]] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


class ElasticsearchSink:
    """Alert output to Elasticsearch (see the module docstring). ``on_event`` indexes ICS events when
    ``settings.events`` is ``sampled`` (one in ``events_sample``) or ``all``."""

    name = "elasticsearch"

    def __init__(
        self,
        settings: EsSettings,
        observer: Observer | None = None,
        *,
        client: Any = None,
        spool: Spool | None = None,
        start: bool = True,
    ) -> None:
        if settings.events not in EVENT_MODES:
            raise ValueError(f"elasticsearch.events must be one of {', '.join(EVENT_MODES)}, not {settings.events!r}")
        self.settings = settings
        self.observer = observer or Observer()
        self.path = ", ".join(redact_url(u) for u in settings.urls)
        self.client = client if client is not None else make_client(settings)
        self.spool = spool if spool is not None else Spool(settings.spool, max(1, settings.spool_max_mb) << 20)
        self.builder = DocumentBuilder(settings, self.observer)
        self.counters: Counter[str] = Counter()
        self.recent_rejections: deque[dict[str, Any]] = deque(maxlen=20)
        self.server: dict[str, Any] = {}
        self.state = "starting"
        self.last_error = ""
        self.last_ok: float | None = None
        self._api: Any = None  # the client to use once the server's version is known
        self._templates_done = not settings.install_templates
        self._indices: set[str] = set()
        self._seq = self.spool.max_seq
        self._queue: deque[tuple[int, bytes]] = deque()
        self._queued_bytes = 0
        self._queue_t0: float | None = None
        self._queue_max = max(1, settings.queue_max_mb) << 20
        self._cond = threading.Condition()
        self._inflight = False
        self._flush_wanted = 0
        self._closing = False
        self._closed = False
        self._close_deadline = 0.0
        self._down = self.spool.count > 0  # documents left by an earlier run: replay them first
        self._failures = 0
        self._next_try = 0.0
        self._stats_at = 0.0
        self._stats_path = Path(settings.spool + ".stats.json") if settings.spool != ":memory:" else None
        if self.spool.count:
            log.warning(
                "Elasticsearch spool %s holds %d document(s) from an earlier run: they go first",
                self.spool.path,
                self.spool.count,
            )
        # events
        self._ev_every = 1 if settings.events == "all" else max(1, settings.events_sample)
        self._ev_n = 0
        self._ev_buf: list[bytes] = []
        self._ev_t0 = 0.0
        self._thread = threading.Thread(target=self._run, name="icswatch-es-sink", daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def from_config(cls, cfg: Any, observer: Observer | None = None, **kw: Any) -> ElasticsearchSink:
        return cls(EsSettings.from_config(cfg), observer, **kw)

    # -- the sensor's side ---------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        items = self.builder.batch_items(batch)
        if self._ev_buf:
            items.extend(self._ev_buf)
            self._ev_buf = []
        self._push(items)

    def on_event(self, event: IcsEvent) -> None:
        """Pipeline callback (``--es-events``): index every ``events_sample``-th event (or all)."""
        self._ev_n += 1
        if self._ev_n % self._ev_every:
            return
        buf = self._ev_buf
        if not buf:
            self._ev_t0 = time.monotonic()
        buf.append(self.builder.event_item(event))
        if len(buf) >= 256 or time.monotonic() - self._ev_t0 >= self.settings.flush_seconds:
            self._ev_buf = []
            self._push(buf)

    def _push(self, items: list[bytes]) -> None:
        if not items:
            return
        spill: list[tuple[int, bytes]] = []
        with self._cond:
            if self._closed:
                raise RuntimeError("the Elasticsearch sink is closed")
            q = self._queue
            n = 0
            for body in items:
                self._seq += 1
                q.append((self._seq, body))
                n += len(body)
            self._queued_bytes += n
            self.counters["documents"] += len(items)
            if self._queue_t0 is None:
                self._queue_t0 = time.monotonic()
            if self._queued_bytes > self._queue_max:
                spill = list(q)  # the cluster is slower than the sensor: to disk, in order
                q.clear()
                self._queued_bytes = 0
                self._queue_t0 = None
                self.counters["queue_spills"] += 1
            self._cond.notify_all()
        if spill:
            self._to_spool(spill)

    def flush(self, timeout: float = 30.0) -> bool:
        """Send what is queued now; wait until it is delivered, or spooled because the cluster is down.
        True when nothing is left in memory (the spool may still hold documents if the cluster is down)."""
        if self._ev_buf:
            buf, self._ev_buf = self._ev_buf, []
            self._push(buf)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_wanted += 1
            self._cond.notify_all()
            try:
                while self._queue or self._inflight:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.5))
            finally:
                self._flush_wanted -= 1
        return True

    def wait_drained(self, timeout: float = 60.0) -> bool:
        """Wait until the queue and the spool are empty (the cluster took everything). For tests and tools."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.flush(max(0.1, deadline - time.monotonic()))
            with self._cond:
                if not self._queue and not self._inflight and self.spool.count == 0:
                    return True
                self._next_try = min(self._next_try, time.monotonic())
                self._cond.notify_all()
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Deliver what is queued, replay the spool for up to ``close_timeout`` s, keep the rest spooled."""
        if self._closed:
            return
        if self._ev_buf:
            buf, self._ev_buf = self._ev_buf, []
            self._push(buf)
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + self.settings.close_timeout
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(self.settings.close_timeout + self.settings.timeout + 5.0)
        alive = self._thread.is_alive()
        with self._cond:
            self._closed = True
            leftover = list(self._queue)
            self._queue.clear()
        if leftover and not alive:
            self._to_spool(leftover)
        self._write_stats(force=True)
        s = self.stats()
        msg = (
            f"Elasticsearch {self.path}: {s['sent']} sent, {s['already_present']} already there, {s['retried']} retried, "
            f"{s['rejected']} rejected, {s['spooled']} spooled, {s['spool_pending']} still in the spool, "
            f"{s['spool_dropped']} dropped (spool full)"
        )
        if alive:
            log.error(
                "%s; the sender thread did not stop in time (a request hangs): documents in flight may be lost", msg
            )
        elif s["spool_pending"] or s["rejected"] or s["spool_dropped"]:
            log.warning(msg)
        else:
            log.info(msg)
        if not alive:
            self.spool.close()

    # -- health ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        c = self.counters
        sp = self.spool
        with self._cond:
            queued = len(self._queue)
        return {
            "state": self.state,
            "urls": self.path,
            "server_version": self.server.get("version", {}).get("number"),
            "sent": c["sent"],
            "already_present": c["already_present"],
            "retried": c["retried"],
            "rejected": c["rejected"],
            "spooled": c["spooled"],
            "spool_pending": sp.count,
            "spool_pending_bytes": sp.bytes,
            "spool_dropped": sp.dropped,
            "spool_full": sp.full_since is not None,
            "documents": c["documents"],
            "queued": queued,
            "queue_spills": c["queue_spills"],
            "bulks": c["bulks"],
            "failed_requests": c["failed_requests"],
            "superseded": c["superseded"],
            "events_indexed": c["events"],
            "last_error": self.last_error,
            "last_ok": self.last_ok,
        }

    def _write_stats(self, force: bool = False) -> None:
        if self._stats_path is None:
            return
        now = time.monotonic()
        if not force and now - self._stats_at < STATS_EVERY:
            return
        self._stats_at = now
        data = dict(self.stats(), updated=time.time(), pid=os.getpid(), spool=self.spool.path)
        tmp = self._stats_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self._stats_path)
        except OSError:  # pragma: no cover - stats are a convenience
            log.debug("cannot write %s", self._stats_path, exc_info=True)

    # -- the sender thread -----------------------------------------------------------------------
    def _run(self) -> None:
        s = self.settings
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._closing:
                        break
                    wait: float | None = 1.0
                    if self._queue:
                        age = now - (self._queue_t0 or now)
                        if (
                            self._flush_wanted
                            or len(self._queue) >= s.bulk_max_docs
                            or self._queued_bytes >= s.bulk_max_bytes
                            or age >= s.flush_seconds
                        ):
                            break
                        wait = min(wait, s.flush_seconds - age)
                    if self.spool.count:
                        if now >= self._next_try:
                            break
                        wait = min(wait, self._next_try - now)
                    self._inflight = False
                    self._cond.notify_all()
                    self._cond.wait(max(0.0, wait))
                    self._write_stats()
                closing = self._closing
                items = self._take(everything=closing or self._down or self.spool.count > 0)
                self._inflight = True
            try:
                self._cycle(items, closing)
            except Exception as exc:
                log.exception("Elasticsearch sender failed; its documents go to the spool")
                self.last_error = f"internal error: {exc}"
                if items:
                    self._to_spool(items)
                self._went_down()
            if closing:
                with self._cond:
                    if not self._queue:
                        self._inflight = False
                        self._cond.notify_all()
                        break
                    if time.monotonic() >= self._close_deadline:
                        rest = list(self._queue)
                        self._queue.clear()
                        self._queued_bytes = 0
                        self._inflight = False
                        self._cond.notify_all()
                        self._to_spool(rest)
                        break

    def _take(self, everything: bool) -> list[tuple[int, bytes]]:
        """Items for one bulk (or all of them, when they go to the spool). Caller holds the lock."""
        q = self._queue
        if not q:
            return []
        if everything:
            items = list(q)
            q.clear()
            self._queued_bytes = 0
        else:
            items = []
            size = 0
            max_docs, max_bytes = self.settings.bulk_max_docs, self.settings.bulk_max_bytes
            while q and len(items) < max_docs and (not items or size + len(q[0][1]) <= max_bytes):
                seq, body = q.popleft()
                items.append((seq, body))
                size += len(body)
            self._queued_bytes -= size
        self._queue_t0 = time.monotonic() if q else None
        return items

    def _cycle(self, items: list[tuple[int, bytes]], closing: bool) -> None:
        if items:
            if self._down or self.spool.count:
                self._to_spool(items)
            else:
                left = self._deliver(items, 1 if closing else 1 + self.settings.retries)
                if left:
                    self._to_spool(left)
                    self._went_down()
        if self.spool.count and (closing or time.monotonic() >= self._next_try):
            self._drain(closing)

    def _drain(self, closing: bool) -> None:
        """Replay the spool oldest first while the cluster takes it."""
        s = self.settings
        first = True
        while self.spool.count:
            if self._closing and time.monotonic() >= self._close_deadline:
                return  # what is left stays spooled for the next run
            if not closing and not first:
                with self._cond:  # new documents queue behind the spool: keep the order
                    queued = self._take(everything=True) if self._queue else []
                if queued:
                    self._to_spool(queued)
            first = False
            chunk = self.spool.peek(s.bulk_max_docs, s.bulk_max_bytes)
            if not chunk:
                return
            left = self._deliver(chunk, 1)
            self._write_stats()
            left_seqs = {seq for seq, _ in left}
            self.spool.ack(seq for seq, _ in chunk if seq not in left_seqs)
            if left:
                self._went_down()
                return
            self._came_up()
        self._came_up()

    def _to_spool(self, items: Sequence[tuple[int, bytes]]) -> None:
        if not items:
            return
        self.spool.append(items)
        with self._cond:  # both threads spool (the sensor's on a queue spill)
            self.counters["spooled"] += len(items)

    def _went_down(self) -> None:
        self._failures += 1
        delay = min(self.settings.retry_max, self.settings.retry_base * (2 ** min(self._failures - 1, 16)))
        delay *= 0.75 + random.random() * 0.5
        self._next_try = time.monotonic() + delay
        if not self._down:
            log.warning(
                "Elasticsearch %s unreachable (%s): documents go to the spool %s and are replayed when it answers",
                self.path,
                self.last_error,
                self.spool.path,
            )
        self._down = True
        self.state = "down"

    def _came_up(self) -> None:
        if self.spool.count:
            self.state = "catching up"
            return
        if self._down:
            log.warning("Elasticsearch %s answers again: the spool is replayed and empty", self.path)
        self._down = False
        self._failures = 0
        self.state = "up"

    def _deliver(self, items: list[tuple[int, bytes]], attempts: int) -> list[tuple[int, bytes]]:
        """Send with up to ``attempts`` tries; return what is still undelivered (retryable failures)."""
        pending = items
        for attempt in range(max(1, attempts)):
            if attempt:
                delay = min(self.settings.retry_max, self.settings.retry_base * (2 ** (attempt - 1)))
                delay *= 0.75 + random.random() * 0.5
                until = time.monotonic() + delay
                with self._cond:
                    while not self._closing and time.monotonic() < until:
                        self._cond.wait(until - time.monotonic())  # new documents notify: keep waiting
                    if self._closing:
                        return pending
                self.counters["retried"] += len(pending)
            try:
                out = self._send(pending)
            except _Retryable as exc:
                self.last_error = str(exc)
                self.counters["failed_requests"] += 1
                continue
            pending = out.retry
            if not pending:
                return []
        return pending

    def _ready(self) -> Any:
        """The client to use, after the version probe and the templates (once per connection)."""
        from elasticsearch import ApiError, TransportError

        if self._api is not None and self._templates_done:
            return self._api
        try:
            if self._api is None:
                self._api, self.server = connect(self.client)
                log.info(
                    "Elasticsearch %s: %s %s",
                    self.path,
                    self.server.get("name", "?"),
                    self.server.get("version", {}).get("number"),
                )
            if not self._templates_done:
                try:
                    es_templates.install(self._api, self.settings.index_prefix, **self.settings.template_settings())
                    self._templates_done = True
                except ApiError as exc:
                    if exc.meta.status in (401, 403):
                        log.warning(
                            "Elasticsearch: not allowed to install the index templates (%s); assuming `icswatch es init` did",
                            exc,
                        )
                        self._templates_done = True
                    else:
                        raise
        except ApiError as exc:
            self._api = None if exc.meta.status in RETRY_STATUSES else self._api
            raise _Retryable(f"HTTP {exc.meta.status} {exc.message}") from None
        except TransportError as exc:
            self._api = None
            raise _Retryable(describe(exc)) from None
        return self._api

    def _ensure_indices(self, api: Any, names: Iterable[str]) -> None:
        """Create the daily indices before writing to them (so a cluster without auto-create works too)."""
        from elasticsearch import ApiError

        for name in names:
            if name in self._indices:
                continue
            try:
                api.indices.create(index=name)
            except ApiError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                etype = (body.get("error") or {}).get("type", "") if isinstance(body.get("error"), dict) else ""
                if exc.meta.status == 400 and "already_exists" in etype:
                    pass
                elif exc.meta.status in (401, 403):
                    pass  # may still be written through auto-create
                elif exc.meta.status in RETRY_STATUSES:
                    raise
                else:
                    log.warning("Elasticsearch: cannot create index %s: %s", name, exc)
            if len(self._indices) > 4096:
                self._indices.clear()
            self._indices.add(name)

    def _send(self, items: list[tuple[int, bytes]]) -> _Outcome:
        """One bulk request (split in two on 413/400 to isolate what the server refuses)."""
        from elasticsearch import ApiError, TransportError

        out = _Outcome()
        # Coalesce successive states of one incident: only the newest is sent.
        parsed = []
        newest: dict[tuple[str, str], int] = {}
        for i, (seq, body) in enumerate(items):
            op, index, doc_id = parse_action(body)
            parsed.append((seq, body, op, index, doc_id))
            if op == "update":
                newest[(index, doc_id)] = i
        send = []
        for i, p in enumerate(parsed):
            if p[2] == "update" and newest[(p[3], p[4])] != i:
                out.done.append(p[0])
                self.counters["superseded"] += 1
            else:
                send.append(p)
        if not send:
            return out
        api = self._ready()
        try:
            self._ensure_indices(api, {p[3] for p in send})
            resp = api.bulk(operations=b"".join(p[1] for p in send), filter_path=BULK_FILTER)
        except ApiError as exc:
            status = exc.meta.status
            if status in (400, 413) and len(send) > 1:
                half = len(send) // 2
                for part in (send[:half], send[half:]):
                    sub = self._send([(p[0], p[1]) for p in part])
                    out.done += sub.done
                    out.retry += sub.retry
                    out.rejected += sub.rejected
                return out
            if status in RETRY_STATUSES or status in DOWN_STATUSES or status == 404:
                raise _Retryable(f"HTTP {status} {exc.message}") from None
            p = send[0] if len(send) == 1 else None
            for q in send:
                self._rejected(q[2], q[3], q[4], q[1], status, exc.message, str(exc.body)[:500])
                out.rejected.append(q[0])
            if p is None:
                log.error("Elasticsearch refused a whole bulk (HTTP %s): %s", status, exc)
            return out
        except TransportError as exc:
            self._api = None if "Connection" in type(exc).__name__ else self._api
            raise _Retryable(describe(exc)) from None
        self.counters["bulks"] += 1
        self.last_ok = time.time()
        if not self._down and self.state != "up":
            self.state = "up"
        if resp.get("errors") is False:  # the common case: every item taken
            out.done.extend(p[0] for p in send)
            self.counters["sent"] += len(send)
            self.counters["events"] += sum(1 for p in send if "-events-" in p[3])
            return out
        results = resp.get("items") or []
        if len(results) != len(send):
            raise _Retryable(f"bulk answered {len(results)} items for {len(send)}")
        for p, item in zip(send, results):
            seq, body, op, index, doc_id = p
            res = item.get(op) or next(iter(item.values()))
            status = int(res.get("status", 0))
            if 200 <= status < 300:
                out.done.append(seq)
                self.counters["sent"] += 1
                if "-events-" in index:
                    self.counters["events"] += 1
            elif status == 409 and op == "create":
                out.done.append(seq)  # delivered before (a retry after a lost answer, a replay)
                self.counters["already_present"] += 1
            elif status in RETRY_STATUSES or status == 409 or status in DOWN_STATUSES:
                out.retry.append((seq, body))
            else:
                err = res.get("error") or {}
                if isinstance(err, dict):
                    etype, reason = err.get("type", ""), err.get("reason", "")
                    cause = err.get("caused_by") or {}
                    if isinstance(cause, dict) and cause.get("reason"):
                        reason += f" ({cause.get('reason')})"
                else:
                    etype, reason = "", str(err)
                self._rejected(op, index, doc_id, body, status, etype, reason)
                out.rejected.append(seq)
        if out.retry:
            self.last_error = f"{len(out.retry)} item(s) answered 429/5xx"
        return out

    def _rejected(self, op: str, index: str, doc_id: str, body: bytes, status: int, etype: str, reason: str) -> None:
        self.counters["rejected"] += 1
        doc = body[body.index(b"\n") + 1 :].decode("utf-8", "replace").strip()
        shown = doc if len(doc) <= LOGGED_DOC_BYTES else doc[:LOGGED_DOC_BYTES] + f"... ({len(doc)} bytes)"
        self.recent_rejections.append(
            {
                "index": index,
                "id": doc_id,
                "op": op,
                "status": status,
                "type": etype,
                "reason": reason,
                "document": shown,
            }
        )
        log.error(
            "Elasticsearch rejected %s %s/%s (HTTP %s %s: %s); the other documents go on. Document: %s",
            op,
            index,
            doc_id,
            status,
            etype,
            reason,
            shown,
        )


# --- wiring -------------------------------------------------------------------------------------------


def es_outputs(config: Any, observer: Observer | None = None) -> list[ElasticsearchSink]:
    """The Elasticsearch output a ``Config`` asks for (``elasticsearch.urls``, ``--es-url`` or
    ``ICSWATCH_ES_URL``), or none. The hook ``alerts.runtime.build_alerting`` calls."""
    es_cfg = getattr(config, "elasticsearch", None)
    settings = EsSettings.from_config(es_cfg) if es_cfg is not None else EsSettings.from_config(object())
    if not settings.enabled:
        return []
    if observer is None and getattr(config, "sensor", None) is not None:
        observer = Observer.from_config(config.sensor)
    return [ElasticsearchSink(settings, observer)]


def event_tap(runtime: Any) -> Callable[[IcsEvent], None] | None:
    """The pipeline callback indexing ICS events, when the runtime has an Elasticsearch output with
    ``events`` not ``off`` (chain it next to ``runtime.on_event``)."""
    for out in getattr(runtime, "outputs", ()):
        if isinstance(out, ElasticsearchSink) and out.settings.events != "off":
            return out.on_event
    return None
