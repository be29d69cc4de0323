"""Crafting helpers shared by the capture scripts: TCP conversations with real handshakes and
sequence numbers, UDP exchanges, deterministic timestamps, written with scapy's writer.

Everything is deterministic (fixed clock, fixed MACs/ISNs) so regenerated captures are byte-identical.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapWriter

PCAP_DIR = Path(__file__).resolve().parents[2] / "pcaps"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the crafted plant's clock start
MAX_CAPTURE_BYTES = 100_000  # the crafted captures are committed: each one stays small


def mac_for(ip: str) -> str:
    """A stable locally-administered MAC per IP (02:00:<ip bytes>)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"


class Clock:
    """Monotonic capture clock: ``tick(dt)`` advances and returns the new time."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def tick(self, dt: float = 0.001) -> float:
        self.t += dt
        return self.t


class TcpConversation:
    """One TCP connection, client -> server, producing Ether/IP/TCP packets with correct seq/ack."""

    def __init__(self, client: str, cport: int, server: str, sport: int, clock: Clock, isn_c: int = 1000, isn_s: int = 5000):
        self.client, self.cport, self.server, self.sport = client, cport, server, sport
        self.clock = clock
        self.seq_c, self.seq_s = isn_c, isn_s
        self.packets: list[Packet] = []

    def _pkt(self, from_client: bool, flags: str, payload: bytes = b"", dt: float = 0.0005) -> Packet:
        if from_client:
            src, dst, sp, dp, seq, ack = self.client, self.server, self.cport, self.sport, self.seq_c, self.seq_s
        else:
            src, dst, sp, dp, seq, ack = self.server, self.client, self.sport, self.cport, self.seq_s, self.seq_c
        p = Ether(src=mac_for(src), dst=mac_for(dst)) / IP(src=src, dst=dst, ttl=64, id=0) / TCP(
            sport=sp, dport=dp, seq=seq, ack=ack if "A" in flags else 0, flags=flags, window=8192
        )
        if payload:
            p = p / Raw(payload)
        p.time = self.clock.tick(dt)
        self.packets.append(p)
        return p

    def handshake(self) -> "TcpConversation":
        self._pkt(True, "S")
        self.seq_c += 1
        self._pkt(False, "SA")
        self.seq_s += 1
        self._pkt(True, "A")
        return self

    def send(self, from_client: bool, payload: bytes, dt: float = 0.0005) -> Packet:
        p = self._pkt(from_client, "PA", payload, dt)
        if from_client:
            self.seq_c += len(payload)
        else:
            self.seq_s += len(payload)
        return p

    def exchange(self, request: bytes, response: bytes | None, gap: float = 0.01, rtt: float = 0.002) -> None:
        """A request from the client and (optionally) the server's response ``rtt`` later."""
        self.send(True, request, dt=gap)
        if response is not None:
            self.send(False, response, dt=rtt)

    def close(self) -> "TcpConversation":
        self._pkt(True, "FA")
        self.seq_c += 1
        self._pkt(False, "FA")
        self.seq_s += 1
        self._pkt(True, "A")
        return self


def udp_packet(src: str, sport: int, dst: str, dport: int, payload: bytes, ts: float) -> Packet:
    p = Ether(src=mac_for(src), dst=mac_for(dst)) / IP(src=src, dst=dst, ttl=64, id=0) / UDP(sport=sport, dport=dport) / Raw(payload)
    p.time = ts
    return p


def write_pcap(name: str, packets: Iterable[Packet], directory: Path = PCAP_DIR) -> Path:
    """Write packets sorted by time into ``pcaps/<name>`` (classic pcap, Ethernet).

    Written next to it and renamed into place: a sensor replaying ``pcaps/`` while the captures are
    regenerated (the soak, a demo) reads the old file or the new one, never half of one (a soak pass
    once read a capture cut short while it was being rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    partial = path.with_name(f".{name}.partial")
    ordered = sorted(packets, key=lambda p: float(p.time))
    with PcapWriter(str(partial), linktype=1, sync=False) as w:
        for p in ordered:
            w.write(p)
    os.replace(partial, path)
    return path


def write_normal_and_attack(protocol: str, build_normal: Callable[[], Iterable[Packet]],
                            build_attack: Callable[[], Iterable[Packet]], directory: Path | None = None) -> list[Path]:
    """Write ``<protocol>_normal.pcap`` then ``<protocol>_attack.pcap`` into ``directory`` (default pcaps/)."""
    out_dir = directory or PCAP_DIR
    # Built and written one after the other, normal first: the order the bytes were always made in.
    normal = write_pcap(f"{protocol}_normal.pcap", build_normal(), out_dir)
    attack = write_pcap(f"{protocol}_attack.pcap", build_attack(), out_dir)
    return [normal, attack]


def check_and_print_sizes(paths: list[Path], max_bytes: int = MAX_CAPTURE_BYTES) -> list[Path]:
    """Fail if a capture reached ``max_bytes``, print each path with its size; return ``paths``."""
    for p in paths:
        size = p.stat().st_size
        assert size < max_bytes, f"{p} is {size} bytes"
        print(f"{p} ({size} bytes)")
    return paths


def rule_captures_cli(description: str, generate: Callable[[Path], list[Path]], argv: list[str] | None = None) -> int:
    """Command line of the per-rule capture scripts: ``--out DIR``, then print every file written."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=PCAP_DIR, help="output folder (default: pcaps/)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0
