#!/usr/bin/env python3
"""Synthetic captures for the per-protocol throughput benchmark (issue 4): DNP3, S7comm, IEC 104,
EtherNet/IP + CIP, BACnet/IP and OPC UA, one polling plant per protocol.

Each generator imitates what a plant's network carries for that protocol, not a fuzzer: masters
(SCADA servers, HMIs, engineering workstations) poll many devices over long-lived connections
(about a third already open when the capture starts), short sessions open, work and close during
the capture, and the devices answer with the function codes and objects real stacks use:

- ``dnp3``   (TCP 20000): event polls (class 1/2/3) answered by null responses or events with a
  CONFIRM, integrity polls (class 0) whose responses span several link frames (correct header and
  block CRCs), SELECT/OPERATE of a CROB, DIRECT_OPERATE of an analog output, time sync (DELAY
  MEASURE + WRITE g50v1), unsolicited responses confirmed by the master, IIN restart cleared by a
  WRITE g80v1, link status keep-alives (link-only frames).
- ``s7comm`` (TCP 102): TPKT/COTP connection (CR/CC), S7 setup communication, then read var (1-8
  S7ANY items) and write var jobs with their ack_data, userdata SZL reads; COTP DT everywhere.
- ``iec104`` (TCP 2404): STARTDT act/con, general interrogation (act, con, SQ=1 and SQ=0 point lists,
  term), spontaneous measurands with and without time tags, several APDUs per segment, S-frames
  every w=8 I-frames, TESTFR on idle links, single commands (select/execute), clock sync, counter
  interrogation.
- ``enip``   (TCP 44818, UDP 44818 and 2222): ListIdentity (TCP and UDP broadcast), RegisterSession,
  SendRRData with Read Tag, Unconnected Send, Multiple Service Packet, Get Attribute All/Single and
  Forward Open/Close, SendUnitData (connected class 3 reads), UnRegisterSession, and class 1 I/O.
- ``bacnet`` (UDP 47808): ReadProperty / ReadPropertyMultiple / WriteProperty with their ACKs,
  errors on unknown properties, SubscribeCOV and COV notifications, Who-Is broadcasts answered by
  I-Am, Who-Has / I-Have, devices behind routers (NPDU DNET/SNET), network-layer messages.
- ``opcua``  (TCP 4840): HEL/ACK, OpenSecureChannel (security None), CreateSession, ActivateSession,
  Read (1-12 nodes), Write, Browse, CreateSubscription + CreateMonitoredItems + Publish,
  CloseSession and CLO at the end of short sessions.

TCP is written as a stack would send it (coherent sequence and acknowledgment numbers, valid
checksums, delayed ACKs, some messages split across segments), so that tshark reports no TCP
analysis warning and reassembly delivers every byte. Next to each capture ``FILE.truth.json`` holds
what tshark counts in it, in GROUND_TRUTH.json's shape (the fields of
``shared/tools/gen_ground_truth.sh``; function keys in icswatch's spelling, e.g. ``apci:0``).
``tests/test_bench_protocols.py`` checks that tshark and ``icswatch inspect`` both agree with it.

Where tshark 4.0 has a quirk, the generator steers clear of it rather than let the truth depend on
it (each case is commented where it is avoided): DNP3 fragments never wrap the transport sequence
63 -> 0 inside a fragment (a FIR segment may carry any sequence number).

Deterministic: the same seed and parameters give byte-identical files.

    python bench/gen_protocols.py dnp3 --packets 300000
    python bench/gen_protocols.py all --packets 20000 -q
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from synth import NONE, T0_US, Counts, Host, Packet, TcpConn, merge, udp_frame, write_capture

GENERATOR_VERSION = 1  # bump when the output for a given seed changes (the bench regenerates then)
DEFAULT_PACKETS = 300_000


# =================================================================================================
# Common plant: masters and devices, long-lived polling connections and short sessions
# =================================================================================================
class Plant:
    """Hosts and the schedule of connections shared by the TCP protocols.

    ``n_flows`` connections: 80% long-lived (35% of them already open at the start of the capture, so
    their handshake is not in it), 20% short sessions spread over the capture's estimated duration.
    """

    def __init__(self, rng: random.Random, n_flows: int, net: int, device_name: str) -> None:
        self.rng = rng
        n_masters = max(2, n_flows // 100)
        self.masters = [Host(f"10.{net}.0.{10 + i}", rng, windows=rng.random() < 0.6, name="scada")
                        for i in range(n_masters)]
        self.stations = [Host(f"10.{net}.1.{10 + i}", rng, windows=True, name="hmi")
                         for i in range(max(1, n_masters // 2))]
        n_devices = max(4, n_flows // 3)
        self.devices = [Host(f"10.{net + 1}.{i // 200}.{10 + i % 200}", rng, name=device_name)
                        for i in range(n_devices)]

    def poll_periods(self, n_packets: int, n_flows: int, periods: tuple[int, ...], packets_per_cycle: float
                     ) -> tuple[list[int], int]:
        """A polling period (us) per connection, and the capture's duration (us) estimated from them.

        ``packets_per_cycle``: the packets one poll cycle writes on average, which sets the packet rate.
        """
        plans = [self.rng.choice(periods) for _ in range(n_flows)]
        pps = sum(packets_per_cycle * 1e6 / p for p in plans) or 1.0
        return plans, int(1e6 * n_packets / pps)

    def schedule(self, n_flows: int, duration_us: int, periods: list[int]
                 ) -> list[tuple[Host, Host, int, bool, int | None, int]]:
        """(client, server, start time, handshake seen, cycles or None for long-lived, polling period), per
        connection; ``periods`` from ``poll_periods``."""
        rng = self.rng
        out = []
        n_short = n_flows // 5
        for i in range(n_flows - n_short):
            master = self.masters[i % len(self.masters)]
            device = self.devices[i % len(self.devices)] if i < len(self.devices) else rng.choice(self.devices)
            mid_stream = rng.random() < 0.35
            start = rng.randint(0, 2_000_000) if mid_stream else rng.randint(0, max(1, duration_us // 10))
            out.append((master, device, T0_US + start, not mid_stream, None))
        for _ in range(n_short):
            start = rng.randint(0, max(1, duration_us * 85 // 100))
            out.append((rng.choice(self.stations), rng.choice(self.devices), T0_US + start, True,
                        rng.randint(3, 30)))
        return [(*slot, period) for slot, period in zip(out, periods)]


def jitter(rng: random.Random, period: int) -> int:
    return int(period * (0.9 + 0.2 * rng.random()))


def open_connection(rng: random.Random, client: Host, server: Host, port: int, stats: Counter[str]) -> TcpConn:
    """A counted TCP connection from the client's next ephemeral port; 1% start their sequence numbers near
    2**32, so that they wrap during the capture."""
    conn = TcpConn(client, server, client.ephemeral(), port, rng, wrap=rng.random() < 0.01)
    stats["connections"] += 1
    return conn


# =================================================================================================
# DNP3 (IEEE 1815-2012): link frames with CRCs, transport segments, application fragments
# =================================================================================================
def _dnp3_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_DNP3_CRC = _dnp3_crc_table()
_DNP3_HDR = struct.Struct("<BBBBHH")


def _crc_dnp(data: bytes) -> bytes:
    """CRC-16/DNP (reflected 0xA6BC, complemented), little-endian, as the link layer sends it."""
    t = _DNP3_CRC
    crc = 0
    for b in data:
        crc = (crc >> 8) ^ t[(crc ^ b) & 0xFF]
    return (crc ^ 0xFFFF).to_bytes(2, "little")


def dnp3_link_frame(ctl: int, dst: int, src: int, user: bytes = b"") -> bytes:
    """One link frame: header (05 64 LEN CTL DST SRC) + CRC, then 16-octet blocks each with its CRC."""
    head = _DNP3_HDR.pack(0x05, 0x64, 5 + len(user), ctl, dst, src)
    parts = [head, _crc_dnp(head)]
    for i in range(0, len(user), 16):
        block = user[i : i + 16]
        parts.append(block)
        parts.append(_crc_dnp(block))
    return b"".join(parts)


class Dnp3Link:
    """One direction of a DNP3 association: link addresses, transport and application sequences."""

    __slots__ = ("ctl", "dst", "src", "tseq")

    def __init__(self, master_side: bool, dst: int, src: int, rng: random.Random) -> None:
        # CTL: DIR (set by the master), PRM, function 4 = unconfirmed user data
        self.ctl = 0xC4 if master_side else 0x44
        self.dst, self.src = dst, src
        self.tseq = rng.randrange(64)

    def frames(self, apdu: bytes, fc: int) -> tuple[list[bytes], list[Counts]]:
        """The link frames carrying ``apdu`` (transport segments of <= 249 octets), with their counts."""
        chunks = [apdu[i : i + 249] for i in range(0, len(apdu), 249)] or [b""]
        n = len(chunks)
        if n > 1 and self.tseq + n - 1 > 63:
            # tshark 4.0 does not reassemble a fragment whose transport sequence wraps 63 -> 0 inside
            # it (docs/protocols/dnp3.md); a FIR segment may carry any sequence number, so restart at 0.
            self.tseq = 0
        frames, counts = [], []
        for i, chunk in enumerate(chunks):
            th = (0x40 if i == 0 else 0) | (0x80 if i == n - 1 else 0) | self.tseq
            self.tseq = (self.tseq + 1) & 0x3F
            frames.append(dnp3_link_frame(self.ctl, self.dst, self.src, bytes((th,)) + chunk))
            counts.append(_DNP3_FUNC[fc] if i == n - 1 else _DNP3_PDU)
        return frames, counts


_DNP3_PDU: Counts = (("dnp3", None),)
_DNP3_FUNC = {fc: (("dnp3", None), ("dnp3", str(fc))) for fc in range(256)}
# Class polls (g60v1 class 0 = static data, v2-v4 = event classes 1-3), qualifier 0x06 (all points)
_CLASS123 = bytes((60, 2, 0x06, 60, 3, 0x06, 60, 4, 0x06))
_CLASS0123 = _CLASS123 + bytes((60, 1, 0x06))
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class Dnp3Outstation:
    """Point counts and the state of one outstation's data (values drift between polls)."""

    def __init__(self, rng: random.Random) -> None:
        self.n_bin = rng.choice((8, 16, 16, 32, 64))
        self.n_ana = rng.choice((4, 8, 16, 24, 40, 60))
        self.n_cnt = rng.choice((0, 0, 4, 8, 16))
        self.unsolicited = rng.random() < 0.2
        self.pool = rng.randbytes(4096)

    def static_objects(self, rng: random.Random) -> bytes:
        """Class 0 data: g1v2 binary inputs with flags, g30v1 32-bit analogs, g20v1 counters."""
        pool, o = self.pool, rng.getrandbits(11)
        out = bytearray((1, 2, 0x00, 0, self.n_bin - 1))
        out += bytes(0x01 | (0x80 if b & 1 else 0) for b in pool[o : o + self.n_bin])
        out += bytes((30, 1, 0x01)) + _U16.pack(0) + _U16.pack(self.n_ana - 1)
        for i in range(self.n_ana):
            out += b"\x01" + pool[o + 4 * i : o + 4 * i + 4]
        if self.n_cnt:
            out += bytes((20, 1, 0x00, 0, self.n_cnt - 1))
            for i in range(self.n_cnt):
                out += b"\x01" + pool[o + 3 * i : o + 3 * i + 4]
        return bytes(out)

    def events(self, rng: random.Random) -> bytes:
        """Event data: g2v2 binary input events with time, g32v1 analog events; qualifier 0x28."""
        out = bytearray()
        n_bin = rng.choice((0, 0, 1, 1, 2, 3))
        if n_bin:
            out += bytes((2, 2, 0x28)) + _U16.pack(n_bin)
            for _ in range(n_bin):
                ms = rng.getrandbits(40)
                out += _U16.pack(rng.randrange(self.n_bin)) + bytes((0x01 | rng.getrandbits(1) << 7,))
                out += ms.to_bytes(6, "little")
        n_ana = rng.choice((1, 1, 2, 3, 5, 8)) if not n_bin or rng.random() < 0.5 else 0
        if n_ana:
            out += bytes((32, 1, 0x28)) + _U16.pack(n_ana)
            for _ in range(n_ana):
                out += _U16.pack(rng.randrange(self.n_ana)) + b"\x01" + rng.randbytes(4)
        return bytes(out)


def dnp3_flows(rng: random.Random, n_packets: int, n_flows: int, stats: Counter[str]) -> list[Iterator[Packet]]:
    plant = Plant(rng, n_flows, 40, "rtu")
    periods, duration = plant.poll_periods(n_packets, n_flows, (250_000, 500_000, 1_000_000, 2_000_000, 5_000_000),
                                           packets_per_cycle=4.5)  # ~4.5 packets per event-poll cycle
    return [_dnp3_connection(rng, client, server, t, handshake, cycles, period, stats)
            for client, server, t, handshake, cycles, period in plant.schedule(n_flows, duration, periods)]


def _dnp3_connection(rng: random.Random, client: Host, server: Host, t: int, handshake: bool,
                     cycles: int | None, period: int, stats: Counter[str]) -> Iterator[Packet]:
    c = open_connection(rng, client, server, 20000, stats)
    station = Dnp3Outstation(rng)
    master_addr = rng.choice((1, 1, 3, 100))
    out_addr = rng.randint(10, 65000)
    req = Dnp3Link(True, out_addr, master_addr, rng)
    resp = Dnp3Link(False, master_addr, out_addr, rng)
    frames_per_segment = rng.random() < 0.3  # stacks that send each link frame in its own segment
    latency = rng.randint(2_000, 40_000)
    app_seq = rng.randrange(16)
    uns_seq = rng.randrange(16)
    integrity_every = rng.randint(10, 40)
    iin = 0x8000 if handshake else 0x0000  # a freshly connected outstation reports DEVICE_RESTART

    def send(d: int, link: Dnp3Link, apdu: bytes, fc: int, t: int) -> Generator[Packet, None, int]:
        frames, counts = link.frames(apdu, fc)
        if len(frames) == 1 or not frames_per_segment:
            return (yield from c.send(t, d, b"".join(frames), tuple(x for cs in counts for x in cs)))
        for frame, cs in zip(frames, counts):
            t = yield from c.send(t, d, frame, cs)
            t += 150
        return t

    def transaction(t: int, fc: int, objects: bytes, answer: bytes, con: bool = False) -> Generator[Packet, None, int]:
        """Request (FIR|FIN, seq) and its response (129, IIN, objects); a CONFIRM when CON is set."""
        nonlocal app_seq
        seq = app_seq
        app_seq = (app_seq + 1) & 0x0F
        t = yield from send(0, req, bytes((0xC0 | seq, fc)) + objects, fc, t)
        t += latency + rng.randint(0, 3_000)
        ac = 0xC0 | (0x20 if con else 0) | seq
        t = yield from send(1, resp, bytes((ac, 129)) + iin.to_bytes(2, "big") + answer, 129, t)
        if con:
            t = yield from send(0, req, bytes((0xC0 | seq, 0)), 0, t + rng.randint(1_000, 5_000))
        return t

    if handshake:
        stats["handshakes"] += 1
        t = yield from c.handshake(t, rng)
        t += rng.randint(500, 5_000)
        # start-up: disable unsolicited, integrity poll, clear the restart bit, enable unsolicited
        t = yield from transaction(t, 21, _CLASS123, b"")
        t = yield from transaction(t + 20_000, 1, _CLASS0123, station.static_objects(rng))
        clear_restart = bytes((80, 1, 0x00, 7, 7, 0x00))  # g80v1 index 7 (IIN1.7) := 0
        iin = 0x0000
        t = yield from transaction(t + 20_000, 2, clear_restart, b"")
        if station.unsolicited:
            t = yield from transaction(t + 20_000, 20, _CLASS123, b"")
        t += period
    cycle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        start = t
        r = rng.random()
        if cycle % integrity_every == 0:
            stats["integrity_polls"] += 1
            t = yield from transaction(t, 1, _CLASS0123, station.static_objects(rng))
        elif r < 0.010:
            stats["select_operate"] += 1
            crob = bytes((12, 1, 0x28)) + _U16.pack(1) + _U16.pack(rng.randrange(16))
            crob += bytes((rng.choice((0x41, 0x81, 0x03, 0x04)), 1)) + _U32.pack(1000) + _U32.pack(0) + b"\x00"
            t = yield from transaction(t, 3, crob, crob)
            t = yield from transaction(t + rng.randint(20_000, 80_000), 4, crob, crob)
        elif r < 0.015:
            stats["direct_operate"] += 1
            aob = bytes((41, 2, 0x28)) + _U16.pack(1) + _U16.pack(rng.randrange(8))
            aob += struct.pack("<hB", rng.randint(-2000, 2000), 0)
            t = yield from transaction(t, 5, aob, aob)
        elif r < 0.020:
            stats["time_syncs"] += 1
            t = yield from transaction(t, 23, b"", bytes((52, 2, 0x07, 1)) + _U16.pack(rng.randint(1, 30)))
            t += 20_000
            now_ms = (t // 1000).to_bytes(6, "little")
            t = yield from transaction(t, 2, bytes((50, 1, 0x07, 1)) + now_ms, b"")
        elif r < 0.040:
            stats["link_status"] += 1  # keep-alive: REQUEST LINK STATUS, answered by LINK STATUS
            t = yield from c.send(t, 0, dnp3_link_frame(0xC9, out_addr, master_addr), _DNP3_PDU)
            t = yield from c.send(t + latency, 1, dnp3_link_frame(0x0B, master_addr, out_addr), _DNP3_PDU)
        else:
            events = station.events(rng) if rng.random() < 0.3 else b""
            t = yield from transaction(t, 1, _CLASS123, events, con=bool(events))
        if station.unsolicited and rng.random() < 0.2:
            stats["unsolicited"] += 1
            seq = uns_seq
            uns_seq = (uns_seq + 1) & 0x0F
            apdu = bytes((0xF0 | seq, 130)) + iin.to_bytes(2, "big") + station.events(rng)
            t = yield from send(1, resp, apdu, 130, max(t + 5_000, start + period // 2))
            t = yield from send(0, req, bytes((0xD0 | seq, 0)), 0, t + rng.randint(1_000, 8_000))
        t = max(t + 2_000, start + jitter(rng, period))
        if c.unacked(1):
            yield c.ack(t - 1_000, 1)
        if c.unacked(0):
            yield c.ack(t - 500, 0)
    yield from c.close(t, rng, reset=rng.random() < 0.1)


# =================================================================================================
# S7comm over ISO-on-TCP: TPKT (RFC 1006), COTP (ISO 8073) class 0, S7 jobs and ack_data
# =================================================================================================
_TPKT = struct.Struct(">BBH")
_S7_JOB = struct.Struct(">BBHHHH")  # 0x32, ROSCTR, redundancy id, PDU reference, param length, data length
_S7_ACK = struct.Struct(">BBHHHHBB")  # + error class, error code
_S7ANY = struct.Struct(">BBBBHHB3s")  # 0x12, length 10, syntax S7ANY 0x10, transport size, count, DB, area, address
_COTP_DT = b"\x02\xf0\x80"  # LI 2, DT, EOT
_S7_SETUP_JOB = bytes.fromhex("f00000010001" "01e0")  # setup communication: AmQ 1/1, PDU 480
_S7_SETUP_ACK = bytes.fromhex("f00000010001" "00f0")  # the PLC answers PDU 240


def _s7_counts(func: int | None) -> Counts:
    """One TPKT with one COTP DT carrying one S7 PDU: cotp PDU + 0x0f, s7comm PDU (+ function)."""
    c: Counts = (("cotp", None), ("cotp", "0x0f"), ("s7comm", None))
    return c + ((("s7comm", f"0x{func:02x}"),) if func is not None else ())


_S7_COUNTS = {f: _s7_counts(f) for f in (0x04, 0x05, 0xF0)}
_S7_USERDATA_COUNTS = _s7_counts(None)


def tpkt(payload: bytes) -> bytes:
    return _TPKT.pack(3, 0, 4 + len(payload)) + payload


class S7Plc:
    """Areas and data blocks one PLC exposes, and the HMI's tag list on it."""

    AREAS = (0x84, 0x84, 0x84, 0x83, 0x81, 0x82)  # DB (most), flags M, inputs I, outputs Q
    SIZES = ((0x02, 1), (0x04, 2), (0x06, 4), (0x08, 4), (0x01, 1))  # BYTE, WORD, DWORD, REAL, BIT

    def __init__(self, rng: random.Random) -> None:
        self.dbs = [rng.randint(1, 200) for _ in range(rng.randint(1, 6))]
        self.pool = rng.randbytes(2048)

    def item(self, rng: random.Random) -> tuple[int, int, int, int, int]:
        """(transport size, count, db, area, bit address) of one S7ANY item."""
        area = rng.choice(self.AREAS)
        tsize, _width = rng.choice(self.SIZES)
        count = 1 if tsize == 0x01 else rng.choice((1, 1, 2, 4, 8, 16, 32))
        if tsize == 0x02:
            count = rng.choice((1, 2, 4, 8, 16, 32, 64, 100, 200))
        db = rng.choice(self.dbs) if area == 0x84 else 0
        byte = rng.randrange(0, 1000)
        bit = rng.randrange(8) if tsize == 0x01 else 0
        return tsize, count, db, area, byte * 8 + bit

    @staticmethod
    def length(item: tuple[int, int, int, int, int]) -> int:
        tsize, count = item[0], item[1]
        return count * {0x01: 1, 0x02: 1, 0x04: 2, 0x06: 4, 0x08: 4}[tsize]


def _s7any(item: tuple[int, int, int, int, int]) -> bytes:
    tsize, count, db, area, addr = item
    return _S7ANY.pack(0x12, 0x0A, 0x10, tsize, count, db, area, addr.to_bytes(3, "big"))


def s7_flows(rng: random.Random, n_packets: int, n_flows: int, stats: Counter[str]) -> list[Iterator[Packet]]:
    plant = Plant(rng, n_flows, 50, "plc")
    periods, duration = plant.poll_periods(n_packets, n_flows,
                                           (100_000, 200_000, 250_000, 500_000, 1_000_000, 2_000_000),
                                           packets_per_cycle=2.6)
    plcs = {id(d): S7Plc(rng) for d in plant.devices}
    return [_s7_connection(rng, client, server, plcs[id(server)], t, handshake, cycles, period, stats)
            for client, server, t, handshake, cycles, period in plant.schedule(n_flows, duration, periods)]


def _s7_connection(rng: random.Random, client: Host, server: Host, plc: S7Plc, t: int, handshake: bool,
                   cycles: int | None, period: int, stats: Counter[str]) -> Iterator[Packet]:
    c = open_connection(rng, client, server, 102, stats)
    latency = rng.randint(1_500, 20_000)
    pduref = rng.getrandbits(16)
    # the HMI's poll list on this PLC: one or two read jobs of 1-8 items
    reads = [[plc.item(rng) for _ in range(rng.choice((1, 1, 2, 3, 4, 6, 8)))] for _ in range(rng.choice((1, 1, 2)))]
    split_big = rng.random() < 0.15  # a PLC stack that sends large replies in two segments

    def job(t: int, func: int, param: bytes, data: bytes, ack_param: bytes, ack_data: bytes,
            counts: Counts) -> Generator[Packet, None, int]:
        nonlocal pduref
        pduref = (pduref + 1) & 0xFFFF
        s7 = _S7_JOB.pack(0x32, 1, 0, pduref, len(param), len(data)) + param + data
        t = yield from c.send(t, 0, tpkt(_COTP_DT + s7), counts)
        t += latency + rng.randint(0, 2_000)
        reply = tpkt(_COTP_DT + _S7_ACK.pack(0x32, 3, 0, pduref, len(ack_param), len(ack_data), 0, 0)
                     + ack_param + ack_data)
        cuts = (rng.randint(40, len(reply) - 20),) if split_big and len(reply) > 200 else ()
        return (yield from c.send(t, 1, reply, counts, cuts))

    def read(t: int, items: list) -> Generator[Packet, None, int]:
        param = bytes((0x04, len(items))) + b"".join(_s7any(i) for i in items)
        data = bytearray()
        for k, item in enumerate(items):
            n = plc.length(item)
            bits = item[0] in (0x01, 0x02, 0x04, 0x06, 0x08)
            o = rng.getrandbits(10)
            data += bytes((0xFF, 0x03 if item[0] == 0x01 else 0x04)) + (n * (1 if item[0] == 0x01 else 8) if bits else n).to_bytes(2, "big")
            data += plc.pool[o : o + n]
            if n & 1 and k < len(items) - 1:
                data += b"\x00"  # fill byte between items
        return (yield from job(t, 0x04, param, b"", bytes((0x04, len(items))), bytes(data), _S7_COUNTS[0x04]))

    def write(t: int) -> Generator[Packet, None, int]:
        item = plc.item(rng)
        n = plc.length(item)
        value = rng.randbytes(n)
        tsize = 0x03 if item[0] == 0x01 else 0x04
        data = bytes((0x00, tsize)) + (n * (1 if item[0] == 0x01 else 8)).to_bytes(2, "big") + value
        return (yield from job(t, 0x05, b"\x05\x01" + _s7any(item), data, b"\x05\x01", b"\xff", _S7_COUNTS[0x05]))

    def szl(t: int) -> Generator[Packet, None, int]:
        """Userdata, CPU functions / read SZL (0x0424 CPU state or 0x0011 module identification)."""
        nonlocal pduref
        pduref = (pduref + 1) & 0xFFFF
        # (SZL id, index, record length): CPU state, module identification, LED states
        szl_id, index, rlen = rng.choice(((0x0424, 0, 20), (0x0011, 0, 28), (0x0074, 0, 4)))
        param = bytes.fromhex("000112041144" + "0100")
        data = b"\xff\x09\x00\x04" + struct.pack(">HH", szl_id, index)
        s7 = _S7_JOB.pack(0x32, 7, 0, pduref, len(param), len(data)) + param + data
        t = yield from c.send(t, 0, tpkt(_COTP_DT + s7), _S7_USERDATA_COUNTS)
        t += latency
        n = rng.randint(1, 4)
        if szl_id == 0x0011:  # index, order number (20 characters), module type, version
            records = b"".join(struct.pack(">H20sHHH", i + 1, b"6ES7 315-2EH14-0AB0 ", 0xC0, 3, 0x0403)
                               for i in range(n))
        else:
            records = rng.randbytes(rlen * n)
        body = struct.pack(">HHHH", szl_id, index, rlen, n) + records
        rparam = bytes.fromhex("000112081284" + "01") + bytes((1, 0, 0)) + b"\x00\x00"
        rdata = b"\xff\x09" + len(body).to_bytes(2, "big") + body
        s7 = _S7_JOB.pack(0x32, 7, 0, pduref, len(rparam), len(rdata)) + rparam + rdata
        return (yield from c.send(t, 1, tpkt(_COTP_DT + s7), _S7_USERDATA_COUNTS))

    if handshake:
        stats["handshakes"] += 1
        t = yield from c.handshake(t, rng)
        t += rng.randint(300, 3_000)
        src_ref = rng.getrandbits(16) | 1
        slot = rng.choice((1, 2, 2, 3))
        params = bytes.fromhex("c0010a" "c1020100") + bytes((0xC2, 2, 0x01, slot))
        cr = bytes((6 + len(params), 0xE0)) + b"\x00\x00" + src_ref.to_bytes(2, "big") + b"\x00" + params
        cotp_cr = (("cotp", None), ("cotp", "0x0e"))
        t = yield from c.send(t, 0, tpkt(cr), cotp_cr)
        t += latency
        cc = bytes((6 + len(params), 0xD0)) + src_ref.to_bytes(2, "big") + b"\x44\x31\x00" + params
        t = yield from c.send(t, 1, tpkt(cc), (("cotp", None), ("cotp", "0x0d")))
        t += rng.randint(500, 3_000)
        t = yield from job(t, 0xF0, _S7_SETUP_JOB, b"", _S7_SETUP_ACK, b"", _S7_COUNTS[0xF0])
        t += rng.randint(5_000, 50_000)
        stats["setups"] += 1
        if rng.random() < 0.5:
            t = yield from szl(t)
            t += 20_000
    cycle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        start = t
        for items in reads:
            t = yield from read(t, items)
            t += rng.randint(1_000, 5_000)
        r = rng.random()
        if r < 0.03:
            stats["writes"] += 1
            t = yield from write(t)
        elif r < 0.04:
            stats["szl_reads"] += 1
            t = yield from szl(t)
        end = t
        t = max(end + 1_000, start + jitter(rng, period))
        if t - end > 150_000 and c.unacked(0):
            yield c.ack(end + 100_000, 0)  # the HMI's delayed ACK between slow polls
    yield from c.close(t, rng, reset=rng.random() < 0.1)


# =================================================================================================
# IEC 60870-5-104: APCI (I/S/U formats) and ASDUs (COT 2, CA 2, IOA 3 octets)
# =================================================================================================
_APCI_I = struct.Struct("<BBHH")  # 0x68, length, N(S) << 1, N(R) << 1
_ASDU_HEAD = struct.Struct("<BBBBH")  # type id, VSQ, cause, originator, common address
_U_FRAMES = {"startdt_act": 0x07, "startdt_con": 0x0B, "testfr_act": 0x43, "testfr_con": 0x83}
_APCI_U_COUNTS: Counts = (("iec104", None), ("iec104", "apci:3"))
_APCI_S_COUNTS: Counts = (("iec104", None), ("iec104", "apci:1"))
_APCI_I_COUNTS = {tid: (("iec104", None), ("iec104", "apci:0"), ("iec104", f"asdu:{tid}")) for tid in range(256)}
_F32 = struct.Struct("<f")


def cp56time2a(t_us: int) -> bytes:
    """CP56Time2a (IEC 60870-5-4 6.8) of a capture time: ms, minute, hour, day|weekday, month, year."""
    import datetime as _dt

    d = _dt.datetime.fromtimestamp(t_us / 1e6, _dt.UTC)
    ms = d.second * 1000 + d.microsecond // 1000
    return struct.pack("<HBBBBB", ms, d.minute, d.hour, d.day | (d.isoweekday() << 5), d.month, d.year - 2000)


class Iec104Rtu:
    """Points of one outstation (remote terminal unit) and how it reports them."""

    def __init__(self, rng: random.Random, ca: int) -> None:
        self.ca = ca
        self.n_sp = rng.choice((16, 32, 64, 100))
        self.n_dp = rng.choice((4, 8, 16))
        self.n_me = rng.choice((8, 16, 32, 60))
        self.me_type = rng.choice((13, 13, 13, 9, 11))  # short float, normalised, scaled
        self.timed = rng.random() < 0.4  # reports spontaneous data with CP56 time tags (30/31/36)

    def element(self, rng: random.Random, tid: int, t_us: int) -> bytes:
        if tid in (1, 3):
            return bytes((rng.choice((0, 1)) if tid == 1 else rng.choice((1, 2)),))
        if tid in (30, 31):
            return bytes((rng.choice((0, 1)) if tid == 30 else rng.choice((1, 2)),)) + cp56time2a(t_us)
        if tid == 13:
            return _F32.pack(rng.uniform(-500, 500)) + b"\x00"
        if tid == 36:
            return _F32.pack(rng.uniform(-500, 500)) + b"\x00" + cp56time2a(t_us)
        if tid in (9, 11):
            return rng.getrandbits(16).to_bytes(2, "little") + b"\x00"
        if tid == 15:
            return rng.getrandbits(32).to_bytes(4, "little") + bytes((rng.randrange(32),))
        raise ValueError(tid)


def _asdu(tid: int, cot: int, ca: int, objects: list[tuple[int, bytes]], sq: bool = False) -> bytes:
    """An ASDU: with SQ=1 one address then the elements, else address + element per object."""
    head = _ASDU_HEAD.pack(tid, (0x80 if sq else 0) | len(objects), cot, 0, ca)
    if sq:
        return head + objects[0][0].to_bytes(3, "little") + b"".join(e for _, e in objects)
    return head + b"".join(ioa.to_bytes(3, "little") + e for ioa, e in objects)


def iec104_flows(rng: random.Random, n_packets: int, n_flows: int, stats: Counter[str]) -> list[Iterator[Packet]]:
    plant = Plant(rng, n_flows, 60, "rtu")
    periods, duration = plant.poll_periods(n_packets, n_flows, (200_000, 500_000, 1_000_000, 2_000_000, 5_000_000),
                                           packets_per_cycle=2.0)
    rtus = {id(d): Iec104Rtu(rng, rng.randint(1, 65000)) for d in plant.devices}
    return [_iec104_connection(rng, client, server, rtus[id(server)], t, handshake, cycles, period, stats)
            for client, server, t, handshake, cycles, period in plant.schedule(n_flows, duration, periods)]


def _iec104_connection(rng: random.Random, client: Host, server: Host, rtu: Iec104Rtu, t: int, handshake: bool,
                       cycles: int | None, period: int, stats: Counter[str]) -> Iterator[Packet]:
    c = open_connection(rng, client, server, 2404, stats)
    latency = rng.randint(1_000, 30_000)
    ns = [rng.randrange(32768), rng.randrange(32768)] if not handshake else [0, 0]  # N(S) per side
    acked = [ns[1], ns[0]]  # N(R) last sent by each side (what it has acknowledged)
    burst_in_one_segment = rng.random() < 0.6

    def i_frame(d: int, asdu: bytes) -> bytes:
        apdu = _APCI_I.pack(0x68, 4 + len(asdu), ns[d] << 1, ns[1 - d] << 1) + asdu
        ns[d] = (ns[d] + 1) & 0x7FFF
        acked[d] = ns[1 - d]
        return apdu

    def u_frame(name: str) -> bytes:
        return bytes((0x68, 4, _U_FRAMES[name], 0, 0, 0))

    def s_frame(d: int) -> bytes:
        acked[d] = ns[1 - d]
        return bytes((0x68, 4, 0x01, 0)) + (ns[1 - d] << 1).to_bytes(2, "little")

    def unacked(d: int) -> int:
        """I-frames side ``d`` received and has not acknowledged yet."""
        return (ns[1 - d] - acked[d]) & 0x7FFF

    def rtu_sends(t: int, asdus: list[bytes], one_segment: bool) -> Generator[Packet, None, int]:
        """The RTU's I-frames (one segment or one each); the SCADA acknowledges every w=8 of them."""
        if one_segment:
            frames = [i_frame(1, a) for a in asdus]
            counts = tuple(x for a in asdus for x in _APCI_I_COUNTS[a[0]])
            t = yield from c.send(t, 1, b"".join(frames), counts)
        else:
            for a in asdus:
                t = yield from c.send(t, 1, i_frame(1, a), _APCI_I_COUNTS[a[0]])
                t += rng.randint(50, 500)
        if unacked(0) >= 8:
            t = yield from c.send(t + rng.randint(500, 5_000), 0, s_frame(0), _APCI_S_COUNTS)
        return t

    def command(t: int, tid: int, ioa: int, element: bytes, replies: list[bytes] = ()) -> Generator[Packet, None, int]:
        """Activation (COT 6), confirmation (7), the RTU's data replies, termination (10)."""
        t = yield from c.send(t, 0, i_frame(0, _asdu(tid, 6, rtu.ca, [(ioa, element)])), _APCI_I_COUNTS[tid])
        t = yield from rtu_sends(t + latency, [_asdu(tid, 7, rtu.ca, [(ioa, element)])], True)
        t += rng.randint(1_000, 10_000)
        for k in range(0, len(replies), 4):
            t = yield from rtu_sends(t, replies[k : k + 4], burst_in_one_segment)
            t += rng.randint(500, 3_000)
        if tid != 103:  # clock synchronisation has no termination
            t = yield from rtu_sends(t, [_asdu(tid, 10, rtu.ca, [(ioa, element)])], True)
        return t

    def interrogation(t: int) -> Generator[Packet, None, int]:
        stats["interrogations"] += 1
        replies = []
        for first in range(0, rtu.n_sp, 60):  # single points, SQ=1, 60 per ASDU
            n = min(60, rtu.n_sp - first)
            replies.append(_asdu(1, 20, rtu.ca, [(1 + first + k, rtu.element(rng, 1, t)) for k in range(n)], sq=True))
        replies.append(_asdu(3, 20, rtu.ca, [(2001 + k, rtu.element(rng, 3, t)) for k in range(rtu.n_dp)]))
        for first in range(0, rtu.n_me, 24):  # measurands, SQ=0, 24 per ASDU (within 253 octets)
            n = min(24, rtu.n_me - first)
            replies.append(_asdu(rtu.me_type, 20, rtu.ca,
                                 [(4001 + first + k, rtu.element(rng, rtu.me_type, t)) for k in range(n)]))
        return (yield from command(t, 100, 0, b"\x14", replies))  # QOI 20: station interrogation

    if handshake:
        stats["handshakes"] += 1
        t = yield from c.handshake(t, rng)
        t += rng.randint(500, 5_000)
        t = yield from c.send(t, 0, u_frame("startdt_act"), _APCI_U_COUNTS)
        t = yield from c.send(t + latency, 1, u_frame("startdt_con"), _APCI_U_COUNTS)
        t = yield from interrogation(t + rng.randint(1_000, 5_000))
        t = yield from command(t + 200_000, 103, 0, cp56time2a(t))
        t += period
    cycle = 0
    idle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        start = t
        r = rng.random()
        if r < 0.002:
            t = yield from interrogation(t)
        elif r < 0.004:
            stats["clock_syncs"] += 1
            t = yield from command(t, 103, 0, cp56time2a(t))
        elif r < 0.010:
            stats["commands"] += 1
            ioa = 3001 + rng.randrange(8)
            sco = rng.choice((0, 1))
            t = yield from command(t, 45, ioa, bytes((0x80 | sco,)))  # select
            t += rng.randint(50_000, 200_000)
            # execute, then the changed point's return information (COT 11)
            t = yield from command(t, 45, ioa, bytes((sco,)),
                                   [_asdu(30, 11, rtu.ca, [(1 + ioa % rtu.n_sp, rtu.element(rng, 30, t))])])
        elif r < 0.012:
            stats["counter_interrogations"] += 1
            counters = [_asdu(15, 37, rtu.ca, [(6001 + k, rtu.element(rng, 15, t)) for k in range(8)])]
            t = yield from command(t, 101, 0, b"\x05", counters)
        if rng.random() < 0.75:
            # spontaneous (COT 3) or periodic (COT 1) data: 1-4 ASDUs of 1-6 objects
            idle = 0
            asdus = []
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
                if rng.random() < 0.3:
                    tid = 30 if rtu.timed else 1
                    base, npts = 1, rtu.n_sp
                else:
                    tid = 36 if rtu.timed and rtu.me_type == 13 else rtu.me_type
                    base, npts = 4001, rtu.n_me
                cot = 3 if tid in (1, 30, 36) or rng.random() < 0.5 else 1
                objs = [(base + rng.randrange(npts), rtu.element(rng, tid, t))
                        for _ in range(rng.choice((1, 1, 2, 3, 6)))]
                asdus.append(_asdu(tid, cot, rtu.ca, objs))
            t = yield from rtu_sends(t + rng.randint(0, period // 2), asdus, burst_in_one_segment)
        else:
            idle += period
            if idle >= 20_000_000 or rng.random() < 0.02:  # t3: test an idle link
                idle = 0
                stats["testfr"] += 1
                t = yield from c.send(t + rng.randint(0, period // 2), 0, u_frame("testfr_act"), _APCI_U_COUNTS)
                t = yield from c.send(t + latency, 1, u_frame("testfr_con"), _APCI_U_COUNTS)
        end = t
        t = max(end + 2_000, start + jitter(rng, period))
        if unacked(0) and rng.random() < 0.2:  # t2 expired on the SCADA's side: acknowledge what it has
            yield from c.send(t - 1_000, 0, s_frame(0), _APCI_S_COUNTS)
        elif c.unacked(0):
            yield c.ack(t - 1_000, 0)
    yield from c.close(t, rng, reset=rng.random() < 0.1)


# =================================================================================================
# EtherNet/IP encapsulation + CIP (ODVA Vol. 1 and 2): explicit messaging over TCP, discovery and
# class 1 I/O over UDP
# =================================================================================================
_ENCAP = struct.Struct("<HHII8sI")  # command, length, session handle, status, sender context, options
_CPF_RR = struct.Struct("<IHH")  # interface handle, timeout, item count
_CPF_ITEM = struct.Struct("<HH")
_IDENTITY_PATH = bytes.fromhex("20012401")  # class 1 (Identity), instance 1
_ROUTER_PATH = bytes.fromhex("20022401")  # class 2 (Message Router), instance 1
_CM_PATH = bytes.fromhex("20062401")  # class 6 (Connection Manager), instance 1
_CIP_TYPES = ((0xC4, 4), (0xCA, 4), (0xC3, 2), (0xC1, 1))  # DINT, REAL, INT, BOOL


def _enip_counts(command: int, services: tuple[int, ...] = ()) -> Counts:
    return (("enip", None), ("enip", f"0x{command:04x}")) + tuple(
        x for sc in services for x in (("cip", None), ("cip", f"0x{sc:02x}")))


def _epath_symbol(name: bytes) -> bytes:
    """ANSI extended symbol segment (0x91), padded to a word."""
    seg = bytes((0x91, len(name))) + name
    return seg + b"\x00" if len(seg) & 1 else seg


def _cip_request(service: int, path: bytes, data: bytes = b"") -> bytes:
    return bytes((service, len(path) // 2)) + path + data


def _cip_reply(service: int, data: bytes = b"", status: int = 0) -> bytes:
    return bytes((service | 0x80, 0, status, 0)) + data


def _msp(messages: list[bytes], reply: bool = False) -> bytes:
    """Multiple Service Packet body: count, offsets (from the count), the services."""
    offsets, off = [], 2 + 2 * len(messages)
    for m in messages:
        offsets.append(off)
        off += len(m)
    body = struct.pack(f"<H{len(messages)}H", len(messages), *offsets) + b"".join(messages)
    return _cip_reply(0x0A, body) if reply else _cip_request(0x0A, _ROUTER_PATH, body)


class EnipDevice:
    """A controller: identity, tags, and the identity object a ListIdentity reply carries."""

    def __init__(self, rng: random.Random, host: Host) -> None:
        self.host = host
        self.serial = rng.getrandbits(32)
        self.product = rng.choice((b"1756-L71/B LOGIX5571", b"1769-L33ER/A LOGIX5333ER", b"1756-EN2T/D"))
        self.tags = [(f"{rng.choice(('Line', 'Tank', 'Pump', 'Valve', 'Motor'))}{i}_{rng.choice(('PV', 'SP', 'Run', 'Status'))}".encode(),
                      rng.choice(_CIP_TYPES)) for i in range(rng.randint(4, 40))]

    def identity_attrs(self) -> bytes:
        """Identity object attributes 1-7: vendor, device type, product code, revision, status, serial, name."""
        return struct.pack("<HHHBBHI", 1, 14, 55, 20, 11, 0x0060, self.serial) + bytes((len(self.product),)) + self.product

    def list_identity_item(self) -> bytes:
        sockaddr = struct.pack(">HH4s8x", 2, 44818, self.host.ipb)
        body = struct.pack("<H", 1) + sockaddr + self.identity_attrs() + b"\x03"  # state 3: operational
        return struct.pack("<H", 1) + _CPF_ITEM.pack(0x000C, len(body)) + body


def enip_flows(rng: random.Random, n_packets: int, n_flows: int, stats: Counter[str]) -> list[Iterator[Packet]]:
    plant = Plant(rng, n_flows, 70, "plc")
    periods, duration = plant.poll_periods(n_packets, n_flows, (100_000, 250_000, 500_000, 1_000_000, 2_000_000),
                                           packets_per_cycle=2.3)
    devices = {id(d): EnipDevice(rng, d) for d in plant.devices}
    out: list[Iterator[Packet]] = [
        _enip_connection(rng, client, server, devices[id(server)], t, handshake, cycles, period, stats)
        for client, server, t, handshake, cycles, period in plant.schedule(n_flows, duration, periods)]
    # class 1 I/O: some adapters produce T->O data to their scanner every RPI (UDP 2222)
    for device in rng.sample(plant.devices, max(1, len(plant.devices) // 10)):
        out.append(_enip_io(rng, device, plant.masters[0], rng.choice((50_000, 100_000, 200_000)), stats))
    # discovery: a tool broadcasts ListIdentity now and then; every device answers (UDP 44818)
    out.append(_enip_discovery(rng, plant.stations[0], [devices[id(d)] for d in plant.devices], duration, stats))
    return out


def _enip_io(rng: random.Random, adapter: Host, scanner: Host, rpi: int, stats: Counter[str]) -> Iterator[Packet]:
    conn_id = rng.getrandbits(32)
    seq = rng.getrandbits(32)
    size = rng.choice((8, 16, 32, 64))
    t = T0_US + rng.randint(0, rpi)
    while True:
        seq = (seq + 1) & 0xFFFFFFFF
        data = struct.pack("<H", seq & 0xFFFF) + rng.randbytes(size)  # class 1 sequence count + data
        cpf = struct.pack("<H", 2) + _CPF_ITEM.pack(0x8002, 8) + struct.pack("<II", conn_id, seq) \
            + _CPF_ITEM.pack(0x00B1, len(data)) + data
        stats["io_datagrams"] += 1
        yield t, udp_frame(adapter, scanner, 2222, 2222, cpf), NONE
        t += rpi + rng.randint(-rpi // 50, rpi // 50)


def _enip_discovery(rng: random.Random, tool: Host, devices: list[EnipDevice], duration: int,
                    stats: Counter[str]) -> Iterator[Packet]:
    t = T0_US + rng.randint(0, 5_000_000)
    port = tool.ephemeral()
    request_counts = _enip_counts(0x63)
    while True:
        stats["list_identity_scans"] += 1
        context = rng.randbytes(8)
        yield t, udp_frame(tool, None, port, 44818, _ENCAP.pack(0x63, 0, 0, 0, context, 0),
                           broadcast_ip=tool.ipb[:2] + b"\xff\xff"), request_counts
        for dev in rng.sample(devices, min(len(devices), 60)):
            t += rng.randint(200, 5_000)
            item = dev.list_identity_item()
            yield t, udp_frame(dev.host, tool, 44818, port, _ENCAP.pack(0x63, len(item), 0, 0, context, 0) + item), \
                request_counts
        t += max(5_000_000, duration // 20)


def _enip_connection(rng: random.Random, client: Host, server: Host, dev: EnipDevice, t: int, handshake: bool,
                     cycles: int | None, period: int, stats: Counter[str]) -> Iterator[Packet]:
    c = open_connection(rng, client, server, 44818, stats)
    latency = rng.randint(500, 15_000)
    handle = rng.getrandbits(32) | 1
    context = rng.getrandbits(64)
    style = rng.choices(("connected", "unconnected", "routed", "identity"), (40, 25, 20, 15))[0]
    o_t, t_o = rng.getrandbits(32), rng.getrandbits(32)
    cip_seq = rng.getrandbits(16)
    conn_serial = rng.getrandbits(16)
    poll = rng.sample(dev.tags, min(len(dev.tags), rng.choice((1, 2, 4, 8, 12))))

    def encap(command: int, data: bytes, ctx: int) -> bytes:
        return _ENCAP.pack(command, len(data), handle, 0, ctx.to_bytes(8, "little"), 0) + data

    def rr(t: int, request: bytes, reply: bytes, req_sc: tuple[int, ...], rep_sc: tuple[int, ...]
           ) -> Generator[Packet, None, int]:
        """SendRRData: null address item + unconnected data item, both ways (the reply echoes the context)."""
        nonlocal context
        context = (context + 1) & 0xFFFFFFFFFFFFFFFF
        items = [struct.pack("<H", 2) + _CPF_ITEM.pack(0, 0) + _CPF_ITEM.pack(0x00B2, len(m)) + m for m in (request, reply)]
        t = yield from c.send(t, 0, encap(0x6F, _CPF_RR.pack(0, 10, 0)[:6] + items[0], context), _enip_counts(0x6F, req_sc))
        t += latency + rng.randint(0, 1_000)
        return (yield from c.send(t, 1, encap(0x6F, _CPF_RR.pack(0, 0, 0)[:6] + items[1], context),
                                  _enip_counts(0x6F, rep_sc)))

    def unit(t: int, request: bytes, reply: bytes, req_sc: tuple[int, ...], rep_sc: tuple[int, ...]
             ) -> Generator[Packet, None, int]:
        """SendUnitData: connected address item + connected data item (sequence count, CIP)."""
        nonlocal cip_seq
        cip_seq = (cip_seq + 1) & 0xFFFF
        seq = struct.pack("<H", cip_seq)
        body = [struct.pack("<IH", 0, 0) + struct.pack("<H", 2) + _CPF_ITEM.pack(0x00A1, 4) + struct.pack("<I", cid)
                + _CPF_ITEM.pack(0x00B1, 2 + len(m)) + seq + m for cid, m in ((o_t, request), (t_o, reply))]
        t = yield from c.send(t, 0, encap(0x70, body[0], 0), _enip_counts(0x70, req_sc))
        t += latency + rng.randint(0, 1_000)
        return (yield from c.send(t, 1, encap(0x70, body[1], 0), _enip_counts(0x70, rep_sc)))

    def read_tag(tag: tuple[bytes, tuple[int, int]], fail: bool) -> tuple[bytes, bytes]:
        name, (ctype, width) = tag
        request = _cip_request(0x4C, _epath_symbol(name), b"\x01\x00")
        if fail:  # a tag that does not exist (a renamed tag in the HMI): path destination unknown
            return request, _cip_reply(0x4C, status=0x05)
        return request, _cip_reply(0x4C, struct.pack("<H", ctype) + rng.randbytes(width))

    def read_cycle(t: int) -> Generator[Packet, None, int]:
        fail = rng.random() < 0.003
        pairs = [read_tag(tag, fail and i == 0) for i, tag in enumerate(poll)]
        if style == "connected":
            if len(pairs) == 1:
                return (yield from unit(t, pairs[0][0], pairs[0][1], (0x4C,), (0x4C,)))
            n = len(pairs)
            return (yield from unit(t, _msp([p[0] for p in pairs]), _msp([p[1] for p in pairs], reply=True),
                                    (0x0A,) + (0x4C,) * n, (0x0A,) + (0x4C,) * n))
        if style == "identity":
            t = yield from rr(t, _cip_request(0x01, _IDENTITY_PATH), _cip_reply(0x01, dev.identity_attrs()), (0x01,), (0x01,))
            return (yield from rr(t + rng.randint(1_000, 5_000), _cip_request(0x0E, _IDENTITY_PATH + b"\x30\x05"),
                                  _cip_reply(0x0E, b"\x60\x00"), (0x0E,), (0x0E,)))
        for request, reply in pairs[:4]:
            if style == "routed":  # Unconnected Send through the backplane to slot 0 (RSLinx style)
                pad = b"\x00" if len(request) & 1 else b""
                wrapped = _cip_request(0x52, _CM_PATH, bytes((0x0A, 0x0E)) + struct.pack("<H", len(request))
                                       + request + pad + b"\x01\x00\x01\x00")
                t = yield from rr(t, wrapped, reply, (0x52, 0x4C), (0x4C,))
            else:
                t = yield from rr(t, request, reply, (0x4C,), (0x4C,))
            t += rng.randint(500, 3_000)
        return t

    def write_tag(t: int) -> Generator[Packet, None, int]:
        name, (ctype, width) = rng.choice(dev.tags)
        request = _cip_request(0x4D, _epath_symbol(name), struct.pack("<HH", ctype, 1) + rng.randbytes(width))
        if style == "connected":
            return (yield from unit(t, request, _cip_reply(0x4D), (0x4D,), (0x4D,)))
        return (yield from rr(t, request, _cip_reply(0x4D), (0x4D,), (0x4D,)))

    if handshake:
        stats["handshakes"] += 1
        t = yield from c.handshake(t, rng)
        t += rng.randint(300, 3_000)
        if rng.random() < 0.3:
            item = dev.list_identity_item()
            t = yield from c.send(t, 0, _ENCAP.pack(0x63, 0, 0, 0, bytes(8), 0), _enip_counts(0x63))
            t = yield from c.send(t + latency, 1, _ENCAP.pack(0x63, len(item), 0, 0, bytes(8), 0) + item,
                                  _enip_counts(0x63))
            t += rng.randint(1_000, 5_000)
        t = yield from c.send(t, 0, _ENCAP.pack(0x65, 4, 0, 0, bytes(8), 0) + b"\x01\x00\x00\x00", _enip_counts(0x65))
        t = yield from c.send(t + latency, 1, _ENCAP.pack(0x65, 4, handle, 0, bytes(8), 0) + b"\x01\x00\x00\x00",
                              _enip_counts(0x65))
        stats["sessions"] += 1
        if style == "connected":
            stats["forward_opens"] += 1
            fo = (bytes((0x0A, 0x0E)) + struct.pack("<IIHHI", 0, t_o, conn_serial, 1, dev.serial ^ 0x5A5A)
                  + bytes((3, 0, 0, 0)) + struct.pack("<IHIH", 2_000_000, 0x43F4, 2_000_000, 0x43F4)
                  + bytes((0xA3, 3)) + b"\x01\x00" + _ROUTER_PATH)
            reply = struct.pack("<IIHHIIIBB", o_t, t_o, conn_serial, 1, dev.serial ^ 0x5A5A, 2_000_000, 2_000_000, 0, 0)
            t = yield from rr(t + rng.randint(1_000, 5_000), _cip_request(0x54, _CM_PATH, fo), _cip_reply(0x54, reply),
                              (0x54,), (0x54,))
        t += rng.randint(5_000, 50_000)
    cycle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        start = t
        t = yield from read_cycle(t)
        if rng.random() < 0.02 and style != "identity":
            stats["writes"] += 1
            t = yield from write_tag(t + rng.randint(1_000, 10_000))
        end = t
        t = max(end + 1_000, start + jitter(rng, period))
        if t - end > 150_000 and c.unacked(0):
            yield c.ack(end + 100_000, 0)
    if style == "connected":
        fc = bytes((0x0A, 0x0E)) + struct.pack("<HHI", conn_serial, 1, dev.serial ^ 0x5A5A) + bytes((3, 0)) \
            + b"\x01\x00" + _ROUTER_PATH
        reply = struct.pack("<HHIBB", conn_serial, 1, dev.serial ^ 0x5A5A, 0, 0)
        t = yield from rr(t, _cip_request(0x4E, _CM_PATH, fc), _cip_reply(0x4E, reply), (0x4E,), (0x4E,))
        t += rng.randint(1_000, 5_000)
    t = yield from c.send(t, 0, encap(0x66, b"", 0), _enip_counts(0x66))  # UnRegisterSession: no reply
    yield from c.close(t + rng.randint(1_000, 5_000), rng, reset=rng.random() < 0.1)


# =================================================================================================
# BACnet/IP (ASHRAE 135 Annex J): BVLC, NPDU (with routing to MS/TP networks), APDUs
# =================================================================================================
BACNET_PORT = 47808
PRESENT_VALUE, STATUS_FLAGS, OBJECT_NAME, UNITS = 85, 111, 77, 117
_REAL = struct.Struct(">f")


def _oid(obj_type: int, instance: int) -> bytes:
    return ((obj_type << 22) | instance).to_bytes(4, "big")


def _ctx(tag: int, value: bytes) -> bytes:
    """Context-tagged primitive (length <= 4)."""
    return bytes(((tag << 4) | 0x08 | len(value),)) + value


def _uint(v: int) -> bytes:
    return v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big")


def _bvlc(npdu_apdu: bytes, broadcast: bool) -> bytes:
    return bytes((0x81, 0x0B if broadcast else 0x0A)) + (4 + len(npdu_apdu)).to_bytes(2, "big") + npdu_apdu


def _bac_counts(kind: str, service: int) -> Counts:
    return (("bacnet", None), ("bacnet", f"{kind}:{service}"))


class BacnetDevice:
    """A controller: its device instance, IP host or MS/TP address behind a router, and its points."""

    def __init__(self, rng: random.Random, instance: int, host: Host, dnet: int | None, mac: int | None) -> None:
        self.instance = instance
        self.host = host  # the device itself, or the router in front of its MS/TP network
        self.dnet, self.mac = dnet, mac
        self.points = [(rng.choice((0, 0, 1, 2, 3, 4, 5, 19)), rng.randint(1, 200)) for _ in range(rng.randint(3, 30))]
        self.cov = rng.random() < 0.3
        self.vendor = rng.choice((5, 8, 15, 24, 36, 260))

    def npdu(self, to_device: bool, expecting_reply: bool = False, network: bool = False) -> bytes:
        """NPDU header: DNET/DADR towards a routed device, SNET/SADR on what the router relays back."""
        ctl = 0x04 if expecting_reply else 0x00
        if self.dnet is None:
            return bytes((0x01, ctl))
        if to_device:
            return bytes((0x01, ctl | 0x20)) + self.dnet.to_bytes(2, "big") + bytes((1, self.mac, 0xFF))
        return bytes((0x01, ctl | 0x08)) + self.dnet.to_bytes(2, "big") + bytes((1, self.mac))

    def value(self, rng: random.Random, obj_type: int) -> bytes:
        if obj_type in (0, 1, 2):
            return b"\x44" + _REAL.pack(rng.uniform(-50, 150))
        if obj_type in (3, 4, 5):
            return bytes((0x91, rng.getrandbits(1)))
        return bytes((0x21, rng.randint(1, 8)))


def bacnet_flows(rng: random.Random, n_packets: int, n_flows: int, stats: Counter[str]) -> list[Iterator[Packet]]:
    head_ends = [Host(f"10.80.0.{10 + i}", rng, windows=True, name="bms") for i in range(max(1, n_flows // 150))]
    devices: list[BacnetDevice] = []
    routers = [Host(f"10.81.0.{2 + i}", rng, name="router") for i in range(max(1, n_flows // 60))]
    for i in range(n_flows):
        if rng.random() < 0.35:  # an MS/TP device behind a BACnet/IP router
            router = rng.randrange(len(routers))
            devices.append(BacnetDevice(rng, 10_000 + i, routers[router], 1001 + router, 1 + i % 127))
        else:
            devices.append(BacnetDevice(rng, 10_000 + i, Host(f"10.81.{1 + i // 200}.{10 + i % 200}", rng,
                                                              name="controller"), None, None))
    periods = (1_000_000, 2_000_000, 5_000_000, 10_000_000)
    plans = [rng.choice(periods) for _ in devices]
    pps = sum(2.2e6 / p for p in plans) or 1.0
    duration = int(1e6 * n_packets / pps)
    out: list[Iterator[Packet]] = []
    for k, (dev, period) in enumerate(zip(devices, plans)):
        out.append(_bacnet_polling(rng, head_ends[k % len(head_ends)], dev, period, stats))
    for k, he in enumerate(head_ends):
        out.append(_bacnet_discovery(rng, he, devices[k::len(head_ends)], routers, duration, stats))
    return out


def _bacnet_polling(rng: random.Random, he: Host, dev: BacnetDevice, period: int, stats: Counter[str]
                    ) -> Iterator[Packet]:
    """The head-end polls one device: ReadProperty(Multiple), writes, COV subscription and notifications."""
    t = T0_US + rng.randint(0, period)
    latency = rng.randint(2_000, 60_000) if dev.dnet is not None else rng.randint(500, 10_000)
    invoke = rng.randrange(256)
    use_rpm = rng.random() < 0.6
    poll = rng.sample(dev.points, min(len(dev.points), rng.choice((1, 2, 4, 8))))

    def confirmed(t: int, service: int, request: bytes, reply: bytes, reply_type: int) -> Iterator[Packet]:
        """Confirmed request and its ACK (Simple 2, Complex 3) or Error (5)."""
        nonlocal invoke
        invoke = (invoke + 1) & 0xFF
        apdu = bytes((0x00, 0x05, invoke, service)) + request
        yield t, udp_frame(he, dev.host, BACNET_PORT, BACNET_PORT, _bvlc(dev.npdu(True, True) + apdu, False)), \
            _bac_counts("confirmed", service)
        answer = bytes((reply_type << 4, invoke, service)) + reply
        yield t + latency, udp_frame(dev.host, he, BACNET_PORT, BACNET_PORT,
                                     _bvlc(dev.npdu(False) + answer, False)), _bac_counts("confirmed", service)

    if dev.cov:  # subscribe to the COV of the first point (lifetime 300 s), confirmed by a Simple-ACK
        obj = _oid(*poll[0])
        yield from confirmed(t, 5, _ctx(0, b"\x01") + _ctx(1, obj) + _ctx(2, b"\x00") + _ctx(3, _uint(300)), b"", 2)
        t += latency + 10_000
    while True:
        r = rng.random()
        if r < 0.003:  # a property the device does not have: Error (property, unknown-property)
            stats["errors"] += 1
            obj_type, inst = rng.choice(dev.points)
            yield from confirmed(t, 12, _ctx(0, _oid(obj_type, inst)) + _ctx(1, _uint(rng.choice((4000, 512, 1234)))),
                                 b"\x91\x02\x91\x20", 5)
        elif r < 0.013:
            stats["writes"] += 1
            obj_type, inst = rng.choice([p for p in dev.points if p[0] in (1, 2, 4, 5)] or dev.points)
            req = _ctx(0, _oid(obj_type, inst)) + _ctx(1, _uint(PRESENT_VALUE)) + b"\x3e" + dev.value(rng, obj_type) \
                + b"\x3f" + _ctx(4, b"\x08")
            yield from confirmed(t, 15, req, b"", 2)
        elif use_rpm:
            req, ack = bytearray(), bytearray()
            for obj_type, inst in poll:
                oid = _ctx(0, _oid(obj_type, inst))
                props = (PRESENT_VALUE, STATUS_FLAGS) if rng.random() < 0.5 else (PRESENT_VALUE,)
                req += oid + b"\x1e" + b"".join(_ctx(0, _uint(p)) for p in props) + b"\x1f"
                ack += oid + b"\x1e"
                for p in props:
                    value = dev.value(rng, obj_type) if p == PRESENT_VALUE else b"\x82\x04\x00"
                    ack += _ctx(2, _uint(p)) + b"\x4e" + value + b"\x4f"
                ack += b"\x1f"
            yield from confirmed(t, 14, bytes(req), bytes(ack), 3)
        else:
            for obj_type, inst in poll:
                head = _ctx(0, _oid(obj_type, inst)) + _ctx(1, _uint(PRESENT_VALUE))
                yield from confirmed(t, 12, head, head + b"\x3e" + dev.value(rng, obj_type) + b"\x3f", 3)
                t += latency + rng.randint(1_000, 20_000)
        if dev.cov and rng.random() < 0.3:  # a change of value, reported unconfirmed
            stats["cov_notifications"] += 1
            obj_type, inst = poll[0]
            body = (_ctx(0, b"\x01") + _ctx(1, _oid(8, dev.instance)) + _ctx(2, _oid(obj_type, inst))
                    + _ctx(3, _uint(rng.randint(1, 300))) + b"\x4e" + _ctx(0, _uint(PRESENT_VALUE)) + b"\x2e"
                    + dev.value(rng, obj_type) + b"\x2f" + _ctx(0, _uint(STATUS_FLAGS)) + b"\x2e\x82\x04\x00\x2f\x4f")
            yield t + period // 2, udp_frame(dev.host, he, BACNET_PORT, BACNET_PORT,
                                             _bvlc(dev.npdu(False) + b"\x10\x02" + body, False)), \
                _bac_counts("unconfirmed", 2)
        t += jitter(rng, period)


def _bacnet_discovery(rng: random.Random, he: Host, devices: list[BacnetDevice], routers: list[Host], duration: int,
                      stats: Counter[str]) -> Iterator[Packet]:
    """Who-Is broadcasts answered by I-Am, Who-Has / I-Have, time sync, router discovery."""
    t = T0_US + rng.randint(0, 2_000_000)
    bcast = he.ipb[:2] + b"\xff\xff"
    while True:
        r = rng.random()
        if r < 0.6:
            stats["who_is"] += 1
            yield t, udp_frame(he, None, BACNET_PORT, BACNET_PORT, _bvlc(b"\x01\x20\xff\xff\x00\xff\x10\x08", True),
                               broadcast_ip=bcast), _bac_counts("unconfirmed", 8)
            for dev in rng.sample(devices, min(len(devices), 40)):
                t += rng.randint(500, 20_000)
                vendor = _uint(dev.vendor)  # I-Am: device id, max APDU 1476, no segmentation, vendor id
                iam = b"\x10\x00\xc4" + _oid(8, dev.instance) + b"\x22\x05\xc4\x91\x03" + bytes((0x20 | len(vendor),)) + vendor
                yield t, udp_frame(dev.host, None, BACNET_PORT, BACNET_PORT, _bvlc(dev.npdu(False) + iam, True),
                                   broadcast_ip=bcast), _bac_counts("unconfirmed", 0)
        elif r < 0.75:
            stats["who_has"] += 1
            dev = rng.choice(devices)
            obj = _oid(*rng.choice(dev.points))
            yield t, udp_frame(he, None, BACNET_PORT, BACNET_PORT, _bvlc(b"\x01\x00\x10\x07\x2c" + obj, True),
                               broadcast_ip=bcast), _bac_counts("unconfirmed", 7)
            name = f"AHU-{dev.instance}".encode()
            ihave = b"\x10\x01\xc4" + _oid(8, dev.instance) + b"\xc4" + obj + bytes((0x75, len(name) + 1, 0)) + name
            yield t + rng.randint(1_000, 30_000), udp_frame(dev.host, None, BACNET_PORT, BACNET_PORT,
                                                            _bvlc(dev.npdu(False) + ihave, True), broadcast_ip=bcast), \
                _bac_counts("unconfirmed", 1)
        elif r < 0.85:
            stats["time_syncs"] += 1
            body = b"\x10\x06\xa4" + bytes((126, 1, 1, 4)) + b"\xb4" + bytes((rng.randrange(24), rng.randrange(60), 0, 0))
            yield t, udp_frame(he, None, BACNET_PORT, BACNET_PORT, _bvlc(b"\x01\x00" + body, True),
                               broadcast_ip=bcast), _bac_counts("unconfirmed", 6)
        else:
            stats["router_discovery"] += 1  # network layer messages: no APDU, nothing counted
            yield t, udp_frame(he, None, BACNET_PORT, BACNET_PORT, _bvlc(b"\x01\x80\x00", True), broadcast_ip=bcast), NONE
            for k, router in enumerate(routers):
                t += rng.randint(500, 5_000)
                msg = b"\x01\x80\x01" + (1001 + k).to_bytes(2, "big")
                yield t, udp_frame(router, None, BACNET_PORT, BACNET_PORT, _bvlc(msg, True), broadcast_ip=bcast), NONE
        t += max(2_000_000, duration // 30) + rng.randint(0, 1_000_000)


# =================================================================================================
# OPC UA binary (Part 6): UA TCP (HEL/ACK), secure conversation with security policy None
# =================================================================================================
_UA_HEAD = struct.Struct("<3sBI")
_UA_SYM = struct.Struct("<IIII")  # secure channel id, token id, sequence number, request id
_UA_NONE_POLICY = b"http://opcfoundation.org/UA/SecurityPolicy#None"
_UA_NULL_EXT = b"\x00\x00\x00"  # null ExtensionObject: NodeId 0 (two-byte), no body
_UA_EPOCH_OFFSET = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
READ_REQ, READ_RSP, WRITE_REQ, WRITE_RSP, BROWSE_REQ, BROWSE_RSP = 631, 634, 673, 676, 527, 530
PUBLISH_REQ, PUBLISH_RSP = 826, 829


def _ua_string(s: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if s is None else struct.pack("<i", len(s)) + s


def _ua_time(t_us: int) -> bytes:
    return struct.pack("<q", (t_us + _UA_EPOCH_OFFSET * 1_000_000) * 10)


def _ua_node(ident: int, ns: int = 0) -> bytes:
    """Smallest NodeId encoding for a numeric id (two-byte, four-byte or numeric)."""
    if ns == 0 and ident < 256:
        return bytes((0x00, ident))
    if ns < 256 and ident < 65536:
        return struct.pack("<BBH", 0x01, ns, ident)
    return struct.pack("<BHI", 0x02, ns, ident)


def _ua_string_node(ns: int, name: bytes) -> bytes:
    return struct.pack("<BH", 0x03, ns) + _ua_string(name)


def _ua_counts(service: int | None) -> Counts:
    return (("opcua", None), ("opcua", str(service))) if service is not None else (("opcua", None),)


class UaServer:
    """An OPC UA server's address space as a client sees it: the variables it reads and writes."""

    def __init__(self, rng: random.Random, host: Host) -> None:
        self.url = f"opc.tcp://{host.ip}:4840".encode()
        self.nodes = [_ua_string_node(2, f"{rng.choice(('Line1', 'Line2', 'Boiler', 'Press'))}.{rng.choice(('Temp', 'Speed', 'Pressure', 'Count', 'State'))}{i}".encode())
                      if rng.random() < 0.6 else _ua_node(rng.randint(1000, 60000), 2) for i in range(rng.randint(5, 40))]


def opcua_flows(rng: random.Random, n_packets: int, n_flows: int, stats: Counter[str]) -> list[Iterator[Packet]]:
    plant = Plant(rng, n_flows, 90, "ua-server")
    periods, duration = plant.poll_periods(n_packets, n_flows, (100_000, 250_000, 500_000, 1_000_000, 2_000_000),
                                           packets_per_cycle=2.2)
    servers = {id(d): UaServer(rng, d) for d in plant.devices}
    return [_opcua_connection(rng, client, server, servers[id(server)], t, handshake, cycles, period, stats)
            for client, server, t, handshake, cycles, period in plant.schedule(n_flows, duration, periods)]


def _opcua_connection(rng: random.Random, client: Host, server: Host, ua: UaServer, t: int, handshake: bool,
                      cycles: int | None, period: int, stats: Counter[str]) -> Iterator[Packet]:
    c = open_connection(rng, client, server, 4840, stats)
    latency = rng.randint(300, 10_000)
    channel = rng.getrandbits(32) | 1
    token = rng.getrandbits(32) | 1
    seq = [rng.randrange(1, 1 << 30), rng.randrange(1, 1 << 30)]  # sequence number per direction
    request_id = rng.randrange(1, 1 << 30)
    handle = rng.randrange(1, 1 << 20)
    auth = struct.pack("<BHI", 0x02, 1, rng.getrandbits(32))  # the session's authentication token
    subscribe = rng.random() < 0.35
    poll = rng.sample(ua.nodes, min(len(ua.nodes), rng.choice((1, 2, 4, 6, 12))))
    split_big = rng.random() < 0.2

    def request_header(t: int, token: bytes = auth) -> bytes:
        nonlocal handle
        handle += 1
        return token + _ua_time(t) + struct.pack("<II", handle, 0) + _ua_string(None) + struct.pack("<I", 10_000) \
            + _UA_NULL_EXT

    def response_header(t: int, status: int = 0) -> bytes:
        return _ua_time(t) + struct.pack("<II", handle, status) + b"\x00" + struct.pack("<i", -1) + _UA_NULL_EXT

    def chunk(kind: bytes, d: int, rid: int, body: bytes, security: bytes) -> bytes:
        s = seq[d]
        seq[d] += 1
        inner = security + struct.pack("<II", s, rid) + body
        return _UA_HEAD.pack(kind, ord("F"), 8 + len(inner)) + inner

    def message(t: int, service: int, body: bytes, reply_service: int | None, reply_body: bytes = b"",
                kind: bytes = b"MSG") -> Generator[Packet, None, int]:
        """One request chunk and (unless ``reply_service`` is None) its response, same request id."""
        nonlocal request_id
        request_id += 1
        if kind == b"OPN":
            security = struct.pack("<I", 0 if service == 446 else channel) + _ua_string(_UA_NONE_POLICY) \
                + _ua_string(None) + _ua_string(None)
        else:
            security = struct.pack("<II", channel, token)
        req = chunk(kind, 0, request_id, _ua_node(service) + body, security)
        t = yield from c.send(t, 0, req, _ua_counts(service))
        if reply_service is None:
            return t
        if kind == b"OPN":
            security = struct.pack("<I", channel) + security[4:]
        rsp = chunk(kind, 1, request_id, _ua_node(reply_service) + reply_body, security)
        cuts = (rng.randint(30, len(rsp) - 10),) if split_big and len(rsp) > 200 and rng.random() < 0.2 else ()
        return (yield from c.send(t + latency + rng.randint(0, 1_000), 1, rsp, _ua_counts(reply_service), cuts))

    def value() -> bytes:
        return b"\x05\x0b" + struct.pack("<d", rng.uniform(-100, 1000)) + _ua_time(t)  # Double + source time

    def read(t: int) -> Generator[Packet, None, int]:
        body = request_header(t) + struct.pack("<dI", 0.0, 0) + struct.pack("<i", len(poll)) + b"".join(
            n + struct.pack("<I", 13) + _ua_string(None) + b"\x00\x00" + _ua_string(None) for n in poll)
        reply = response_header(t) + struct.pack("<i", len(poll)) + b"".join(value() for _ in poll) + struct.pack("<i", 0)
        return (yield from message(t, READ_REQ, body, READ_RSP, reply))

    def write(t: int) -> Generator[Packet, None, int]:
        node = rng.choice(ua.nodes)
        body = request_header(t) + struct.pack("<i", 1) + node + struct.pack("<I", 13) + _ua_string(None) \
            + b"\x01\x0b" + struct.pack("<d", rng.uniform(0, 100))
        return (yield from message(t, WRITE_REQ, body, WRITE_RSP,
                                   response_header(t) + struct.pack("<iI", 1, 0) + struct.pack("<i", 0)))

    def browse(t: int) -> Generator[Packet, None, int]:
        body = request_header(t) + b"\x00\x00" + struct.pack("<qI", 0, 0) + struct.pack("<I", 0) + struct.pack("<i", 1) \
            + _ua_node(85) + struct.pack("<I", 0) + _ua_node(33) + b"\x01" + struct.pack("<II", 0, 63)
        refs = b""
        for n in poll[:4]:
            name = b"Var"
            refs += _ua_node(47) + b"\x01" + n + struct.pack("<H", 2) + _ua_string(name) + b"\x02" + _ua_string(name) \
                + struct.pack("<I", 2) + _ua_node(63)
        reply = response_header(t) + struct.pack("<i", 1) + struct.pack("<I", 0) + _ua_string(None) \
            + struct.pack("<i", len(poll[:4])) + refs + struct.pack("<i", 0)
        return (yield from message(t, BROWSE_REQ, body, BROWSE_RSP, reply))

    def publish(t: int, sub_id: int, ack_seq: int, pub_seq: int, wait: int) -> Generator[Packet, None, int]:
        """A Publish request answered (after ``wait``) by a data change notification for the monitored items."""
        nonlocal request_id
        request_id += 1
        acks = struct.pack("<iII", 1, sub_id, ack_seq) if ack_seq else struct.pack("<i", 0)
        security = struct.pack("<II", channel, token)
        req = chunk(b"MSG", 0, request_id, _ua_node(PUBLISH_REQ) + request_header(t) + acks, security)
        t = yield from c.send(t, 0, req, _ua_counts(PUBLISH_REQ))
        changed = rng.sample(range(len(poll)), rng.randint(1, len(poll)))
        items = struct.pack("<i", len(changed)) + b"".join(struct.pack("<I", k + 1) + value() for k in changed) \
            + struct.pack("<i", 0)
        notification = _ua_node(811) + b"\x01" + struct.pack("<i", len(items)) + items
        reply = response_header(t) + struct.pack("<I", sub_id) + struct.pack("<iI", 1, pub_seq) + b"\x00" \
            + struct.pack("<I", pub_seq) + _ua_time(t) + struct.pack("<i", 1) + notification \
            + (struct.pack("<iI", 1, 0) if ack_seq else struct.pack("<i", 0)) + struct.pack("<i", 0)
        rsp = chunk(b"MSG", 1, request_id, _ua_node(PUBLISH_RSP) + reply, security)
        return (yield from c.send(t + wait, 1, rsp, _ua_counts(PUBLISH_RSP)))

    sub_id = rng.randint(1, 1000)
    if handshake:
        stats["handshakes"] += 1
        t = yield from c.handshake(t, rng)
        t += rng.randint(300, 3_000)
        hel = struct.pack("<IIIII", 0, 65535, 65535, 0, 0) + _ua_string(ua.url)
        t = yield from c.send(t, 0, _UA_HEAD.pack(b"HEL", ord("F"), 8 + len(hel)) + hel, _ua_counts(None))
        ack = struct.pack("<IIIII", 0, 65535, 65535, 16_777_216, 5000)
        t = yield from c.send(t + latency, 1, _UA_HEAD.pack(b"ACK", ord("F"), 8 + len(ack)) + ack, _ua_counts(None))
        opn = request_header(t, b"\x00\x00") + struct.pack("<III", 0, 0, 1) + _ua_string(b"") + struct.pack("<I", 3_600_000)
        opn_reply = response_header(t) + struct.pack("<IIIq", 0, channel, token, 0)[:12] + _ua_time(t) \
            + struct.pack("<I", 3_600_000) + _ua_string(b"")
        t = yield from message(t + 1_000, 446, opn, 449, opn_reply, kind=b"OPN")
        name = b"urn:" + client.ip.encode() + b":scada"
        create = request_header(t, b"\x00\x00") + _ua_string(name) + _ua_string(b"urn:icswatch:bench") + b"\x02" \
            + _ua_string(b"SCADA") + struct.pack("<I", 1) + _ua_string(None) + _ua_string(None) + struct.pack("<i", -1) \
            + _ua_string(None) + _ua_string(ua.url) + _ua_string(b"session-" + name) + _ua_string(rng.randbytes(32)) \
            + _ua_string(None) + struct.pack("<dI", 1_200_000.0, 0)
        created = response_header(t) + _ua_node(rng.getrandbits(32), 1) + auth + struct.pack("<d", 1_200_000.0) \
            + _ua_string(rng.randbytes(32)) + _ua_string(None) + struct.pack("<ii", 0, 0) + _ua_string(None) \
            + _ua_string(None) + struct.pack("<I", 0)
        t = yield from message(t + 1_000, 461, create, 464, created)
        anonymous = _ua_node(321) + b"\x01" + struct.pack("<i", 13) + _ua_string(b"anonymous")
        activate = request_header(t) + _ua_string(None) + _ua_string(None) + struct.pack("<i", 0) \
            + struct.pack("<i", 1) + _ua_string(b"en") + anonymous + _ua_string(None) + _ua_string(None)
        t = yield from message(t + 1_000, 467, activate, 470,
                               response_header(t) + _ua_string(rng.randbytes(32)) + struct.pack("<ii", 0, 0))
        stats["sessions"] += 1
        if subscribe:
            body = request_header(t) + struct.pack("<dIIIBB", period / 1000, 1000, 10, 0, 1, 0)
            t = yield from message(t + 1_000, 787, body, 790,
                                   response_header(t) + struct.pack("<IdII", sub_id, period / 1000, 1000, 10))
            items = b"".join(n + struct.pack("<I", 13) + _ua_string(None) + b"\x00\x00" + _ua_string(None)
                             + struct.pack("<I", 2)  # monitoring mode: reporting
                             # parameters: client handle, sampling interval, no filter, queue size, discard oldest
                             + struct.pack("<Id", k + 1, period / 1000) + _UA_NULL_EXT + struct.pack("<IB", 1, 1)
                             for k, n in enumerate(poll))
            body = request_header(t) + struct.pack("<II", sub_id, 0) + struct.pack("<i", len(poll)) + items
            reply = response_header(t) + struct.pack("<i", len(poll)) + b"".join(
                struct.pack("<IIdI", 0, 100 + k, period / 1000, 1) + _UA_NULL_EXT for k in range(len(poll))) \
                + struct.pack("<i", 0)
            t = yield from message(t + 1_000, 751, body, 754, reply)
        t += rng.randint(5_000, 50_000)
    cycle = 0
    pub_seq = rng.randint(1, 1000)
    while cycles is None or cycle < cycles:
        cycle += 1
        start = t
        if subscribe:
            t = yield from publish(t, sub_id, pub_seq - 1 if cycle > 1 else 0, pub_seq, jitter(rng, period))
            pub_seq += 1
        else:
            t = yield from read(t)
        r = rng.random()
        if r < 0.01:
            stats["writes"] += 1
            t = yield from write(t + rng.randint(1_000, 10_000))
        elif r < 0.015:
            stats["browses"] += 1
            t = yield from browse(t + rng.randint(1_000, 10_000))
        end = t
        t = max(end + 500, start + (0 if subscribe else jitter(rng, period)))
        if t - end > 150_000 and c.unacked(0):
            yield c.ack(end + 100_000, 0)
        elif subscribe and c.unacked(0) and rng.random() < 0.5:
            yield c.ack(end + 200, 0)
    if handshake or rng.random() < 0.5:
        t = yield from message(t, 473, request_header(t) + b"\x01", 476, response_header(t))
        t = yield from message(t + 1_000, 452, request_header(t), None, kind=b"CLO")
    yield from c.close(t + 1_000, rng, reset=rng.random() < 0.1)


# =================================================================================================
# Registry and command line
# =================================================================================================
FlowsFn = Callable[[random.Random, int, int, Counter], list]
GENERATORS: dict[str, tuple[FlowsFn, int, tuple[str, ...]]] = {
    # name: (flows function, default connections, protocols counted in the truth)
    "dnp3": (dnp3_flows, 400, ("dnp3",)),
    "s7comm": (s7_flows, 400, ("s7comm", "cotp")),
    "iec104": (iec104_flows, 400, ("iec104",)),
    "enip": (enip_flows, 400, ("enip", "cip")),
    "bacnet": (bacnet_flows, 600, ("bacnet",)),
    "opcua": (opcua_flows, 400, ("opcua",)),
}


def default_path(name: str, packets: int, flows: int, seed: int) -> Path:
    return BENCH / "out" / f"{name}-{packets}-f{flows}-s{seed}.pcap"


def generate(name: str, out: Path, packets: int = DEFAULT_PACKETS, flows: int | None = None, seed: int = 1) -> dict[str, Any]:
    """Write the ``name`` capture to ``out`` and its truth next to it; return the truth dict."""
    flows_fn, default_flows, protocols = GENERATORS[name]
    flows = flows or default_flows
    rng = random.Random(f"{name}-{seed}")
    stats: Counter[str] = Counter()
    packet_iter = merge(flows_fn(rng, packets, flows, stats), packets)
    meta = {"name": f"gen_protocols.{name}", "version": GENERATOR_VERSION, "packets": packets, "flows": flows,
            "seed": seed, "format": "pcap"}
    return write_capture(out, packet_iter, protocols, meta, stats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocol", choices=sorted(GENERATORS) + ["all"])
    ap.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help=f"packets per capture (default {DEFAULT_PACKETS:,})")
    ap.add_argument("--flows", type=int, help="connections (default: per protocol)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, help="output file (one protocol only)")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    names = sorted(GENERATORS) if a.protocol == "all" else [a.protocol]
    if a.output and len(names) > 1:
        ap.error("-o needs a single protocol")
    for name in names:
        flows = a.flows or GENERATORS[name][1]
        out = a.output or default_path(name, a.packets, flows, a.seed)
        truth = generate(name, out, a.packets, flows, a.seed)
        if not a.quiet:
            g = truth["generator"]
            counts = ", ".join(f"{p} {v['pdus']:,} PDUs" for p, v in truth["protocols"].items())
            print(f"{out}: {truth['packets']:,} packets, {counts}, {g['bytes'] / 1e6:.1f} MB in {g['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
