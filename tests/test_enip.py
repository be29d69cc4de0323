"""EtherNet/IP + CIP analyzer (sensor/protocols/enip.py, sensor/protocols/_cip.py): byte vectors per
encapsulation command and per CIP service, paths, Multiple Service Packet and Unconnected Send
unpacking, Forward Open, identity, pairing, framing, malformed and lying lengths, the probe, the
real captures against tshark's counts (and what each Digital Bond Quickdraw capture shows), the
crafted captures, and hypothesis property tests seeded from the real captures.

Vectors are built with the pure byte builders of tools/pcapgen/enip.py or quoted from the real
captures as hex.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_PCAPS, require_shared
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from protocol_testutil import (
    capture_payloads,
    check_crafted_captures,
    crafted_captures_fixture,
    draw_edits,
    feed_alternating,
    fuzz_settings,
    replay_capture,
    tshark_fields,
    write_crafted,
)

from sensor.events import (
    CONTROL,
    DIAGNOSTIC,
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OK,
    OTHER,
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
)
from sensor.protocols import _cip, registry
from sensor.protocols._harness import Harness
from sensor.protocols.enip import COMMANDS, SPEC, EnipAnalyzer, probe
from tools.pcapgen import enip as gen
from tools.pcapgen.enip import (
    ENBT_IDENTITY,
    PLC_IDENTITY,
    REAL,
    cpf,
    ctx,
    encap,
    epath,
    forward_close,
    forward_close_reply,
    forward_open,
    forward_open_reply,
    io_datagram,
    item,
    list_identity_reply,
    list_identity_request,
    list_services_reply,
    logical,
    msp_reply,
    msp_request,
    port_segment,
    read_tag,
    read_tag_reply,
    register_session,
    reply,
    request,
    send_rr_data,
    send_unit_data,
    symbol_path,
    unconnected_send,
    write_tag,
)

SESSION_HANDLE = 0x12020100
DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocols" / "enip.md"


def harness(transport: str = "tcp", server_port: int = 44818) -> Harness:
    return Harness(EnipAnalyzer, transport=transport, client=("10.0.0.1", 40000), server=("10.0.0.2", server_port))


def rr(h: Harness, req: bytes, rep: bytes | None = None, n: int = 1, status: int = 0):
    """A SendRRData exchange; returns (request events, reply events)."""
    c = ctx(n)
    a = h.client(send_rr_data(req, SESSION_HANDLE, c), ts=1.0)
    b = h.server(send_rr_data(rep, SESSION_HANDLE, c, status), ts=1.25) if rep is not None else []
    return a, b


def cip(events):
    return [e for e in events if e.protocol == "cip"]


def enip(events):
    return [e for e in events if e.protocol == "enip"]


# ------------------------------------------------------------------------------------------------
# Encapsulation commands (Vol. 2 2-4)
# ------------------------------------------------------------------------------------------------


def test_command_table():
    assert {c: n for c, (n, _) in COMMANDS.items()} == {
        0x00: "nop", 0x01: "list_targets", 0x04: "list_services", 0x63: "list_identity", 0x64: "list_interfaces",
        0x65: "register_session", 0x66: "unregister_session", 0x6F: "send_rr_data", 0x70: "send_unit_data",
        0x72: "indicate_status", 0x73: "cancel",
    }  # fmt: skip


@pytest.mark.parametrize(
    "command,name,category",
    [(0x00, "nop", SESSION), (0x04, "list_services", DISCOVERY), (0x63, "list_identity", DISCOVERY),
     (0x64, "list_interfaces", DISCOVERY), (0x66, "unregister_session", SESSION), (0x72, "indicate_status", OTHER),
     (0x73, "cancel", OTHER)],
)  # fmt: skip
def test_simple_commands(command, name, category):
    h = harness()
    (ev,) = h.client(encap(command, b"", SESSION_HANDLE))
    assert (ev.protocol, ev.function, ev.function_name, ev.category, ev.direction) == (
        "enip",
        command,
        name,
        category,
        REQUEST,
    )
    assert ev.fields["session_handle"] == f"0x{SESSION_HANDLE:08x}"
    assert h.stats.pdus["enip"] == 1 and h.stats.funcs["enip"] == {f"0x{command:04x}": 1}


def test_register_session_pairs_and_reports_version():
    h = harness()
    (req,) = h.client(register_session(0, ctx(0)), ts=1.0)
    (rep,) = h.server(register_session(0x11223344, ctx(0)), ts=1.5)
    assert req.fields["protocol_version"] == 1 and req.category == SESSION
    assert rep.direction == RESPONSE and rep.fields["session_handle"] == "0x11223344" and rep.latency == 0.5


def test_encapsulation_status_is_an_exception():
    h = harness()
    h.client(register_session(0, ctx(0)))
    (rep,) = h.server(encap(0x65, struct.pack("<HH", 1, 0), 0, status=0x69, context=ctx(0)))
    assert rep.result == EXCEPTION and rep.code == 0x69 and rep.fields["status"] == "unsupported_protocol_version"


def test_real_list_identity_reply_vector():
    """Frame 7 of icsmaster__enip_test.pcap: a 1756-ENBT/A answering ListIdentity over TCP."""
    raw = bytes.fromhex(
        "63003300000000000000000000000000c1debed10000000001000c002d0001000002af120a0101a40000000000000000"
        "01000c003a00040330008e4d52000b313735362d454e42542f4103"
    )
    h = harness()
    h.client(list_identity_request(bytes.fromhex("00000000c1debed1")))
    (ev,) = h.server(raw)
    assert ev.function_name == "list_identity" and ev.direction == RESPONSE and ev.category == DISCOVERY
    assert ev.fields["identity"] == {
        "vendor_id": 1, "vendor": "Rockwell Automation/Allen-Bradley", "device_type": "communications_adapter",
        "product_code": 58, "revision": "4.03", "serial": "0x00524d8e", "product_name": "1756-ENBT/A",
        "status": 0x30, "state": 3,
    }  # fmt: skip
    assert ev.fields["device_address"] == "10.1.1.164:44818"
    assert ev.latency is not None


def test_list_services_reply():
    h = harness()
    (ev,) = h.server(list_services_reply())
    assert ev.fields["services"] == [{"name": "Communications", "capabilities": 0x0120}]


def test_list_identity_over_udp_direction_from_content():
    """A broadcast ListIdentity's reply comes back on another 5-tuple: direction from the length."""
    h = harness("udp")
    (a,) = h.client(list_identity_reply("10.0.0.1", PLC_IDENTITY))  # the device is this flow's "client"
    (b,) = h.server(list_identity_request())
    assert a.direction == RESPONSE and a.fields["identity"]["product_name"] == "1756-L61/B LOGIX5561"
    assert b.direction == REQUEST


def test_send_rr_data_cpf_fields():
    h = harness()
    evs = h.client(send_rr_data(request(0x0E, epath(0x01, 1, 7)), SESSION_HANDLE, ctx(3), timeout=9))
    e, c = evs
    assert e.function_name == "send_rr_data" and e.fields["cpf_items"] == [0x0000, 0x00B2] and e.fields["timeout"] == 9
    assert e.fields["sender_context"] == ctx(3).hex()
    assert c.function_name == "get_attribute_single" and c.objects == ("class:0x01/instance:1/attribute:7",)


def test_send_unit_data_connected_fields_and_sequence_pairing():
    h = harness()
    req = h.client(send_unit_data(read_tag("A"), SESSION_HANDLE, 0x80000001, 7), ts=2.0)
    rep = h.server(send_unit_data(read_tag_reply(REAL, b"\0\0\x80\x3f"), SESSION_HANDLE, 0x7F000001, 7), ts=2.1)
    assert req[0].fields["connection_id"] == "0x80000001" and req[0].fields["cip_sequence"] == 7
    assert rep[1].function_name == "read_tag" and rep[1].fields["symbol"] == "A"
    assert rep[1].latency == pytest.approx(0.1)


def test_sockaddr_items():
    data = struct.pack("<IH", 0, 0) + cpf(
        item(0x0000), item(0x00B2, reply(0x54)), item(0x8001, struct.pack(">HH4s8x", 2, 2222, bytes((10, 0, 0, 9))))
    )
    h = harness()
    (e, _) = h.server(encap(0x6F, data, SESSION_HANDLE))
    assert e.fields["sockaddr_t_o"] == "10.0.0.9:2222"


# ------------------------------------------------------------------------------------------------
# CIP services (Vol. 1 App. A) and their names by class
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(_cip.COMMON_SERVICES))
def test_common_service_request_and_reply(code):
    name, category = _cip.COMMON_SERVICES[code]
    h = harness()
    a, b = rr(h, request(code, epath(0x04, 100, 3)), reply(code))
    req, rep = cip(a)[0], cip(b)[0]
    assert (req.function, req.function_name, req.category, req.direction) == (code, name, category, REQUEST)
    assert (rep.function, rep.function_name, rep.category, rep.direction) == (code, name, category, RESPONSE)
    assert rep.fields["class"] == 4 and rep.fields["general_status"] == 0 and rep.result == OK
    assert h.stats.funcs["cip"][f"0x{code:02x}"] == 2


@pytest.mark.parametrize(
    "cls,code,name,category",
    [
        (0x06, 0x4E, "forward_close", SESSION), (0x06, 0x52, "unconnected_send", OTHER),
        (0x06, 0x54, "forward_open", SESSION), (0x06, 0x5B, "large_forward_open", SESSION),
        (0x06, 0x56, "get_connection_data", READ), (0x37, 0x4B, "initiate_upload", PROGRAM),
        (0x37, 0x4C, "initiate_download", PROGRAM), (0x37, 0x4F, "upload_transfer", PROGRAM),
        (0x37, 0x50, "download_transfer", PROGRAM), (0x37, 0x51, "clear_file", PROGRAM),
        (0x67, 0x4B, "execute_pccc", OTHER), (0x6C, 0x4C, "read_template", READ),
        (0x6B, 0x4C, "read_tag", READ), (0x6B, 0x4D, "write_tag", WRITE), (0x6B, 0x4E, "read_modify_write_tag", WRITE),
        (0x6B, 0x52, "read_tag_fragmented", READ), (0x6B, 0x53, "write_tag_fragmented", WRITE),
        (0x6B, 0x55, "get_instance_attribute_list", READ),
        (0x8E, 0x4C, "read_data", READ), (0x72, 0x4D, "write_data", WRITE), (0x74, 0x4B, "unknown-75", PROGRAM),
        (0x6A, 0x4F, "unknown-79", PROGRAM), (0x031A, 0x50, "unknown-80", PROGRAM),
        (0xA1, 0x4D, "write_data", PROGRAM), (0xA1, 0x51, "unknown-81", PROGRAM), (0xA1, 0x0E, "get_attribute_single", PROGRAM),
        (0x04, 0x4C, "unknown-76", OTHER),  # class-specific code on a class without such a service
        (0x01, 0x0E, "get_attribute_single", DISCOVERY), (0x01, 0x01, "get_attributes_all", DISCOVERY),
        (0x68, 0x08, "create", WRITE), (0x04, 0x08, "create", WRITE),
    ],
)  # fmt: skip
def test_class_specific_names(cls, code, name, category):
    assert _cip.service_name(code, (cls, 1, None, None, None, None)) == (name, category)


def test_symbolic_path_uses_tag_services_whatever_the_class():
    assert _cip.service_name(0x52, (None, None, None, None, "Tag", None)) == ("read_tag_fragmented", READ)
    assert _cip.service_name(0x52, (0x06, 1, None, None, None, None)) == ("unconnected_send", OTHER)
    assert _cip.service_name(0x7F, _cip.EMPTY_PATH) == ("unknown-127", OTHER)


def test_real_start_and_stop_plc_vectors():
    """icsmaster cip_start_plc / cip_stop_plc: connected Start/Stop to the controller object (0x8E)."""
    vectors = {
        0x06: "70001c0001002a00000000000000000000000000000000000000000001000200a1000400224095ffb1000800e7000602208e2401",
        0x07: "70001c0001002a00000000000000000000000000000000000000000001000200a1000400224095ffb100080006010702208e2401",
    }
    for code, name in ((0x06, "start"), (0x07, "stop")):
        h = harness()
        e, c = h.client(bytes.fromhex(vectors[code]))
        assert e.function_name == "send_unit_data" and e.fields["connection_id"] == "0xff954022"
        assert (c.function_name, c.category, c.fields["class_name"], c.fields["mode_change"]) == (
            name,
            CONTROL,
            "controller",
            "run" if code == 6 else "program",
        )


def test_real_set_attribute_single_vector():
    """icsnpp set_attribute_single_service_cip.pcapng: Set Attribute Single, class 1 instance 0."""
    raw = bytes.fromhex(
        "70001c00f4ffcab4000000005f7079636f6d6d5f00000000000000000a000200a1000400ba629adab10008000d00100220012400"
    )
    h = harness()
    e, c = h.client(raw)
    assert e.fields["connection_id"] == "0xda9a62ba" and e.fields["cip_sequence"] == 13
    assert (c.function_name, c.category, c.objects) == ("set_attribute_single", WRITE, ("class:0x01/instance:0",))


def test_general_and_extended_status():
    h = harness()
    _, b = rr(h, request(0x10, epath(0xF5, 1, 5), b"\0" * 22), reply(0x10, 0x0E, ext=(0x1234,)))
    (rep,) = cip(b)
    assert rep.result == EXCEPTION and rep.code == 0x0E
    assert rep.fields["status_name"] == "attribute_not_settable" and rep.fields["extended_status"] == 0x1234
    assert rep.fields["class_name"] == "tcpip_interface"


def test_partial_transfer_is_not_an_exception():
    h = harness()
    _, b = rr(h, request(0x52, symbol_path("Big"), b"\x64\x00\0\0\0\0"), reply(0x52, 0x06, b"\xc4\x00" + bytes(8)))
    (rep,) = cip(b)
    assert rep.result == OK and rep.fields["general_status"] == 6 and rep.function_name == "read_tag_fragmented"


def test_reply_without_request_keeps_code_only_names():
    h = harness()
    (e, c) = h.server(send_rr_data(reply(0x4C, 0, b"\xca\x00\0\0\0\0"), SESSION_HANDLE, ctx(9)))
    assert c.function_name == "unknown-76" and c.latency is None and e.latency is None


# ------------------------------------------------------------------------------------------------
# Paths (Vol. 1 App. C)
# ------------------------------------------------------------------------------------------------


def test_logical_segment_formats():
    path = logical(0, 0x6B) + logical(1, 0x2BE9) + logical(4, 0x12345678)
    (cls, inst, attr, member, symbol, route), ok = _cip.parse_path(path, 0, len(path))
    assert ok and (cls, inst, attr, member, symbol, route) == (0x6B, 0x2BE9, 0x12345678, None, None, None)


def test_symbolic_path_with_members_and_indexes():
    path = symbol_path("Program:Main.Counts", 3, 300)
    p, ok = _cip.parse_path(path, 0, len(path))
    assert ok and p[4] == "Program:Main.Counts[3][300]"
    assert _cip.path_key(p) == "tag:Program:Main.Counts[3][300]"


def test_port_segments_and_extended_link_address():
    path = port_segment(1, 0) + bytes((0x12, 8)) + b"10.0.0.9" + epath(0x02, 1)
    p, ok = _cip.parse_path(path, 0, len(path))
    assert ok and p[5] == "port:1/link:0/port:2/link:10.0.0.9" and p[0] == 2


def test_electronic_key_network_and_data_segments():
    key = bytes((0x34, 0x04)) + struct.pack("<HHHBB", 1, 14, 54, 20, 11)
    path = key + bytes((0x43, 0x01)) + bytes((0x80, 1, 0xAA, 0xBB)) + epath(0x04, 1)
    p, ok = _cip.parse_path(path, 0, len(path))
    assert ok and p[0] == 4 and p[1] == 1


@pytest.mark.parametrize(
    "path",
    [b"\x20", b"\x21\x00\x01", b"\x22\x00\x01\x02", b"\x91\x05ab", b"\x11\x05ab", b"\xa0\x00", b"\x23\x00", b"\x80",
     b"\x27\x00", b"\x3b\x00", b"\x64", b"\x1f\x00"],
)  # fmt: skip
def test_malformed_paths_are_reported_not_raised(path):
    _p, ok = _cip.parse_path(path, 0, len(path))
    assert ok is False


def test_path_segment_cap():
    path = logical(1, 1) * (_cip.MAX_PATH_SEGMENTS + 5)
    _p, ok = _cip.parse_path(path, 0, len(path))
    assert ok is False


def test_truncated_request_path_is_malformed_but_counted():
    h = harness()
    a, _ = rr(h, bytes((0x0E, 6)) + epath(0x01, 1))
    (c,) = cip(a)
    assert c.result == MALFORMED and c.anomaly == "cip_truncated" and h.counters["cip_truncated"] == 1
    assert h.stats.funcs["cip"] == {"0x0e": 1}


# ------------------------------------------------------------------------------------------------
# Multiple Service Packet, Unconnected Send, Forward Open
# ------------------------------------------------------------------------------------------------


def test_real_multiple_service_packet_vector():
    """Frame 1 of icsmaster__cip-multiple-1.pcap: an MSP of 11 Get Attribute List (tshark: 12 cip.sc)."""
    raw = bytes.fromhex(
        "7000ba0000010211000000000000000000000000000000000000000001000200a1000400010b7c00b100a60089070a02"
        "200224010b00180022002c0036004c005800640072007c008a0094000302200124010100050003022069240001000b00"
        "03022073240101000200030220ac240107000100020003000500070009000a0003032068250020240100130003022070"
        "24010200120013000302208e240103000300080010000302206924000100090003022068240003000f00180019000302"
        "20772401010002000302208b240101000600"
    )
    h = harness()
    events = h.client(raw)
    cs = cip(events)
    assert [c.function for c in cs] == [0x0A] + [0x03] * 11
    assert cs[0].quantity == 11 and all(c.fields.get("depth") == 1 for c in cs[1:])
    assert h.stats.pdus["cip"] == 12 and h.stats.funcs["cip"] == {"0x0a": 1, "0x03": 11}
    assert {c.fields["class_name"] for c in cs[1:] if "class_name" in c.fields} >= {
        "identity",
        "controller",
        "wall_clock_time",
    }


def test_msp_replies_pair_with_their_requests_in_order():
    h = harness()
    req = msp_request(read_tag("A"), request(0x0E, epath(0x01, 1, 7)), request(0x07, epath(0x8E, 1)))
    rep = msp_reply(read_tag_reply(REAL, bytes(4)), reply(0x0E, 0, b"\x04abcd"), reply(0x07, 0x10), status=0x1E)
    _, b = rr(h, req, rep)
    outer, r1, r2, r3 = cip(b)
    assert outer.function_name == "multiple_service_packet" and outer.result == EXCEPTION and outer.code == 0x1E
    assert (r1.function_name, r1.fields["symbol"]) == ("read_tag", "A")
    assert (r2.function_name, r2.category) == ("get_attribute_single", DISCOVERY)
    assert (r3.function_name, r3.category, r3.result, r3.code) == ("stop", CONTROL, EXCEPTION, 0x10)
    assert all(r.latency == pytest.approx(0.25) for r in (outer, r1, r2, r3))


def test_msp_lying_count_and_offsets_are_bounded():
    body = struct.pack("<H", 60000) + struct.pack("<HH", 6, 0xFFF0) + request(0x0E, epath(1, 1, 1))
    h = harness()
    a, _ = rr(h, request(0x0A, epath(2, 1), body))
    assert [c.function for c in cip(a)] == [0x0A]  # the offset table does not fit: nothing trusted
    assert cip(a)[0].result == MALFORMED and h.counters["cip_truncated"] == 1
    body = struct.pack("<HHH", 2, 6, 0xFFF0) + request(0x0E, epath(1, 1, 1))
    a, _ = rr(h, request(0x0A, epath(2, 1), body), n=2)
    assert [c.function for c in cip(a)] == [0x0A, 0x0E] and cip(a)[0].result == MALFORMED


def test_msp_nesting_depth_is_limited():
    inner = request(0x0E, epath(1, 1, 1))
    for _ in range(_cip.MAX_DEPTH + 3):
        inner = msp_request(inner)
    h = harness()
    a, _ = rr(h, inner)
    depths = [c.fields.get("depth", 0) for c in cip(a)]
    assert max(depths) == _cip.MAX_DEPTH and len(depths) == _cip.MAX_DEPTH + 1


def test_msp_service_cap():
    n = _cip.MAX_MSP_SERVICES + 20
    h = harness()
    a, _ = rr(h, msp_request(*[request(0x0E, epath(1, 1, 1))] * n))
    assert len(cip(a)) == 1 + _cip.MAX_MSP_SERVICES and cip(a)[0].result == MALFORMED


def test_unconnected_send_is_unwrapped_and_its_reply_pairs_with_the_embedded_request():
    h = harness()
    a, b = rr(h, unconnected_send(request(0x05, epath(0x01, 1), b"\x00"), port=1, link=1), reply(0x05))
    us, emb = cip(a)
    assert us.function_name == "unconnected_send" and us.fields["target_route"] == "port:1/link:1"
    assert (emb.function_name, emb.category, emb.fields["depth"], emb.fields["reset_type"]) == (
        "reset",
        DIAGNOSTIC,
        1,
        "power_cycle",
    )
    (rep,) = cip(b)
    assert (rep.function_name, rep.fields["class_name"], rep.latency) == ("reset", "identity", 0.25)
    assert h.stats.funcs["cip"] == {"0x52": 1, "0x05": 2}


def test_unconnected_send_router_error_pairs_with_the_send():
    h = harness()
    _, b = rr(h, unconnected_send(request(0x01, epath(0x01, 1)), link=5), reply(0x52, 0x01, ext=(0x0204,)))
    (rep,) = cip(b)
    assert (
        rep.function_name == "unconnected_send" and rep.result == EXCEPTION and rep.fields["extended_status"] == 0x0204
    )


def test_unconnected_send_with_lying_size():
    bad = request(0x52, epath(0x06, 1), struct.pack("<BBH", 10, 240, 5000) + request(0x01, epath(1, 1)))
    h = harness()
    a, _ = rr(h, bad)
    assert [c.function for c in cip(a)] == [0x52, 0x01]


def test_forward_open_and_close_fields():
    h = harness()
    path = port_segment(1, 0) + epath(0x02, 1)
    a, b = rr(
        h,
        forward_open(0x80000001, 0x7F000001, 0x0101, 500_000, path),
        forward_open_reply(0x80000001, 0x7F000001, 0x0101, 500_000),
    )
    (req,) = cip(a)
    assert req.function_name == "forward_open" and req.category == SESSION
    f = req.fields
    assert (
        f["o_t_connection_id"],
        f["t_o_connection_id"],
        f["connection_serial"],
        f["o_t_rpi_us"],
        f["t_o_rpi_us"],
    ) == (0x80000001, 0x7F000001, 0x0101, 500_000, 500_000)
    assert (
        f["transport_class"] == 3 and f["route"] == "port:1/link:0" and f["connection_path"] == "class:0x02/instance:1"
    )
    (rep,) = cip(b)
    assert rep.fields["t_o_connection_id"] == 0x7F000001 and rep.fields["o_t_api_us"] == 500_000
    a, b = rr(h, forward_close(0x0101, path), forward_close_reply(0x0101), n=2)
    assert cip(a)[0].fields["connection_serial"] == 0x0101 and cip(b)[0].function_name == "forward_close"


def test_large_forward_open():
    h = harness()
    a, b = rr(
        h, forward_open(1, 2, 3, 10_000, epath(0x02, 1), large=True), forward_open_reply(1, 2, 3, 10_000, large=True)
    )
    assert cip(a)[0].function_name == "large_forward_open" and cip(a)[0].fields["o_t_params"] == 0x42000000 | 4000
    assert cip(b)[0].fields["o_t_connection_id"] == 1


# ------------------------------------------------------------------------------------------------
# Identity, reset, values, PCCC
# ------------------------------------------------------------------------------------------------


def test_get_attributes_all_of_identity_sets_identity():
    h = harness()
    _, b = rr(h, request(0x01, epath(0x01, 1)), reply(0x01, 0, ENBT_IDENTITY))
    (rep,) = cip(b)
    assert rep.fields["identity"]["product_name"] == "1756-ENBT/A" and rep.fields["identity"]["vendor_id"] == 1
    assert rep.category == DISCOVERY


def test_identity_reset_types():
    for data, name in (
        (b"", "power_cycle"),
        (b"\x01", "factory_defaults"),
        (b"\x02", "factory_defaults_keep_comms"),
        (b"\x07", "type-7"),
    ):
        h = harness()
        a, _ = rr(h, request(0x05, epath(0x01, 1), data))
        assert cip(a)[0].fields["reset_type"] == name


def test_write_tag_values_and_read_quantity():
    h = harness()
    a, _ = rr(h, write_tag("SP", REAL, struct.pack("<2f", 1.5, 2.5), elements=2))
    (w,) = cip(a)
    assert w.values == (1.5, 2.5) and w.quantity == 2 and w.fields["data_type"] == "0x00ca" and w.category == WRITE
    a, _ = rr(h, read_tag("Arr", 4, elements=10), n=2)
    assert cip(a)[0].quantity == 10 and cip(a)[0].objects == ("tag:Arr[4]",)


def test_write_tag_structure_type_has_no_values():
    h = harness()
    a, _ = rr(h, request(0x4D, symbol_path("U"), struct.pack("<HHH", 0x02A0, 0x1234, 1) + bytes(8)))
    assert cip(a)[0].values is None


def test_get_attribute_list_lists_attributes():
    h = harness()
    a, _ = rr(h, request(0x03, epath(0x8B, 1), struct.pack("<4H", 3, 1, 6, 11)))
    (c,) = cip(a)
    assert c.fields["attributes"] == [1, 6, 11] and c.quantity == 3 and c.fields["class_name"] == "wall_clock_time"


def test_execute_pccc():
    requestor = bytes((7,)) + struct.pack("<HI", 1, 0x1234)
    pccc = bytes((0x0F, 0, 1, 0, 0xA2)) + bytes(6)
    h = harness()
    a, _ = rr(h, request(0x4B, epath(0x67, 1), requestor + pccc))
    (c,) = cip(a)
    assert c.function_name == "execute_pccc" and c.fields["pccc_command"] == 0x0F
    assert c.fields["pccc_function"] == "protected_typed_logical_read_3"


# ------------------------------------------------------------------------------------------------
# Framing, UDP, I/O, malformed
# ------------------------------------------------------------------------------------------------


def _stream() -> bytes:
    return b"".join(
        (
            register_session(0, ctx(0)),
            send_rr_data(msp_request(read_tag("A"), read_tag("B")), SESSION_HANDLE, ctx(1)),
            send_unit_data(write_tag("C", REAL, bytes(4)), SESSION_HANDLE, 5, 1),
            encap(0x00, b"keepalive", SESSION_HANDLE),
        )
    )


def _summary(events):
    return [(e.protocol, e.function, e.function_name, e.result, e.objects, e.values) for e in events]


def test_every_split_of_the_stream_gives_the_same_events():
    data = _stream()
    h = harness()
    expect = _summary(h.client(data))
    assert len(expect) == 8
    for cut in range(1, len(data), 7):
        h = harness()
        got = h.client(data[:cut]) + h.client(data[cut:])
        assert _summary(got) == expect, cut


def test_byte_by_byte_feed():
    data = _stream()
    h = harness()
    for i in range(len(data)):
        h.client(data[i : i + 1])
    assert len(h.events) == 8 and h.stats.pdus["enip"] == 4


def test_garbage_is_bad_framing_then_resync_on_next_segment():
    h = harness()
    assert h.client(b"GET / HTTP/1.1\r\n\r\n" + register_session()) == []
    assert h.counters["enip_bad_framing"] == 1
    (ev,) = h.client(register_session())
    assert ev.function_name == "register_session"


def test_gap_drops_partial_pdu_and_close_counts_leftovers():
    h = harness()
    data = send_rr_data(read_tag("A"), SESSION_HANDLE, ctx(1))
    h.client(data[:30])
    h.analyzer.gap(True, 1.0)
    assert h.counters["enip_partial_pdu_lost"] == 1
    assert len(h.client(data)) == 2
    h.client(data[:10])
    h.analyzer.close(2.0)
    assert h.counters["enip_truncated_at_close"] == 1


@pytest.mark.parametrize(
    "data,anomaly",
    [
        (encap(0x6F, b"\0\0\0\0\x05\0"), "enip_bad_cpf"),
        (encap(0x6F, struct.pack("<IHH", 0, 5, 2) + struct.pack("<HH", 0, 0) + struct.pack("<HH", 0xB2, 200) + b"\x0e"), "enip_bad_cpf"),
        (encap(0x6F, struct.pack("<IHH", 0, 5, 40) + item(0) * 2), "enip_bad_cpf"),
        (encap(0x63, b"\x01"), "enip_bad_cpf"),
        (encap(0x63, cpf(item(0x0C, struct.pack("<H", 1) + bytes(16) + bytes(14) + b"\x05"))), "enip_bad_identity"),
    ],
)  # fmt: skip
def test_malformed_cpf(data, anomaly):
    h = harness()
    evs = h.server(data)
    assert evs[0].anomaly == anomaly and evs[0].result == MALFORMED and h.counters[anomaly] == 1


def test_udp_datagrams_io_and_junk():
    h = harness("udp", 2222)
    (a,) = h.client(io_datagram(0x90000001, 5, 5, b"\x01\x00"))
    (b,) = h.server(io_datagram(0x91000001, 6, 6, b"\x02\x00\x03\x00"))
    assert (a.function_name, a.direction, a.fields["connection_id"], a.fields["encap_sequence"]) == (
        "io_data",
        REQUEST,
        "0x90000001",
        5,
    )
    assert b.direction == UNSOLICITED and b.fields["io_bytes"] == 6
    assert h.stats.pdus.get("enip", 0) == 0  # tshark has no enip.command in I/O datagrams
    assert h.client(b"\xff" * 3) == [] and h.counters["enip_bad_datagram"] == 1
    assert h.client(list_identity_request()[:20]) == []
    assert h.client(encap(0x63, b"\0" * 10)[:30]) == [] and h.counters["enip_truncated"] == 1


def test_pending_table_is_bounded():
    h = harness()
    for i in range(600):
        h.client(send_rr_data(read_tag("A"), SESSION_HANDLE, ctx(i)))
    assert h.counters["enip_pending_evicted"] == 600 - 512
    assert h.analyzer._npending == 512


def test_unanswered_commands_do_not_wait_for_a_reply():
    h = harness()
    for _ in range(600):
        h.client(encap(0x00, b"", SESSION_HANDLE))
    h.client(encap(0x66, b"", SESSION_HANDLE))
    assert h.analyzer._npending == 0 and h.counters["enip_pending_evicted"] == 0


def test_pipelined_requests_with_one_context_pair_first_in_first_out():
    h = harness()
    c = ctx(1)
    h.client(send_rr_data(read_tag("A"), SESSION_HANDLE, c), ts=1.0)
    h.client(send_rr_data(request(0x0E, epath(1, 1, 7)), SESSION_HANDLE, c), ts=2.0)
    r1 = cip(h.server(send_rr_data(read_tag_reply(REAL, bytes(4)), SESSION_HANDLE, c), ts=3.0))[0]
    r2 = cip(h.server(send_rr_data(reply(0x0E, 0, b"\x01a"), SESSION_HANDLE, c), ts=3.5))[0]
    assert (r1.function_name, r1.latency) == ("read_tag", 2.0) and (r2.function_name, r2.latency) == (
        "get_attribute_single",
        1.5,
    )


# ------------------------------------------------------------------------------------------------
# Registry and probe
# ------------------------------------------------------------------------------------------------


def test_spec_and_registry():
    assert SPEC.tcp_ports == {44818} and SPEC.udp_ports == {44818, 2222} and SPEC.report_names == ("enip", "cip")
    reg = registry()
    assert reg.tcp[44818] is SPEC and reg.udp[2222] is SPEC


@pytest.mark.parametrize(
    "payload,from_client,expected",
    [
        (register_session(), True, True),
        (list_identity_request(), True, True),
        (list_identity_reply("10.0.0.2", PLC_IDENTITY), False, True),
        (send_rr_data(read_tag("A"), 1, ctx(1)), True, True),
        (send_unit_data(read_tag("A"), 1, 5, 1), True, True),
        (send_rr_data(read_tag("A"), 1, ctx(1))[:40], True, True),  # first segment of a longer PDU
        (send_rr_data(read_tag("A"), 1, ctx(1)) + register_session(), True, True),
        (encap(0x66, b"", 5), True, True),
        (bytes(24), True, False),  # NOP of zeros
        (encap(0x65, struct.pack("<HH", 2, 0)), True, False),  # protocol version 2
        (encap(0x63, b"", options=1), True, False),
        (encap(0x63, b"", status=0x1234), True, False),
        (encap(0x6F, struct.pack("<IHH", 7, 5, 2) + item(0) + item(0xB2, b"\x01\x00")), True, False),
        (encap(0x63, b"xx"), True, False),  # a List request with data
        (send_rr_data(read_tag("A"), 1, ctx(1)) + b"\x99\x99", True, False),
        (list_identity_request()[:20], True, False),
        (b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x0a" * 3, True, False),  # Modbus
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True, False),
    ],
)  # fmt: skip
def test_probe(payload, from_client, expected):
    assert probe(payload, from_client) is expected


def test_enip_on_a_non_standard_port_is_found_by_the_probe():
    from conftest import TcpConv, run_packets

    conv = TcpConv(sport=2223).handshake()
    conv.c(register_session(0, ctx(0)))
    conv.s(register_session(7, ctx(0)))
    conv.c(send_rr_data(request(0x07, epath(0x8E, 1)), 7, ctx(1)))
    _result, events = run_packets(conv.frames)
    assert [e.function_name for e in events if e.protocol in ("enip", "cip")] == [
        "register_session",
        "register_session",
        "send_rr_data",
        "stop",
    ]


# ------------------------------------------------------------------------------------------------
# Real captures: tshark's counts, and what the Quickdraw event captures show
# ------------------------------------------------------------------------------------------------


def _replay(path: Path):
    return replay_capture(path, "enip", "cip")


@pytest.fixture(scope="module")
def real(ground_truth) -> dict[str, tuple]:
    """Every capture whose ground truth has enip/cip, replayed once: rel -> (result, events, truth)."""
    truth = {k: v["protocols"] for k, v in ground_truth.items() if {"enip", "cip"} & set(v.get("protocols", {}))}
    out = {}
    for rel, t in sorted(truth.items()):
        result, events = _replay(SHARED_PCAPS / rel)
        out[rel] = (result, events, t)
    return out


def test_real_captures_match_tshark(real):
    assert len(real) >= 16  # the enip/ folder and modbus/iti__mb2.pcap
    for rel, (result, _events, t) in sorted(real.items()):
        ours = result.stats.as_ground_truth()
        assert result.counters.get("analyzer_error_enip", 0) == 0, rel
        for proto in ("enip", "cip"):
            if proto not in t:
                continue
            mine = ours.get(proto, {"pdus": 0, "func_hist": {}})
            assert mine["pdus"] == t[proto]["pdus"], (rel, proto)
            assert mine["func_hist"] == t[proto]["func_hist"], (rel, proto)


def test_no_enip_in_captures_without_it(ground_truth):
    picks = [k for k, v in ground_truth.items() if not {"enip", "cip"} & set(v.get("protocols", {}))]
    small = sorted((k for k in picks if (SHARED_PCAPS / k).exists()), key=lambda k: (SHARED_PCAPS / k).stat().st_size)[
        :50
    ]
    for rel in small:
        result, events = _replay(SHARED_PCAPS / rel)
        assert result.stats.pdus.get("enip", 0) == 0 and result.stats.pdus.get("cip", 0) == 0 and not events, rel


QUICKDRAW = {
    # file -> (class_name, function_name) pairs that must be present in it (docs/protocols/enip.md)
    "iti__CL5000EIP-Reboot_or_Restart.pcap": {
        ("controller", "stop"),
        ("controller", "start"),
        ("vendor_specific", "reset"),
    },
    "iti__CL5000EIP-Firmware_Change_Failure.pcap": {
        ("firmware", "unknown-81"),
        ("firmware", "unknown-75"),
        ("firmware", "write_data"),
    },
    "iti__CL5000EIP-Change_Date_Attempt.pcap": {("wall_clock_time", "set_attribute_list")},
    "iti__CL5000EIP-Change_Port_Configuration_Attempt.pcap": {("ethernet_link", "set_attribute_single")},
    "iti__CL5000EIP-Software_Upload.pcap": {("vendor_specific", "unknown-79"), ("vendor_specific", "unknown-75")},
}


@pytest.mark.parametrize("name", sorted(QUICKDRAW))
def test_quickdraw_event_captures(name, real):
    _result, events, _ = real["enip/" + name]
    seen = {
        (e.fields.get("class_name"), e.function_name) for e in events if e.protocol == "cip" and e.direction == REQUEST
    }
    assert QUICKDRAW[name] <= seen, QUICKDRAW[name] - seen
    if name.startswith("iti__CL5000EIP-Firmware"):
        refused = [e for e in events if e.fields and e.fields.get("class_name") == "firmware" and e.result == EXCEPTION]
        assert len(refused) == 7  # the update fails: 0x51 refused (0x08), six blocks answered 0x01
    if name.startswith("iti__CL5000EIP-Reboot"):
        order = [
            e.function_name
            for e in events
            if e.protocol == "cip" and e.direction == REQUEST and e.function_name in ("stop", "reset", "start")
        ]
        assert order == ["stop", "reset", "start"]


def test_quickdraw_captures_without_enip():
    require_shared()
    for name in ("iti__CL5000EIP-View_Device_Status.pcap", "iti__CL5000EIP-Software_Download_Failure.pcap"):
        _, events = _replay(SHARED_PCAPS / "enip" / name)
        assert events == [], name


def test_real_implicit_io(real):
    result, events, t = real["enip/icsnpp__enip_cip_example.pcap"]
    io = [e for e in events if e.function_name == "io_data"]
    assert len(io) == 398 and result.stats.pdus["enip"] == t["enip"]["pdus"] == 269
    assert {e.transport for e in io} == {"udp"} and all(e.fields["connection_id"].startswith("0x") for e in io)


def test_identity_from_real_capture(real):
    _, events, _ = real["enip/iti__CL5000EIP-Reboot_or_Restart.pcap"]
    idents = {tuple(sorted(e.fields["identity"].items())) for e in events if e.fields and "identity" in e.fields}
    assert {dict(i)["product_name"] for i in idents} == {"1756-L61/B LOGIX5561"}


def test_real_responses_pair_with_their_requests(real):
    _, events, _ = real["enip/iti__EthernetIP-CIP.pcap"]
    replies = [e for e in events if e.direction == RESPONSE]
    paired = [e for e in replies if e.latency is not None]
    assert len(paired) / len(replies) > 0.999
    assert not [
        e for e in replies if e.protocol == "cip" and e.function_name.startswith("unknown") and e.latency is not None
    ]


# ------------------------------------------------------------------------------------------------
# Crafted captures (tools/pcapgen/enip.py)
# ------------------------------------------------------------------------------------------------


crafted = crafted_captures_fixture(gen.main)


def test_crafted_captures_are_deterministic_and_small(crafted, tmp_path):
    again = write_crafted(gen.main, tmp_path)
    check_crafted_captures(crafted, "enip", committed_required=False, again=again)


def test_crafted_attack_capture(crafted):
    result, events = _replay(crafted["enip_attack.pcap"])
    req = [e for e in events if e.direction == REQUEST]
    seen = {(e.fields.get("class_name"), e.function_name) for e in req if e.protocol == "cip"}
    for expected in (
        ("identity", "reset"), ("controller", "stop"), ("controller", "start"), ("firmware", "write_data"),
        ("identity", "set_attribute_single"), ("tcpip_interface", "set_attribute_single"), ("file", "initiate_download"),
        ("file", "download_transfer"), ("file", "initiate_upload"), ("file", "upload_transfer"),
        ("connection_manager", "large_forward_open"), ("connection_manager", "unconnected_send"),
    ):  # fmt: skip
        assert expected in seen, expected
    scans = {e.dst for e in req if e.function_name == "list_identity"}
    assert len(scans) == 40
    assert {e.fields["identity"]["product_name"] for e in events if e.fields and "identity" in e.fields} >= {
        "1756-L61/B LOGIX5561",
        "1769-L32E Ethernet Port",
    }
    assert any(e.function_name == "write_tag" and e.values == (99.0,) for e in req)
    resets = [e for e in req if e.function_name == "reset"]
    assert {e.fields["reset_type"] for e in resets} == {"power_cycle", "factory_defaults"}
    assert any(e.fields.get("depth") == 1 for e in resets)  # the one routed through Unconnected Send
    assert all(e.result != MALFORMED for e in events) and not {
        k for k in result.counters if k.startswith(("enip_", "cip_"))
    }


def test_crafted_normal_capture(crafted):
    result, events = _replay(crafted["enip_normal.pcap"])
    cats = Counter(e.category for e in events if e.protocol == "cip")
    assert cats[CONTROL] == cats[PROGRAM] == cats[DIAGNOSTIC] == 0
    names = {e.function_name for e in events}
    assert {"register_session", "list_identity", "list_services", "forward_open", "forward_close", "read_tag",
            "multiple_service_packet", "write_tag", "io_data", "get_attributes_all"} <= names  # fmt: skip
    replies = [e for e in events if e.direction == RESPONSE]
    assert replies and all(e.latency is not None for e in replies)
    assert any(e.fields.get("identity") for e in events if e.fields)
    assert not {k for k in result.counters if k.startswith(("enip_", "cip_"))}


def _tshark_counts(tshark: str, path: Path) -> dict:
    counts: dict = {"enip": Counter(), "cip": Counter()}
    for cmd, sc in tshark_fields(tshark, path, "enip.command", "cip.sc"):
        counts["enip"].update(cmd)
        counts["cip"].update(sc)
    return counts


def test_crafted_captures_match_tshark(crafted, tshark):
    for path in crafted.values():
        theirs = _tshark_counts(tshark, path)
        result, _ = _replay(path)
        ours = result.stats.as_ground_truth()
        for proto in ("enip", "cip"):
            assert ours[proto]["func_hist"] == dict(theirs[proto]), (path.name, proto)
            assert ours[proto]["pdus"] == sum(theirs[proto].values()), (path.name, proto)


# ------------------------------------------------------------------------------------------------
# The documentation's example is a test
# ------------------------------------------------------------------------------------------------


def test_doc_example_decodes_as_documented():
    text = DOCS.read_text()
    block = re.search(r"```hex\n(.*?)```", text, re.DOTALL)
    assert block, "docs/protocols/enip.md must keep its ```hex example"
    raw = bytes.fromhex("".join(block.group(1).split()))
    h = harness()
    events = h.client(raw)
    described = [(e.protocol, e.function_name, e.category) for e in events]
    assert described == [("enip", "send_rr_data", OTHER), ("cip", "unconnected_send", OTHER), ("cip", "stop", CONTROL)]
    assert events[2].fields["class_name"] == "controller" and events[2].fields["mode_change"] == "program"


# ------------------------------------------------------------------------------------------------
# Property tests: never raise, never loop (seeds from the real captures)
# ------------------------------------------------------------------------------------------------

# ICSWATCH_FUZZ_EXAMPLES=1000000 turns these into the long fuzz run outside CI (see protocol_testutil.py).
# Each example is also bounded in size, so a run never loops or grows.


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    """Encapsulation messages (a known command, a whole header) from a selection of real captures."""
    require_shared()
    names = ("icsnpp__enip_cip_example.pcap", "iti__CL5000EIP-Reboot_or_Restart.pcap", "icsmaster__enip_test.pcap",
             "suricata__enip_test1.pcap", "iti__CL5000EIP-Change_Port_Configuration_Attempt.pcap")  # fmt: skip
    return capture_payloads(
        (SHARED_PCAPS / "enip" / name for name in names),
        keep=lambda layer, payload: len(payload) >= 24 and (payload[0] | payload[1] << 8) in COMMANDS,
        packets_per_file=250,
    )[:300]


@fuzz_settings(300, suppress=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=6), st.sampled_from(["tcp", "udp"]))
def test_random_bytes_never_raise(chunks, transport):
    feed_alternating(harness(transport), chunks)


def _lie_in_a_length(data: st.DataObject, base: bytearray) -> None:
    """The encapsulation length or a CPF item length."""
    at = data.draw(st.sampled_from([2, 30, 34, 38]))
    if at + 2 <= len(base):
        base[at : at + 2] = struct.pack("<H", data.draw(st.integers(0, 0xFFFF)))


@fuzz_settings(300)
@given(data=st.data())
def test_mutated_real_payloads_never_raise(seeds, data):
    base = draw_edits(data, data.draw(st.sampled_from(seeds)), _lie_in_a_length)
    transport = data.draw(st.sampled_from(["tcp", "udp"]))
    feed_alternating(harness(transport), [bytes(base), bytes(base)])


@fuzz_settings(400, suppress=())
@given(st.binary(max_size=200), st.integers(0, 4))
def test_cip_parser_on_random_bytes_terminates_within_bounds(data, depth):
    out: list = []
    _cip.parse_message(data, 0, len(data), out, depth)
    assert len(out) <= 1 + _cip.MAX_MSP_SERVICES * 4
    _cip.parse_path(data, 0, len(data))
    for fn in (
        _cip.forward_open_fields,
        _cip.forward_open_reply_fields,
        _cip.forward_close_fields,
        _cip.unconnected_send_route,
        _cip.identity_fields,
    ):
        fn(data, 0, len(data), *((False,) if fn is _cip.forward_open_fields else ()))
