"""The event fields a rule can test, what kind of value each holds, and how to read it from an IcsEvent.

This table is the rule language's vocabulary: the validator refuses any other name (with a
suggestion), the compiler turns each name into the Python expression that reads it, and
docs/rules.md lists the same table. ``fields.<key>`` reads a protocol-specific detail
(``fields.sub_function`` for Modbus FC 8, ``fields.umas_function`` for FC 90).
"""

from __future__ import annotations

from dataclasses import dataclass

from sensor.events import CATEGORIES, DIRECTIONS, EXCEPTION, MALFORMED, OK

# Kinds of field (what values and modifiers make sense).
STR = "str"  # text compared exactly (optionally against a closed vocabulary)
INT = "int"  # integer (None when the protocol has none)
FLOAT = "float"
IP = "ip"  # address: plain values may be IPs or CIDR networks
PORT = "port"  # integer port; supports ``|standard``
SPAN = "span"  # the address span an operation touches: [address, address + quantity - 1]
MULTI = "multi"  # a tuple of values: a test matches when any element matches (``|all``: every element)
FUNCTION = "function"  # integer code or function name
ANY = "any"  # protocol-specific detail of unknown type

RESULTS = (OK, EXCEPTION, MALFORMED)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    source: str  # Python expression reading it from the event ``e``
    vocab: tuple[str, ...] | None = None
    doc: str = ""


_SPECS = [
    FieldSpec("protocol", STR, "e.protocol", doc='registry name: "modbus", "dnp3", ...; "tcp" for connection attempts'),
    FieldSpec("transport", STR, "e.transport", ("tcp", "udp", "l2"), "tcp / udp"),
    FieldSpec("direction", STR, "e.direction", DIRECTIONS, "request / response / unsolicited"),
    FieldSpec("category", STR, "e.category", CATEGORIES, "read / write / control / program / diagnostic / ..."),
    FieldSpec("function", FUNCTION, "e.function", doc="function code (integer) or function name (text)"),
    FieldSpec("function_name", STR, "e.function_name", doc='stable name, e.g. "write_single_coil", "unknown-100"'),
    FieldSpec("unit", INT, "e.unit", doc="unit id / station / common address"),
    FieldSpec("address", SPAN, "e.address", doc="0-based data addresses touched: address .. address+quantity-1"),
    FieldSpec("quantity", INT, "e.quantity", doc="number of items from address"),
    FieldSpec("values", MULTI, "e.values", doc="values written (requests) or read back (responses)"),
    FieldSpec("objects", MULTI, "e.objects", doc='object keys touched, e.g. "g12v1"'),
    FieldSpec("result", STR, "e.result", RESULTS, "ok / exception / malformed"),
    FieldSpec("code", INT, "e.code", doc="exception / status code when result is not ok"),
    FieldSpec("latency", FLOAT, "e.latency", doc="seconds between request and response (responses only)"),
    FieldSpec("anomaly", STR, "e.anomaly", doc='named parser anomaly, e.g. "modbus_bad_length"'),
    FieldSpec("src", IP, "e.src", doc="sender of this PDU"),
    FieldSpec("dst", IP, "e.dst", doc="receiver of this PDU"),
    FieldSpec("sport", PORT, "e.sport"),
    FieldSpec("dport", PORT, "e.dport"),
    FieldSpec("client", IP, "(e.src if e.direction == 'request' else e.dst)", doc="the requesting side of the flow"),
    FieldSpec("server", IP, "(e.dst if e.direction == 'request' else e.src)", doc="the answering side (the ICS device)"),
    FieldSpec(
        "server_port", PORT, "(e.dport if e.direction == 'request' else e.sport)", doc="the server's port of the flow"
    ),
    FieldSpec("src_mac", STR, "e.src_mac"),
    FieldSpec("dst_mac", STR, "e.dst_mac"),
    FieldSpec("size", INT, "e.size", doc="PDU size in bytes"),
    FieldSpec("flow_id", INT, "e.flow_id"),
]

FIELDS: dict[str, FieldSpec] = {s.name: s for s in _SPECS}
FIELD_PREFIX = "fields."


def field_spec(name: str) -> FieldSpec | None:
    """The spec of ``name``; ``fields.<key>`` gives an ANY field read from ``e.fields``."""
    spec = FIELDS.get(name)
    if spec is not None:
        return spec
    if name.startswith(FIELD_PREFIX) and len(name) > len(FIELD_PREFIX):
        return FieldSpec(name, ANY, "", doc="protocol-specific detail")
    return None


def event_value(event: object, name: str) -> object:
    """Read a field by name (slow path: evidence, group keys for display, tests)."""
    if name.startswith(FIELD_PREFIX):
        fields = getattr(event, "fields", None) or {}
        return fields.get(name[len(FIELD_PREFIX) :])
    if name == "client":
        return event.src if event.direction == "request" else event.dst  # type: ignore[attr-defined]
    if name == "server":
        return event.dst if event.direction == "request" else event.src  # type: ignore[attr-defined]
    if name == "server_port":
        return event.dport if event.direction == "request" else event.sport  # type: ignore[attr-defined]
    return getattr(event, name, None)
