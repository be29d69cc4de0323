"""DNP3 analyzer (sensor/protocols/dnp3.py): byte vectors per layer and per function code, CRCs,
transport reassembly, malformed input, the real captures against tshark's counts, the crafted
captures, and hypothesis property tests (random and mutated bytes seeded from the real captures).

Vectors are built with the pure byte builders of tools/pcapgen/dnp3.py (every CRC computed, so a
test says which octet it breaks) or quoted from the real captures as hex.
"""

from __future__ import annotations

import json
import math
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
    CONTROL,
    DIAGNOSTIC,
    EXCEPTION,
    MALFORMED,
    OK,
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
)
from sensor.protocols import registry
from sensor.protocols._harness import Harness
from sensor.protocols.dnp3 import (
    FUNCTIONS,
    SPEC,
    Dnp3Analyzer,
    add_crcs,
    crc16_dnp,
    frame_length,
    iin_names,
    parse_application,
    probe,
)
from tools.pcapgen import dnp3 as gen
from tools.pcapgen.dnp3 import (
    analog_output,
    app_request,
    app_response,
    class_read,
    crob,
    frames,
    link_frame,
    segments,
)

M, O = 1, 10  # master and outstation link addresses


def harness(transport: str = "tcp") -> Harness:
    return Harness(Dnp3Analyzer, transport=transport, client=("10.0.0.1", 40000), server=("10.0.0.2", 20000))


def req(fc: int, objects: bytes = b"", seq: int = 0, tseq: int = 0) -> bytes:
    """A request from the master as link frames."""
    return frames(O, M, app_request(fc, seq, objects), tseq, True)


def resp(fc: int = 129, seq: int = 0, iin: int = 0, objects: bytes = b"", tseq: int = 0, **kw) -> bytes:
    """A response from the outstation as link frames."""
    return frames(M, O, app_response(fc, seq, iin, objects, **kw), tseq, False)


def dnp3_counters(h: Harness) -> dict[str, int]:
    return {k: v for k, v in h.counters.items() if k.startswith("dnp3_") and v}


# ------------------------------------------------------------------------------------------------
# CRC (IEEE 1815-2012 9.2.4.1.3)
# ------------------------------------------------------------------------------------------------


def test_crc_check_value():
    assert crc16_dnp(b"123456789") == 0xEA82  # the catalogue check value of CRC-16/DNP


def test_crc_of_real_headers():
    # zeek__dnp3_read.pcap frame 4 header: 05 64 14 c4 02 00 03 00, CRC 0x0345 sent as 45 03
    assert crc16_dnp(bytes.fromhex("056414c402000300")) == 0x0345
    # iti__DNP3-Malformed.pcap frame 2: header CRC 0x8fda, first data block CRC 0x9a63
    assert crc16_dnp(bytes.fromhex("056419c40a000100")) == 0x8FDA
    assert crc16_dnp(bytes.fromhex("c1c2040c010000010003016400000064")) == 0x9A63


def test_crc_library_and_pure_python_fallback_agree():
    """The link layer uses fastcrc when installed; its table-driven fallback must give the same CRCs."""
    import random

    from sensor.protocols import dnp3

    rng = random.Random(7)
    blocks = [b"", b"123456789"] + [rng.randbytes(rng.randint(1, 16)) for _ in range(500)]
    assert [dnp3._crc16_dnp_table(b) for b in blocks] == [dnp3._crc(b) for b in blocks]
    assert dnp3._crc16_dnp_table(b"123456789") == 0xEA82


def test_crc_slices_and_add_crcs():
    data = bytes(range(40))
    assert crc16_dnp(data, 3, 19) == crc16_dnp(data[3:19])
    frame = add_crcs(bytes.fromhex("05641ac40a000100") + bytes(21))
    assert len(frame) == frame_length(0x1A) == 10 + 21 + 2 * 2


def test_frame_length():
    assert frame_length(5) == 10
    assert frame_length(6) == 13
    assert frame_length(21) == 28  # 16 data octets: one CRC
    assert frame_length(22) == 31  # 17 data octets: two CRCs
    assert frame_length(255) == 292


# ------------------------------------------------------------------------------------------------
# Real vectors (hex from the captures)
# ------------------------------------------------------------------------------------------------


def test_real_select_operate_vectors():
    """zeek__dnp3_select_operate.pcap: select, response, operate, response (CROB g12v1, 0x28)."""
    h = harness()
    h.client(bytes.fromhex("05641ac40200030040f2c6c7030c0128010001000301640000008fda6400000000005b"), ts=1.0)
    h.server(bytes.fromhex("05641c44030002004b91fcc78100000c0128010001000301640001a400006400000000005b"), ts=1.25)
    h.client(bytes.fromhex("05641ac40200030040f2c7c8040c012801000100030164000000a9cf6400000000005b"), ts=2.0)
    h.server(bytes.fromhex("05641c44030002004b91fdc88100000c01280100010003016400f70900006400000000005b"), ts=2.5)
    sel, sel_r, op, op_r = h.events
    assert (sel.function, sel.function_name, sel.category, sel.direction) == (3, "select", CONTROL, REQUEST)
    assert sel.unit == 2 and sel.fields["src_addr"] == 3 and sel.fields["dst_addr"] == 2
    assert sel.objects == ("g12v1",)
    assert sel.fields["objects"] == [{"group": 12, "variation": 1, "qualifier": 0x28, "count": 1}]
    (v,) = sel.values
    assert (v["index"], v["op"], v["tcc"], v["count"], v["on_ms"], v["off_ms"]) == (1, "latch_on", "nul", 1, 100, 100)
    assert sel.address == 1 and sel.quantity == 1
    assert (op.function_name, op.values[0]["op"]) == ("operate", "latch_on")
    assert sel_r.direction == RESPONSE and sel_r.function_name == "response"
    assert sel_r.latency == pytest.approx(0.25) and op_r.latency == pytest.approx(0.5)
    assert sel_r.fields["request_function"] == 3 and sel_r.category == CONTROL
    assert sel_r.fields["identity"] == {"dnp3_address": 2} and sel_r.unit == 2
    assert sel_r.result == OK
    assert h.stats.pdus["dnp3"] == 4
    assert h.stats.funcs["dnp3"] == Counter({"3": 1, "129": 2, "4": 1})
    assert not dnp3_counters(h)


def test_real_file_delete_vector():
    """zeek__dnp3_file_del.pcap: delete file with a g70v3 file command (size-prefixed, 0x5B)."""
    h = harness()
    h.client(
        bytes.fromhex(
            "056463c404000300c7eec7c91b46035b0155001a003b000000009ec700000000000000000000000000000000ffff"
            "001e00433a2f74656d702f444e504465677d76696365436f6e66696775726174696f930c6e207772697474656e"
            "20746f2052656d35206f7465204465766963652e786d6cc48b"
        )
    )
    (ev,) = h.events
    assert (ev.function_name, ev.category) == ("delete_file", PROGRAM)
    assert ev.fields["file_name"] == "C:/temp/DNPDeviceConfiguration written to Remote Device.xml"
    assert ev.fields["file_request_id"] == 30
    assert ev.objects == ("g70v3",) and ev.result == OK


def test_real_write_time_vector():
    """zeek__dnp3_write.pcap: write of g50v1 absolute time (qualifier 0x07, count 1)."""
    h = harness()
    h.client(bytes.fromhex("056412c4020003009c68dfc0023201070183a55c583401f3d2"))
    (ev,) = h.events
    assert (ev.function_name, ev.category, ev.objects) == ("write", WRITE, ("g50v1",))
    assert ev.values[0]["time_ms"] == 0x01_34_58_5C_A5_83


# ------------------------------------------------------------------------------------------------
# Function codes (clause 4.2.2.5)
# ------------------------------------------------------------------------------------------------

EXPECTED_NAMES = {
    0: ("confirm", SESSION),
    1: ("read", READ),
    2: ("write", WRITE),
    3: ("select", CONTROL),
    4: ("operate", CONTROL),
    5: ("direct_operate", CONTROL),
    6: ("direct_operate_no_ack", CONTROL),
    7: ("immediate_freeze", CONTROL),
    8: ("immediate_freeze_no_ack", CONTROL),
    9: ("freeze_clear", CONTROL),
    10: ("freeze_clear_no_ack", CONTROL),
    11: ("freeze_at_time", CONTROL),
    12: ("freeze_at_time_no_ack", CONTROL),
    13: ("cold_restart", DIAGNOSTIC),
    14: ("warm_restart", DIAGNOSTIC),
    15: ("initialize_data", DIAGNOSTIC),
    16: ("initialize_application", DIAGNOSTIC),
    17: ("start_application", DIAGNOSTIC),
    18: ("stop_application", DIAGNOSTIC),
    19: ("save_configuration", PROGRAM),
    20: ("enable_unsolicited", SESSION),
    21: ("disable_unsolicited", SESSION),
    22: ("assign_class", WRITE),
    23: ("delay_measure", SESSION),
    24: ("record_current_time", SESSION),
    25: ("open_file", PROGRAM),
    26: ("close_file", PROGRAM),
    27: ("delete_file", PROGRAM),
    28: ("get_file_info", PROGRAM),
    29: ("authenticate_file", PROGRAM),
    30: ("abort_file", PROGRAM),
    31: ("activate_config", PROGRAM),
    32: ("authenticate_request", SESSION),
    33: ("authenticate_request_no_ack", SESSION),
}

# A typical object list per request function (empty = no objects).
REQUEST_OBJECTS = {
    1: class_read(1, 2, 3, 0),
    2: gen.iin_clear_restart(),
    3: crob(0),
    4: crob(0),
    5: crob(0),
    6: crob(0),
    7: bytes((20, 0, 0x06)),
    8: bytes((20, 0, 0x06)),
    9: bytes((20, 0, 0x06)),
    10: bytes((20, 0, 0x06)),
    11: bytes((50, 2, 0x07, 1)) + bytes(10) + bytes((20, 0, 0x06)),
    12: bytes((50, 2, 0x07, 1)) + bytes(10) + bytes((20, 0, 0x06)),
    20: class_read(1, 2, 3),
    21: class_read(1, 2, 3),
    22: bytes((60, 2, 0x06, 1, 2, 0x00, 0, 7)),
    24: b"",
    25: gen.file_command("/a", 1),
    26: gen.file_status(7),
    27: gen.file_command("/a", 0),
    30: gen.file_status(7),
    32: gen.auth_reply(1),
    33: gen.auth_error(1),
}


def test_function_table_is_complete():
    assert set(EXPECTED_NAMES) | {129, 130, 131} == set(FUNCTIONS)
    for code, (name, category) in EXPECTED_NAMES.items():
        assert FUNCTIONS[code] == (name, category)


@pytest.mark.parametrize("code", sorted(EXPECTED_NAMES))
def test_request_function(code):
    h = harness()
    h.client(req(code, REQUEST_OBJECTS.get(code, b""), seq=5))
    (ev,) = h.events
    name, category = EXPECTED_NAMES[code]
    assert (ev.function, ev.function_name, ev.category, ev.direction) == (code, name, category, REQUEST)
    assert ev.unit == O and ev.fields["seq"] == 5 and ev.fields["fir"] and ev.fields["fin"]
    # 33 carries a g120v7 error object here: the master reports an authentication error
    assert ev.result == (EXCEPTION if code == 33 else OK), (ev.anomaly, dnp3_counters(h))
    assert h.stats.funcs["dnp3"] == Counter({str(code): 1})
    assert json.dumps(ev.to_dict())


@pytest.mark.parametrize("code", [34, 99, 128, 132, 255])
def test_unknown_function(code):
    h = harness()
    h.client(req(code, b"\x01\x02\x03"))
    (ev,) = h.events
    assert ev.function == code and ev.function_name == f"unknown-{code}"
    assert ev.result == MALFORMED and ev.anomaly == "dnp3_unknown_function"
    assert h.stats.funcs["dnp3"][str(code)] == 1


def test_unsolicited_response_and_confirm():
    h = harness()
    h.server(resp(130, seq=3, iin=0x0200, objects=gen.binary_events([(1, 1, 5000)]), con=True, uns=True))
    h.client(frames(O, M, bytes((0xD3, 0)), 0, True))  # confirm with UNS set
    uns, conf = h.events
    assert (uns.direction, uns.function_name, uns.category) == (UNSOLICITED, "unsolicited_response", READ)
    assert uns.fields["uns"] and uns.fields["con"] and uns.fields["iin_bits"] == ["class_1_events"]
    assert uns.fields["identity"] == {"dnp3_address": O} and uns.unit == O and uns.latency is None
    assert uns.objects == ("g2v2",)
    assert conf.function_name == "confirm" and conf.fields["uns"]
    assert "dnp3_response_unpaired" not in h.counters


def test_iin_bits_and_exception_result():
    assert iin_names(0x9000) == ["device_restart", "need_time"]
    assert iin_names(0x0001) == ["no_func_code_support"]
    h = harness()
    h.client(req(1, class_read(0), seq=1))
    h.server(resp(seq=1, iin=0x8002))
    ev = h.events[1]
    assert ev.fields["iin"] == 0x8002 and ev.fields["iin_bits"] == ["device_restart", "object_unknown"]
    assert ev.result == EXCEPTION and ev.code == 0x8002


def test_crob_values_and_refused_status():
    h = harness()
    h.client(req(4, crob(8, code=0x41, count=2, on_ms=500, off_ms=250), seq=2))
    h.server(resp(seq=2, objects=crob(8, code=0x41, count=2, on_ms=500, off_ms=250, status=2)))
    op, r = h.events
    (v,) = op.values
    assert v == {
        "index": 8, "group": 12, "code": 0x41, "op": "pulse_on", "tcc": "close", "queue": False, "clear": False,
        "count": 2, "on_ms": 500, "off_ms": 250, "status": 0, "status_name": "success",
    }  # fmt: skip
    assert r.result == EXCEPTION and r.code == 2 and r.values[0]["status_name"] == "no_select"


def test_crob_range_qualifier_indexes():
    # g12v1 with qualifier 0x00 (start 4, stop 5): indexes come from the range
    body = struct.pack("<BBIIB", 0x81, 1, 100, 0, 0) * 2
    h = harness()
    h.client(req(5, bytes((12, 1, 0x00, 4, 5)) + body))
    (ev,) = h.events
    assert [v["index"] for v in ev.values] == [4, 5] and ev.values[0]["tcc"] == "trip"
    assert ev.address == 4 and ev.quantity == 2


@pytest.mark.parametrize(
    "variation,value,expected",
    [(1, 4000, 4000), (2, -200, -200), (3, 99.5, 99.5), (4, 1e6, 1e6)],
)
def test_analog_output_values(variation, value, expected):
    h = harness()
    h.client(req(5, analog_output(3, value, variation)))
    (ev,) = h.events
    assert ev.objects == (f"g41v{variation}",)
    assert ev.values == (
        {"index": 3, "group": 41, "variation": variation, "value": expected, "status": 0, "status_name": "success"},
    )


def test_analog_output_nan_is_json_safe():
    h = harness()
    h.client(req(5, bytes((41, 3, 0x17, 1, 0)) + struct.pack("<fB", math.nan, 0)))
    (ev,) = h.events
    assert ev.values[0]["value"] == "nan"
    json.loads(json.dumps(ev.to_dict(), allow_nan=False))


def test_authentication_error():
    h = harness()
    h.client(req(5, crob(9), seq=4))
    h.server(resp(131, seq=4, objects=gen.auth_challenge(1)))
    h.client(req(32, gen.auth_reply(1), seq=5))
    h.server(resp(131, seq=5, objects=gen.auth_error(1, code=1)))
    ch, rep, err = h.events[1:]
    assert ch.function_name == "authenticate_response" and ch.result == OK and ch.fields["request_function"] == 5
    assert rep.function_name == "authenticate_request" and rep.objects == ("g120v2",)
    assert err.result == EXCEPTION and err.code == 1
    assert err.fields["auth_error_name"] == "authentication_failed" and err.fields["auth_user"] == 1


def test_file_transfer_fields():
    h = harness()
    h.client(req(25, gen.file_command("/cfg/logic.bin", mode=2, request_id=9, size=300)))
    h.client(req(2, gen.file_transport(0x1234, 1, b"\x90" * 20, last=True), seq=1))
    h.server(resp(seq=0, objects=gen.file_status(0x1234, request_id=9)))
    op, wr, st_ = h.events
    assert op.fields["file_name"] == "/cfg/logic.bin" and op.fields["file_mode"] == 2 and op.fields["file_size"] == 300
    assert wr.fields["file_handle"] == 0x1234 and wr.fields["file_block"] == 1 and wr.fields["file_last_block"]
    assert wr.fields["file_data_len"] == 20
    assert st_.fields["file_handle"] == 0x1234 and st_.fields["file_status"] == 0


def test_read_of_file_block_carries_its_object():
    # zeek__dnp3_file_read.pcap: a READ whose g70v5 object is size-prefixed and carries data
    frag = app_request(1, 15, bytes((70, 5, 0x5B, 1, 8, 0)) + struct.pack("<II", 0x12345678, 0))
    app = parse_application(frag)
    assert app is not None and not app.anomalies and app.extra["file_handle"] == 0x12345678


def test_read_with_index_prefix_has_no_values():
    # read g30v1 with qualifier 0x17: count 2, indexes 3 and 7, no object data
    frag = app_request(1, 0, bytes((30, 1, 0x17, 2, 3, 7)) + class_read(1))
    app = parse_application(frag)
    assert app is not None and not app.anomalies
    assert [h["group"] for h in app.headers] == [30, 60]


def test_response_with_every_fixed_size_object_walks_to_the_end():
    objs = gen.binary_inputs(0, [1, 0, 1]) + gen.analog_inputs(10, [1, 2]) + gen.binary_events([(1, 0, 0)])
    objs += bytes((1, 1, 0x00, 0, 9)) + b"\xff\x01"  # 10 packed bits: 2 octets
    objs += bytes((3, 1, 0x00, 0, 4)) + b"\xff\x03"  # 5 double bits: 2 octets
    objs += bytes((110, 4, 0x00, 0, 0)) + b"abcd"  # octet string of length 4 (variation = length)
    objs += bytes((0, 240, 0x00, 240, 240)) + bytes((4, 2, 1, 0))  # device attribute: type 4, len 2
    objs += gen.time_delay(100)
    app = parse_application(app_response(129, 0, 0, objs))
    assert app is not None and not app.anomalies
    assert app.objects == ["g1v2", "g30v1", "g2v2", "g1v1", "g3v1", "g110v4", "g0v240", "g52v2"]


# ------------------------------------------------------------------------------------------------
# Malformed application layer
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "objects,anomaly",
    [
        (bytes((12, 1, 0x28, 1, 0, 0, 0)) + b"\x03\x01", "dnp3_truncated_object"),
        (bytes((12, 1)), "dnp3_truncated_object_header"),
        (bytes((12, 1, 0x01, 0)), "dnp3_truncated_object_header"),
        (bytes((12, 1, 0x0A, 1)), "dnp3_bad_qualifier"),  # range code 0xA is reserved
        (bytes((12, 1, 0x70, 1)), "dnp3_bad_qualifier"),  # prefix code 7 is reserved
        (bytes((12, 1, 0x00, 5, 4)), "dnp3_bad_range"),  # stop < start
        (bytes((99, 9, 0x00, 0, 0, 0xAA)), "dnp3_unknown_object"),
        (bytes((1, 1, 0x17, 1, 0, 0)), "dnp3_bad_qualifier"),  # packed bits with an index prefix
        (bytes((70, 3, 0x5B, 1, 0xFF, 0x00)) + b"short", "dnp3_truncated_object"),
        (bytes((12, 1, 0x09)) + struct.pack("<I", 0xFFFFFFFF) + bytes(11), "dnp3_truncated_object"),
    ],
)
def test_malformed_objects(objects, anomaly):
    h = harness()
    h.client(req(5, objects))
    (ev,) = h.events
    assert ev.result == MALFORMED and ev.anomaly == anomaly
    assert h.counters[anomaly] == 1
    assert h.stats.funcs["dnp3"]["5"] == 1  # the function is still counted, as tshark does


def test_short_fragments():
    h = harness()
    h.client(frames(O, M, b"\xc0", 0, True))  # one octet: no function code
    assert not h.events and h.counters["dnp3_short_fragment"] == 1 and not h.stats.funcs
    h.server(frames(M, O, b"\xc0\x81\x00", 1, False))  # response without its second IIN octet
    (ev,) = h.events
    assert ev.anomaly == "dnp3_truncated_response_header" and h.stats.funcs["dnp3"]["129"] == 1


def test_real_malformed_frame_vector():
    """iti__DNP3-Malformed.pcap frame 2: operate with a CROB range 0..1 but data for less than 2."""
    h = harness()
    h.client(bytes.fromhex("056419c40a000100da8fc1c2040c010000010003016400000064639a00000000ffff"))
    (ev,) = h.events
    assert ev.function_name == "operate" and ev.result == MALFORMED and ev.anomaly == "dnp3_truncated_object"
    assert h.stats.pdus["dnp3"] == 1


# ------------------------------------------------------------------------------------------------
# Link layer (clause 9.2)
# ------------------------------------------------------------------------------------------------


def _break(frame: bytes, index: int) -> bytes:
    b = bytearray(frame)
    b[index] ^= 0xFF
    return bytes(b)


def test_bad_header_crc_drops_frame_without_counting_it():
    """A segment starting with a bad header: tshark drops the whole segment (0 PDUs); we count the
    anomaly and parse the good frame after it."""
    good = req(1, class_read(0))
    h = harness()
    h.client(_break(good, 8) + good)
    assert h.counters["dnp3_bad_header_crc"] == 1
    assert h.stats.pdus["dnp3"] == 1 and len(h.events) == 1


def test_bad_header_crc_mid_segment():
    """tshark checks the header CRC only at the start of a TCP segment: on these bytes it shows 3
    dnp3.start and 3 dnp3.al.func. The frame with the bad header CRC is discarded (9.2.4.1.3)."""
    good = req(1, class_read(0))
    h = harness()
    h.client(good + _break(good, 8) + good)
    assert h.counters["dnp3_bad_header_crc"] == 1
    assert h.stats.pdus["dnp3"] == 2 and h.stats.funcs["dnp3"]["1"] == 2


def test_bad_data_crc_counts_the_frame_but_drops_it():
    good = req(1, class_read(0))
    h = harness()
    h.client(good + _break(good, 12) + good)
    assert h.counters["dnp3_bad_data_crc"] == 1
    assert h.stats.pdus["dnp3"] == 3 and len(h.events) == 2  # as tshark: 3 dnp3.start, 2 dnp3.al.func


def test_bad_crc_in_second_data_block():
    frame = req(2, gen.iin_clear_restart() + gen.time_object(123456789))  # 2 blocks of user data
    assert len(frame) > 10 + 18
    h = harness()
    h.client(_break(frame, 10 + 18 + 1))
    assert h.counters["dnp3_bad_data_crc"] == 1 and not h.events


def test_link_only_frames():
    h = harness()
    h.client(gen.link_status_request(O, M) + link_frame(O, M, b"", func=0))  # request link status, reset link
    h.server(gen.link_status(M, O) + link_frame(M, O, b"", func=0, master=False, prm=False))
    assert h.stats.pdus["dnp3"] == 4 and not h.events and not dnp3_counters(h)


def test_user_data_in_a_non_data_link_function_is_dropped():
    """tshark would pass this to the transport layer; user data is only in primary functions 3/4."""
    h = harness()
    h.client(link_frame(O, M, segments(app_request(1, 0, class_read(0)))[0], func=2))  # test link + data
    assert not h.events and h.counters["dnp3_unexpected_link_data"] == 1 and h.stats.pdus["dnp3"] == 1


def test_bad_length_and_resync():
    """tshark: malformed, no dnp3.start, and the rest of the segment is not dissected."""
    head = bytes((0x05, 0x64, 3, 0xC4)) + struct.pack("<HH", O, M)
    bad = head + struct.pack("<H", crc16_dnp(head))  # CRC-valid header with LEN 3 < 5
    h = harness()
    h.client(bad + req(1, class_read(0)))
    assert h.counters["dnp3_bad_length"] == 1 and len(h.events) == 1 and h.stats.pdus["dnp3"] == 1


def test_garbage_then_frames_resynchronises_once():
    good = req(1, class_read(0))
    h = harness()
    h.client(b"\x00\x05\x64\x05\x05garbage" + good + b"\x05\x64\x99" + b"junk" * 20 + good)
    assert len(h.events) == 2
    # once per loss of sync, not per skipped octet: the leading junk, then a start field whose
    # header fails its CRC where a frame was due
    assert h.counters["dnp3_bad_framing"] == 1 and h.counters["dnp3_bad_header_crc"] == 1


def test_every_split_of_the_stream_gives_the_same_events():
    stream = req(1, class_read(1, 2, 3, 0)) + gen.link_status_request(O, M) + req(2, gen.iin_clear_restart(), seq=1)
    big = resp(objects=gen.analog_inputs(0, list(range(100))))  # 507 octets: 3 transport segments
    reference = None
    for cut in range(1, len(stream)):
        h = harness()
        h.client(stream[:cut])
        h.client(stream[cut:])
        h.server(big[: cut % len(big)])
        h.server(big[cut % len(big) :])
        got = [(e.function, e.fields["seq"]) for e in h.events]
        assert not dnp3_counters(h)
        assert h.stats.pdus["dnp3"] == 3 + 3
        if reference is None:
            reference = got
        assert got == reference
    assert reference == [(1, 0), (2, 1), (129, 0)]


def test_byte_by_byte_feed():
    stream = req(1, class_read(0)) + req(1, class_read(1), seq=1)
    h = harness()
    for i in range(len(stream)):
        h.client(stream[i : i + 1])
    assert [e.fields["seq"] for e in h.events] == [0, 1]


def test_udp_datagrams():
    h = harness("udp")
    h.client(req(1, class_read(0)) + gen.link_status_request(O, M))  # two frames in one datagram
    assert len(h.events) == 1 and h.stats.pdus["dnp3"] == 2
    h.client(req(1, class_read(0))[:-3])  # a datagram cut inside a frame
    assert h.counters["dnp3_truncated"] == 1 and h.stats.pdus["dnp3"] == 3 and len(h.events) == 1
    h.client(req(1, class_read(0), seq=2))  # nothing carried over between datagrams
    assert [e.fields["seq"] for e in h.events] == [0, 2]


def test_gap_and_close():
    good = req(1, class_read(0))
    h = harness()
    h.client(good[:7])
    h.analyzer.gap(True, 1.0)
    assert h.counters["dnp3_partial_pdu_lost"] == 1
    h.client(good[7:] + good)  # resumes mid-frame: resynchronises on the next frame
    assert len(h.events) == 1
    h.client(good[:5])
    h.analyzer.close(2.0)
    assert h.counters["dnp3_truncated_at_close"] == 1


# ------------------------------------------------------------------------------------------------
# Transport layer (clause 8.2)
# ------------------------------------------------------------------------------------------------


def _segment_frames(fragment: bytes, tseq: int = 0) -> list[bytes]:
    return [link_frame(M, O, seg, 4, False) for seg in segments(fragment, tseq)]


BIG = app_response(129, 0, 0, gen.analog_inputs(0, list(range(100))))  # 507 octets: 3 segments


def test_reassembly_multi_segment():
    h = harness()
    for f in _segment_frames(BIG, 10):
        h.server(f)
    (ev,) = h.events
    assert ev.fields["segments"] == 3 and ev.size == len(BIG)
    assert set(dnp3_counters(h)) <= {"dnp3_response_unpaired"}
    assert h.stats.pdus["dnp3"] == 3 and h.stats.funcs["dnp3"]["129"] == 1


def test_reassembly_sequence_wraps_63_to_0():
    """Transport sequence numbers are modulo 64 (8.2.2.1.3). tshark 4.0 does not reassemble a
    fragment whose segments wrap from 63 to 0 (see docs/protocols/dnp3.md): it shows no
    dnp3.al.func for it. We do, because the standard says so."""
    h = harness()
    for f in _segment_frames(BIG, 62):
        h.server(f)
    (ev,) = h.events
    assert ev.fields["segments"] == 3 and ev.function == 129


def test_tshark_stale_fragment_merge_is_not_copied():
    """icsnpp__dnp3_example.pcap frame 311: a single-segment fragment (FIR, FIN, seq 0) that tshark
    merges with a stale, never-finished fragment from frame 210 and shows as a CONFIRM. It is a
    RESPONSE: a FIR segment starts a new fragment and discards any unfinished one (8.2.3)."""
    h = harness()
    h.server(bytes.fromhex("05641a4464000500c0aec0c88100000c011701024201f4010000513c0000000000ffff"))
    (ev,) = h.events
    assert ev.function == 129 and ev.function_name == "response" and ev.objects == ("g12v1",)


def test_transport_out_of_order_and_missing_first():
    f = _segment_frames(BIG, 0)
    h = harness()
    h.server(f[0] + f[2])  # segment 1 missing: sequence error, fragment dropped
    assert h.counters["dnp3_transport_seq_error"] == 1 and not h.events
    h.server(f[1])  # no fragment open any more
    assert h.counters["dnp3_transport_no_fir"] == 1 and not h.events


def test_transport_duplicate_segment_is_ignored():
    f = _segment_frames(BIG, 0)
    h = harness()
    h.server(f[0] + f[1] + f[1] + f[2])
    assert h.counters["dnp3_transport_duplicate"] == 1 and len(h.events) == 1


def test_transport_new_first_discards_open_fragment():
    f = _segment_frames(BIG, 0)
    h = harness()
    h.server(f[0] + f[1] + resp(seq=3, tseq=2))
    assert h.counters["dnp3_transport_discarded"] == 1
    (ev,) = h.events
    assert ev.fields["seq"] == 3


def test_transport_reassembly_is_bounded():
    class Small(Dnp3Analyzer):
        max_fragment = 400

    h = Harness(Small, client=("10.0.0.1", 40000), server=("10.0.0.2", 20000))
    for f in _segment_frames(BIG, 0):
        h.server(f)
    assert h.counters["dnp3_reassembly_overflow"] == 1 and not h.events
    assert h.stats.pdus["dnp3"] == 3


def test_transport_state_is_per_link_pair():
    a = _segment_frames(BIG, 0)
    other = [link_frame(M, 11, seg, 4, False) for seg in segments(BIG, 40)]
    h = harness()
    h.server(a[0] + other[0] + a[1] + other[1] + a[2] + other[2])
    assert [e.fields["src_addr"] for e in h.events] == [O, 11]


def test_incomplete_fragment_at_close():
    h = harness()
    h.server(_segment_frames(BIG, 0)[0])
    h.analyzer.close(5.0)
    assert h.counters["dnp3_incomplete_fragment_at_close"] == 1


# ------------------------------------------------------------------------------------------------
# Pairing (4.2.2.4: a response echoes its request's sequence number)
# ------------------------------------------------------------------------------------------------


def test_pipelined_requests_pair_first_in_first_out():
    h = harness()
    h.client(req(3, crob(1), seq=7), ts=1.0)
    h.client(req(4, crob(1), seq=8), ts=2.0)
    h.client(req(3, crob(1), seq=7), ts=3.0)
    h.server(resp(seq=7), ts=4.0)
    h.server(resp(seq=8), ts=5.0)
    h.server(resp(seq=7), ts=6.0)
    lat = [e.latency for e in h.events if e.direction == RESPONSE]
    assert lat == [3.0, 3.0, 3.0]


def test_multi_fragment_response_pairs_every_fragment():
    h = harness()
    h.client(req(1, class_read(0), seq=4), ts=1.0)
    h.server(resp(seq=4, objects=gen.analog_inputs(0, [1]), fin=False), ts=1.5)
    h.server(resp(seq=5, objects=gen.analog_inputs(1, [2]), fir=False, tseq=1), ts=2.0)
    r1, r2 = h.events[1:]
    assert (r1.latency, r2.latency) == (0.5, 1.0) and r2.fields["request_function"] == 1
    assert "dnp3_response_unpaired" not in h.counters


def test_no_ack_requests_do_not_wait_and_unpaired_is_counted():
    h = harness()
    h.client(req(6, crob(1), seq=1))
    h.server(resp(seq=1))
    assert h.events[1].latency is None and h.counters["dnp3_response_unpaired"] == 1


def test_pending_table_is_bounded():
    h = harness()
    for i in range(200):
        h.client(frames(i + 100, M, app_request(1, i & 15, class_read(0)), 0, True))
    assert len(h.analyzer._pending) <= Dnp3Analyzer.max_pending
    assert h.counters["dnp3_pending_cap"] > 0


# ------------------------------------------------------------------------------------------------
# Registry and probe
# ------------------------------------------------------------------------------------------------


def test_spec_and_registry():
    assert SPEC.name == "dnp3" and 20000 in SPEC.tcp_ports and 20000 in SPEC.udp_ports
    reg = registry()
    assert reg.tcp[20000] is SPEC or reg.tcp[20000].name == "dnp3"
    assert reg.probe(req(1, class_read(0)), True).name == "dnp3"


def test_probe():
    good = req(1, class_read(0))
    assert probe(good, True) and probe(gen.link_status(M, O), False)
    assert not probe(good[:9], True)
    assert not probe(_break(good, 8), True)
    assert not probe(b"\x05\x64" + bytes(20), True)
    assert not probe(b"GET / HTTP/1.1\r\n\r\n", True)


# ------------------------------------------------------------------------------------------------
# Real captures against tshark's counts (GROUND_TRUTH.json)
# ------------------------------------------------------------------------------------------------

# Files where we knowingly differ from tshark 4.0 (docs/protocols/dnp3.md, "Where tshark differs").
# icsnpp__dnp3_example.pcap: 4 fragments whose transport sequence wraps 63 -> 0 (tshark drops them)
# and frame 311, which tshark merges with a stale fragment and calls a CONFIRM (function 0).
KNOWN_DIFFERENCES = {
    "dnp3/icsnpp__dnp3_example.pcap": {"1": 97, "129": 364, "130": 4, "3": 134, "4": 133},
}


def _dnp3_truth(ground_truth):
    return {k: v["protocols"]["dnp3"] for k, v in ground_truth.items() if "dnp3" in v.get("protocols", {})}


def test_real_captures_match_tshark(ground_truth):
    from sensor.pipeline import Pipeline

    truth = _dnp3_truth(ground_truth)
    assert len(truth) >= 33
    for rel, t in sorted(truth.items()):
        result = Pipeline().replay_file(SHARED_PCAPS / rel)
        ours = result.stats.as_ground_truth().get("dnp3", {"pdus": 0, "func_hist": {}})
        assert result.counters.get("analyzer_error_dnp3", 0) == 0, rel
        assert ours["pdus"] == t["pdus"], rel
        assert ours["func_hist"] == KNOWN_DIFFERENCES.get(rel, t["func_hist"]), rel


def test_no_dnp3_in_captures_without_it(ground_truth):
    """The probe must not claim DNP3 anywhere tshark sees none (a few small non-DNP3 captures)."""
    from sensor.pipeline import Pipeline

    picks = [k for k, v in ground_truth.items() if "dnp3" not in v.get("protocols", {})]
    present = [k for k in picks if (SHARED_PCAPS / k).exists()]
    small = sorted(present, key=lambda k: (SHARED_PCAPS / k).stat().st_size)[:40]
    for rel in small:
        if not rel.endswith((".pcap", ".pcapng", ".cap")):
            continue
        result = Pipeline().replay_file(SHARED_PCAPS / rel)
        assert result.stats.pdus.get("dnp3", 0) == 0, rel


def test_malformed_capture_counts_its_malformed_pdus():
    from sensor.pipeline import Pipeline

    require_shared()
    events = []
    result = Pipeline(on_event=events.append).replay_file(SHARED_PCAPS / "dnp3/iti__DNP3-Malformed.pcap")
    dnp = [e for e in events if e.protocol == "dnp3"]
    assert len(dnp) == 197 and result.counters.get("analyzer_error_dnp3", 0) == 0
    malformed = [e for e in dnp if e.result == MALFORMED]
    assert len(malformed) == 197  # every operate in that capture is broken, as tshark also says
    assert sum(v for k, v in result.counters.items() if k.startswith("dnp3_")) >= 197
    assert result.counters["dnp3_bad_length"] == 1  # frame 1: LEN 2


@pytest.mark.parametrize(
    "name,counter",
    [
        ("suricata__dnp3_dnp3-too-long-reassembly-request_input.pcap", "dnp3_incomplete_fragment_at_close"),
        ("zeek__dnp3-flowbuffer-overflow-assert.pcap", "dnp3_incomplete_fragment_at_close"),
        ("suricata__dnp3_dnp3-flood_input.pcap", None),
        ("suricata__dnp3_dnp3-max-points_test.pcap", "dnp3_truncated_object"),
    ],
)
def test_overflow_and_flood_captures(name, counter):
    from sensor.pipeline import Pipeline

    require_shared()
    result = Pipeline().replay_file(SHARED_PCAPS / "dnp3" / name)
    assert result.counters.get("analyzer_error_dnp3", 0) == 0
    if counter:
        assert result.counters[counter] >= 1


# ------------------------------------------------------------------------------------------------
# Crafted captures (tools/pcapgen/dnp3.py)
# ------------------------------------------------------------------------------------------------


crafted = crafted_captures_fixture(gen.main)


def _replay(path: Path):
    return replay_capture(path, "dnp3")


def test_crafted_captures_are_deterministic_and_small(crafted):
    check_crafted_captures(crafted, "dnp3", committed_required=False)


def test_crafted_attack_capture(crafted):
    result, events = _replay(crafted["dnp3_attack.pcap"])
    names = Counter(e.function_name for e in events)
    for fn in (
        "cold_restart", "warm_restart", "stop_application", "start_application", "initialize_data",
        "disable_unsolicited", "open_file", "close_file", "delete_file", "direct_operate",
        "direct_operate_no_ack", "select", "operate", "authenticate_request", "authenticate_response",
    ):  # fmt: skip
        assert names[fn] >= 1, fn
    assert {e.objects for e in events if e.objects and e.objects[0].startswith("g41")} == {
        ("g41v1",), ("g41v2",), ("g41v3",), ("g41v4",)
    }
    assert any(e.fields.get("auth_error") == 1 for e in events)
    assert any(e.fields.get("file_name") == "/cfg/logic.bin" for e in events)
    assert any(e.result == EXCEPTION and e.code == 2 for e in events)  # operate refused: no select
    assert all(e.result != MALFORMED for e in events) and not {k for k in result.counters if k.startswith("dnp3_")}


def test_crafted_normal_capture(crafted):
    result, events = _replay(crafted["dnp3_normal.pcap"])
    names = {e.function_name for e in events}
    assert names == {"read", "write", "response", "enable_unsolicited", "unsolicited_response", "confirm"}
    assert any(e.transport == "udp" for e in events)
    assert any(e.fields["segments"] > 1 for e in events)
    responses = [e for e in events if e.direction == RESPONSE]
    assert responses and all(e.latency is not None for e in responses)
    assert not {k for k in result.counters if k.startswith("dnp3_")}


def test_crafted_captures_match_tshark(crafted, tshark):
    for path in crafted.values():
        pdus, funcs = 0, Counter()
        for start, func in tshark_fields(tshark, path, "dnp3.start", "dnp3.al.func"):
            pdus += len(start)
            funcs.update(func)
        result, _ = _replay(path)
        ours = result.stats.as_ground_truth()["dnp3"]
        assert ours["pdus"] == pdus and ours["func_hist"] == dict(funcs), path.name


# ------------------------------------------------------------------------------------------------
# Property tests: never raise, never loop (hypothesis; seeds from the real captures)
# ------------------------------------------------------------------------------------------------


def _real_payloads() -> tuple[list[bytes], list[bytes]]:
    """(TCP/UDP payloads, reassembled application fragments) from a selection of real captures."""
    require_shared()
    fragments: list[bytes] = []

    class Recorder(Dnp3Analyzer):
        def _application(self, from_client, src, dst, frag, ts, segments):
            fragments.append(bytes(frag))
            super()._application(from_client, src, dst, frag, ts, segments)

    payloads = capture_payloads(
        sorted((SHARED_PCAPS / "dnp3").glob("*.pcap")), keep=lambda layer, payload: payload[:2] == b"\x05\x64"
    )
    h = Harness(Recorder, client=("10.0.0.1", 40000), server=("10.0.0.2", 20000))
    for data in payloads:
        h.analyzer.feed(True, data, 0.0)
    return payloads[:400], list(dict.fromkeys(fragments))[:400]


@pytest.fixture(scope="module")
def seeds() -> tuple[list[bytes], list[bytes]]:
    return _real_payloads()


def _feed_all(chunks: list[bytes], transport: str = "tcp") -> Harness:
    h = harness(transport)
    for i, c in enumerate(chunks):
        h.analyzer.feed(i % 3 != 0, c, float(i))
    h.analyzer.gap(True, 99.0)
    h.analyzer.close(100.0)
    for e in h.events:
        json.dumps(e.to_dict())
    return h


PROPS = fuzz_settings(200, deadline=1000)


@PROPS
@given(st.lists(st.binary(max_size=600), max_size=8), st.sampled_from(["tcp", "udp"]))
def test_random_bytes_never_raise(chunks, transport):
    _feed_all(chunks, transport)


@PROPS
@given(st.binary(max_size=3000))
def test_random_fragments_never_raise(frag):
    app = parse_application(frag)
    assert app is None or app.fc == frag[1]
    h = harness()
    h.client(frames(O, M, frag[:2048], 0, True) if frag else b"")


@PROPS
@given(data=st.data(), ops=MUTATIONS, cuts=st.lists(st.integers(1, 300), max_size=4))
def test_mutated_real_payloads_never_raise(seeds, data, ops, cuts):
    payloads, _ = seeds
    picked = data.draw(st.lists(st.sampled_from(payloads), min_size=1, max_size=4))
    stream = mutate(b"".join(picked), ops)
    chunks, off = [], 0
    for c in cuts:
        chunks.append(stream[off : off + c])
        off += c
    chunks.append(stream[off:])
    _feed_all(chunks, data.draw(st.sampled_from(["tcp", "udp"])))


@PROPS
@given(data=st.data(), ops=MUTATIONS, tseq=st.integers(0, 63))
def test_mutated_real_fragments_with_valid_crcs_never_raise(seeds, data, ops, tseq):
    """Mutations re-wrapped in valid link frames, so they get past the CRCs to the transport and
    application parsers (random octets almost never do)."""
    _, fragments = seeds
    frag = mutate(data.draw(st.sampled_from(fragments)), ops)
    h = harness()
    if not frag:
        return
    h.server(frames(M, O, frag, tseq, False))
    h.client(frames(O, M, frag, tseq, True))
    assert h.stats.funcs.get("dnp3", Counter()).total() == (2 if len(frag) >= 2 else 0)
    for e in h.events:
        json.dumps(e.to_dict())
        assert e.values is None or len(e.values) <= 64


@PROPS
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(min_size=0, max_size=249)), min_size=1, max_size=12))
def test_random_transport_segments_never_raise(segs):
    """Any sequence of transport headers and payloads in valid frames (reassembly state machine)."""
    h = harness()
    for th, payload in segs:
        h.server(link_frame(M, O, bytes((th,)) + payload, 4, False))
    assert h.stats.pdus["dnp3"] == len(segs)
    assert len(h.analyzer._tp) <= Dnp3Analyzer.max_links


# ------------------------------------------------------------------------------------------------
# The documentation's example and vocabulary
# ------------------------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocols" / "dnp3.md"


def test_doc_example():
    got, expected = replay_documented_example(harness(), "dnp3.md", 1767225600.0, 1767225600.5)
    assert got == expected


def test_every_anomaly_name_is_documented():
    import re

    source = (Path(__file__).resolve().parents[1] / "sensor" / "protocols" / "dnp3.py").read_text()
    names = set(re.findall(r'"(dnp3_[a-z0-9_]+)"', source)) - {"dnp3_address"}
    text = DOC.read_text()
    assert names and all(f"`{n}`" in text for n in names), sorted(n for n in names if f"`{n}`" not in text)
