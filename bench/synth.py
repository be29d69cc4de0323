"""Wire-level building blocks of the per-protocol synthetic captures (bench/gen_protocols.py).

bench/gen_modbus.py builds its Modbus capture from the same TCP pieces; the other protocols share
what is here, written the same way (reusing its checksum identity, connection class, merge and pcap
writer):

- ``Host``: an IP address, a MAC, a TTL, a TCP window and an IP id counter (shared by the host's
  connections and datagrams).
- ``TcpConn`` (from gen_modbus, IP ids from the hosts' counters): one TCP connection, any ports;
  builds whole Ethernet/IPv4/TCP frames with correct sequence and acknowledgment numbers, lengths
  and checksums (one big-int operation per frame), and ``TcpConn.send`` segments a message the way a
  stack would (one segment, or split at given offsets).
- ``udp_frame``: one Ethernet/IPv4/UDP datagram (unicast or broadcast), valid checksums.
- ``merge`` (from gen_modbus): time-ordered merge of the per-connection frame generators, up to N packets.
- ``write_capture``: streams the merged frames into a classic pcap and counts the truth.

A frame travels as ``(t_us, frame bytes, counts)``; ``counts`` is a tuple of ``(protocol, key)``
pairs of what tshark will count in that frame: ``(proto, None)`` is one PDU, ``(proto, "0x4c")`` one
function-histogram entry. Message builders keep these tuples as constants, so counting costs one
``Counter.update`` per frame.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from gen_modbus import ACK, FIN, PSH, RST, SYN, T0_US, PcapWriter, TcpConn, _checksum, merge

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "T0_US", "Counts", "Host", "Packet", "TcpConn", "merge", "udp_frame",
           "write_capture"]

Counts = tuple[tuple[str, "str | None"], ...]
Packet = tuple[int, bytes, Counts]  # (time in microseconds, Ethernet frame, what tshark counts in it)
NONE: Counts = ()

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
