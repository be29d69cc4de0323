"""How learn and protect read an event: the same keys on both sides, or the baseline lies.

- who is client and server: ``sensor.assets.orient`` (the registered port, else the direction);
- which side sent it: ``client`` or ``server``;
- the address range touched: ``[address, address + quantity - 1]`` (wire addresses, 0-based);
- the values written: numeric values of client requests whose category is write or control, each
  paired with the address it goes to (``address + i``; IEC 104 objects carry their own IOAs);
- the periodic signature: requests from the client and unsolicited reports from the server (responses
  mirror requests, so they are not timed separately);
- the sequence anomaly: the analyzer's named anomaly when it is a sequence one (IEC 104: N(S) gap,
  duplicate, reorder, N(R) acknowledging unsent frames or moving backwards, k exceeded, data while
  stopped), or a N(S) jump the analyzer did not blame on the peer because the capture lost bytes
  there (``iec104_seq_gap_after_loss``);
- the connection start: the N(S) of a connection's first I-frame in each direction (the analyzer marks
  it ``seq: first``). IEC 104 resets N(S) to 0 when a connection is established (clause 5.1), so a
  connection first seen at N(S) = 24 lost its first 24 I-frames on the way to the sensor, or is not
  the connection it claims to be (``iec104_start_midway``; a pair's first connection after the sensor
  starts is exempt: the sensor may simply have joined it late).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sensor.assets import orient, service_ports
from sensor.events import CONTROL, REQUEST, UNSOLICITED, WRITE, IcsEvent

WRITE_CATEGORIES = frozenset({WRITE, CONTROL})
SEQUENCE_ANOMALIES = frozenset(
    {
        "iec104_seq_gap",
        "iec104_seq_duplicate",
        "iec104_seq_reorder",
        "iec104_ack_unsent",
        "iec104_ack_backward",
        "iec104_k_exceeded",
        "iec104_data_while_stopped",
    }
)
GAP_AFTER_LOSS = "iec104_seq_gap_after_loss"
START_MIDWAY = "iec104_start_midway"
MAX_VALUES_PER_EVENT = 128  # a write of more values than this is summarised by its first ones

PORTS = service_ports()


def endpoints(event: IcsEvent) -> tuple[str, str, bool]:
    """(client, server, client_is_src); layer-2 events use the MACs."""
    if event.transport == "l2":
        return event.src_mac or event.src, event.dst_mac or event.dst, True
    return orient(event, PORTS)


def address_range(event: IcsEvent) -> tuple[int, int] | None:
    a = event.address
    if a is None or not isinstance(a, int):
        return None
    q = event.quantity
    return (a, a + q - 1) if q and q > 1 and isinstance(q, int) else (a, a)


def written_values(event: IcsEvent, client_is_src: bool) -> Iterator[tuple[int, float]]:
    """(address, value) of the numeric values a client request writes."""
    if not client_is_src or event.direction != REQUEST or event.category not in WRITE_CATEGORIES:
        return
    values = event.values
    base = event.address
    if not values or base is None:
        return
    objs = event.objects
    per_object = None
    if objs and len(objs) == len(values) and objs[0].startswith("ioa:"):
        try:
            per_object = [int(o[4:]) for o in objs]
        except ValueError:
            per_object = None
    for i, v in enumerate(values[:MAX_VALUES_PER_EVENT]):
        num = _number(v)
        if num is not None:
            yield (per_object[i] if per_object else base + i), num


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def timed(event: IcsEvent, client_is_src: bool) -> bool:
    """Does this event take part in the periodic-request timing?"""
    d = event.direction
    return (client_is_src and d == REQUEST) or (not client_is_src and d == UNSOLICITED)


def sequence_anomaly(event: IcsEvent) -> str | None:
    an = event.anomaly
    if an is not None and an in SEQUENCE_ANOMALIES:
        return an
    f = event.fields
    if f is not None and f.get("seq") == "resync" and f.get("seq_jump"):
        return GAP_AFTER_LOSS
    return None


def signature(event: IcsEvent, side: str) -> tuple[str, str, int | None, int | None, int | None]:
    return (side, event.function_name, event.unit, event.address, event.quantity)


def connection_start(event: IcsEvent) -> int | None:
    """N(S) of the first I-frame of a connection direction, None for any other event."""
    f = event.fields
    if f is not None and f.get("seq") == "first":
        ns = f.get("ns")
        return ns if isinstance(ns, int) else None
    return None
