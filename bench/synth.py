"""Wire-level building blocks of the per-protocol synthetic captures (bench/gen_protocols.py).

bench/gen_modbus.py builds its Modbus capture with its own connection class; the other protocols
share the pieces here, written the same way (and reusing its checksum identity and pcap writer):

- ``Host``: an IP address, a MAC, a TTL, a TCP window and an IP id counter.
- ``TcpConn``: one TCP connection, any ports; builds whole Ethernet/IPv4/TCP frames with correct
  sequence and acknowledgment numbers, lengths and checksums (one big-int operation per frame), and
  ``TcpConn.send`` segments a message the way a stack would (one segment, or split at given offsets).
- ``udp_frame``: one Ethernet/IPv4/UDP datagram (unicast or broadcast), valid checksums.
- ``merge``: time-ordered merge of the per-connection frame generators, up to N packets.
- ``write_capture``: streams the merged frames into a classic pcap and counts the truth.

A frame travels as ``(t_us, frame bytes, counts)``; ``counts`` is a tuple of ``(protocol, key)``
pairs of what tshark will count in that frame: ``(proto, None)`` is one PDU, ``(proto, "0x4c")`` one
function-histogram entry. Message builders keep these tuples as constants, so counting costs one
``Counter.update`` per frame.
"""

from __future__ import annotations

import heapq
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from gen_modbus import ACK, FIN, IP_TCP, PSH, RST, SYN, T0_US, PcapWriter, _checksum

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "T0_US", "Counts", "Host", "Packet", "TcpConn", "merge", "udp_frame",
           "write_capture"]

Counts = tuple[tuple[str, "str | None"], ...]
Packet = tuple[int, bytes, Counts]  # (time in microseconds, Ethernet frame, what tshark counts in it)
NONE: Counts = ()

MSS_OPTION = bytes.fromhex("020405b4")  # MSS 1460
IP_UDP = struct.Struct("!BBHHHBBH4s4sHHHH")  # IPv4 (20) + UDP (8)
BROADCAST_MAC = b"\xff" * 6


class Host:
    """One end system: address, MAC (02:00 + the IPv4 address), TTL and window of its OS, IP ids."""

    __slots__ = ("ip", "ipb", "ipid", "mac", "name", "next_port", "ttl", "window")

    def __init__(self, ip: str, rng: random.Random, windows: bool = False, name: str = "") -> None:
        self.ip = ip
        self.ipb = bytes(int(x) for x in ip.split("."))
        self.mac = b"\x02\x00" + self.ipb
        self.ttl = 128 if windows else 64
        self.window = 65535 if windows else rng.choice((8192, 16384, 29200, 64240))
        self.ipid = rng.getrandbits(16)
        self.next_port = rng.randint(49152, 60000)
        self.name = name

    def ephemeral(self) -> int:
        p = self.next_port
        self.next_port = p + 1 if p < 65535 else 49152
        return p

    def next_ipid(self) -> int:
        i = self.ipid
        self.ipid = (i + 1) & 0xFFFF
        return i


class TcpConn:
    """One TCP connection (client ``0`` -> server ``1``): frames with coherent seq/ack and checksums."""

    __slots__ = ("acked", "dst", "eth", "hosts", "ipconst", "ports", "seq", "src", "tcpconst", "ttl", "win")

    def __init__(self, client: Host, server: Host, cport: int, sport: int, rng: random.Random,
                 wrap: bool = False) -> None:
        isn = [rng.getrandbits(32), rng.getrandbits(32)]
        if wrap:  # sequence numbers wrap around 2**32 within a few hundred bytes
            isn = [(1 << 32) - rng.randint(50, 400), (1 << 32) - rng.randint(50, 2000)]
        self.seq = isn  # next sequence number, [client, server]
        self.acked = [-1, -1]  # last acknowledgment number sent, [client, server]
        self.hosts = (client, server)
        c, s = client, server
        self.eth = (s.mac + c.mac + b"\x08\x00", c.mac + s.mac + b"\x08\x00")
        self.ttl = (c.ttl, s.ttl)
        self.win = (c.window, s.window)
        self.src = (c.ipb, s.ipb)
        self.dst = (s.ipb, c.ipb)
        self.ports = ((cport, sport), (sport, cport))
        addr_sum = int.from_bytes(c.ipb, "big") + int.from_bytes(s.ipb, "big")
        # constant parts of the IPv4 header sum (version/IHL, DF, TTL/protocol, addresses) per direction
        self.ipconst = tuple(0x4500 + 0x4000 + (ttl << 8 | 6) + addr_sum for ttl in self.ttl)
        # constant parts of the TCP sum: pseudo-header addresses and protocol, ports, window
        self.tcpconst = tuple(addr_sum + 6 + cport + sport + w for w in self.win)

    def frame(self, d: int, flags: int, payload: bytes = b"", opts: bytes = b"") -> bytes:
        """A frame in direction ``d`` (0 client->server, 1 server->client); advances seq by what it sends."""
        seq = self.seq[d]
        ack = 0
        if flags & ACK:
            ack = self.acked[d] = self.seq[1 - d]
        ipid = self.hosts[d].next_ipid()
        body = opts + payload if opts else payload
        tcp_len = 20 + len(body)
        tot = 20 + tcp_len
        offflags = ((5 + len(opts) // 4) << 12) | flags
        ip_ck = _checksum(self.ipconst[d] + tot + ipid)
        s = self.tcpconst[d] + tcp_len + seq + ack + offflags
        if body:
            s += int.from_bytes(body + b"\0" if len(body) & 1 else body, "big")
        sp, dp = self.ports[d]
        hdr = IP_TCP.pack(0x45, 0, tot, ipid, 0x4000, self.ttl[d], 6, ip_ck, self.src[d], self.dst[d],
                          sp, dp, seq, ack, offflags >> 8, flags, self.win[d], _checksum(s), 0)
        adv = len(payload) + (1 if flags & (SYN | FIN) else 0)
        self.seq[d] = (seq + adv) & 0xFFFFFFFF
        return self.eth[d] + hdr + body

    def unacked(self, d: int) -> bool:
        """Whether direction ``d`` has data of its peer to acknowledge."""
        return self.acked[d] != self.seq[1 - d]

    # ---- conversations (generators of Packets) ---------------------------------------------------
    def handshake(self, t: int, rng: random.Random) -> Generator[Packet, None, int]:
        yield t, self.frame(0, SYN, opts=MSS_OPTION), NONE
        t += rng.randint(100, 2000)
        yield t, self.frame(1, SYN | ACK, opts=MSS_OPTION), NONE
        t += rng.randint(50, 500)
        yield t, self.frame(0, ACK), NONE
        return t

    def send(self, t: int, d: int, data: bytes, counts: Counts, cuts: Iterable[int] = (),
             gap_us: int = 300) -> Generator[Packet, None, int]:
        """``data`` in one PSH/ACK segment, or split at the offsets ``cuts`` (increasing, inside the data).

        The counts go with the segment that completes the data (tshark counts a reassembled PDU there).
        Returns the time of the last segment (conversation helpers chain on it: ``t = yield from ...``).
        """
        prev = 0
        for cut in cuts:
            yield t, self.frame(d, PSH | ACK, data[prev:cut]), NONE
            t += gap_us
            prev = cut
        yield t, self.frame(d, PSH | ACK, data[prev:] if prev else data), counts
        return t

    def ack(self, t: int, d: int) -> Packet:
        return t, self.frame(d, ACK), NONE

    def close(self, t: int, rng: random.Random, reset: bool = False) -> Iterator[Packet]:
        if reset:
            yield t, self.frame(0, RST | ACK), NONE
            return
        yield t, self.frame(0, FIN | ACK), NONE
        t += rng.randint(200, 3000)
        yield t, self.frame(1, FIN | ACK), NONE
        t += rng.randint(100, 1000)
        yield t, self.frame(0, ACK), NONE


def udp_frame(src: Host, dst: Host | None, sport: int, dport: int, payload: bytes,
              broadcast_ip: bytes = b"\xff\xff\xff\xff") -> bytes:
    """One UDP datagram from ``src`` to ``dst`` (None: a broadcast to ``broadcast_ip``), valid checksums."""
    dst_ip = dst.ipb if dst is not None else broadcast_ip
    dst_mac = dst.mac if dst is not None else BROADCAST_MAC
    ipid = src.next_ipid()
    ulen = 8 + len(payload)
    tot = 20 + ulen
    saddr = int.from_bytes(src.ipb, "big")
    daddr = int.from_bytes(dst_ip, "big")
    ip_ck = _checksum(0x4500 + tot + ipid + (src.ttl << 8 | 17) + saddr + daddr)
    s = saddr + daddr + 17 + ulen + sport + dport + ulen
    if payload:
        s += int.from_bytes(payload + b"\0" if len(payload) & 1 else payload, "big")
    ck = _checksum(s) or 0xFFFF  # a computed UDP checksum of 0 is sent as 0xffff (RFC 768)
    hdr = IP_UDP.pack(0x45, 0, tot, ipid, 0, src.ttl, 17, ip_ck, src.ipb, dst_ip, sport, dport, ulen, ck)
    return dst_mac + src.mac + b"\x08\x00" + hdr + payload


def merge(flows: list[Iterator[Packet]], n_packets: int) -> Iterator[Packet]:
    """All flows merged in time order (ties broken by flow index), up to ``n_packets`` frames."""
    heap = []
    for i, flow in enumerate(flows):
        first = next(flow, None)
        if first is not None:
            heap.append((first[0], i, first, flow))
    heapq.heapify(heap)
    flows.clear()  # the heap holds them now; finished generators are dropped
    left = n_packets
    pop, replace = heapq.heappop, heapq.heapreplace
    while heap and left:
        _, i, pkt, flow = heap[0]
        yield pkt
        left -= 1
        nxt = next(flow, None)
        if nxt is None:
            pop(heap)
        else:
            replace(heap, (nxt[0], i, nxt, flow))


def write_capture(out: Path, packets: Iterator[Packet], protocols: Iterable[str], generator: dict[str, Any],
                  traffic: Counter[str] | None = None) -> dict[str, Any]:
    """Write ``packets`` as a classic pcap and ``out.truth.json`` (GROUND_TRUTH.json's shape); return the truth."""
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    counted: Counter[tuple[str, str | None]] = Counter()
    n = 0
    with open(tmp, "wb") as f:
        writer = PcapWriter(f)
        write = writer.write
        update = counted.update
        for t, frame, counts in packets:
            write(t, frame)
            n += 1
            if counts:
                update(counts)
        writer.flush()
    tmp.replace(out)
    protos: dict[str, Any] = {}
    for proto in protocols:
        hist = {k: v for (p, k), v in counted.items() if p == proto and k is not None}
        protos[proto] = {"pdus": counted.get((proto, None), 0),
                         "func_hist": dict(sorted(hist.items(), key=lambda kv: (len(kv[0]), kv[0])))}
    truth = {
        "packets": n,
        "protocols": protos,
        "generator": {**generator, "bytes": out.stat().st_size, "traffic": dict(sorted((traffic or {}).items())),
                      "seconds": round(time.perf_counter() - started, 3)},
    }
    out.with_name(out.name + ".truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth
