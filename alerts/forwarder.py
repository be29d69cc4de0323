"""What leaves the plant for the provincial platform, and how: request signing, redaction, the incident
report, and the worker that delivers the durable outbox (alerts/outbox.py). Protocol: docs/linkage.md.

Signing (the platform's ``api/province/auth.py`` imports these same functions, so the two sides cannot
drift): every request carries a key id, a Unix timestamp, a one-time nonce and an HMAC-SHA256 over the
canonical form::

    ICSWATCH-HMAC-SHA256
    <METHOD>
    <path, as sent, percent-encoded>
    <query: pairs percent-encoded (RFC 3986), sorted by key then value, joined with &>
    <timestamp>
    <nonce>
    <hex SHA-256 of the body bytes (of the empty string for a GET)>

Lines are joined with a single ``\\n`` and there is no trailing newline.

Delivery is at-least-once (the outbox keeps an entry until the platform answered 2xx) and the platform
is idempotent (incident id for reports, ``update_id`` for updates, advisory id for acknowledgements),
so the effect is exactly-once. Retries back off exponentially with jitter and honour ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, quote

log = logging.getLogger(__name__)

SCHEME = "ICSWATCH-HMAC-SHA256"
HEADER_KEY_ID = "X-Icswatch-Key-Id"
HEADER_TIMESTAMP = "X-Icswatch-Timestamp"
HEADER_NONCE = "X-Icswatch-Nonce"
HEADER_DIGEST = "X-Icswatch-Content-SHA256"
HEADER_SIGNATURE = "X-Icswatch-Signature"
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REPORT_SCHEMA_VERSION = "1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

LEVEL_NAMES = {1: "特别重大", 2: "重大", 3: "较大", 4: "一般"}
MAX_SAMPLES = 10  # evidence samples sent per incident (the count goes on)
MAX_TEXT = 2000  # characters of any free-text field sent


# --------------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------------


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_query(query: str) -> str:
    """``b=2&a=1&a=0`` -> ``a=0&a=1&b=2``; blank values kept; every byte outside RFC 3986's unreserved
    set percent-encoded, so ``a b`` and ``a+b`` and ``a%20b`` sign alike only if they decode alike."""
    pairs = parse_qsl(query, keep_blank_values=True)
    enc = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def canonical_string(method: str, path: str, query: str, timestamp: int | str, nonce: str, digest: str) -> str:
    return "\n".join((SCHEME, method.upper(), path or "/", canonical_query(query), str(timestamp), nonce, digest))


def sign(secret: str, canonical: str) -> str:
    """Hex HMAC-SHA256 of the canonical form, keyed by the secret's UTF-8 bytes."""
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request (``path`` without the query string)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    nonce = nonce or new_nonce()
    digest = body_digest(body)
    canonical = canonical_string(method, path, query, ts, nonce, digest)
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_NONCE: nonce,
        HEADER_DIGEST: digest,
        HEADER_SIGNATURE: sign(secret, canonical),
    }


# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------

DEFAULT_INTERNAL_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)
_IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# Only keys whose values are process data (what was read or written), never addresses or codes.
VALUE_KEYS = frozenset({"values", "value", "fields", "objects", "data"})
HOSTNAME_KEYS = frozenset({"hostname", "host", "sensor", "name_of_host"})


@dataclass
class RedactionPolicy:
    """What is removed or masked before a report leaves the plant (``linkage.redact_*`` in the config)."""

    values: bool = True  # drop process values (register contents, written values, protocol payload fields)
    networks: tuple[str, ...] = DEFAULT_INTERNAL_NETWORKS  # addresses inside these are internal
    addresses: str = "pseudonym"  # internal address -> pseudonym | prefix (its subnet) | keep
    prefix_v4: int = 24
    prefix_v6: int = 64
    hostnames: bool = True  # drop hostname fields; mask names under internal_domains in text
    internal_domains: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, linkage: Any) -> "RedactionPolicy":
        return cls(
            values=linkage.redact_values,
            networks=tuple(linkage.redact_networks),
            addresses=linkage.redact_addresses,
            prefix_v4=linkage.redact_prefix_v4,
            prefix_v6=linkage.redact_prefix_v6,
            hostnames=linkage.redact_hostnames,
            internal_domains=tuple(linkage.internal_domains),
        )


class Redactor:
    """Applies a ``RedactionPolicy`` to a JSON-ready report, returning a new object.

    Internal addresses become a keyed pseudonym (``int-3fa9c1d2e07b``: HMAC of the address with a salt
    that never leaves the plant, so the platform can tell that two incidents hit the same device
    without learning its address) or their subnet (``10.10.2.0/24``). Public addresses (an attacker on
    the internet) are kept: they are the indicators the province shares with other enterprises.
    """

    def __init__(self, policy: RedactionPolicy, salt: bytes) -> None:
        self.policy = policy
        self.salt = salt
        self.nets = [ipaddress.ip_network(n, strict=False) for n in policy.networks]
        self._cache: dict[str, str] = {}
        doms = [d.lower().lstrip(".") for d in policy.internal_domains if d.strip(".")]
        self._host_re = (
            re.compile(
                r"\b[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:" + "|".join(re.escape(d) for d in doms) + r")\b", re.I
            )
            if doms and policy.hostnames
            else None
        )

    def address(self, text: str) -> str:
        if self.policy.addresses == "keep":
            return text
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return text
        out = text
        if any(ip in n for n in self.nets):
            if self.policy.addresses == "prefix":
                plen = self.policy.prefix_v4 if ip.version == 4 else self.policy.prefix_v6
                out = str(ipaddress.ip_network(f"{ip}/{plen}", strict=False))
            else:
                out = "int-" + hmac.new(self.salt, ip.packed, hashlib.sha256).hexdigest()[:12]
        if len(self._cache) < 65_536:  # bounded: a scan can show many addresses
            self._cache[text] = out
        return out

    def text(self, s: str) -> str:
        if ":" in s and len(s) <= 45:  # a whole IPv6 address (the regex below covers IPv4 in text)
            masked = self.address(s)
            if masked != s:
                return masked
        s = _IPV4_RE.sub(lambda m: self.address(m.group(0)), s)
        if self._host_re is not None:
            s = self._host_re.sub("[host]", s)
        return s[:MAX_TEXT]

    def apply(self, obj: Any, key: str = "") -> Any:
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                if self.policy.values and k in VALUE_KEYS and v not in (None, [], {}):
                    out[k + "_redacted"] = len(v) if isinstance(v, (list, dict, str)) else 1
                    continue
                if self.policy.hostnames and k in HOSTNAME_KEYS:
                    continue
                out[k] = self.apply(v, k)
            return out
        if isinstance(obj, list):
            return [self.apply(v, key) for v in obj]
        if isinstance(obj, str):
            return self.text(obj)
        return obj


# --------------------------------------------------------------------------------------------------
# The report (schema version 1; the platform publishes it as JSON Schema at /api/v1/schema/incident)
# --------------------------------------------------------------------------------------------------

ROLE_FROM_PROTOCOL_FALLBACK = "unknown"
EFFECT_TACTICS = ("Inhibit Response Function", "Impair Process Control", "Impact")
UPDATABLE_FIELDS = (
    "title",
    "level",
    "level_name",
    "level_criteria",
    "last_activity_at",
    "affected_assets",
    "protocols",
    "techniques",
    "tactics",
    "impact",
    "evidence",
    "trend",
)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def asset_type_of(protocols: Iterable[str], looked_up: Mapping[str, Any] | None = None) -> str:
    """The affected device's kind: the inventory's role when known, else from the protocol it serves."""
    if looked_up and looked_up.get("role") and looked_up.get("role") != "unknown":
        return str(looked_up["role"])
    from sensor.assets import SERVER_ROLES

    for p in protocols:
        if p in SERVER_ROLES:
            return SERVER_ROLES[p]
    return ROLE_FROM_PROTOCOL_FALLBACK


def _impact(tactics: list[str], level: int) -> str:
    effect = [t for t in tactics if t in EFFECT_TACTICS]
    if effect:
        return f"the attack reached {', '.join(effect)}: process control or safety functions at risk"
    if level <= 3:
        return "suspicious activity against a control system; no effect on the process observed"
    return "isolated suspicious activity; no effect on the process observed"


def alert_sample(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One alert (its ECS document) as an evidence sample: what fired, between whom, which operation."""
    ics = doc.get("ics") or {}
    sample: dict[str, Any] = {
        "at": str(doc.get("@timestamp", ""))[:19] + "Z",
        "rule_id": (doc.get("rule") or {}).get("id", ""),
        "rule_name": (doc.get("rule") or {}).get("name", ""),
        "severity": (doc.get("event") or {}).get("severity_name", ""),
        "src": (doc.get("source") or {}).get("ip", ""),
        "dst": (doc.get("destination") or {}).get("ip", ""),
        "protocol": (doc.get("network") or {}).get("protocol", ""),
        "function": ics.get("function_name", ""),
    }
    for k in ("unit", "address", "quantity"):
        if ics.get(k) is not None:
            sample[k] = ics[k]
    if ics.get("values") is not None:
        sample["values"] = list(ics["values"])[:16]
    return sample


def build_report(
    incident_doc: Mapping[str, Any],
    samples: list[dict[str, Any]],
    rule_counts: Mapping[str, int],
    *,
    enterprise_id: str,
    site: str,
    sensor: str,
    discovered_at: float,
    asset_lookup: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The incident report (schema 1) from the incident's ECS document (``Incident.to_ecs`` shape),
    before redaction."""
    inc = (incident_doc.get("icswatch") or {}).get("incident") or {}
    threat = incident_doc.get("threat") or {}
    ev = incident_doc.get("event") or {}
    level = int(inc.get("level", 4))
    protocols = list(inc.get("protocols") or [])
    tactics = list((threat.get("tactic") or {}).get("name") or [])
    techniques = list((threat.get("technique") or {}).get("id") or [])
    asset = str(inc.get("asset", ""))
    looked = asset_lookup(asset) if asset_lookup and asset else None
    affected = {
        "address": asset,
        "asset_type": asset_type_of(protocols, looked),
        "protocols": protocols,
        "critical": bool(inc.get("critical_asset")),
    }
    if looked:
        for k in ("vendor", "product"):
            if looked.get(k):
                affected[k] = str(looked[k])
    rules = [{"id": r, "count": int(rule_counts.get(r, 0))} for r in inc.get("rule_ids") or []]
    names = {s["rule_id"]: s.get("rule_name", "") for s in samples}
    for r in rules:
        if names.get(r["id"]):
            r["name"] = names[r["id"]]
    first_rule = (rules[0].get("name") or rules[0]["id"]) if rules else "alerts"
    title = f"{LEVEL_NAMES.get(level, '')} ICS incident on {asset}: {first_rule}"
    if len(rules) > 1:
        title += f" and {len(rules) - 1} more"
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "incident_id": str(inc.get("id") or ev.get("id")),
        "enterprise_id": enterprise_id,
        "title": title,
        "category": "network_attack",
        "level": level,
        "level_name": LEVEL_NAMES.get(level, ""),
        "level_criteria": str(inc.get("level_reason", "")),
        "occurred_at": _to_iso(ev.get("start")),
        "discovered_at": iso(discovered_at),
        "last_activity_at": _to_iso(ev.get("end")),
        "site": site,
        "sensor": sensor,
        "affected_assets": [affected],
        "protocols": protocols,
        "techniques": techniques,
        "tactics": tactics,
        "impact": _impact(tactics, level),
        "measures": [],
        "evidence": {
            "alert_count": int(inc.get("alert_count", 0)),
            "rules": rules,
            "sources": list(inc.get("sources") or [])[:32],
            "samples": samples[:MAX_SAMPLES],
        },
        "trend": "developing",
        "status": "open",
    }


def _to_iso(value: Any) -> str:
    """ECS times carry microseconds; the report keeps seconds (``2024-05-01T10:00:00Z``)."""
    s = str(value or "")
    return (s[:19] + "Z") if len(s) >= 19 else iso(time.time())


def report_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a later state worth an update (schema 1 update body, without ``update_id``)."""
    return {k: new[k] for k in UPDATABLE_FIELDS if k in new and old.get(k) != new[k]}


# --------------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------------


@dataclass
class SendResult:
    ok: bool
    status: int = 0  # HTTP status, 0 when no answer (connection refused, timeout)
    retry_after: float | None = None
    error: str = ""
    body: Any = None
    permanent: bool = False  # the platform refused the content itself: retrying the same bytes cannot help


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempts: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": half the step is fixed, half random, so clients that
    failed together do not retry together, and the delay still grows."""
    step = min(cap, base * (2 ** max(0, attempts - 1)))
    return step / 2 + rng() * step / 2


# 4xx answers that say "these bytes will never be accepted": the entry is parked as failed.
PERMANENT_STATUSES = frozenset({400, 404, 405, 409, 410, 413, 415, 422})


TLS_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}


def tls_context(
    ca_file: str | None = None,
    *,
    verify: bool = True,
    client_cert: str | None = None,
    client_key: str | None = None,
    min_version: str = "1.2",
) -> Any:
    """The ``ssl.SSLContext`` the linkage client connects with (docs/tls.md).

    ``ca_file`` pins the CAs the platform's certificate must chain to (the province's own CA, say);
    without it the system's trust store is used. ``verify=False`` checks neither the chain nor the host
    name (a lab platform only). ``client_cert``/``client_key`` answer a platform that asks for a client
    certificate (mutual TLS). Nothing below TLS ``min_version`` (1.2 by default) is negotiated.
    """
    import ssl

    if min_version not in TLS_VERSIONS:
        raise LinkageError(f"linkage.tls_min_version: {min_version!r} is not 1.2 or 1.3")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise LinkageError(f"linkage.ca_file: cannot load {ca_file}: {exc}") from None
    ctx.minimum_version = getattr(ssl.TLSVersion, TLS_VERSIONS[min_version])
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        try:
            ctx.load_cert_chain(client_cert, client_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise LinkageError(f"linkage.client_cert: cannot load {client_cert}: {exc}") from None
    return ctx


class LinkageClient:
    """Signed HTTP calls to the provincial platform (httpx; TLS as ``tls_context`` sets it up)."""

    def __init__(
        self,
        base_url: str,
        key_id: str,
        secret: str,
        *,
        timeout: float = 10.0,
        verify: Any = True,
        transport: Any = None,
    ) -> None:
        import httpx

        from alerts.logsafe import register_secret

        self.base_url = base_url.rstrip("/")
        self.key_id = key_id
        self._secret = secret  # never logged: masked in every log record should it ever reach one
        register_secret(secret)
        self._prefix = httpx.URL(self.base_url).raw_path.decode().rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify, transport=transport)

    def __repr__(self) -> str:  # the secret must not show up in a traceback or a log line
        return f"LinkageClient({self.base_url!r}, key_id={self.key_id!r})"

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: bytes = b"", query: str = "") -> SendResult:
        import httpx

        full_path = self._prefix + path
        headers = signed_headers(self.key_id, self._secret, method, full_path, query, body)
        if body:
            headers["Content-Type"] = "application/json"
        url = path + (f"?{query}" if query else "")
        try:
            resp = self.http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return SendResult(False, 0, error=f"{type(exc).__name__}: {exc}"[:500])
        try:
            payload = resp.json()
        except ValueError:
            payload = resp.text[:500]
        if 200 <= resp.status_code < 300:
            return SendResult(True, resp.status_code, body=payload)
        err = payload.get("error", payload) if isinstance(payload, dict) else payload
        return SendResult(
            False,
            resp.status_code,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            error=json.dumps(err, ensure_ascii=False)[:500] if not isinstance(err, str) else err[:500],
            body=payload,
            permanent=resp.status_code in PERMANENT_STATUSES,
        )

    def advisories(self, since: str | None = None) -> SendResult:
        return self.request("GET", "/api/v1/advisories", query=f"since={quote(since)}" if since else "")


@dataclass
class ForwarderStats:
    sent: int = 0
    duplicates: int = 0
    retried: int = 0
    failed: int = 0
    passes: int = 0
    last_error: str = ""
    last_status: int = 0
    paused_until: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)


class Forwarder:
    """Delivers the outbox: ``run_once`` is one pass (the CLI's ``linkage send``); ``start`` runs passes
    in a background thread until ``stop`` (the sensor and the enterprise API do that)."""

    def __init__(
        self,
        outbox: Any,  # alerts.outbox.Outbox
        client: LinkageClient,
        *,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        poll_seconds: float = 2.0,
        batch: int = 100,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.rng = rng
        self.clock = clock
        self.stats = ForwarderStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0  # consecutive transport failures: they pause the whole worker, not one entry

    @classmethod
    def from_config(cls, config: Any, outbox: Any) -> "Forwarder":
        lk = config.linkage
        secret = resolve_secret(lk)
        verify = tls_context(
            lk.ca_file,
            verify=getattr(lk, "verify_tls", True),
            client_cert=getattr(lk, "client_cert", None),
            client_key=getattr(lk, "client_key", None),
            min_version=getattr(lk, "tls_min_version", "1.2"),
        )
        client = LinkageClient(lk.url, lk.key_id, secret, timeout=lk.timeout, verify=verify)
        return cls(outbox, client, retry_base=lk.retry_base, retry_max=lk.retry_max, poll_seconds=lk.poll_seconds)

    # -- one pass --------------------------------------------------------------------------------
    def run_once(self, max_items: int | None = None) -> int:
        """Send what is due (in order per incident); return how many entries were settled."""
        self.stats.passes += 1
        now = self.clock()
        if now < self.stats.paused_until:
            return 0
        settled = 0
        limit = self.batch if max_items is None else max_items
        for entry in self.outbox.claim(limit, now=now):
            result = self.client.request(entry.method, entry.path, entry.body)
            self.stats.last_status = result.status
            self.stats.by_status[result.status] = self.stats.by_status.get(result.status, 0) + 1
            if result.ok:
                dup = bool(isinstance(result.body, dict) and result.body.get("duplicate"))
                self.outbox.mark_sent(entry.seq, result.status, dup, now=self.clock())
                self.stats.sent += 1
                self.stats.duplicates += dup
                self._failures = 0
                settled += 1
                continue
            self.stats.last_error = f"{result.status or 'no answer'}: {result.error}"
            if result.permanent:
                self.outbox.mark_failed(entry.seq, result.status, result.error)
                self.stats.failed += 1
                settled += 1
                log.warning("linkage: the platform refused entry %d (%s): %s", entry.seq, entry.kind, result.error)
                continue
            # Transient (no answer, 401/403 while a credential is being fixed, 429, 5xx): back off.
            self._failures += 1
            delay = backoff_delay(entry.attempts + 1, self.retry_base, self.retry_max, self.rng)
            if result.retry_after is not None:
                delay = max(delay, min(result.retry_after, self.retry_max * 4))
            self.outbox.mark_retry(entry.seq, result.status, result.error, self.clock() + delay)
            self.stats.retried += 1
            if result.status in (0, 429, 502, 503, 504) or result.retry_after is not None:
                # The platform is away or asks us to slow down: the rest of the batch would fare alike.
                pause = (
                    delay
                    if result.retry_after is not None
                    else backoff_delay(self._failures, self.retry_base, self.retry_max, self.rng)
                )
                self.stats.paused_until = self.clock() + pause
                self.outbox.release_claims()
                break
        return settled

    def drain(self, timeout: float = 30.0) -> bool:
        """Passes until nothing is pending or ``timeout`` runs out (tests, ``linkage send --wait``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.run_once()
            if self.outbox.pending_count() == 0:
                return True
            self._sleep_until_due(end)
        return self.outbox.pending_count() == 0

    def _sleep_until_due(self, end: float) -> None:
        now = self.clock()
        due = self.outbox.next_due()
        wake = min(
            x for x in (due if due is not None else now + self.poll_seconds, now + self.poll_seconds) if x is not None
        )
        wake = max(wake, self.stats.paused_until)
        wait = max(0.02, min(wake - now, end - time.monotonic(), self.poll_seconds))
        self.outbox.wait_for_work(wait)

    # -- background ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="linkage-forwarder", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the worker must outlive a bad pass (a locked database...)
                log.exception("linkage: a delivery pass failed")
                self._stop.wait(self.poll_seconds)
                continue
            if self._stop.is_set():
                break
            self._sleep_until_due(time.monotonic() + self.poll_seconds)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.outbox.notify()
        if self._thread:
            self._thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        self.stop()
        self.client.close()

    # -- advisories (warnings down) ----------------------------------------------------------------
    def fetch_advisories(self) -> SendResult:
        """Fetch the advisories addressed to this enterprise and keep them in the outbox database."""
        result = self.client.advisories()
        if result.ok and isinstance(result.body, dict):
            self.outbox.save_advisories(result.body.get("items", []), now=self.clock())
        return result


def resolve_secret(linkage: Any) -> str:
    """The HMAC secret: the environment variable named by ``linkage.secret_env``, else ``secret_file``."""
    import os
    from pathlib import Path

    value = os.environ.get(linkage.secret_env or "", "")
    if not value and linkage.secret_file:
        try:
            value = Path(linkage.secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LinkageError(f"linkage.secret_file: cannot read {linkage.secret_file}: {exc.strerror}") from None
    if not value:
        raise LinkageError(
            f"no linkage secret: set the environment variable {linkage.secret_env} or linkage.secret_file "
            "(the secret is printed once by `icswatch province credential issue`)"
        )
    from alerts.logsafe import register_secret

    register_secret(value)
    return value


class LinkageError(Exception):
    """The linkage is not usable as configured; the message says what to fix."""
