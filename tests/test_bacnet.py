"""BACnet analyzer (sensor/protocols/bacnet.py): BVLC, NPDU and APDU byte vectors (many quoted from the
real captures), every APDU type and the services a detector needs, the tag decoder, counting as
tshark does (and the three places where tshark is wrong), the real and crafted captures, and
hypothesis property tests seeded from the real captures.

Builders come from tools/pcapgen/bacnet.py (pure ``struct``): every vector is spelled out in bytes.
"""

from __future__ import annotations

import functools
import json
import struct
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_PCAPS, require_shared
from hypothesis import given
from hypothesis import strategies as st
from protocol_testutil import (
    MUTATIONS,
    capture_payloads,
    check_crafted_captures,
    crafted_captures_fixture,
    fuzz_settings,
    mutate,
    replay_capture,
    replay_documented_example,
    tshark_fields,
)

from sensor.events import (
    DIAGNOSTIC,
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OK,
    OTHER,
    PROGRAM,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
)
from sensor.protocols import registry
from sensor.protocols._harness import Harness
from sensor.protocols.bacnet import (
    CONFIRMED_CATEGORY,
    CONFIRMED_SERVICES,
    MAX_DEPTH,
    MAX_TAGS,
    SPEC,
    UNCONFIRMED_CATEGORY,
    UNCONFIRMED_SERVICES,
    BacnetAnalyzer,
    app_value,
    char_string,
    object_name,
    probe,
    tokenize,
)
from tools.pcapgen import bacnet as gen
from tools.pcapgen.bacnet import (
    ANALOG_INPUT,
    ANALOG_OUTPUT,
    ANALOG_VALUE,
    BINARY_OUTPUT,
    DEVICE,
    FILE,
    PRESENT_VALUE,
    PRIORITY_ARRAY,
    app_bool,
    app_enum,
    app_objid,
    app_real,
    app_sint,
    app_string,
    app_uint,
    broadcast,
    bvlc,
    closing,
    complex_ack,
    confirmed,
    ctx_enum,
    ctx_objid,
    ctx_uint,
    npdu,
    opening,
    read_property,
    read_property_ack,
    simple_ack,
    unconfirmed,
    unicast,
    write_property,
)

SERVER = ("192.168.0.24", 47808)


def harness(transport: str = "udp") -> Harness:
    return Harness(BacnetAnalyzer, transport=transport, client=("192.168.0.50", 47808), server=SERVER)


def counts(h: Harness) -> tuple[int, Counter]:
    return h.stats.pdus.get("bacnet", 0), Counter(h.stats.funcs.get("bacnet", {}))


def req(apdu: bytes, **kw) -> bytes:
    return unicast(npdu(apdu, expecting_reply=True, **kw))


def rsp(apdu: bytes, **kw) -> bytes:
    return unicast(npdu(apdu, **kw))


# ------------------------------------------------------------------------------------------------
# BVLC (Annex J)
# ------------------------------------------------------------------------------------------------


def test_bvlc_management_messages_are_events_not_pdus():
    h = harness()
    [wbdt] = h.client(bvlc(0x01, gen.bdt_entry("10.0.47.1") + gen.bdt_entry("10.0.47.66")))
    assert (wbdt.function, wbdt.function_name, wbdt.category, wbdt.direction) == (
        1, "write_broadcast_distribution_table", WRITE, REQUEST)
    assert wbdt.fields["bdt"] == ["10.0.47.1:47808", "10.0.47.66:47808"] and wbdt.fields["layer"] == "bvlc"
    [nak] = h.server(bvlc(0x00, struct.pack(">H", 0x0010)))
    assert (nak.function_name, nak.result, nak.code, nak.fields["result"]) == (
        "bvlc_result", EXCEPTION, 16, "write_bdt_nak")
    [ok] = h.server(bvlc(0x00, b"\x00\x00"))
    assert ok.result == OK and ok.fields["result"] == "successful_completion"
    [reg] = h.client(bvlc(0x05, struct.pack(">H", 300)))
    assert (reg.function_name, reg.category, reg.fields["ttl"]) == ("register_foreign_device", SESSION, 300)
    [rfdt] = h.client(bvlc(0x06, b""))
    assert (rfdt.function_name, rfdt.category) == ("read_foreign_device_table", DISCOVERY)
    [dele] = h.client(bvlc(0x08, bytes((10, 0, 0, 9)) + struct.pack(">H", 47808)))
    assert dele.fields["fdt_entry"] == "10.0.0.9:47808" and dele.category == WRITE
    [bad] = h.client(bvlc(0x0D, b""))
    assert bad.result == MALFORMED and bad.anomaly == "bvlc_unknown_function"
    assert counts(h) == (0, Counter())


def test_forwarded_npdu_keeps_the_original_sender():
    h = harness()
    [ev] = h.server(gen.forwarded("10.0.47.20", 47808, npdu(unconfirmed(0, gen.i_am(1020, 5)))))
    assert ev.fields["forwarded_from"] == "10.0.47.20:47808" and ev.function_name == "i_am"
    assert ev.fields["bvlc_function"] == "forwarded_npdu"
    assert counts(h) == (1, Counter({"unconfirmed:0": 1}))


def test_bvlc_length_shorter_than_the_datagram():
    """Trailing octets after the BVLC length are not part of the message (Annex J.2). tshark 4.0
    ignores the BVLC length and reads them: here it counts a Reject whose reason octet lies beyond
    the message; we report a cut Reject header (not a PDU) and `bvlc_length_mismatch`."""
    h = harness()
    [ev] = h.server(bytes.fromhex("810b000801106713739a"))
    assert h.counters["bvlc_length_mismatch"] == 1 and ev.anomaly == "apdu_short"
    assert counts(h) == (0, Counter())  # tshark: 1 bacapp.type (6)


def test_bvlc_ipv6():
    h = harness()
    body = npdu(unconfirmed(8))
    [ev] = h.client(struct.pack(">BBH", 0x82, 0x02, 7 + len(body)) + b"\x00\x00\x01" + body)
    assert ev.function_name == "who_is" and ev.fields["bvlc_version"] == 6
    [mgmt] = h.client(struct.pack(">BBH", 0x82, 0x03, 10) + bytes(6))
    assert mgmt.function_name == "address_resolution" and mgmt.fields["layer"] == "bvlc"


# ------------------------------------------------------------------------------------------------
# NPDU (clause 6.2) and network layer messages
# ------------------------------------------------------------------------------------------------


def test_npdu_routing_fields():
    h = harness()
    [ev] = h.client(req(confirmed(1, 12, read_property((ANALOG_VALUE, 3), PRESENT_VALUE)), dnet=2, dadr=b"\x07",
                        snet=5, sadr=b"\x01\x02", hop_count=250, priority=3))
    f = ev.fields
    assert (f["dnet"], f["dadr"], f["snet"], f["sadr"], f["hop_count"], f["npdu_priority"], f["expecting_reply"]) == (
        2, "07", 5, "0102", 250, 3, True)
    [bcast] = h.client(broadcast(npdu(unconfirmed(8), dnet=0xFFFF)))
    assert bcast.fields["dnet"] == 65535 and "dadr" not in bcast.fields


@pytest.mark.parametrize(
    "mtype,data,name,category,direction,extra",
    [
        (0x00, b"", "who_is_router_to_network", DISCOVERY, REQUEST, {}),
        (0x00, b"\x00\x02", "who_is_router_to_network", DISCOVERY, REQUEST, {"network": 2}),
        (0x01, b"\x00\x02\x00\x03", "i_am_router_to_network", DISCOVERY, RESPONSE, {"networks": [2, 3]}),
        (0x03, b"\x01\x00\x09", "reject_message_to_network", SESSION, RESPONSE, {"reject_reason": 1, "networks": [9]}),
        (0x06, b"\x00", "initialize_routing_table", WRITE, REQUEST, {}),
        (0x12, b"", "what_is_network_number", DISCOVERY, REQUEST, {}),
        (0x13, b"\x00\x07\x01", "network_number_is", DISCOVERY, RESPONSE, {"network": 7}),
        (0x90, b"\x01\x04\xaa", "proprietary-144", OTHER, REQUEST, {"vendor_id": 260}),
    ],
)
def test_network_layer_messages(mtype, data, name, category, direction, extra):
    h = harness()
    [ev] = h.client(broadcast(npdu(network_message=mtype, network_data=data)))
    assert (ev.function, ev.function_name, ev.category, ev.direction) == (mtype, name, category, direction)
    assert ev.fields["layer"] == "network" and all(ev.fields[k] == v for k, v in extra.items())
    assert counts(h) == (0, Counter())  # no APDU: no bacapp.type


def test_real_network_messages():
    """bacnet_services.pcap frames 273-274: Who-Is-Router-To-Network, I-Am-Router-To-Network 1, 2, 3."""
    h = harness()
    [who] = h.client(bytes.fromhex("810b0007018000"))
    [iam] = h.server(bytes.fromhex("810b000b01800100020003"))
    assert who.function_name == "who_is_router_to_network" and iam.fields["networks"] == [2, 3]


def test_npdu_version_other_than_1_is_dropped():
    """Clause 6.2.1: the protocol version is X'01'. tshark 4.0 does not check it and dissects the APDU
    behind any version (it counts a ReadProperty here); a device discards the message, and so do we."""
    h = harness()
    [ev] = h.client(b"\x81\x0a\x00\x0d" + b"\x02\x04" + confirmed(1, 12, b"\x0c\x00\x00\x00\x01\x19\x55")[:7])
    assert ev.result == MALFORMED and ev.anomaly == "npdu_bad_version"
    assert counts(h) == (0, Counter())  # tshark: bacapp.type 0, confirmed_service 12


def test_seven_octet_addresses_are_skipped_whole():
    """A 7-octet DADR/SADR is legal (LonTalk broadcast addresses: clause 11). tshark 4.0 calls DLEN or
    SLEN >= 7 "invalid" and does not skip the address (for DLEN not even the length octet), so it
    reads the APDU from the middle of the address; we skip the address as clause 6.2.2 says."""
    apdu = confirmed(7, 12, read_property((ANALOG_INPUT, 1), PRESENT_VALUE))
    h = harness()
    [ev] = h.client(req(apdu, snet=9, sadr=bytes(range(1, 8))))
    assert (ev.function_name, ev.fields["sadr"], ev.objects) == ("read_property", "01020304050607", ("analog-input:1",))
    [ev2] = h.client(req(apdu, dnet=9, dadr=b"\x07" * 7))
    assert ev2.function_name == "read_property" and ev2.fields["dadr"] == "07" * 7
    assert counts(h) == (2, Counter({"confirmed:12": 2}))


def test_npdu_truncated_and_invalid_slen():
    h = harness()
    [short] = h.client(b"\x81\x0a\x00\x09" + b"\x01\x20\x00\x02\x05")  # DADR of 5 octets missing
    assert short.anomaly == "npdu_short" and short.result == MALFORMED
    [nothing] = h.client(b"\x81\x0a\x00\x06\x01\x04")
    assert nothing.anomaly == "apdu_missing"
    h.client(rsp(simple_ack(1, 15), snet=3, sadr=b""))
    assert h.counters["npdu_bad_slen"] == 1


# ------------------------------------------------------------------------------------------------
# APDU types: headers and counting (tshark 4.0 reads the whole fixed header first)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "apdu,pdus,func",
    [
        (bytes.fromhex("000501"), 0, None),  # confirmed request cut before the service choice
        (bytes.fromhex("0005010c"), 1, "confirmed:12"),
        (bytes.fromhex("0805010c0c"), 0, None),  # segmented: sequence number and window come first
        (bytes.fromhex("0805010c0c0c"), 1, "confirmed:12"),
        (bytes.fromhex("10"), 0, None),
        (bytes.fromhex("1005"), 1, "unconfirmed:5"),
        (bytes.fromhex("2005"), 0, None),
        (bytes.fromhex("200501"), 1, "confirmed:1"),
        (bytes.fromhex("380501"), 0, None),
        (bytes.fromhex("3805010c0c"), 1, "confirmed:12"),
        (bytes.fromhex("40"), 1, None),  # tshark counts a Segment-ACK from its first octet
        (bytes.fromhex("4005010c"), 1, None),
        (bytes.fromhex("500501"), 1, "confirmed:1"),
        (bytes.fromhex("6005"), 0, None),
        (bytes.fromhex("600501"), 1, None),
        (bytes.fromhex("700501"), 1, None),
        (bytes.fromhex("8005010c"), 0, None),  # reserved PDU type: no bacapp.type
    ],
)
def test_apdu_headers_count_as_tshark(apdu, pdus, func):
    """Each row was checked against tshark 4.0.17 (bacapp.type / confirmed_service / unconfirmed_service)."""
    h = harness()
    [ev] = h.client(rsp(apdu))
    want = Counter({func: 1}) if func else Counter()
    assert counts(h) == (pdus, want)
    if pdus == 0:
        assert ev.result == MALFORMED


def test_every_service_name_and_category():
    h = harness()
    for svc in sorted(CONFIRMED_SERVICES):
        [ev] = h.client(req(confirmed(svc, svc)))
        assert (ev.function, ev.function_name, ev.category) == (svc, CONFIRMED_SERVICES[svc], CONFIRMED_CATEGORY[svc])
    for svc in sorted(UNCONFIRMED_SERVICES):
        [ev] = h.client(broadcast(npdu(unconfirmed(svc))))
        assert (ev.function, ev.function_name, ev.category) == (svc, UNCONFIRMED_SERVICES[svc], UNCONFIRMED_CATEGORY[svc])
    [unk] = h.client(req(confirmed(1, 99)))
    assert (unk.function_name, unk.category) == ("confirmed-99", OTHER)
    assert counts(h)[0] == len(CONFIRMED_SERVICES) + len(UNCONFIRMED_SERVICES) + 1


# ------------------------------------------------------------------------------------------------
# Real vectors (icsnpp bacnet_services / error_reject_abort / segmented_data)
# ------------------------------------------------------------------------------------------------


def test_real_write_property_with_priority():
    """bacnet_services.pcap frames 3-4: WriteProperty analog-output:101 present-value 50.0 at priority 10."""
    h = harness()
    [w] = h.client(bytes.fromhex("810a001f01240003016cff0203020f0c0040006519553e44424800003f490a"), ts=1.0)
    [a] = h.server(bytes.fromhex("810a000d01080003016c20020f"), ts=1.05)
    assert (w.function_name, w.category, w.direction, w.objects, w.values) == (
        "write_property", WRITE, REQUEST, ("analog-output:101",), (50.0,))
    assert w.fields["priority"] == 10 and w.fields["properties"] == ["present-value"] and w.address == 101
    assert (w.fields["dnet"], w.fields["dadr"], w.fields["invoke_id"]) == (3, "6c", 2)
    assert (a.function_name, a.direction, a.fields["pdu_type"], a.fields["snet"]) == ("write_property", RESPONSE, "simple_ack", 3)
    assert a.latency == pytest.approx(0.05)


def test_real_reinitialize_device_password_is_never_reported():
    """bacnet_services.pcap frames 398-399: ReinitializeDevice coldstart, password "ethereal", refused."""
    h = harness()
    [r] = h.client(bytes.fromhex("810a001c01240003016cff0203891409001d0900657468657265616c"))
    [e] = h.server(bytes.fromhex("810a001101080003016c5089149105911a"))
    assert (r.function_name, r.category, r.fields["reinit_state"]) == ("reinitialize_device", DIAGNOSTIC, "coldstart")
    assert r.fields["password_present"] is True and r.fields["password_length"] == 8
    assert "ethereal" not in json.dumps(r.to_dict())
    assert (e.result, e.code, e.fields["error_class"], e.fields["error_code"]) == (
        EXCEPTION, 26, "services", "password_failure")


def test_real_device_communication_control():
    """bacnet_services.pcap frame 267: DCC disable for 1 minute, password "filister"."""
    h = harness()
    [d] = h.client(bytes.fromhex("810a001e01240003016cff02038511090119012d090066696c6973746572"))
    assert (d.function_name, d.category, d.fields["dcc_state"], d.values) == (
        "device_communication_control", DIAGNOSTIC, "disable", (1,))
    assert d.fields["password_length"] == 8 and d.fields["duration_minutes"] == 1


def test_real_segmented_read_property():
    """bacnet_segmented_data.pcap frames 12-19: ReadProperty of the object list, answered once
    whole (frame 13) and once in three segments (15, 17, 18) with two Segment-ACKs. Every segment
    counts (tshark: confirmed_service 12 on each); only the first segment's parameters are decoded."""
    require_shared()
    from scapy.all import IP, UDP, rdpcap

    h = harness()
    for pkt in rdpcap(str(SHARED_PCAPS / "bacnet/icsnpp__bacnet_segmented_data.pcap"))[11:19]:
        h.analyzer.feed(pkt[IP].src == "10.0.0.1", bytes(pkt[UDP].payload), float(pkt.time))
    rq, whole, _rq2, seg0, ack0, seg1, seg2, _ack2 = h.events
    assert (rq.fields["max_segments"], rq.fields["max_apdu"], rq.fields["segmented_response_accepted"]) == (8, 1024, True)
    assert rq.fields["array_index"] == 0 and rq.fields["properties"] == ["object-list"] and rq.unit == 254
    assert whole.values == (426,) and whole.latency is not None
    assert (seg0.fields["segmented"], seg0.fields["more_follows"], seg0.fields["sequence"], seg0.fields["window"]) == (
        True, True, 0, 3)
    assert seg0.values[:2] == ("binary-input:0", "binary-input:20001") and seg0.anomaly is None  # cut mid-list
    assert seg1.values is None and seg2.fields["more_follows"] is False  # later segments: not decoded
    assert (ack0.function_name, ack0.direction, ack0.fields["service"], ack0.fields["server"]) == (
        "segment_ack", REQUEST, "read_property", False)
    assert seg0.latency is not None and seg1.latency >= seg0.latency  # each segment: time since the request
    assert counts(h) == (8, Counter({"confirmed:12": 6}))


def test_real_error_reject_abort():
    h = harness()
    [cov] = h.client(bytes.fromhex(
        "810a002b01000005010109011c020004d22c004000013a02574e09552e44000000002f096f2e8204002f4f"))
    assert (cov.function_name, cov.direction, cov.unit, cov.objects) == (
        "confirmed_cov_notification", UNSOLICITED, 1234, ("device:1234", "analog-output:1"))
    assert cov.values == (0.0, "0000") and cov.fields["time_remaining"] == 599
    [iam] = h.client(bytes.fromhex("810a001501001000c4020000652204009100220539"))
    assert iam.fields["identity"] == {"device_instance": 101, "vendor_id": 1337, "vendor": "vendor-1337",
                                      "max_apdu": 1024, "segmentation": "both"}
    [rej] = h.server(bytes.fromhex("810a000e0120000d013dff603a09"))
    assert (rej.function_name, rej.result, rej.code, rej.fields["reason"]) == ("reject", EXCEPTION, 9, "unrecognized_service")
    [abt] = h.server(bytes.fromhex("810b00090100710100"))
    assert (abt.function_name, abt.fields["server"], abt.fields["reason"], abt.direction) == ("abort", True, "other", RESPONSE)


def test_real_read_property_multiple_exception_schedule():
    """icspcap BACnetL_SchedRPM.pcapng: an RPM of a schedule answered with an error element for one
    property (the request as a whole succeeds)."""
    require_shared()
    from scapy.all import UDP, rdpcap

    pkts = [bytes(p[UDP].payload) for p in rdpcap(str(SHARED_PCAPS / "bacnet/icspcap__BACnetL_SchedRPM.pcapng"))]
    h = harness()
    [rq] = h.client(pkts[0])
    [ack] = h.server(pkts[1])
    assert rq.function_name == ack.function_name == "read_property_multiple"
    assert rq.objects and rq.objects == ack.objects and ack.result == OK and ack.latency is not None
    assert counts(h) == (2, Counter({"confirmed:14": 2}))


# ------------------------------------------------------------------------------------------------
# Services (clauses 13-17, 21)
# ------------------------------------------------------------------------------------------------


def test_read_property_identity_of_a_device():
    h = harness()
    h.client(req(confirmed(1, 12, read_property((DEVICE, 1020), 121))))
    [ack] = h.server(rsp(complex_ack(1, 12, read_property_ack((DEVICE, 1020), 121, app_string("Johnson Controls")))))
    assert ack.fields["identity"] == {"device_instance": 1020, "vendor_name": "Johnson Controls"}
    assert ack.unit == 1020 and ack.values == ("Johnson Controls",)
    h.client(req(confirmed(2, 12, read_property((DEVICE, 1020), 120))))
    [vid] = h.server(rsp(complex_ack(2, 12, read_property_ack((DEVICE, 1020), 120, app_uint(8)))))
    assert vid.fields["identity"] == {"device_instance": 1020, "vendor_id": 8, "vendor": "Delta Controls"}
    [not_dev] = h.server(rsp(complex_ack(3, 12, read_property_ack((ANALOG_VALUE, 1), 77, app_string("x")))))
    assert "identity" not in not_dev.fields


def test_read_property_multiple_and_error_elements():
    h = harness()
    spec = [((ANALOG_INPUT, 1), [PRESENT_VALUE, 111]), ((gen.BINARY_INPUT, 2), [PRESENT_VALUE])]
    [rq] = h.client(req(confirmed(4, 14, gen.rpm_request(spec))))
    assert rq.objects == ("analog-input:1", "binary-input:2") and rq.fields["properties"] == ["present-value", "status-flags"]
    assert rq.quantity == 2
    body = (ctx_objid(0, ANALOG_INPUT, 1) + opening(1) + ctx_enum(2, PRESENT_VALUE) + opening(4) + app_real(4.5)
            + closing(4) + ctx_enum(2, 111) + opening(5) + app_enum(2) + app_enum(32) + closing(5) + closing(1))
    [ack] = h.server(rsp(complex_ack(4, 14, body)))
    assert ack.values == (4.5,) and ack.result == OK
    assert (ack.fields["error_class"], ack.fields["error_code"]) == ("property", "unknown_property")


def test_write_property_to_the_priority_array():
    h = harness()
    [ev] = h.client(req(confirmed(6, 15, write_property((ANALOG_OUTPUT, 2), PRIORITY_ARRAY, app_real(100.0), index=1))))
    assert ev.fields["properties"] == ["priority-array"] and ev.fields["array_index"] == 1 and ev.values == (100.0,)
    [pv] = h.client(req(confirmed(7, 15, write_property((BINARY_OUTPUT, 3), PRESENT_VALUE, app_enum(0), priority=1))))
    assert pv.fields["priority"] == 1 and pv.values == (0,) and pv.objects == ("binary-output:3",)
    [null] = h.client(req(confirmed(8, 15, write_property((BINARY_OUTPUT, 3), PRESENT_VALUE, gen.app_null(), priority=8))))
    assert null.values == (None,)  # relinquish


def test_write_property_multiple():
    body = (ctx_objid(0, ANALOG_OUTPUT, 2) + opening(1) + ctx_enum(0, PRESENT_VALUE) + opening(2) + app_real(1.0)
            + closing(2) + ctx_uint(3, 1) + closing(1))
    h = harness()
    [ev] = h.client(req(confirmed(8, 16, body)))
    assert (ev.objects, ev.values, ev.fields["priority"]) == (("analog-output:2",), (1.0,), 1)


def test_reinitialize_states_and_dcc_fields():
    h = harness()
    for state, name in ((0, "coldstart"), (1, "warmstart"), (3, "end_backup"), (7, "activate_changes"), (9, "state-9")):
        [ev] = h.client(req(confirmed(1, 20, gen.reinitialize_device(state))))
        assert ev.fields["reinit_state"] == name and ev.fields["password_present"] is False
    [dcc] = h.client(req(confirmed(2, 17, gen.device_communication_control(2, 60, "pw"))))
    assert (dcc.fields["dcc_state"], dcc.fields["duration_minutes"], dcc.fields["password_length"]) == (
        "disable_initiation", 60, 2)


def test_file_transfer_services():
    h = harness()
    data = bytes(range(256)) * 2
    [w] = h.client(req(confirmed(9, 7, gen.atomic_write_file_stream(1, 128, data))))
    assert (w.category, w.objects, w.fields["access"], w.fields["file_start"], w.fields["file_bytes"]) == (
        PROGRAM, ("file:1",), "stream", 128, 512)
    rec = app_objid(FILE, 2) + opening(1) + app_sint(-1) + app_uint(2) + gen.app_octets(b"ab") + gen.app_octets(b"cde") + closing(1)
    [wr] = h.client(req(confirmed(10, 7, rec)))
    assert (wr.fields["access"], wr.fields["record_count"], wr.fields["file_bytes"], wr.fields["file_start"]) == (
        "record", 2, 5, -1)
    [r] = h.client(req(confirmed(11, 6, gen.atomic_read_file_stream(1, 0, 400))))
    assert (r.fields["requested_count"], r.category) == (400, PROGRAM)
    [ack] = h.server(rsp(complex_ack(11, 6, app_bool(True) + opening(0) + app_sint(0) + gen.app_octets(b"x" * 40) + closing(0))))
    assert ack.fields["end_of_file"] is True and ack.fields["file_bytes"] == 40


def test_subscribe_cov_and_cancel():
    h = harness()
    [sub] = h.client(req(confirmed(1, 5, gen.subscribe_cov(17, (ANALOG_INPUT, 1), True, 600))))
    assert (sub.fields["process_id"], sub.fields["confirmed_notifications"], sub.fields["lifetime"], sub.fields["cancel"]) == (
        17, True, 600, False)
    [cancel] = h.client(req(confirmed(2, 5, ctx_uint(0, 17) + ctx_objid(1, ANALOG_INPUT, 1))))
    assert cancel.fields["cancel"] is True and cancel.objects == ("analog-input:1",)


def test_object_creation_and_deletion():
    h = harness()
    [by_type] = h.client(req(confirmed(1, 10, opening(0) + ctx_enum(0, ANALOG_VALUE) + closing(0))))
    assert by_type.fields["object_type"] == "analog-value" and by_type.category == PROGRAM
    init = opening(1) + ctx_enum(0, 77) + opening(2) + app_string("new") + closing(2) + closing(1)
    [by_id] = h.client(req(confirmed(2, 10, opening(0) + ctx_objid(1, ANALOG_VALUE, 9) + closing(0) + init)))
    assert by_id.objects == ("analog-value:9",) and by_id.values == ("new",) and by_id.fields["properties"] == ["object-name"]
    [ack] = h.server(rsp(complex_ack(2, 10, app_objid(ANALOG_VALUE, 9))))
    assert ack.objects == ("analog-value:9",)
    [dele] = h.client(req(confirmed(3, 11, app_objid(ANALOG_VALUE, 9))))
    assert dele.objects == ("analog-value:9",) and dele.category == PROGRAM


def test_discovery_services():
    h = harness()
    [wi] = h.client(broadcast(npdu(unconfirmed(8, gen.who_is(100, 200)))))
    assert wi.fields["range"] == [100, 200] and wi.category == DISCOVERY and wi.direction == REQUEST
    [half] = h.client(broadcast(npdu(unconfirmed(8, ctx_uint(0, 5)))))
    assert half.fields["incomplete"] is True
    [wh] = h.client(broadcast(npdu(unconfirmed(7, gen.ctx_string(3, "AHU-1")))))
    assert wh.fields["object_name"] == "AHU-1"
    [wh_id] = h.client(broadcast(npdu(unconfirmed(7, ctx_objid(2, ANALOG_INPUT, 4)))))
    assert wh_id.objects == ("analog-input:4",)
    [ih] = h.server(broadcast(npdu(unconfirmed(1, app_objid(DEVICE, 9) + app_objid(ANALOG_INPUT, 4) + app_string("T1")))))
    assert (ih.unit, ih.objects, ih.fields["object_name"], ih.direction) == (9, ("device:9", "analog-input:4"), "T1", RESPONSE)
    [iam] = h.server(broadcast(npdu(unconfirmed(0, gen.i_am(4194302, 260, 50, 3)))))
    assert iam.fields["identity"]["vendor"] == "BACnet Stack at SourceForge" and iam.unit == 4194302
    [cut] = h.server(broadcast(npdu(unconfirmed(0, app_objid(DEVICE, 1)))))
    assert cut.fields["incomplete"] is True and "identity" not in cut.fields


def test_time_synchronisation():
    h = harness()
    [ts] = h.client(broadcast(npdu(unconfirmed(6, gen.time_sync(2020, 1, 1, 0, 0, 0, 3)))))
    assert (ts.function_name, ts.category, ts.fields["time"]) == ("time_synchronization", WRITE, "2020-01-01T00:00:00.00")
    wild = b"\xa4" + bytes((0xFF, 0xFF, 0xFF, 0xFF)) + gen.app_time(12, 0, 0)  # any date
    [w] = h.client(broadcast(npdu(unconfirmed(9, wild))))
    assert w.fields["time"] == "*-*-*T12:00:00.00"


def test_cov_notifications_are_unsolicited():
    h = harness()
    body = gen.cov_notification(1, 7, (ANALOG_INPUT, 1), 60, [(PRESENT_VALUE, app_real(2.5)), (111, gen.STATUS_OK)])
    [u] = h.server(rsp(unconfirmed(2, body)))
    assert (u.direction, u.unit, u.values, u.fields["properties"]) == (
        UNSOLICITED, 7, (2.5, "0000"), ["present-value", "status-flags"])
    [c] = h.server(req(confirmed(9, 1, body)))
    [a] = h.client(rsp(simple_ack(9, 1)))
    assert c.direction == UNSOLICITED and a.direction == RESPONSE and a.latency is not None


def test_error_forms_and_reject_abort_pairing():
    h = harness()
    h.client(req(confirmed(5, 16, b"")), ts=1.0)
    wpm_error = bytes((0x50, 5, 16)) + opening(0) + app_enum(2) + app_enum(40) + closing(0) + opening(1) + ctx_objid(0, 1, 1) + ctx_enum(1, 85) + closing(1)
    [e] = h.server(rsp(wpm_error), ts=1.5)
    assert (e.fields["error_class"], e.fields["error_code"], e.latency) == ("property", "write_access_denied", 0.5)
    h.client(req(confirmed(6, 20, gen.reinitialize_device(1))), ts=2.0)
    [rej] = h.server(rsp(gen.reject(6, 4)), ts=2.25)
    assert (rej.fields["service"], rej.category, rej.latency, rej.fields["reason"]) == (
        "reinitialize_device", DIAGNOSTIC, 0.25, "invalid_tag")
    h.client(req(confirmed(7, 12, read_property((DEVICE, 1), 76))), ts=3.0)
    [cab] = h.client(rsp(gen.abort(7, 4, server=False)), ts=3.1)  # the client aborts its own request
    assert (cab.direction, cab.fields["service"], cab.fields["reason"]) == (REQUEST, "read_property", "segmentation_not_supported")
    [incomplete] = h.server(rsp(bytes((0x50, 9, 12))))
    assert incomplete.anomaly == "apdu_error_incomplete" and incomplete.result == EXCEPTION


def test_private_transfer_parameters_are_opaque():
    h = harness()
    body = ctx_uint(0, 7) + ctx_uint(1, 511) + opening(2) + b"\x7f\x00\x00" + closing(2)
    [ev] = h.client(req(confirmed(52, 18, body)))
    assert (ev.fields["vendor"], ev.fields["service_number"], ev.anomaly, ev.values) == (
        "Siemens (Landis & Staefa)", 511, None, None)


def test_pending_table_is_bounded():
    h = harness()
    for i in range(300):
        h.client(req(confirmed(i % 256, 12, read_property((ANALOG_INPUT, i), PRESENT_VALUE))), ts=float(i))
    assert len(h.analyzer._pending) <= 256


# ------------------------------------------------------------------------------------------------
# Tags (clause 20.2)
# ------------------------------------------------------------------------------------------------


def test_tokenize_extended_numbers_and_lengths():
    data = bytes((0xF9, 40, 0x01)) + gen.tag(2, False, bytes(300)) + gen.tag(6, False, bytes(70000)) + opening(20) + closing(20)
    tags, anomaly = tokenize(data, 0, len(data))
    assert anomaly is None
    assert [(t[1], t[2], t[3], t[5]) for t in tags] == [(40, True, 0, 1), (2, False, 0, 300), (6, False, 0, 70000),
                                                         (20, True, 1, 0), (20, True, 2, 0)]


@pytest.mark.parametrize(
    "data,anomaly",
    [
        (bytes((0x3E,)), "bacnet_unclosed_tag"),
        (bytes((0x3F,)), "bacnet_bad_tag"),  # closing without opening
        (bytes((0x3E, 0x4F)), "bacnet_bad_tag"),  # closing the wrong tag
        (bytes((0x25, 200, 1)), "bacnet_bad_tag"),  # length past the end
        (bytes((0x25,)), "bacnet_bad_tag"),
        (bytes((0x25, 254, 1)), "bacnet_bad_tag"),
        (bytes((0x25, 255, 0, 0)), "bacnet_bad_tag"),
        (bytes((0xF8,)), "bacnet_bad_tag"),
        (bytes((0x0E,)) * (MAX_DEPTH + 1), "bacnet_tag_depth"),
        (bytes((0x00,)) * (MAX_TAGS + 1), "bacnet_tag_budget"),
    ],
)
def test_tokenize_never_overreads(data, anomaly):
    assert tokenize(data, 0, len(data))[1] == anomaly


def test_application_values():
    def one(raw: bytes):
        tags, anomaly = tokenize(raw, 0, len(raw))
        assert anomaly is None and len(tags) == 1
        return app_value(raw, tags[0])

    assert one(gen.app_null()) is None and one(app_bool(True)) is True and one(app_bool(False)) is False
    assert one(app_uint(2**40)) == 2**40 and one(app_sint(-70000)) == -70000
    assert one(app_real(1.5)) == 1.5 and one(gen.app_double(-2.25)) == -2.25
    assert one(gen.app_octets(b"\x01\xff")) == "01ff" and one(app_enum(3)) == 3
    assert one(gen.app_bits("1011")) == "1011" and one(gen.app_date(2026, 3, 9, 1)) == "2026-03-09"
    assert one(gen.app_time(23, 5, 1, 99)) == "23:05:01.99" and one(app_objid(DEVICE, 42)) == "device:42"
    assert one(gen.tag(2, False, bytes(12) + b"\x01")) == 0  # wider than 8 octets: the first 8 are read
    assert one(gen.tag(4, False, b"\x00\x00")) is None  # a REAL must be 4 octets
    assert one(gen.tag(13, False, b"\x05")) == "05"  # reserved application tag: raw


def test_character_sets():
    assert char_string(b"\x00h\xc3\xa9", 0, 4) == "hé"
    assert char_string(b"\x04\x00h\x00i", 0, 5) == "hi"  # UCS-2
    assert char_string(b"\x05\xe9", 0, 2) == "é"  # ISO 8859-1
    assert char_string(b"\x03\x00\x00\x00A", 0, 5) == "A"  # UCS-4
    assert char_string(b"", 0, 0) == "" and len(char_string(b"\x00" + b"a" * 5000, 0, 5001)) == 256


def test_object_names():
    assert object_name((8 << 22) | 1020) == "device:1020"
    assert object_name((600 << 22) | 5) == "object-600:5"


# ------------------------------------------------------------------------------------------------
# BACnet/Ethernet (ISO 8802-2 LLC, clause 7)
# ------------------------------------------------------------------------------------------------


def test_llc_frames():
    h = harness("l2")
    [a] = h.client(b"\x82\x82\x03" + npdu(unconfirmed(8)))  # LLC header included
    [b] = h.client(npdu(unconfirmed(8)))  # or the LLC payload alone
    assert a.function_name == b.function_name == "who_is" and a.fields["datalink"] == "llc"
    assert counts(h) == (2, Counter({"unconfirmed:8": 2}))
    u = harness()
    [c] = u.client(npdu(unconfirmed(8)))  # on UDP a BVLC header is required (tshark: BVLC only)
    assert c.anomaly == "bacnet_unknown_datalink" and counts(u) == (0, Counter())


# ------------------------------------------------------------------------------------------------
# Registry and probe
# ------------------------------------------------------------------------------------------------


def test_spec_and_registry():
    assert SPEC.name == "bacnet" and 47808 in SPEC.udp_ports and 0x82 in SPEC.ethertypes
    reg = registry()
    assert reg.udp[47808].name == "bacnet" and reg.ether[0x82].name == "bacnet"
    assert reg.probe(broadcast(npdu(unconfirmed(8))), True).name == "bacnet"


def test_probe():
    assert probe(broadcast(npdu(unconfirmed(8))), True)
    assert probe(bvlc(0x00, b"\x00\x00"), False)
    assert not probe(broadcast(npdu(unconfirmed(8)))[:-1], True)  # length field disagrees
    assert not probe(b"\x81\x0b\x00\x06\x02\x00", True)  # NPDU version 2
    assert not probe(b"\x81\x20\x00\x04", True) and not probe(b"\x81\x0a", True)
    assert not probe(b"GET / HTTP/1.1\r\n\r\n", True)


# ------------------------------------------------------------------------------------------------
# Real captures against tshark (GROUND_TRUTH.json)
# ------------------------------------------------------------------------------------------------


def _replay(path: Path):
    return replay_capture(path, "bacnet")


def _decoder_delivers_llc() -> bool:
    """Whether the sensor's decoder hands 802.3/LLC frames to the layer-2 table yet (see the docs)."""
    from conftest import run_packets

    frame = b"\xff" * 6 + b"\x02" * 6 + struct.pack(">H", 3 + 4) + b"\x82\x82\x03" + npdu(unconfirmed(8))
    _, events = run_packets([(1.0, frame)])
    return any(e.protocol == "bacnet" for e in events)


@functools.lru_cache(maxsize=8)
def _llc_counts(path: Path) -> tuple[int, Counter]:
    """The BACnet/Ethernet frames of a capture fed straight to the analyzer (scapy extracts them)."""
    from scapy.all import LLC, Dot3, PcapReader

    h = harness("l2")
    for pkt in PcapReader(str(path)):
        if LLC in pkt and pkt[LLC].dsap == 0x82:
            raw = bytes(pkt[LLC])[: pkt[Dot3].len] if Dot3 in pkt else bytes(pkt[LLC])
            h.client(raw)
    return counts(h)


def test_real_captures_match_tshark(ground_truth):
    truth = {k: v["protocols"]["bacnet"] for k, v in ground_truth.items() if "bacnet" in v.get("protocols", {})}
    assert len(truth) >= 6
    llc = _decoder_delivers_llc()
    for rel, t in sorted(truth.items()):
        result, _ = _replay(SHARED_PCAPS / rel)
        ours = result.stats.as_ground_truth().get("bacnet", {"pdus": 0, "func_hist": {}})
        pdus, hist = ours["pdus"], Counter(ours["func_hist"])
        if not llc:  # until the decoder delivers LLC frames, add them as the analyzer counts them
            lp, lh = _llc_counts(SHARED_PCAPS / rel)
            pdus += lp
            hist += lh
        assert result.counters.get("analyzer_error_bacnet", 0) == 0, rel
        assert pdus == t["pdus"], rel
        assert dict(hist) == t["func_hist"], rel


def test_bacnet_services_has_ethernet_frames():
    """108 of the 7153 APDUs of bacnet_services.pcap travel in 802.3/LLC frames (tshark counts them)."""
    require_shared()
    assert _llc_counts(SHARED_PCAPS / "bacnet/icsnpp__bacnet_services.pcap")[0] == 108


# ------------------------------------------------------------------------------------------------
# Crafted captures (tools/pcapgen/bacnet.py)
# ------------------------------------------------------------------------------------------------


crafted = crafted_captures_fixture(gen.main)


def test_crafted_captures_are_deterministic_and_small(crafted):
    check_crafted_captures(crafted, "bacnet", committed_required=True)


def test_crafted_normal_capture(crafted):
    result, events = _replay(crafted["bacnet_normal.pcap"])
    assert not [e for e in events if e.result != OK or e.anomaly]
    names = Counter(e.function_name for e in events)
    assert names["who_is"] == 1 and names["i_am"] == 2 and names["unconfirmed_cov_notification"] == 12
    assert names["read_property"] >= 50 and names["read_property_multiple"] >= 48
    assert not [e for e in events if e.category in (DIAGNOSTIC, PROGRAM)]
    assert [e.fields.get("priority") for e in events if e.function_name == "write_property"] == [None, None]
    ids = {e.src: e.fields["identity"] for e in events if e.fields and "identity" in e.fields and "vendor_name" in e.fields["identity"]}
    assert ids["10.0.47.21"]["model_name"] == "OptiFlex"
    assert not [k for k, v in result.counters.items() if v and k.startswith(("bacnet", "npdu"))]


def test_crafted_attack_capture(crafted):
    _, events = _replay(crafted["bacnet_attack.pcap"])
    by = Counter((e.function_name, e.direction) for e in events)
    assert by[("reinitialize_device", REQUEST)] == 3 and by[("device_communication_control", REQUEST)] == 1
    reinit = [e.fields["reinit_state"] for e in events if e.function_name == "reinitialize_device" and e.direction == REQUEST]
    assert reinit == ["warmstart", "warmstart", "coldstart"]
    [dcc] = [e for e in events if e.function_name == "device_communication_control" and e.direction == REQUEST]
    assert dcc.fields["dcc_state"] == "disable" and dcc.fields["duration_minutes"] == 60
    writes = [e for e in events if e.function_name == "write_property" and e.direction == REQUEST]
    assert [e.fields.get("priority") for e in writes] == [1, None]
    assert writes[1].fields["properties"] == ["priority-array"] and writes[1].fields["array_index"] == 1
    [afw] = [e for e in events if e.function_name == "atomic_write_file" and e.direction == REQUEST]
    assert afw.fields["file_bytes"] == 400 and afw.objects == ("file:1",)
    syncs = [e for e in events if e.function_name in ("time_synchronization", "utc_time_synchronization")]
    assert {e.src for e in syncs} == {"10.0.47.66"} and len(syncs) == 2
    assert [e.code for e in events if e.result == EXCEPTION] == [26, 40, 9, 16]
    assert {e.src for e in events if e.direction == REQUEST} == {"10.0.47.66"}


def test_crafted_captures_match_tshark(crafted, tshark):
    for path in crafted.values():
        fields = ("bacapp.type", "bacapp.confirmed_service", "bacapp.unconfirmed_service")
        pdus, want = 0, Counter()
        for types, confirmed_services, unconfirmed_services in tshark_fields(tshark, path, *fields):
            pdus += len(types)
            want.update(f"confirmed:{v}" for v in confirmed_services if v)
            want.update(f"unconfirmed:{v}" for v in unconfirmed_services if v)
        result, _ = _replay(path)
        ours = result.stats.as_ground_truth()["bacnet"]
        assert (ours["pdus"], ours["func_hist"]) == (pdus, dict(want)), path.name


# ------------------------------------------------------------------------------------------------
# Property tests: never raise, never loop (hypothesis; seeds from the real captures)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    """UDP payloads of the first 1501 packets of each real BACnet capture."""
    require_shared()
    out = capture_payloads(sorted((SHARED_PCAPS / "bacnet").iterdir()), ("udp",), packets_per_file=1501)
    assert len(out) > 100
    return out


PROPS = fuzz_settings(150, deadline=1000)


def _check(h: Harness) -> None:
    pdus, hist = counts(h)
    assert sum(hist.values()) <= pdus
    for e in h.events:
        json.dumps(e.to_dict())
        assert e.values is None or len(e.values) <= 32
        assert e.objects is None or len(e.objects) <= 64
    assert len(h.analyzer._pending) <= 256


@PROPS
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=600)), max_size=8), st.sampled_from(["udp", "l2"]))
def test_random_datagrams_never_raise(datagrams, transport):
    h = harness(transport)
    for side, data in datagrams:
        h.analyzer.feed(side, data, 1.0)
        h.analyzer.feed(side, b"\x81\x0a" + struct.pack(">H", 4 + len(data)) + data, 1.0)
        h.analyzer.feed(side, b"\x81\x0a" + struct.pack(">H", 6 + len(data)) + b"\x01\x00" + data, 1.0)
    _check(h)


@PROPS
@given(st.binary(max_size=2000))
def test_random_service_parameters_never_raise(body):
    """Every service decoder on arbitrary parameter bytes (requests, acks, unconfirmed)."""
    h = harness()
    for svc in range(34):
        h.client(req(confirmed(svc, svc, body)))
        h.server(rsp(complex_ack(svc, svc, body)))
        h.server(rsp(bytes((0x50, svc, svc)) + body))
    for svc in range(15):
        h.client(broadcast(npdu(unconfirmed(svc, body))))
    _check(h)
    tags, _ = tokenize(body, 0, len(body))
    assert len(tags) <= MAX_TAGS and all(t[0] < MAX_DEPTH for t in tags)


@PROPS
@given(data=st.data(), ops=MUTATIONS, fix_length=st.booleans())
def test_mutated_real_datagrams_never_raise(seeds, data, ops, fix_length):
    h = harness()
    for seed in data.draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=4)):
        m = bytearray(mutate(seed, ops))
        if fix_length and len(m) >= 4:
            m[2:4] = struct.pack(">H", len(m))
        h.analyzer.feed(data.draw(st.booleans()), bytes(m), 1.0)
    _check(h)


# ------------------------------------------------------------------------------------------------
# The documentation's example
# ------------------------------------------------------------------------------------------------


def test_doc_example():
    got, expected = replay_documented_example(Harness(BacnetAnalyzer, transport="udp", client=("10.0.47.66", 47809), server=("10.0.47.20", 47808)), "bacnet.md", 1767229260.0, 1767229260.25)
    assert got == expected
