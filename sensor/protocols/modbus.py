"""Modbus/TCP (MODBUS Application Protocol Specification V1.1b3; MODBUS Messaging on TCP/IP
Implementation Guide V1.0b).

Wire format: a 7-byte MBAP header (transaction id, protocol id = 0, length = bytes that follow,
unit id) then the PDU (function code + data). One TCP segment may carry several ADUs and one ADU may
span segments; ``FramedStreamAnalyzer`` handles both.

Every public function code is decoded (1-8, 11, 12, 15-17, 20-24, 43 with MEI 13/14) with addresses,
quantities and written values; exception responses (function | 0x80) with their code; user-defined
codes (65-72, 100-110) and vendor codes (90 = Schneider UMAS) recognised and named. Responses are
paired with their request by (unit, transaction id), which gives latency and lets a read response
carry the address it answers.

Addresses are the 0-based wire addresses (spec section 4.4); "register 40001" in a vendor manual is
address 0 here.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Any

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
    WRITE,
    IcsEvent,
)
from sensor.protocols.base import MAX_LATENCY, FramedStreamAnalyzer, ProtocolSpec, Session

_MBAP = struct.Struct("!HHHB")
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
_U16X3 = struct.Struct("!HHH")
_U16X4 = struct.Struct("!HHHH")

MAX_ADU = 260  # spec 4.1: 253-byte PDU + MBAP
# Framing accepts longer ADUs (Schneider UMAS sends 261-byte ADUs) up to this bound, counting them as
# ``modbus_oversized_adu``; beyond it the length field is taken as garbage.
MAX_FRAMED_ADU = 2048
MAX_PENDING = 512  # outstanding requests remembered per flow for pairing

# function code -> (name, category)
FUNCTIONS: dict[int, tuple[str, str]] = {
    1: ("read_coils", READ),
    2: ("read_discrete_inputs", READ),
    3: ("read_holding_registers", READ),
    4: ("read_input_registers", READ),
    5: ("write_single_coil", WRITE),
    6: ("write_single_register", WRITE),
    7: ("read_exception_status", DIAGNOSTIC),
    8: ("diagnostics", DIAGNOSTIC),
    11: ("get_comm_event_counter", DIAGNOSTIC),
    12: ("get_comm_event_log", DIAGNOSTIC),
    15: ("write_multiple_coils", WRITE),
    16: ("write_multiple_registers", WRITE),
    17: ("report_server_id", DISCOVERY),
    20: ("read_file_record", READ),
    21: ("write_file_record", WRITE),
    22: ("mask_write_register", WRITE),
    23: ("read_write_multiple_registers", WRITE),
    24: ("read_fifo_queue", READ),
    43: ("encapsulated_interface_transport", OTHER),
    90: ("umas", PROGRAM),  # Schneider Electric UMAS (Unity), refined by the UMAS function below
}
for _fc in (*range(65, 73), *range(100, 111)):
    FUNCTIONS.setdefault(_fc, (f"user_defined-{_fc}", OTHER))

EXCEPTIONS = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_failed_to_respond",
}

# FC 8 sub-functions (spec 6.8)
DIAG_SUBFUNCTIONS = {
    0: "return_query_data",
    1: "restart_communications_option",
    2: "return_diagnostic_register",
    3: "change_ascii_input_delimiter",
    4: "force_listen_only_mode",
    10: "clear_counters_and_diagnostic_register",
    11: "return_bus_message_count",
    12: "return_bus_communication_error_count",
    13: "return_bus_exception_error_count",
    14: "return_server_message_count",
    15: "return_server_no_response_count",
    16: "return_server_nak_count",
    17: "return_server_busy_count",
    18: "return_bus_character_overrun_count",
    20: "clear_overrun_counter_and_flag",
}

# FC 43 MEI types (spec 6.19-6.21)
MEI_TYPES = {13: "canopen_general_reference", 14: "read_device_identification"}
DEVICE_ID_OBJECTS = {
    0: "vendor_name",
    1: "product_code",
    2: "revision",
    3: "vendor_url",
    4: "product_name",
    5: "model_name",
    6: "user_application_name",
}

# Schneider UMAS function codes (FC 90), from public research (Kaspersky ICS CERT, "The secrets of
# Schneider's UMAS protocol", 2019; Liberatore & Al-Duwairi, 2019). In UMAS terms "upload" is
# engineering station -> PLC and "download" is PLC -> engineering station.
UMAS_FUNCTIONS: dict[int, tuple[str, str]] = {
    0x01: ("init_comm", DISCOVERY),
    0x02: ("read_id", DISCOVERY),
    0x03: ("read_project_info", DISCOVERY),
    0x04: ("read_plc_info", DISCOVERY),
    0x06: ("read_card_info", DISCOVERY),
    0x0A: ("repeat", OTHER),
    0x10: ("take_plc_reservation", PROGRAM),
    0x11: ("release_plc_reservation", PROGRAM),
    0x12: ("keep_alive", OTHER),
    0x20: ("read_memory_block", READ),
    0x22: ("read_variables", READ),
    0x23: ("write_variables", WRITE),
    0x24: ("read_coils_registers", READ),
    0x25: ("write_coils_registers", WRITE),
    0x30: ("initialize_upload", PROGRAM),
    0x31: ("upload_block", PROGRAM),
    0x32: ("end_strategy_upload", PROGRAM),
    0x33: ("initialize_download", PROGRAM),
    0x34: ("download_block", PROGRAM),
    0x35: ("end_strategy_download", PROGRAM),
    0x39: ("read_eth_master_data", READ),
    0x40: ("start_plc", CONTROL),
    0x41: ("stop_plc", CONTROL),
    0x50: ("monitor_plc", READ),
    0x58: ("check_plc", DIAGNOSTIC),
    0x70: ("read_io_object", READ),
    0x71: ("write_io_object", WRITE),
    0x73: ("get_status_module", DIAGNOSTIC),
    0xFD: ("response_error", OTHER),
    0xFE: ("response_ok", OTHER),
}

_NAMES = {fc: FUNCTIONS.get(fc, (f"unknown-{fc}", OTHER)) for fc in range(128)}


# byte -> its 8 bits, LSB first (coil/discrete packing, spec 6.1): unpacking is then C-level iteration
_BYTE_BITS = [tuple(bool(b >> i & 1) for i in range(8)) for b in range(256)]


def _bits(data: bytes | memoryview, off: int, count: int) -> tuple[bool, ...]:
    """Unpack ``count`` coil/discrete bits (LSB first) from data[off:]."""
    nbytes = min((count + 7) >> 3, len(data) - off)
    if nbytes <= 0:
        return ()
    return tuple(chain.from_iterable(map(_BYTE_BITS.__getitem__, bytes(data[off : off + nbytes]))))[:count]


# precompiled "!nH" unpackers for every register count a PDU can hold (253-byte PDU: up to 126)
_REG_STRUCTS = [struct.Struct(f"!{n}H").unpack_from for n in range(128)]


def _regs(data: bytes | memoryview, off: int, count: int) -> tuple[int, ...]:
    count = min(count, (len(data) - off) // 2)
    if count <= 0:
        return ()
    if count < len(_REG_STRUCTS):
        return _REG_STRUCTS[count](data, off)
    return struct.unpack_from(f"!{count}H", data, off)


class _Parsed:
    """What a PDU decoder found; turned into an IcsEvent by the analyzer."""

    __slots__ = ("address", "quantity", "values", "fields", "anomaly", "name", "category")

    def __init__(self) -> None:
        self.address: int | None = None
        self.quantity: int | None = None
        self.values: tuple[Any, ...] | None = None
        self.fields: dict[str, Any] | None = None
        self.anomaly: str | None = None
        self.name: str | None = None  # overrides the function name (FC 8, 43, 90)
        self.category: str | None = None


def parse_request(fc: int, d: memoryview | bytes, p: _Parsed) -> None:
    """Decode a request PDU body ``d`` (after the function code). Sets ``p.anomaly`` when malformed."""
    n = len(d)
    if fc in (1, 2, 3, 4):
        if n != 4:
            p.anomaly = "modbus_bad_request_length"
            return
        p.address, p.quantity = _U16X2.unpack_from(d, 0)
        limit = 2000 if fc <= 2 else 125
        if not 1 <= p.quantity <= limit:
            p.anomaly = "modbus_quantity_out_of_range"
    elif fc == 5:
        if n != 4:
            p.anomaly = "modbus_bad_request_length"
            return
        p.address, value = _U16X2.unpack_from(d, 0)
        p.quantity = 1
        if value not in (0xFF00, 0x0000):
            p.anomaly = "modbus_bad_coil_value"
        p.values = (value == 0xFF00,)
    elif fc == 6:
        if n != 4:
            p.anomaly = "modbus_bad_request_length"
            return
        p.address, value = _U16X2.unpack_from(d, 0)
        p.quantity = 1
        p.values = (value,)
    elif fc == 15 or fc == 16:
        if n < 5:
            p.anomaly = "modbus_bad_request_length"
            return
        p.address, p.quantity = _U16X2.unpack_from(d, 0)
        bc = d[4]
        limit = 1968 if fc == 15 else 123
        expect = (p.quantity + 7) // 8 if fc == 15 else p.quantity * 2
        if not 1 <= p.quantity <= limit:
            p.anomaly = "modbus_quantity_out_of_range"
        elif bc != expect or n != 5 + bc:
            p.anomaly = "modbus_bad_byte_count"
        p.values = _bits(d, 5, p.quantity) if fc == 15 else _regs(d, 5, p.quantity)
    elif fc == 8:
        if n < 2:
            p.anomaly = "modbus_bad_request_length"
            return
        (sub,) = _U16.unpack_from(d, 0)
        p.fields = {"sub_function": sub}
        p.name = "diagnostics_" + DIAG_SUBFUNCTIONS.get(sub, f"sub-{sub}")
        if n >= 4:
            p.values = _regs(d, 2, (n - 2) // 2)
    elif fc == 22:
        if n != 6:
            p.anomaly = "modbus_bad_request_length"
            return
        p.address, and_mask, or_mask = _U16X3.unpack_from(d, 0)
        p.quantity = 1
        p.values = (and_mask, or_mask)
        p.fields = {"and_mask": and_mask, "or_mask": or_mask}
    elif fc == 23:
        if n < 9:
            p.anomaly = "modbus_bad_request_length"
            return
        raddr, rqty, waddr, wqty = _U16X4.unpack_from(d, 0)
        bc = d[8]
        p.address, p.quantity = waddr, wqty
        p.values = _regs(d, 9, wqty)
        p.fields = {"read_address": raddr, "read_quantity": rqty}
        if bc != wqty * 2 or n != 9 + bc or not 1 <= rqty <= 125 or not 1 <= wqty <= 121:
            p.anomaly = "modbus_bad_byte_count"
    elif fc == 24:
        if n != 2:
            p.anomaly = "modbus_bad_request_length"
            return
        (p.address,) = _U16.unpack_from(d, 0)
    elif fc == 20 or fc == 21:
        _file_records(fc, d, p, request=True)
    elif fc == 43:
        _mei(d, p, request=True)
    elif fc == 90:
        _umas(d, p)
    elif fc in (7, 11, 12, 17):
        if n:
            p.anomaly = "modbus_bad_request_length"


def parse_response(fc: int, d: memoryview | bytes, p: _Parsed, req: tuple | None) -> None:
    """Decode a normal response body. ``req`` is the paired request (fc, address, quantity) if any."""
    n = len(d)
    if fc in (1, 2, 3, 4):
        if n < 1 or d[0] != n - 1:
            p.anomaly = "modbus_bad_byte_count"
            return
        if req is not None:
            p.address, p.quantity = req[1], req[2]
        if fc <= 2:
            # Coil/discrete states read back stay packed (LSB first, spec 6.1/6.2): up to 2000 bits per
            # response, and nothing downstream needs them one by one. Written coils are unpacked.
            p.fields = {"packed_bits": bytes(d[1:])}
        else:
            p.values = _regs(d, 1, (n - 1) // 2)
    elif fc in (5, 6):
        if n != 4:
            p.anomaly = "modbus_bad_response_length"
            return
        p.address, value = _U16X2.unpack_from(d, 0)
        p.quantity = 1
        p.values = (value == 0xFF00,) if fc == 5 else (value,)
    elif fc in (15, 16):
        if n != 4:
            p.anomaly = "modbus_bad_response_length"
            return
        p.address, p.quantity = _U16X2.unpack_from(d, 0)
    elif fc == 8:
        if n >= 2:
            (sub,) = _U16.unpack_from(d, 0)
            p.fields = {"sub_function": sub}
            p.name = "diagnostics_" + DIAG_SUBFUNCTIONS.get(sub, f"sub-{sub}")
    elif fc == 7:
        if n == 1:
            p.values = (d[0],)
    elif fc == 11:
        if n == 4:
            p.values = _U16X2.unpack_from(d, 0)
    elif fc == 22:
        if n == 6:
            p.address, and_mask, or_mask = _U16X3.unpack_from(d, 0)
            p.values = (and_mask, or_mask)
    elif fc == 23:
        if n < 1 or d[0] != n - 1:
            p.anomaly = "modbus_bad_byte_count"
            return
        if req is not None:
            p.address, p.quantity = req[1], req[2]
        p.values = _regs(d, 1, (n - 1) // 2)
    elif fc == 24:
        if n >= 4:
            _bc, count = _U16X2.unpack_from(d, 0)
            p.values = _regs(d, 4, count)
    elif fc == 17:
        if n >= 1 and d[0] == n - 1 and n >= 3:
            run = d[n - 1] if n >= 3 else None
            p.fields = {"server_id": bytes(d[1 : n - 1]).hex(), "run_indicator": run == 0xFF}
    elif fc == 20 or fc == 21:
        _file_records(fc, d, p, request=False)
    elif fc == 43:
        _mei(d, p, request=False)
    elif fc == 90:
        _umas(d, p)


def _file_records(fc: int, d: memoryview | bytes, p: _Parsed, request: bool) -> None:
    """FC 20/21 sub-requests: (reference type 6, file number, record number, length)."""
    n = len(d)
    if n < 1 or d[0] != n - 1:
        p.anomaly = "modbus_bad_byte_count"
        return
    records = []
    off = 1
    if request or fc == 21:
        while off + 7 <= n and len(records) < 64:
            ref, file_no, rec_no, length = struct.unpack_from("!BHHH", d, off)
            records.append((file_no, rec_no, length))
            off += 7 + (length * 2 if fc == 21 else 0)
            if ref != 6:
                p.anomaly = "modbus_bad_reference_type"
        if records:
            p.address = records[0][1]
            p.quantity = records[0][2]
            p.fields = {"file_records": records}
            p.values = tuple(r[0] for r in records)


def _mei(d: memoryview | bytes, p: _Parsed, request: bool) -> None:
    """FC 43: MEI transport. 14 = Read Device Identification (spec 6.21), 13 = CANopen."""
    if not d:
        p.anomaly = "modbus_bad_request_length"
        return
    mei = d[0]
    p.name = MEI_TYPES.get(mei, f"mei-{mei}")
    p.fields = {"mei_type": mei}
    if mei == 14:
        p.category = DISCOVERY
        if request:
            if len(d) >= 3:
                p.fields["read_device_id_code"] = d[1]
                p.fields["object_id"] = d[2]
            else:
                p.anomaly = "modbus_bad_request_length"
            return
        if len(d) < 6:
            p.anomaly = "modbus_bad_response_length"
            return
        p.fields["conformity_level"] = d[2]
        p.fields["more_follows"] = d[3] == 0xFF
        count = d[5]
        off = 6
        identity: dict[str, str] = {}
        for _ in range(count):
            if off + 2 > len(d):
                p.anomaly = "modbus_bad_device_id_object"
                break
            obj, length = d[off], d[off + 1]
            value = bytes(d[off + 2 : off + 2 + length])
            if len(value) < length:
                p.anomaly = "modbus_bad_device_id_object"
                break
            identity[DEVICE_ID_OBJECTS.get(obj, f"object_{obj}")] = value.decode("latin-1").strip("\x00 ")
            off += 2 + length
        if identity:
            # The names the asset inventory reads: vendor, product, revision.
            ident = dict(identity)
            if "vendor_name" in ident:
                ident["vendor"] = ident["vendor_name"]
            # a blank product name (all NULs or spaces, stripped above) falls back to the code too
            product = ident.get("product_name") or ident.get("product_code")
            if product:
                ident["product"] = product
            p.fields["identity"] = ident


def _umas(d: memoryview | bytes, p: _Parsed) -> None:
    """FC 90 (0x5A): [session key][UMAS function][data...]."""
    if len(d) < 2:
        p.anomaly = "modbus_umas_truncated"
        return
    func = d[1]
    name, category = UMAS_FUNCTIONS.get(func, (f"umas-{func:#04x}", OTHER))
    p.fields = {"umas_session": d[0], "umas_function": func, "umas_function_name": name}
    p.name = "umas_" + name
    p.category = category


_FC_KEYS = [str(i) for i in range(128)]
_READ_LIMITS = (0, 2000, 2000, 125, 125)


class ModbusAnalyzer(FramedStreamAnalyzer):
    protocol = "modbus"
    max_buffer = 2 * MAX_FRAMED_ADU

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        # (unit, transaction id) -> (fc, address, quantity, ts)
        self._pending: dict[tuple[int, int], tuple[int, int | None, int | None, float]] = {}
        stats = session.stats
        self._pdus = stats.pdus
        self._hist = stats.hist("modbus")
        s = session
        self._c2s = (s.client_ip, s.client_port, s.server_ip, s.server_port, s.client_mac, s.server_mac)
        self._s2c = (s.server_ip, s.server_port, s.client_ip, s.client_port, s.server_mac, s.client_mac)
        self._transport = s.transport  # "udp" when the probe found Modbus in datagrams

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        # Fast path: exactly one whole ADU in the segment and nothing buffered (the usual case).
        n = len(data)
        if (
            n >= 8
            and not (self._buf[True] if from_client else self._buf[False])
            and data[2] == 0
            and data[3] == 0
            and (data[4] << 8 | data[5]) + 6 == n
            and n <= MAX_FRAMED_ADU
        ):
            self.on_pdu(from_client, data, ts)
            return
        super().feed(from_client, data, ts)

    def frame_length(self, buf: bytes, off: int) -> int | None:
        if len(buf) - off < 7:
            return None
        _tid, pid, length, _unit = _MBAP.unpack_from(buf, off)
        if pid != 0 or length < 2 or length > MAX_FRAMED_ADU - 6:
            return -1
        return 6 + length

    def on_bad_framing(self, from_client: bool, data: memoryview, ts: float) -> None:
        # Not an MBAP header: either non-Modbus traffic on the port or a lost sync. Report it once per
        # segment as its own event so rules can see garbage aimed at a PLC.
        self.session.event(
            from_client,
            ts,
            "modbus",
            REQUEST if from_client else RESPONSE,
            -1,
            "malformed",
            OTHER,
            result=MALFORMED,
            anomaly="modbus_bad_mbap",
            size=len(data),
        )

    def on_pdu(self, from_client: bool, adu: bytes | memoryview, ts: float) -> None:
        tid, _pid, _length, unit = _MBAP.unpack_from(adu, 0)
        size = len(adu)
        if size > MAX_ADU:
            self.session.anomaly("modbus_oversized_adu")
        fc_raw = adu[7]
        fc = fc_raw & 0x7F
        self._pdus["modbus"] += 1
        self._hist[_FC_KEYS[fc]] += 1
        name, category = _NAMES[fc]
        address = quantity = values = code = latency = anomaly = None
        fields: dict[str, Any] | None = None
        result = OK
        key = (unit, tid)
        if from_client:
            direction = REQUEST
            if 1 <= fc <= 6 and size == 12:
                # Hot request shapes inline: FC 1-4 (address, quantity), FC 5/6 (address, value).
                address, q = _U16X2.unpack_from(adu, 8)
                if fc <= 4:
                    quantity = q
                    if not 1 <= q <= _READ_LIMITS[fc]:
                        anomaly = "modbus_quantity_out_of_range"
                elif fc == 5:
                    quantity = 1
                    values = (q == 0xFF00,)
                    if q != 0xFF00 and q != 0:
                        anomaly = "modbus_bad_coil_value"
                else:
                    quantity = 1
                    values = (q,)
            else:
                p = _Parsed()
                parse_request(fc, adu[8:], p)
                address, quantity, values, fields, anomaly = p.address, p.quantity, p.values, p.fields, p.anomaly
                name = p.name or name
                category = p.category or category
            pending = self._pending
            if len(pending) >= MAX_PENDING:
                pending.clear()
                self.session.anomaly("modbus_pending_overflow")
            if fc == 23 and fields is not None and "read_address" in fields:
                # the response to FC 23 carries the registers *read*: pair it with the read range
                pending[key] = (fc, fields["read_address"], fields["read_quantity"], ts)
            else:
                pending[key] = (fc, address, quantity, ts)
        else:
            direction = RESPONSE
            req = self._pending.pop(key, None)
            if req is not None:
                latency = ts - req[3]
                if not 0.0 <= latency <= MAX_LATENCY:  # the capture clock stepped between them (base.pair_latency)
                    latency = None
                if req[0] != fc:
                    self.session.anomaly("modbus_response_function_mismatch")
            else:
                self.session.anomaly("modbus_unpaired_response")
            if fc_raw & 0x80:
                result = EXCEPTION
                if size >= 9:
                    code = adu[8]
                    fields = {"exception": EXCEPTIONS.get(code, f"exception-{code}")}
                if size != 9:
                    anomaly = "modbus_bad_exception_length"
                if req is not None:
                    address, quantity = req[1], req[2]
            elif (fc == 3 or fc == 4) and size >= 9 and adu[8] == size - 9 and size & 1:
                # Hot response shape inline: register reads.
                if req is not None:
                    address, quantity = req[1], req[2]
                values = _REG_STRUCTS[(size - 9) >> 1](adu, 9) if size < 9 + 2 * len(_REG_STRUCTS) else None
            else:
                p = _Parsed()
                parse_response(fc, adu[8:], p, req)
                address, quantity, values, fields, anomaly = p.address, p.quantity, p.values, p.fields, p.anomaly
                name = p.name or name
                category = p.category or category
        if anomaly is not None:
            self.session.anomaly(anomaly)
            if result == OK:
                result = MALFORMED
        if fields is None:
            fields = {"transaction_id": tid}
        else:
            fields["transaction_id"] = tid
        src, sport, dst, dport, smac, dmac = self._c2s if from_client else self._s2c
        s = self.session
        s.events += 1
        s._sink(
            IcsEvent(
                ts, "modbus", src, sport, dst, dport, self._transport, direction, fc, name, category, unit, address,
                quantity, values, None, result, code, latency, anomaly, fields, s.flow_id, smac, dmac, size,
            )
        )


def probe(payload: bytes, from_client: bool) -> bool:
    """An MBAP header with protocol id 0, a sane length that matches the segment, and a known function."""
    if len(payload) < 8:
        return False
    _tid, pid, length, _unit = _MBAP.unpack_from(payload, 0)
    if pid != 0 or not 2 <= length <= MAX_FRAMED_ADU - 6:
        return False
    if len(payload) < 6 + length:
        return False
    fc = payload[7] & 0x7F
    if fc not in FUNCTIONS:
        return False
    # several ADUs in one segment must each be well formed too
    off = 6 + length
    while off + 7 <= len(payload):
        _t, pid, length, _u = _MBAP.unpack_from(payload, off)
        if pid != 0 or not 2 <= length <= MAX_FRAMED_ADU - 6:
            return False
        off += 6 + length
    return off == len(payload)


SPEC = ProtocolSpec(
    name="modbus",
    analyzer=ModbusAnalyzer,
    tcp_ports=frozenset({502}),
    probe=probe,
    probe_order=50,
)

__all__ = ["SPEC", "ModbusAnalyzer", "FUNCTIONS", "EXCEPTIONS", "UMAS_FUNCTIONS", "IcsEvent"]
