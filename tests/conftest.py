"""Shared fixtures and hand-built bytes for the test suite.

Everything here is generic so any test file can use it:

- ``SHARED`` / the ``shared_dir`` fixture: the team's shared folder (reference captures, ground truth,
  tools). CI clones the repository next to a copy of ``shared/``, so it is found relative to the
  repository root (``<repo>/../shared``), never by an absolute path. A missing folder FAILS the tests
  that need it with a message saying where it was looked for: a silent skip would hide a broken set-up.
- ``tshark``: the path of tshark; the tests that need it skip only when it is not installed.
- ``engine_rules``: the compiled rules of the default configuration (the tests of the default rule set).
- Capture builders: ``pcap_bytes`` (both byte orders, micro/nanosecond magic) and pcapng blocks
  (``ng_shb``, ``ng_idb``, ``ng_epb``, ``ng_spb``, ``ng_pb``, ``ng_block``).
- Packet builders, plain ``struct`` so every byte is visible: ``ether`` (with VLAN tags), ``sll``,
  ``sll2``, ``null_loopback``, ``ipv4`` (options, fragments), ``ipv6`` and its extension headers,
  ``tcp``, ``udp``, ``mbap``.
- ``TcpConv``: one TCP connection producing Ethernet frames with correct sequence numbers, and
  ``run_packets``: feed packets through a fresh ``Pipeline`` and get its result and events.
- Hypothesis profiles: no deadline anywhere (tests assert behaviour, never timing; use
  ``@pytest.mark.timeout`` against loops), and derandomized under CI (``CI`` set) so a CI run is
  reproducible; locally the search stays random and failing examples are kept in ``.hypothesis/``.

Test modules import the helpers with ``from conftest import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Iterable, Sequence

import pytest

# Helper modules holding assertions moved out of test modules: rewritten like the tests, so a failure
# still shows the values compared (must run before they are first imported).
pytest.register_assert_rewrite("bench_testutil", "protocol_testutil", "rules_testutil")

try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("dev", deadline=None)
    _hsettings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
    _hsettings.load_profile("ci" if os.environ.get("CI") else "dev")
except ImportError:  # hypothesis is a dev extra; only the property tests need it
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_PCAPS = SHARED / "pcaps"
GROUND_TRUTH = SHARED_PCAPS / "GROUND_TRUTH.json"


def require_shared() -> Path:
    """The shared folder, or a test failure that says where it was expected (never a skip)."""
    if not (SHARED_PCAPS / "GROUND_TRUTH.json").is_file():
        pytest.fail(
            f"shared folder not found: expected {SHARED_PCAPS}/GROUND_TRUTH.json (the repository must sit "
            f"next to a copy of shared/, i.e. <repo>/../shared; repo is {REPO})",
            pytrace=False,
        )
    return SHARED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def shared_pcaps(shared_dir: Path) -> Path:
    return shared_dir / "pcaps"


@pytest.fixture(scope="session")
def ground_truth(shared_pcaps: Path) -> dict[str, Any]:
    return json.loads((shared_pcaps / "GROUND_TRUTH.json").read_text())


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.skip("tshark is not installed")
    return path


@pytest.fixture(scope="module")
def engine_rules() -> list[Any]:
    """The compiled rules of the default configuration, as the sensor loads them."""
    from detectors.rules import RuleEngine
    from icswatch.config import load_config

    return RuleEngine.from_config(load_config().rules).rules


# ---------------------------------------------------------------------------------------------------
# Capture files
# ---------------------------------------------------------------------------------------------------
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

# A record is (ts, data) or (ts, data, orig_len); ts in seconds (float) or (sec, frac) integers.
Record = tuple


def pcap_header(linktype: int = 1, *, endian: str = "<", nano: bool = False, snaplen: int = 65535) -> bytes:
    magic = PCAP_MAGIC_NS if nano else PCAP_MAGIC_US
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: Any, data: bytes, orig_len: int | None = None, *, endian: str = "<", nano: bool = False) -> bytes:
    if isinstance(ts, tuple):
        sec, frac = ts
    else:
        scale = 1_000_000_000 if nano else 1_000_000
        sec = int(ts)
        frac = round((ts - sec) * scale)
    return struct.pack(endian + "IIII", sec, frac, len(data), len(data) if orig_len is None else orig_len) + data


def pcap_bytes(
    records: Iterable[Record], linktype: int = 1, *, endian: str = "<", nano: bool = False, snaplen: int = 65535
) -> bytes:
    """A whole classic pcap file."""
    out = [pcap_header(linktype, endian=endian, nano=nano, snaplen=snaplen)]
    for rec in records:
        out.append(pcap_record(rec[0], rec[1], rec[2] if len(rec) > 2 else None, endian=endian, nano=nano))
    return b"".join(out)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(btype: int, body: bytes, endian: str = "<") -> bytes:
    """A pcapng block: type, total length, body padded to 32 bits, total length again."""
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def ng_options(options: Sequence[tuple[int, bytes]], endian: str = "<") -> bytes:
    if not options:
        return b""
    out = b"".join(struct.pack(endian + "HH", code, len(v)) + _pad4(v) for code, v in options)
    return out + struct.pack(endian + "HH", 0, 0)


def ng_shb(endian: str = "<", options: Sequence[tuple[int, bytes]] = ()) -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_options(options, endian)
    return ng_block(0x0A0D0D0A, body, endian)


def ng_idb(
    linktype: int = 1,
    snaplen: int = 0,
    *,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    endian: str = "<",
    extra_options: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """Interface Description Block; ``tsresol`` is the raw if_tsresol byte (6, 9, 0x80|n...)."""
    opts: list[tuple[int, bytes]] = [(2, b"eth0")]  # if_name, before the ones that matter
    opts += list(extra_options)
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(endian + "q", tsoffset)))
    body = struct.pack(endian + "HHI", linktype, 0, snaplen) + ng_options(opts, endian)
    return ng_block(1, body, endian)


def ng_epb(iface: int, ticks: int, data: bytes, orig_len: int | None = None, endian: str = "<") -> bytes:
    body = struct.pack(
        endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data) if orig_len is None else orig_len
    )
    return ng_block(6, body + data, endian)


def ng_spb(data: bytes, orig_len: int | None = None, endian: str = "<") -> bytes:
    return ng_block(3, struct.pack(endian + "I", len(data) if orig_len is None else orig_len) + data, endian)


def ng_pb(iface: int, ticks: int, data: bytes, orig_len: int | None = None, endian: str = "<") -> bytes:
    """The obsolete Packet Block (type 2)."""
    body = struct.pack(
        endian + "HHIIII",
        iface,
        0,
        ticks >> 32,
        ticks & 0xFFFFFFFF,
        len(data),
        len(data) if orig_len is None else orig_len,
    )
    return ng_block(2, body + data, endian)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def write_file(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_all(path: Path) -> tuple[list[tuple[float, int, bytes, int]], Any]:
    """Every packet of a capture with the project's reader, and the reader (for ``error``/``anomalies``)."""
    from sensor.capture import CaptureReader

    with CaptureReader(path) as reader:
        packets = [(ts, lt, bytes(data), orig) for ts, lt, data, orig in reader]
    return packets, reader


# ---------------------------------------------------------------------------------------------------
# Packets
# ---------------------------------------------------------------------------------------------------
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def ip4(addr: str) -> bytes:
    return ipaddress.IPv4Address(addr).packed


def ip6(addr: str) -> bytes:
    return ipaddress.IPv6Address(addr).packed


def ether(payload: bytes, etype: int = 0x0800, *, src: bytes = MAC_A, dst: bytes = MAC_B, vlans: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet II; ``vlans`` = ((tpid, vid), ...) outermost first, e.g. ((0x88A8, 100), (0x8100, 10))."""
    if vlans:
        # the first TPID takes the ethertype's place; each tag's TCI is followed by the next type
        first = vlans[0][0]
        rest = [t for t, _ in vlans[1:]] + [etype]
        tags = b"".join(struct.pack("!HH", vid, nxt) for (_, vid), nxt in zip(vlans, rest))
        return dst + src + struct.pack("!H", first) + tags + payload
    return dst + src + struct.pack("!H", etype) + payload


def sll(payload: bytes, etype: int = 0x0800, pkttype: int = 0) -> bytes:
    """Linux cooked capture v1 (LINKTYPE_LINUX_SLL, 113): 16 bytes."""
    return struct.pack("!HHH8sH", pkttype, 1, 6, MAC_A + b"\0\0", etype) + payload


def sll2(payload: bytes, etype: int = 0x0800, ifindex: int = 2) -> bytes:
    """Linux cooked capture v2 (LINKTYPE_LINUX_SLL2, 276): 20 bytes."""
    return struct.pack("!HHIHBB8s", etype, 0, ifindex, 1, 0, 6, MAC_A + b"\0\0") + payload


def null_loopback(payload: bytes, family: int = 2, endian: str = "<") -> bytes:
    """BSD loopback (LINKTYPE_NULL, 0): the address family in the capturing host's byte order."""
    return struct.pack(endian + "I", family) + payload


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(
    payload: bytes,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = 6,
    *,
    ident: int = 1,
    offset: int = 0,
    mf: bool = False,
    df: bool = False,
    options: bytes = b"",
    ttl: int = 64,
    total: int | None = None,
    version: int = 4,
) -> bytes:
    """IPv4 header (+ options padded to 32 bits) + payload; ``offset`` in bytes (a multiple of 8)."""
    options = _pad4(options)
    ihl = 5 + len(options) // 4
    frag = (offset // 8) | (0x2000 if mf else 0) | (0x4000 if df else 0)
    tot = 20 + len(options) + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, tot, ident, frag, ttl, proto, 0, ip4(src), ip4(dst))
    hdr += options
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(payload: bytes, src: str = "fd00::1", dst: str = "fd00::2", nh: int = 6, *, plen: int | None = None) -> bytes:
    """IPv6 fixed header + payload (which may start with extension headers: see ``v6_*``)."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload) if plen is None else plen, nh, 64, ip6(src), ip6(dst)) + payload


def v6_options(nh: int, pad: int = 4) -> bytes:
    """Hop-by-hop (0) or destination options (60) header body, padded with a PadN option to 8n bytes."""
    total = 8 * ((2 + 2 + pad + 7) // 8)
    padn = total - 2
    return struct.pack("!BB", nh, total // 8 - 1) + bytes([1, padn - 2]) + b"\0" * (padn - 2)


def v6_routing(nh: int, segments_left: int = 0, addresses: Sequence[str] = ("fd00::9",)) -> bytes:
    """Routing header type 0 style: 8 bytes + 16 per address."""
    body = struct.pack("!BBBBI", nh, 2 * len(addresses), 0, segments_left, 0) + b"".join(ip6(a) for a in addresses)
    return body


def v6_fragment(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset & 0xFFF8) | int(more), ident)


TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}


def tcp_flags(flags: str | int) -> int:
    if isinstance(flags, int):
        return flags
    out = 0
    for ch in flags:
        out |= TCP_FLAGS[ch]
    return out


def tcp(
    sport: int,
    dport: int,
    seq: int = 0,
    ack: int = 0,
    flags: str | int = "PA",
    payload: bytes = b"",
    *,
    options: bytes = b"",
    window: int = 8192,
    data_offset: int | None = None,
) -> bytes:
    options = _pad4(options)
    doff = (5 + len(options) // 4) if data_offset is None else data_offset
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, tcp_flags(flags), window, 0, 0)
        + options
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length, 0) + payload


def mbap(tid: int, unit: int, pdu: bytes, *, pid: int = 0, length: int | None = None) -> bytes:
    """A Modbus/TCP ADU: MBAP header (transaction, protocol, length, unit) + PDU."""
    return struct.pack("!HHHB", tid, pid, len(pdu) + 1 if length is None else length, unit) + pdu


def eth_tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: str | int, payload: bytes = b"") -> bytes:
    return ether(ipv4(tcp(sport, dport, seq, ack, flags, payload), src, dst))


class TcpConv:
    """One TCP connection as Ethernet/IPv4/TCP frames with real sequence numbers.

    ``frames`` collects ``(ts, frame)``; every call advances the clock by ``dt``. ``c``/``s`` send
    payload from the client/server at the current sequence number (or at ``seq`` for reordering and
    retransmission tests; then the side's next sequence number is not advanced unless ``advance``).
    """

    def __init__(
        self,
        client: str = "10.0.0.1",
        server: str = "10.0.0.2",
        cport: int = 40000,
        sport: int = 502,
        isn_c: int = 1000,
        isn_s: int = 5000,
        t0: float = 1_700_000_000.0,
        dt: float = 0.001,
    ) -> None:
        self.client, self.server, self.cport, self.sport = client, server, cport, sport
        self.seq_c, self.seq_s = isn_c & 0xFFFFFFFF, isn_s & 0xFFFFFFFF
        self.t = t0
        self.dt = dt
        self.frames: list[tuple[float, bytes]] = []

    def frame(self, from_client: bool, flags: str | int, payload: bytes = b"", seq: int | None = None, ack: int | None = None) -> tuple[float, bytes]:
        self.t += self.dt
        if from_client:
            src, dst, sp, dp = self.client, self.server, self.cport, self.sport
            s, a = self.seq_c, self.seq_s
        else:
            src, dst, sp, dp = self.server, self.client, self.sport, self.cport
            s, a = self.seq_s, self.seq_c
        f = (self.t, eth_tcp(src, dst, sp, dp, s if seq is None else seq, a if ack is None else ack, flags, payload))
        self.frames.append(f)
        return f

    def handshake(self) -> "TcpConv":
        self.frame(True, "S", ack=0)
        self.seq_c = (self.seq_c + 1) & 0xFFFFFFFF
        self.frame(False, "SA")
        self.seq_s = (self.seq_s + 1) & 0xFFFFFFFF
        self.frame(True, "A")
        return self

    def send(self, from_client: bool, payload: bytes, *, seq: int | None = None, flags: str = "PA", advance: bool | None = None, ack: int | None = None) -> tuple[float, bytes]:
        cur = self.seq_c if from_client else self.seq_s
        f = self.frame(from_client, flags, payload, seq=seq, ack=ack)
        if advance is None:
            advance = seq is None
        if advance:
            nxt = (cur + len(payload)) & 0xFFFFFFFF
            if from_client:
                self.seq_c = nxt
            else:
                self.seq_s = nxt
        return f

    def c(self, payload: bytes, **kw: Any) -> tuple[float, bytes]:
        return self.send(True, payload, **kw)

    def s(self, payload: bytes, **kw: Any) -> tuple[float, bytes]:
        return self.send(False, payload, **kw)

    def fin(self) -> "TcpConv":
        self.frame(True, "FA")
        self.seq_c = (self.seq_c + 1) & 0xFFFFFFFF
        self.frame(False, "FA")
        self.seq_s = (self.seq_s + 1) & 0xFFFFFFFF
        self.frame(True, "A")
        return self

    def rst(self, from_client: bool = True) -> "TcpConv":
        self.frame(from_client, "R")
        return self


def run_packets(
    packets: Iterable[tuple], linktype: int = 1, config: Any = None, *, registry: Any = None
) -> tuple[Any, list[Any]]:
    """Feed ``(ts, data[, orig_len])`` packets through a fresh Pipeline: (FileResult, events)."""
    from sensor.pipeline import Pipeline

    events: list[Any] = []
    pipe = Pipeline(config, on_event=events.append, registry=registry)
    pipe.start("<test>")
    for p in packets:
        ts, data = p[0], p[1]
        orig = p[2] if len(p) > 2 else len(data)
        pipe.packet(ts, linktype, data, orig)
    result = pipe.end()
    return result, events


def modbus_events(events: Iterable[Any]) -> list[Any]:
    return [e for e in events if e.protocol == "modbus"]
