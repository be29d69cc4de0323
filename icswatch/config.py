"""Configuration: one YAML file validated with pydantic; defaults work with no file at all.

Every option can also be set on the command line (``--set sensor.max_flows=1000`` for any key, plus
named flags for the common ones). Errors name the key and what is wrong:
``config.yaml: sensor.max_flows: Input should be a valid integer``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RULES_PACKAGE = "icswatch_rules"  # the top-level rules/ folder, shipped under this name (pyproject.toml)


def source_checkout() -> Path | None:
    """The root of the source tree icswatch runs from (a clone or an unpacked sdist); None when it runs
    from an installed wheel. Only what exists solely in a checkout depends on it: the rules' example
    captures (pcaps/), file names shown relative to the repository, PYTHONPATH for a child process."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "rules" / "__init__.py").is_file():
        return root
    return None


def default_rules_dir() -> Path:
    """The folder of the default rules (``*.yaml``) and named lists (``lists/default.yaml``).

    Code run from a source tree uses that tree's ``rules/`` (so a checkout never mixes its code with
    the rules of some other installed icswatch); otherwise the installed ``icswatch_rules`` package.
    """
    root = source_checkout()
    if root is not None:
        return root / "rules"
    try:
        found = importlib.resources.files(RULES_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError(
            f"the default rules (package {RULES_PACKAGE}) are not installed: reinstall icswatch, or set rules.paths"
        ) from None
    if not isinstance(found, Path):  # e.g. imported from a zip archive: the loader needs real files
        raise ConfigError(f"the default rules are inside an archive ({found}): set rules.paths to a folder")
    return found


class ConfigError(Exception):
    """A configuration problem a person can fix; the message says where and what."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SensorConfig(_Model):
    """Flow table, reassembly and decode bounds. Every cap is counted when hit."""

    max_flows: int = Field(200_000, ge=16, description="flows kept at once; the idlest is evicted beyond")
    max_flow_buffer: int = Field(1 << 20, ge=4096, description="out-of-order bytes buffered per TCP direction")
    max_buffered_bytes: int = Field(
        64 << 20,
        ge=1 << 20,
        description="bytes held across all flows while waiting for more (out-of-order TCP segments, partial "
        "PDUs, unfinished DNP3 fragments / OPC UA messages / COTP sequences); beyond it the longest-waiting "
        "holder gives up its bytes (counted buffered_bytes_cap)",
    )
    tcp_idle_timeout: float = Field(600.0, gt=0, description="seconds of capture time before an idle TCP flow ends")
    udp_idle_timeout: float = Field(120.0, gt=0, description="seconds of capture time before an idle UDP flow ends")
    max_fragment_sets: int = Field(4096, ge=0, description="IPv4/IPv6 datagrams being reassembled at once")
    max_fragment_bytes: int = Field(
        16 << 20, ge=65536, description="bytes of fragments held across all incomplete datagrams (the oldest go first)"
    )
    fragment_timeout: float = Field(30.0, gt=0, description="seconds before an incomplete fragmented datagram is dropped")
    max_clock_jump: float = Field(
        3600.0,
        gt=0,
        description="seconds: a forward jump of capture time larger than this (a packet dated 2100, a clock "
        "step) is not taken as time passing for idle timeouts (counted capture_clock_jump_forward)",
    )
    signature_probe_bytes: int = Field(64, ge=1, description="payload bytes a flow on an unknown port is probed with")
    heap_trim_seconds: float = Field(
        60.0,
        ge=0,
        description="wall-clock seconds between two hand-backs of freed heap to the OS (glibc malloc_trim; "
        "keeps a long-running sensor's RSS at what it uses); 0 never",
    )
    name: str = Field("icswatch-sensor", description="sensor name (observer.name in alerts)")
    enterprise_id: str = Field("", description="enterprise id used when reporting to the province")
    site: str = Field("", description="site / plant name (observer.site)")


class RulesConfig(_Model):
    """The rule engine (detectors/rules, language in docs/rules.md) and incident grouping (docs/incidents.md)."""

    class Suppression(_Model):
        """An operator's standing suppression: alerts of ``rule`` matching src/dst are dropped (until a time)."""

        rule: str = Field("*", description="rule id, or a glob such as modbus-*")
        src: str | None = Field(None, description="only alerts from this IP / CIDR, or @list_name")
        dst: str | None = Field(None, description="only alerts to this IP / CIDR, or @list_name")
        until: Any = Field(
            None,
            description="time after which the suppression lapses: ISO 8601 date/time (UTC unless it says "
            "otherwise) or epoch seconds; unset = for good",
        )
        reason: str = Field("", description="why (shown by `icswatch rules list --suppressions`)")

        def model_post_init(self, _context: Any) -> None:
            self.expires()  # refuse a bad time at load, not at the first alert

        def expires(self) -> float | None:
            """``until`` as epoch seconds (None: never). YAML gives dates and datetimes as objects."""
            import datetime as dt

            value = self.until
            if value is None:
                return None
            if isinstance(value, bool):
                pass
            elif isinstance(value, (int, float)):
                return float(value)
            elif isinstance(value, dt.datetime):
                return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
            elif isinstance(value, dt.date):
                return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
            elif isinstance(value, str):
                try:
                    parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
                except ValueError:
                    pass
                else:
                    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()
            raise ConfigError(f"rules.suppress: until: {value!r} is not an ISO 8601 date/time or epoch seconds")

    paths: list[str] = Field(
        default_factory=lambda: [str(default_rules_dir())],
        description="rule files or folders (default: the rules shipped with icswatch, rules/ in a checkout)",
    )
    lists: dict[str, list[str | int]] = Field(
        default_factory=dict,
        description="named lists (allowed_masters, engineering_workstations, critical_assets, ...): IPs, CIDRs or "
        "values; a name here replaces the same name from lists_file",
    )
    lists_file: str | None = Field(
        default_factory=lambda: str(default_rules_dir() / "lists" / "default.yaml"),
        description="YAML file of named lists (`lists: {name: [entries]}`), merged under `lists`; empty for none",
    )
    enabled: bool = True
    disabled: list[str] = Field(default_factory=list, description="rule ids (or globs) to switch off")
    default_suppress: float = Field(
        60.0, ge=0, description="seconds a rule stays quiet for the same src/dst after an alert, unless it sets suppress"
    )
    learn_seconds: float = Field(
        300.0, ge=0, description="default learning period of `new` rules (seconds of capture time)"
    )
    max_state: int = Field(10_000, ge=16, description="groups / assets / keys kept per rule (oldest evicted, counted)")
    max_new_values: int = Field(4096, ge=16, description="values remembered per asset by a `new` rule")
    max_evidence: int = Field(10, ge=1, le=1000, description="evidence events kept per alert (first and last)")
    suppress: list[Suppression] = Field(default_factory=list, description="standing suppressions (see Suppression)")
    incident_window: float = Field(
        1800.0, gt=0, description="seconds of quiet after which an asset's next alert opens a new incident"
    )
    max_open_incidents: int = Field(10_000, ge=16, description="open incidents kept at once (the oldest is closed)")


class OutputsConfig(_Model):
    """Where alerts go (alerts/runtime.py). Writes are batched: one SQLite transaction per batch."""

    sqlite: str | None = Field("var/icswatch.db", description="SQLite alert store; empty to disable")
    eve: str | None = Field(None, description="Suricata-EVE-style JSON Lines of alerts")
    events: str | None = Field(None, description="JSON Lines of every IcsEvent")
    alerts_out: str | None = Field(None, description="ECS JSON Lines of alerts, one object per line (--alerts-out)")
    batch_size: int = Field(200, ge=1, le=100_000, description="alerts per write batch (one transaction each)")
    flush_seconds: float = Field(
        1.0, ge=0, description="wall-clock seconds after which a partial batch is written anyway (live capture)"
    )
    context_events: int = Field(
        3,
        ge=0,
        le=1000,
        description="context stored with each alert: up to this many events of its flow after it, and before it those "
        "still in the runtime's ring of recent events (the last max(16, 4 x this) events of all flows; on a busy link "
        "often none, the evidence pcap keeps the flow's packets from before the alert)",
    )
    sqlite_synchronous: str = Field(
        "NORMAL",
        pattern="^(OFF|NORMAL|FULL)$",
        description="SQLite synchronous mode with WAL: NORMAL survives a process crash, FULL also a power cut",
    )


class LinkageConfig(_Model):
    """Reporting incidents to the provincial platform and fetching its advisories (alerts/outbox.py,
    alerts/forwarder.py; protocol and redaction in docs/linkage.md). The enterprise id, site and sensor
    name come from the `sensor` section. The HMAC secret is never written in this file: it is read
    from the environment variable named by `secret_env`, or from `secret_file`."""

    enabled: bool = Field(False, description="queue incidents for the province and run the delivery worker")
    url: str = Field(
        "", description="base URL of the provincial platform, e.g. https://soc.province.example (HTTPS in production)"
    )
    key_id: str = Field(
        "", description="this enterprise's credential key id (from `icswatch province credential issue`)"
    )
    secret_env: str = Field("ICSWATCH_LINKAGE_SECRET", description="environment variable holding the HMAC secret")
    secret_file: str | None = Field(
        None, description="file holding the HMAC secret (mode 0600), when the variable is unset"
    )
    ca_file: str | None = Field(
        None, description="CA bundle (PEM) to verify the platform's TLS certificate, e.g. the province's own CA; unset = system CAs"
    )
    verify_tls: bool = Field(
        True, description="verify the platform's TLS certificate and host name (switch off only on a lab platform)"
    )
    client_cert: str | None = Field(
        None, description="PEM certificate presented to the platform (mutual TLS, when the platform asks for one)"
    )
    client_key: str | None = Field(None, description="PEM private key of client_cert (mode 0600)")
    tls_min_version: str = Field(
        "1.2", pattern=r"^1\.[23]$", description="lowest TLS version accepted from the platform: 1.2 or 1.3"
    )

    @field_validator("tls_min_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return f"{value:g}" if isinstance(value, float) else value  # YAML reads 1.3 as a number
    timeout: float = Field(10.0, gt=0, le=300, description="seconds to wait for the platform per request")
    outbox: str = Field(
        "var/linkage-outbox.db", description="SQLite outbox: reports wait here until the platform accepted them"
    )
    auto_report: bool = Field(True, description="queue incidents at report_min_level or graver without an analyst")
    report_min_level: int = Field(
        3,
        ge=1,
        le=4,
        description="national level reported automatically: 3 = 较大 and graver (the mandatory ones), 4 = all, 1 = 特别重大 only",
    )
    retry_base: float = Field(
        1.0, gt=0, le=3600, description="first retry delay in seconds (doubles per attempt, with jitter)"
    )
    retry_max: float = Field(
        300.0, gt=0, le=86400, description="longest retry delay in seconds (Retry-After may ask for more)"
    )
    poll_seconds: float = Field(2.0, gt=0, le=3600, description="how often the idle worker looks at the outbox")
    advisory_poll_seconds: float = Field(300.0, ge=10, description="how often advisories are fetched from the platform")
    redact_values: bool = Field(
        True, description="drop process values (register contents, written values) from reports"
    )
    redact_networks: list[str] = Field(
        default_factory=lambda: [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "fc00::/7",
            "fe80::/10",
        ],
        description="CIDRs of internal addresses; addresses inside are masked per redact_addresses, others are sent as they are",
    )
    redact_addresses: str = Field(
        "pseudonym",
        pattern="^(pseudonym|prefix|keep)$",
        description="internal addresses become a keyed pseudonym (int-3fa9c1d2e07b), their subnet (prefix), or are kept",
    )
    redact_prefix_v4: int = Field(
        24, ge=0, le=32, description="subnet length shown for IPv4 with redact_addresses: prefix"
    )
    redact_prefix_v6: int = Field(
        64, ge=0, le=128, description="subnet length shown for IPv6 with redact_addresses: prefix"
    )
    redact_hostnames: bool = Field(
        True, description="drop host names (sensor name) and mask names under internal_domains"
    )
    internal_domains: list[str] = Field(
        default_factory=list, description="DNS suffixes whose names are masked in text, e.g. plant.local"
    )

    def model_post_init(self, _context: Any) -> None:
        import ipaddress

        for n in self.redact_networks:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"redact_networks: {n!r} is not a CIDR such as 10.0.0.0/8") from None
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key: give both (mutual TLS) or neither")
        if self.enabled:
            if not self.url.startswith(("https://", "http://")):
                raise ValueError("url: an http(s) URL of the provincial platform is needed when linkage is enabled")
            if not self.key_id:
                raise ValueError("key_id: needed when linkage is enabled")


class ApiConfig(_Model):
    """The enterprise SOC API and dashboard (`icswatch serve`, api/enterprise; routes and roles in
    docs/api.md). It reads the alert store named by `outputs.sqlite`; its own state (API tokens, the
    audit log, comments, assignments, rule switches, upload jobs) lives in `state_db`."""

    host: str = Field("127.0.0.1", description="address to listen on (loopback by default; put TLS or a proxy in front before opening it)")
    port: int = Field(8500, ge=1, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (rate limits are per process)")
    ssl_certfile: str | None = Field(None, description="PEM certificate: serve HTTPS (with ssl_keyfile)")
    ssl_keyfile: str | None = Field(None, description="PEM private key of ssl_certfile")
    state_db: str = Field("var/icswatch-api.db", description="SQLite file of the API's own state: hashed tokens, audit log, annotations, jobs")
    upload_dir: str = Field("var/uploads", description="where uploaded captures and their replay datasets are kept (server-chosen names)")
    upload_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, le=16 * 1024**3, description="largest capture accepted by upload (413 beyond)"
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024**2, description="largest JSON request body (413 beyond)")
    max_jobs: int = Field(8, ge=1, le=1000, description="replay jobs queued or running at once (429 beyond)")
    keep_jobs: int = Field(50, ge=1, le=10_000, description="finished jobs kept with their files; the oldest are deleted")
    job_timeout: float = Field(3600.0, gt=0, description="seconds a replay job may run before it is stopped")
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call the API from a browser (exact, e.g. https://soc.example); none = same origin only"
    )
    rate_limit: float = Field(50.0, ge=0, description="requests per second allowed per API token (requests that authenticated); 0 = no limit")
    rate_burst: int = Field(200, ge=1, description="requests allowed at once above the rate (token bucket size)")
    anonymous_rate_limit: float | None = Field(
        None, ge=0, description="requests per second per client address for requests that did not authenticate "
        "(no token, an unknown or revoked one); unset = rate_limit, 0 = no limit"
    )
    anonymous_rate_burst: int | None = Field(None, ge=1, description="bucket size of anonymous_rate_limit; unset = rate_burst")
    baseline: str | None = Field(None, description="baseline YAML shown by /api/v1/baseline and changed by false-positive acceptance")
    sensor_stats: list[str] = Field(
        default_factory=list, description="`icswatch sniff --stats-json` files of the running sensors (status and counters)"
    )
    sensor_stale_seconds: float = Field(180.0, gt=0, description="a sensor whose stats file is older than this is reported stale")
    metrics_public: bool = Field(False, description="serve /metrics without a token (for a scraper on a trusted network)")
    read_indexes: bool = Field(
        True, description="add three read indexes to the SQLite alert store at start (faster searches; api/enterprise/indexes.py)"
    )

    def model_post_init(self, _context: Any) -> None:
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile: give both (HTTPS) or neither (HTTP)")
        for origin in self.cors_origins:
            if origin == "*" or not origin.startswith(("https://", "http://")):
                raise ValueError(f"cors_origins: {origin!r} is not an origin such as https://soc.example (no wildcard)")


class ElasticsearchConfig(_Model):
    """The Elasticsearch output and store (alerts/es_sink.py, alerts/es_store.py; guide in
    docs/elasticsearch.md). Off until a URL is given: `urls` here, `--es-url URL` on the command line, or
    the ICSWATCH_ES_URL environment variable (comma-separated for several nodes; used when `urls` is not
    set in the file). Secrets never go in this file: the API key and the password are read from the
    environment variables named by `api_key_env` and `password_env`."""

    urls: list[str] = Field(default_factory=list, description="node URLs, e.g. https://es1.plant.local:9200; empty = off")
    api_key_env: str = Field("ICSWATCH_ES_API_KEY", description="environment variable holding an API key (base64 id:key)")
    username: str = Field("", description="user for basic authentication (when no API key is set)")
    password_env: str = Field("ICSWATCH_ES_PASSWORD", description="environment variable holding that user's password")
    ca_file: str | None = Field(None, description="CA bundle (PEM) to verify the cluster's TLS certificate; unset = system CAs")
    verify_certs: bool = Field(True, description="verify the TLS certificate (switch off only on a lab cluster)")
    index_prefix: str = Field(
        "icswatch",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="indices are <prefix>-alerts-YYYY.MM.DD, -incidents-, -events-, -context-, read through <prefix>-alerts ...",
    )
    incidents: bool = Field(True, description="index incidents (upserted as they grow)")
    context: bool = Field(True, description="index each alert's context events (the flow's events before and after it)")
    events: str = Field("off", pattern="^(off|sampled|all)$", description="index ICS events too: off, sampled (one in events_sample) or all")
    events_sample: int = Field(100, ge=1, description="with events: sampled, one event in this many is indexed")
    bulk_max_docs: int = Field(1000, ge=1, le=100_000, description="documents per bulk request at most")
    bulk_max_bytes: int = Field(5_000_000, ge=10_000, description="bytes per bulk request at most")
    flush_seconds: float = Field(1.0, gt=0, le=300, description="a partial bulk is sent this long after its first document")
    queue_max_mb: int = Field(64, ge=1, description="documents waiting in memory beyond which they spill to the spool")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds to wait for one request")
    retries: int = Field(3, ge=0, le=20, description="retries of a failed bulk (backoff) before its documents go to the spool")
    retry_base: float = Field(0.5, gt=0, le=60, description="first retry delay in seconds (doubles per attempt, with jitter)")
    retry_max: float = Field(30.0, gt=0, le=3600, description="longest delay between two attempts while the cluster is down")
    spool: str = Field("var/es-spool.db", description="durable spool (SQLite) for documents the cluster could not take yet")
    spool_max_mb: int = Field(512, ge=1, description="spool bound; when full the oldest documents are dropped (counted, logged)")
    close_timeout: float = Field(15.0, ge=0, le=3600, description="seconds a run's end waits for delivery; the rest stays spooled")
    install_templates: bool = Field(True, description="install the index templates on first contact (else: `icswatch es init`)")
    shards: int = Field(1, ge=1, le=1024, description="primary shards of each daily index")
    replicas: int | None = Field(None, ge=0, description="replicas of each daily index; unset = the cluster's default")
    ilm_policy: str = Field("", description="ILM policy name put in the index settings (the policy must exist); empty = none")
    compress: bool = Field(False, description="gzip request bodies (less bandwidth, more CPU)")

    def model_post_init(self, _context: Any) -> None:
        import os

        if "urls" not in self.model_fields_set and os.environ.get("ICSWATCH_ES_URL"):
            raw = os.environ["ICSWATCH_ES_URL"].replace(" ", ",")
            self.urls = [u for u in (x.strip() for x in raw.split(",")) if u]
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                from alerts.logsafe import redact_url

                raise ValueError(f"urls: {redact_url(u)!r} is not an http(s) URL such as https://es.plant.local:9200")

    def __repr_args__(self) -> Any:  # a URL's password never shows in a repr (tracebacks, debug lines)
        from alerts.logsafe import redact_url

        for name, value in super().__repr_args__():
            yield name, ([redact_url(u) for u in value] if name == "urls" else value)


class Config(_Model):
    sensor: SensorConfig = Field(default_factory=SensorConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    linkage: LinkageConfig = Field(default_factory=LinkageConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    elasticsearch: ElasticsearchConfig = Field(default_factory=ElasticsearchConfig)


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or defaults), apply ``key.path=value`` overrides (values parsed as YAML), validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. sensor.max_flows=1000")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
        source = source if path else "--set"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None
