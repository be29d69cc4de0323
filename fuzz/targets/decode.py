"""The link/IP decoder: every supported link type, VLAN tags, LLC, IPv4 options and fragments, IPv6
extension headers and fragments, then the TCP and UDP header parsers on what it returns.

Records (``fuzz.records``) are frames; the low nibble of the control byte picks the link type and the
high nibble advances the capture clock by that many seconds, so fragment sets time out and the
bounded fragment table fills (it is kept small here, in sets and in bytes; the bytes it counts must
be the bytes its sets hold).
"""

from __future__ import annotations

from fuzz import records
from fuzz.invariants import InvariantViolation, check_counters, require
from sensor.counters import Counters
from sensor.decode import ETH_IPV4, ETH_IPV6, Decoded, Decoder, parse_tcp, parse_udp

# Every link type the decoder knows, and one it does not (DLT_USER0).
LINKTYPES = (1, 113, 276, 101, 12, 14, 228, 229, 0, 108, 147)
MAX_SETS = 8
MAX_FRAGMENT_BYTES = 4096  # all incomplete datagrams together: small, so the oldest sets make room
TIMEOUT = 30.0


def _check(d: Decoded, frame: bytes) -> None:
    require(isinstance(d, Decoded), f"decoded a {type(d).__name__}")
    require(0 <= d.ethertype <= 0xFFFF, f"ethertype {d.ethertype}")
    require(0 <= d.proto <= 255, f"IP protocol {d.proto}")
    require(isinstance(d.l4, bytes), f"l4 is a {type(d.l4).__name__}")
    require(d.l4_len >= 0, f"negative announced payload length {d.l4_len}")
    if d.ethertype == ETH_IPV4:
        require(len(d.src) == 4 and len(d.dst) == 4, "IPv4 addresses not 4 bytes")
    elif d.ethertype == ETH_IPV6:
        require(len(d.src) == 16 and len(d.dst) == 16, "IPv6 addresses not 16 bytes")
    else:
        require(d.proto == 0, "a layer-2 frame with an IP protocol")
        require(len(d.l4) <= len(frame), "layer-2 payload longer than the frame")
    require(len(d.l4) <= 65535 or len(d.l4) <= len(frame), f"payload of {len(d.l4)} bytes")
    if d.proto == 6:
        tcp = parse_tcp(d.l4)
        if tcp is not None:
            sport, dport, seq, ack, flags, payload = tcp
            require(0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF, "TCP port out of range")
            require(0 <= seq < 1 << 32 and 0 <= ack < 1 << 32 and 0 <= flags <= 0xFF, "TCP field out of range")
            require(len(payload) <= len(d.l4) - 20, "TCP payload longer than the segment")
    elif d.proto == 17:
        udp = parse_udp(d.l4)
        if udp is not None:
            require(len(udp[2]) <= len(d.l4) - 8, "UDP payload longer than the datagram")


def test_one_input(data: bytes) -> None:
    counters = Counters()
    decoder = Decoder(counters, max_sets=MAX_SETS, timeout=TIMEOUT, max_bytes=MAX_FRAGMENT_BYTES)
    for ctl, frame in records.records(data):
        decoder.now += ctl >> 4
        d = decoder.decode(LINKTYPES[(ctl & 0x0F) % len(LINKTYPES)], frame)
        if d is not None:
            _check(d, frame)
        if ctl >> 4 == 0x0F:
            decoder.expire()
        require(decoder.pending_fragment_sets <= MAX_SETS, f"{decoder.pending_fragment_sets} fragment sets")
        stored = sum(fs.size for fs in decoder._frags.values())
        if decoder.frag_bytes != stored or stored > MAX_FRAGMENT_BYTES:
            raise InvariantViolation(f"fragment bytes {decoder.frag_bytes}, sets hold {stored}")
    check_counters(counters)
