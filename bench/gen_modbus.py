#!/usr/bin/env python3
"""Generate a large synthetic Modbus/TCP capture for the throughput benchmark.

The capture imitates a plant's polling traffic, not a fuzzer: a few SCADA servers, HMIs and engineering
workstations (masters) poll many PLCs and gateways (servers, TCP 502) over many TCP connections.

What is in it
- Connections (``--flows``, default 2,000): ~80% long-lived polling connections (about a third of them
  already open when the capture starts, so their handshake is not in it), ~20% short sessions of HMIs
  and engineering workstations that open (SYN with MSS option), poll or write a few times and close
  (FIN, or now and then RST) during the capture. A few connections start their sequence numbers just
  below 2**32 so they wrap.
- Per connection a poll plan of 1-6 requests repeated every period (50 ms to 2 s, jittered), requests
  and responses for FC 1, 2, 3, 4 (reads), 5, 6, 15, 16 (writes, occasional), 23 (read/write multiple);
  exception responses now and then (codes 1, 2, 3, 4, 6, 11), and a few plans with an item that always
  fails (a misconfigured poll); rare unanswered requests (the PLC's stack ACKs, the application is mute).
- Segmentation: ~10% of connections pipeline a whole cycle in one segment (several ADUs per segment,
  answered in one segment or one by one); large ADUs are sometimes split across two segments at a random
  byte (never before the function code: see _send), and a few PLC stacks always send the ADU header
  (MBAP, function code, byte count) in a segment of its own.
- TCP as a real stack would send it: sequence/ack numbers, pure delayed ACKs when the next request is
  more than the ACK delay away, MSS on SYNs, IP ids, TTLs and windows per host kind.

Wire format: Ethernet II / IPv4 (20 bytes, DF, valid header checksum) / TCP (valid checksum: both are
computed with the ones'-complement-sum-is-the-value-mod-65535 identity, one big-int operation per
packet), in a classic pcap (microsecond, little-endian, LINKTYPE_ETHERNET) or with ``--pcapng`` a
pcapng (SHB, one IDB, EPBs), optionally gzip-compressed (``--gzip``, level 1: the point is a small
file, not a slow generator). Packets are written in time order, streamed (memory is bounded by the
number of open connections, not by ``--packets``).

Ground truth: next to the capture ``FILE.truth.json`` gives what the generator wrote, counted the way
tshark counts (``tshark -T fields -e mbtcp.trans_id -e modbus.func_code -E occurrence=a``): one PDU per
ADU, counted in the packet that completes it (a split ADU counts once, in its second segment), function
codes with the exception bit cleared. Same shape as ``shared/pcaps/GROUND_TRUTH.json``:
``{"packets": N, "protocols": {"modbus": {"pdus": n, "func_hist": {"3": n, ...}}}}`` plus a ``generator``
object (parameters and traffic counters).

Deterministic: the same ``--seed`` and parameters give byte-identical files.

    python bench/gen_modbus.py --packets 1000000 -o bench/out/modbus.pcap
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

GENERATOR_VERSION = 3  # bump when the output for a given seed changes (the runner regenerates then)

T0_US = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z, in microseconds
MODBUS_PORT = 502
MAX_ADU = 260  # Modbus/TCP ADU limit (MBAP 7 + PDU 253)

# Header layouts (all network order except the pcap/pcapng framing, written little-endian).
IP_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")  # IPv4 (20) + TCP (20), options appended after
MBAP = struct.Struct("!HHHB")  # transaction id, protocol id, length, unit id
PCAP_GLOBAL = struct.Struct("<IHHiIII")
PCAP_REC = struct.Struct("<IIII")
EPB_HEAD = struct.Struct("<IIIIIII")

# TCP flags
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

EXCEPTION_CODES = (1, 2, 3, 4, 6, 11)
MSS_OPTION = bytes.fromhex("020405b4")  # MSS 1460


# --------------------------------------------------------------------------------------------- checksums
def _fold(s: int) -> int:
    """Ones'-complement sum of 16-bit words, given any integer congruent to it mod 0xffff.

    A number written in big-endian 16-bit words w_i is sum(w_i * 65536**i), and 65536 == 1 (mod 65535),
    so the bytes read as one big integer are congruent to the sum of their words. The ones'-complement
    sum of words that are not all zero is never +0, hence 0 maps to 0xffff.
    """
    s %= 0xFFFF
    return s or 0xFFFF


def _checksum(s: int) -> int:
    return 0xFFFF - _fold(s)


# ----------------------------------------------------------------------------------------------- Modbus
def _mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


class Item:
    """One request in a poll plan: function code, unit, addresses and quantities."""

    __slots__ = ("fc", "unit", "addr", "qty", "waddr", "wqty", "fails")

    def __init__(self, fc: int, unit: int, addr: int, qty: int, waddr: int = 0, wqty: int = 0, fails: int = 0):
        self.fc, self.unit, self.addr, self.qty = fc, unit, addr, qty
        self.waddr, self.wqty = waddr, wqty
        self.fails = fails  # exception code this item always gets (a misconfigured poll), 0 if none


class Modbus:
    """Builds request/response ADUs; data comes from a random pool (cheap slices, deterministic)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = rng.randbytes(1 << 16)

    def data(self, n: int) -> bytes:
        o = self.rng.getrandbits(15)
        return self.pool[o : o + n]

    def request(self, it: Item, tid: int) -> bytes:
        fc = it.fc
        if fc in (1, 2, 3, 4):
            pdu = struct.pack("!BHH", fc, it.addr, it.qty)
        elif fc == 5:
            pdu = struct.pack("!BHH", fc, it.addr, 0xFF00 if self.rng.random() < 0.5 else 0)
        elif fc == 6:
            pdu = struct.pack("!BH", fc, it.addr) + self.data(2)
        elif fc == 15:
            n = (it.qty + 7) // 8
            pdu = struct.pack("!BHHB", fc, it.addr, it.qty, n) + self.data(n)
        elif fc == 16:
            pdu = struct.pack("!BHHB", fc, it.addr, it.qty, 2 * it.qty) + self.data(2 * it.qty)
        elif fc == 23:
            pdu = struct.pack("!BHHHHB", fc, it.addr, it.qty, it.waddr, it.wqty, 2 * it.wqty) + self.data(2 * it.wqty)
        else:  # pragma: no cover - plans only hold the codes above
            raise ValueError(fc)
        return _mbap(tid, it.unit, pdu)

    def response(self, it: Item, tid: int, request: bytes, exc: int) -> bytes:
        fc = it.fc
        if exc:
            return _mbap(tid, it.unit, bytes((fc | 0x80, exc)))
        if fc in (1, 2):
            n = (it.qty + 7) // 8
            pdu = bytes((fc, n)) + self.data(n)
        elif fc in (3, 4):
            pdu = bytes((fc, 2 * it.qty)) + self.data(2 * it.qty)
        elif fc in (5, 6):
            pdu = request[7:12]  # echo
        elif fc in (15, 16):
            pdu = request[7:12]  # fc, address, quantity
        else:  # 23
            pdu = bytes((fc, 2 * it.qty)) + self.data(2 * it.qty)
        return _mbap(tid, it.unit, pdu)


# ----------------------------------------------------------------------------------------------- hosts
class Host:
    __slots__ = ("ip", "ipb", "mac", "ttl", "window", "kind", "latency_us", "ack_delay_us", "header_split",
                 "units", "next_port")

    def __init__(self, ip: str, kind: str, rng: random.Random) -> None:
        self.ip = ip
        self.ipb = bytes(int(x) for x in ip.split("."))
        a, b, c, d = self.ipb
        self.mac = bytes((0x02, 0x00, a, b, c, d))
        self.kind = kind
        windows = kind in ("hmi", "ews") or (kind == "scada" and rng.random() < 0.5)
        self.ttl = 128 if windows else 64
        self.ack_delay_us = 200_000 if windows else 40_000
        if kind == "plc":
            self.window = rng.choice((2048, 4096, 8192, 8760, 65535))
            self.latency_us = rng.randint(1_000, 15_000)  # typical scan-cycle-bound answer time
            self.header_split = rng.random() < 0.03  # stack that writes the ADU header (9 bytes) on its own
            gateway = rng.random() < 0.1
            # unit 0 is Modbus broadcast (write only, no answer): normal polling never uses it
            self.units = tuple(range(1, rng.randint(2, 8) + 1)) if gateway else (rng.choice((1, 1, 1, 255)),)
        else:
            self.window = 64240 if not windows else 65535
            self.latency_us = 0
            self.header_split = False
            self.units = ()
        self.next_port = rng.randint(49152, 60000)

    def ephemeral(self) -> int:
        p = self.next_port
        self.next_port = p + 1 if p < 65535 else 49152
        return p


# ----------------------------------------------------------------------------------------- connections
Packet = tuple  # (time_us, frame bytes, what the frame completes: function codes here, (protocol, key)s in synth)
NONE: tuple = ()  # a frame that completes no PDU


class IpIdCounter:
    """A 16-bit IPv4 identification counter; ``TcpConn`` counts on anything with an ``ipid`` attribute."""

    __slots__ = ("ipid",)

    def __init__(self, start: int) -> None:
        self.ipid = start


class TcpConn:
    """One TCP connection (client ``0`` -> server ``1``): frames with coherent seq/ack, lengths and checksums.

    Shared with bench/synth.py (the other protocols' captures). The two differ in whose IP id counter a
    frame takes its id from, and both must keep their bytes for a seed: ``per_connection_ipid`` gives
    each direction of the connection its own counter (random starts drawn after the ISNs: this
    generator's plant), otherwise each host's ``ipid`` runs across all its connections (synth's ``Host``).
    """

    __slots__ = ("acked", "dst", "eth", "ipconst", "ipids", "ports", "seq", "src", "tcpconst", "ttl", "win")

    def __init__(self, client, server, cport: int, sport: int, rng: random.Random, wrap: bool = False,
                 per_connection_ipid: bool = False) -> None:
        isn = [rng.getrandbits(32), rng.getrandbits(32)]
        if wrap:  # sequence numbers wrap around 2**32 within a few hundred bytes
            isn = [(1 << 32) - rng.randint(50, 400), (1 << 32) - rng.randint(50, 2000)]
        self.seq = isn  # next sequence number, [client, server]
        self.acked = [-1, -1]  # last acknowledgment number sent, [client, server]
        if per_connection_ipid:
            self.ipids = (IpIdCounter(rng.getrandbits(16)), IpIdCounter(rng.getrandbits(16)))
        else:
            self.ipids = (client, server)
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
        counter = self.ipids[d]
        ipid = counter.ipid
        counter.ipid = (ipid + 1) & 0xFFFF
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
        """Whether direction ``d`` has data of its peer to acknowledge (a pure ACK would not be a dup ACK)."""
        return self.acked[d] != self.seq[1 - d]

    # ---- conversations (generators of Packets; the rng is drawn as each frame is asked for)
    def handshake(self, t: int, rng: random.Random) -> Generator[Packet, None, int]:
        """SYN (MSS option), SYN/ACK, ACK; returns the time of the ACK."""
        yield t, self.frame(0, SYN, opts=MSS_OPTION), NONE
        t += rng.randint(100, 2000)
        yield t, self.frame(1, SYN | ACK, opts=MSS_OPTION), NONE
        t += rng.randint(50, 500)
        yield t, self.frame(0, ACK), NONE
        return t

    def send(self, t: int, d: int, data: bytes, counts: tuple, cuts: Iterable[int] = (),
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
        """The client's RST, or FIN/ACK both ways and the last ACK."""
        if reset:
            yield t, self.frame(0, RST | ACK), NONE
            return
        yield t, self.frame(0, FIN | ACK), NONE
        t += rng.randint(200, 3000)
        yield t, self.frame(1, FIN | ACK), NONE
        t += rng.randint(100, 1000)
        yield t, self.frame(0, ACK), NONE


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


# -------------------------------------------------------------------------------------------- behaviour
PERIODS_MS = (50, 100, 200, 250, 500, 1000, 2000)
PERIOD_WEIGHTS = (5, 25, 15, 15, 20, 15, 5)
READ_FCS = (3, 4, 1, 2)
READ_WEIGHTS = (50, 20, 15, 15)
WRITE_FCS = (5, 6, 16, 15, 23)
WRITE_WEIGHTS = (30, 35, 20, 10, 5)


class Traffic:
    """Plans and runs the connections; ``packets()`` yields time-ordered frames from all of them."""

    def __init__(self, n_packets: int, n_flows: int, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.mb = Modbus(rng)
        self.n_packets = n_packets
        self.stats: Counter[str] = Counter()
        n_masters = max(2, n_flows // 250)
        n_plcs = max(4, n_flows // 8)
        self.scada = [Host(f"10.10.0.{10 + i}", "scada", rng) for i in range(max(1, n_masters // 2))]
        self.hmis = [Host(f"10.10.1.{10 + i}", "hmi", rng) for i in range(max(1, n_masters - len(self.scada)))]
        self.ews = [Host(f"10.10.2.{10 + i}", "ews", rng) for i in range(max(1, n_masters // 4))]
        self.plcs = [Host(f"10.20.{i // 200}.{10 + i % 200}", "plc", rng) for i in range(n_plcs)]

        n_short = n_flows // 5
        n_long = n_flows - n_short
        pollers = self.scada + self.hmis
        long_plans = []
        for i in range(n_long):
            master = pollers[i % len(pollers)] if i < len(pollers) else rng.choice(pollers)
            plc = rng.choice(self.plcs)
            plan = self._plan(master, plc)
            long_plans.append((master, plc, plan))
        # expected packet rate, to spread the short sessions over the capture's duration
        rate = sum((2 * len(p[0]) + 1) * 1e6 / p[1] for _, _, p in long_plans) or 1.0  # packets per second
        self.duration_us = int(1e6 * n_packets / rate)
        self.flows: list[Iterator[Packet]] = []
        for master, plc, plan in long_plans:
            mid_stream = rng.random() < 0.35
            start = rng.randint(0, plan[1]) if mid_stream else rng.randint(0, max(1, self.duration_us // 10))
            self.flows.append(self._connection(master, plc, plan, T0_US + start, handshake=not mid_stream,
                                               cycles=None))
        sessions = self.hmis + self.ews
        for _ in range(n_short):
            master = rng.choice(sessions)
            plc = rng.choice(self.plcs)
            plan = self._plan(master, plc)
            start = rng.randint(0, max(1, self.duration_us * 85 // 100))
            # a session lasts a few cycles, at most ~10% of the capture, so that most of them close in it
            cycles = max(2, min(rng.randint(3, 40), self.duration_us // 10 // plan[1]))
            self.flows.append(self._connection(master, plc, plan, T0_US + start, handshake=True, cycles=cycles))

    # ---- planning
    def _plan(self, master: Host, plc: Host) -> tuple[list[Item], int, float, bool]:
        """(items, period in us, probability of a write per cycle, pipelined)."""
        rng = self.rng
        items = []
        for _ in range(rng.choice((1, 1, 2, 2, 3, 3, 4, 5, 6))):
            fc = rng.choices(READ_FCS, READ_WEIGHTS)[0]
            if fc in (3, 4):
                qty = rng.choice((1, 2, 4, 8, 10, 16, 20, 32, 50, 64, 100, 125))
                addr = rng.choice((0, 0, 100, 1000, 3000, 4000, 30000, rng.randrange(0, 65536 - qty)))
            else:
                qty = rng.choice((8, 16, 16, 32, 64, 100, 256, 1000, 2000))
                addr = rng.choice((0, 0, 100, 1000, rng.randrange(0, 65536 - qty)))
            items.append(Item(fc, rng.choice(plc.units), addr, qty))
        if rng.random() < 0.05:  # a plan using FC 23 to read back and write in one request
            items.append(Item(23, rng.choice(plc.units), 0, rng.randint(1, 32), 200, rng.randint(1, 16)))
        if rng.random() < 0.03:  # a misconfigured poll: always answered by an exception
            items[rng.randrange(len(items))].fails = rng.choice((2, 2, 2, 1, 11))
        period = 1000 * rng.choices(PERIODS_MS, PERIOD_WEIGHTS)[0]
        p_write = {"scada": 0.01, "hmi": 0.05, "ews": 0.3}[master.kind]
        pipelined = rng.random() < 0.10
        return items, period, p_write, pipelined

    def _write_item(self, plc: Host) -> Item:
        rng = self.rng
        fc = rng.choices(WRITE_FCS, WRITE_WEIGHTS)[0]
        unit = rng.choice(plc.units)
        addr = rng.randrange(0, 10000)
        if fc == 15:
            return Item(fc, unit, addr, rng.choice((1, 8, 16, 32, 100)))
        if fc == 16:
            return Item(fc, unit, addr, rng.choice((1, 2, 4, 10, 32, 100, 123)))
        if fc == 23:
            return Item(fc, unit, addr, rng.randint(1, 32), rng.randrange(0, 10000), rng.randint(1, 16))
        return Item(fc, unit, addr, 1)

    # ---- one connection
    def _connection(self, master: Host, plc: Host, plan, t: int, handshake: bool, cycles: int | None
                    ) -> Iterator[Packet]:
        """Generator of one connection's frames, in time order."""
        rng = self.rng
        mb = self.mb
        stats = self.stats
        items, period, p_write, pipelined = plan
        c = TcpConn(master, plc, master.ephemeral(), MODBUS_PORT, rng, wrap=rng.random() < 0.01,
                    per_connection_ipid=True)
        stats["connections"] += 1
        if handshake:
            stats["handshakes"] += 1
            t = yield from c.handshake(t, rng)
            t += rng.randint(200, 5000)
        tid = rng.getrandbits(16)
        cycle = 0
        while cycles is None or cycle < cycles:
            cycle += 1
            todo = list(items)
            if rng.random() < p_write:
                todo.append(self._write_item(plc))
            # build the cycle's transactions: (fc, request, response or None)
            txs = []
            for it in todo:
                tid = (tid + 1) & 0xFFFF
                req = mb.request(it, tid)
                r = rng.random()
                if r < 0.0005:
                    stats["unanswered"] += 1
                    txs.append((it.fc, req, None))
                    continue
                exc = it.fails or (rng.choice(EXCEPTION_CODES) if r < 0.0025 else 0)
                if exc:
                    stats["exceptions"] += 1
                txs.append((it.fc, req, mb.response(it, tid, req, exc)))
            if pipelined and len(txs) > 1:
                stats["multi_adu_segments"] += 1
                yield t, c.frame(0, PSH | ACK, b"".join(tx[1] for tx in txs)), tuple(tx[0] for tx in txs)
                t += self._latency(plc)
                answered = [tx for tx in txs if tx[2] is not None]
                if rng.random() < 0.5:
                    if answered:
                        if len(answered) > 1:
                            stats["multi_adu_segments"] += 1
                        yield t, c.frame(1, PSH | ACK, b"".join(tx[2] for tx in answered)), \
                            tuple(tx[0] for tx in answered)
                else:
                    for fc, _, resp in answered:
                        yield from self._send(c, 1, t, resp, fc, plc)
                        t += rng.randint(100, 1500)
                if c.unacked(1):
                    yield c.ack(t, 1)  # the stack acknowledges the unanswered request
            else:
                for i, (fc, req, resp) in enumerate(txs):
                    if i:
                        t += rng.randint(200, 3000)  # master's turnaround
                    yield from self._send(c, 0, t, req, fc, master)
                    t += self._latency(plc)
                    if resp is None:
                        yield c.ack(t, 1)
                        t += 1_000_000 if period >= 1_000_000 else period // 2  # the master's timeout
                    else:
                        yield from self._send(c, 1, t, resp, fc, plc)
                        t += 200
            # next cycle, jittered; a pure ACK from the master if the next request is beyond its ACK delay
            nxt = t + int(period * (0.9 + 0.2 * rng.random()))
            if rng.random() < 0.02:
                nxt += period // 2  # a late cycle (busy master)
            if nxt - t > master.ack_delay_us and c.unacked(0):
                yield c.ack(t + master.ack_delay_us, 0)
            t = nxt
        # close (short sessions only): FIN/ACK both ways, or a reset now and then
        reset = rng.random() < 0.1
        stats["resets" if reset else "closes"] += 1
        yield from c.close(t, rng, reset=reset)

    def _latency(self, plc: Host) -> int:
        return int(plc.latency_us * (0.8 + 0.8 * self.rng.random()))

    def _send(self, c: TcpConn, d: int, t: int, adu: bytes, fc: int, sender: Host) -> Iterator[Packet]:
        """One ADU in one segment, or split across two (header-first stacks, and random splits of big ADUs)."""
        if (sender.header_split and len(adu) > 9) or (len(adu) >= 64 and self.rng.random() < 0.03):
            # At least MBAP + function code in the first segment: tshark 4.0 does not recognise (so does
            # not reassemble) a Modbus/TCP segment shorter than 8 bytes, and the truth must be tshark's.
            cut = 9 if sender.header_split else self.rng.randint(8, len(adu) - 1)
            self.stats["split_adus"] += 1
            yield t, c.frame(d, PSH | ACK, adu[:cut]), ()
            t += self.rng.randint(20, 800)
            yield t, c.frame(d, PSH | ACK, adu[cut:]), (fc,)
        else:
            yield t, c.frame(d, PSH | ACK, adu), (fc,)

    # ---- merge
    def packets(self) -> Iterator[Packet]:
        """All connections merged in time order (ties broken by connection index), up to ``n_packets``."""
        return merge(self.flows, self.n_packets)


# ----------------------------------------------------------------------------------------------- writers
class PcapWriter:
    """Classic pcap, little-endian, microsecond timestamps, LINKTYPE_ETHERNET."""

    def __init__(self, f: BinaryIO, snaplen: int = 65535) -> None:
        self.f = f
        f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        self.buf: list[bytes] = []

    def write(self, t_us: int, frame: bytes) -> None:
        n = len(frame)
        self.buf.append(PCAP_REC.pack(t_us // 1_000_000, t_us % 1_000_000, n, n))
        self.buf.append(frame)
        if len(self.buf) >= 16384:
            self.flush()

    def flush(self) -> None:
        self.f.write(b"".join(self.buf))
        self.buf.clear()


class PcapngWriter(PcapWriter):
    """pcapng: a Section Header Block, one Ethernet Interface Description Block (microseconds), EPBs."""

    def __init__(self, f: BinaryIO, snaplen: int = 65535) -> None:
        self.f = f
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        f.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body + struct.pack("<I", 12 + len(shb_body)))
        # IDB with if_tsresol = 6 (microseconds, also the default) and opt_endofopt
        opts = struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0)
        idb_body = struct.pack("<HHI", 1, 0, snaplen) + opts
        f.write(struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body)))
        self.buf = []

    def write(self, t_us: int, frame: bytes) -> None:
        n = len(frame)
        pad = -n & 3
        total = 32 + n + pad
        self.buf.append(EPB_HEAD.pack(6, total, 0, t_us >> 32, t_us & 0xFFFFFFFF, n, n))
        self.buf.append(frame + b"\0" * pad + total.to_bytes(4, "little"))
        if len(self.buf) >= 16384:
            self.flush()


# ------------------------------------------------------------------------------------------------- main
def generate(out: Path, packets: int, flows: int, seed: int, pcapng: bool = False, gz: bool = False,
             quiet: bool = True) -> dict:
    """Write the capture to ``out`` and its truth to ``out.truth.json``; return the truth dict."""
    started = time.perf_counter()
    traffic = Traffic(packets, flows, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    hist: Counter[int] = Counter()
    n = 0
    pdus = 0
    with open(tmp, "wb") as raw, (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) if gz else nullcontext(raw)
    ) as f:
        writer = (PcapngWriter if pcapng else PcapWriter)(f)
        for t, frame, fcs in traffic.packets():
            writer.write(t, frame)
            n += 1
            if fcs:
                pdus += len(fcs)
                hist.update(fcs)
            if not quiet and not n % 200_000:
                print(f"  {n:,} packets ...", file=sys.stderr)
        writer.flush()
    tmp.replace(out)
    elapsed = time.perf_counter() - started
    truth = {
        "packets": n,
        "protocols": {"modbus": {"pdus": pdus, "func_hist": {str(k): v for k, v in sorted(hist.items())}}},
        "generator": {
            "name": "gen_modbus",
            "version": GENERATOR_VERSION,
            "packets": packets,
            "flows": flows,
            "seed": seed,
            "format": "pcapng" if pcapng else "pcap",
            "gzip": gz,
            "bytes": out.stat().st_size,
            "traffic": dict(sorted(traffic.stats.items())),
            "seconds": round(elapsed, 3),
        },
    }
    truth_path = out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def default_path(packets: int, flows: int, seed: int, pcapng: bool, gz: bool) -> Path:
    name = f"modbus-{packets}-f{flows}-s{seed}.{'pcapng' if pcapng else 'pcap'}" + (".gz" if gz else "")
    return Path(__file__).resolve().parent / "out" / name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets to write (default 1,000,000)")
    ap.add_argument("--flows", type=int, default=2000, help="TCP connections over the capture (default 2,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1); same seed, same bytes")
    ap.add_argument("-o", "--output", type=Path, help="output file (default bench/out/modbus-N-fF-sS.pcap)")
    ap.add_argument("--pcapng", action="store_true", help="write pcapng (SHB, IDB, EPB) instead of pcap")
    ap.add_argument("--gzip", action="store_true", help="gzip-compress the output (level 1)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args(argv)
    if a.packets < 1 or a.flows < 1:
        ap.error("--packets and --flows must be >= 1")
    out = a.output or default_path(a.packets, a.flows, a.seed, a.pcapng, a.gzip)
    truth = generate(out, a.packets, a.flows, a.seed, a.pcapng, a.gzip, quiet=a.quiet)
    g = truth["generator"]
    mb = truth["protocols"]["modbus"]
    print(f"{out}: {truth['packets']:,} packets, {mb['pdus']:,} Modbus PDUs, "
          f"{g['traffic'].get('connections', 0):,} connections, {g['bytes'] / 1e6:.1f} MB "
          f"in {g['seconds']:.1f} s ({truth['packets'] / max(g['seconds'], 1e-9):,.0f} packets/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
