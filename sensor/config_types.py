"""Bounds the sensor runs with. The CLI's pydantic ``SensorConfig`` carries the same names; the sensor
package takes any object with these attributes, so it never imports the CLI's configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class SensorLimits:
    max_flows: int = 200_000
    max_flow_buffer: int = 1 << 20
    max_buffered_bytes: int = 64 << 20  # all flows together (sensor/budget.py)
    tcp_idle_timeout: float = 600.0
    udp_idle_timeout: float = 120.0
    max_fragment_sets: int = 4096
    max_fragment_bytes: int = 16 << 20  # all incomplete IP datagrams together
    fragment_timeout: float = 30.0
    max_clock_jump: float = 3600.0  # a forward jump of capture time beyond this is a clock step, not time passing
    signature_probe_bytes: int = 64
    heap_trim_seconds: float = 60.0  # wall seconds between two malloc_trim calls (sensor/memory.py); 0: never

    @classmethod
    def from_config(cls, cfg: Any | None) -> "SensorLimits":
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)})
