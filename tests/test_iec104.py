"""IEC 60870-5-104 analyzer (sensor/protocols/iec104.py): byte vectors per frame format and type id,
values and qualifiers, directions and categories, Wireshark-compatible framing (and where tshark is
wrong), sequence-number tracking, malformed input, the real captures and the IPAL dataset, the crafted
captures, and hypothesis property tests seeded from the real captures.

Vectors are quoted from the real captures as hex (where tshark's reading is noted) or built with the
pure builders of tools/pcapgen/iec104.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED, SHARED_PCAPS, require_shared
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
    OTHER,
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
from sensor.protocols.iec104 import (
    SPEC,
    TYPE_LAYOUT,
    TYPE_NAMES,
    U_FUNCTIONS,
    Iec104Analyzer,
    cp56time2a,
    decode_asdu,
    probe,
)
from tools.pcapgen import iec104 as gen
from tools.pcapgen.iec104 import (
    ACT,
    ACTCON,
    ACTTERM,
    INROGEN,
    PERIODIC,
    SPONT,
    apci_i,
    apci_s,
    apci_u,
    asdu,
    command,
    cp56,
    epoch_of,
    flt_q,
    ioa,
    sco,
    sequence_objects,
    single_objects,
    siq,
)

SERVER = ("10.0.104.10", 2404)


def harness() -> Harness:
    return Harness(Iec104Analyzer, client=("10.0.104.1", 50000), server=SERVER)


def funcs(h: Harness) -> Counter:
    return Counter(h.stats.funcs.get("iec104", {}))


def i_frame(asdu_bytes: bytes, ns: int = 0, nr: int = 0) -> bytes:
    return apci_i(ns, nr, asdu_bytes)


# ------------------------------------------------------------------------------------------------
# U and S frames (104 clause 5.2, 5.3)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("octet,name", sorted(U_FUNCTIONS.items()))
def test_u_frames(octet, name):
    h = harness()
    [ev] = h.client(apci_u(octet))
    assert (ev.function, ev.function_name, ev.category, ev.result) == (-1, name, SESSION, OK)
    assert ev.direction == (REQUEST if name.endswith("_act") else RESPONSE)
    assert ev.fields == {"apci": "U"} and ev.size == 6
    assert h.stats.pdus["iec104"] == 1 and funcs(h) == {"apci:3": 1}


def test_u_act_con_latency():
    h = harness()
    h.client(apci_u(gen.TESTFR_ACT), ts=10.0)
    [con] = h.server(apci_u(gen.TESTFR_CON), ts=10.25)
    assert con.latency == pytest.approx(0.25)
    [late] = h.server(apci_u(gen.TESTFR_CON), ts=11.0)  # a con without its act: no latency
    assert late.latency is None


def test_bad_u_frame_is_counted_and_malformed():
    h = harness()
    [ev] = h.client(bytes.fromhex("68040f000000"))  # STARTDT act and con bits together
    assert ev.result == MALFORMED and ev.anomaly == "iec104_bad_u_frame" and ev.fields["control"] == 0x0F
    assert funcs(h) == {"apci:3": 1}  # tshark counts it too (type U, utype "<ERR>")


def test_s_frame():
    h = harness()
    [ev] = h.client(apci_s(1234))
    assert (ev.function_name, ev.category, ev.direction) == ("s_frame", SESSION, RESPONSE)
    assert ev.fields == {"apci": "S", "nr": 1234}
    assert funcs(h) == {"apci:1": 1}


# ------------------------------------------------------------------------------------------------
# Vectors from the real captures (ITI 090813_diverse, JavaRMI_and_IEC_Misc)
# ------------------------------------------------------------------------------------------------


def test_real_single_command_with_time_select():
    """090813_diverse frame 9 (tshark: C_SC_TA_1 Act IOA=4501, ON, Select, Aug 13 2009 19:23:00.008)."""
    h = harness()
    [ev] = h.client(bytes.fromhex("681528009c003a010600030095110081080017130d086d"))
    assert (ev.function, ev.function_name, ev.category, ev.direction) == (58, "c_sc_ta_1", CONTROL, REQUEST)
    assert (ev.unit, ev.address, ev.quantity, ev.values, ev.objects) == (3, 4501, 1, (1,), ("ioa:4501",))
    f = ev.fields
    assert (f["ns"], f["nr"], f["cot"], f["cot_name"], f["oa"]) == (20, 78, 6, "act", 0)
    assert (f["state"], f["se"], f["qu"], f["qu_name"]) == ("on", "select", 0, "no_pulse")
    assert f["time"] == "2009-08-13T19:23:00.008"  # year octet 109: a station counting from 1900
    assert funcs(h) == {"apci:0": 1, "asdu:58": 1}


def test_real_interrogation_cycle():
    h = harness()
    [act] = h.client(bytes.fromhex("680e3c00bc0064010600030000000014"), ts=1.0)
    [con] = h.server(bytes.fromhex("680ebc003e0064010700030000000014"), ts=1.2)
    [term] = h.server(bytes.fromhex("680ec2003e0064010a00030000000014"), ts=1.4)
    assert [e.function_name for e in (act, con, term)] == ["c_ic_na_1"] * 3
    assert [e.direction for e in (act, con, term)] == [REQUEST, RESPONSE, RESPONSE]
    assert act.category == READ and act.fields["qoi"] == 20 and act.fields["qoi_name"] == "station"
    assert con.latency == pytest.approx(0.2) and term.latency is None
    assert [e.fields["cot_name"] for e in (act, con, term)] == ["act", "actcon", "actterm"]


def test_real_periodic_floats_and_spontaneous_single_point():
    h = harness()
    [per] = h.server(bytes.fromhex("681a9a0028000d02010003001405000000f041001505000000314400"))
    assert (per.function_name, per.direction, per.quantity) == ("m_me_nc_1", UNSOLICITED, 2)
    assert per.objects == ("ioa:1300", "ioa:1301") and per.values == (30.0, 708.0)
    assert "quality" not in per.fields and per.fields["cot_name"] == "per_cyc"
    [sp] = h.server(bytes.fromhex("6815c8003e001e010300030002000001aac229108d0809"))
    assert (sp.function_name, sp.direction, sp.values, sp.address) == ("m_sp_tb_1", UNSOLICITED, (1,), 2)
    assert sp.fields["time"] == "2009-08-13T16:41:49.834"


def test_real_sequence_of_single_points():
    """JavaRMI frame 17: M_SP_NA_1 with SQ=1, ten points from IOA 10010, interrogated (COT 20, OA 1)."""
    h = harness()
    [ev] = h.server(bytes.fromhex("681704000200018a14010d911a270000800000000000000000"))
    assert ev.fields["sq"] is True and ev.quantity == 10 and ev.unit == 0x910D
    assert ev.objects == tuple(f"ioa:{10010 + i}" for i in range(10))
    assert ev.values == (0, 0, 0, 0, 0, 0, 0, 0, 0, 0) and ev.fields["quality"] == ["iv"]
    assert (ev.direction, ev.fields["oa"]) == (RESPONSE, 1)


def test_real_four_apdus_in_one_segment():
    """IEC104_SQ.pcapng: four M_SP_NA_1 APDUs (SQ, 16 points each) in one TCP segment."""
    payload = bytes.fromhex(
        "681d02000200019014001e0400000000000000000000000000000000000101"
        "681d04000200019014001e0410000000010000000101000100000001010001"
        "681d06000200019014001e0420000000000001010001000000010100010000"
        "681d08000200019014001e0430000000000000000000000000000000000000"
    )
    h = harness()
    evs = h.server(payload)
    assert len(evs) == 4 and h.stats.pdus["iec104"] == 4
    assert funcs(h) == {"apci:0": 4, "asdu:1": 4}
    assert [e.address for e in evs] == [0, 16, 32, 48] and all(e.quantity == 16 for e in evs)


def test_real_scaled_value_and_end_of_init():
    h = harness()
    [me] = h.server(bytes.fromhex("68100a0002000b8103000d913f9c00020000"))
    assert (me.function_name, me.fields["sq"], me.values, me.address) == ("m_me_nb_1", True, (2,), 39999)
    [ei] = h.server(bytes.fromhex("680e00000200460104000d9100000001"))
    assert (ei.function_name, ei.direction, ei.fields["coi"]) == ("m_ei_na_1", UNSOLICITED, "local_manual_reset")


# ------------------------------------------------------------------------------------------------
# Every type id with a known layout
# ------------------------------------------------------------------------------------------------

EXPECTED_CATEGORY = {
    1: READ, 13: READ, 30: READ, 36: READ, 45: CONTROL, 46: CONTROL, 47: CONTROL, 48: CONTROL, 49: CONTROL,
    50: CONTROL, 51: CONTROL, 58: CONTROL, 64: CONTROL, 70: READ, 100: READ, 101: READ, 102: READ,
    103: WRITE, 104: DIAGNOSTIC, 105: DIAGNOSTIC, 106: DIAGNOSTIC, 107: DIAGNOSTIC, 110: WRITE, 112: WRITE,
    113: WRITE, 120: PROGRAM, 122: PROGRAM, 126: PROGRAM,
}


@pytest.mark.parametrize("tid", sorted(TYPE_LAYOUT))
def test_every_layout_decodes_two_objects(tid):
    size = TYPE_LAYOUT[tid][0]
    element = bytes((0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00))[:size]
    if TYPE_LAYOUT[tid][2] == 7:  # a valid CP56Time2a at the end of the element
        element = element[: size - 7] + cp56(epoch_of(2026, 1, 1, 12, 0, 0))
    objects = ioa(100) + element + ioa(200) + element
    h = harness()
    [ev] = h.client(i_frame(asdu(tid, ACT, objects, 2)))
    assert ev.result == OK and ev.anomaly is None, ev.to_dict()
    assert ev.function == tid and ev.function_name == TYPE_NAMES[tid].lower()
    assert ev.objects == ("ioa:100", "ioa:200") and ev.quantity == 2
    assert ev.values is None or len(ev.values) == 2
    if tid in EXPECTED_CATEGORY:
        assert ev.category == EXPECTED_CATEGORY[tid]
    if TYPE_LAYOUT[tid][2] == 7:
        assert ev.fields["time"] == "2026-01-01T12:00:00.000"
    assert funcs(h) == {"apci:0": 1, f"asdu:{tid}": 1}


def test_unknown_and_security_types():
    h = harness()
    [unk] = h.client(i_frame(asdu(42, ACT, ioa(7) + b"\x01\x02", 1)))
    assert (unk.function, unk.function_name, unk.category, unk.result) == (42, "unknown-42", OTHER, OK)
    assert unk.address == 7 and unk.values is None
    [sec] = h.server(i_frame(asdu(81, 14, b"\x40\x00\x00\x00\x00", 1)))  # S_CH_NA_1 challenge
    assert (sec.function_name, sec.category, sec.objects) == ("s_ch_na_1", SESSION, None)
    assert funcs(h) == {"apci:0": 2, "asdu:42": 1, "asdu:81": 1}


# ------------------------------------------------------------------------------------------------
# Values and qualifiers of the control direction (101 clause 7.2.6)
# ------------------------------------------------------------------------------------------------


def test_single_command_select_then_execute():
    h = harness()
    [sel] = h.client(i_frame(command(45, ACT, 6001, sco(1, select=True, qu=2))))
    [exe] = h.client(i_frame(command(45, ACT, 6001, sco(1)), ns=1))
    assert (sel.fields["se"], exe.fields["se"]) == ("select", "execute")
    assert sel.fields["qu_name"] == "long_pulse" and sel.values == (1,) and sel.fields["state"] == "on"


@pytest.mark.parametrize("tid,state,name", [(46, 1, "off"), (46, 2, "on"), (46, 3, "not_permitted"),
                                            (47, 1, "lower"), (47, 2, "higher"), (47, 0, "not_permitted")])
def test_double_and_regulating_step_commands(tid, state, name):
    h = harness()
    [ev] = h.client(i_frame(command(tid, ACT, 6002, gen.dco(state, qu=1))))
    assert ev.values == (state,) and ev.fields["state"] == name and ev.fields["qu_name"] == "short_pulse"
    assert ev.category == CONTROL


@pytest.mark.parametrize(
    "tid,element,value",
    [
        (48, gen.setpoint_nva(-0.5, select=True), -0.5),
        (49, gen.setpoint_sva(-1500), -1500),
        (50, gen.setpoint_flt(95.5), 95.5),
        (61, gen.setpoint_nva(0.25) + cp56(0.0), 0.25),
        (62, gen.setpoint_sva(7) + cp56(0.0), 7),
        (63, gen.setpoint_flt(-1.0) + cp56(0.0), -1.0),
    ],
)
def test_set_points(tid, element, value):
    h = harness()
    [ev] = h.client(i_frame(command(tid, ACT, 7001, element)))
    assert ev.values == (value,) and ev.fields["ql"] == 0
    assert ev.fields["se"] == ("select" if tid == 48 else "execute")


def test_bitstring_command_and_clock_sync_and_reset():
    h = harness()
    [bo] = h.client(i_frame(command(51, ACT, 9, (0xDEADBEEF).to_bytes(4, "little"))))
    assert bo.values == (0xDEADBEEF,)
    t = epoch_of(2020, 1, 1, 0, 0, 0)
    [cs] = h.client(i_frame(gen.clock_sync(ACT, t + 0.5), ns=1))
    assert (cs.function_name, cs.category, cs.values) == ("c_cs_na_1", WRITE, ("2020-01-01T00:00:00.500",))
    assert cs.fields["time_epoch"] == t + 0.5
    [rp] = h.client(i_frame(gen.reset_process(ACT, qrp=2), ns=2))
    assert (rp.function_name, rp.category, rp.fields["qrp_name"]) == ("c_rp_na_1", DIAGNOSTIC, "reset_event_buffer")
    [ci] = h.client(i_frame(gen.counter_interrogation(ACT, qcc=0x45), ns=3))
    assert (ci.fields["qcc_rqt"], ci.fields["qcc_frz"]) == (5, 1)


def test_cp56time2a_edges():
    assert cp56time2a(cp56(epoch_of(2026, 2, 28, 23, 59, 59) + 0.999), 0)[:2] == (
        "2026-02-28T23:59:59.999", epoch_of(2026, 2, 28, 23, 59, 59) + 0.999)
    assert cp56time2a(cp56(0.0, invalid=True), 0)[2] is True  # IV bit
    assert cp56time2a(bytes((0x60, 0xEA, 0, 0, 1, 1, 26)), 0) == (None, None, False)  # 60000 ms: out of range
    assert cp56time2a(bytes((0, 0, 0, 0, 0, 1, 26)), 0)[0] is None  # day 0
    assert cp56time2a(bytes((0, 0, 0, 0, 1, 1, 85)), 0)[0].startswith("1985")  # Wireshark's pivot


def test_parameters_and_files():
    h = harness()
    [pme] = h.client(i_frame(command(112, ACT, 4001, flt_q(5.0, 0xC1))))
    assert (pme.values, pme.fields["kpa"], pme.fields["lpc"], pme.fields["pop"]) == ((5.0,), 1, True, True)
    [seg] = h.server(i_frame(asdu(125, 13, ioa(3) + b"\x02\x00\x01\x04" + b"abcd", 1)))
    assert (seg.function_name, seg.category, seg.fields["nof"], seg.fields["los"], seg.result) == (
        "f_sg_na_1", PROGRAM, 2, 4, OK)
    assert seg.direction == RESPONSE  # COT 13 (file) from the server
    [bad] = h.server(i_frame(asdu(125, 13, ioa(3) + b"\x02\x00\x01\x09" + b"abcd", 1)))
    assert bad.result == MALFORMED and bad.anomaly == "iec104_asdu_length_mismatch"


# ------------------------------------------------------------------------------------------------
# Monitor direction: measured values, quality descriptors, directions by cause of transmission
# ------------------------------------------------------------------------------------------------


def test_measured_values_quality_and_sequence():
    h = harness()
    elements = [gen.flt_q(1.5), gen.flt_q(2.5, gen.NT | gen.IV), gen.flt_q(float("nan"), gen.OV)]
    [ev] = h.server(i_frame(sequence_objects(13, INROGEN, 4001, elements)))
    assert ev.objects == ("ioa:4001", "ioa:4002", "ioa:4003") and ev.values[:2] == (1.5, 2.5)
    assert ev.values[2] == "nan" and ev.fields["quality"] == ["ov", "nt", "iv"]
    json.dumps(ev.to_dict())  # NaN survives serialisation (json allows it)


def test_normalized_scaled_and_counters():
    h = harness()
    [nva] = h.server(i_frame(single_objects(9, SPONT, [(1, gen.nva_q(-1.0)), (2, gen.nva_q(0.5))])))
    assert nva.values == (-1.0, 0.5)
    [bcr] = h.server(i_frame(single_objects(15, 37, [(9001, gen.bcr(-5, 3, 0x80))])))
    assert bcr.values == (-5,) and bcr.fields["quality"] == ["iv"] and bcr.direction == RESPONSE
    [st_] = h.server(i_frame(single_objects(5, SPONT, [(3, bytes((0x7F, 0)))])))  # step position -1
    assert st_.values == (-1,)


@pytest.mark.parametrize(
    "tid,cot,from_client,direction",
    [
        (13, PERIODIC, False, UNSOLICITED), (13, 2, False, UNSOLICITED), (30, SPONT, False, UNSOLICITED),
        (70, 4, False, UNSOLICITED), (1, INROGEN, False, RESPONSE), (1, 25, False, RESPONSE),
        (15, 37, False, RESPONSE), (13, 5, False, RESPONSE), (102, 5, True, REQUEST),
        (45, ACT, True, REQUEST), (45, 8, True, REQUEST), (45, ACTCON, False, RESPONSE),
        (45, 9, False, RESPONSE), (45, ACTTERM, False, RESPONSE), (45, 44, False, RESPONSE),
        (3, 11, False, UNSOLICITED), (45, 63, True, REQUEST), (45, 63, False, RESPONSE),
    ],
)
def test_direction_from_cause_of_transmission(tid, cot, from_client, direction):
    element = bytes(TYPE_LAYOUT[tid][0])
    frame = i_frame(asdu(tid, cot, ioa(1) + element, 1))
    h = harness()
    [ev] = h.client(frame) if from_client else h.server(frame)
    assert ev.direction == direction


def test_negative_confirmation_and_unknown_address_are_exceptions():
    h = harness()
    [neg] = h.server(i_frame(command(45, ACTCON, 6001, sco(1), pn=True)))
    assert (neg.result, neg.code, neg.fields["pn"]) == (EXCEPTION, ACTCON, True)
    [unk] = h.server(i_frame(command(46, 47, 6099, gen.dco(2), pn=True)))
    assert (unk.result, unk.code, unk.fields["cot_name"]) == (EXCEPTION, 47, "unknown_ioa")
    [test] = h.client(i_frame(asdu(100, ACT, ioa(0) + b"\x14", 1, test=True)))
    assert test.fields["test"] is True and test.result == OK


def test_command_latency_pairs_activation_with_confirmation():
    h = harness()
    h.client(i_frame(command(50, ACT, 7003, gen.setpoint_flt(1.0))), ts=5.0)
    [other] = h.server(i_frame(command(50, ACTCON, 7004, gen.setpoint_flt(1.0))), ts=5.1)  # another IOA
    [con] = h.server(i_frame(command(50, ACTCON, 7003, gen.setpoint_flt(1.0)), ns=1), ts=5.3)
    assert other.latency is None and con.latency == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------------
# Malformed ASDUs and APDUs
# ------------------------------------------------------------------------------------------------


def test_asdu_length_mismatch_keeps_what_fits():
    h = harness()
    frame = i_frame(asdu(13, INROGEN, ioa(1) + flt_q(1.0) + ioa(2) + flt_q(2.0)[:3], 2))
    [ev] = h.server(frame)
    assert (ev.result, ev.anomaly, ev.values, ev.objects) == (MALFORMED, "iec104_asdu_length_mismatch", (1.0,), ("ioa:1",))
    [extra] = h.server(i_frame(asdu(1, INROGEN, ioa(1) + siq(1) + b"\x00", 1)))  # one octet too many
    assert extra.anomaly == "iec104_asdu_length_mismatch" and extra.values == (1,)
    assert h.counters["iec104_asdu_length_mismatch"] == 2


def test_asdu_without_objects_and_short_header():
    h = harness()
    [zero] = h.server(i_frame(asdu(1, SPONT, b"", 0)))
    assert zero.anomaly == "iec104_asdu_no_objects" and zero.result == MALFORMED
    [short] = h.server(i_frame(bytes((13, 1, 3))))
    assert (short.function, short.result, short.anomaly) == (13, MALFORMED, "iec104_asdu_short")
    assert funcs(h) == {"apci:0": 2, "asdu:1": 1, "asdu:13": 1}  # tshark also counts the type id


def test_empty_asdu_counts_apci_not_type():
    """TestDissectIec104.pcap frame 25: an I-format APCI with length 4 (no ASDU). tshark counts the
    APCI and no type id (its ASDU dissector throws on the empty buffer)."""
    h = harness()
    [ev] = h.client(bytes.fromhex("680400000000"))
    assert ev.result == MALFORMED and ev.anomaly == "iec104_asdu_empty"
    assert funcs(h) == {"apci:0": 1}


def test_apdu_length_checks():
    h = harness()
    [too_short] = h.client(bytes.fromhex("0303036801131313"))  # TestDissect frame 16: length 1
    assert too_short.anomaly == "iec104_apdu_too_short" and h.stats.pdus.get("iec104", 0) == 0
    long_asdu = asdu(1, SPONT, ioa(1) + bytes(241), 1)
    [long] = h.server(apci_i(0, 0, long_asdu))  # APDU length 254: over the 253 limit, still read
    assert h.counters["iec104_apdu_too_long"] == 1 and long.function == 1


# ------------------------------------------------------------------------------------------------
# Framing: Wireshark's get_iec104apdu_len, reproduced
# ------------------------------------------------------------------------------------------------


def _stream(*apdus: bytes) -> bytes:
    return b"".join(apdus)


def test_every_split_of_the_stream_gives_the_same_events():
    stream = _stream(
        apci_u(gen.STARTDT_ACT),
        i_frame(gen.interrogation(ACT)),
        i_frame(sequence_objects(13, INROGEN, 4001, gen._measurements(1.0)), ns=1),
        apci_s(2),
        i_frame(command(45, ACT, 1, sco(1)), ns=2),
    )
    whole = harness()
    whole.client(stream)
    want = [(e.function_name, e.values, e.objects) for e in whole.events]
    assert len(want) == 5
    for cut in range(1, len(stream)):
        h = harness()
        h.client(stream[:cut])
        h.client(stream[cut:])
        assert [(e.function_name, e.values, e.objects) for e in h.events] == want, cut
    h = harness()
    for i in range(len(stream)):
        h.client(stream[i : i + 1])
    assert [(e.function_name, e.values, e.objects) for e in h.events] == want
    assert funcs(h) == funcs(whole)


def test_testdissect_sequences_count_as_tshark():
    """The client side of TestDissectIec104.pcap connections 1568-1572, segment by segment, with
    tshark 4.0's counts: junk before 0x68 belongs to the next APDU; an APDU length under 4 is flagged
    and not counted; a PDU shorter than an APCI cannot be framed."""
    segments = [
        "680407000000", "00", "0168", "020268001212", "680443000000", "0303036801131313",
        "040404046802141414", "680443000000", "0505050505680315151515", "0606060606066804161616161616",
    ]
    h = harness()
    for s in segments:
        h.client(bytes.fromhex(s))
    assert funcs(h) == {"apci:3": 3, "apci:0": 1}  # tshark: frames 4, 13, 20 (U) and 25 (the empty I)
    assert h.counters["iec104_apdu_too_short"] == 4 and h.counters["iec104_junk_before_start"] == 7
    # connection 1570: a U-frame with 7 octets of junk in front and a length of 5
    h = harness()
    h.client(bytes.fromhex("07070707070707680517171717171717"))
    h.client(bytes.fromhex("680443000000"))
    assert funcs(h) == {"apci:3": 2}
    # connection 1572: an S-frame split over three segments behind 9 junk octets
    h = harness()
    for s in ("0909090909090909096806191919191919191919", "0909090909090909096806191919", "191919191919"):
        h.client(bytes.fromhex(s))
    assert funcs(h) == {"apci:1": 2}


def test_pdu_shorter_than_an_apci_drops_the_buffer():
    h = harness()
    h.client(bytes.fromhex("6802aaaa") + apci_u(gen.TESTFR_ACT))  # 0x68 with length 2 right at the start
    assert h.counters["iec104_bad_framing"] == 1 and h.stats.pdus.get("iec104", 0) == 0
    h.client(apci_u(gen.TESTFR_ACT))  # the next segment starts clean
    assert funcs(h) == {"apci:3": 1}


def test_junk_without_start_is_consumed():
    h = harness()
    h.client(bytes(8))
    assert h.counters["iec104_no_start"] == 1 and not h.events
    h.client(apci_u(gen.TESTFR_ACT))
    assert funcs(h) == {"apci:3": 1}


def test_where_tshark_counts_an_incomplete_apdu():
    """Found by differential fuzzing (docs/protocols/iec104.md): three client segments, the last
    completing a 16-octet I-frame and starting an APDU that announces 231 octets but brings 6.
    tshark 4.0 dissects that fragment at once ("Unreassembled fragment") and counts an I-frame with
    type id 5; we wait for the rest of it, and at the end of the stream report it as truncated."""
    h = harness()
    for s in ("680e0200040064010700010000000014", "680e80002e", "680e5800fc002e010600010068e72e72170005"):
        h.client(bytes.fromhex(s))
    h.analyzer.close(9.0)
    assert funcs(h) == {"apci:0": 2, "asdu:100": 1, "asdu:14": 1}  # tshark: apci:0 x3, and asdu:5 too
    assert h.counters["iec104_truncated_at_close"] == 1


# ------------------------------------------------------------------------------------------------
# Sequence numbers (104 clause 5.1, 5.5)
# ------------------------------------------------------------------------------------------------


def _spont(ns: int, nr: int = 0) -> bytes:
    return i_frame(single_objects(1, SPONT, [(1, siq(1))]), ns=ns, nr=nr)


def test_in_order_and_wrap_around():
    h = harness()
    for ns in (32766, 32767, 0, 1):
        h.server(_spont(ns))
    assert [e.fields["seq"] for e in h.events] == ["first", "ok", "ok", "ok"]
    assert not [k for k in h.counters if k.startswith("iec104_seq")]


def test_gap_duplicate_and_reorder():
    h = harness()
    h.server(_spont(0))
    [gap] = h.server(_spont(3))  # 1 and 2 missing
    assert (gap.anomaly, gap.fields["seq_gap"], gap.fields["expected_ns"], gap.result) == ("iec104_seq_gap", 2, 1, OK)
    [late] = h.server(_spont(1))
    assert late.anomaly == "iec104_seq_reorder" and late.fields["seq"] == "reorder"
    [dup] = h.server(_spont(1))  # already seen: now a duplicate
    assert dup.anomaly == "iec104_seq_duplicate"
    [nxt] = h.server(_spont(4))
    assert nxt.fields["seq"] == "ok" and nxt.anomaly is None
    assert h.counters["iec104_seq_gap"] == 1 and h.counters["iec104_seq_reorder"] == 1
    assert h.counters["iec104_seq_duplicate"] == 1


def test_gap_after_capture_loss_is_not_the_peers_doing():
    h = harness()
    h.server(_spont(0))
    h.analyzer.gap(False, 1.0)
    [ev] = h.server(_spont(5))
    assert ev.fields["seq"] == "resync" and ev.fields["seq_jump"] == 4 and ev.anomaly is None
    assert h.counters["iec104_seq_gap_after_loss"] == 1 and h.counters["iec104_seq_gap"] == 0


def test_acknowledgement_checks():
    h = harness()
    h.server(_spont(0))
    h.server(_spont(1))
    [ok] = h.client(apci_s(2))
    assert ok.anomaly is None
    [unsent] = h.client(apci_s(5))  # acknowledges three I-frames the server never sent
    assert unsent.anomaly == "iec104_ack_unsent" and unsent.fields["ack_ahead"] == 3
    [back] = h.client(apci_s(1))
    assert back.anomaly == "iec104_ack_backward"


def test_k_window_exceeded():
    h = harness()
    h.client(apci_s(0))  # the master has acknowledged nothing yet
    evs = [h.server(_spont(ns))[0] for ns in range(14)]
    assert [e.anomaly for e in evs[:12]] == [None] * 12
    assert evs[12].anomaly == "iec104_k_exceeded" and evs[12].fields["outstanding"] == 13


def test_data_while_stopped():
    h = harness()
    h.client(apci_u(gen.STOPDT_ACT))
    h.server(apci_u(gen.STOPDT_CON))
    [ev] = h.server(_spont(0))
    assert ev.anomaly == "iec104_data_while_stopped"
    h.client(apci_u(gen.STARTDT_ACT))
    [ok] = h.server(_spont(1))
    assert ok.anomaly is None


# ------------------------------------------------------------------------------------------------
# Registry and probe
# ------------------------------------------------------------------------------------------------


def test_spec_and_registry():
    assert SPEC.name == "iec104" and 2404 in SPEC.tcp_ports
    reg = registry()
    assert reg.tcp[2404].name == "iec104"
    assert reg.probe(apci_u(gen.STARTDT_ACT), True).name == "iec104"


def test_probe():
    assert probe(apci_u(gen.STARTDT_ACT), True) and probe(apci_s(7), False)
    assert probe(i_frame(gen.interrogation(ACT)), True)
    assert probe(i_frame(gen.interrogation(ACT)) + apci_s(1), True)
    assert not probe(i_frame(gen.interrogation(ACT)) + b"\x00", True)  # what follows must be an APDU
    assert not probe(bytes.fromhex("68040f000000"), True)  # no such U function
    assert not probe(bytes.fromhex("680401010000"), True)  # S-format: second octet reserved (zero)
    assert not probe(bytes.fromhex("680401000100"), True)  # N(R) is shifted left: its low bit is zero
    assert not probe(i_frame(asdu(42, ACT, ioa(1) + b"\x00", 1)), True)  # unknown type id
    assert not probe(b"\x68\x02\x00\x00\x00\x00", True) and not probe(b"GET / HTTP/1.1\r\n", True)
    assert not probe(bytes.fromhex("000100000006010300000001"), True)  # Modbus/TCP


# ------------------------------------------------------------------------------------------------
# Real captures against tshark (GROUND_TRUTH.json) and the IPAL dataset
# ------------------------------------------------------------------------------------------------


def _replay(path: Path):
    return replay_capture(path, "iec104")


def test_real_captures_match_tshark(ground_truth):
    truth = {k: v["protocols"]["iec104"] for k, v in ground_truth.items() if "iec104" in v.get("protocols", {})}
    assert len(truth) >= 4
    for rel, t in sorted(truth.items()):
        result, _ = _replay(SHARED_PCAPS / rel)
        ours = result.stats.as_ground_truth().get("iec104", {"pdus": 0, "func_hist": {}})
        assert result.counters.get("analyzer_error_iec104", 0) == 0, rel
        assert ours["pdus"] == t["pdus"], rel
        want = {k.replace("0x00000000", "0").replace("0x00000001", "1").replace("0x00000003", "3"): v
                for k, v in t["func_hist"].items()}
        assert ours["func_hist"] == want, rel


IPAL = SHARED / "datasets" / "ipal_iec104"


@pytest.mark.parametrize("name", ["train.pcap", "test.pcap", "C-0.1-1.pcap", "R-0.1-1.pcap", "S-0.1-1.pcap"])
def test_ipal_dataset_parses_cleanly(name):
    require_shared()
    result, events = _replay(IPAL / name)
    assert result.counters.get("analyzer_error_iec104", 0) == 0
    assert events and not [e for e in events if e.result == MALFORMED]
    kinds = Counter(e.function_name for e in events)
    assert {"c_ic_na_1", "m_me_nc_1", "c_se_nc_1", "c_rd_na_1", "c_cs_na_1", "s_frame"} <= set(kinds)
    if name in ("train.pcap", "test.pcap"):  # the unmodified traffic has no sequence anomaly
        assert not [k for k, v in result.counters.items() if k.startswith("iec104_") and v]


# ------------------------------------------------------------------------------------------------
# Crafted captures (tools/pcapgen/iec104.py)
# ------------------------------------------------------------------------------------------------


crafted = crafted_captures_fixture(gen.main)


def test_crafted_captures_are_deterministic_and_small(crafted):
    check_crafted_captures(crafted, "iec104", committed_required=True)


def test_crafted_normal_capture(crafted):
    result, events = _replay(crafted["iec104_normal.pcap"])
    assert not [e for e in events if e.category == CONTROL or e.anomaly or e.result != OK]
    kinds = Counter(e.function_name for e in events)
    assert kinds["m_me_nc_1"] == 25 and kinds["c_ic_na_1"] == 3 and kinds["testfr_act"] == 4
    assert {e.src for e in events if e.direction == REQUEST} == {"10.0.104.1"}
    assert not [k for k, v in result.counters.items() if k.startswith("iec104_") and v]


def test_crafted_attack_capture(crafted):
    _, events = _replay(crafted["iec104_attack.pcap"])
    req = [e for e in events if e.direction == REQUEST]
    assert {e.src for e in req} == {"10.0.104.66"}
    names = Counter(e.function_name for e in req)
    for name in ("c_sc_na_1", "c_dc_na_1", "c_se_na_1", "c_se_nb_1", "c_se_nc_1", "c_rc_na_1", "c_sc_ta_1",
                 "c_rp_na_1", "c_cs_na_1"):
        assert names[name] >= 1, name
    storm = [e.ts for e in req if e.function_name == "c_ic_na_1"]
    assert len(storm) == 40 and storm[-1] - storm[0] < 3.0
    [cs] = [e for e in req if e.function_name == "c_cs_na_1"]
    assert cs.fields["time"] == "2020-01-01T00:00:00.000"
    assert [e.anomaly for e in events if e.anomaly] == ["iec104_seq_duplicate"]  # the replayed execute
    assert [e.code for e in events if e.result == EXCEPTION] == [47]
    assert {e.fields["se"] for e in events if e.function_name == "c_sc_na_1"} == {"select", "execute"}


def test_crafted_captures_match_tshark(crafted, tshark):
    for path in crafted.values():
        want: Counter = Counter()
        for types, tids in tshark_fields(tshark, path, "iec60870_104.type", "iec60870_asdu.typeid"):
            want.update(f"apci:{int(t, 16)}" for t in types if t)
            want.update(f"asdu:{t}" for t in tids if t)
        result, _ = _replay(path)
        assert result.stats.as_ground_truth()["iec104"]["func_hist"] == dict(want), path.name


# ------------------------------------------------------------------------------------------------
# Property tests: never raise, never loop (hypothesis; seeds from the real captures)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    """The non-empty TCP payloads to or from port 2404 of the real IEC 104 captures."""
    require_shared()
    out = capture_payloads(
        sorted((SHARED_PCAPS / "iec104").iterdir()),
        ("tcp",),
        keep=lambda tcp, payload: bool(payload) and 2404 in (tcp.sport, tcp.dport),
    )
    assert len(out) > 50
    return out


PROPS = fuzz_settings(150, deadline=1000)


def _check(h: Harness) -> None:
    f = funcs(h)
    assert h.stats.pdus.get("iec104", 0) == f["apci:0"] + f["apci:1"] + f["apci:3"]
    assert sum(v for k, v in f.items() if k.startswith("asdu:")) <= f["apci:0"]
    for e in h.events:
        json.dumps(e.to_dict())
        assert e.values is None or len(e.values) <= 127
    for side in (True, False):
        assert len(h.analyzer._buf[side]) <= Iec104Analyzer.max_buffer
        assert len(h.analyzer._dirs[side].missing) <= 64
    assert len(h.analyzer._pending) <= 256


@PROPS
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=10))
def test_random_bytes_never_raise(chunks):
    h = harness()
    for side, data in chunks:
        h.analyzer.feed(side, data, 1.0)
    h.analyzer.gap(True, 2.0)
    h.analyzer.close(3.0)
    _check(h)


@PROPS
@given(st.binary(max_size=260))
def test_random_asdus_never_raise(body):
    d = decode_asdu(body)
    assert d["type_id"] == (body[0] if body else -1)
    h = harness()
    h.server(i_frame(body[:249]))
    _check(h)


@PROPS
@given(data=st.data(), ops=MUTATIONS, cuts=st.lists(st.integers(1, 80), max_size=4))
def test_mutated_real_payloads_never_raise(seeds, data, ops, cuts):
    picked = data.draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=5))
    stream = mutate(b"".join(picked), ops)
    h = harness()
    off = 0
    for c in cuts:
        h.analyzer.feed(c % 2 == 0, stream[off : off + c], 1.0)
        off += c
    h.analyzer.feed(True, stream[off:], 1.0)
    h.analyzer.close(2.0)
    _check(h)


@PROPS
@given(data=st.data())
def test_valid_streams_split_anywhere_give_the_same_counts(seeds, data):
    """Any split of a stream of real APDUs yields the counts of the unsplit stream."""
    good = [s for s in seeds if probe(s, True)]
    stream = b"".join(data.draw(st.lists(st.sampled_from(good), min_size=1, max_size=6)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    whole = harness()
    whole.client(stream)
    h = harness()
    prev = 0
    for c in cuts + [len(stream)]:
        h.client(stream[prev:c])
        prev = c
    assert funcs(h) == funcs(whole) and len(h.events) == len(whole.events)


# ------------------------------------------------------------------------------------------------
# The documentation's example
# ------------------------------------------------------------------------------------------------


def test_doc_example():
    got, expected = replay_documented_example(harness(), "iec104.md", 1767229200.0, 1767229200.25)
    assert got == expected
