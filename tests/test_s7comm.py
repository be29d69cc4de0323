"""S7comm / COTP / TPKT analyzer (sensor/protocols/s7comm.py) with S7comm-plus and ISO/MMS identification.

Three layers, as in the rest of the suite:

1. Byte vectors per ROSCTR, function and userdata group. Most are real PDUs copied from the shared
   captures (file and frame named next to each), so they are what devices send, not what we think
   they send; the rest are built with the pure builders of ``tools/pcapgen/s7comm.py``.
2. Counting the way tshark 4.0 does: a table of edge cases whose expected counts were taken from tshark
   (the ``tshark`` tests re-run it when it is installed), and the real captures against
   GROUND_TRUTH.json.
3. Property tests (hypothesis): random and mutated inputs, seeded from the payloads of the real captures,
   never raise out of the analyzer, never trip its internal-error guard and always terminate.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import TcpConv, pcap_bytes, run_packets
from hypothesis import given
from hypothesis import strategies as st
from protocol_testutil import fuzz_examples, fuzz_settings

from sensor.events import (
    CONTROL,
    DISCOVERY,
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
from sensor.protocols.s7comm import SPEC, S7commAnalyzer, decode_values, parse_timestamp, probe, s7_object
from tools.pcapgen import s7comm as gen

CLIENT = ("10.0.0.1", 49152)
SERVER = ("10.0.0.2", 102)

# Real TCP payloads (hex) from the shared captures, copied with tshark (-e tcp.payload).
REAL = {
    # s7comm/icsnpp__s7ident.pcap frame 4
    "s7ident_cr": "0300001611e00000000100c0010ac1020100c2020101",
    # s7comm/icsnpp__s7ident.pcap frame 6
    "s7ident_cc": "0300001611d00001000100c0010ac1020100c2020101",
    # s7comm/icsnpp__s7ident.pcap frame 8
    "s7ident_setup_job": "0300001902f08032010000000000080000f0000001000101e0",
    # s7comm/icsnpp__s7ident.pcap frame 9
    "s7ident_setup_ack": "0300001b02f080320300000000000800000000f0000001000101e0",
    # s7comm/icsnpp__s7ident.pcap frame 10
    "s7ident_szl11_req": "0300002102f080320700000100000800080001120411440100ff09000400110000",
    # s7comm/icsnpp__s7ident.pcap frame 11
    "s7ident_szl11_rsp": (
        "0300009902f080320700000100000c007c000112081284010000000000ff09007800110000001c0004000136455337203331"
        "352d32454831342d304142302000c000040001000636455337203331352d32454831342d304142302000c000040001000720"
        "2020202020202020202020202020202020202000c0560302060081426f6f74204c6f61646572202020202020202020000041"
        "200909"
    ),
    # s7comm/icsnpp__s7ident.pcap frame 12
    "s7ident_szl1c_req": "0300002102f080320700000200000800080001120411440100ff090004001c0000",
    # s7comm/icsnpp__s7ident.pcap frame 13
    "s7ident_szl1c_rsp": (
        "0300017d02f080320700000200000c0160000112081284010000000000ff09015c001c00000022000a0001534e4150372d53"
        "455256455200000000000000000000000000000000000000000002435055203331352d3220504e2f44500000000000000000"
        "0000000000000000000003000000000000000000000000000000000000000000000000000000000000000000044f72696769"
        "6e616c205369656d656e732045717569706d656e7400000000000000055320432d4332555232383932323031320000000000"
        "00000000000000000000000007435055203331352d3220504e2f4450000000000000000000000000000000000000084d4d43"
        "20323637464631314600000000000000000000000000000000000000000009002af600000100000000000000000000000000"
        "00000000000000000000000000000a0000000000000000000000000000000000000000000000000000000000000000000b00"
        "00000000000000000000000000000000000000000000000000000000000000"
    ),
    # s7comm/icsnpp__s7ident.pcap frame 20
    "s7ident_upload_job": "0300002302f080320100000600001200001d00000000000000095f3042303030303041",
    # s7comm/icsnpp__s7ident.pcap frame 21
    "s7ident_upload_ack": "0300001302f08032020000060000000000d241",
    # s7comm/icsnpp__s7ident.pcap frame 31
    "s7ident_read5_job": (
        "0300004f02f080320100000a00003e00000405120a10020010000083000000120a10020010000081000000120a1002001000"
        "0082000000120a101d000800001d000000120a101c000800001c000000"
    ),
    # s7comm/icsnpp__s7ident.pcap frame 32
    "s7ident_read5_rsp": "0300002902f080320300000a0000020014000004050a0000040a0000040a0000040a0000040a000004",
    # s7comm/icsnpp__snap7.pcap frame 5
    "snap7_szl1c_req": "0300002102f080320700000200000800080001120411440100ff090004001c0000",
    # s7comm/icsnpp__snap7.pcap frame 6
    "snap7_szl1c_rsp1": (
        "030000f702f080320700000200000c00da0001120812840102d5010000ff0900d6001c00000022000a000153373330302f45"
        "543230304d2073746174696f6e5f31000000000000000000000002504c435f31000000000000000000000000000000000000"
        "0000000000000000000003000000000000000000000000000000000000000000000000000000000000000000044f72696769"
        "6e616c205369656d656e732045717569706d656e7400000000000000055320432d4231553339333134323031310000000000"
        "00000000000000000000000007435055203331352d3220504e2f445000000000000000000000000000000000000008"
    ),
    # s7comm/icsnpp__snap7.pcap frame 7
    "snap7_szl1c_req2": "0300002102f080320700000300000c00040001120812440102000000000a000000",
    # s7comm/icsnpp__snap7.pcap frame 8
    "snap7_szl1c_rsp2": (
        "030000a702f080320700000300000c008a0001120812840102d5000000ff0900864d4d432034413141433031390000000000"
        "0000000000000000000000000000000009002af6000001000000000000000000000000000000000000000000000000000000"
        "0a0000000000000000000000000000000000000000000000000000000000000000000b000000000000000000000000000000"
        "0000000000000000000000000000000000"
    ),
    # s7comm/icsnpp__snap7.pcap frame 15
    "snap7_list_req": "0300001d02f0803207000007000008000400011204114301000a000000",
    # s7comm/icsnpp__snap7.pcap frame 16
    "snap7_list_rsp": (
        "0300003d02f080320700000700000c0020000112081283010000000000ff09001c3038000130450001304300003041000230"
        "4200083044004d3046000f"
    ),
    # s7comm/icsnpp__snap7.pcap frame 17
    "snap7_start_upload": "0300002302f080320100000800001200001d00000000000000095f3042303030303041",
    # s7comm/icsnpp__snap7.pcap frame 18
    "snap7_start_upload_ack": "0300002302f0803203000008000010000000001d000100000000070730303030323136",
    # s7comm/icsnpp__snap7.pcap frame 19
    "snap7_upload": "0300001902f080320100000900000800001e00000000000007",
    # s7comm/icsnpp__snap7.pcap frame 20
    "snap7_upload_ack": (
        "030000f102f080320300000900000200dc00001e0000d800fb70700302070b0000000000d880000000003921002d9804ef6d"
        "80122c00000000000000901c031001010100001f0202040001210500140000019f003c01900027741553373330302f455432"
        "30304d2073746174696f6e5f310000504c435f31000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000005354455020372023202020202020202020202020202020200000d1cc3152481400000000"
    ),
    # s7comm/icsnpp__snap7.pcap frame 21
    "snap7_end_upload": "0300001902f080320100000a00000800001f00000000000007",
    # s7comm/icsnpp__snap7.pcap frame 22
    "snap7_end_upload_ack": "0300001402f080320300000a000001000000001f",
    # s7comm/icsnpp__snap7.pcap frame 45
    "snap7_read_clock": "0300001d02f0803207000016000008000400011204114701000a000000",
    # s7comm/icsnpp__snap7.pcap frame 46
    "snap7_read_clock_rsp": "0300002b02f080320700001600000c000e000112081287010200000000ff09000a00191602081451379162",
    # s7comm/icsnpp__snap7.pcap frame 47
    "snap7_set_clock": "0300002702f0803207000017000008000e0001120411470200ff09000a00191602082308100002",
    # s7comm/icsnpp__snap7.pcap frame 48
    "snap7_set_clock_rsp": "0300002102f080320700001700000c00040001120812870202000000000a000000",
    # s7comm/icsnpp__snap7.pcap frame 49
    "snap7_write_real": "0300002702f080320100001800000e00080501120a100800010000830000800007000479e9f642",
    # s7comm/icsnpp__snap7.pcap frame 50
    "snap7_write_real_ack": "0300001602f0803203000018000002000100000501ff",
    # s7comm/icsnpp__snap7.pcap frame 51
    "snap7_read_real": "0300001f02f080320100001900000e00000401120a10080001000083000080",
    # s7comm/icsnpp__snap7.pcap frame 52
    "snap7_read_real_ack": "0300001d02f0803203000019000002000800000401ff07000400000000",
    # s7comm/icsnpp__snap7.pcap frame 53
    "snap7_write5": (
        "030000c302f080320100001a00003e00740505120a10040010000083000000120a10020010000081000000120a1002001000"
        "0082000000120a101d000800001d000000120a101c000800001c00000000040100addeaddeaddeaddeaddeaddeaddeaddeef"
        "beefbeefbeefbeefbeefbeefbeefbe00040080aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb00040080bbbbbbbbbbbbbbbbaddead"
        "deaddeadde00090010efbeefbeefbeefbeefbeefbeefbeefbe00090010fecafecafecafecafecafecafecafeca"
    ),
    # s7comm/icsnpp__snap7.pcap frame 54
    "snap7_write5_ack": "0300001a02f080320300001a000002000500000505ffffff0303",
    # s7comm/icsnpp__snap7.pcap frame 55
    "snap7_read5": (
        "0300004f02f080320100001b00003e00000405120a10020010000083000000120a10020010000081000000120a1002001000"
        "0082000000120a101d000800001d000000120a101c000800001c000000"
    ),
    # s7comm/icsnpp__snap7.pcap frame 56
    "snap7_read5_ack": (
        "0300007902f080320300001b000002006400000405ff040080acde000daddeaddeaddeaddeaddeaddeff040080aaaaaaaaaa"
        "aaaaaabbbbbbbbbbbbbbbbff040080bbbbbbbbbbbbbbbbaddeaddeaddeaddeff090010000000000000000000000000000000"
        "00ff09001000110000000000000000000000000000"
    ),
    # s7comm/icsnpp__snap7.pcap frame 57
    "snap7_plc_stop": "0300002102f080320100001c000010000029000000000009505f50524f4752414d",
    # s7comm/icsnpp__snap7.pcap frame 58
    "snap7_plc_stop_ack": "0300001402f080320300001c0000010000000029",
    # s7comm/icsnpp__snap7.pcap frame 59
    "snap7_modu": "0300002302f080320100001d000012000028000000000000fd00024550055f4d4f4455",
    # s7comm/icsnpp__snap7.pcap frame 60
    "snap7_modu_ack": "0300001402f080320300001d0000010000000028",
    # s7comm/icsnpp__snap7.pcap frame 61
    "snap7_garb": "0300002102f080320100001e000010000028000000000000fd0000055f47415242",
    # s7comm/icsnpp__snap7.pcap frame 62
    "snap7_garb_ack": "0300001402f080320300001e0000010000000028",
    # s7comm/icsnpp__snap7.pcap frame 63
    "snap7_cold_start": "0300002702f080320100001f000016000028000000000000fd0002432009505f50524f4752414d",
    # s7comm/icsnpp__snap7.pcap frame 64
    "snap7_cold_start_ack": "0300001402f080320300001f0000010000000028",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 60
    "tia_dele": "0300002b02f080320100007400001a000028000000000000fd000a01003042303230303041055f44454c45",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 61
    "tia_dele_ack": "0300001402f08032030000740000010000000028",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 66
    "tia_req_download": "0300003102f080320100007700002000001a00010000000000095f30423030303037500d31303030303934303030303232",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 67
    "tia_req_download_ack": "0300001402f0803203000077000001000000001a",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 68
    "tia_download_block": "0300002302f08032010000c100001200001b00000000000000095f3042303030303750",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 69
    "tia_download_block_ack": (
        "0300007702f08032030000c1000002006200001b00005e00fb70700302070b00070000005e80000000051272582dce04ef6d"
        "80122c0000000000000016161300001c00008000800000000a04b00040012c00005354455020372023202020202020202020"
        "2020202020202000001d983152481400000000"
    ),
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 70
    "tia_download_ended": "0300002302f08032010000c300001200001c00000000000000095f3042303030303750",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 71
    "tia_download_ended_ack": "0300001402f08032030000c3000001000000001c",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 72
    "tia_inse": "0300002b02f080320100007800001a000028000000000000fd000a01003042303030303750055f494e5345",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 73
    "tia_inse_ack": "0300001402f08032030000780000010000000028",
    # s7comm/iti__tia_s300_downloadHwConfig.pcapng frame 81
    "tia_inse_refused": "0300001502f080320300007a0000020000d2a92802",
    # s7comm/iti__S7-1200-Uploading-OB1-TIAV12.pcap frame 4
    "s1200_cr": "030000231ee00000001100c1020600c20f53494d415449432d524f4f542d4553c0010a",
    # s7comm/iti__S7-1200-Uploading-OB1-TIAV12.pcap frame 6
    "s1200_create_object": (
        "030000dd02f080720100ce31000004ca0000000100000120360000011d00040000000000a1000000d3821f0000a381690015"
        "1453657276657253657373696f6e5f324443364432a3822100152c313a3a3a362e303a3a5443502f4950202d3e2041746865"
        "726f73204152383132312f4152383131332f2e2e2ea38228001500a38229001500a3822a00150f564f525445585f32313033"
        "32343931a3822b000401a3822c0012002dc6d2a3822d001500a1000000d3817f0000a3816900151553756273637269707469"
        "6f6e436f6e7461696e6572a2a20000000072010000"
    ),
    # s7comm/iti__S7-1200-Uploading-OB1-TIAV12.pcap frame 8
    "s1200_create_object_rsp": (
        "0300008902f0807201007a32000004ca0000000136110287408707a100000120821f0000a38169001500a382320017000001"
        "3a823b00048200823c00048140823d00048480c040823e00048480c040823f00151b313b36455337203231342d3148453330"
        "2d30584230203b56322e328240001505323b37393382410003000300a20000000072010000"
    ),
    # s7comm/icsnpp__s7comm_plus.pcap frame 2
    "s7p_v3_notification": (
        "0300007102f080720300622008c83ace381dfdbc42201789dec03b099172858efb6f3ef2e5e8ecb8bd2546653370000e5104"
        "0000000000c98ec148019200000005000e41aa70aa9200000019000e417e538e920000001a000e41467956920000001b000e"
        "4193eb85000000000072030000"
    ),
    # mixed/iti__8d7c7db0-9804-012b-b2a6-0016cb8cea27.pcap frame 11
    "iccp_connect": (
        "02f0800dbc0506130100160102140200023302000134020002c1a63181a3a003800101a2819b800207808104000000018204"
        "00000002a423300f0201010604520100013004060251013010020103060528ca220201300406025101880206006160305e02"
        "0101a059605780020780a107060528ca220101a20406022902a303020102a60406022901a703020101be3228300602510102"
        "0103a027a82580027d00810114820114830104a416800101810305fb00820c036e1d000000000064000198"
    ),
    # mixed/iti__8d7c7db0-9804-012b-b2a6-0016cb8cea27.pcap frame 23
    "iccp_identify_req": "02f08001000100610e300c020103a007a0050201018200",
    # mixed/iti__8d7c7db0-9804-012b-b2a6-0016cb8cea27.pcap frame 26
    "iccp_identify_rsp": (
        "02f0800100010061393037020103a032a130020101a22b801541524556412054264420436f72706f726174696f6e810b652d"
        "7465727261636f6d6d8205322e332e31"
    ),
}


def x(h: str) -> bytes:
    return bytes.fromhex(h.replace(" ", ""))


class Flow:
    """A harness with a clock: ``c``/``s`` feed client/server bytes and return the new events."""

    def __init__(self) -> None:
        self.h = Harness(S7commAnalyzer, client=CLIENT, server=SERVER)
        self.t = 100.0

    def c(self, data: bytes | str, dt: float = 0.5) -> list[Any]:
        self.t += dt
        return self.h.client(x(data) if isinstance(data, str) else data, self.t)

    def s(self, data: bytes | str, dt: float = 0.5) -> list[Any]:
        self.t += dt
        return self.h.server(x(data) if isinstance(data, str) else data, self.t)

    @property
    def stats(self) -> dict[str, Any]:
        return self.h.stats.as_ground_truth()

    @property
    def counters(self) -> dict[str, int]:
        return self.h.counters.as_dict()


def one(events: list[Any]) -> Any:
    assert len(events) == 1, events
    return events[0]


# ---------------------------------------------------------------------------------------------------
# Registry entry
# ---------------------------------------------------------------------------------------------------


def test_spec_is_registered_on_port_102() -> None:
    reg = registry()
    assert reg.tcp[102] is SPEC
    assert SPEC.report_names == ("s7comm", "cotp", "s7comm_plus", "mms")


def test_probe_accepts_s7_rejects_rdp() -> None:
    assert probe(x("0300001611e00000000100c0010ac1020100c2020101"), True)  # S7 CR with TSAPs
    assert probe(x("0300001902f08032010000000000080000f0000001000101e0"), True)  # DT + S7 job
    assert probe(gen.cotp_dt(b"\x72\x01\x00\x04\x31\x00\x00\x04"), True)  # DT + S7comm-plus
    # RDP's X.224 connection request (cookie, RDP_NEG_REQ) rides the same TPKT/COTP: not ours
    rdp = x("030000130ee000000000000100080003000000")
    assert not probe(rdp, True)
    assert not probe(b"GET / HTTP/1.1\r\n", True)
    assert not probe(x("0300001902f08033010000000000080000f0000001000101e0"), True)


# ---------------------------------------------------------------------------------------------------
# COTP
# ---------------------------------------------------------------------------------------------------


def test_cotp_cr_cc_tsaps_unit_and_latency() -> None:
    f = Flow()
    cr = one(f.c(REAL["s7ident_cr"]))
    cc = one(f.s(REAL["s7ident_cc"]))
    assert (cr.protocol, cr.function, cr.function_name, cr.category, cr.direction) == (
        "cotp",
        0x0E,
        "connection_request",
        SESSION,
        REQUEST,
    )
    assert cr.fields["calling_tsap"] == "0100" and cr.fields["calling_tsap_type"] == "pg"
    assert cr.fields["called_tsap"] == "0101"
    assert (cr.fields["called_tsap_rack"], cr.fields["called_tsap_slot"]) == (0, 1)
    assert cr.fields["tpdu_size"] == 1024 and cr.fields["src_ref"] == 1
    assert cr.unit == 1  # rack/slot byte of the PLC's TSAP
    assert (cc.function_name, cc.direction, cc.latency) == ("connection_confirm", RESPONSE, pytest.approx(0.5))
    assert f.stats == {"cotp": {"pdus": 2, "func_hist": {"0x0d": 1, "0x0e": 1}}}
    # later S7 events of the flow carry the unit
    ev = one(f.c(REAL["s7ident_setup_job"]))
    assert ev.unit == 1


def test_cotp_cr_with_string_tsap_s7comm_plus() -> None:
    ev = one(Flow().c(REAL["s1200_cr"]))  # TIA Portal to an S7-1200
    assert ev.fields["called_tsap_name"] == "SIMATIC-ROOT-ES"
    assert "called_tsap_rack" not in ev.fields and ev.unit is None


def test_cotp_dr_dc_er_events() -> None:
    f = Flow()
    dr = one(f.c(gen.tpkt(x("06800001000280"))))  # reason 128 "normal"
    assert (dr.function_name, dr.category, dr.fields["reason"]) == ("disconnect_request", SESSION, "normal")
    dc = one(f.s(gen.tpkt(x("05c000020001"))))
    assert dc.function_name == "disconnect_confirm"
    er = one(f.s(gen.tpkt(x("0470000103"))))
    assert (er.function_name, er.result, er.code) == ("tpdu_error", EXCEPTION, 0x03)
    assert f.stats["cotp"]["func_hist"] == {"0x08": 1, "0x0c": 1, "0x07": 1}


# Edge cases with the counts tshark 4.0.17 gives (cotp pdus, cotp key, s7comm pdus, s7comm func or "").
# Each was run through tshark (test_tshark_agrees_on_edge_cases re-checks them when tshark is installed).
S7_SETUP = "32010000000100080000f0000001000101e0"


def tp(cotp_hex: str) -> str:
    """A TPKT around COTP bytes (hex), its length computed."""
    return gen.tpkt(x(cotp_hex)).hex()


def dt(s7_hex: str) -> str:
    """A class-0 DT (EOT set) around an S7 payload (hex)."""
    return tp("02f080" + s7_hex)


EDGE_CASES: list[tuple[str, list[str], int, str, int, str]] = [
    ("dt_class0", [dt(S7_SETUP)], 1, "0x0f", 1, "0xf0"),
    ("dt_li4", [tp("04f0800000" + S7_SETUP)], 1, "0x0f", 0, ""),  # normal format: EOT clear here
    ("dt_li3_rejected", [tp("03f08000" + S7_SETUP)], 0, "", 0, ""),
    ("dt_li1_rejected", [tp("01f0" + S7_SETUP)], 0, "", 0, ""),
    ("dt_li7_extended", [tp("07f0000080000000" + S7_SETUP)], 1, "0x0f", 1, "0xf0"),
    ("dt_li8_checksum", [tp("08f0000080c3020000" + S7_SETUP)], 1, "0x0f", 1, "0xf0"),
    ("li_zero", [tp("00f080" + S7_SETUP)], 0, "", 0, ""),
    ("li_255", [tp("fff080" + S7_SETUP)], 0, "", 0, ""),
    ("li_beyond_tpkt", [tp("40f080" + S7_SETUP)], 0, "", 0, ""),
    ("unknown_tpdu_type", [tp("023080" + S7_SETUP)], 0, "", 0, ""),
    ("dt_2_bytes", [tp("02f0")], 0, "", 0, ""),
    ("tpkt_len_4", ["03000004"], 0, "", 0, ""),
    ("tpkt_version_2", ["02" + dt(S7_SETUP)[2:]], 0, "", 0, ""),
    ("tpkt_reserved_1", ["0301" + dt(S7_SETUP)[4:]], 1, "0x0f", 1, "0xf0"),
    ("cr", [tp("11e00000000100c0010ac1020100c2020102")], 1, "0x0e", 0, ""),
    ("cc_then_dt_in_one_tpkt", [tp("11d00000000100c0010ac1020100c2020102" + "02f080" + S7_SETUP)], 1, "0x0d", 0, ""),
    ("dr", [tp("06800001000280")], 1, "0x08", 0, ""),
    ("ak", [tp("0460000100")], 1, "0x06", 0, ""),
    ("ack_data_with_error", [dt("32030000000100020000d2a92802")], 1, "0x0f", 1, "0x28"),
    ("job_without_parameter", [dt("32010000000100000000")], 1, "0x0f", 1, ""),
    ("job_param_length_lies", [dt("3201000000010100000004")], 1, "0x0f", 1, "0x04"),
    ("ack_data_10_bytes", [dt("32030000000100020000")], 1, "0x0f", 1, ""),
    ("rosctr_4", [dt("320400000001000200000400")], 1, "0x0f", 1, ""),
    ("rosctr_5", [dt("320500000001000200000400")], 1, "0x0f", 1, ""),
    ("rosctr_0", [dt("320000000001000200000400")], 1, "0x0f", 0, ""),
    ("rosctr_8", [dt("320800000001000200000400")], 1, "0x0f", 0, ""),
    ("nine_bytes", [dt("320100000001000200")], 1, "0x0f", 0, ""),
    ("ack_with_parameter", [dt("3202000000010002000000000400")], 1, "0x0f", 1, ""),
    ("userdata_mode_transition", [dt("32070000000100080000" + "0100000000000200")], 1, "0x0f", 1, ""),
    ("userdata_szl", [dt("320700000100000800080001120411440100ff09000400110000")], 1, "0x0f", 1, ""),
    ("fragment_then_eot", [tp("02f000" + S7_SETUP[:10]), tp("02f080" + S7_SETUP[10:])], 2, "0x0f", 1, "0xf0"),
    ("empty_fragment_then_eot", [tp("02f000"), dt(S7_SETUP)], 2, "0x0f", 1, "0xf0"),
    ("two_tpkts_one_segment", [dt(S7_SETUP) + dt(S7_SETUP)], 2, "0x0f", 2, "0xf0"),
    ("split_inside_header", [dt(S7_SETUP)[:10], dt(S7_SETUP)[10:]], 1, "0x0f", 1, "0xf0"),
    ("s7comm_plus_is_not_s7comm", [dt("720100063100000" + "4ca0000000172010000")], 1, "0x0f", 0, ""),
]


@pytest.mark.parametrize("name,segments,cotp,cotp_key,s7,s7_key", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_counting_edge_cases(name: str, segments: list[str], cotp: int, cotp_key: str, s7: int, s7_key: str) -> None:
    f = Flow()
    for seg in segments:
        f.c(seg)
    stats = f.stats
    assert stats.get("cotp", {}).get("pdus", 0) == cotp
    if cotp_key:
        assert set(stats["cotp"]["func_hist"]) == {cotp_key}
    assert stats.get("s7comm", {}).get("pdus", 0) == s7
    assert stats.get("s7comm", {}).get("func_hist", {}) == ({s7_key: s7} if s7_key else {})
    assert "s7comm_internal_error" not in f.counters


def test_tshark_agrees_on_edge_cases(tshark: str, tmp_path: Path) -> None:
    """The table above is tshark's view: one pcap, one TCP connection per case, one tshark run."""
    frames: list[tuple[float, bytes]] = []
    for i, (_name, segments, *_rest) in enumerate(EDGE_CASES):
        conv = TcpConv(cport=41000 + i, sport=102, t0=1_700_000_000.0 + i)
        conv.handshake()
        for seg in segments:
            conv.c(x(seg))
        frames += conv.frames
    path = tmp_path / "edge.pcap"
    path.write_bytes(pcap_bytes(sorted(frames, key=lambda f: f[0])))
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
            "-e",
            "tcp.srcport",
            "-e",
            "cotp.type",
            "-e",
            "s7comm.header.rosctr",
            "-e",
            "s7comm.param.func",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got: dict[int, dict[str, list[str]]] = {}
    for line in out.splitlines():
        cols = (line.split("\t") + ["", "", "", ""])[:4]
        if not cols[0] or int(cols[0]) < 41000:
            continue
        case = got.setdefault(int(cols[0]) - 41000, {"cotp": [], "rosctr": [], "func": []})
        for key, col in zip(("cotp", "rosctr", "func"), cols[1:]):
            case[key] += [v for v in col.split("|") if v]
    for i, (name, _segments, cotp, cotp_key, s7, s7_key) in enumerate(EDGE_CASES):
        case = got.get(i, {"cotp": [], "rosctr": [], "func": []})
        assert len(case["cotp"]) == cotp, name
        assert set(case["cotp"]) == ({cotp_key} if cotp_key else set()), name
        assert len(case["rosctr"]) == s7, name
        assert case["func"] == ([s7_key] * s7 if s7_key else []), name


def test_first_copy_after_ack_is_counted_tshark_skips_it(tshark: str, tmp_path: Path) -> None:
    """Where tshark is wrong for us: a response whose only captured copy comes after the peer ACKed it
    (its first transmission was not captured) is flagged "Spurious Retransmission" and not dissected.
    It happened on the wire, so we count it: the 12 extra PDUs of iti__s7comm_clean.pcap are such."""
    conv = TcpConv(sport=102)
    conv.handshake()
    rsp = gen.ack_data(1, gen.setup_param(240))
    conv.c(gen.job(1, gen.setup_param()))
    seq = conv.seq_s
    conv.seq_s += len(rsp)  # the original response is not in the capture...
    conv.frame(True, "A")  # ...but the client acknowledges it
    conv.s(rsp, seq=seq)  # first (and only) captured copy
    path = tmp_path / "spurious.pcap"
    path.write_bytes(pcap_bytes(conv.frames))
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-T", "fields", "-e", "s7comm.header.rosctr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["1"]  # tshark: the job only
    result, events = run_packets(conv.frames)
    assert result.stats.as_ground_truth()["s7comm"] == {"pdus": 2, "func_hist": {"0xf0": 2}}
    rsp_ev = [e for e in events if e.protocol == "s7comm" and e.direction == RESPONSE]
    assert rsp_ev and rsp_ev[0].latency is not None


# ---------------------------------------------------------------------------------------------------
# S7comm jobs and acknowledgements, one function at a time
# ---------------------------------------------------------------------------------------------------


def test_setup_communication() -> None:
    f = Flow()
    req = one(f.c(REAL["s7ident_setup_job"]))
    rsp = one(f.s(REAL["s7ident_setup_ack"]))
    assert (req.function, req.function_name, req.category, req.direction) == (
        0xF0,
        "setup_communication",
        SESSION,
        REQUEST,
    )
    assert req.fields == {"rosctr": "job", "pdu_ref": 0, "max_amq_calling": 1, "max_amq_called": 1, "pdu_size": 480}
    assert (rsp.direction, rsp.result, rsp.latency) == (RESPONSE, OK, pytest.approx(0.5))
    assert rsp.fields["rosctr"] == "ack_data" and rsp.fields["pdu_size"] == 480
    assert f.stats["s7comm"] == {"pdus": 2, "func_hist": {"0xf0": 2}}


def test_read_var_single_real() -> None:
    f = Flow()
    req = one(f.c(REAL["snap7_read_real"]))
    assert (req.function_name, req.category, req.objects, req.address, req.quantity) == (
        "read_var",
        READ,
        ("MD16",),
        16,
        1,
    )
    assert req.fields["transport_size"] == "REAL" and req.fields["area"] == "M"
    rsp = one(f.s(REAL["snap7_read_real_ack"]))
    assert rsp.values == (0.0,) and rsp.objects == ("MD16",) and rsp.result == OK


def test_read_var_five_items_values_align_with_objects() -> None:
    f = Flow()
    req = one(f.c(REAL["snap7_read5"]))
    assert req.objects == ("MB0[16]", "IB0[16]", "QB0[16]", "T0[8]", "C0[8]")
    rsp = one(f.s(REAL["snap7_read5_ack"]))
    assert len(rsp.values) == 5
    assert rsp.values[0][:4] == [0xAC, 0xDE, 0x00, 0x0D] and len(rsp.values[0]) == 16
    assert rsp.values[3] == [0] * 8 and rsp.values[4][0] == 0x11  # timers/counters as 16-bit words


def test_read_var_failed_items_are_exception_not_malformed() -> None:
    f = Flow()
    f.c(REAL["s7ident_read5_job"])
    rsp = one(f.s(REAL["s7ident_read5_rsp"]))
    # each failed item is 4 bytes (return code 0x0a "object does not exist") whatever its length says
    assert (rsp.result, rsp.code, rsp.anomaly) == (EXCEPTION, 0x0A, None)
    assert rsp.fields["item_errors"] == [[i, 10] for i in range(5)]
    assert rsp.values == (None,) * 5


def test_write_var_real_value() -> None:
    f = Flow()
    req = one(f.c(REAL["snap7_write_real"]))
    assert (req.function, req.function_name, req.category, req.objects) == (5, "write_var", WRITE, ("MD16",))
    assert req.values == (pytest.approx(1.5185e35, rel=1e-3),)
    rsp = one(f.s(REAL["snap7_write_real_ack"]))
    assert (rsp.result, rsp.objects) == (OK, ("MD16",))


def test_write_var_five_items_with_item_errors() -> None:
    f = Flow()
    req = one(f.c(REAL["snap7_write5"]))
    assert req.objects == ("MW0[16]", "IB0[16]", "QB0[16]", "T0[8]", "C0[8]")
    assert req.values[0][0] == 0xADDE and len(req.values[0]) == 16  # WORD items decoded as 16-bit
    assert req.values[1] == [0xAA] * 8 + [0xBB] * 8
    rsp = one(f.s(REAL["snap7_write5_ack"]))
    assert (rsp.result, rsp.code, rsp.fields["item_errors"]) == (EXCEPTION, 3, [[3, 3], [4, 3]])


def test_write_var_db_word_and_bit_built() -> None:
    f = Flow()
    items = [gen.s7any(gen.AREA_DB, gen.TS_WORD, 1, 10, db=1), gen.s7any(gen.AREA_DB, gen.TS_BIT, 1, 0, 3, db=1)]
    req = one(f.c(gen.job(7, gen.var_param(5, items), gen.data_items([(0, 4, b"\x12\x34"), (0, 3, b"\x01")]))))
    assert req.objects == ("DB1.DBW10", "DB1.DBX0.3")
    assert req.values == (0x1234, 1)
    assert (req.address, req.quantity, req.fields["db"]) == (10, 1, 1)


def test_download_sequence_plc_pulls_blocks() -> None:
    """tia_s300_downloadHwConfig.pcapng frames 66-73: request download, the PLC's own download-block
    and download-ended jobs (sent by the server), then _INSE to activate the block."""
    f = Flow()
    req = one(f.c(REAL["tia_req_download"]))
    assert (req.function_name, req.category, req.objects) == ("request_download", PROGRAM, ("SDB7",))
    assert req.fields["load_memory_length"] == 94 and req.fields["mc7_length"] == 22
    assert req.fields["filesystem"] == "passive"
    assert one(f.s(REAL["tia_req_download_ack"])).function_name == "request_download"
    blk = one(f.s(REAL["tia_download_block"]))
    assert (blk.direction, blk.src, blk.function_name, blk.objects) == (REQUEST, SERVER[0], "download_block", ("SDB7",))
    data = one(f.c(REAL["tia_download_block_ack"]))
    assert (data.direction, data.function_name, data.latency) == (RESPONSE, "download_block", pytest.approx(0.5))
    assert data.fields["more_data"] is False and data.fields["data_length"] == 94
    end = one(f.s(REAL["tia_download_ended"]))
    assert (end.function_name, end.objects) == ("download_ended", ("SDB7",))
    one(f.c(REAL["tia_download_ended_ack"]))
    ins = one(f.c(REAL["tia_inse"]))
    assert (ins.function, ins.function_name, ins.category) == (0x28, "plc_control_insert_block", PROGRAM)
    assert ins.fields["pi_service"] == "_INSE" and ins.objects == ("SDB7",)
    ack = one(f.s(REAL["tia_inse_ack"]))
    assert (ack.function_name, ack.fields["pi_service"], ack.objects) == (
        "plc_control_insert_block",
        "_INSE",
        ("SDB7",),
    )


def test_upload_sequence_block_follows_upload_id() -> None:
    f = Flow()  # icsnpp__snap7.pcap frames 17-22
    s = one(f.c(REAL["snap7_start_upload"]))
    assert (s.function_name, s.category, s.objects, s.fields["filesystem"]) == (
        "start_upload",
        PROGRAM,
        ("SDB0",),
        "active",
    )
    r = one(f.s(REAL["snap7_start_upload_ack"]))
    assert (r.fields["upload_id"], r.fields["block_length"], r.objects) == (7, 216, ("SDB0",))
    u = one(f.c(REAL["snap7_upload"]))
    assert (u.function_name, u.objects, u.fields["upload_id"]) == ("upload", ("SDB0",), 7)
    ud = one(f.s(REAL["snap7_upload_ack"]))
    assert (ud.function_name, ud.fields["data_length"], ud.objects) == ("upload", 216, ("SDB0",))
    e = one(f.c(REAL["snap7_end_upload"]))
    assert (e.function_name, e.objects) == ("end_upload", ("SDB0",))
    assert one(f.s(REAL["snap7_end_upload_ack"])).result == OK
    # after end upload the id is forgotten: a reused id names no block
    assert one(f.c(gen.job(11, gen.upload_param(0x1E, 7)))).objects is None


def test_start_upload_refused_with_ack_error() -> None:
    f = Flow()  # icsnpp__s7ident.pcap frames 20/21: ROSCTR 2 with error class 0xd2
    f.c(REAL["s7ident_upload_job"])
    rsp = one(f.s(REAL["s7ident_upload_ack"]))
    assert (rsp.fields["rosctr"], rsp.function, rsp.function_name) == ("ack", 0x1D, "start_upload")
    assert (rsp.result, rsp.code, rsp.fields["error_class"], rsp.fields["error_code"]) == (
        EXCEPTION,
        0xD241,
        0xD2,
        0x41,
    )
    assert f.stats["s7comm"]["func_hist"] == {"0x1d": 1}  # the ack adds no function key


@pytest.mark.parametrize(
    "job_key,rsp_key,name,category,fields",
    [
        ("snap7_plc_stop", "snap7_plc_stop_ack", "plc_stop", CONTROL, {"pi_service": "P_PROGRAM"}),
        (
            "snap7_modu",
            "snap7_modu_ack",
            "plc_control_copy_ram_to_rom",
            PROGRAM,
            {"pi_service": "_MODU", "pi_parameter": "EP"},
        ),
        ("snap7_garb", "snap7_garb_ack", "plc_control_compress", PROGRAM, {"pi_service": "_GARB"}),
        (
            "snap7_cold_start",
            "snap7_cold_start_ack",
            "plc_control_start",
            CONTROL,
            {"pi_service": "P_PROGRAM", "start_mode": "cold"},
        ),
        (
            "tia_dele",
            "tia_dele_ack",
            "plc_control_delete_block",
            PROGRAM,
            {"pi_service": "_DELE", "blocks": ["SDB2000"]},
        ),
    ],
    ids=["plc_stop", "copy_ram_to_rom", "compress", "cold_start", "delete_block"],
)
def test_plc_control_and_stop(job_key: str, rsp_key: str, name: str, category: str, fields: dict[str, Any]) -> None:
    f = Flow()
    req = one(f.c(REAL[job_key]))
    assert (req.function_name, req.category, req.direction) == (name, category, REQUEST)
    for k, v in fields.items():
        assert req.fields[k] == v
    rsp = one(f.s(REAL[rsp_key]))
    assert (rsp.function_name, rsp.category, rsp.result) == (name, category, OK)


def test_plc_control_hot_start_and_unknown_service() -> None:
    f = Flow()
    hot = one(f.c(gen.job(1, gen.pi_param(b"P_PROGRAM"))))
    assert (hot.function_name, hot.fields["start_mode"]) == ("plc_control_start", "hot")
    other = one(f.c(gen.job(2, gen.pi_param(b"_XYZ"))))
    assert (other.function_name, other.category, other.fields["pi_service"]) == ("plc_control", CONTROL, "_XYZ")
    nc = one(f.c(gen.job(3, gen.pi_param(b"_N_F_DELE"))))
    assert nc.function_name == "plc_control_nc_service"


def test_unpaired_ack_data_with_error_class() -> None:
    f = Flow()  # tia_s300_downloadHwConfig frame 81: _INSE refused, the job is not in the capture
    rsp = one(f.s(REAL["tia_inse_refused"]))
    assert (rsp.function, rsp.function_name, rsp.result, rsp.code, rsp.latency) == (
        0x28,
        "plc_control",
        EXCEPTION,
        0xD2A9,
        None,
    )
    assert f.counters["s7comm_unpaired_response"] == 1


def test_cpu_services_and_unknown_function() -> None:
    f = Flow()
    ev = one(f.c(gen.job(1, b"\x00\x01\x00\x00")))
    assert (ev.function, ev.function_name) == (0, "cpu_services")
    ev = one(f.c(gen.job(2, b"\x99\x00")))
    assert (ev.function, ev.function_name, ev.category) == (0x99, "unknown-153", "other")
    assert f.stats["s7comm"]["func_hist"] == {"0x00": 1, "0x99": 1}


def test_pairing_is_per_direction_and_bounded() -> None:
    f = Flow()
    for ref in range(600):  # more outstanding jobs than the cap: the oldest are forgotten, counted
        f.c(gen.job(ref, gen.setup_param()), dt=0.001)
    assert f.counters["s7comm_pending_overflow"] == 600 - 512
    late = one(f.s(gen.ack_data(599, gen.setup_param())))
    assert late.latency is not None
    lost = one(f.s(gen.ack_data(3, gen.setup_param())))
    assert lost.latency is None
    # a job from the server with the same reference does not pair with the client's
    f.s(gen.job(700, gen.setup_param()))
    assert one(f.s(gen.ack_data(700, gen.setup_param()))).latency is None


# ---------------------------------------------------------------------------------------------------
# Userdata
# ---------------------------------------------------------------------------------------------------


def test_szl_module_identification_fills_identity() -> None:
    f = Flow()  # icsnpp__s7ident.pcap frames 10/11
    req = one(f.c(REAL["s7ident_szl11_req"]))
    assert (req.function, req.function_name, req.category, req.direction) == (0x10401, "read_szl", DISCOVERY, REQUEST)
    assert (req.fields["szl_id"], req.fields["szl_index"], req.fields["szl_name"]) == (
        "0x0011",
        "0x0000",
        "module_identification",
    )
    rsp = one(f.s(REAL["s7ident_szl11_rsp"]))
    ident = rsp.fields["identity"]
    assert ident["vendor"] == "Siemens"
    assert ident["order_number"] == "6ES7 315-2EH14-0AB0"
    assert ident["firmware_version"] == "V3.2.6"
    assert ident["boot_loader"] == "Boot Loader"
    assert (rsp.direction, rsp.latency, rsp.fields["szl_records"]) == (RESPONSE, pytest.approx(0.5), 4)
    assert f.stats["s7comm"] == {"pdus": 2, "func_hist": {}}  # tshark 4.0: userdata has no param.func


def test_szl_component_identification_fills_identity() -> None:
    f = Flow()  # icsnpp__s7ident.pcap frames 12/13
    f.c(REAL["s7ident_szl1c_req"])
    rsp = one(f.s(REAL["s7ident_szl1c_rsp"]))
    ident = rsp.fields["identity"]
    assert ident["system_name"] == "SNAP7-SERVER"
    assert ident["module_name"] == ident["product"] == "CPU 315-2 PN/DP"
    assert ident["serial"] == "S C-C2UR28922012"
    assert ident["copyright"] == "Original Siemens Equipment"
    assert ident["memory_card_serial"] == "MMC 267FF11F"
    assert ident["vendor_id"] == 0x2A and "plant_id" not in ident  # empty records are left out


def test_szl_fragmented_response_continuation_has_no_header() -> None:
    f = Flow()  # icsnpp__snap7.pcap frames 5-8: the 0x001c answer in two data units
    f.c(REAL["snap7_szl1c_req"])
    first = one(f.s(REAL["snap7_szl1c_rsp1"]))
    assert first.fields["more_data"] is True and first.fields["szl_id"] == "0x001c"
    assert first.fields["identity"]["system_name"] == "S7300/ET200M station_1"
    f.c(REAL["snap7_szl1c_req2"])
    cont = one(f.s(REAL["snap7_szl1c_rsp2"]))
    assert cont.fields["continuation"] is True and "szl_id" not in cont.fields


def test_list_blocks_and_block_info() -> None:
    f = Flow()  # icsnpp__snap7.pcap frames 15/16
    req = one(f.c(REAL["snap7_list_req"]))
    assert (req.function, req.function_name, req.category) == (0x10301, "list_blocks", DISCOVERY)
    rsp = one(f.s(REAL["snap7_list_rsp"]))
    assert rsp.fields["block_counts"] == {"OB": 1, "FB": 1, "FC": 0, "DB": 2, "SDB": 8, "SFC": 77, "SFB": 15}
    info = one(f.c(gen.userdata(8, 1, 3, 3, 0, b"0A00001A")))
    assert (info.function_name, info.objects, info.fields["block"]) == ("get_block_info", ("DB1",), "DB1")


def test_clock_read_and_set() -> None:
    f = Flow()  # icsnpp__snap7.pcap frames 45-48
    f.c(REAL["snap7_read_clock"])
    rd = one(f.s(REAL["snap7_read_clock_rsp"]))
    assert (rd.function, rd.function_name, rd.category) == (0x10701, "read_clock", READ)
    assert rd.values == ("2016-02-08T14:51:37.916",)
    st_ = one(f.c(REAL["snap7_set_clock"]))
    assert (st_.function_name, st_.category, st_.fields["clock"]) == ("set_clock", WRITE, "2016-02-08T23:08:10.000")
    ack = one(f.s(REAL["snap7_set_clock_rsp"]))
    # return code 0x0a with no parameter error: "no data", not an exception (see the analyzer's comment)
    assert (ack.result, ack.fields["return_code"]) == (OK, 0x0A)


def test_password_attempts_never_record_the_password() -> None:
    f = Flow()
    secret = bytes(b ^ 0x55 for b in b"hunter2 ")
    req = one(f.c(gen.userdata(5, 1, 5, 1, 0, secret)))
    assert (req.function, req.function_name, req.category) == (0x10501, "plc_password", SESSION)
    assert req.fields["password_length"] == 8
    assert secret.hex() not in json.dumps(req.to_dict()) and req.values is None
    bad = one(f.s(gen.userdata(5, 2, 5, 1, 1, b"", err=0xD602)))
    assert (bad.result, bad.code) == (EXCEPTION, 0xD602)


def test_mode_transition_and_unknown_group() -> None:
    f = Flow()
    mt = one(f.s(gen.cotp_dt(gen.s7(7, 0, x("0100000000000000")))))  # function 0x01, mode 0 (STOP)
    assert (mt.direction, mt.function_name, mt.fields["mode"], mt.category) == (
        UNSOLICITED,
        "mode_transition",
        "stop",
        "diagnostic",
    )
    push = one(f.s(gen.cotp_dt(gen.s7(7, 0, x("000112041100020000"), x("0a000000")))))  # group 0, mode RUN
    assert (push.direction, push.function_name, push.fields["mode"]) == (UNSOLICITED, "mode_transition", "run")
    unk = one(f.c(gen.userdata(9, 1, 0x0B, 0x07, 0, b"\x00")))
    assert unk.function_name == f"unknown-{0x10B07}" and unk.fields["function_group"] == "unknown-11"


def test_cyclic_subscription_objects() -> None:
    f = Flow()
    items = gen.s7any(gen.AREA_DB, gen.TS_BYTE, 4, 2, db=10) + gen.s7any(gen.AREA_M, gen.TS_BIT, 1, 5, 2)
    ev = one(f.c(gen.userdata(1, 1, 2, 1, 0, b"\x00\x02\x01\x05" + items)))
    assert (ev.function_name, ev.category, ev.objects) == ("cyclic_transfer", READ, ("DB10.DBB2[4]", "M5.2"))
    assert ev.fields["item_count"] == 2


def test_userdata_fields_direction_and_pairing() -> None:
    f = Flow()
    f.c(gen.szl_request(0x10, 0x0424))
    rsp = one(f.s(gen.szl_response(0x10, 0x0424, 0, 20, [bytes(20)])))
    assert (rsp.latency, rsp.fields["szl_name"], rsp.fields["function_group"]) == (
        pytest.approx(0.5),
        "operating_mode",
        "cpu_functions",
    )


# ---------------------------------------------------------------------------------------------------
# Stream handling: fragments, several PDUs per segment, splits, caps, lies
# ---------------------------------------------------------------------------------------------------

WRITE_JOB = x("0300002702f080320100001800000e00080501120a100800010000830000800007000479e9f642")
READ_JOB = x("0300001f02f080320100001900000e00000401120a10080001000083000080")


def test_s7_pdu_fragmented_over_cotp_dt() -> None:
    f = Flow()
    s7 = WRITE_JOB[7:]
    assert f.c(gen.cotp_dt(b"", eot=False)) == []  # an empty fragment (Step 7 sends these)
    assert f.c(gen.cotp_dt(s7[:9], eot=False)) == []
    ev = one(f.c(gen.cotp_dt(s7[9:])))
    assert ev.function_name == "write_var" and ev.objects == ("MD16",)
    assert f.stats["cotp"]["pdus"] == 3 and f.stats["s7comm"]["pdus"] == 1


def test_several_tpkts_in_one_segment() -> None:
    f = Flow()
    evs = f.c(WRITE_JOB + READ_JOB + WRITE_JOB)
    assert [e.function_name for e in evs] == ["write_var", "read_var", "write_var"]


def test_one_tpkt_split_across_segments_byte_by_byte() -> None:
    f = Flow()
    got: list[Any] = []
    for b in WRITE_JOB + READ_JOB:
        got += f.c(bytes((b,)), dt=0.0)
    assert [e.function_name for e in got] == ["write_var", "read_var"]


def test_tpkt_length_that_lies_long() -> None:
    f = Flow()
    lying = bytearray(READ_JOB)
    lying[3] = len(READ_JOB) + 10  # claims 10 more bytes than the PDU has: swallows the next TPKT's head
    evs = f.c(bytes(lying) + WRITE_JOB)
    assert [e.function_name for e in evs] == ["read_var"]
    assert evs[0].anomaly == "s7comm_trailing_bytes" and evs[0].result == OK
    assert f.counters["s7comm_bad_framing"] == 1  # the rest of the segment is not TPKT any more
    assert f.c(WRITE_JOB)[0].function_name == "write_var"  # resynchronised on the next segment


def test_tpkt_length_that_lies_short_and_bad_version() -> None:
    f = Flow()
    assert f.c(x("0300000502")) == []
    assert f.counters["cotp_tpkt_too_short"] == 1
    assert f.c(x("03000002") + WRITE_JOB) == []  # length < 4: not TPKT
    assert f.c(x("0400001902f080") + WRITE_JOB) == []
    assert f.counters["s7comm_bad_framing"] == 2
    assert f.c(WRITE_JOB)[0].function_name == "write_var"


def test_s7_lengths_that_lie_make_malformed_events() -> None:
    f = Flow()
    pdu = bytearray(WRITE_JOB)
    pdu[7 + 8 : 7 + 10] = b"\x00\x40"  # data length 64, 8 present
    ev = one(f.c(bytes(pdu)))
    assert (ev.function_name, ev.result, ev.anomaly) == ("write_var", MALFORMED, "s7comm_truncated_pdu")
    assert f.stats["s7comm"]["func_hist"] == {"0x05": 1}  # tshark still counts it
    short = one(f.c(gen.cotp_dt(x("32030000000100020000"))))  # ack_data without its error bytes
    assert (short.result, short.anomaly, short.function) == (MALFORMED, "s7comm_truncated_header", -1)
    items = bytearray(READ_JOB)
    items[7 + 10 + 1] = 9  # item count 9, one item present
    ev = one(f.c(bytes(items)))
    assert ev.objects == ("MD16",) and f.counters["s7comm_item_truncated"] == 1


def test_reassembly_cap_and_gap() -> None:
    f = Flow()
    chunk = bytes(40000)
    f.c(gen.cotp_dt(chunk, eot=False))
    f.c(gen.cotp_dt(chunk, eot=False))  # 80,000 bytes buffered > 65,536: dropped, counted
    assert f.counters["cotp_reassembly_cap"] == 1
    assert f.c(gen.cotp_dt(WRITE_JOB[7:])) == []  # the tail of the dropped unit is not parsed alone
    assert one(f.c(WRITE_JOB)).function_name == "write_var"
    f.c(gen.cotp_dt(WRITE_JOB[7:20], eot=False))
    f.h.analyzer.gap(True, f.t)
    assert f.counters["cotp_fragment_lost"] == 1
    assert one(f.c(WRITE_JOB)).function_name == "write_var"
    f.c(gen.cotp_dt(b"\x32", eot=False))
    f.h.analyzer.close(f.t)
    assert f.counters["cotp_fragment_incomplete_at_close"] == 1


# ---------------------------------------------------------------------------------------------------
# S7comm-plus and ISO session / MMS identification
# ---------------------------------------------------------------------------------------------------


def test_s7comm_plus_v1_create_object_pairing_not_counted_as_s7comm() -> None:
    f = Flow()  # iti__S7-1200-Uploading-OB1-TIAV12.pcap frames 6 and 8: the session set-up
    req = one(f.c(REAL["s1200_create_object"]))
    assert (req.protocol, req.function, req.function_name, req.category) == (
        "s7comm_plus",
        0x04CA,
        "create_object",
        SESSION,
    )
    assert req.fields["version"] == "v1" and req.fields["sequence"] == 1 and req.fields["session_id"] == 0x120
    assert req.fields["data_length"] == 206 and "integrity" not in req.fields
    rsp = one(f.s(REAL["s1200_create_object_rsp"]))
    assert (rsp.direction, rsp.function_name, rsp.latency) == (RESPONSE, "create_object", pytest.approx(0.5))
    assert "s7comm" not in f.stats and f.stats["s7comm_plus"]["func_hist"] == {"0x04ca": 2}
    assert f.stats["cotp"]["pdus"] == 2


def _s7p_v3(
    opcode: int, function: int, seq: int, extra: bytes = b"\x00\x00\x01\x20\x34", trailer: bool = True
) -> bytes:
    data = bytes((opcode,)) + b"\x00\x00" + function.to_bytes(2, "big") + b"\x00\x00" + seq.to_bytes(2, "big") + extra
    digest = bytes(range(32))
    body = b"\x20" + digest + data
    out = b"\x72\x03" + len(body).to_bytes(2, "big") + body
    return gen.cotp_dt(out + (b"\x72\x03\x00\x00" if trailer else b""))


def test_s7comm_plus_v3_integrity_marks_the_session() -> None:
    f = Flow()
    # icsnpp__s7comm_plus.pcap frame 2: a V3 notification with its 32-byte digest
    note = one(
        f.s(
            "0300007102f080720300622008c83ace381dfdbc42201789dec03b099172858efb6f3ef2e5e8ecb8bd2546653370000e5104"
            "0000000000c98ec148019200000005000e41aa70aa9200000019000e417e538e920000001a000e41467956920000001b000e"
            "4193eb85000000000072030000"
        )
    )
    assert (note.direction, note.function_name, note.category) == (UNSOLICITED, "notification", READ)
    assert note.fields["integrity"] is True and note.fields["digest_length"] == 32
    req = one(f.c(_s7p_v3(0x31, 0x0542, 9)))
    assert (req.function_name, req.category, req.fields["session_integrity"]) == ("set_multi_variables", WRITE, True)
    # a V1/V2 frame later on the same flow is still part of an integrity-protected session
    v2 = gen.cotp_dt(x("7202000d310000054c000000220000012072020000"))
    assert one(f.c(v2)).fields["session_integrity"] is True


def test_s7comm_plus_fragments_one_event_per_message() -> None:
    f = Flow()
    first = _s7p_v3(0x31, 0x04BB, 3, trailer=False)  # no trailer: a continuation follows
    cont = gen.cotp_dt(b"\x72\x03\x00\x05" + b"\x00" * 5 + b"\x72\x03\x00\x00")
    assert [e.function_name for e in f.c(first)] == ["explore"]
    assert f.c(cont) == []
    assert one(f.c(_s7p_v3(0x31, 0x04BB, 4))).fields["sequence"] == 4
    assert f.stats["s7comm_plus"]["pdus"] == 2


def test_s7comm_plus_keepalive_tls_and_truncation() -> None:
    f = Flow()
    ka = one(f.c(gen.cotp_dt(x("72ff0000"))))
    assert (ka.function_name, ka.category) == ("keep_alive", SESSION)
    tls = one(f.c(gen.cotp_dt(x("160303002a") + bytes(42))))  # after InitSSL: TLS records in COTP
    assert (tls.protocol, tls.function_name) == ("s7comm_plus", "tls_handshake")
    assert f.c(gen.cotp_dt(x("170303000a") + bytes(10))) == []  # application data: counted only
    bad = one(f.c(gen.cotp_dt(x("7201"))))
    assert (bad.result, bad.anomaly) == (MALFORMED, "s7comm_plus_truncated")
    assert f.stats["s7comm_plus"]["func_hist"]["tls"] == 2


def _tpkt_cotp(cotp_hex: str) -> bytes:
    return gen.tpkt(x(cotp_hex))


def test_mms_identification_and_invoke_pairing() -> None:
    f = Flow()  # mixed/iti__8d7c7db0-... frames 23 and 26 (ICCP): identify request / response
    req = one(f.c(_tpkt_cotp("02f08001000100610e300c020103a007a0050201018200")))
    assert (req.protocol, req.function, req.function_name, req.category, req.direction) == (
        "mms",
        2,
        "identify",
        DISCOVERY,
        REQUEST,
    )
    assert req.fields["invoke_id"] == 1
    rsp = one(
        f.s(
            _tpkt_cotp(
                "02f0800100010061393037020103a032a130020101a22b801541524556412054264420436f72706f726174696f6e810b652d74657272"
                "61636f6d6d8205322e332e31"
            )
        )
    )
    assert (rsp.direction, rsp.function_name, rsp.latency) == (RESPONSE, "identify", pytest.approx(0.5))
    assert f.stats["mms"]["pdus"] == 2 and "s7comm" not in f.stats
    assert f.stats["cotp"]["pdus"] == 2


def test_mms_connect_carries_initiate_and_bare_session_spdus() -> None:
    f = Flow()  # same capture, frame 11: session CONNECT -> presentation CP -> ACSE AARQ -> MMS initiate
    cn = one(
        f.c(
            _tpkt_cotp(
                "02f0800dbc0506130100160102140200023302000134020002c1a63181a3a003800101a2819b80020780810400000001820400000002"
                "a423300f0201010604520100013004060251013010020103060528ca220201300406025101880206006160305e020101a059605780"
                "020780a107060528ca220101a20406022902a303020102a60406022901a703020101be32283006025101020103a027a82580027d00"
                "810114820114830104a416800101810305fb00820c036e1d000000000064000198"
            )
        )
    )
    assert (cn.function_name, cn.category, cn.fields["spdu"]) == ("initiate_request", SESSION, "connect")
    fin = one(f.c(gen.cotp_dt(x("0900"))))  # FINISH without user data
    assert (fin.function_name, fin.fields["layer"]) == ("finish", "session")
    assert f.c(gen.cotp_dt(x("5a5a5a5a"))) == []  # neither S7, S7comm-plus nor a session SPDU
    assert f.counters["cotp_unrecognised_payload"] == 1


# ---------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,text",
    [
        ((0x84, 1, 2, 4, 10 << 3), "DB1.DBB10[4]"),
        ((0x84, 1, 1, 1, (0 << 3) | 3), "DB1.DBX0.3"),
        ((0x84, 5, 8, 1, 20 << 3), "DB5.DBD20"),
        ((0x85, 2, 4, 1, 4 << 3), "DI2.DIW4"),
        ((0x81, 0, 1, 1, 0), "I0.0"),
        ((0x83, 0, 2, 1, 100 << 3), "MB100"),
        ((0x82, 0, 4, 2, 6 << 3), "QW6[2]"),
        ((0x1C, 0, 28, 1, 5), "C5"),
        ((0x1D, 0, 29, 3, 7), "T7[3]"),
        ((0x42, 0, 2, 1, 0), "AREA0x42B0"),
    ],
)
def test_s7_object_notation(args: tuple[int, ...], text: str) -> None:
    assert s7_object(*args) == text


def test_decode_values_and_timestamp() -> None:
    assert decode_values(b"\x00\x01\xff\xff", 5, 4) == ([1, -1], False)
    assert decode_values(b"\x7f\xc0\x00\x00", 8, 7) == ("nan", False)  # NaN is not JSON
    assert decode_values(bytes(200), 2, 4)[1] is True  # capped at MAX_VALUES
    assert decode_values(b"\x01\x02\x03", None, 9) == (b"\x01\x02\x03", False)
    assert parse_timestamp(x("00191602081451379162"), 0) == "2016-02-08T14:51:37.916"
    assert parse_timestamp(x("00199a02081451379162"), 0) is None  # not BCD
    assert parse_timestamp(b"\x00" * 5, 0) is None


# ---------------------------------------------------------------------------------------------------
# Real captures against GROUND_TRUTH.json, and the crafted captures
# ---------------------------------------------------------------------------------------------------

# Files where we knowingly count differently (see docs/protocols/s7comm.md, "Where tshark differs").
KNOWN_TCP_DIFFERENCES = {"s7comm/iti__s7comm_clean.pcap", "s7comm/iti__wincc_s300_setup-alarm-read_2.pcapng"}


def test_real_captures_match_ground_truth(shared_pcaps: Path, ground_truth: dict[str, Any]) -> None:
    from sensor.pipeline import Pipeline

    files = [k for k, v in ground_truth.items() if {"s7comm", "cotp"} & set(v.get("protocols", {}))]
    assert len(files) >= 20
    matched = total = 0
    for rel in files:
        res = Pipeline().replay_file(shared_pcaps / rel)
        assert not any(k.endswith("internal_error") or k.startswith("analyzer_error") for k in res.counters), rel
        ours = res.stats.as_ground_truth()
        for proto in ("s7comm", "cotp"):
            truth = ground_truth[rel]["protocols"].get(proto)
            if not truth or not truth["pdus"]:
                assert not ours.get(proto, {}).get("pdus"), (rel, proto)  # no false positives
                continue
            a, b = ours.get(proto, {}).get("pdus", 0), truth["pdus"]
            matched += min(a, b)
            total += max(a, b)
            hist = ours.get(proto, {}).get("func_hist", {})
            norm = {int(k, 16): v for k, v in hist.items()}
            tnorm = {int(k, 16): v for k, v in truth["func_hist"].items()}
            if rel in KNOWN_TCP_DIFFERENCES:
                assert min(a, b) / max(a, b) > 0.99, (rel, proto, a, b)
            else:
                assert (a, norm) == (b, tnorm), (rel, proto)
    assert matched / total > 0.999


def test_crafted_captures(tmp_path: Path) -> None:
    from sensor.pipeline import Pipeline

    paths = gen.main(tmp_path)
    assert all(p.stat().st_size < 100_000 for p in paths)
    seen: dict[str, list[Any]] = {}
    for p in paths:
        events: list[Any] = []
        res = Pipeline(on_event=events.append).replay_file(p)
        assert not [k for k in res.counters if k.startswith(("s7comm", "cotp"))], res.counters
        seen[p.name] = [e for e in events if e.protocol in ("s7comm", "cotp")]
    normal = seen["s7comm_normal.pcap"]
    assert {e.function_name for e in normal} == {
        "connection_request",
        "connection_confirm",
        "setup_communication",
        "read_var",
    }
    assert all(e.result == OK and e.category in (READ, SESSION) for e in normal)
    assert sum(e.function_name == "read_var" for e in normal) == 240
    reads = [e for e in normal if e.function_name == "read_var" and e.direction == RESPONSE]
    assert reads[0].objects == ("DB1.DBB0[20]", "DB1.DBD20", "IB0[2]", "MB100", "Q0.1")
    attack = seen["s7comm_attack.pcap"]
    names = [e.function_name for e in attack if e.direction == REQUEST]
    for expected in (
        "read_szl",
        "list_blocks",
        "plc_password",
        "start_upload",
        "upload",
        "end_upload",
        "write_var",
        "set_clock",
        "plc_stop",
        "request_download",
        "download_block",
        "download_ended",
        "plc_control_insert_block",
        "plc_control_delete_block",
        "plc_control_compress",
        "plc_control_copy_ram_to_rom",
        "plc_control_start",
    ):
        assert expected in names, expected
    szl = {e.fields["szl_id"] for e in attack if e.function_name == "read_szl"}
    assert szl == {"0x0011", "0x001c", "0x0424"}
    assert all(e.src == gen.RECON for e in attack if e.function_name == "read_szl" and e.direction == REQUEST)
    ident = [e.fields["identity"] for e in attack if e.fields and "identity" in e.fields]
    assert {"order_number", "firmware_version"} <= set(ident[0]) and ident[1]["plant_id"] == "WATER-PLANT-PUMPS"
    pw = [e for e in attack if e.function_name == "plc_password" and e.direction == RESPONSE]
    assert [e.result for e in pw] == [EXCEPTION, OK]
    ob1 = {e.function_name for e in attack if e.objects == ("OB1",)}
    assert {
        "start_upload",
        "upload",
        "end_upload",
        "request_download",
        "download_block",
        "plc_control_insert_block",
    } <= ob1
    starts = [
        e.fields["start_mode"] for e in attack if e.function_name == "plc_control_start" and e.direction == REQUEST
    ]
    assert starts == ["hot", "cold"]


# ---------------------------------------------------------------------------------------------------
# Property tests: never raise, never loop, never trip the internal-error guard
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_streams(shared_pcaps: Path) -> list[bytes]:
    """Per-direction TCP payload streams of port-102 flows of the shared captures (scapy, tests only)."""
    from scapy.layers.inet import TCP
    from scapy.utils import PcapReader

    streams: dict[tuple[Any, ...], bytearray] = {}
    folder = shared_pcaps / "s7comm"
    for path in sorted(folder.iterdir()):
        if path.stat().st_size > 400_000:
            continue  # the big ones add nothing new and slow the suite
        with PcapReader(str(path)) as reader:
            for i, pkt in enumerate(reader):
                if i > 400:
                    break
                if TCP in pkt and 102 in (pkt[TCP].sport, pkt[TCP].dport):
                    data = bytes(pkt[TCP].payload)
                    if data:
                        key = (path.name, pkt[TCP].sport, pkt[TCP].dport)
                        buf = streams.setdefault(key, bytearray())
                        if len(buf) < 6000:
                            buf += data
    out = [bytes(v) for v in streams.values() if v]
    assert len(out) >= 15
    return out


def _run(chunks: list[tuple[bool, bytes]]) -> Harness:
    h = Harness(S7commAnalyzer, client=CLIENT, server=SERVER)
    t = 0.0
    for side, data in chunks:
        t += 0.01
        h.analyzer.feed(side, data, t)
    h.analyzer.gap(True, t)
    h.analyzer.close(t)
    assert "s7comm_internal_error" not in h.counters
    for ev in h.events:
        json.dumps(ev.to_dict())  # every event serialises
    return h


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    pos = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in pos + [len(data)]:
        if p > last:
            out.append(data[last:p])
            last = p
    return out


# ICSWATCH_FUZZ_EXAMPLES=200000 turns these into a long fuzz run outside CI (deadline off then).
FUZZ_EXAMPLES = fuzz_examples(250)
PROPERTY = fuzz_settings(250, deadline=400 if FUZZ_EXAMPLES <= 1000 else None)


@PROPERTY
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_raise(chunks: list[tuple[bool, bytes]]) -> None:
    _run(chunks)


S7_PREFIXES = [b"\x32" + bytes((r,)) for r in (1, 2, 3, 4, 7)] + [
    b"\x72\x01",
    b"\x72\x02",
    b"\x72\x03",
    b"\x01\x00\x01\x00",
    b"\x0d\x20",
    b"\x16\x03\x03",
]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(S7_PREFIXES), st.binary(max_size=120), st.booleans(), st.booleans()),
        min_size=1,
        max_size=10,
    )
)
def test_random_s7_bodies_in_valid_framing_never_raise(items: list[tuple[bytes, bytes, bool, bool]]) -> None:
    """Valid TPKT/COTP around random S7 / S7comm-plus / session bodies: reaches the deep parsers."""
    _run([(side, gen.cotp_dt(prefix + body, eot=eot)) for prefix, body, side, eot in items])


@PROPERTY
@given(st.data())
def test_mutated_real_streams_never_raise(real_streams: list[bytes], data: st.DataObject) -> None:
    stream = bytearray(data.draw(st.sampled_from(real_streams)))
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        pos = data.draw(st.integers(0, max(0, len(stream) - 1)))
        if op == "flip" and stream:
            stream[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and stream:
            stream[pos] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x03, 0x32, 0x72]))
        elif op == "cut":
            del stream[pos : pos + data.draw(st.integers(1, 40))]
        elif op == "insert":
            stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "dup":
            stream[pos:pos] = stream[pos : pos + data.draw(st.integers(1, 64))]
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=8))
    side = data.draw(st.booleans())
    _run([(side, c) for c in _chunked(bytes(stream), cuts)])


def test_real_streams_parse_cleanly(real_streams: list[bytes]) -> None:
    """Unmutated, the seeds themselves parse (a sanity check on the fixture and the parser)."""
    events = 0
    for s in real_streams:
        events += len(_run([(True, s)]).events)
    assert events > 100


def test_doc_example() -> None:
    """docs/protocols/s7comm.md's example: its input bytes make exactly its output event."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocols" / "s7comm.md").read_text()
    hex_in = re.search(r"<!-- example-input.*?-->\s*```text\s*(.*?)\s*```", doc, re.DOTALL)
    json_out = re.search(r"<!-- example-output -->\s*```json\s*(.*?)```", doc, re.DOTALL)
    assert hex_in and json_out
    h = Harness(S7commAnalyzer, client=("10.10.1.66", 50002), server=("10.10.1.10", 102))
    h.client(gen.cotp_cr(1, gen.TSAP_PG, gen.TSAP_PLC_PG), 1.0)
    ev = one(h.client(x(hex_in.group(1)), 1767229200.5))
    got = ev.to_dict()
    for key in ("id", "flow_id"):
        got.pop(key)
    assert got == json.loads(json_out.group(1))
