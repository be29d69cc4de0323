"""The hostile captures, one function per scenario: ``scenario(out, size) -> Written``.

Each writes a classic pcap at ``out`` (and, with ``victims_out``, the same victim traffic alone, for a
baseline run) in which hostile traffic and real ICS traffic (``tools/hostile/victims.py``) share the
timeline. ``size`` scales the hostile part (its unit is in each docstring); the CI tests use small
sizes, ``bench/hostile.py`` the full ones (``FULL_SIZE``). Deterministic: same size, same bytes.

Hostile hosts are in 172.16.0.0/12, victims in 10.0.0.0/8. The hostile part starts at ``T0 + 1``;
the Modbus poller runs from ``T0 + 0.5`` until after the flood; the rule captures are placed at 70%
of the flood, when the caps are being hit.
"""

from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tools.hostile.victims import PLC, SCADA, Record, TcpConversation, Victims
from tools.hostile.wire import TCP_ACK, TCP_PSH, TCP_SYN, PcapFile, ip, ipv4_fragment_frame, tcp_frame

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the clock of the crafted captures (tools/pcapgen)
HOSTILE_BASE = int.from_bytes(ip("172.16.0.0"), "big")
YEAR_2100 = 4_102_444_800.0  # 2100-01-01T00:00:00Z


@dataclass
class Written:
    """What a scenario wrote and what the sensor must still do with it."""

    scenario: str
    path: Path
    packets: int = 0
    hostile_packets: int = 0
    victim_packets: int = 0
    victim_hosts: set[str] = field(default_factory=set)
    victim_alerts: dict[str, int] = field(default_factory=dict)  # rule id -> alerts the victims fire alone
    poll_events: int = 0  # events of the Modbus poller
    params: dict[str, object] = field(default_factory=dict)


def hostile_ip(n: int) -> bytes:
    """The n-th hostile address in 172.16.0.0/12 (wraps after a million)."""
    return (HOSTILE_BASE + (n % 0xFFFFE) + 1).to_bytes(4, "big")


def _write(
    name: str,
    out: Path,
    hostile: Iterable[Record],
    victims: Victims,
    victims_out: Path | None,
    params: dict[str, object],
    *,
    merge: bool = True,
) -> Written:
    """Write hostile and victim records in time order (``merge=False``: hostile order kept as given,
    the victims already being part of it) and, optionally, the victims alone."""
    written = Written(
        name,
        Path(out),
        victim_hosts=set(victims.hosts),
        victim_alerts=dict(victims.alerts),
        poll_events=victims.poll_events,
        params=params,
    )
    victim_records = victims.sorted()
    with PcapFile(out) as pcap:
        hostile_count = 0

        def counted(records: Iterable[Record]) -> Iterator[Record]:
            nonlocal hostile_count
            for r in records:
                hostile_count += 1
                yield r

        stream = heapq.merge(counted(hostile), victim_records, key=lambda r: r[0]) if merge else counted(hostile)
        for ts, frame in stream:
            pcap.write(ts, frame)
        written.packets = pcap.packets
    written.hostile_packets = hostile_count
    written.victim_packets = written.packets - hostile_count if merge else len(victim_records)
    if victims_out is not None:
        with PcapFile(victims_out) as pcap:
            for ts, frame in victim_records:
                pcap.write(ts, frame)
    return written


def _victims(duration: float, rules: Iterable[str]) -> Victims:
    victims = Victims()
    victims.add_poller(T0 + 0.5, T0 + 1 + duration + 0.5)
    for rule in rules:
        victims.add_rule_capture(rule, T0 + 1 + 0.7 * duration)
    return victims


# --------------------------------------------------------------------------------------------- SYN flood
def syn_flood(out: Path, size: int = 10_000, victims_out: Path | None = None) -> Written:
    """``size`` SYNs, each opening a distinct flow (spoofed sources, random ports) to the ICS ports of
    the victim plant, 100,000 per second. Hits ``sensor.max_flows`` (flow_cap_evictions); every SYN to
    a registered port is a ``connection_attempt`` event."""
    rate = 100_000.0
    duration = size / rate
    ports = (502, 502, 502, 102, 20000, 44818, 2404, 4840)
    targets = (ip(PLC), ip("10.0.20.10"), ip("10.10.1.10"), ip("10.0.30.10"))

    def hostile() -> Iterator[Record]:
        rng = random.Random(1)
        start = T0 + 1
        for i in range(size):
            src = hostile_ip(i // 64)
            sport = 1024 + (i % 64) * 997 % 60000
            dst = targets[i % len(targets)]
            yield (
                start + i / rate,
                tcp_frame(src, dst, sport, ports[i % len(ports)], rng.getrandbits(32), 0, TCP_SYN, ident=i & 0xFFFF),
            )

    victims = _victims(duration, ["modbus-write-unauthorized-master", "dnp3-direct-operate"])
    return _write("syn_flood", out, hostile(), victims, victims_out, {"syns": size, "rate": rate})


# ------------------------------------------------------------------------------------ reassembly gaps
def gap_flood(
    out: Path, size: int = 500, victims_out: Path | None = None, segments: int = 32, seg_bytes: int = 1400
) -> Written:
    """``size`` TCP connections to S7 (port 102), each with a hole at its first data byte followed by
    ``segments`` segments of ``seg_bytes`` that can never be delivered: every connection holds a
    reassembly gap until the end of the capture. Per flow this stays under ``sensor.max_flow_buffer``;
    the total is what ``sensor.max_buffered_bytes`` must cap (buffered_bytes_cap, tcp_gap)."""
    per_second = 20_000.0
    rounds = segments + 1
    duration = size * rounds / per_second

    def hostile() -> Iterator[Record]:
        t = T0 + 1
        dt = 1 / per_second
        convs = []
        for i in range(size):
            conv = TcpConversation(
                _dotted(hostile_ip(i)), 20000 + i % 40000, "10.10.1.10", 102, isn_c=i * 7919, isn_s=i * 104729
            )
            yield from conv.handshake(t)
            t += dt
            conv.seq[0] += 100  # the hole: these 100 bytes are never sent
            convs.append(conv)
        payload = bytes(range(256)) * (seg_bytes // 256 + 1)
        for k in range(segments):
            for conv in convs:
                yield conv.send(True, payload[:seg_bytes], t)
                t += dt

    victims = _victims(duration, ["s7-plc-stop", "modbus-write-unauthorized-master"])
    return _write(
        "gap_flood", out, hostile(), victims, victims_out, {"flows": size, "segments": segments, "seg_bytes": seg_bytes}
    )


def _dotted(addr: bytes) -> str:
    return ".".join(str(b) for b in addr)


# ----------------------------------------------------------------------------- overlapping retransmits
def overlap_flood(out: Path, size: int = 20_000, victims_out: Path | None = None, flows: int = 2) -> Written:
    """``size`` segments over ``flows`` Modbus connections, endlessly overlapping: out-of-order
    segments of 1 to 64 bytes behind a hole that never fills, each starting a few bytes after the
    last (every segment overlaps its neighbours, a third of them with different bytes), the last one
    re-sent at the same place with other bytes, and in-order retransmissions that partly overlap what
    was delivered. Hits the per-stream segment cap (tcp_buffer_cap, ``MAX_SEGMENTS`` in
    sensor/reassembly.py), tcp_overlap, tcp_overlap_conflict, tcp_retransmission."""
    per_second = 50_000.0
    duration = size / per_second

    def hostile() -> Iterator[Record]:
        rng = random.Random(3)
        t = T0 + 1
        convs = []
        for i in range(flows):
            conv = TcpConversation(_dotted(hostile_ip(i)), 30000 + i, PLC, 502, isn_c=0xFFFFF000 + i, isn_s=i)
            yield from conv.handshake(t)
            t += 0.001
            convs.append(conv)
        base = [c.seq[0] for c in convs]  # the first data byte, never sent: the hole
        cursor = [0] * flows
        last: list[tuple[int, int]] = [(base[f] + 1, 1) for f in range(flows)]  # the last buffered segment
        for n in range(size):
            f = n % flows
            conv = convs[f]
            if n % 5 == 4:
                # an in-order-looking retransmission overlapping bytes already before the hole
                seq = base[f] - rng.randint(1, 40)
                data = bytes([rng.randrange(256)]) * rng.randint(1, 80)
            elif n % 7 == 3:
                # the last out-of-order segment again, at the same place, with other bytes
                seq, length = last[f]
                data = bytes([0x5A]) * length
            else:
                cursor[f] += rng.randint(1, 24)
                seq = base[f] + 1 + cursor[f]
                fill = 0x41 if n % 3 else rng.randrange(256)  # a third conflict with the first copy
                data = bytes([fill]) * rng.randint(1, 64)
                last[f] = (seq, len(data))
            yield (
                t,
                tcp_frame(conv.client, conv.server, conv.cport, conv.sport, seq, conv.seq[1], TCP_PSH | TCP_ACK, data),
            )
            t += 1 / per_second

    victims = _victims(duration, ["modbus-write-unauthorized-master"])
    return _write("overlap_flood", out, hostile(), victims, victims_out, {"segments": size, "flows": flows})


# ------------------------------------------------------------------------------------------------ DNP3
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return table


_DNP_CRC = _crc_table()


def dnp3_crc(data: bytes) -> bytes:
    """CRC-16/DNP (IEEE 1815 9.2.4.1.3), complemented, low octet first."""
    crc = 0
    for b in data:
        crc = (crc >> 8) ^ _DNP_CRC[(crc ^ b) & 0xFF]
    return struct.pack("<H", crc ^ 0xFFFF)


@lru_cache(maxsize=4096)  # a flood repeats the same frames on every connection
def dnp3_link_frame(dst: int, src: int, user_data: bytes, ctl: int = 0xC4) -> bytes:
    """A link frame (primary, unconfirmed user data by default) with every CRC in place."""
    if not 1 <= len(user_data) <= 250:
        raise ValueError("a link frame carries 1 to 250 octets of user data")
    head = struct.pack("<BBBBHH", 0x05, 0x64, 5 + len(user_data), ctl, dst, src)
    out = bytearray(head + dnp3_crc(head))
    for i in range(0, len(user_data), 16):
        block = user_data[i : i + 16]
        out += block + dnp3_crc(block)
    return bytes(out)


def dnp3_fragment_flood(
    out: Path, size: int = 200, victims_out: Path | None = None, links: int = 20, segments: int = 8
) -> Written:
    """``size`` DNP3/TCP connections (port 20000); on each, ``links`` source/destination link address
    pairs open an application fragment (transport FIR without FIN) and feed it ``segments`` more
    249-octet transport segments, never the final one. One connection in fifty also pushes one
    fragment past 64 KiB. Hits the per-flow link table cap (dnp3_reassembly_table_cap), the fragment
    cap (dnp3_reassembly_overflow) and the global budget (buffered_bytes_cap)."""
    per_second = 20_000.0
    app = bytes([0xC0, 0x01]) + bytes(range(247))  # AC (FIR, FIN of the *application* fragment), FC read, junk
    rounds_per_flow = links * (segments + 1)
    duration = size * rounds_per_flow / per_second / 5 + 0.5

    def hostile() -> Iterator[Record]:
        t = T0 + 1
        dt = 5 / per_second  # five link frames per TCP segment
        for i in range(size):
            conv = TcpConversation(
                _dotted(hostile_ip(i)), 40000 + i % 20000, "10.0.20.10", 20000, isn_c=i * 31, isn_s=i * 37
            )
            yield from conv.handshake(t)
            frames = []
            for k in range(links):
                frames.append(dnp3_link_frame(10, 100 + k, bytes([0x40]) + app))  # FIR, seq 0
            long_one = i % 50 == 0
            for s in range(1, (270 if long_one else segments) + 1):
                for k in range(links) if s <= segments else (links - 1,):  # the youngest link goes on
                    frames.append(dnp3_link_frame(10, 100 + k, bytes([s & 0x3F]) + app[:249]))  # neither FIR nor FIN
            for j in range(0, len(frames), 5):
                t += dt
                yield conv.send(True, b"".join(frames[j : j + 5]), t)

    victims = _victims(duration, ["dnp3-direct-operate", "modbus-write-unauthorized-master"])
    return _write(
        "dnp3_fragment_flood",
        out,
        hostile(),
        victims,
        victims_out,
        {"flows": size, "links": links, "segments": segments},
    )


# --------------------------------------------------------------------------------------------- OPC UA
def opcua_chunk(chunk_type: bytes, request_id: int, sequence: int, body: bytes, channel: int = 7) -> bytes:
    """A MSG chunk (OPC UA Part 6 6.7.2) with symmetric header and sequence header, in clear."""
    size = 24 + len(body)
    return b"MSG" + chunk_type + struct.pack("<IIIII", size, channel, 1, sequence, request_id) + body


def opcua_chunk_flood(
    out: Path,
    size: int = 200,
    victims_out: Path | None = None,
    messages: int = 20,
    chunks: int = 2,
    chunk_bytes: int = 4096,
) -> Written:
    """``size`` OPC UA connections (port 4840); on each, ``messages`` request ids each get ``chunks``
    intermediate chunks ('C') of ``chunk_bytes`` and never their final chunk. Hits the per-connection
    open-message cap (opcua_reassembly_cap) and the global budget (buffered_bytes_cap)."""
    per_second = 20_000.0
    duration = size * messages * chunks / per_second + 0.5
    body = bytes(range(256)) * (chunk_bytes // 256 + 1)

    def hostile() -> Iterator[Record]:
        t = T0 + 1
        dt = 1 / per_second
        for i in range(size):
            conv = TcpConversation(
                _dotted(hostile_ip(i)), 41000 + i % 20000, "10.0.40.10", 4840, isn_c=i * 41, isn_s=i * 43
            )
            yield from conv.handshake(t)
            seq = 1
            for c in range(chunks):
                for m in range(messages):
                    t += dt
                    yield conv.send(True, opcua_chunk(b"C", 1000 + m, seq, body[:chunk_bytes]), t)
                    seq += 1

    victims = _victims(duration, ["opcua-anonymous-session", "modbus-write-unauthorized-master"])
    return _write(
        "opcua_chunk_flood",
        out,
        hostile(),
        victims,
        victims_out,
        {"flows": size, "messages": messages, "chunks": chunks, "chunk_bytes": chunk_bytes},
    )


# ------------------------------------------------------------------------------- lying length fields
def _tpkt(payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!BBH", 3, 0, len(payload) + 4 if length is None else length) + payload


def _enip(command: int, body: bytes, length: int | None = None, session: int = 0x1234) -> bytes:
    return struct.pack("<HHII8sI", command, len(body) if length is None else length, session, 0, b"hostile!", 0) + body


def length_lies(out: Path, size: int = 400, victims_out: Path | None = None, tail_bytes: int = 16_384) -> Written:
    """``size`` connections whose length fields lie, half S7 (port 102), half EtherNet/IP (44818):

    - S7: a TPKT announcing 65,535 bytes followed by ``tail_bytes`` of well-formed small TPKTs the lie
      swallows; a COTP DT sequence that never sets end-of-TSDU (grows to the COTP reassembly cap);
      TPKT and COTP length indicators shorter or longer than the TPDU.
    - ENIP: an encapsulation header announcing 65,535 bytes followed by ``tail_bytes``; SendRRData
      whose CPF item count and item lengths exceed the message; a CIP Multiple Service Packet whose
      service count and offsets point outside it.

    Everything is parsed or rejected with a counted anomaly; the partial PDUs the lies leave behind
    are what ``sensor.max_buffered_bytes`` caps."""
    per_second = 20_000.0
    small_tpkt = _tpkt(bytes([0x02, 0xF0, 0x80]) + bytes([0x32, 0x01, 0, 0, 0, 1, 0, 2, 0, 0, 0xF0, 0]))
    cotp_no_eot = _tpkt(bytes([0x02, 0xF0, 0x00]) + bytes(1000))
    msp = (
        struct.pack("<BB", 0x0A, 2) + bytes([0x20, 0x02, 0x24, 0x01]) + struct.pack("<HHHH", 0xFFFF, 2, 0xFFF0, 0x7FFF)
    )
    cpf_lie = struct.pack("<IHH", 0, 5, 0x7FFF) + struct.pack("<HH", 0, 0) + struct.pack("<HH", 0xB2, 0xFFF0) + msp
    segments = max(1, tail_bytes // 1400)
    duration = size * (segments + 74) / per_second + 0.5

    def s7_lies(conv: TcpConversation, t: float, dt: float) -> Iterator[Record]:
        yield conv.send(True, _tpkt(bytes([0x02, 0xF0, 0x80]) + bytes([0x32, 0x01]), length=65535), t)
        for _ in range(segments):
            t += dt
            yield conv.send(True, small_tpkt * (1400 // len(small_tpkt)), t)

    def s7_lies_server(conv: TcpConversation, t: float, dt: float) -> Iterator[Record]:
        # the other direction: COTP DT without end-of-TSDU past the 64 KiB reassembly cap, then LI lies
        for _ in range(70):
            t += dt
            yield conv.send(False, cotp_no_eot, t)
        yield conv.send(False, _tpkt(bytes([0x02, 0xF0])), t + dt)  # TPKT shorter than its COTP header
        yield conv.send(False, _tpkt(bytes([0xFE, 0xF0, 0x80, 0x32])), t + 2 * dt)  # LI longer than the TPDU

    def enip_lies(conv: TcpConversation, t: float, dt: float) -> Iterator[Record]:
        yield conv.send(True, _enip(0x6F, cpf_lie), t)  # complete message, lying inside
        t += dt
        yield conv.send(True, _enip(0x6F, bytes(8), length=65535), t)  # the encapsulation lie
        for _ in range(segments):
            t += dt
            yield conv.send(True, bytes(1400), t)

    def hostile() -> Iterator[Record]:
        t = T0 + 1
        dt = 1 / per_second
        for i in range(size):
            s7 = i % 2 == 0
            server, port = ("10.10.1.10", 102) if s7 else ("10.0.30.10", 44818)
            conv = TcpConversation(_dotted(hostile_ip(i)), 42000 + i % 20000, server, port, isn_c=i * 53, isn_s=i * 59)
            records: list[Record] = list(conv.handshake(t))
            if s7:
                records += list(s7_lies(conv, t + 0.002, dt))
                records += list(s7_lies_server(conv, t + 0.003, dt))
            else:
                records += list(enip_lies(conv, t + 0.002, dt))
            records.sort(key=lambda r: r[0])
            yield from records
            t += (segments + 74) * dt

    victims = _victims(duration, ["s7-plc-stop", "cip-controller-stop", "modbus-write-unauthorized-master"])
    return _write(
        "length_lies", out, _sorted_stream(hostile()), victims, victims_out, {"flows": size, "tail_bytes": tail_bytes}
    )


def _sorted_stream(records: Iterator[Record], window: int = 4096) -> Iterator[Record]:
    """Records in time order, given records that are out of order by less than ``window`` places."""
    heap: list[tuple[float, int, bytes]] = []
    for n, (ts, frame) in enumerate(records):
        heapq.heappush(heap, (ts, n, frame))
        if len(heap) > window:
            ts0, _, f0 = heapq.heappop(heap)
            yield ts0, f0
    while heap:
        ts0, _, f0 = heapq.heappop(heap)
        yield ts0, f0


# -------------------------------------------------------------------------------------- IP fragments
def ip_fragment_flood(out: Path, size: int = 20_000, victims_out: Path | None = None, piece: int = 512) -> Written:
    """``size`` IPv4 fragments that never make a datagram: first fragments (MF set) of distinct
    datagrams from spoofed sources (fills ``sensor.max_fragment_sets``), one set fed overlapping
    pieces at every 8-byte offset (its stored bytes far above 65,535), and pieces ending past 65,535
    (oversize). A fragmented Modbus write from a rogue host (its TCP segment cut in two IP fragments)
    arrives while the table is full: it must still be reassembled and still alert."""
    per_second = 50_000.0
    duration = size / per_second
    dst = ip(PLC)

    def hostile() -> Iterator[Record]:
        t = T0 + 1
        dt = 1 / per_second
        body = bytes(range(256)) * (piece // 256 + 1)
        burst = range(size // 2, size // 2 + min(size // 10, 1000))  # the overlap set, fed in one burst
        for n in range(size):
            if n in burst:  # one datagram fed a piece at every 8-byte offset, all overlapping
                offset = (n - burst.start) * 8
                frame = ipv4_fragment_frame(hostile_ip(999_999), dst, 17, 0xBEEF, offset, True, body[:piece])
            elif n % 10 == 9:  # a piece ending beyond the largest datagram IPv4 can carry
                frame = ipv4_fragment_frame(hostile_ip(n), dst, 17, (n + 1) & 0xFFFF, 65_528, False, body[:piece])
            else:  # a first fragment of a datagram that never completes
                frame = ipv4_fragment_frame(hostile_ip(n), dst, 17, n & 0xFFFF, 0, True, body[:piece])
            yield t, frame
            t += dt

    victims = _victims(duration, ["modbus-write-unauthorized-master"])
    # The rogue write again, this time fragmented at the IP layer, late in the flood.
    victims.records.extend(fragmented_modbus_write(T0 + 1 + 0.8 * duration))
    victims.alerts["modbus-write-unauthorized-master"] += 1
    victims.hosts.update(("10.10.9.77", PLC))
    return _write("ip_fragment_flood", out, hostile(), victims, victims_out, {"fragments": size, "piece": piece})


def fragmented_modbus_write(at: float) -> list[Record]:
    """A rogue host writing a holding register, the TCP segment of the write cut in two IP fragments."""
    conv = TcpConversation("10.10.9.77", 49777, PLC, 502, isn_c=777, isn_s=999)
    records = conv.handshake(at)
    request = struct.pack("!HHHBBHH", 1, 0, 6, 1, 6, 40, 1234)  # FC 6 write single register
    frame = conv.frame(True, TCP_PSH | TCP_ACK, request)
    ip_payload = frame[34:]  # TCP header + Modbus
    src, dst = conv.client, conv.server
    records.append((at + 0.01, ipv4_fragment_frame(src, dst, 6, 0x7777, 0, True, ip_payload[:24])))
    records.append((at + 0.0101, ipv4_fragment_frame(src, dst, 6, 0x7777, 24, False, ip_payload[24:])))
    response = struct.pack("!HHHBBHH", 1, 0, 6, 1, 6, 40, 1234)
    records.append(conv.send(False, response, at + 0.012))
    records += conv.close(at + 0.02)
    return records


# -------------------------------------------------------------------------------- absurd timestamps
def absurd_timestamps(out: Path, size: int = 2_000, victims_out: Path | None = None) -> Written:
    """The victim plant's traffic (``size`` Modbus polls over about ``size`` / 20 seconds, the rule
    captures) with absurd timestamps written among it, in file order: packets dated 2100 (the very
    first one too), 1970 and 2101, and two hours back or a day forward from the plant's clock, each a
    few packets of a hostile host before the real clock resumes; and the plant's own clock stepping
    back two hours, then a day forward. An idle connection must still end after
    ``sensor.tcp_idle_timeout`` of real capture time; the active ones must not be ended by the jumps;
    request/response latencies must stay sane (a pair straddling a step has none); the rules
    (including the learning ``new`` rules) must still fire.

    The victims are part of the hostile stream here (file order matters, not time order)."""
    period = 0.05
    span = size * period
    victims = Victims()
    victims.add_poller(T0 + 0.5, T0 + 0.5 + span, period)
    victims.add_rule_capture("modbus-write-unauthorized-master", T0 + 0.5 + 0.6 * span)
    victims.add_rule_capture("dnp3-direct-operate", T0 + 0.5 + 0.8 * span)
    # ics-new-talker learns for 5 minutes from the first event: its rogue talker comes after that.
    late = T0 + 0.5 + span + 400
    victims.add_rule_capture("ics-new-talker", late)
    # an idle flow: one exchange at the start, then silence for longer than the TCP idle timeout
    idle = TcpConversation("10.10.1.20", 49999, PLC, 502, isn_c=55, isn_s=66)
    idle_records = idle.handshake(T0 + 0.6) + [
        idle.send(True, struct.pack("!HHHBBHH", 9, 0, 6, 1, 3, 0, 1), T0 + 0.7),
        idle.send(False, struct.pack("!HHHBBBH", 9, 0, 5, 1, 3, 2, 7), T0 + 0.702),
    ]
    victims.records.extend(idle_records)
    victims.hosts.add("10.10.1.20")
    # a poller that keeps the clock moving past the idle timeout (every 30 s, for 11 minutes)
    keepalive = TcpConversation(_dotted(ip("10.10.1.10")), 49998, "10.10.2.12", 502, isn_c=77, isn_s=88)
    ka = keepalive.handshake(T0 + span)
    for k in range(24):
        t = T0 + 1 + span + 30 * k
        ka.append(keepalive.send(True, struct.pack("!HHHBBHH", k, 0, 6, 1, 3, 0, 1), t))
        ka.append(keepalive.send(False, struct.pack("!HHHBBBH", k, 0, 5, 1, 3, 2, k), t + 0.002))
    victims.records.extend(ka)
    victims.hosts.add("10.10.2.12")

    ordered = victims.sorted()
    # The plant's own clock steps too: back two hours at 65% of the traffic (a clock restart), then a
    # day forward at 85% (a wrong NTP step). Each step falls between a poll and its response.
    back = _after_poll_request(ordered, int(0.65 * len(ordered)))
    forward = _after_poll_request(ordered, int(0.85 * len(ordered)))
    ordered = [
        (ts if i < back else ts - 7200.0 if i < forward else ts - 7200.0 + 86_400.0, frame)
        for i, (ts, frame) in enumerate(ordered)
    ]
    # Insert the absurd packets at fixed places of the file: each is a SYN of a hostile host to the
    # PLC (a connection_attempt event carrying the absurd time) plus a Modbus read on its own flow.
    jumps = [
        (0.0, YEAR_2100, "2100_first"),
        (0.10, YEAR_2100, "2100"),
        (0.20, 0.0, "1970"),
        (0.30, -7200.0, "back_2h"),
        (0.45, 86_400.0, "forward_1d"),
        (0.55, YEAR_2100 + 365 * 86400.0, "2101"),
    ]
    out_records: list[Record] = []
    marks = {int(frac * len(ordered)): (stamp, label) for frac, stamp, label in jumps}
    for n, rec in enumerate(ordered):
        hit = marks.get(n)
        if hit is not None:
            stamp, _label = hit
            base = rec[0]
            when = stamp if stamp >= 1_000_000 or stamp == 0.0 else base + stamp
            conv = TcpConversation(_dotted(hostile_ip(n)), 50000 + n % 1000, PLC, 502, isn_c=n, isn_s=n + 1)
            out_records.extend((when + k * 0.001, f) for k, (_, f) in enumerate(conv.handshake(when)))
            out_records.append(
                (when + 0.01, conv.frame(True, TCP_PSH | TCP_ACK, struct.pack("!HHHBBHH", 1, 0, 6, 1, 3, 0, 1)))
            )
        out_records.append(rec)
    written = _write(
        "absurd_timestamps",
        out,
        out_records,
        Victims(),
        None,
        {"polls": size, "jumps": [label for _, _, label in jumps]},
        merge=False,
    )
    written.victim_hosts = set(victims.hosts)
    written.victim_alerts = dict(victims.alerts)
    written.poll_events = victims.poll_events
    written.victim_packets = len(ordered)
    written.hostile_packets = written.packets - len(ordered)
    if victims_out is not None:
        with PcapFile(victims_out) as pcap:
            for ts, frame in ordered:
                pcap.write(ts, frame)
    return written


def _after_poll_request(records: list[Record], start: int) -> int:
    """The index just after the first Modbus poll request (SCADA -> PLC, 12-byte ADU) at or after ``start``."""
    scada, port = ip(SCADA), (502).to_bytes(2, "big")
    for i in range(start, len(records)):
        frame = records[i][1]
        if len(frame) == 66 and frame[26:30] == scada and frame[36:38] == port:
            return i + 1
    return start


Scenario = Callable[..., Written]

SCENARIOS: dict[str, Scenario] = {
    "syn_flood": syn_flood,
    "gap_flood": gap_flood,
    "overlap_flood": overlap_flood,
    "dnp3_fragment_flood": dnp3_fragment_flood,
    "opcua_chunk_flood": opcua_chunk_flood,
    "length_lies": length_lies,
    "ip_fragment_flood": ip_fragment_flood,
    "absurd_timestamps": absurd_timestamps,
}

# The full sizes (bench/hostile.py); the CI tests use small ones (tests/test_hostile.py).
FULL_SIZE: dict[str, int] = {
    "syn_flood": 1_000_000,
    "gap_flood": 10_000,
    "overlap_flood": 500_000,
    "dnp3_fragment_flood": 4_000,
    "opcua_chunk_flood": 4_000,
    "length_lies": 6_000,
    "ip_fragment_flood": 300_000,
    "absurd_timestamps": 20_000,
}
