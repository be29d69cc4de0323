"""Frames and pcap records built with ``struct``, fast enough for captures of millions of packets.

Every frame is Ethernet II / IPv4 (20-byte header) / TCP or UDP, with valid IPv4 and TCP/UDP
checksums: the ones'-complement sum is computed with the identity "a big-endian number is congruent,
modulo 0xffff, to the sum of its 16-bit words" (one big-integer operation per packet, the trick
``bench/gen_modbus.py`` uses). IP fragments carry a valid IPv4 header checksum; their piece of the
transport header is whatever the scenario puts there.

Files are classic pcap (little-endian, microseconds, LINKTYPE_ETHERNET, snaplen 65535), streamed:
``PcapFile.write`` costs one ``struct.pack`` and one buffered write per packet.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from types import TracebackType
from typing import Self

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
_RECORD = struct.Struct("<IIII")
_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")

MAX_PCAP_SECONDS = 0xFFFFFFFF  # a classic pcap's seconds field is unsigned 32 bits (early 2106)


def ip(text: str) -> bytes:
    """Dotted IPv4 text to its 4 bytes."""
    return socket.inet_aton(text)


def mac_for(addr: bytes) -> bytes:
    """A stable locally administered MAC per IPv4 address (02:00:<the four address bytes>)."""
    return b"\x02\x00" + addr


def _checksum(s: int) -> int:
    """Ones'-complement checksum from any integer congruent to the words' sum modulo 0xffff."""
    s %= 0xFFFF
    return 0xFFFF - (s or 0xFFFF)


def _words(data: bytes) -> int:
    """``data`` read as one big-endian integer (padded to whole 16-bit words): congruent to its word sum."""
    if not data:
        return 0
    return int.from_bytes(data + b"\0" if len(data) & 1 else data, "big")


def ipv4_header(
    src: bytes, dst: bytes, proto: int, payload_len: int, ident: int = 0, frag: int = 0x4000, ttl: int = 64
) -> bytes:
    """A 20-byte IPv4 header with a valid checksum. ``frag`` is flags+offset (0x4000: DF, no fragment)."""
    total = 20 + payload_len
    addr = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    csum = _checksum(0x4500 + total + ident + frag + (ttl << 8 | proto) + addr)
    return _IPV4.pack(0x45, 0, total, ident, frag, ttl, proto, csum, src, dst)


def tcp_frame(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    ident: int = 0,
    window: int = 8192,
) -> bytes:
    """Ethernet / IPv4 / TCP (no options) carrying ``payload``, checksums valid."""
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    tcp_len = 20 + len(payload)
    addr = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    offflags = 0x5000 | flags
    s = addr + 6 + tcp_len + sport + dport + seq + ack + offflags + window + _words(payload)
    tcp = _TCP.pack(sport, dport, seq, ack, offflags >> 8, flags, window, _checksum(s), 0)
    return _ETH.pack(mac_for(dst), mac_for(src), 0x0800) + ipv4_header(src, dst, 6, tcp_len, ident) + tcp + payload


def udp_frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """Ethernet / IPv4 / UDP carrying ``payload``, checksums valid."""
    udp_len = 8 + len(payload)
    addr = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    s = addr + 17 + udp_len + sport + dport + udp_len + _words(payload)
    csum = _checksum(s) or 0xFFFF  # 0 means "no checksum" in UDP over IPv4
    udp = _UDP.pack(sport, dport, udp_len, csum)
    return _ETH.pack(mac_for(dst), mac_for(src), 0x0800) + ipv4_header(src, dst, 17, udp_len, ident) + udp + payload


def ipv4_fragment_frame(src: bytes, dst: bytes, proto: int, ident: int, offset: int, more: bool, piece: bytes) -> bytes:
    """One IPv4 fragment: ``piece`` at byte ``offset`` (a multiple of 8) of datagram ``ident``."""
    if offset % 8:
        raise ValueError("fragment offsets are multiples of 8 bytes")
    frag = (0x2000 if more else 0) | (offset // 8)
    return _ETH.pack(mac_for(dst), mac_for(src), 0x0800) + ipv4_header(src, dst, proto, len(piece), ident, frag) + piece


class PcapFile:
    """A classic pcap being written: ``write(ts, frame)`` per packet, in the order given."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close() / __exit__
        self._fh.write(_PCAP_HEADER)
        self._pack = _RECORD.pack
        self.packets = 0
        self.bytes = 0

    def write(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        usec = round((ts - sec) * 1_000_000)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        if not 0 <= sec <= MAX_PCAP_SECONDS:
            raise ValueError(f"timestamp {ts} does not fit a classic pcap")
        n = len(frame)
        self._fh.write(self._pack(sec, usec, n, n))
        self._fh.write(frame)
        self.packets += 1
        self.bytes += n

    def write_record(self, ts: float, frame: bytes, orig_len: int) -> None:
        """A record whose frame was cut by the capture's snaplen (``orig_len`` > ``len(frame)``)."""
        sec = int(ts)
        usec = round((ts - sec) * 1_000_000) % 1_000_000
        self._fh.write(self._pack(sec, usec, len(frame), orig_len))
        self._fh.write(frame)
        self.packets += 1
        self.bytes += len(frame)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
