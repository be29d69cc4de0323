"""The Detector interface: detectors see IcsEvents (never packets) and return alerts.

A detector is any object with:
- ``observe(event) -> list[Alert]``: called for every IcsEvent, in capture-time order;
- ``tick(ts) -> list[Alert]``: called when capture time advances (about once a second of capture
  time), for detectors that fire on silence (a poll that stops) or close time windows;
- ``flush() -> list[Alert]``: end of input (end of a replay, shutdown of a live sensor).
The Alert record lives in ``alerts.records``; detectors build Alerts but never store or send them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sensor.events import IcsEvent

if TYPE_CHECKING:  # detectors only build Alerts; the record's module owns serialisation
    from alerts.records import Alert


@runtime_checkable
class Detector(Protocol):
    name: str

    def observe(self, event: IcsEvent) -> "list[Alert]": ...

    def tick(self, ts: float) -> "list[Alert]": ...

    def flush(self) -> "list[Alert]": ...
