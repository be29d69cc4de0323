"""Bounds the sensor runs with. The CLI's pydantic ``SensorConfig`` carries the same names; the sensor
package takes any object with these attributes, so it never imports the CLI's configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class SensorLimits:
    max_flows: int = 200_000
    max_flow_buffer: int = 1 << 20
    tcp_idle_timeout: float = 600.0
    udp_idle_timeout: float = 120.0
    max_fragment_sets: int = 4096
    fragment_timeout: float = 30.0
    signature_probe_bytes: int = 64

    @classmethod
    def from_config(cls, cfg: Any | None) -> "SensorLimits":
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)})
