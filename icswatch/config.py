"""Configuration: one YAML file validated with pydantic; defaults work with no file at all.

Every option can also be set on the command line (``--set sensor.max_flows=1000`` for any key, plus
named flags for the common ones). Errors name the key and what is wrong:
``config.yaml: sensor.max_flows: Input should be a valid integer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULES_DIR = REPO_ROOT / "rules"


class ConfigError(Exception):
    """A configuration problem a person can fix; the message says where and what."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SensorConfig(_Model):
    """Flow table, reassembly and decode bounds. Every cap is counted when hit."""

    max_flows: int = Field(200_000, ge=16, description="flows kept at once; the idlest is evicted beyond")
    max_flow_buffer: int = Field(1 << 20, ge=4096, description="out-of-order bytes buffered per TCP direction")
    tcp_idle_timeout: float = Field(600.0, gt=0, description="seconds of capture time before an idle TCP flow ends")
    udp_idle_timeout: float = Field(120.0, gt=0, description="seconds of capture time before an idle UDP flow ends")
    max_fragment_sets: int = Field(4096, ge=0, description="IPv4/IPv6 datagrams being reassembled at once")
    fragment_timeout: float = Field(30.0, gt=0, description="seconds before an incomplete fragmented datagram is dropped")
    signature_probe_bytes: int = Field(64, ge=1, description="payload bytes a flow on an unknown port is probed with")
    name: str = Field("icswatch-sensor", description="sensor name (observer.name in alerts)")
    enterprise_id: str = Field("", description="enterprise id used when reporting to the province")
    site: str = Field("", description="site / plant name (observer.site)")


class RulesConfig(_Model):
    paths: list[str] = Field(default_factory=lambda: [str(DEFAULT_RULES_DIR)], description="rule files or folders")
    lists: dict[str, list[str]] = Field(
        default_factory=dict, description="named address lists (allowed_masters, engineering_workstations, ...)"
    )
    lists_file: str | None = Field(None, description="YAML file of named lists, merged with `lists`")
    enabled: bool = True


class OutputsConfig(_Model):
    sqlite: str | None = Field("var/icswatch.db", description="SQLite alert store; empty to disable")
    eve: str | None = Field(None, description="Suricata-EVE-style JSON Lines of alerts")
    events: str | None = Field(None, description="JSON Lines of every IcsEvent")


class Config(_Model):
    sensor: SensorConfig = Field(default_factory=SensorConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)


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
