"""Passive asset discovery: who is on the network, what they are, and what they speak.

Fed with IcsEvents (never packets, never a probe sent): every event names two endpoints, and the
protocol analyzers put what a device says about itself on its own responses as
``event.fields["identity"]`` (Modbus 43/14, CIP ListIdentity / Identity object, S7 SZL, BACnet
I-Am and device properties, OPC UA application description, DNP3 outstation address, ...).

What one ``Asset`` holds (all bounded):

- the address it is keyed by: its IP, or its MAC for layer-2-only devices (GOOSE, PROFINET DCP);
- its MAC(s) and the vendor of the MAC's OUI (IEEE registry, from Debian's ``ieee-data`` package:
  read once, lazily; never downloaded at run time);
- the protocols it speaks as a client (it initiates) and as a server (it answers), with counts;
- the operation categories it initiates (read, write, control, program, ...), which give its role;
- first and last seen (capture time), event count, peers (counted, a bounded sample kept);
- identity merged per protocol from ``fields["identity"]`` (latest value of each key wins).

Who is the client of an event? The side that does not use the protocol's registered port (Modbus
502, IEC 104 2404, ...); when both or neither do (BACnet 47808 <-> 47808), the direction decides: a
request's sender is the client, a response's or unsolicited report's sender is the server.
``orient(event)`` is shared with the baseline detector so both agree.

Roles (``infer_role``) are heuristics, each with the reason shown next to it:
engineering station (initiates program-category operations: S7 download/upload, UMAS, CIP program
services), HMI (a client that writes or commands), master (a client that only polls: an IEC 104 /
DNP3 controlling station, a Modbus master, a historian), PLC / RTU / field device / IED / server
(answers; which one from the protocol and the identity).
"""

from __future__ import annotations

import csv
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from sensor.events import CONTROL, OK, PROGRAM, REQUEST, RESPONSE, WRITE, IcsEvent, signature_of

log = logging.getLogger(__name__)

OUI_DIR = Path(os.environ.get("ICSWATCH_OUI_DIR", "/usr/share/ieee-data"))
MAX_ASSETS = 10_000  # hosts kept; the ones beyond are counted in ``AssetInventory.dropped``
MAX_MACS = 4  # MACs kept per asset (a host behind a router shows the router's MAC)
MAX_PEERS = 64  # peer addresses kept per asset (all are counted)
MAX_COUNTED_PEERS = 4096  # peers beyond the kept ones remembered to count each once (beyond it: estimated)
MAX_IDENTITY_KEYS = 32  # keys kept per protocol identity
MAX_IDENTITY_TEXT = 200  # characters kept per identity value
MAX_UNITS = 32  # unit ids / common addresses kept per asset
SHARED_MAC_IPS = 4  # a MAC seen with more IPs than this is a router's: its IPs are not one host

# Roles, in the vocabulary of the docs and the table.
ENGINEERING_STATION = "engineering_station"
MASTER = "master"
HMI = "hmi"
PLC = "plc"
RTU = "rtu"
IED = "ied"
FIELD_DEVICE = "field_device"
SERVER = "server"
CLIENT = "client"
UNKNOWN = "unknown"

# Protocol of the service an asset answers -> its role (when identity says nothing better).
SERVER_ROLES: dict[str, str] = {
    "modbus": PLC,
    "s7comm": PLC,
    "s7comm_plus": PLC,
    "enip": PLC,
    "cip": PLC,
    "melsec": PLC,
    "fins": PLC,
    "ads": PLC,
    "iec104": RTU,
    "dnp3": RTU,
    "mms": IED,
    "goose": IED,
    "sv": IED,
    "c37118": IED,
    "bacnet": FIELD_DEVICE,
    "hart_ip": FIELD_DEVICE,
    "profinet_io": FIELD_DEVICE,
    "profinet_dcp": FIELD_DEVICE,
    "opcua": SERVER,
    "fox": SERVER,
}
# Telecontrol protocols: their clients are controlling stations (SCADA masters).
TELECONTROL = frozenset({"iec104", "dnp3"})
# Function names that only engineering software sends, whatever category the analyzer gave them.
ENGINEERING_PREFIXES = ("umas_",)

_ROLE_RANK = {ENGINEERING_STATION: 0, MASTER: 1, HMI: 2, CLIENT: 3}


# --------------------------------------------------------------------------------------------------
# OUI vendor lookup
# --------------------------------------------------------------------------------------------------


_REGISTRIES = (b"MA-L,", b"MA-M,", b"MA-S,", b"IAB,")


class OuiDatabase:
    """MAC prefix -> organisation, from the IEEE registries as Debian's ``ieee-data`` ships them.

    MA-L (24-bit, oui), MA-M (28-bit, mam) and MA-S / IAB (36-bit, oui36, iab): a lookup tries the
    longest prefix first, as the registries nest (a MA-S block lives inside an IEEE-owned MA-L).
    The ``.csv`` files are read when present (one line per assignment), else ``oui.txt``.

    Why lines are kept as bytes: 46,000 assignments are read at start-up by every run that saves
    assets, and a plant has a few dozen vendors. Splitting the files into lines keyed by their
    assignment costs a third of parsing every row as CSV; a row is parsed when a lookup finds it.
    """

    def __init__(self, directory: Path = OUI_DIR) -> None:
        self.directory = directory
        self._lines: dict[int, dict[bytes, bytes]] = {6: {}, 7: {}, 9: {}}  # length -> prefix -> CSV row
        self._found: dict[str, str | None] = {}  # 12-hex-digit prefix looked up -> organisation
        self.available = False
        self._load()

    def _load(self) -> None:
        d = self.directory
        for name, length in (("oui", 6), ("mam", 7), ("oui36", 9), ("iab", 9)):
            path = d / f"{name}.csv"
            if path.is_file():
                self._load_csv(path, length)
            elif name == "oui" and (d / "oui.txt").is_file():
                self._load_txt(d / "oui.txt")
        self.available = bool(self._lines[6])
        if not self.available:
            log.warning("MAC vendor lookup disabled: no OUI database in %s (install it: apt-get install ieee-data)", d)

    def _load_csv(self, path: Path, length: int) -> None:
        # "MA-L,002272,American Micro-Fuel Device Corp.,2181 Buchanan Loop ..." (the header row has no
        # assignment of the right length). Reversed, so the first row of an assignment wins, as in the file.
        lines = path.read_bytes().split(b"\n")
        rows = {
            line[i + 1 : i + 1 + length].upper(): line
            for line in reversed(lines)
            # a row starts with its registry (a quoted address can go on over several lines)
            if line.startswith(_REGISTRIES) and line[(i := line.find(b",")) + 1 + length : i + 2 + length] == b","
        }
        table = self._lines[length]
        if table:  # a second registry of the same length (iab after oui36): the first one's rows win
            rows.update(table)
        self._lines[length] = rows

    def _load_txt(self, path: Path) -> None:
        # "00-22-72   (hex)\t\tAmerican Micro-Fuel Device Corp."
        table = self._lines[6]
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if "(hex)" in line:
                    prefix, _, org = line.partition("(hex)")
                    key = prefix.strip().replace("-", "").upper()
                    if len(key) == 6:
                        # kept as a CSV row, like the .csv files' rows
                        table.setdefault(key.encode(), f'MA-L,{key},"{org.strip().replace(chr(34), "")}"'.encode())

    @staticmethod
    def _organisation(row: bytes) -> str:
        fields = next(csv.reader([row.decode("utf-8", errors="replace")]), [])
        return fields[2].strip() if len(fields) >= 3 else ""

    @property
    def by_len(self) -> dict[int, dict[str, str]]:
        """length -> prefix -> organisation, every row parsed (slow: for tools and tests)."""
        return {n: {k.decode(): self._organisation(v) for k, v in t.items()} for n, t in self._lines.items()}

    def lookup(self, mac: str | None) -> str | None:
        """Vendor of a MAC (``aa:bb:cc:dd:ee:ff``), None when unknown, locally administered or group."""
        if not mac or not self.available:
            return None
        hexes = mac.replace(":", "").replace("-", "").replace(".", "").upper()
        if len(hexes) != 12:
            return None
        if hexes in self._found:
            return self._found[hexes]
        org = None
        try:
            first = int(hexes[:2], 16)
        except ValueError:
            first = 0x03  # not hex: no vendor
        if not first & 0x03:  # group (multicast) or locally administered: no registered vendor
            key = hexes.encode()
            for length in (9, 7, 6):
                row = self._lines[length].get(key[:length])
                if row is not None:
                    org = self._organisation(row)
                    break
        if len(self._found) < 65_536:
            self._found[hexes] = org
        return org


@lru_cache(maxsize=1)
def oui_database() -> OuiDatabase:
    """The process-wide OUI table, read on first use (about 25 ms, 46k assignments)."""
    return OuiDatabase()


def mac_vendor(mac: str | None) -> str | None:
    return oui_database().lookup(mac)


# --------------------------------------------------------------------------------------------------
# Who is the client?
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def service_ports() -> frozenset[int]:
    """Every registered TCP/UDP port of every protocol analyzer."""
    from sensor.protocols import registry

    ports: set[int] = set()
    for spec in registry().specs.values():
        ports.update(spec.tcp_ports)
        ports.update(spec.udp_ports)
    return frozenset(ports)


def orient(event: IcsEvent | AssetEvent, ports: frozenset[int] | None = None) -> tuple[str, str, bool]:
    """(client, server, client_is_src) of an event; see the module docstring for the rule."""
    if ports is None:
        ports = service_ports()
    s = event.sport in ports
    d = event.dport in ports
    if d and not s:
        return event.src, event.dst, True
    if s and not d:
        return event.dst, event.src, False
    if event.direction == REQUEST:
        return event.src, event.dst, True
    return event.dst, event.src, False


def protocol_of(event: IcsEvent | AssetEvent) -> str:
    """The protocol an event belongs to. The flow table reports a SYN to a registered ICS port as a
    ``tcp`` ``connection_attempt`` event naming the ICS protocol in ``fields["ics_protocol"]``: it is
    the first step of that protocol's conversation (and the only one, when the port is closed)."""
    proto = event.protocol
    if proto == "tcp" and event.fields:
        return event.fields.get("ics_protocol") or proto
    return proto


@lru_cache(maxsize=4096)
def is_host_address(addr: str) -> bool:
    """False for broadcast, multicast and unspecified addresses (a Who-Is to 255.255.255.255 is no host)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:  # a layer-2 "address" (MAC): group bit set means not a station
        hexes = addr.replace(":", "")
        return len(hexes) == 12 and not int(hexes[:2], 16) & 0x01
    if ip.is_multicast or ip.is_unspecified:
        return False
    return not (ip.version == 4 and str(ip) == "255.255.255.255")


def _unusable_mac(mac: str) -> bool:
    """Group (multicast/broadcast) MACs name no station; all-zero MACs are what anonymised or
    synthetic captures carry (and would read as Xerox's OUI)."""
    return bool(int(mac[:2], 16) & 0x01) or mac.strip("0:") == ""


def restates_request(event: IcsEvent) -> bool:
    """True for a response its analyzer paired with the request (``latency`` is set only then),
    answered ``ok``, without a device identity: it names the same two hosts, protocol and unit as the
    request it answers, and tells nothing new about them. The inventory counts the operation once, at
    its request; an exception, an identity or a response whose request was not seen still counts on its
    own. (Also what lets the alerting runtime leave such answers out of its signature table when no
    rule reads them: docs/performance.md.)"""
    if event.latency is None or event.result != OK or event.direction != RESPONSE:
        return False  # (a BACnet client's abort is paired with the request it aborts, but is no answer)
    fields = event.fields
    return not (fields and "identity" in fields)


class AssetEvent(NamedTuple):
    """What the inventory reads of an event, kept for a signature instead of its first ``IcsEvent``.

    Why not the event itself: a signature table holds one per signature (tens of thousands), and
    keeping the analyzers' own event objects alive (with their ``fields`` and values) costs the packet
    path measurably (about 0.2 s per million packets on the bench): the freshly freed events are what
    the next ones reuse. The copy holds only the addressing and the operation; ``fields`` only the
    flow table's ``ics_protocol`` of a connection attempt."""

    ts: float
    protocol: str
    src: str
    sport: int
    dst: str
    dport: int
    transport: str
    direction: str
    category: str
    function_name: str
    unit: int | None
    fields: dict[str, Any] | None
    flow_id: int
    src_mac: str | None
    dst_mac: str | None

    @classmethod
    def of(cls, e: IcsEvent) -> AssetEvent:
        f = e.fields
        kept = {"ics_protocol": f["ics_protocol"]} if f and "ics_protocol" in f else None
        return cls(e.ts, e.protocol, e.src, e.sport, e.dst, e.dport, e.transport, e.direction, e.category,
                   e.function_name, e.unit, kept, e.flow_id, e.src_mac, e.dst_mac)


# --------------------------------------------------------------------------------------------------
# The asset record
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Asset:
    address: str  # IP, or MAC for layer-2-only devices
    first_seen: float
    last_seen: float
    macs: list[str] = field(default_factory=list)
    events: int = 0
    client_protocols: Counter = field(default_factory=Counter)  # protocol -> events it sent as client
    server_protocols: Counter = field(default_factory=Counter)  # protocol -> events it sent/received as server
    initiated: Counter = field(default_factory=Counter)  # category -> requests it initiated
    engineering_ops: Counter = field(default_factory=Counter)  # "protocol function" -> count
    peers: dict[str, int] = field(default_factory=dict)  # bounded sample: peer -> events
    peer_count: int = 0  # distinct peers ever seen (sample may be smaller)
    # Peers past the kept sample, remembered (up to MAX_COUNTED_PEERS) so each is counted once: the same
    # peer comes back once per signature folded in. Not stored; a loaded asset counts from its peer_count.
    more_peers: set[str] = field(default_factory=set)
    units: list[int] = field(default_factory=list)  # unit ids / common addresses it answers for
    identity: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> merged identity

    @property
    def mac(self) -> str | None:
        return self.macs[0] if self.macs else None

    @property
    def mac_vendor(self) -> str | None:
        return mac_vendor(self.mac)

    def identity_value(self, *keys: str) -> str | None:
        """First non-empty value of any of ``keys`` across the protocols (sorted, so stable)."""
        for proto in sorted(self.identity):
            ident = self.identity[proto]
            for k in keys:
                v = ident.get(k)
                if v not in (None, ""):
                    return str(v)
        return None

    @property
    def vendor(self) -> str | None:
        """Vendor as the device itself says (protocol identity); the OUI's is ``mac_vendor``."""
        return self.identity_value("vendor", "vendor_name")

    @property
    def product(self) -> str | None:
        return self.identity_value(
            "product", "product_name", "model_name", "model", "module_name", "application_name", "device_name"
        )

    @property
    def firmware(self) -> str | None:
        return self.identity_value(
            "revision", "firmware_version", "firmware_revision", "major_minor_revision", "version"
        )

    @property
    def serial(self) -> str | None:
        return self.identity_value("serial", "serial_number")

    def role(self) -> tuple[str, str]:
        return infer_role(self)

    def merge(self, other: Asset) -> None:
        """Fold another record of the same address in (a later run, or a stored copy)."""
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        for m in other.macs:
            if m not in self.macs and len(self.macs) < MAX_MACS:
                self.macs.append(m)
        self.events += other.events
        self.client_protocols.update(other.client_protocols)
        self.server_protocols.update(other.server_protocols)
        self.initiated.update(other.initiated)
        self.engineering_ops.update(other.engineering_ops)
        more = self.more_peers
        for p, n in other.peers.items():
            if p in self.peers:
                self.peers[p] += n
            elif len(self.peers) < MAX_PEERS:
                self.peers[p] = n
            elif len(more) < MAX_COUNTED_PEERS:
                more.add(p)
        for p in other.more_peers:
            if p not in self.peers and len(more) < MAX_COUNTED_PEERS:
                more.add(p)
        self.peer_count = max(self.peer_count, other.peer_count, len(self.peers) + len(more))
        for u in other.units:
            if u not in self.units and len(self.units) < MAX_UNITS:
                self.units.append(u)
        for proto, ident in other.identity.items():
            _merge_identity(self.identity.setdefault(proto, {}), ident)

    def to_dict(self, aliases: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready record (the export and the store's document)."""
        role, reason = self.role()
        return {
            "address": self.address,
            "ips": aliases if aliases is not None else ([self.address] if _is_ip(self.address) else []),
            "mac": self.mac,
            "macs": list(self.macs),
            "mac_vendor": self.mac_vendor,
            "vendor": self.vendor,
            "product": self.product,
            "firmware": self.firmware,
            "serial": self.serial,
            "role": role,
            "role_reason": reason,
            "client_protocols": dict(sorted(self.client_protocols.items())),
            "server_protocols": dict(sorted(self.server_protocols.items())),
            "initiated": dict(sorted(self.initiated.items())),
            "engineering_ops": dict(sorted(self.engineering_ops.items())),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "events": self.events,
            "peers": sorted(self.peers),
            "peer_count": self.peer_count,
            "units": sorted(self.units),
            "identity": {p: dict(sorted(v.items())) for p, v in sorted(self.identity.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Asset:
        a = cls(str(d["address"]), float(d.get("first_seen") or 0.0), float(d.get("last_seen") or 0.0))
        a.macs = [str(m) for m in d.get("macs") or ([d["mac"]] if d.get("mac") else [])][:MAX_MACS]
        a.events = int(d.get("events") or 0)
        a.client_protocols = Counter({str(k): int(v) for k, v in (d.get("client_protocols") or {}).items()})
        a.server_protocols = Counter({str(k): int(v) for k, v in (d.get("server_protocols") or {}).items()})
        a.initiated = Counter({str(k): int(v) for k, v in (d.get("initiated") or {}).items()})
        a.engineering_ops = Counter({str(k): int(v) for k, v in (d.get("engineering_ops") or {}).items()})
        a.peers = {str(p): 0 for p in (d.get("peers") or [])[:MAX_PEERS]}
        a.peer_count = int(d.get("peer_count") or len(a.peers))
        a.units = [int(u) for u in (d.get("units") or [])][:MAX_UNITS]
        a.identity = {str(p): dict(v) for p, v in (d.get("identity") or {}).items()}
        return a


def _is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def _merge_identity(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if v is None or v == "":
            continue
        if isinstance(v, (bytes, bytearray, memoryview)):
            v = bytes(v).hex()
        elif not isinstance(v, (str, int, float, bool)):
            v = str(v)
        if isinstance(v, str) and len(v) > MAX_IDENTITY_TEXT:
            v = v[:MAX_IDENTITY_TEXT]
        if k in into or len(into) < MAX_IDENTITY_KEYS:
            into[str(k)] = v


def infer_role(a: Asset) -> tuple[str, str]:
    """(role, why) from what the asset initiated and answered, and what it said about itself."""
    if a.initiated[PROGRAM] or a.engineering_ops:
        ops = sorted(a.engineering_ops) or ["program-category operations"]
        return ENGINEERING_STATION, "initiates engineering operations: " + ", ".join(ops[:3])
    if a.server_protocols:
        ident_role = _role_from_identity(a.identity)
        if ident_role:
            return ident_role
        proto = a.server_protocols.most_common(1)[0][0]
        role = SERVER_ROLES.get(proto, SERVER)
        return role, f"answers {proto}" + (
            f" (and initiates {', '.join(sorted(a.client_protocols))})" if a.client_protocols else ""
        )
    if a.client_protocols:
        protos = sorted(a.client_protocols)
        if a.initiated[WRITE] or a.initiated[CONTROL]:
            return HMI, f"initiates writes/commands over {', '.join(protos)}"
        tele = [p for p in protos if p in TELECONTROL]
        if tele:
            return MASTER, f"controlling station of {', '.join(tele)}"
        return MASTER, f"initiates reads over {', '.join(protos)}"
    return UNKNOWN, "seen only as a destination without protocol role"


def _role_from_identity(identity: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    for proto in sorted(identity):
        ident = identity[proto]
        dtype = str(ident.get("device_type_name") or ident.get("device_type") or "").lower()
        if "programmable logic controller" in dtype or dtype == "plc":
            return PLC, f"{proto} identity: device type {dtype}"
        if "adapter" in dtype or "drive" in dtype or "i/o" in dtype:
            return FIELD_DEVICE, f"{proto} identity: device type {dtype}"
        if proto == "s7comm" and (ident.get("order_number") or ident.get("module_name")):
            return PLC, "s7comm identity: Siemens module " + str(ident.get("order_number") or ident.get("module_name"))
    return None


# --------------------------------------------------------------------------------------------------
# The inventory
# --------------------------------------------------------------------------------------------------


MAX_PENDING_SIGNATURES = 65_536  # distinct signatures held before they are folded into the assets


class AssetInventory:
    """Builds ``Asset`` records from events. ``observe`` is the per-event hook; it returns an empty
    list so the inventory can also sit in the alerting runtime's detector list.

    Why the hot path only counts: a polling plant repeats the same few operations between the same
    pairs millions of times, and each one would cost a dozen dict and counter updates. ``observe``
    instead bumps one counter per event *signature* (``sensor.events.signature_of``) with its first
    and last time; the signatures are folded into the assets
    (with their multiplicity) whenever anyone reads ``assets`` / ``records()`` / ``stats()``, or
    when ``MAX_PENDING_SIGNATURES`` accumulate. Events that carry an identity take the direct path.

    Under the alerting runtime the inventory does not even count: the runtime looks every event's
    signature up for its rules anyway, counts it there, and the inventory pulls those counts when read
    (``add_source``, ``AlertingRuntime.attach_inventory``)."""

    name = "assets"

    def __init__(self, max_assets: int = MAX_ASSETS) -> None:
        self._assets: dict[str, Asset] = {}
        self.max_assets = max_assets
        self.dropped = 0  # events whose asset could not be created (cap reached)
        self._direct = 0  # events applied one by one (identities, no flow)
        self._folded = 0  # events of signatures already folded in
        self._ports = service_ports()
        # signature -> [events, first ts, last ts, its first event (an AssetEvent)]
        self._pending: dict[tuple[Any, ...], list[Any]] = {}
        # Callables that hand over signatures counted elsewhere (``add_source``), drained on every read.
        self._sources: list[Callable[[], list[Any]]] = []

    @property
    def assets(self) -> dict[str, Asset]:
        """address -> Asset, with every event observed so far folded in."""
        if self._sources:
            self._pull()
        if self._pending:
            self._fold()
        return self._assets

    def add_source(self, drain: Callable[[], list[Any]]) -> None:
        """Take events counted per signature by someone else (the alerting runtime counts every event's
        signature anyway, for its rules: ``AlertingRuntime.attach_inventory``). ``drain()`` returns
        ``(events, first ts, last ts, AssetEvent of the first event)`` for each signature with events since
        the last call;
        the inventory calls it whenever it is read. Events carrying an identity, or no flow, must still
        come through ``observe``."""
        self._sources.append(drain)

    def _pull(self) -> None:
        for drain in self._sources:
            counted = drain()
            if counted:
                self._fold(counted)

    # -- the per-event hook -----------------------------------------------------------------------
    def observe(self, event: IcsEvent) -> list:
        if restates_request(event):
            return []
        fields = event.fields
        flow_id = event.flow_id
        if not flow_id or fields and "identity" in fields:
            self._direct += 1
            self._apply(event, event.ts, event.ts, 1)
            return []
        # A flow's endpoints, transport and MACs are fixed by the flow and the sender's address and port
        # (the flow table sets them when the flow starts): the signature needs only what varies between
        # events. The same signature the alerting runtime counts by, when it feeds the inventory.
        key = signature_of(event)
        agg = self._pending.get(key)
        if agg is None:
            if len(self._pending) >= MAX_PENDING_SIGNATURES:
                self._fold()
            self._pending[key] = [1, event.ts, event.ts, AssetEvent.of(event)]
        else:
            agg[0] += 1
            ts = event.ts
            if ts > agg[2]:
                agg[2] = ts
            elif ts < agg[1]:
                agg[1] = ts
        return []

    @property
    def events(self) -> int:
        """Events observed so far (counted per signature on the hot path)."""
        if self._sources:
            self._pull()
        return self._direct + self._folded + sum(agg[0] for agg in self._pending.values())

    def tick(self, ts: float) -> list:
        return []

    def flush(self) -> list:
        if self._sources:
            self._pull()
        if self._pending:
            self._fold()
        return []

    def _fold(self, counted: Iterable[Any] | None = None) -> None:
        """Apply counted signatures (``counted``, else the pending ones), oldest first (so bounded lists
        keep what came first). Signature counts never carry an identity: those events come one by one."""
        if counted is None:
            counted = self._pending.values()
            self._pending = {}
        for count, first, last, event in sorted(counted, key=lambda agg: agg[1]):
            self._folded += count
            self._apply(event, first, last, count, identity=False)

    def _apply(self, event: IcsEvent | AssetEvent, first: float, last: float, count: int, identity: bool = True) -> None:
        """``count`` events like ``event``, seen between ``first`` and ``last``, update the assets (and,
        with ``identity``, what ``event`` says about its sender)."""
        # A bare SYN (the flow table's connection attempt, naming the ICS protocol of the port) proves
        # nothing about either end: its source may be spoofed (a SYN flood would fill the inventory with
        # a million made-up hosts) and its target may not exist (a scan). It only adds to hosts already
        # seen exchanging ICS traffic (signatures are applied in time order: ``_fold``).
        create = not (event.fields and "ics_protocol" in event.fields)
        if event.transport == "l2":
            client, server, client_is_src = event.src_mac or event.src, event.dst_mac or event.dst, True
        else:
            client, server, client_is_src = orient(event, self._ports)
        proto = protocol_of(event)
        cmac = event.src_mac if client_is_src else event.dst_mac
        smac = event.dst_mac if client_is_src else event.src_mac
        c = self._asset(client, first, last, cmac, count, create)
        s = self._asset(server, first, last, smac, count, create)
        if c is not None:
            c.client_protocols[proto] += count
            if event.direction == REQUEST and client_is_src:
                c.initiated[event.category] += count
                if event.category == PROGRAM or event.function_name.startswith(ENGINEERING_PREFIXES):
                    key = f"{proto} {event.function_name}"
                    if key in c.engineering_ops or len(c.engineering_ops) < 16:
                        c.engineering_ops[key] += count
            if create or s is not None:
                _peer(c, server, count)
        if s is not None:
            s.server_protocols[proto] += count
            if event.unit is not None and event.unit not in s.units and len(s.units) < MAX_UNITS:
                s.units.append(event.unit)
            if create or c is not None:
                _peer(s, client, count)
        fields = event.fields
        if identity and fields:
            ident = fields.get("identity")
            if ident and isinstance(ident, dict):
                # The identity is the sender's own (a device's response about itself).
                owner = c if client_is_src else s
                if owner is not None:
                    _merge_identity(owner.identity.setdefault(proto, {}), ident)

    def _asset(self, address: str, first: float, last: float, mac: str | None, count: int, create: bool = True) -> Asset | None:
        a = self._assets.get(address)
        if a is None:
            if not create or not is_host_address(address):
                return None
            if len(self._assets) >= self.max_assets:
                self.dropped += count
                return None
            a = self._assets[address] = Asset(address, first, last)
        else:
            # capture time can go backwards (merged files, clock restarts): keep the true extremes
            if last > a.last_seen:
                a.last_seen = last
            if first < a.first_seen:
                a.first_seen = first
        a.events += count
        if mac and mac not in a.macs and not _unusable_mac(mac) and len(a.macs) < MAX_MACS:
            a.macs.append(mac)
        return a

    # -- reading it ---------------------------------------------------------------------------------
    def merge(self, other: AssetInventory | Iterable[Asset]) -> None:
        assets = other.assets.values() if isinstance(other, AssetInventory) else other
        for a in assets:
            mine = self.assets.get(a.address)
            if mine is None:
                if len(self.assets) >= self.max_assets:
                    self.dropped += 1
                    continue
                self.assets[a.address] = mine = Asset(a.address, a.first_seen, a.last_seen)
                mine.events = 0
            mine.merge(a)

    def aliases(self) -> dict[str, list[str]]:
        """address -> the IPs that share its MAC (one host with several IPs), for MACs seen with at most
        ``SHARED_MAC_IPS`` IPs; a MAC with more is a router's and groups nothing."""
        by_mac: dict[str, list[str]] = {}
        for a in self.assets.values():
            if a.mac and _is_ip(a.address):
                by_mac.setdefault(a.mac, []).append(a.address)
        out: dict[str, list[str]] = {}
        for a in self.assets.values():
            if not _is_ip(a.address):
                out[a.address] = []
                continue
            group = by_mac.get(a.mac or "", [])
            out[a.address] = sorted(group, key=address_sort_key) if 1 < len(group) <= SHARED_MAC_IPS else [a.address]
        return out

    def shared_macs(self) -> dict[str, int]:
        """MACs seen behind more than ``SHARED_MAC_IPS`` IPs (routers, NAT): mac -> IP count."""
        n = Counter(a.mac for a in self.assets.values() if a.mac and _is_ip(a.address))
        return {m: c for m, c in n.items() if c > SHARED_MAC_IPS}

    def records(self) -> list[dict[str, Any]]:
        """Every asset as a dict, sorted by address (IPs numerically, then MACs)."""
        aliases = self.aliases()
        return [self.assets[k].to_dict(aliases.get(k)) for k in sorted(self.assets, key=address_sort_key)]

    def stats(self) -> dict[str, Any]:
        return {"assets": len(self.assets), "events": self.events, "dropped_over_cap": self.dropped}


def _peer(a: Asset, peer: str, count: int = 1) -> None:
    peers = a.peers
    if peer in peers:
        peers[peer] += count
    elif len(peers) < MAX_PEERS:
        peers[peer] = count
        a.peer_count += 1
    else:
        more = a.more_peers
        if peer not in more:
            a.peer_count += 1
            if len(more) < MAX_COUNTED_PEERS:
                more.add(peer)


def address_sort_key(addr: str) -> tuple[int, int, str]:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return (2, 0, addr)
    return (0 if ip.version == 4 else 1, int(ip), addr)


def build_inventory(paths: Iterable[str | Path], config: Any | None = None) -> tuple[AssetInventory, list[Any]]:
    """Replay captures through the sensor into a fresh inventory; returns it and the FileResults."""
    from sensor.pipeline import Pipeline

    inv = AssetInventory()
    pipeline = Pipeline(config, on_event=inv.observe)
    results = [pipeline.replay_file(p) for p in paths]
    return inv, results
