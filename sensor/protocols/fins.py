"""Omron FINS over UDP and TCP (port 9600): identification.

References: Omron "FINS Commands Reference Manual" (W227) section 3 (frame format) and 5 (command
list); "CJ/CS Ethernet Unit Operation Manual" (W421) section 6 (FINS/UDP, FINS/TCP).

FINS frame (W227 3-1): a 10-octet header, ICF (bit 7 gateway use, always 1; bit 6 0 command /
1 response; bit 0 1 = no response required), RSV (0), GCT (gateway count, 0-7), DNA, DA1, DA2
(destination network, node, unit), SNA, SA1, SA2 (source), SID (service id, echoed in the response);
then the command code MRC/SRC (2) and parameters. A response adds a 2-octet end code MRES/SRES after
the command code: MRES bit 7 is the relay-error flag, SRES bits 7-6 the fatal/non-fatal CPU error
flags; the rest is the completion code (0x0000 = normal completion).

FINS/UDP: one frame per datagram. FINS/TCP (W421 7-4): each message starts with "FINS" (0x46494E53),
a 4-octet length of what follows it, a 4-octet command (0 node address data send client to server,
1 server to client, 2 FINS frame send, 3 FINS frame send error notification, 6 connection
confirmation) and a 4-octet error code; command 2 carries a FINS frame.

Events: one per FINS command or response, function = MRC << 8 | SRC (0x0101 memory area read ...),
unit = the PLC's node address (DA1 of a command, SA1 of a response). Memory area read/write/fill give
the area code, word address and item count. The Controller Data Read (0x0501) response gives the CPU
model and version into ``fields["identity"]``. The FINS/TCP node address handshake is reported as
``node_address_request`` / ``node_address_response`` session events (function -1).
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
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    WRITE,
)
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session, pair_latency

PORT = 9600
MAGIC = b"FINS"

_HDR = struct.Struct("!BBBBBBBBBBBB")  # ICF RSV GCT DNA DA1 DA2 SNA SA1 SA2 SID MRC SRC
_TCP = struct.Struct("!4sIII")  # magic, length, command, error code
_U32 = struct.Struct("!I")
_AREA = struct.Struct("!BHBH")  # memory area code, beginning address, bit, number of items

MAX_FRAME = 2012 + 16  # W227: a FINS frame is at most 2012 octets (2000 octets of data + header)
MAX_PENDING = 256

# MRC<<8|SRC -> (name, category); W227 section 5-1 command list (CS/CJ and CV series)
COMMANDS: dict[int, tuple[str, str]] = {
    0x0101: ("memory_area_read", READ),
    0x0102: ("memory_area_write", WRITE),
    0x0103: ("memory_area_fill", WRITE),
    0x0104: ("multiple_memory_area_read", READ),
    0x0105: ("memory_area_transfer", WRITE),
    0x0201: ("parameter_area_read", READ),
    0x0202: ("parameter_area_write", PROGRAM),
    0x0203: ("parameter_area_clear", PROGRAM),
    0x0220: ("data_link_table_read", READ),
    0x0221: ("data_link_table_write", PROGRAM),
    0x0304: ("program_area_protect", PROGRAM),
    0x0305: ("program_area_protect_clear", PROGRAM),
    0x0306: ("program_area_read", PROGRAM),  # program upload
    0x0307: ("program_area_write", PROGRAM),
    0x0308: ("program_area_clear", PROGRAM),
    0x0401: ("run", CONTROL),
    0x0402: ("stop", CONTROL),
    0x0501: ("controller_data_read", DISCOVERY),
    0x0502: ("connection_data_read", DISCOVERY),
    0x0601: ("controller_status_read", DIAGNOSTIC),
    0x0602: ("network_status_read", DIAGNOSTIC),
    0x0603: ("data_link_status_read", DIAGNOSTIC),
    0x0620: ("cycle_time_read", DIAGNOSTIC),
    0x0701: ("clock_read", READ),
    0x0702: ("clock_write", WRITE),
    0x0801: ("internode_echo_test", DIAGNOSTIC),
    0x0802: ("broadcast_test_results_read", DIAGNOSTIC),
    0x0803: ("broadcast_test_data_send", DIAGNOSTIC),
    0x0920: ("message_read", READ),
    0x0C01: ("access_right_acquire", SESSION),
    0x0C02: ("access_right_forced_acquire", SESSION),
    0x0C03: ("access_right_release", SESSION),
    0x2101: ("error_clear", DIAGNOSTIC),
    0x2102: ("error_log_read", DIAGNOSTIC),
    0x2103: ("error_log_clear", DIAGNOSTIC),
    0x2140: ("fins_write_access_log_read", DIAGNOSTIC),
    0x2141: ("fins_write_access_log_clear", DIAGNOSTIC),
    0x2201: ("file_name_read", DISCOVERY),
    0x2202: ("single_file_read", READ),
    0x2203: ("single_file_write", PROGRAM),
    0x2204: ("file_memory_format", PROGRAM),
    0x2205: ("file_delete", PROGRAM),
    0x2207: ("file_copy", PROGRAM),
    0x2208: ("file_name_change", PROGRAM),
    0x220A: ("memory_area_file_transfer", PROGRAM),
    0x220B: ("parameter_area_file_transfer", PROGRAM),
    0x220C: ("program_area_file_transfer", PROGRAM),
    0x2215: ("directory_create_delete", PROGRAM),
    0x2301: ("forced_set_reset", CONTROL),
    0x2302: ("forced_set_reset_cancel", CONTROL),
}

TCP_COMMANDS: dict[int, str] = {
    0: "node_address_request",
    1: "node_address_response",
    2: "frame_send",
    3: "frame_send_error",
    6: "connection_confirmation",
}

# memory area codes (W227 5-2-2) for the common CS/CJ areas
AREAS: dict[int, str] = {
    0x30: "CIO.bit",
    0x31: "WR.bit",
    0x32: "HR.bit",
    0x33: "AR.bit",
    0x02: "DM.bit",
    0x09: "TIM.flag",
    0xB0: "CIO",
    0xB1: "WR",
    0xB2: "HR",
    0xB3: "AR",
    0x82: "DM",
    0x89: "TIM.pv",
    0x98: "EM",
    0xBC: "DR",
    0xDC: "IR",
    0x06: "TK",
}


def _header_ok(icf: int, rsv: int, gct: int) -> bool:
    # ICF: bit 7 set, bits 5-1 reserved (0); RSV 0; GCT <= 7
    return icf & 0xBE == 0x80 and rsv == 0 and gct <= 7


def probe(payload: bytes, from_client: bool) -> bool:
    """FINS/TCP ("FINS" + a known command and a sane length) or a FINS/UDP header with a known command."""
    if payload[:4] == MAGIC:
        if len(payload) < 16:
            return False
        _m, length, command, _err = _TCP.unpack_from(payload, 0)
        return command in TCP_COMMANDS and 8 <= length <= MAX_FRAME + 8
    if len(payload) < _HDR.size:
        return False
    icf, rsv, gct, *_rest, mrc, src = _HDR.unpack_from(payload, 0)
    if not _header_ok(icf, rsv, gct) or (mrc << 8 | src) not in COMMANDS:
        return False
    return len(payload) >= 14 if icf & 0x40 else True  # a response carries its end code


class FinsAnalyzer(FramedStreamAnalyzer):
    """FINS/TCP framing (FramedStreamAnalyzer) or FINS/UDP datagrams (``feed`` below)."""

    protocol = "fins"
    max_buffer = 4 * MAX_FRAME

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._pending: dict[int, tuple[int, float]] = {}  # SID -> (command, ts)

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if self.session.transport == "tcp":
            super().feed(from_client, data, ts)
        else:
            self._frame(from_client, memoryview(data), ts)

    # -- FINS/TCP -----------------------------------------------------------------------------
    def frame_length(self, buf: bytes, off: int) -> int | None:
        if len(buf) - off < 8:
            return None
        if buf[off : off + 4] != MAGIC:
            return -1
        length = _U32.unpack_from(buf, off + 4)[0]
        if length < 8 or length > MAX_FRAME + 8:
            return -1
        return 8 + length

    def on_pdu(self, from_client: bool, pdu: memoryview, ts: float) -> None:
        s = self.session
        _m, _length, command, error = _TCP.unpack_from(pdu, 0)
        if command == 2:
            if error:
                s.anomaly("fins_tcp_error")
            self._frame(from_client, pdu[16:], ts)
            return
        s.stats.pdu("fins")
        s.stats.func("fins", f"tcp:{command}")
        name = TCP_COMMANDS.get(command, f"tcp-unknown-{command}")
        fields: dict[str, Any] = {"tcp_command": command}
        if command == 0 and len(pdu) >= 20:
            fields["client_node"] = _U32.unpack_from(pdu, 16)[0]
        elif command == 1 and len(pdu) >= 24:
            fields["client_node"], fields["server_node"] = struct.unpack_from("!II", pdu, 16)
        s.event(
            from_client,
            ts,
            "fins",
            RESPONSE if command in (1, 3) else REQUEST,
            -1,
            name,
            SESSION,
            result=EXCEPTION if error else OK,
            code=error or None,
            fields=fields,
            size=len(pdu),
        )

    # -- FINS frame ---------------------------------------------------------------------------
    def _frame(self, from_client: bool, f: memoryview, ts: float) -> None:
        s = self.session
        s.stats.pdu("fins")
        if len(f) < _HDR.size:
            s.anomaly("fins_truncated")
            s.stats.func("fins", "malformed")
            s.event(
                from_client,
                ts,
                "fins",
                REQUEST if from_client else RESPONSE,
                -1,
                "malformed",
                OTHER,
                result=MALFORMED,
                anomaly="fins_truncated",
                size=len(f),
            )
            return
        icf, rsv, gct, _dna, da1, _da2, _sna, sa1, _sa2, sid, mrc, src = _HDR.unpack_from(f, 0)
        code = mrc << 8 | src
        s.stats.func("fins", f"{code:#06x}")
        anomaly: str | None = None
        if not _header_ok(icf, rsv, gct):
            anomaly = "fins_bad_header"
        response = bool(icf & 0x40)
        name, category = COMMANDS.get(code, (f"unknown-{code:#06x}", OTHER))
        fields: dict[str, Any] = {"sid": sid, "icf": icf}
        result = OK
        end_code: int | None = None
        latency: float | None = None
        address = quantity = None
        body = f[12:]
        if response:
            if len(body) < 2:
                anomaly = anomaly or "fins_missing_end_code"
            else:
                mres, sres = body[0], body[1]
                end_code = (mres & 0x7F) << 8 | (sres & 0x3F)
                if mres & 0x80:
                    fields["relay_error"] = True
                if sres & 0xC0:
                    fields["cpu_error"] = "fatal" if sres & 0x80 else "non_fatal"
                if end_code:
                    result = EXCEPTION
                elif code == 0x0501 and len(body) >= 42:
                    fields["identity"] = {"model": _text(body[2:22]), "version": _text(body[22:42])}
            req = self._pending.pop(sid, None)
            if req is not None and req[0] == code:
                latency = pair_latency(req[1], ts)
        else:
            if code in (0x0101, 0x0102, 0x0103) and len(body) >= _AREA.size:
                area, address, _bit, quantity = _AREA.unpack_from(body, 0)
                fields["memory_area"] = AREAS.get(area, f"{area:#04x}")
            if not icf & 0x01:  # a response is expected: remember the command for its latency
                pending = self._pending
                if len(pending) >= MAX_PENDING:
                    pending.clear()
                    s.anomaly("fins_pending_overflow")
                pending[sid] = (code, ts)
        if anomaly is not None:
            s.anomaly(anomaly)
            result = MALFORMED
        s.event(
            from_client,
            ts,
            "fins",
            RESPONSE if response else REQUEST,
            code,
            name,
            category,
            unit=sa1 if response else da1,
            address=address,
            quantity=quantity,
            result=result,
            code=end_code if result == EXCEPTION else None,
            latency=latency,
            anomaly=anomaly,
            fields=fields,
            size=len(f),
        )


def _text(raw: memoryview | bytes) -> str:
    return bytes(raw).split(b"\x00", 1)[0].decode("latin-1").strip()


SPEC = ProtocolSpec(
    name="fins",
    analyzer=FinsAnalyzer,
    tcp_ports=frozenset({PORT}),
    udp_ports=frozenset({PORT}),
    probe=probe,
    probe_order=60,
    deep=False,
)

__all__ = ["SPEC", "FinsAnalyzer", "probe", "COMMANDS", "TCP_COMMANDS", "AREAS"]
