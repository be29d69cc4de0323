"""Checks every target applies besides "no exception": what a well-behaved stage may produce.

A violation raises ``InvariantViolation`` (an AssertionError), which atheris reports as a crash and
saves as a reproducer, like any exception escaping the code under test. Explicit raises, not
``assert``, so the checks survive ``python -O``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from sensor.counters import Counters, ProtocolStats
from sensor.events import CATEGORIES, DIRECTIONS, EXCEPTION, MALFORMED, OK, IcsEvent
from sensor.protocols.base import Session

RESULTS = (OK, EXCEPTION, MALFORMED)


class InvariantViolation(AssertionError):
    """The code under test returned or reported something it must never produce."""


def require(ok: bool, what: str) -> None:
    if not ok:
        raise InvariantViolation(what)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _encode_default(value: Any) -> Any:
    """What the strict encoder does with values JSON has no type for: bytes become hex (as
    ``IcsEvent.to_dict`` does); a memoryview is a bug (it pins the whole reassembly buffer alive)."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, memoryview):
        raise InvariantViolation("an event holds a memoryview (keeps the reassembly buffer alive)")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# strict JSON (RFC 8259): the event outputs and Elasticsearch reject NaN and Infinity
_STRICT = json.JSONEncoder(allow_nan=False, default=_encode_default, check_circular=True).encode


def check_event(
    ev: object,
    session: Session,
    protocols: Collection[str],
    fed_bytes: int,
    timestamps: Collection[float],
    first_ts: float,
) -> None:
    """An event an analyzer emitted on ``session`` after ``fed_bytes`` bytes in both directions.

    Written as plain ``if`` tests: this runs for every event of every input, and a ``require(cond,
    f"...")`` would format its message every time."""
    if not isinstance(ev, IcsEvent):
        raise InvariantViolation(f"emitted {type(ev).__name__}, not IcsEvent")
    if ev.protocol not in protocols:
        raise InvariantViolation(f"protocol {ev.protocol!r} not one of {sorted(protocols)}")
    if ev.transport != session.transport:
        raise InvariantViolation(f"transport {ev.transport!r} on a {session.transport} flow")
    client = (session.client_ip, session.client_port)
    server = (session.server_ip, session.server_port)
    ends = ((ev.src, ev.sport), (ev.dst, ev.dport))
    if ends != (client, server) and ends != (server, client):
        raise InvariantViolation(f"addresses {ends} are not this flow's {client}/{server}")
    if ev.direction not in DIRECTIONS or ev.category not in CATEGORIES or ev.result not in RESULTS:
        raise InvariantViolation(f"direction/category/result {ev.direction!r}/{ev.category!r}/{ev.result!r}")
    if not _is_int(ev.function) or not isinstance(ev.function_name, str) or not ev.function_name:
        raise InvariantViolation(f"function {ev.function!r} {ev.function_name!r}")
    for name in ("unit", "address", "quantity", "code"):
        v = getattr(ev, name)
        if v is not None and not _is_int(v):
            raise InvariantViolation(f"{name} {v!r} is not an int")
    if (ev.address is not None and ev.address < 0) or (ev.quantity is not None and ev.quantity < 0):
        raise InvariantViolation(f"negative address/quantity {ev.address}/{ev.quantity}")
    if ev.values is not None and not isinstance(ev.values, tuple):
        raise InvariantViolation(f"values is a {type(ev.values).__name__}")
    if ev.objects is not None and not (isinstance(ev.objects, tuple) and all(isinstance(o, str) for o in ev.objects)):
        raise InvariantViolation(f"objects {ev.objects!r} is not a tuple of str")
    if ev.anomaly is not None and not (isinstance(ev.anomaly, str) and ev.anomaly):
        raise InvariantViolation(f"anomaly {ev.anomaly!r}")
    if ev.result == MALFORMED and ev.anomaly is None:
        raise InvariantViolation("a malformed PDU without an anomaly name")
    if ev.fields is not None and not isinstance(ev.fields, dict):
        raise InvariantViolation(f"fields is a {type(ev.fields).__name__}")
    if not _is_int(ev.size) or not 0 <= ev.size <= fed_bytes:
        raise InvariantViolation(f"size {ev.size} with {fed_bytes} bytes given")
    if ev.ts not in timestamps:
        raise InvariantViolation(f"ts {ev.ts} is not the time of any packet given")
    if ev.latency is not None and not (isinstance(ev.latency, float) and 0.0 <= ev.latency <= ev.ts - first_ts + 1e-9):
        raise InvariantViolation(f"latency {ev.latency!r} outside [0, {ev.ts - first_ts}]")
    if ev.flow_id != session.flow_id:
        raise InvariantViolation(f"flow_id {ev.flow_id} on flow {session.flow_id}")
    try:
        # values and fields as the outputs serialise them (a list nests at most ~1000 deep: the
        # encoder's recursion limit doubles as the nesting check)
        _STRICT((ev.values, ev.fields))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvariantViolation(f"event is not strict JSON: {exc}: {ev!r}") from None
    ev.to_dict()


def check_counters(counters: Counters) -> None:
    for name, value in counters.items():
        if type(name) is not str or not name or type(value) is not int or value < 0:
            raise InvariantViolation(f"counter {name!r} = {value!r}")


def check_stats(stats: ProtocolStats, protocols: Collection[str]) -> None:
    for proto, n in stats.pdus.items():
        require(proto in protocols, f"PDUs counted under {proto!r}")
        require(_is_int(n) and n >= 0, f"pdus[{proto}] = {n!r}")
    for proto, hist in stats.funcs.items():
        require(proto in protocols, f"functions counted under {proto!r}")
        for key, n in hist.items():
            require(isinstance(key, str), f"function key {key!r} of {proto} is not a str")
            require(_is_int(n) and n >= 0, f"funcs[{proto}][{key}] = {n!r}")


def finite(x: float, what: str) -> None:
    require(isinstance(x, float) and math.isfinite(x), f"{what} {x!r} is not a finite float")
