"""Regression tests for what the fuzz campaign found (docs/fuzzing.md). Each test holds the failing
input as hand-written bytes, checks the fixed behaviour of the sensor directly, and replays the input
through its fuzz target (the target's checks, without atheris), so the bug cannot come back unseen.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest
from conftest import ether, ipv4, mbap, pcap_bytes, run_packets, udp, write_file

from fuzz import records
from fuzz.targets import capture as capture_target
from fuzz.targets import decode as decode_target
from fuzz.targets import flows as flows_target
from fuzz.targets import ident as ident_target
from fuzz.targets import iec104 as iec104_target
from sensor.capture import CaptureError, CaptureReader, is_capture_file
from sensor.counters import Counters
from sensor.decode import Decoder
from sensor.protocols._harness import Harness
from sensor.protocols.bacnet import BacnetAnalyzer
from sensor.protocols.enip import EnipAnalyzer
from sensor.protocols.fox import FoxAnalyzer
from sensor.protocols.iec104 import Iec104Analyzer
from sensor.protocols.opcua import OpcUaAnalyzer
from sensor.reassembly import TcpStream
from tools.pcapgen import bacnet as bacnet_gen
from tools.pcapgen import enip as enip_gen
from tools.pcapgen import opcua as opcua_gen

# A gzip member header (magic 1f8b, deflate, no flags, mtime 0x0a0d0d0a, xfl 0x1a, OS 0x2b) followed by
# bytes that are not a deflate stream: zlib raises zlib.error ("invalid code lengths set"), which is
# neither OSError nor EOFError. Found by the capture target (mode 0: the file as is).
CORRUPT_GZIP = bytes.fromhex("1f8b08000a0d0d0a1a2b3c4d3a0a240a1a2b3c4d")


def test_corrupt_deflate_data_is_not_a_capture(tmp_path: Path) -> None:
    path = write_file(tmp_path, "corrupt.pcap.gz", CORRUPT_GZIP)
    assert is_capture_file(path) is False
    with pytest.raises(CaptureError, match="damaged gzip stream"):
        CaptureReader(path)
    capture_target.test_one_input(b"\x00" + CORRUPT_GZIP)


def test_deflate_damage_after_the_first_packets_stops_with_an_error(tmp_path: Path) -> None:
    """The deflate stream breaks after 150 whole packets (past the first buffered reads): what came
    before is yielded, then ``error`` is set; nothing escapes the iteration."""
    frames = [bytes((i,)) * 100 for i in range(200)]
    capture = pcap_bytes([(float(i), f) for i, f in enumerate(frames)])
    packer = zlib.compressobj(0, zlib.DEFLATED, 31)  # level 0: stored blocks, the bytes stay visible
    good = packer.compress(capture[: 24 + 150 * (16 + 100)]) + packer.flush(zlib.Z_FULL_FLUSH)
    broken = good + b"\x07"  # a final block of the reserved type 3: "invalid block type"
    path = write_file(tmp_path, "cut.pcap.gz", broken)
    with CaptureReader(path) as reader:
        packets = [p[2] for p in reader]
    assert 0 < len(packets) <= 150 and packets == frames[: len(packets)]
    assert reader.error is not None and reader.error.startswith("read error"), reader.error


# An 802.3 frame whose length field (0) cannot even hold the 3-byte LLC header it is followed by
# (DSAP 0x00 = SSAP 0x00, control 0x03): the decoder returned a payload length of -3.
LLC_LENGTH_0 = bytes(6) + bytes.fromhex("00006b030301") + b"\x00\x00" + b"\x00\x00\x03" + bytes(43)


@pytest.mark.parametrize("length", [0, 1, 2])
def test_llc_length_below_the_llc_header_is_not_decoded(length: int) -> None:
    counters = Counters()
    frame = LLC_LENGTH_0[:12] + struct.pack("!H", length) + LLC_LENGTH_0[14:]
    assert Decoder(counters).decode(1, frame) is None
    assert counters["non_ip_frames"] == 1
    decode_target.test_one_input(bytes((0,)) + struct.pack("!H", len(frame)) + frame)  # Ethernet, one frame


def test_llc_length_3_is_an_empty_ui_frame() -> None:
    frame = LLC_LENGTH_0[:12] + b"\x00\x03" + LLC_LENGTH_0[14:]
    d = Decoder(Counters()).decode(1, frame)
    assert d is not None and d.l4 == b"" and d.l4_len == 0


def test_modbus_found_by_the_probe_in_udp_datagrams_says_udp() -> None:
    """The Modbus analyzer wrote transport "tcp" into every event, also on a UDP flow the probe gave it."""
    adu = mbap(1, 1, bytes.fromhex("0300000002"))  # read holding registers 0-1
    frame = ether(ipv4(udp(40000, 5020, adu), proto=17))
    result, events = run_packets([(1.0, frame)])
    (ev,) = [e for e in events if e.protocol == "modbus"]
    assert ev.transport == "udp" and ev.function_name == "read_holding_registers"
    assert result.counters["flows_identified_by_signature"] == 1
    # the flows target's input: server port 5020 (unregistered), one client datagram (control bit 3)
    seed = records.encode(flows_target.PORTS.index(5020), [(0x09, bytes(9) + adu)])
    flows_target.test_one_input(seed)


def test_reassembly_buffer_cap_is_a_bound() -> None:
    """Skipping one hole freed a 1-byte segment while 120 bytes stayed buffered over a 100-byte cap."""
    delivered: list[bytes] = []
    gaps: list[float] = []
    counters = Counters()
    stream = TcpStream(lambda d, ts: delivered.append(d), gaps.append, counters, max_buffer=100)
    stream.segment(0, b"a", 1.0)  # in order: next_seq = 1
    stream.segment(10, b"b", 1.0)  # out of order, behind a hole at 1-9
    stream.segment(50, b"c" * 60, 1.0)  # behind a second hole at 11-49
    stream.segment(200, b"d" * 60, 1.0)  # 121 bytes buffered: over the cap
    assert stream.pending_bytes <= 100
    assert delivered == [b"a", b"b", b"c" * 60] and list(stream.pending) == [200]
    assert counters["tcp_buffer_cap"] == 1 and counters["tcp_gap"] == 2 and len(gaps) == 2
    # the same segments through the flows target (its stream check enforces the cap)
    recs = [
        (1, bytes((0x18,)) + struct.pack("!II", seq, 0) + data)
        for seq, data in ((0, b"a"), (10, b"b"), (50, b"c" * 60), (200, b"d" * 60 * 4), (300, b"e" * 200))
    ]
    flows_target.test_one_input(records.encode(flows_target.PORTS.index(5020), recs))


# -- non-finite floats in event values: strict JSON has no NaN or Infinity -----------------------

NAN32 = bytes.fromhex("0000c07f")  # IEEE 754 single NaN, little-endian
INF32 = bytes.fromhex("0000807f")


def _iec104_float(value: bytes) -> bytes:
    """I-frame, M_ME_NC_1 (13, short float), spontaneous, CA 1, IOA 1000, the value, QDS 0."""
    asdu = bytes((13, 1, 3, 0)) + struct.pack("<H", 1) + (1000).to_bytes(3, "little") + value + b"\x00"
    return bytes((0x68, 4 + len(asdu), 0, 0, 0, 0)) + asdu


def test_iec104_nan_and_infinity_are_text() -> None:
    h = Harness(Iec104Analyzer, server=("10.0.104.10", 2404))
    (nan,) = h.server(_iec104_float(NAN32))
    (inf,) = h.server(_iec104_float(INF32))
    assert nan.values == ("nan",) and inf.values == ("inf",)
    (one,) = h.server(_iec104_float(struct.pack("<f", 1.5)))
    assert one.values == (1.5,)
    # selector 0: TCP 2404; one server record holding the frame
    iec104_target.test_one_input(records.encode(0, [(0, _iec104_float(NAN32))]))


def test_bacnet_real_and_double_nan_are_text() -> None:
    h = Harness(BacnetAnalyzer, transport="udp", client=("192.168.0.50", 47808), server=("192.168.0.24", 47808))
    for value, expected in ((b"\x44" + NAN32[::-1], "nan"), (b"\x55\x08" + struct.pack(">d", -math.inf), "-inf")):
        apdu = bacnet_gen.confirmed(1, 15, bacnet_gen.write_property((1, 3), 85, value))
        (ev,) = h.client(bacnet_gen.unicast(bacnet_gen.npdu(apdu, expecting_reply=True)))
        assert ev.function_name == "write_property" and ev.values == (expected,)


def test_opcua_float_and_double_nan_are_text() -> None:
    h = Harness(OpcUaAnalyzer, client=("10.0.0.1", 40000), server=("10.0.0.2", 4840))
    body = opcua_gen.write_request(4, 0, (2, "SP", math.nan))  # a Double variant
    (ev,) = h.client(opcua_gen.msg(5, 1, 1, 1, body))
    assert ev.values == ("nan",)
    float_body = body.replace(b"\x0b" + struct.pack("<d", math.nan), b"\x0a" + INF32)  # a Float variant
    (ev,) = h.client(opcua_gen.msg(5, 1, 2, 2, float_body))
    assert ev.values == ("inf",)


def test_cip_write_tag_real_nan_is_text() -> None:
    h = Harness(EnipAnalyzer, client=("10.0.0.1", 40000), server=("10.0.0.2", 44818))
    values = NAN32 + struct.pack("<f", 2.5)
    req = enip_gen.write_tag("SP", 0xCA, values, elements=2)
    events = h.client(enip_gen.send_rr_data(req, 0x11223344, enip_gen.ctx(1)))
    (ev,) = [e for e in events if e.protocol == "cip"]
    assert ev.values == ("nan", 2.5)


# -- a TLS record header cut by TCP (Niagara Fox over TLS, port 4911) ---------------------------

CLIENT_HELLO_HEAD = bytes.fromhex("160301005e010000")  # handshake record, TLS 1.0, 94 octets, ClientHello


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_fox_tls_hello_cut_before_its_sixth_octet_is_still_a_hello(cut: int) -> None:
    """The first segment held fewer than the 6 octets looked at: it was reported as "fox_not_tls"."""
    h = Harness(FoxAnalyzer, server=("10.0.0.2", 4911))
    assert h.client(CLIENT_HELLO_HEAD[:cut]) == []
    (ev,) = h.client(CLIENT_HELLO_HEAD[cut:])
    assert (ev.function_name, ev.result, ev.size) == ("tls_client_hello", "ok", 6)
    whole = Harness(FoxAnalyzer, server=("10.0.0.2", 4911))
    (same,) = whole.client(CLIENT_HELLO_HEAD)
    assert (same.function_name, same.size) == (ev.function_name, ev.size)
    # the ident target's input: Fox over TLS, the client's record fed in pieces of ``cut`` octets
    # (control bits 2-7), then the same records whole: both must report the same events
    selector = next(i for i, m in enumerate(ident_target.MODES) if m.spec == "fox" and m.port == 4911)
    ident_target.test_one_input(records.encode(selector, [(1 | cut << 2, CLIENT_HELLO_HEAD)]))


def test_fox_tls_too_short_to_decide_is_only_counted_at_close() -> None:
    h = Harness(FoxAnalyzer, server=("10.0.0.2", 4911))
    assert h.client(b"\x16\x03") == []
    h.analyzer.close(2.0)
    assert h.events == [] and h.counters["fox_truncated_at_close"] == 1
