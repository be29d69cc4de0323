"""Layer 2-4 decoding: link layers, IPv4/IPv6 (with fragment reassembly), TCP and UDP headers.

One precompiled ``struct.Struct`` per header, applied with ``unpack_from`` on the captured bytes; no
object per header. ``Decoder.decode`` returns a plain tuple (see ``Decoded``) or None for frames that
carry nothing we analyse (each such frame is counted under a stable name).

Link types (https://www.tcpdump.org/linktypes.html): 0 NULL/BSD loopback, 1 Ethernet (802.1Q, 802.1ad
and QinQ tags), 12/14/101 raw IP, 108 OpenBSD loopback, 113 Linux SLL, 228 raw IPv4, 229 raw IPv6,
276 Linux SLL2.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from sensor.counters import Counters

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
VLAN_TAGS = (0x8100, 0x88A8, 0x9100, 0x9200)

_ETH = struct.Struct("!6s6sH")
_U16 = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBH")
_UDP = struct.Struct("!HHH")

# IPv6 extension headers that we walk through (RFC 8200 4.1); 44 (fragment) is handled apart.
_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_AH = 51

TCP = 6
UDP = 17


class Decoded(NamedTuple):
    """A decoded IP packet (``proto`` is 6, 17 or another IP protocol number) or a layer-2 frame."""

    ethertype: int  # 0x0800 / 0x86DD for IP, else the layer-2 protocol's ethertype
    src: bytes  # IP address bytes (4 or 16), or the source MAC for layer-2 frames
    dst: bytes
    proto: int  # IP protocol, 0 for layer-2 frames
    l4: bytes  # the IP payload (TCP/UDP header + data), or the frame payload after the ethertype
    l4_len: int  # payload length announced by the IP header (> len(l4) when the capture cut it)
    smac: bytes | None
    dmac: bytes | None


def mac_str(mac: bytes | None) -> str | None:
    return None if mac is None else mac.hex(":")


class _FragmentSet:
    __slots__ = ("pieces", "total", "size", "first_seen", "header")

    def __init__(self, now: float) -> None:
        self.pieces: dict[int, bytes] = {}
        self.total = -1  # known once the last fragment arrived
        self.size = 0
        self.first_seen = now


MAX_DATAGRAM = 65535
# One datagram's fragments: a real sender cuts a datagram in at most a few dozen pieces that barely
# overlap. More pieces, or more stored bytes than twice the largest datagram, is an overlap flood
# (every arriving piece would re-run the lay-down over all the others): the set is dropped.
MAX_PIECES_PER_SET = 256
MAX_BYTES_PER_SET = 2 * MAX_DATAGRAM


class Decoder:
    """Stateful only for IP fragment reassembly, bounded by ``max_sets`` incomplete datagrams,
    ``max_bytes`` stored across them (the oldest set goes first when either is reached), per-set
    piece and byte caps, and ``timeout``."""

    def __init__(self, counters: Counters, max_sets: int = 4096, timeout: float = 30.0, max_bytes: int = 16 << 20) -> None:
        self.counters = counters
        self.max_sets = max_sets
        self.timeout = timeout
        self.max_bytes = max_bytes
        # insertion order is age order: sets are created on a clock that only moves forward
        self._frags: dict[tuple[bytes, bytes, int, int], _FragmentSet] = {}
        self.frag_bytes = 0  # bytes stored across every incomplete set
        self.frag_peak = 0  # the most bytes ever stored at once (a gauge, see Pipeline.gauges)
        self.now = 0.0  # monotonic capture clock, set by the pipeline

    # -- link layer ---------------------------------------------------------------------------
    def decode(self, linktype: int, data: bytes) -> Decoded | None:
        smac = dmac = None
        if linktype == 1:
            if len(data) < 14:
                self.counters["link_truncated"] += 1
                return None
            dmac, smac, etype = _ETH.unpack_from(data, 0)
            off = 14
            while etype in VLAN_TAGS:
                if len(data) < off + 4:
                    self.counters["link_truncated"] += 1
                    return None
                (etype,) = _U16.unpack_from(data, off + 2)
                off += 4
            if etype < 0x0600:
                # 802.3 length field: an LLC frame. UI frames (DSAP == SSAP, control 0x03) are handed
                # on with the SAP as a pseudo-ethertype (< 0x0600, so no real ethertype collides):
                # BACnet/Ethernet rides on SAP 0x82. The length cuts the padding to 60 octets.
                end = off + etype  # a length below 3 cannot hold the LLC header: not a UI frame
                if off + 3 <= end <= len(data) and data[off] == data[off + 1] and data[off + 2] == 0x03:
                    return Decoded(data[off], smac, dmac, 0, data[off + 3 : end], end - off - 3, smac, dmac)
                self.counters["non_ip_frames"] += 1
                return None
        elif linktype == 113:  # Linux cooked capture v1
            if len(data) < 16:
                self.counters["link_truncated"] += 1
                return None
            (etype,) = _U16.unpack_from(data, 14)
            off = 16
        elif linktype == 276:  # Linux cooked capture v2
            if len(data) < 20:
                self.counters["link_truncated"] += 1
                return None
            (etype,) = _U16.unpack_from(data, 0)
            off = 20
        elif linktype in (101, 12, 14):  # raw IP, version from the first nibble
            if not data:
                self.counters["link_truncated"] += 1
                return None
            etype = ETH_IPV4 if data[0] >> 4 == 4 else ETH_IPV6
            off = 0
        elif linktype == 228:
            etype, off = ETH_IPV4, 0
        elif linktype == 229:
            etype, off = ETH_IPV6, 0
        elif linktype in (0, 108):  # loopback: 4-byte address family (host order for 0, network for 108)
            if len(data) < 4:
                self.counters["link_truncated"] += 1
                return None
            fam = struct.unpack_from("<I" if linktype == 0 and data[0] else "!I", data, 0)[0]
            etype = ETH_IPV4 if fam == 2 else ETH_IPV6 if fam in (10, 24, 28, 30) else 0
            off = 4
        else:
            self.counters[f"linktype_unsupported_{linktype}"] += 1
            return None
        if etype == ETH_IPV4:
            return self._ipv4(data, off, smac, dmac)
        if etype == ETH_IPV6:
            return self._ipv6(data, off, smac, dmac)
        return Decoded(etype, smac or b"", dmac or b"", 0, data[off:], len(data) - off, smac, dmac)

    # -- IPv4 ---------------------------------------------------------------------------------
    def _ipv4(self, data: bytes, off: int, smac: bytes | None, dmac: bytes | None) -> Decoded | None:
        if len(data) < off + 20:
            self.counters["ip_truncated"] += 1
            return None
        vihl, _tos, total, ident, frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(data, off)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl:
            self.counters["ip_bad_header"] += 1
            return None
        start = off + ihl  # options (ihl > 20) are skipped
        end = off + total
        if len(data) < start:
            self.counters["ip_truncated"] += 1
            return None
        payload = data[start:end]
        l4_len = total - ihl
        if frag & 0x3FFF:  # MF set or offset non-zero: a fragment
            self.counters["ip_fragments"] += 1
            if len(payload) < l4_len:
                self.counters["ip_fragment_truncated"] += 1
                return None
            whole = self._reassemble((src, dst, ident, proto), (frag & 0x1FFF) * 8, bool(frag & 0x2000), payload)
            if whole is None:
                return None
            return Decoded(ETH_IPV4, src, dst, proto, whole, len(whole), smac, dmac)
        return Decoded(ETH_IPV4, src, dst, proto, payload, l4_len, smac, dmac)

    # -- IPv6 ---------------------------------------------------------------------------------
    def _ipv6(self, data: bytes, off: int, smac: bytes | None, dmac: bytes | None) -> Decoded | None:
        if len(data) < off + 40:
            self.counters["ip_truncated"] += 1
            return None
        vtcfl, plen, nxt, _hop, src, dst = _IPV6.unpack_from(data, off)
        if vtcfl >> 28 != 6:
            self.counters["ip_bad_header"] += 1
            return None
        pos = off + 40
        end = pos + plen
        frag_info: tuple[int, bool, int] | None = None
        for _ in range(16):  # bounded walk of the extension header chain
            if nxt in _IPV6_EXT or nxt == _IPV6_AH:
                if len(data) < pos + 2:
                    self.counters["ip_truncated"] += 1
                    return None
                hlen = (data[pos + 1] + 2) * 4 if nxt == _IPV6_AH else (data[pos + 1] + 1) * 8
                nxt = data[pos]
                pos += hlen
                self.counters["ipv6_extension_headers"] += 1
            elif nxt == 44:  # fragment header
                if len(data) < pos + 8:
                    self.counters["ip_truncated"] += 1
                    return None
                fo, ident = struct.unpack_from("!HI", data, pos + 2)
                frag_info = (fo & 0xFFF8, bool(fo & 1), ident)
                nxt = data[pos]
                pos += 8
            else:
                break
        if pos > end:
            self.counters["ip_bad_header"] += 1
            return None
        payload = data[pos:end]
        l4_len = end - pos
        if frag_info is not None:
            offset, more, ident = frag_info
            self.counters["ip_fragments"] += 1
            if offset == 0 and not more:  # atomic fragment (RFC 6946)
                return Decoded(ETH_IPV6, src, dst, nxt, payload, l4_len, smac, dmac)
            if len(payload) < l4_len:
                self.counters["ip_fragment_truncated"] += 1
                return None
            whole = self._reassemble((src, dst, ident, nxt), offset, more, payload)
            if whole is None:
                return None
            return Decoded(ETH_IPV6, src, dst, nxt, whole, len(whole), smac, dmac)
        return Decoded(ETH_IPV6, src, dst, nxt, payload, l4_len, smac, dmac)

    # -- fragments ----------------------------------------------------------------------------
    def _reassemble(self, key: tuple[bytes, bytes, int, int], offset: int, more: bool, piece: bytes) -> bytes | None:
        frags = self._frags
        fs = frags.get(key)
        if fs is None:
            if len(frags) >= self.max_sets:
                self.expire()
                if len(frags) >= self.max_sets:
                    # Full: the oldest incomplete datagram goes. Refusing new ones instead would let a
                    # flood of never-completed first fragments block every real fragmented datagram.
                    if not frags:
                        self.counters["ip_fragment_cap"] += 1
                        return None
                    self._drop(next(iter(frags)), "ip_fragment_cap")
            fs = frags[key] = _FragmentSet(self.now)
        if offset + len(piece) > MAX_DATAGRAM:
            self.counters["ip_fragment_oversize"] += 1
            self._drop(key, None)
            return None
        if offset in fs.pieces:
            self.counters["ip_fragment_duplicate"] += 1
        else:
            if len(fs.pieces) >= MAX_PIECES_PER_SET or fs.size + len(piece) > MAX_BYTES_PER_SET:
                self._drop(key, "ip_fragment_set_cap")
                return None
            fs.pieces[offset] = piece
            fs.size += len(piece)
            self.frag_bytes += len(piece)
            if self.frag_bytes > self.frag_peak:
                self.frag_peak = self.frag_bytes
            if self.frag_bytes > self.max_bytes:
                self._make_room(key)
                if key not in frags:
                    return None
        if not more:
            fs.total = offset + len(piece)
        if fs.total < 0 or fs.size < fs.total:
            return None
        whole = _lay_down(fs)
        if whole is None:
            return None  # a hole remains (overlaps inflated ``size``); wait for more pieces
        data, overlap = whole
        self._drop(key, None)
        if overlap:
            self.counters["ip_fragment_overlap"] += 1
        self.counters["ip_fragments_reassembled"] += 1
        return data

    def _drop(self, key: tuple[bytes, bytes, int, int], counter: str | None) -> None:
        fs = self._frags.pop(key, None)
        if fs is not None:
            self.frag_bytes -= fs.size
            if counter:
                self.counters[counter] += 1

    def _make_room(self, keep: tuple[bytes, bytes, int, int]) -> None:
        """Over ``max_bytes``: drop the oldest sets (``keep``, the one just fed, last)."""
        frags = self._frags
        while self.frag_bytes > self.max_bytes and frags:
            oldest = next(iter(frags))
            if oldest == keep and len(frags) > 1:
                frags[keep] = frags.pop(keep)  # to the young end
                continue
            self._drop(oldest, "ip_fragment_memory_cap")

    def expire(self) -> None:
        """Drop fragment sets older than the timeout (called periodically by the pipeline)."""
        limit = self.now - self.timeout
        frags = self._frags
        dropped = 0
        # oldest first: stop at the first set still young (a scan of every set per call would cost
        # O(sets) for each new datagram of a flood that keeps the table full)
        while frags:
            key = next(iter(frags))
            if frags[key].first_seen >= limit:
                break
            self._drop(key, None)
            dropped += 1
        if dropped:
            self.counters["ip_fragment_timeout"] += dropped

    @property
    def pending_fragment_sets(self) -> int:
        return len(self._frags)


def _lay_down(fs: _FragmentSet) -> tuple[bytes, bool] | None:
    """The datagram from its pieces, laid down in arrival order; where they overlap the first-arrived
    bytes win (RFC 5722 tells IPv6 hosts to drop such datagrams; we keep them, count the overlap, and
    take the first copy, as Linux does for IPv4). None while a hole remains. Unfilled runs are found
    with ``bytearray.find`` (C speed), never byte by byte in Python."""
    total = fs.total
    out = bytearray(total)
    filled = bytearray(total)  # 1 where a byte has been placed
    overlap = False
    for off, p in fs.pieces.items():
        end = min(off + len(p), total)
        i = off
        while i < end:
            j = filled.find(0, i, end)  # the next unfilled byte
            if j < 0:
                overlap = True
                break
            if j > i:
                overlap = True
            k = filled.find(1, j, end)  # the end of that unfilled run
            if k < 0:
                k = end
            out[j:k] = p[j - off : k - off]
            filled[j:k] = b"\x01" * (k - j)
            i = k
    if filled.find(0) >= 0:
        return None
    return bytes(out), overlap


def parse_tcp(l4: bytes) -> tuple[int, int, int, int, int, bytes] | None:
    """(sport, dport, seq, ack, flags, payload) or None when the header is cut or invalid."""
    if len(l4) < 20:
        return None
    sport, dport, seq, ack, doff, flags, _win = _TCP.unpack_from(l4, 0)
    hl = (doff >> 4) * 4
    if hl < 20 or hl > len(l4):
        return None
    return sport, dport, seq, ack, flags, l4[hl:]


def parse_udp(l4: bytes) -> tuple[int, int, bytes] | None:
    if len(l4) < 8:
        return None
    sport, dport, ulen = _UDP.unpack_from(l4, 0)
    if ulen < 8:
        return None
    return sport, dport, l4[8:ulen]
