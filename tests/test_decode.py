"""Layer 2-4 decoding (sensor/decode.py) from hand-built frames.

Link layers (Ethernet with 802.1Q/QinQ, Linux SLL and SLL2, raw IP, BSD loopback), IPv4 with options
and fragments, IPv6 with extension headers and fragments, and the TCP/UDP header parsers. Every
oddity must be counted under its name and never raise; the pipeline tests at the end check that
truncated and malformed packets are counted while the packets around them still go through.
"""

from __future__ import annotations

import pytest

from conftest import (
    TcpConv,
    ether,
    ipv4,
    ipv6,
    mbap,
    null_loopback,
    run_packets,
    sll,
    sll2,
    tcp,
    udp,
    v6_fragment,
    v6_options,
    v6_routing,
)
from sensor.counters import Counters
from sensor.decode import ETH_IPV4, ETH_IPV6, Decoder, parse_tcp, parse_udp

SEG = tcp(40000, 502, 1000, 2000, "PA", b"hello modbus")
V4 = ipv4(SEG, "192.168.1.10", "192.168.1.20")
V6 = ipv6(SEG, "fd00::10", "fd00::20")


@pytest.fixture
def dec() -> Decoder:
    return Decoder(Counters())


def counts(d: Decoder) -> dict[str, int]:
    return {k: v for k, v in d.counters.items() if v}


# ---------------------------------------------------------------------------------------------------
# Link layers
# ---------------------------------------------------------------------------------------------------
def test_ethernet_ipv4(dec: Decoder) -> None:
    r = dec.decode(1, ether(V4, src=b"\xaa" * 6, dst=b"\xbb" * 6))
    assert r is not None
    assert r.ethertype == ETH_IPV4 and r.proto == 6
    assert r.src == bytes([192, 168, 1, 10]) and r.dst == bytes([192, 168, 1, 20])
    assert r.l4 == SEG and r.l4_len == len(SEG)
    assert r.smac == b"\xaa" * 6 and r.dmac == b"\xbb" * 6


def test_ethernet_ipv6(dec: Decoder) -> None:
    r = dec.decode(1, ether(V6, 0x86DD))
    assert r is not None and r.ethertype == ETH_IPV6 and r.proto == 6 and r.l4 == SEG
    assert len(r.src) == 16


def test_ethernet_padding_is_not_payload(dec: Decoder) -> None:
    # A short frame padded to the 60-byte minimum: the IP total length decides where the payload ends.
    small = ipv4(udp(1, 2, b"x"))
    r = dec.decode(1, ether(small) + b"\0" * 20)
    assert r is not None and r.l4 == udp(1, 2, b"x")


@pytest.mark.parametrize(
    "vlans",
    [((0x8100, 10),), ((0x88A8, 100), (0x8100, 10)), ((0x8100, 1), (0x8100, 2)), ((0x9100, 7), (0x8100, 8))],
    ids=["802.1Q", "QinQ-88a8", "double-8100", "9100"],
)
def test_vlan_tags(dec: Decoder, vlans: tuple) -> None:
    r = dec.decode(1, ether(V4, vlans=vlans))
    assert r is not None and r.l4 == SEG and r.proto == 6


def test_vlan_tag_cut(dec: Decoder) -> None:
    frame = ether(V4, vlans=((0x88A8, 100), (0x8100, 10)))
    assert dec.decode(1, frame[:16]) is None
    assert counts(dec) == {"link_truncated": 1}


def test_linux_sll(dec: Decoder) -> None:
    r = dec.decode(113, sll(V4))
    assert r is not None and r.l4 == SEG and r.smac is None
    r6 = dec.decode(113, sll(V6, 0x86DD))
    assert r6 is not None and r6.ethertype == ETH_IPV6 and r6.l4 == SEG


def test_linux_sll2(dec: Decoder) -> None:
    r = dec.decode(276, sll2(V4))
    assert r is not None and r.l4 == SEG
    r6 = dec.decode(276, sll2(V6, 0x86DD))
    assert r6 is not None and r6.ethertype == ETH_IPV6 and r6.l4 == SEG


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_by_version_nibble(dec: Decoder, linktype: int) -> None:
    r4 = dec.decode(linktype, V4)
    r6 = dec.decode(linktype, V6)
    assert r4 is not None and r4.ethertype == ETH_IPV4 and r4.l4 == SEG
    assert r6 is not None and r6.ethertype == ETH_IPV6 and r6.l4 == SEG


def test_raw_ipv4_and_ipv6_linktypes(dec: Decoder) -> None:
    r4 = dec.decode(228, V4)
    r6 = dec.decode(229, V6)
    assert r4 is not None and r4.ethertype == ETH_IPV4 and r4.l4 == SEG
    assert r6 is not None and r6.ethertype == ETH_IPV6 and r6.l4 == SEG


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian-host", "big-endian-host"])
@pytest.mark.parametrize("family,packet,etype", [(2, V4, ETH_IPV4), (24, V6, ETH_IPV6), (28, V6, ETH_IPV6), (30, V6, ETH_IPV6)])
def test_null_loopback(dec: Decoder, endian: str, family: int, packet: bytes, etype: int) -> None:
    r = dec.decode(0, null_loopback(packet, family, endian))
    assert r is not None and r.ethertype == etype and r.l4 == SEG


def test_openbsd_loopback_network_order(dec: Decoder) -> None:
    r = dec.decode(108, null_loopback(V4, 2, ">"))
    assert r is not None and r.l4 == SEG


def test_link_layer_oddities_counted(dec: Decoder) -> None:
    assert dec.decode(1, b"\x00" * 13) is None  # shorter than an Ethernet header
    assert dec.decode(113, b"\x00" * 15) is None
    assert dec.decode(276, b"\x00" * 19) is None
    assert dec.decode(0, b"\x02\x00") is None
    assert dec.decode(101, b"") is None
    assert dec.decode(1, ether(b"\xaa\xaa\x03" + b"\0" * 40, etype=46)) is None  # 802.3 length: LLC
    assert dec.decode(147, V4) is None  # a DLT_USER link type
    assert counts(dec) == {"link_truncated": 5, "non_ip_frames": 1, "linktype_unsupported_147": 1}


def test_non_ip_ethertype_is_a_layer2_frame(dec: Decoder) -> None:
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20
    r = dec.decode(1, ether(arp, etype=0x0806))
    assert r is not None and r.ethertype == 0x0806 and r.proto == 0 and r.l4 == arp


# ---------------------------------------------------------------------------------------------------
# IPv4
# ---------------------------------------------------------------------------------------------------
def test_ipv4_options_skipped(dec: Decoder) -> None:
    router_alert = b"\x94\x04\x00\x00"
    record_route = b"\x07\x0b\x04" + b"\0" * 8  # 11 bytes, padded to 12 with end-of-options
    r = dec.decode(1, ether(ipv4(SEG, options=router_alert + record_route)))
    assert r is not None and r.l4 == SEG and r.l4_len == len(SEG) and r.proto == 6


@pytest.mark.parametrize(
    "packet,name",
    [
        (ipv4(SEG)[:19], "ip_truncated"),
        (ipv4(SEG, version=5), "ip_bad_header"),
        (b"\x44" + ipv4(SEG)[1:], "ip_bad_header"),  # IHL 4: shorter than the fixed header
        (ipv4(SEG, total=10), "ip_bad_header"),  # total length below the header length
        (ipv4(SEG, options=b"\x01" * 40)[:40], "ip_truncated"),  # options cut by the snaplen
    ],
    ids=["cut-header", "version", "ihl", "total", "options-cut"],
)
def test_ipv4_bad_headers_counted(dec: Decoder, packet: bytes, name: str) -> None:
    assert dec.decode(228, packet) is None
    assert counts(dec) == {name: 1}


def test_ipv4_payload_cut_by_snaplen_is_returned_short(dec: Decoder) -> None:
    r = dec.decode(1, ether(V4)[:14 + 20 + 25])
    assert r is not None
    assert len(r.l4) == 25 and r.l4_len == len(SEG)  # the decoder says how much the capture lost


UDP_BIG = udp(5000, 6000, bytes(range(256)) * 2)  # 520 bytes


def fragments(payload: bytes, size: int, ident: int = 7, proto: int = 17) -> list[bytes]:
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off : off + size]
        out.append(ether(ipv4(piece, proto=proto, ident=ident, offset=off, mf=off + size < len(payload))))
    return out


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2], [1, 2, 3, 0]], ids=["in-order", "shuffled", "first-last"])
def test_ipv4_fragments_reassembled(dec: Decoder, order: list[int]) -> None:
    frags = fragments(UDP_BIG, 160)
    results = [dec.decode(1, frags[i]) for i in order]
    assert results[:-1] == [None, None, None]
    whole = results[-1]
    assert whole is not None and whole.proto == 17 and whole.l4 == UDP_BIG and whole.l4_len == len(UDP_BIG)
    assert counts(dec) == {"ip_fragments": 4, "ip_fragments_reassembled": 1}
    assert dec.pending_fragment_sets == 0
    assert parse_udp(whole.l4) == (5000, 6000, UDP_BIG[8:])


def test_ipv4_fragment_duplicate_counted(dec: Decoder) -> None:
    frags = fragments(UDP_BIG, 160)
    results = [dec.decode(1, f) for f in (frags[0], frags[1], frags[1], frags[2], frags[3])]
    assert results[-1] is not None and results[-1].l4 == UDP_BIG
    assert counts(dec)["ip_fragment_duplicate"] == 1
    assert counts(dec)["ip_fragments_reassembled"] == 1


def test_ipv4_fragments_overlapping(dec: Decoder) -> None:
    a = ether(ipv4(UDP_BIG[0:200], proto=17, offset=0, mf=True))
    b = ether(ipv4(UDP_BIG[160:400], proto=17, offset=160, mf=True))
    c = ether(ipv4(UDP_BIG[400:], proto=17, offset=400))
    assert dec.decode(1, c) is None
    assert dec.decode(1, a) is None
    r = dec.decode(1, b)
    assert r is not None and r.l4 == UDP_BIG


def test_ipv4_fragment_overlaps_do_not_hide_a_hole(dec: Decoder) -> None:
    # Overlapping pieces add up to more than the total while 300..400 is still missing.
    a = ether(ipv4(UDP_BIG[0:304], proto=17, offset=0, mf=True))
    a2 = ether(ipv4(UDP_BIG[8:304], proto=17, offset=8, mf=True))
    c = ether(ipv4(UDP_BIG[400:], proto=17, offset=400))
    assert [dec.decode(1, f) for f in (a, a2, c)] == [None, None, None]
    assert dec.pending_fragment_sets == 1
    r = dec.decode(1, ether(ipv4(UDP_BIG[296:400], proto=17, offset=296, mf=True)))
    assert r is not None and r.l4 == UDP_BIG


def test_ipv4_fragment_overlap_first_arrived_wins(dec: Decoder) -> None:
    later = ether(ipv4(b"L" * 200, proto=17, offset=0, mf=True))
    first = ether(ipv4(b"F" * 240, proto=17, offset=160, mf=True))
    last = ether(ipv4(b"E" * 120, proto=17, offset=400))
    dec.decode(1, first)
    dec.decode(1, later)
    r = dec.decode(1, last)
    assert r is not None
    assert r.l4[160:200] == b"F" * 40


def test_ipv4_fragment_from_other_datagrams_kept_apart(dec: Decoder) -> None:
    f1 = fragments(UDP_BIG, 264, ident=1)
    other = udp(1, 2, b"\x77" * 400)
    f2 = fragments(other, 208, ident=2)
    assert dec.decode(1, f1[0]) is None
    assert dec.decode(1, f2[0]) is None
    r1 = dec.decode(1, f1[1])
    r2 = dec.decode(1, f2[1])
    assert r1 is not None and r1.l4 == UDP_BIG
    assert r2 is not None and r2.l4 == other


def test_ipv4_fragment_set_times_out(dec: Decoder) -> None:
    frags = fragments(UDP_BIG, 160)
    dec.now = 100.0
    dec.decode(1, frags[0])
    dec.now = 100.0 + dec.timeout - 1
    dec.expire()
    assert dec.pending_fragment_sets == 1
    dec.now = 100.0 + dec.timeout + 1
    dec.expire()
    assert dec.pending_fragment_sets == 0
    assert counts(dec)["ip_fragment_timeout"] == 1
    # the rest arriving later does not complete a datagram whose head was dropped
    assert [dec.decode(1, f) for f in frags[1:]] == [None, None, None]


def test_ipv4_fragment_cap_hit_and_counted() -> None:
    dec = Decoder(Counters(), max_sets=2, timeout=30.0)
    for ident in (1, 2, 3, 4):
        assert dec.decode(1, fragments(UDP_BIG, 160, ident=ident)[0]) is None
    assert dec.pending_fragment_sets == 2
    assert dec.counters["ip_fragment_cap"] == 2
    # the oldest sets made room (a flood of heads must not lock real datagrams out): the newest complete
    rest = fragments(UDP_BIG, 160, ident=4)[1:]
    assert [dec.decode(1, f) is None for f in rest] == [True, True, False]
    # full again; once the held sets are stale, a new datagram finds room by expiring them
    assert dec.decode(1, fragments(UDP_BIG, 160, ident=5)[0]) is None
    assert dec.pending_fragment_sets == 2
    dec.now = 1000.0
    r = [dec.decode(1, f) for f in fragments(UDP_BIG, 160, ident=9)]
    assert r[-1] is not None and r[-1].l4 == UDP_BIG
    assert dec.counters["ip_fragment_timeout"] == 2
    assert dec.counters["ip_fragment_cap"] == 2


def test_ipv4_fragment_oversize_dropped(dec: Decoder) -> None:
    f = ether(ipv4(b"x" * 16, proto=17, offset=65528, mf=False, ident=5))
    assert dec.decode(1, f) is None
    assert counts(dec)["ip_fragment_oversize"] == 1
    assert dec.pending_fragment_sets == 0


def test_ipv4_fragment_cut_by_snaplen_counted(dec: Decoder) -> None:
    f = fragments(UDP_BIG, 160)[0]
    assert dec.decode(1, f[:60]) is None
    assert counts(dec) == {"ip_fragments": 1, "ip_fragment_truncated": 1}


# ---------------------------------------------------------------------------------------------------
# IPv6
# ---------------------------------------------------------------------------------------------------
def test_ipv6_extension_header_chain(dec: Decoder) -> None:
    chain = v6_options(43) + v6_routing(60) + v6_options(6, pad=10)  # hop-by-hop, routing, dest options
    r = dec.decode(1, ether(ipv6(chain + SEG, nh=0), 0x86DD))
    assert r is not None and r.proto == 6 and r.l4 == SEG and r.l4_len == len(SEG)
    assert counts(dec) == {"ipv6_extension_headers": 3}


def test_ipv6_authentication_header(dec: Decoder) -> None:
    ah = bytes([6, 4, 0, 0]) + b"\0" * 20  # payload length 4 -> (4 + 2) * 4 = 24 bytes
    r = dec.decode(229, ipv6(ah + SEG, nh=51))
    assert r is not None and r.proto == 6 and r.l4 == SEG


def test_ipv6_fragments_reassembled(dec: Decoder) -> None:
    u = udp(5000, 6000, bytes(300))
    first = ipv6(v6_options(44) + v6_fragment(17, 0, True, 99) + u[:160], nh=0)
    second = ipv6(v6_fragment(17, 160, False, 99) + u[160:], nh=44)
    assert dec.decode(1, ether(second, 0x86DD)) is None
    r = dec.decode(1, ether(first, 0x86DD))
    assert r is not None and r.proto == 17 and r.l4 == u
    assert counts(dec)["ip_fragments_reassembled"] == 1


def test_ipv6_atomic_fragment(dec: Decoder) -> None:
    r = dec.decode(229, ipv6(v6_fragment(6, 0, False, 5) + SEG, nh=44))
    assert r is not None and r.proto == 6 and r.l4 == SEG
    assert dec.pending_fragment_sets == 0


def test_ipv6_no_next_header(dec: Decoder) -> None:
    r = dec.decode(229, ipv6(b"", nh=59))
    assert r is not None and r.proto == 59 and r.l4 == b""


@pytest.mark.parametrize(
    "packet,name",
    [
        (ipv6(SEG)[:39], "ip_truncated"),
        (b"\x45" + ipv6(SEG)[1:], "ip_bad_header"),  # version 4 in an IPv6 link type
        (ipv6(v6_options(6), nh=0, plen=4), "ip_bad_header"),  # extension header longer than the payload
        (ipv6(v6_options(6) + SEG, nh=0)[:41], "ip_truncated"),  # extension header cut
        (ipv6(v6_fragment(6, 0, True, 1), nh=44)[:44], "ip_truncated"),  # fragment header cut
    ],
    ids=["cut", "version", "ext-beyond-payload", "ext-cut", "frag-cut"],
)
def test_ipv6_bad_headers_counted(dec: Decoder, packet: bytes, name: str) -> None:
    assert dec.decode(229, packet) is None
    assert dec.counters[name] == 1


def test_ipv6_extension_loop_bounded(dec: Decoder) -> None:
    # 40 hop-by-hop headers each pointing at another one: the walk stops, nothing raises.
    chain = v6_options(0) * 40
    r = dec.decode(229, ipv6(chain, nh=0))
    assert r is None or r.proto == 0


# ---------------------------------------------------------------------------------------------------
# TCP / UDP headers
# ---------------------------------------------------------------------------------------------------
def test_parse_tcp() -> None:
    seg = tcp(1, 502, 0xFFFFFFFF, 7, "SA", b"data", options=b"\x02\x04\x05\xb4")
    assert parse_tcp(seg) == (1, 502, 0xFFFFFFFF, 7, 0x12, b"data")


@pytest.mark.parametrize(
    "seg",
    [tcp(1, 2)[:19], tcp(1, 2, data_offset=4), tcp(1, 2, data_offset=15, payload=b"x" * 10)],
    ids=["cut", "offset-too-small", "offset-beyond-segment"],
)
def test_parse_tcp_bad(seg: bytes) -> None:
    assert parse_tcp(seg) is None


def test_parse_udp() -> None:
    assert parse_udp(udp(53, 1024, b"abc")) == (53, 1024, b"abc")
    assert parse_udp(udp(53, 1024, b"abc")[:7]) is None
    assert parse_udp(udp(53, 1024, b"abc", length=4)) is None
    assert parse_udp(udp(53, 1024, b"abcdef", length=10)) == (53, 1024, b"ab")  # the length field wins


# ---------------------------------------------------------------------------------------------------
# Through the pipeline: counted, never fatal
# ---------------------------------------------------------------------------------------------------
def _modbus_pair() -> TcpConv:
    conv = TcpConv()
    conv.handshake()
    conv.c(mbap(1, 1, b"\x03\x00\x00\x00\x02"))
    conv.s(mbap(1, 1, b"\x03\x04\x00\x01\x00\x02"))
    return conv


def test_pipeline_counts_bad_headers_and_keeps_going() -> None:
    conv = _modbus_pair()
    t = conv.t
    bad = [
        (t, ether(ipv4(tcp(1, 2, data_offset=3), proto=6))),  # TCP data offset < 5
        (t, ether(ipv4(b"\x00" * 5, proto=6))),  # TCP header cut
        (t, ether(ipv4(b"\x00\x01\x00\x02\x00\x03\x00\x00", proto=17))),  # UDP length 3
        (t, ether(ipv4(b"\x00" * 4, proto=17))),  # UDP header cut
        (t, ether(ipv4(b"\x08\x00" + b"\0" * 6, proto=1))),  # ICMP: not analysed
        (t, ether(b"\x45\x00")),  # IPv4 header cut
        (t, b"\x00" * 6),  # Ethernet header cut
    ]
    frames = conv.frames[:4] + bad + conv.frames[4:]
    result, events = run_packets(frames)
    assert result.packets == len(frames)
    c = result.counters
    assert c["tcp_bad_header"] == 2
    assert c["udp_bad_header"] == 2
    assert c["ip_other_protocol"] == 1
    assert c["ip_truncated"] == 1
    assert c["link_truncated"] == 1
    assert result.stats.pdus["modbus"] == 2
    assert [e.function for e in events if e.protocol == "modbus"] == [3, 3]


def test_pipeline_snaplen_truncated_packets_counted_not_fatal() -> None:
    conv = TcpConv()
    conv.handshake()
    big = mbap(1, 1, b"\x10\x00\x00\x00\x40\x80" + b"\x00\x01" * 64)  # write 64 registers: 141 bytes
    conv.c(big)
    conv.s(mbap(1, 1, b"\x10\x00\x00\x00\x40"))
    conv.c(mbap(2, 1, b"\x03\x00\x00\x00\x01"))
    conv.s(mbap(2, 1, b"\x03\x02\x00\x07"))
    frames = list(conv.frames)
    ts, data = frames[3]
    frames[3] = (ts, data[:96], len(data))  # the snaplen cut the write request
    result, events = run_packets(frames)
    assert result.packets == len(frames)
    assert result.counters["snaplen_truncated"] == 1
    assert result.counters["tcp_snaplen_gap"] == 1
    mb = [e for e in events if e.protocol == "modbus"]
    # the cut request is lost, its response and the next exchange are still seen
    assert [(e.direction, e.function) for e in mb] == [("response", 16), ("request", 3), ("response", 3)]
    assert mb[-1].values == (7,) and mb[-1].address == 0


def test_pipeline_fragmented_modbus_request() -> None:
    # A Modbus request whose TCP segment was split into IP fragments is still parsed.
    conv = TcpConv()
    conv.handshake()
    req = mbap(9, 1, b"\x10\x00\x0a\x00\x08\x10" + b"\x12\x34" * 8)
    seg = tcp(conv.cport, conv.sport, conv.seq_c, conv.seq_s, "PA", req)
    frames = list(conv.frames)
    frames.append((conv.t + 0.001, ether(ipv4(seg[:24], ident=77, mf=True))))
    frames.append((conv.t + 0.002, ether(ipv4(seg[24:], ident=77, offset=24))))
    result, events = run_packets(frames)
    assert result.counters["ip_fragments_reassembled"] == 1
    mb = [e for e in events if e.protocol == "modbus"]
    assert len(mb) == 1 and mb[0].function == 16 and mb[0].address == 10 and mb[0].values == (0x1234,) * 8


def test_pipeline_fragment_set_times_out_on_capture_clock() -> None:
    frags = fragments(UDP_BIG, 160, ident=3)
    frames = [(100.0, frags[0])]
    # unrelated traffic for a minute of capture time: the sweep drops the incomplete set
    frames += [(100.0 + i, ether(ipv4(udp(1, 2, b"x")))) for i in range(1, 61)]
    result, _ = run_packets(frames)
    assert result.counters["ip_fragment_timeout"] == 1
    assert result.counters["ip_fragments_reassembled"] == 0


def test_pipeline_vlan_sll_ipv6_modbus() -> None:
    # The same Modbus request over several link layers reaches the analyzer each time.
    req = mbap(1, 1, b"\x03\x00\x00\x00\x01")
    seg = tcp(40000, 502, 1, 0, "PA", req)
    cases = [
        (1, ether(ipv4(seg), vlans=((0x88A8, 100), (0x8100, 10)))),
        (113, sll(ipv4(seg))),
        (276, sll2(ipv6(seg), 0x86DD)),
        (101, ipv6(v6_options(6) + seg, nh=60)),
        (0, null_loopback(ipv4(seg))),
    ]
    for linktype, frame in cases:
        result, events = run_packets([(1.0, frame)], linktype=linktype)
        mb = [e for e in events if e.protocol == "modbus"]
        assert len(mb) == 1 and mb[0].function == 3, linktype
        assert result.stats.pdus["modbus"] == 1
