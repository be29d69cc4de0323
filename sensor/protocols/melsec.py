"""Mitsubishi MELSEC: MC protocol / SLMP 3E and 4E frames, and the MELSOFT engineering protocol.

MC protocol / SLMP (Mitsubishi "SLMP Reference Manual" SH-080956ENG, section 4 "Message format";
"MELSEC Communication Protocol Reference Manual" SH-080008, chapter 3). No fixed port (the user sets
it in the PLC's Ethernet parameters), so these are found by the probe. Binary frames, integers
little-endian:

- 3E request: subheader 0x50 0x00, network no. (1), PC no. (1), request destination module I/O no.
  (2), station no. (1), request data length (2, octets from the monitoring timer on), monitoring timer
  (2), command (2), subcommand (2), data. 3E response: subheader 0xD0 0x00, the same routing fields,
  response data length (2), end code (2, 0 = normal), data.
- 4E: subheader 0x54 0x00 / 0xD4 0x00, serial no. (2), 0x0000 (2), then as 3E. The serial pairs a
  response with its request.
- ASCII 3E/4E: the same fields written as upper-case hexadecimal text ("5000", "D000", "5400",
  "D400"); the length counts characters.

Commands (SLMP 5.1 "Command list") are named with their subcommand's unit (word/bit, iQ-R device
format); batch read/write give the device, head address and points.

MELSOFT (the GX Works / GX Developer engineering protocol, TCP 5007 and UDP 5006 on a built-in
Ethernet port; the ITI captures ``melsoft_*`` run it between TCP 5001 and 5562): no public
specification. The layout used here is the one in Nozomi Networks' published dissector
(``melsoft_bhmea2023.lua``, Black Hat MEA 2023) and checked on the captures: a 21-octet "Ethernet
header" whose first octet is 0x57 (request) or 0xD7 (response) and whose octets 19-20 are the length
of what follows (little-endian); a command header of 24 (request) or 26 (response, with a 2-octet
status at offset 4) octets; then the command code (2, big-endian), a packet reference (2) echoed by
the response, and the command data. Names of MELSOFT command codes are Nozomi's, except 0x0410 and
0x1410: Nozomi's table names 0x0410 "Modify Value", but in the captures every 0x0410 request names a
device, address and point count and its response returns two octets per point (the values), while
0x1410 requests carry the value written (float 1000.0) and get an empty answer, so we report 0x0410
as ``batch_read`` and 0x1410 as ``batch_write`` (tests hold the bytes). Other codes are
``unknown-0x....``.

The 1E (A-compatible) frame has no magic worth a probe and is left out.
"""

from __future__ import annotations

import struct
from collections import deque
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

MELSOFT_TCP_PORT = 5007
MELSOFT_UDP_PORT = 5006

_LE16 = struct.Struct("<H")
_BE16 = struct.Struct(">H")
_3E_REQ = struct.Struct("<BBBBHBHHHH")  # sub0 sub1 net pc io station length timer command subcommand
_3E_RES = struct.Struct("<BBBBHBHH")  # sub0 sub1 net pc io station length endcode
_DEV_QL = struct.Struct("<HBBH")  # head device (3 octets, low 2 + high 1), device code, points
_DEV_IQR = struct.Struct("<IHH")  # head device (4), device code (2), points

MAX_FRAME = 8192  # SLMP data is at most 960 words + headers; MELSOFT file transfers stay below this
MAX_PENDING = 256
MELSOFT_HEADER = 21

# SLMP command -> (name, category)
MC_COMMANDS: dict[int, tuple[str, str]] = {
    0x0401: ("batch_read", READ),
    0x1401: ("batch_write", WRITE),
    0x0403: ("random_read", READ),
    0x1402: ("random_write", WRITE),
    0x0406: ("batch_read_multiple_blocks", READ),
    0x1406: ("batch_write_multiple_blocks", WRITE),
    0x0801: ("monitor_register", READ),
    0x0802: ("monitor", READ),
    0x0601: ("module_buffer_read", READ),
    0x1601: ("module_buffer_write", WRITE),
    0x0613: ("buffer_memory_read", READ),
    0x1613: ("buffer_memory_write", WRITE),
    0x1001: ("remote_run", CONTROL),
    0x1002: ("remote_stop", CONTROL),
    0x1003: ("remote_pause", CONTROL),
    0x1005: ("remote_latch_clear", CONTROL),
    0x1006: ("remote_reset", DIAGNOSTIC),
    0x0101: ("read_cpu_model", DISCOVERY),
    0x0619: ("loopback_test", DIAGNOSTIC),
    0x1617: ("clear_error", DIAGNOSTIC),
    0x1630: ("remote_password_unlock", SESSION),
    0x1631: ("remote_password_lock", SESSION),
    0x1810: ("read_directory", DISCOVERY),
    0x1811: ("search_directory", DISCOVERY),
    0x1820: ("new_file", PROGRAM),
    0x1822: ("delete_file", PROGRAM),
    0x1824: ("copy_file", PROGRAM),
    0x1825: ("change_file_attribute", PROGRAM),
    0x1826: ("change_file_date", PROGRAM),
    0x1827: ("open_file", PROGRAM),
    0x1828: ("read_file", PROGRAM),  # reading a program file off the PLC is an upload
    0x1829: ("write_file", PROGRAM),
    0x182A: ("close_file", PROGRAM),
}

# device access commands whose subcommand names the unit and device format
_DEVICE_COMMANDS = frozenset({0x0401, 0x1401, 0x0403, 0x1402, 0x0406, 0x1406, 0x0801})
SUBCOMMAND_UNITS: dict[int, str] = {0: "word", 1: "bit", 2: "word_iqr", 3: "bit_iqr"}

# SLMP device codes (binary) -> device name
DEVICES: dict[int, str] = {
    0x9C: "X",
    0x9D: "Y",
    0x90: "M",
    0x92: "L",
    0x93: "F",
    0x94: "V",
    0xA0: "B",
    0xA8: "D",
    0xB4: "W",
    0xC1: "TS",
    0xC0: "TC",
    0xC2: "TN",
    0xC7: "STS",
    0xC6: "STC",
    0xC8: "STN",
    0xC4: "CS",
    0xC3: "CC",
    0xC5: "CN",
    0xA1: "SB",
    0xB5: "SW",
    0x91: "SM",
    0xA9: "SD",
    0xCC: "Z",
    0xAF: "R",
    0xB0: "ZR",
    0x9F: "DX",
    0xA2: "DY",
}

# MELSOFT command code -> (name, category)
MELSOFT_COMMANDS: dict[int, tuple[str, str]] = {
    0x0121: ("open_initial", SESSION),
    0x0131: ("username_login", SESSION),
    0x0132: ("password_login", SESSION),
    0x0133: ("read_user_information", DISCOVERY),
    0x0134: ("read_user_information", DISCOVERY),
    0x0150: ("safety_run_mode_read", DIAGNOSTIC),
    0x0410: ("batch_read", READ),  # Nozomi: "Modify Value"; the captures show a read (module docstring)
    0x1410: ("batch_write", WRITE),
    0x1001: ("remote_run", CONTROL),
    0x1002: ("remote_stop", CONTROL),
    0x1003: ("remote_pause", CONTROL),
    0x1006: ("remote_reset", DIAGNOSTIC),
    0x1120: ("safety_run_mode_change", CONTROL),
    0x1133: ("user_information_registration", WRITE),
    0x1859: ("file_list_read", DISCOVERY),
    0x1868: ("file_read", PROGRAM),
    0x1869: ("file_write", PROGRAM),
}

_HEX = frozenset(b"0123456789ABCDEFabcdef")
_ASCII_MAGICS = (b"5000", b"D000", b"5400", b"D400")
# binary frame kind -> (header length, offset of the little-endian length of what follows the header)
_LENGTH_FIELD: dict[str, tuple[int, int]] = {"3e": (9, 7), "4e": (13, 11), "melsoft": (MELSOFT_HEADER, 19)}


def _hexval(buf: bytes | memoryview, off: int, n: int) -> int | None:
    raw = bytes(buf[off : off + n])
    if len(raw) != n or not all(c in _HEX for c in raw):
        return None
    return int(raw, 16)


def frame_kind(buf: bytes | memoryview, off: int = 0) -> str | None:
    """Which MELSEC frame starts at ``off`` ('3e', '4e', '3e_ascii', '4e_ascii', 'melsoft'), else None."""
    if len(buf) - off < 2:
        return None
    b0, b1 = buf[off], buf[off + 1]
    if b1 == 0x00 and b0 in (0x50, 0xD0):
        return "3e"
    if b1 == 0x00 and b0 in (0x54, 0xD4):
        return "4e"
    if b0 in (0x57, 0xD7) and b1 <= 0x01:
        return "melsoft"
    head = bytes(buf[off : off + 4])
    if head in (b"5000", b"D000"):
        return "3e_ascii"
    if head in (b"5400", b"D400"):
        return "4e_ascii"
    return None


def frame_length(buf: bytes | memoryview, off: int = 0) -> int | None:
    """Total length of the frame at ``off``: None = need more bytes, -1 = not a MELSEC frame."""
    kind = frame_kind(buf, off)
    avail = len(buf) - off
    if kind is None:
        if avail < 2 or (avail < 4 and any(m.startswith(bytes(buf[off:])) for m in _ASCII_MAGICS)):
            return None  # too short to tell (a cut ASCII subheader)
        return -1
    binary = _LENGTH_FIELD.get(kind)
    if binary is not None:
        hlen, at = binary
        if avail < hlen:
            return None
        length: int = hlen + _LE16.unpack_from(buf, off + at)[0]
        return length if length <= MAX_FRAME else -1
    hlen = 18 if kind == "3e_ascii" else 26
    if avail < hlen:
        return None
    n = _hexval(buf, off + hlen - 4, 4)
    if n is None:
        return -1
    length = hlen + n
    return length if length <= MAX_FRAME else -1


def probe(payload: bytes, from_client: bool) -> bool:
    """A 3E/4E header (binary or ASCII) with a sane length and a known command, or a MELSOFT header."""
    kind = frame_kind(payload)
    if kind is None:
        return False
    if kind == "melsoft":
        if len(payload) < MELSOFT_HEADER + 3:
            return False
        # octets 5-6 are 0x11 0x11 in every MELSOFT frame seen; the command header's first octet has
        # the direction bit of the frame's first octet and its third octet the header's remaining size
        resp = payload[0] & 0x80
        return (
            payload[5] == 0x11
            and payload[6] == 0x11
            and payload[21] & 0x80 == resp
            and payload[23] == (0x18 if resp else 0x16)
            and _LE16.unpack_from(payload, 19)[0] >= (0x1A if resp else 0x18)
        )
    length = frame_length(payload)
    if length is None or length < 0:
        return False
    if kind == "3e":
        if len(payload) < 11:
            return False
        if payload[0] == 0x50:
            return len(payload) >= 15 and length >= 15 and _LE16.unpack_from(payload, 11)[0] in MC_COMMANDS
        return length >= 11
    if kind == "4e":
        if len(payload) < 15 or payload[4:6] != b"\x00\x00":
            return False
        if payload[0] == 0x54:
            return len(payload) >= 19 and length >= 19 and _LE16.unpack_from(payload, 15)[0] in MC_COMMANDS
        return length >= 15
    # ASCII: the command must be a known one too (requests), or the end code hex (responses)
    hlen = 18 if kind == "3e_ascii" else 26
    if payload[:1] == b"5":
        cmd = _hexval(payload, hlen + 4, 4)
        return cmd is not None and cmd in MC_COMMANDS
    return _hexval(payload, hlen, 4) is not None


class MelsecAnalyzer(FramedStreamAnalyzer):
    protocol = "melsec"
    max_buffer = 2 * MAX_FRAME

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._fifo: deque[tuple[int, int, float]] = deque(maxlen=MAX_PENDING)  # 3E: (command, sub, ts)
        self._serials: dict[int, tuple[int, int, float]] = {}  # 4E serial -> (command, sub, ts)
        self._refs: dict[int, float] = {}  # MELSOFT packet reference -> ts

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if self.session.transport == "tcp":
            super().feed(from_client, data, ts)
            return
        length = frame_length(data)
        if length is None or length < 0:
            self._malformed(from_client, ts, "melsec_bad_header", len(data))
            return
        if length > len(data):
            self._malformed(from_client, ts, "melsec_truncated", len(data))
            return
        self.on_pdu(from_client, memoryview(data)[:length], ts)

    def frame_length(self, buf: bytes, off: int) -> int | None:
        return frame_length(buf, off)

    def on_bad_framing(self, from_client: bool, data: memoryview, ts: float) -> None:
        # the base class counted ``melsec_bad_framing``; report the garbage as one event
        self._malformed(from_client, ts, "melsec_bad_framing", len(data), counted=False)

    def on_pdu(self, from_client: bool, f: memoryview, ts: float) -> None:
        kind = frame_kind(f)
        s = self.session
        s.stats.pdu("melsec")
        if kind == "melsoft":
            self._melsoft(from_client, f, ts)
        elif kind in ("3e", "4e"):
            self._binary(from_client, f, ts, kind)
        else:
            self._ascii(from_client, f, ts, kind or "?")

    # -- MC protocol, binary ------------------------------------------------------------------
    def _binary(self, from_client: bool, f: memoryview, ts: float, kind: str) -> None:
        base = 0 if kind == "3e" else 4
        serial = _LE16.unpack_from(f, 2)[0] if kind == "4e" else None
        request = not f[0] & 0x80
        if len(f) < base + (15 if request else 11):
            self._malformed(from_client, ts, "melsec_truncated", len(f))
            return
        fields: dict[str, Any] = {
            "frame": kind,
            "network": f[base + 2],
            "pc": f[base + 3],
            "module_io": _LE16.unpack_from(f, base + 4)[0],
            "station": f[base + 6],
        }
        if serial is not None:
            fields["serial"] = serial
        if request:
            *_h, command, sub = _3E_REQ.unpack_from(f, base)
            data = f[base + 15 :]
            self._request(from_client, ts, command, sub, data, fields, len(f), serial)
        else:
            end_code = _LE16.unpack_from(f, base + 9)[0]
            self._response(from_client, ts, end_code, fields, len(f), serial)

    def _request(
        self,
        from_client: bool,
        ts: float,
        command: int,
        sub: int,
        data: memoryview | bytes,
        fields: dict[str, Any],
        size: int,
        serial: int | None,
    ) -> None:
        s = self.session
        name, category = MC_COMMANDS.get(command, (f"unknown-{command:#06x}", OTHER))
        fields["subcommand"] = sub
        address = quantity = None
        objects: tuple[str, ...] | None = None
        if command in _DEVICE_COMMANDS:
            unit = SUBCOMMAND_UNITS.get(sub & 0x0F)
            if unit is not None:
                fields["unit"] = unit
            if command in (0x0401, 0x1401):
                if sub & 0x0F in (0, 1) and len(data) >= 6:
                    lo, hi, code, quantity = _DEV_QL.unpack_from(data, 0)
                    address = lo | hi << 16
                    objects = (DEVICES.get(code, f"{code:#04x}"),)
                elif sub & 0x0F in (2, 3) and len(data) >= 8:
                    address, code, quantity = _DEV_IQR.unpack_from(data, 0)
                    objects = (DEVICES.get(code & 0xFF, f"{code:#06x}"),)
        if serial is not None:
            if len(self._serials) >= MAX_PENDING:
                self._serials.clear()
                s.anomaly("melsec_pending_overflow")
            self._serials[serial] = (command, sub, ts)
        else:
            self._fifo.append((command, sub, ts))
        s.stats.func("melsec", f"{command:#06x}")
        s.event(
            from_client,
            ts,
            "melsec",
            REQUEST,
            command,
            name,
            category,
            address=address,
            quantity=quantity,
            objects=objects,
            fields=fields,
            size=size,
        )

    def _response(
        self, from_client: bool, ts: float, end_code: int, fields: dict[str, Any], size: int, serial: int | None
    ) -> None:
        s = self.session
        if serial is not None:
            req = self._serials.pop(serial, None)
        else:
            req = self._fifo.popleft() if self._fifo else None
        if req is None:
            command, name, category, latency = -1, "response", OTHER, None
            s.stats.func("melsec", "response")
        else:
            command, sub, start = req
            name, category = MC_COMMANDS.get(command, (f"unknown-{command:#06x}", OTHER))
            fields["subcommand"] = sub
            latency = pair_latency(start, ts)
            s.stats.func("melsec", f"{command:#06x}")
        s.event(
            from_client,
            ts,
            "melsec",
            RESPONSE,
            command,
            name,
            category,
            result=EXCEPTION if end_code else OK,
            code=end_code or None,
            latency=latency,
            fields=fields,
            size=size,
        )

    # -- MC protocol, ASCII -------------------------------------------------------------------
    def _ascii(self, from_client: bool, f: memoryview, ts: float, kind: str) -> None:
        hlen = 18 if kind == "3e_ascii" else 26
        base = 0 if kind == "3e_ascii" else 8
        request = f[0] == 0x35  # "5"
        fields: dict[str, Any] = {"frame": kind}
        serial = _hexval(f, 4, 4) if kind == "4e_ascii" else None
        if serial is not None:
            fields["serial"] = serial
        net, pc, io, station = (
            _hexval(f, base + 4, 2),
            _hexval(f, base + 6, 2),
            _hexval(f, base + 8, 4),
            _hexval(f, base + 12, 2),
        )
        if None in (net, pc, io, station):
            self._malformed(from_client, ts, "melsec_bad_ascii", len(f))
            return
        fields.update(network=net, pc=pc, module_io=io, station=station)
        if request:
            command, sub = _hexval(f, hlen + 4, 4), _hexval(f, hlen + 8, 4)
            if command is None or sub is None:
                self._malformed(from_client, ts, "melsec_bad_ascii", len(f))
                return
            self._request(from_client, ts, command, sub, b"", fields, len(f), serial)
        else:
            end_code = _hexval(f, hlen, 4)
            if end_code is None:
                self._malformed(from_client, ts, "melsec_bad_ascii", len(f))
                return
            self._response(from_client, ts, end_code, fields, len(f), serial)

    # -- MELSOFT ------------------------------------------------------------------------------
    def _melsoft(self, from_client: bool, f: memoryview, ts: float) -> None:
        s = self.session
        response = bool(f[0] & 0x80)
        cmd_off = MELSOFT_HEADER + (26 if response else 24)
        if len(f) < cmd_off + 4:
            self._malformed(from_client, ts, "melsec_melsoft_truncated", len(f))
            return
        command = _BE16.unpack_from(f, cmd_off)[0]
        ref = _LE16.unpack_from(f, cmd_off + 2)[0]
        name, category = MELSOFT_COMMANDS.get(command, (f"unknown-{command:#06x}", OTHER))
        fields: dict[str, Any] = {"frame": "melsoft", "reference": ref, "sequence": f[2]}
        result = OK
        code: int | None = None
        latency: float | None = None
        if response:
            status = _LE16.unpack_from(f, MELSOFT_HEADER + 4)[0]
            if status:
                result, code = EXCEPTION, status
            start = self._refs.pop(ref, None)
            if start is not None:
                latency = pair_latency(start, ts)
        else:
            if len(self._refs) >= MAX_PENDING:
                self._refs.clear()
                s.anomaly("melsec_pending_overflow")
            self._refs[ref] = ts
        s.stats.func("melsec", f"melsoft:{command:#06x}")
        s.event(
            from_client,
            ts,
            "melsec",
            RESPONSE if response else REQUEST,
            command,
            name,
            category,
            result=result,
            code=code,
            latency=latency,
            fields=fields,
            size=len(f),
        )

    def _malformed(self, from_client: bool, ts: float, anomaly: str, size: int, counted: bool = True) -> None:
        s = self.session
        if counted:
            s.anomaly(anomaly)
            s.stats.func("melsec", "malformed")
        s.event(
            from_client,
            ts,
            "melsec",
            REQUEST if from_client else RESPONSE,
            -1,
            "malformed",
            OTHER,
            result=MALFORMED,
            anomaly=anomaly,
            size=size,
        )


SPEC = ProtocolSpec(
    name="melsec",
    analyzer=MelsecAnalyzer,
    tcp_ports=frozenset({MELSOFT_TCP_PORT}),
    udp_ports=frozenset({MELSOFT_UDP_PORT}),
    probe=probe,
    probe_order=40,
    deep=False,
)

__all__ = ["SPEC", "MelsecAnalyzer", "probe", "frame_kind", "frame_length", "MC_COMMANDS", "MELSOFT_COMMANDS"]
