"""Modbus/TCP analyzer (sensor/protocols/modbus.py).

Byte vectors per function code (requests and responses, most from the examples of the MODBUS
Application Protocol Specification V1.1b3, chapter 6), exceptions, UMAS, user-defined and unknown
codes, malformed ADUs, request/response pairing, quantity limits, port and signature dispatch through
the pipeline, and property tests (hypothesis) that random and mutated bytes never raise out of the
analyzer or the pipeline. Addresses are the 0-based wire addresses throughout.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_PCAPS, TcpConv, mbap, require_shared, run_packets
from sensor.protocols._harness import Harness
from sensor.protocols.modbus import ModbusAnalyzer, probe


def h() -> Harness:
    return Harness(ModbusAnalyzer)


def x(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr.replace(" ", ""))


def exchange(request: bytes, response: bytes | None = None, *, tid: int = 1, unit: int = 1) -> tuple[Any, Any, Harness]:
    """One request (ts 10.0) and its response (ts 10.25) through a fresh analyzer: (req event, rsp event, harness)."""
    hh = h()
    (req,) = hh.client(mbap(tid, unit, request), 10.0)
    rsp = None
    if response is not None:
        (rsp,) = hh.server(mbap(tid, unit, response), 10.25)
    return req, rsp, hh


# ---------------------------------------------------------------------------------------------------
# Every public function code, request and response
# ---------------------------------------------------------------------------------------------------
def test_fc1_read_coils() -> None:
    req, rsp, hh = exchange(x("01 0013 0013"), x("01 03 CD6B05"))
    assert (req.function, req.function_name, req.category, req.direction) == (1, "read_coils", "read", "request")
    assert (req.address, req.quantity, req.unit) == (19, 19, 1)
    assert (rsp.function_name, rsp.direction, rsp.address, rsp.quantity) == ("read_coils", "response", 19, 19)
    assert rsp.fields["packed_bits"] == x("CD6B05")  # states stay packed, LSB first
    assert req.result == rsp.result == "ok" and req.anomaly is None and rsp.anomaly is None
    assert hh.stats.pdus["modbus"] == 2 and hh.stats.funcs["modbus"]["1"] == 2


def test_fc2_read_discrete_inputs() -> None:
    req, rsp, _ = exchange(x("02 00C4 0016"), x("02 03 ACDB35"))
    assert (req.function_name, req.address, req.quantity) == ("read_discrete_inputs", 196, 22)
    assert (rsp.address, rsp.quantity, rsp.fields["packed_bits"]) == (196, 22, x("ACDB35"))


def test_fc3_read_holding_registers() -> None:
    req, rsp, _ = exchange(x("03 006B 0003"), x("03 06 022B 0000 0064"))
    assert (req.function_name, req.category, req.address, req.quantity) == ("read_holding_registers", "read", 107, 3)
    assert (rsp.address, rsp.quantity, rsp.values) == (107, 3, (555, 0, 100))


def test_fc4_read_input_registers() -> None:
    req, rsp, _ = exchange(x("04 0008 0001"), x("04 02 000A"))
    assert (req.function_name, req.address, req.quantity) == ("read_input_registers", 8, 1)
    assert (rsp.address, rsp.values) == (8, (10,))


def test_fc5_write_single_coil() -> None:
    req, rsp, _ = exchange(x("05 00AC FF00"), x("05 00AC FF00"))
    assert (req.function_name, req.category, req.address, req.quantity, req.values) == (
        "write_single_coil",
        "write",
        172,
        1,
        (True,),
    )
    assert (rsp.address, rsp.values) == (172, (True,))
    off, _, _ = exchange(x("05 00AC 0000"))
    assert off.values == (False,) and off.anomaly is None


def test_fc6_write_single_register() -> None:
    req, rsp, _ = exchange(x("06 0001 0003"), x("06 0001 0003"))
    assert (req.function_name, req.address, req.quantity, req.values) == ("write_single_register", 1, 1, (3,))
    assert (rsp.address, rsp.values) == (1, (3,))


def test_fc7_read_exception_status() -> None:
    req, rsp, _ = exchange(x("07"), x("07 6D"))
    assert (req.function_name, req.category) == ("read_exception_status", "diagnostic")
    assert rsp.values == (0x6D,)


def test_fc8_diagnostics() -> None:
    req, rsp, _ = exchange(x("08 0000 A537"), x("08 0000 A537"))
    assert (req.function, req.function_name, req.category) == (8, "diagnostics_return_query_data", "diagnostic")
    assert req.fields["sub_function"] == 0 and req.values == (0xA537,)
    assert rsp.function_name == "diagnostics_return_query_data"
    restart, _, _ = exchange(x("08 0001 FF00"))
    assert restart.function_name == "diagnostics_restart_communications_option"
    listen, _, _ = exchange(x("08 0004 0000"))
    assert listen.function_name == "diagnostics_force_listen_only_mode"
    odd, _, _ = exchange(x("08 00C8 0000"))
    assert odd.function_name == "diagnostics_sub-200"


def test_fc11_get_comm_event_counter() -> None:
    req, rsp, _ = exchange(x("0B"), x("0B FFFF 0108"))
    assert (req.function_name, req.category) == ("get_comm_event_counter", "diagnostic")
    assert rsp.values == (0xFFFF, 0x0108)


def test_fc12_get_comm_event_log() -> None:
    req, rsp, _ = exchange(x("0C"), x("0C 08 0000 0108 0121 2000"))
    assert (req.function_name, rsp.function_name) == ("get_comm_event_log", "get_comm_event_log")
    assert req.anomaly is None and rsp.anomaly is None


def test_fc15_write_multiple_coils() -> None:
    req, rsp, _ = exchange(x("0F 0013 000A 02 CD01"), x("0F 0013 000A"))
    assert (req.function_name, req.category, req.address, req.quantity) == ("write_multiple_coils", "write", 19, 10)
    assert req.values == (True, False, True, True, False, False, True, True, True, False)
    assert (rsp.address, rsp.quantity) == (19, 10)


def test_fc16_write_multiple_registers() -> None:
    req, rsp, _ = exchange(x("10 0001 0002 04 000A 0102"), x("10 0001 0002"))
    assert (req.function_name, req.address, req.quantity, req.values) == ("write_multiple_registers", 1, 2, (10, 258))
    assert (rsp.address, rsp.quantity) == (1, 2)


def test_fc17_report_server_id() -> None:
    req, rsp, _ = exchange(x("11"), x("11 04 4243 00 FF"))
    assert (req.function_name, req.category) == ("report_server_id", "discovery")
    assert rsp.fields["server_id"] == "424300" and rsp.fields["run_indicator"] is True


def test_fc20_read_file_record() -> None:
    req, rsp, _ = exchange(
        x("14 0E 06 0004 0001 0002 06 0003 0009 0002"), x("14 0C 05 06 0DFE 0020 05 06 33CD 0040")
    )
    assert (req.function_name, req.category) == ("read_file_record", "read")
    assert req.fields["file_records"] == [(4, 1, 2), (3, 9, 2)]  # (file, record, length)
    assert (req.address, req.quantity) == (1, 2)
    assert rsp.function_name == "read_file_record" and rsp.anomaly is None


def test_fc21_write_file_record() -> None:
    req, rsp, _ = exchange(x("15 0D 06 0004 0007 0003 06AF 04BE 100D"), x("15 0D 06 0004 0007 0003 06AF 04BE 100D"))
    assert (req.function_name, req.category) == ("write_file_record", "write")
    assert req.fields["file_records"] == [(4, 7, 3)]
    assert (req.address, req.quantity) == (7, 3)
    assert rsp.fields["file_records"] == [(4, 7, 3)]


def test_fc22_mask_write_register() -> None:
    req, rsp, _ = exchange(x("16 0004 00F2 0025"), x("16 0004 00F2 0025"))
    assert (req.function_name, req.category, req.address, req.values) == ("mask_write_register", "write", 4, (0xF2, 0x25))
    assert req.fields["and_mask"] == 0xF2 and req.fields["or_mask"] == 0x25
    assert (rsp.address, rsp.values) == (4, (0xF2, 0x25))


def test_fc23_read_write_multiple_registers() -> None:
    req, rsp, _ = exchange(
        x("17 0003 0006 000E 0003 06 00FF 00FF 00FF"), x("17 0C 00FE 0ACD 0001 0003 000D 00FF")
    )
    assert req.function_name == "read_write_multiple_registers"
    assert (req.address, req.quantity, req.values) == (14, 3, (0xFF, 0xFF, 0xFF))  # the write part
    assert req.fields["read_address"] == 3 and req.fields["read_quantity"] == 6
    assert rsp.values == (0xFE, 0xACD, 1, 3, 0xD, 0xFF)


def test_fc23_response_carries_read_address() -> None:
    _, rsp, _ = exchange(x("17 0003 0006 000E 0003 06 00FF 00FF 00FF"), x("17 0C 00FE 0ACD 0001 0003 000D 00FF"))
    assert (rsp.address, rsp.quantity) == (3, 6)


def test_fc24_read_fifo_queue() -> None:
    req, rsp, _ = exchange(x("18 04DE"), x("18 0006 0002 01B8 1284"))
    assert (req.function_name, req.address) == ("read_fifo_queue", 0x04DE)
    assert rsp.values == (0x01B8, 0x1284)


def _device_id_response(objects: list[tuple[int, bytes]], more: int = 0, conformity: int = 0x01) -> bytes:
    body = bytes([0x2B, 0x0E, 0x01, conformity, more, 0x00, len(objects)])
    for obj, value in objects:
        body += bytes([obj, len(value)]) + value
    return body


def test_fc43_mei14_read_device_identification() -> None:
    objects = [(0, b"Schneider Electric"), (1, b"BMX P34 2020"), (2, b"v2.70"), (4, b"Modicon M340"), (0x80, b"x")]
    req, rsp, _ = exchange(x("2B 0E 01 00"), _device_id_response(objects))
    assert (req.function, req.function_name, req.category) == (43, "read_device_identification", "discovery")
    assert req.fields["mei_type"] == 14 and req.fields["read_device_id_code"] == 1 and req.fields["object_id"] == 0
    assert rsp.function_name == "read_device_identification" and rsp.anomaly is None
    ident = rsp.fields["identity"]
    assert ident["vendor_name"] == ident["vendor"] == "Schneider Electric"
    assert ident["product_code"] == "BMX P34 2020"
    assert ident["revision"] == "v2.70"
    assert ident["product_name"] == ident["product"] == "Modicon M340"
    assert ident["object_128"] == "x"
    assert rsp.fields["conformity_level"] == 1 and rsp.fields["more_follows"] is False


def test_fc43_mei14_product_falls_back_to_product_code() -> None:
    _, rsp, _ = exchange(x("2B 0E 01 00"), _device_id_response([(0, b"ACME"), (1, b"PLC-9"), (2, b"1.0")], more=0xFF))
    assert rsp.fields["identity"]["product"] == "PLC-9"
    assert rsp.fields["more_follows"] is True


def test_fc43_mei14_blank_product_name_without_product_code() -> None:
    """Found by the fuzzer: a product name of NULs (blank once stripped) and no product code raised
    KeyError in the parser, so the analyzer's answer was lost. The identity keeps what it has."""
    _, rsp, _ = exchange(x("2B 0E 01 00"), _device_id_response([(0, b"ACME"), (4, b"\x00\x00 ")]))
    assert rsp.anomaly is None
    ident = rsp.fields["identity"]
    assert ident["vendor"] == "ACME" and ident["product_name"] == "" and "product" not in ident
    _, rsp, _ = exchange(x("2B 0E 01 00"), _device_id_response([(1, b""), (4, b"  ")]))
    assert "product" not in rsp.fields["identity"]


def test_fc43_mei13_canopen() -> None:
    req, rsp, _ = exchange(x("2B 0D 00 01 02 03"), x("2B 0D 00 01 02 03"))
    assert req.function_name == rsp.function_name == "canopen_general_reference"
    assert req.fields["mei_type"] == 13


def test_fc43_other_mei_type() -> None:
    req, _, _ = exchange(x("2B 07 00"))
    assert req.function_name == "mei-7"


def test_all_public_codes_named_and_counted() -> None:
    names = {
        1: "read_coils", 2: "read_discrete_inputs", 3: "read_holding_registers", 4: "read_input_registers",
        5: "write_single_coil", 6: "write_single_register", 7: "read_exception_status", 8: "diagnostics",
        11: "get_comm_event_counter", 12: "get_comm_event_log", 15: "write_multiple_coils",
        16: "write_multiple_registers", 17: "report_server_id", 20: "read_file_record", 21: "write_file_record",
        22: "mask_write_register", 23: "read_write_multiple_registers", 24: "read_fifo_queue",
        43: "encapsulated_interface_transport",
    }  # fmt: skip
    hh = h()
    for tid, (fc, name) in enumerate(names.items()):
        (ev,) = hh.client(mbap(tid, 1, bytes([fc])), 1.0)  # bodies empty: named even when malformed
        assert ev.function == fc
        assert ev.function_name.startswith(name if fc not in (8, 43) else "")
    hist = hh.stats.funcs["modbus"]
    assert {k: v for k, v in hist.items() if v} == {str(fc): 1 for fc in names}


# ---------------------------------------------------------------------------------------------------
# Exceptions, vendor, user-defined and unknown codes
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code,name",
    [
        (1, "illegal_function"),
        (2, "illegal_data_address"),
        (3, "illegal_data_value"),
        (4, "server_device_failure"),
        (5, "acknowledge"),
        (6, "server_device_busy"),
        (8, "memory_parity_error"),
        (10, "gateway_path_unavailable"),
        (11, "gateway_target_failed_to_respond"),
        (0x42, "exception-66"),
    ],
)
def test_exception_responses(code: int, name: str) -> None:
    req, rsp, hh = exchange(x("03 006B 0003"), bytes([0x83, code]))
    assert rsp.function == 3 and rsp.function_name == "read_holding_registers"
    assert rsp.result == "exception" and rsp.code == code and rsp.fields["exception"] == name
    assert rsp.anomaly is None
    assert (rsp.address, rsp.quantity) == (107, 3)  # what the failed request asked for
    assert rsp.latency == pytest.approx(0.25)
    assert hh.stats.funcs["modbus"]["3"] == 2  # tshark counts the code with the exception bit cleared


@pytest.mark.parametrize(
    "umas,name,category",
    [
        (0x40, "umas_start_plc", "control"),
        (0x41, "umas_stop_plc", "control"),
        (0x30, "umas_initialize_upload", "program"),
        (0x31, "umas_upload_block", "program"),
        (0x32, "umas_end_strategy_upload", "program"),
        (0x33, "umas_initialize_download", "program"),
        (0x34, "umas_download_block", "program"),
        (0x35, "umas_end_strategy_download", "program"),
        (0x10, "umas_take_plc_reservation", "program"),
        (0x02, "umas_read_id", "discovery"),
        (0x99, "umas_umas-0x99", "other"),
    ],
)
def test_umas_fc90(umas: int, name: str, category: str) -> None:
    req, rsp, _ = exchange(bytes([0x5A, 0x00, umas, 0xFF, 0x00]), x("5A 00 FE"))
    assert req.function == 90 and req.function_name == name and req.category == category
    assert req.fields["umas_function"] == umas and req.fields["umas_session"] == 0
    assert rsp.function_name == "umas_response_ok"


@pytest.mark.parametrize("fc", [65, 66, 72, 100, 105, 110])
def test_user_defined_codes(fc: int) -> None:
    req, rsp, hh = exchange(bytes([fc, 1, 2, 3]), bytes([fc, 9]))
    assert req.function == fc and req.function_name == f"user_defined-{fc}"
    assert rsp.function_name == f"user_defined-{fc}" and rsp.anomaly is None
    assert hh.stats.funcs["modbus"][str(fc)] == 2


@pytest.mark.parametrize("fc", [0, 9, 10, 13, 14, 18, 19, 25, 42, 50, 64, 73, 99, 111, 127])
def test_unknown_codes(fc: int) -> None:
    req, rsp, hh = exchange(bytes([fc, 0xAA]), bytes([fc | 0x80, 0x01]))
    assert req.function == fc and req.function_name == f"unknown-{fc}" and req.category == "other"
    assert rsp.function == fc and rsp.result == "exception" and rsp.fields["exception"] == "illegal_function"
    assert hh.stats.funcs["modbus"][str(fc)] == 2


# ---------------------------------------------------------------------------------------------------
# Malformed ADUs: an event of their own, a named anomaly, a counter
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "from_client,pdu,anomaly",
    [
        (True, x("03 0000 01"), "modbus_bad_request_length"),
        (True, x("03 0000 0001 00"), "modbus_bad_request_length"),
        (True, x("01 0000"), "modbus_bad_request_length"),
        (True, x("05 0001 1234"), "modbus_bad_coil_value"),
        (True, x("06 0001"), "modbus_bad_request_length"),
        (True, x("07 00"), "modbus_bad_request_length"),
        (True, x("08 00"), "modbus_bad_request_length"),
        (True, x("0F 0013 000A 03 CD01"), "modbus_bad_byte_count"),
        (True, x("10 0001 0002 03 000A01"), "modbus_bad_byte_count"),
        (True, x("10 0001"), "modbus_bad_request_length"),
        (True, x("14 07 07 0004 0001 0002"), "modbus_bad_reference_type"),
        (True, x("14 09 06 0004"), "modbus_bad_byte_count"),
        (True, x("16 0004 00F2"), "modbus_bad_request_length"),
        (True, x("17 0003 0006 000E 0003 04 00FF 00FF"), "modbus_bad_byte_count"),
        (True, x("18"), "modbus_bad_request_length"),
        (True, x("2B"), "modbus_bad_request_length"),
        (True, x("2B 0E 01"), "modbus_bad_request_length"),
        (True, x("5A 00"), "modbus_umas_truncated"),
        (False, x("03 05 0001 0002"), "modbus_bad_byte_count"),
        (False, x("01 02 FF"), "modbus_bad_byte_count"),
        (False, x("06 0001 00"), "modbus_bad_response_length"),
        (False, x("10 0001"), "modbus_bad_response_length"),
        (False, x("17 03 0001"), "modbus_bad_byte_count"),
        (False, x("2B 0E 01 01 00"), "modbus_bad_response_length"),
        (False, x("2B 0E 01 01 00 00 02 00 05 41 42"), "modbus_bad_device_id_object"),
        (False, x("83 02 00"), "modbus_bad_exception_length"),
        (False, x("83"), "modbus_bad_exception_length"),
    ],
)
def test_malformed_pdus(from_client: bool, pdu: bytes, anomaly: str) -> None:
    hh = h()
    (ev,) = (hh.client if from_client else hh.server)(mbap(3, 1, pdu))
    assert ev.anomaly == anomaly
    assert ev.result in ("malformed", "exception")
    assert ev.function == pdu[0] & 0x7F
    assert hh.counters[anomaly] == 1
    json.dumps(ev.to_dict())


@pytest.mark.parametrize(
    "adu",
    [
        mbap(1, 1, x("03 0000 0001"), pid=1),  # protocol id must be 0
        mbap(1, 1, x("03 0000 0001"), length=1),  # shorter than unit + function code
        mbap(1, 1, x("03 0000 0001"), length=5000),  # beyond any ADU
        b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n",
    ],
    ids=["protocol-id", "length-1", "length-5000", "http"],
)
def test_bad_mbap_is_an_event(adu: bytes) -> None:
    hh = h()
    evs = hh.client(adu)
    assert len(evs) == 1
    ev = evs[0]
    assert (ev.function, ev.function_name, ev.result, ev.anomaly) == (-1, "malformed", "malformed", "modbus_bad_mbap")
    assert hh.counters["modbus_bad_framing"] == 1
    assert hh.stats.pdus["modbus"] == 0
    # the analyzer resynchronises on the next segment
    (ok,) = hh.client(mbap(2, 1, x("03 0000 0001")))
    assert ok.function == 3 and ok.anomaly is None


def test_oversized_adu_counted_still_parsed() -> None:
    hh = h()
    (ev,) = hh.client(mbap(1, 1, bytes([0x5A, 0x00, 0x31]) + b"\x00" * 251))  # 261 bytes: UMAS download
    assert ev.function_name == "umas_upload_block"
    assert hh.counters["modbus_oversized_adu"] == 1


def test_partial_adu_lost_on_gap_and_truncated_at_close() -> None:
    hh = h()
    hh.client(mbap(1, 1, x("03 0000 0001"))[:5])
    hh.analyzer.gap(True, 2.0)
    assert hh.counters["modbus_partial_pdu_lost"] == 1
    (ev,) = hh.client(mbap(2, 1, x("03 0000 0001")))
    assert ev.fields["transaction_id"] == 2
    hh.server(mbap(2, 1, x("03 02"))[:8])
    hh.analyzer.close(3.0)
    assert hh.counters["modbus_truncated_at_close"] == 1


# ---------------------------------------------------------------------------------------------------
# Pairing, latency, addresses
# ---------------------------------------------------------------------------------------------------
def test_pairing_by_unit_and_transaction_id() -> None:
    hh = h()
    hh.client(mbap(7, 1, x("03 0064 0002")), 1.0)
    hh.client(mbap(7, 2, x("03 00C8 0001")), 1.1)  # same transaction id, other unit
    hh.client(mbap(8, 1, x("04 0010 0001")), 1.2)
    r3, = hh.server(mbap(8, 1, x("04 02 0003")), 1.5)
    r2, = hh.server(mbap(7, 2, x("03 02 0002")), 1.6)
    r1, = hh.server(mbap(7, 1, x("03 04 0001 0001")), 1.7)
    assert (r1.unit, r1.address, r1.quantity, r1.values) == (1, 100, 2, (1, 1))
    assert (r2.unit, r2.address, r2.quantity) == (2, 200, 1)
    assert (r3.function, r3.address) == (4, 16)
    assert r1.latency == pytest.approx(0.7) and r2.latency == pytest.approx(0.5) and r3.latency == pytest.approx(0.3)
    assert hh.counters["modbus_unpaired_response"] == 0


def test_unpaired_and_mismatched_responses_counted() -> None:
    hh = h()
    (lone,) = hh.server(mbap(1, 1, x("03 02 0001")), 1.0)
    assert lone.latency is None and lone.address is None and lone.values == (1,)
    assert hh.counters["modbus_unpaired_response"] == 1
    hh.client(mbap(2, 1, x("03 0000 0001")), 2.0)
    (odd,) = hh.server(mbap(2, 1, x("04 02 0001")), 2.1)
    assert odd.latency == pytest.approx(0.1)
    assert hh.counters["modbus_response_function_mismatch"] == 1
    (again,) = hh.server(mbap(2, 1, x("03 02 0001")), 2.2)  # a duplicate answer: the request was used
    assert again.latency is None


def test_pending_requests_bounded() -> None:
    hh = h()
    for tid in range(600):
        hh.client(mbap(tid, 1, x("03 0000 0001")), 1.0)
    assert hh.counters["modbus_pending_overflow"] >= 1
    (rsp,) = hh.server(mbap(599, 1, x("03 02 0001")), 2.0)
    assert rsp.latency == pytest.approx(1.0)


def test_addresses_are_zero_based_wire_addresses() -> None:
    req, rsp, _ = exchange(x("03 0000 0001"), x("03 02 1234"))  # "40001" in a vendor manual
    assert req.address == 0 and rsp.address == 0
    assert req.to_dict()["address"] == 0 and rsp.to_dict()["address"] == 0
    top, _, _ = exchange(x("06 FFFF 0001"))
    assert top.address == 65535


def test_event_carries_flow_addresses() -> None:
    req, rsp, _ = exchange(x("03 0000 0001"), x("03 02 0001"))
    assert (req.src, req.sport, req.dst, req.dport, req.transport) == ("10.0.0.1", 40000, "10.0.0.2", 502, "tcp")
    assert (rsp.src, rsp.sport, rsp.dst, rsp.dport) == ("10.0.0.2", 502, "10.0.0.1", 40000)
    d = req.to_dict()
    assert d["protocol"] == "modbus" and d["fields"]["transaction_id"] == 1
    json.dumps(d)


# ---------------------------------------------------------------------------------------------------
# Quantity limits (spec 6.1-6.4, 6.11, 6.12, 6.17)
# ---------------------------------------------------------------------------------------------------
def _read(fc: int, qty: int) -> bytes:
    return struct.pack("!BHH", fc, 0, qty)


def _write_coils(qty: int) -> bytes:
    n = (qty + 7) // 8
    return struct.pack("!BHHB", 15, 0, qty, n) + b"\xff" * n


def _write_regs(qty: int) -> bytes:
    return struct.pack("!BHHB", 16, 0, qty, 2 * qty) + b"\x00\x01" * qty


def _read_write(rqty: int, wqty: int) -> bytes:
    return struct.pack("!BHHHHB", 23, 0, rqty, 10, wqty, 2 * wqty) + b"\x00\x02" * wqty


@pytest.mark.parametrize(
    "pdu,flagged",
    [
        (_read(1, 2000), False),
        (_read(1, 2001), True),
        (_read(1, 0), True),
        (_read(2, 2000), False),
        (_read(2, 2001), True),
        (_read(3, 125), False),
        (_read(3, 126), True),
        (_read(3, 0), True),
        (_read(4, 125), False),
        (_read(4, 126), True),
        (_write_coils(1968), False),
        (_write_coils(1969), True),
        (_write_regs(123), False),
        (_write_regs(124), True),
        (_read_write(125, 121), False),
        (_read_write(126, 1), True),
        (_read_write(1, 122), True),
    ],
    ids=lambda v: v.hex()[:10] if isinstance(v, bytes) else str(v),
)
def test_quantity_limits(pdu: bytes, flagged: bool) -> None:
    (ev,) = h().client(mbap(1, 1, pdu))
    if flagged:
        # reads: modbus_quantity_out_of_range; writes: checked with the byte count
        assert ev.anomaly in ("modbus_quantity_out_of_range", "modbus_bad_byte_count")
        assert ev.result == "malformed"
    else:
        assert ev.anomaly is None and ev.result == "ok"
    assert ev.quantity == struct.unpack_from("!H", pdu, 3 if pdu[0] != 23 else 7)[0]


# ---------------------------------------------------------------------------------------------------
# Segmentation inside the analyzer (any split of the byte stream gives the same events)
# ---------------------------------------------------------------------------------------------------
STREAM = b"".join(
    [
        mbap(1, 1, x("03 006B 0003")),
        mbap(2, 1, x("10 0001 0002 04 000A 0102")),
        mbap(3, 1, x("2B 0E 01 00")),
        mbap(4, 1, x("5A 00 40 FF 00")),
    ]
)


def _summary(events: list[Any]) -> list[tuple]:
    return [(e.function, e.function_name, e.address, e.quantity, e.values, e.anomaly) for e in events]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 11, 13, 50])
def test_any_split_same_events(step: int) -> None:
    whole = h()
    whole.client(STREAM)
    split = h()
    for i in range(0, len(STREAM), step):
        split.client(STREAM[i : i + step])
    assert _summary(split.events) == _summary(whole.events)
    assert len(whole.events) == 4


# ---------------------------------------------------------------------------------------------------
# Dispatch: port and payload signature, through the pipeline
# ---------------------------------------------------------------------------------------------------
def test_probe() -> None:
    assert probe(mbap(1, 1, x("03 0000 0001")), True)
    assert probe(mbap(1, 1, x("03 0000 0001")) + mbap(2, 1, x("03 0000 0001")), True)
    assert probe(mbap(1, 1, x("83 02")), False)
    assert not probe(mbap(1, 1, x("03 0000 0001"), pid=7), True)
    assert not probe(mbap(1, 1, x("03 0000 0001"), length=40), True)  # length beyond the segment
    assert not probe(mbap(1, 1, x("03 0000 0001")) + b"junk", True)
    assert not probe(mbap(1, 1, x("32 0000")), True)  # not a known function
    assert not probe(b"GET / HTTP/1.1\r\n\r\n", True)
    assert not probe(b"\x00" * 4, True)


@pytest.mark.parametrize("handshake", [True, False])
def test_modbus_found_on_non_standard_port(handshake: bool) -> None:
    conv = TcpConv(sport=5020)
    if handshake:
        conv.handshake()
    conv.c(mbap(1, 1, x("03 006B 0003")))
    conv.s(mbap(1, 1, x("03 06 022B 0000 0064")))
    conv.c(mbap(2, 1, x("06 0001 0003")))
    conv.s(mbap(2, 1, x("06 0001 0003")))
    result, events = run_packets(conv.frames)
    mb = [e for e in events if e.protocol == "modbus"]
    assert [(e.direction, e.function, e.dport if e.direction == "request" else e.sport) for e in mb] == [
        ("request", 3, 5020),
        ("response", 3, 5020),
        ("request", 6, 5020),
        ("response", 6, 5020),
    ]
    assert mb[1].values == (555, 0, 100) and mb[1].address == 107
    assert result.counters["flows_identified_by_signature"] == 1
    assert result.stats.pdus["modbus"] == 4


def test_non_modbus_on_port_502_counted_not_crashed() -> None:
    conv = TcpConv()
    conv.handshake()
    conv.c(b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n")
    conv.s(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    conv.c(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40)  # a TLS hello
    result, events = run_packets(conv.frames)
    assert result.stats.pdus.get("modbus", 0) == 0
    assert result.counters["modbus_bad_framing"] == 3
    assert not [k for k in result.counters if k.startswith("analyzer_error")]
    assert [e.anomaly for e in events if e.protocol == "modbus"] == ["modbus_bad_mbap"] * 3


def test_non_modbus_on_unknown_port_not_claimed() -> None:
    conv = TcpConv(sport=8080)
    conv.handshake()
    for i in range(6):
        conv.c(b"GET /%d HTTP/1.1\r\n\r\n" % i)
    result, events = run_packets(conv.frames)
    assert not [e for e in events if e.protocol == "modbus"]
    assert result.counters["flows_unidentified"] == 1


def test_ground_truth_shape_has_only_seen_functions() -> None:
    _, _, hh = exchange(x("03 0000 0001"), x("03 02 0001"))
    assert hh.stats.as_ground_truth() == {"modbus": {"pdus": 2, "func_hist": {"3": 2}}}


# ---------------------------------------------------------------------------------------------------
# Property tests: random and mutated bytes never raise, never loop
# ---------------------------------------------------------------------------------------------------
def _load_real_payloads() -> list[bytes]:
    """TCP payloads to/from port 502 in the shared Modbus captures, up to 25 per function code."""
    require_shared()
    from sensor.capture import CaptureReader
    from sensor.counters import Counters
    from sensor.decode import Decoder, parse_tcp

    by_fc: dict[int, set[bytes]] = defaultdict(set)
    for path in sorted((SHARED_PCAPS / "modbus").iterdir()):
        decoder = Decoder(Counters())
        with CaptureReader(path) as reader:
            for _ts, lt, data, _orig in reader:
                d = decoder.decode(lt, data)
                if d is None or d.proto != 6:
                    continue
                t = parse_tcp(d.l4)
                if t is None or not t[5] or 502 not in (t[0], t[1]):
                    continue
                payload = bytes(t[5])
                key = payload[7] if len(payload) > 7 else -1
                if len(by_fc[key]) < 25:
                    by_fc[key].add(payload)
    out = sorted(p for group in by_fc.values() for p in group)
    assert len(out) > 200, "too few Modbus payloads found in the shared captures"
    return out


@pytest.fixture(scope="module")
def real_payloads() -> list[bytes]:
    return _load_real_payloads()


def _check_events(hh: Harness) -> None:
    for ev in hh.events:
        assert ev.protocol == "modbus"
        assert ev.direction in ("request", "response")
        assert ev.result in ("ok", "exception", "malformed")
        assert -1 <= ev.function <= 127
        json.dumps(ev.to_dict())


@st.composite
def mutated(draw: st.DrawFn, payloads: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(payloads)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "dup", "length"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 4))]
        elif op == "dup":
            data += data[i:]
        elif op == "length" and len(data) >= 6:
            data[4:6] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    return bytes(data)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.timeout(120)
@FUZZ
@given(chunks=st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_random_bytes_never_raise(chunks: list[tuple[bool, bytes]]) -> None:
    hh = h()
    for i, (from_client, data) in enumerate(chunks):
        hh.analyzer.feed(from_client, data, float(i))
        if i % 5 == 4:
            hh.analyzer.gap(from_client, float(i))
    hh.analyzer.close(99.0)
    _check_events(hh)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_random_mbap_shaped_bytes_never_raise(data: st.DataObject) -> None:
    # Random PDUs behind a valid MBAP header get past framing and into every function decoder.
    hh = h()
    for i in range(data.draw(st.integers(1, 8))):
        fc = data.draw(st.integers(0, 255))
        body = data.draw(st.binary(max_size=60))
        hh.analyzer.feed(data.draw(st.booleans()), mbap(data.draw(st.integers(0, 3)), 1, bytes([fc]) + body), float(i))
    _check_events(hh)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.data())
def test_mutated_real_payloads_never_raise(real_payloads: list[bytes], data: st.DataObject) -> None:
    hh = h()
    for i in range(data.draw(st.integers(1, 6))):
        payload = data.draw(mutated(real_payloads))
        cut = data.draw(st.integers(0, len(payload)))
        from_client = data.draw(st.booleans())
        hh.analyzer.feed(from_client, payload[:cut], float(i))
        hh.analyzer.feed(from_client, payload[cut:], float(i))
    hh.analyzer.close(99.0)
    _check_events(hh)


@pytest.mark.timeout(120)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_payloads_through_the_pipeline(real_payloads: list[bytes], data: st.DataObject) -> None:
    # Real and mutated payloads as TCP segments on 502 and on an unknown port, in any order and with
    # arbitrary sequence numbers: the pipeline never raises and no analyzer error is caught.
    port = data.draw(st.sampled_from([502, 5020]))
    conv = TcpConv(sport=port)
    if data.draw(st.booleans()):
        conv.handshake()
    for _ in range(data.draw(st.integers(1, 8))):
        if data.draw(st.booleans()):
            payload = data.draw(mutated(real_payloads))
        else:
            payload = data.draw(st.sampled_from(real_payloads))
        from_client = data.draw(st.booleans())
        jitter = data.draw(st.sampled_from([0, 0, 0, -3, 5, 1 << 30]))
        seq = ((conv.seq_c if from_client else conv.seq_s) + jitter) & 0xFFFFFFFF
        conv.send(from_client, payload, seq=seq, advance=True)
    if data.draw(st.booleans()):
        conv.fin()
    result, events = run_packets(conv.frames)
    assert not [k for k in result.counters if k.startswith("analyzer_error")], dict(result.counters)
    for ev in events:
        json.dumps(ev.to_dict())


def test_real_payload_loader_reads_shared_captures(real_payloads: list[bytes]) -> None:
    fcs = {p[7] & 0x7F for p in real_payloads if len(p) > 7}
    assert {1, 2, 3, 4, 5, 6, 15, 16, 43, 90} <= fcs
    assert Path(SHARED_PCAPS / "modbus").is_dir()
