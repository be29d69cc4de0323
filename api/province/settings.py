"""The platform's settings (``icswatch province serve`` flags and ``ICSWATCH_PROVINCE_*`` variables).

The platform is deployed apart from any sensor, so it does not read the sensor's ``Config``: these
few settings are its whole configuration. Secrets (the master key) come from the environment or a
file, never from a flag, so they do not show in ``ps`` or a shell history.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "ICSWATCH_PROVINCE_"


class ProvinceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    db: str = Field("var/province.db", description="SQLite database of the platform")
    master_key_file: str | None = Field(
        None,
        description="file holding the master key that encrypts the enterprises' HMAC secrets (32 bytes, base64); "
        "default <db>.key, created with mode 0600 when missing. ICSWATCH_PROVINCE_MASTER_KEY overrides it",
    )
    create_master_key: bool = Field(True, description="create the master key file when it does not exist")
    clock_skew: float = Field(
        300.0, ge=5, le=3600, description="accepted difference between a request's timestamp and now (s)"
    )
    max_body: int = Field(
        256 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest request body in bytes (413 beyond)"
    )
    max_nonces: int = Field(1_000_000, ge=1000, description="replay cache bound (nonces remembered within the window)")
    deadline_hours_cii: float = Field(
        1.0, gt=0, description="reporting deadline for CII operators (hours after discovery)"
    )
    deadline_hours_other: float = Field(4.0, gt=0, description="reporting deadline for other enterprises (hours)")
    mandatory_level: int = Field(3, ge=1, le=4, description="levels at or graver than this must be reported (3 = 较大)")
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="CIDRs of reverse proxies whose X-Forwarded-For names the client (for the audit log)",
    )
    rate_limit: float = Field(
        100.0,
        ge=0,
        description="requests per second per enterprise key or staff token (requests that authenticated); 0 = no limit",
    )
    rate_burst: int = Field(500, ge=1, description="requests allowed at once above rate_limit (token bucket size)")
    anonymous_rate_limit: float = Field(
        20.0,
        ge=0,
        description="requests per second per client address for requests that did not authenticate "
        "(no credential, a bad signature, an unknown or revoked key); 0 = no limit",
    )
    anonymous_rate_burst: int = Field(100, ge=1, description="bucket size of anonymous_rate_limit")
    audit_flush_seconds: float = Field(0.2, gt=0, le=10, description="the audit writer commits at least this often")
    touch_seconds: float = Field(
        60.0, ge=0, description="last-used times of keys and tokens are written at most this often"
    )
    synchronous: str = Field(
        "NORMAL", pattern="^(NORMAL|FULL)$", description="SQLite synchronous mode (FULL survives a power cut)"
    )
    store: str = Field(
        "sqlite",
        pattern="^(sqlite|es)$",
        description="where incidents, advisories and the audit log live: sqlite (the db file) or es "
        "(Elasticsearch at es_urls; the registry, keys, tokens and the replay cache stay in the db file)",
    )
    es_urls: list[str] = Field(
        default_factory=list,
        description="Elasticsearch nodes for store=es (default: ICSWATCH_ES_URL, comma-separated); the API key "
        "or password come from ICSWATCH_ES_API_KEY / ICSWATCH_ES_PASSWORD, never from a flag",
    )
    es_index_prefix: str = Field(
        "icswatch-province", pattern=r"^[a-z0-9][a-z0-9._-]{0,100}$", description="prefix of the platform's indices"
    )
    es_username: str = Field("", max_length=200, description="basic-auth user (with ICSWATCH_ES_PASSWORD)")
    es_ca_file: str | None = Field(None, description="CA bundle that signed the cluster's certificate (PEM)")
    es_timeout: float = Field(10.0, gt=0, le=300, description="seconds before an Elasticsearch request fails")
    title: str = Field("icswatch provincial platform", max_length=200)

    @classmethod
    def from_env(cls, **overrides: Any) -> "ProvinceSettings":
        """Defaults, then ``ICSWATCH_PROVINCE_<FIELD>`` variables, then explicit overrides (CLI flags)."""
        data: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if field.annotation in (list[str],):
                data[name] = [x.strip() for x in raw.split(",") if x.strip()]
            else:
                data[name] = raw
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)

    def key_path(self) -> Path:
        return Path(self.master_key_file) if self.master_key_file else Path(self.db + ".key")
