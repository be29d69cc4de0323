"""The IcsEvent record: one application-layer operation seen on the wire.

Every protocol module turns its PDUs into IcsEvents; detectors only ever see IcsEvents, never packets.
The record is protocol-neutral in the manner of IPAL's messages: a function code and name, a
category (what kind of operation it is), the unit/station addressed, the data addresses touched and
the values written, and the result. Protocol-specific details go in ``fields`` (serialised as
``ics.<protocol>.*``).

Addresses are the wire's 0-based addresses (Modbus register 0 is "40001" in some vendor manuals;
we never convert inside the sensor, only for display).

The record is created for every PDU, so it is slotted and built with positional defaults.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

# Operation categories (the vocabulary of rules and ML features).
READ = "read"
WRITE = "write"
CONTROL = "control"  # operate a process: commands, set points, start/stop of outputs
PROGRAM = "program"  # change logic/firmware/configuration: download, upload, delete block
DIAGNOSTIC = "diagnostic"  # restart, diagnostics, listen-only, device status
DISCOVERY = "discovery"  # identification, who-is, list identity, SZL reads
SESSION = "session"  # connection set-up, keep-alive, session management
OTHER = "other"
CATEGORIES = (READ, WRITE, CONTROL, PROGRAM, DIAGNOSTIC, DISCOVERY, SESSION, OTHER)

# Directions.
REQUEST = "request"
RESPONSE = "response"
UNSOLICITED = "unsolicited"  # a server-initiated report (DNP3 unsolicited, IEC 104 spontaneous)
DIRECTIONS = (REQUEST, RESPONSE, UNSOLICITED)

# Result values.
OK = "ok"
EXCEPTION = "exception"  # the device answered with an error / exception code
MALFORMED = "malformed"  # the PDU did not parse; ``anomaly`` names why

_event_ids = itertools.count(1)


def next_event_id() -> int:
    """Process-wide monotonically increasing event id (cheap, no locking: CPython's count is atomic)."""
    return next(_event_ids)


@dataclass(slots=True)
class IcsEvent:
    """One ICS operation (a request, a response, or an unsolicited report)."""

    ts: float  # capture time of the packet that completed the PDU (seconds since the epoch)
    protocol: str  # registry name: "modbus", "dnp3", "s7comm", "iec104", "enip", "cip", "bacnet", "opcua", ...
    src: str  # sender IP of this PDU
    sport: int
    dst: str
    dport: int
    transport: str  # "tcp" or "udp"
    direction: str  # REQUEST / RESPONSE / UNSOLICITED
    function: int  # protocol function/service code; -1 when the PDU has none
    function_name: str  # stable lower_snake name, e.g. "write_multiple_registers", "unknown-90"
    category: str  # one of CATEGORIES
    unit: int | None = None  # unit id / station / link address / common address
    address: int | None = None  # first data address touched (0-based wire address)
    quantity: int | None = None  # how many items from ``address``
    values: tuple[Any, ...] | None = None  # values written/commanded (or read back, for responses)
    objects: tuple[str, ...] | None = None  # object keys touched, e.g. ("g12v1",), ("DB1.DBW10",)
    result: str = OK  # OK / EXCEPTION / MALFORMED
    code: int | None = None  # exception / status / error code when result != OK (or the status returned)
    latency: float | None = None  # response time in seconds, on responses paired with their request
    anomaly: str | None = None  # named anomaly for malformed PDUs, e.g. "modbus_bad_length"
    fields: dict[str, Any] | None = None  # protocol-specific details (ics.<protocol>.*)
    flow_id: int = 0  # id of the flow in the flow table (for evidence and ML per-flow features)
    src_mac: str | None = None
    dst_mac: str | None = None
    size: int = 0  # PDU size in bytes
    id: int = field(default_factory=_event_ids.__next__)  # a C call: cheaper than a Python function

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the JSON Lines event output). Empty optional fields are left out."""
        out: dict[str, Any] = {
            "id": self.id,
            "ts": self.ts,
            "protocol": self.protocol,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
            "transport": self.transport,
            "direction": self.direction,
            "function": self.function,
            "function_name": self.function_name,
            "category": self.category,
            "result": self.result,
            "flow_id": self.flow_id,
            "size": self.size,
        }
        for key in ("unit", "address", "quantity", "code", "latency", "anomaly", "src_mac", "dst_mac"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.values is not None:
            out["values"] = [_jsonable(v) for v in self.values]
        if self.objects is not None:
            out["objects"] = list(self.objects)
        if self.fields:
            out["fields"] = {k: _jsonable(v) for k, v in self.fields.items()}
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def signature_of(event: IcsEvent) -> tuple[Any, ...]:
    """What the events a polling plant repeats have in common: flow, sender (address and port: a host
    talking to itself is both ends of its flow), protocol, direction, category, function code and name,
    unit, result. A flow fixes the rest of the addressing for a sender (receiver, transport, MACs), so
    every event of a signature reads the same in each field ``detectors.rules.compiler.SIGNATURE_FIELDS``
    names. ``alerts.runtime.AlertingRuntime``'s per-event function builds the same tuple inline; the
    asset inventory counts events by it."""
    return (event.flow_id, event.src, event.sport, event.protocol, event.direction, event.category,
            event.function, event.function_name, event.unit, event.result)
