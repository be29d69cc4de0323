"""HART-IP (UDP and TCP 5094): identification, with the HART command of pass-through PDUs.

References: FieldComm Group HCF_SPEC-085 "HART-IP Specification" section 10 (message header), and
HCF_SPEC-081 "Token-Passing Data Link Layer" section 5 (the HART PDU), HCF_SPEC-127/151 (universal
and common practice command numbers).

Header (8 octets, big-endian): version (1 or 2), message type (0 request, 1 response, 2 publish/
notification, 3 error, 15 NAK), message id (0 session initiate, 1 session close, 2 keep alive,
3 token-passing PDU ("pass-through"), 4 direct PDU (version 2), 128 read audit log), status, sequence
number (2), byte count (2, the whole message including the header). Over TCP messages are framed by
the byte count; over UDP one datagram is one message. Note that a HART-IP server answers the UDP
session initiate from a new port (5095 in the ITI capture), so the rest of that session is a flow on
two unregistered ports, found by the probe.

A token-passing PDU (message id 3) holds one HART frame: delimiter (bit 7 long 5-octet address,
bits 6-5 expansion octets, bits 2-0 frame type: 1 burst, 2 master-to-field STX, 6 field-to-master
ACK), address, expansion octets, command (1), byte count (1), in a response 2 status octets, data,
checksum. Command 31 is the 16-bit extended command, taken from the first two data octets.

Events: one per message, function = message id, named ``session_initiate`` ... ``pass_through``;
the HART command number and name go in ``fields`` (``hart_command``), the device address in
``fields["hart_address"]``. Command 0 (read unique identifier) responses give the device's
manufacturer, device type, revisions and id into ``fields["identity"]``; command 20 responses the
long tag.
"""

from __future__ import annotations

import struct
from typing import Any

from sensor.events import (
    CONTROL,
    DIAGNOSTIC,
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OK,
    OTHER,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
)
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session, pair_latency

PORT = 5094

_HDR = struct.Struct("!BBBBHH")  # version, message type, message id, status, sequence, byte count
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

MAX_MESSAGE = 8192  # HART PDUs are < 300 octets; audit logs and direct PDUs stay well below this
MAX_PENDING = 256

MESSAGE_TYPES: dict[int, str] = {0: "request", 1: "response", 2: "publish", 3: "error", 15: "nak"}

# message id -> (name, category)
MESSAGE_IDS: dict[int, tuple[str, str]] = {
    0: ("session_initiate", SESSION),
    1: ("session_close", SESSION),
    2: ("keep_alive", SESSION),
    3: ("pass_through", OTHER),  # refined by the HART command inside
    4: ("direct_pdu", OTHER),
    128: ("read_audit_log", DIAGNOSTIC),
}

# HART universal and common-practice commands -> (name, category)
HART_COMMANDS: dict[int, tuple[str, str]] = {
    0: ("read_unique_identifier", DISCOVERY),
    1: ("read_primary_variable", READ),
    2: ("read_loop_current_and_percent_of_range", READ),
    3: ("read_dynamic_variables_and_loop_current", READ),
    6: ("write_polling_address", WRITE),
    7: ("read_loop_configuration", READ),
    8: ("read_dynamic_variable_classifications", READ),
    9: ("read_device_variables_with_status", READ),
    11: ("read_unique_identifier_with_tag", DISCOVERY),
    12: ("read_message", READ),
    13: ("read_tag_descriptor_date", READ),
    14: ("read_primary_variable_transducer_information", READ),
    15: ("read_device_information", DISCOVERY),
    16: ("read_final_assembly_number", READ),
    17: ("write_message", WRITE),
    18: ("write_tag_descriptor_date", WRITE),
    19: ("write_final_assembly_number", WRITE),
    20: ("read_long_tag", READ),
    21: ("read_unique_identifier_with_long_tag", DISCOVERY),
    22: ("write_long_tag", WRITE),
    33: ("read_device_variables", READ),
    34: ("write_primary_variable_damping", WRITE),
    35: ("write_primary_variable_range_values", WRITE),
    36: ("set_primary_variable_upper_range", WRITE),
    37: ("set_primary_variable_lower_range", WRITE),
    38: ("reset_configuration_changed_flag", WRITE),
    40: ("enter_exit_fixed_current_mode", CONTROL),
    41: ("perform_self_test", DIAGNOSTIC),
    42: ("perform_device_reset", DIAGNOSTIC),
    43: ("set_primary_variable_zero", WRITE),
    44: ("write_primary_variable_units", WRITE),
    45: ("trim_loop_current_zero", WRITE),
    46: ("trim_loop_current_gain", WRITE),
    48: ("read_additional_device_status", DIAGNOSTIC),
    50: ("read_dynamic_variable_assignments", READ),
    51: ("write_dynamic_variable_assignments", WRITE),
    53: ("write_device_variable_units", WRITE),
    54: ("read_device_variable_information", READ),
    59: ("write_number_of_response_preambles", WRITE),
    79: ("write_device_variable", WRITE),
    103: ("write_burst_period", WRITE),
    104: ("write_burst_trigger", WRITE),
    105: ("read_burst_mode_configuration", READ),
    106: ("flush_delayed_responses", OTHER),
    107: ("write_burst_device_variables", WRITE),
    108: ("write_burst_mode_command_number", WRITE),
    109: ("burst_mode_control", WRITE),
    512: ("read_country_code", READ),
    513: ("write_country_code", WRITE),
    523: ("read_condensed_status_mapping_array", READ),
    524: ("write_condensed_status_mapping", WRITE),
    525: ("reset_condensed_status_map", WRITE),
    526: ("write_simulation_mode", CONTROL),
    527: ("simulate_status_bit", CONTROL),
}


def _message_ok(version: int, mtype: int, mid: int, count: int) -> bool:
    return version in (1, 2) and mtype in MESSAGE_TYPES and mid in MESSAGE_IDS and 8 <= count <= MAX_MESSAGE


def probe(payload: bytes, from_client: bool) -> bool:
    """A HART-IP header: version 1/2, known message type and id, a byte count that fits the message."""
    if len(payload) < 8:
        return False
    version, mtype, mid, _status, _seq, count = _HDR.unpack_from(payload, 0)
    if not _message_ok(version, mtype, mid, count):
        return False
    if mid == 0 and mtype in (0, 1):
        return count == 13  # session initiate: master type (1) + inactivity close time (4)
    if mid in (1, 2) and mtype in (0, 1):
        return count == 8
    if mid == 3 and len(payload) >= 9:
        return payload[8] & 0x07 in (1, 2, 6)  # a HART delimiter's frame type
    return True


class HartIpAnalyzer(FramedStreamAnalyzer):
    protocol = "hart_ip"
    max_buffer = 2 * MAX_MESSAGE

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._pending: dict[int, float] = {}  # sequence -> request ts

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if self.session.transport == "tcp":
            super().feed(from_client, data, ts)
            return
        length = self.frame_length(data, 0)
        if length is None or length > len(data):
            self._malformed(from_client, ts, "hart_ip_truncated", len(data))
            return
        if length <= 0:
            self._malformed(from_client, ts, "hart_ip_bad_header", len(data))
            return
        self.on_pdu(from_client, memoryview(data)[:length], ts)

    def frame_length(self, buf: bytes, off: int) -> int | None:
        if len(buf) - off < 8:
            return None
        version, mtype, mid, _status, _seq, count = _HDR.unpack_from(buf, off)
        if not _message_ok(version, mtype, mid, count):
            return -1
        return count

    def on_bad_framing(self, from_client: bool, data: memoryview, ts: float) -> None:
        self._malformed(from_client, ts, "hart_ip_bad_framing", len(data), counted=False)

    def on_pdu(self, from_client: bool, m: memoryview, ts: float) -> None:
        s = self.session
        version, mtype, mid, status, seq, _count = _HDR.unpack_from(m, 0)
        name, category = MESSAGE_IDS[mid]
        s.stats.pdu("hart_ip")
        s.stats.func("hart_ip", str(mid))
        fields: dict[str, Any] = {"version": version, "message_type": MESSAGE_TYPES[mtype], "sequence": seq}
        if status:
            fields["status"] = status
        result = EXCEPTION if mtype in (3, 15) else OK
        anomaly: str | None = None
        body = m[8:]
        if mid == 0 and len(body) >= 5:
            fields["master_type"] = body[0]
            fields["inactivity_close_ms"] = _U32.unpack_from(body, 1)[0]
        elif mid == 3 and len(body):
            cat = _hart_pdu(body, fields)
            if cat is None:
                anomaly = "hart_ip_bad_hart_pdu"
            else:
                category = cat
        if mtype == 0:
            direction = REQUEST
            pending = self._pending
            if len(pending) >= MAX_PENDING:
                pending.clear()
                s.anomaly("hart_ip_pending_overflow")
            pending[seq] = ts
            latency = None
        elif mtype == 2:
            direction, latency = UNSOLICITED, None
        else:
            direction = RESPONSE
            start = self._pending.pop(seq, None)
            latency = None if start is None else pair_latency(start, ts)
            if mtype == 1 and status:
                result = EXCEPTION  # a non-zero header status on a response is an error code
        if anomaly is not None:
            s.anomaly(anomaly)
            result = MALFORMED
        s.event(
            from_client,
            ts,
            "hart_ip",
            direction,
            mid,
            name,
            category,
            result=result,
            code=status if result == EXCEPTION else None,
            latency=latency,
            anomaly=anomaly,
            fields=fields,
            size=len(m),
        )

    def _malformed(self, from_client: bool, ts: float, anomaly: str, size: int, counted: bool = True) -> None:
        s = self.session
        if counted:
            s.anomaly(anomaly)
        s.stats.pdu("hart_ip")
        s.stats.func("hart_ip", "malformed")
        s.event(
            from_client,
            ts,
            "hart_ip",
            REQUEST if from_client else RESPONSE,
            -1,
            "malformed",
            OTHER,
            result=MALFORMED,
            anomaly=anomaly,
            size=size,
        )


def _hart_pdu(p: memoryview, fields: dict[str, Any]) -> str | None:
    """Read one token-passing HART frame into ``fields``; return the command's category (None: malformed)."""
    delim = p[0]
    frame_type = delim & 0x07
    if frame_type not in (1, 2, 6):
        return None
    addr_len = 5 if delim & 0x80 else 1
    off = 1 + addr_len + ((delim >> 5) & 0x03)
    if len(p) < off + 2:
        return None
    address = bytes(p[1 : 1 + addr_len])
    if addr_len == 5:
        # long address: the first octet's top bits are master address and burst flag, not the id
        fields["hart_address"] = bytes([address[0] & 0x3F]).hex() + address[1:].hex()
    else:
        fields["hart_polling_address"] = address[0] & 0x3F
    command = p[off]
    count = p[off + 1]
    data = p[off + 2 : off + 2 + count]
    if len(data) < count:
        return None
    response = frame_type in (1, 6)
    if response and count >= 2:
        fields["response_code"] = data[0]
        fields["field_device_status"] = data[1]
        data = data[2:]
    if command == 31 and len(data) >= 2:
        command = _U16.unpack_from(data, 0)[0]  # extended 16-bit command number
        data = data[2:]
    name, category = HART_COMMANDS.get(command, (f"command-{command}", OTHER))
    fields["hart_command"] = command
    fields["hart_command_name"] = name
    if response and fields.get("response_code", 0) == 0:
        if command == 0 and len(data) >= 12 and data[0] == 254:
            ident: dict[str, Any] = {
                "hart_revision": data[4],
                "device_revision": data[5],
                "software_revision": data[6],
                "device_id": bytes(data[9:12]).hex(),
            }
            if data[4] >= 7:
                ident["expanded_device_type"] = _U16.unpack_from(data, 1)[0]
                if len(data) >= 19:
                    ident["manufacturer_id"] = _U16.unpack_from(data, 17)[0]
            else:
                ident["manufacturer_id"], ident["device_type"] = data[1], data[2]
            fields["identity"] = ident
        elif command == 20 and len(data) >= 1:
            fields["identity"] = {"long_tag": bytes(data[:32]).split(b"\x00", 1)[0].decode("latin-1")}
    return category


SPEC = ProtocolSpec(
    name="hart_ip",
    analyzer=HartIpAnalyzer,
    tcp_ports=frozenset({PORT}),
    udp_ports=frozenset({PORT}),
    probe=probe,
    probe_order=30,
    deep=False,
)

__all__ = ["SPEC", "HartIpAnalyzer", "probe", "MESSAGE_IDS", "HART_COMMANDS"]
