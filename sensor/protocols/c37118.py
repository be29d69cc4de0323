"""IEEE C37.118.2 synchrophasor frames (TCP 4712, UDP 4713): identification.

IEEE Std C37.118.2-2011 section 6.2, common frame header (big-endian): SYNC (2: 0xAA, then bit 7
reserved, bits 6-4 frame type, bits 3-0 version: 1 = 2005, 2 = 2011, 3 = the 2011 CFG-3 draft),
FRAMESIZE (2, the whole frame), IDCODE (2, the stream's id), SOC (4, seconds), FRACSEC (4, time
quality in the top octet), then the frame body and CHK, a CRC-CCITT (polynomial 0x1021, initial value
0xFFFF, no final XOR; section 6.2 and annex B) over everything before it.

Frame types: 0 data, 1 header, 2 configuration 1, 3 configuration 2, 4 command, 5 configuration 3.
Command frames (section 6.6) carry CMD (2): 1 turn off transmission of data frames, 2 turn on
transmission, 3 send HDR, 4 send CFG-1, 5 send CFG-2, 6 send CFG-3, 8 extended frame; 0x0100-0x0FFF
are user-designated.

Events: one per frame, unit = IDCODE. A command frame is a request whose function is its CMD
(``turn_off_transmission``, ``send_cfg2``...); other frames are keyed by their type (``data``,
``header``, ``cfg1``, ``cfg2``, ``cfg3``): configuration and header frames are responses, data frames
unsolicited reports. A bad CRC is counted (``c37118_bad_crc``) and the event carries it
(result ``malformed``): the values are not trusted. A CFG-1/CFG-2 frame gives the stations it
describes (STN, IDCODE) and the data rate into ``fields["identity"]``.

Over TCP the frames are framed by FRAMESIZE; after lost bytes the analyzer resynchronises on the
next plausible SYNC word instead of dropping the rest of the segment.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any

from sensor.events import CONTROL, DISCOVERY, MALFORMED, OK, OTHER, READ, REQUEST, RESPONSE, UNSOLICITED
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session

TCP_PORT = 4712
UDP_PORT = 4713

_HDR = struct.Struct("!BBHHII")  # 0xAA, type/version, FRAMESIZE, IDCODE, SOC, FRACSEC
_U16 = struct.Struct("!H")
_CFG = struct.Struct("!IH")  # TIME_BASE, NUM_PMU
_PMU = struct.Struct("!16sHHHHH")  # STN, IDCODE, FORMAT, PHNMR, ANNMR, DGNMR

MIN_FRAME = 16  # header (14) + CHK (2)
MAX_FRAME = 65535
MAX_STATIONS = 64  # station names kept from one configuration frame

# frame type -> (name, category, direction)
FRAME_TYPES: dict[int, tuple[str, str, str]] = {
    0: ("data", READ, UNSOLICITED),
    1: ("header", DISCOVERY, RESPONSE),
    2: ("cfg1", DISCOVERY, RESPONSE),
    3: ("cfg2", DISCOVERY, RESPONSE),
    4: ("command", CONTROL, REQUEST),
    5: ("cfg3", DISCOVERY, RESPONSE),
}

# CMD -> (name, category)
COMMANDS: dict[int, tuple[str, str]] = {
    1: ("turn_off_transmission", CONTROL),
    2: ("turn_on_transmission", CONTROL),
    3: ("send_header", DISCOVERY),
    4: ("send_cfg1", DISCOVERY),
    5: ("send_cfg2", DISCOVERY),
    6: ("send_cfg3", DISCOVERY),
    8: ("extended_frame", OTHER),
}


def header_ok(buf: bytes | memoryview, off: int = 0) -> bool:
    """SYNC 0xAA, a known frame type, version 1-3, reserved bit clear, FRAMESIZE at least a header."""
    if len(buf) - off < 4 or buf[off] != 0xAA:
        return False
    tv = buf[off + 1]
    size = _U16.unpack_from(buf, off + 2)[0]
    return not tv & 0x80 and (tv >> 4) in FRAME_TYPES and 1 <= (tv & 0x0F) <= 3 and size >= MIN_FRAME


def crc_ok(frame: bytes | memoryview) -> bool:
    """CRC-CCITT (0x1021, init 0xFFFF) of the frame without CHK equals CHK (binascii.crc_hqx is it)."""
    return binascii.crc_hqx(frame[:-2], 0xFFFF) == _U16.unpack_from(frame, len(frame) - 2)[0]


def probe(payload: bytes, from_client: bool) -> bool:
    """A C37.118 header; when the whole frame is in the probe bytes, its CRC must match too."""
    if len(payload) < 14 or not header_ok(payload) or payload[10] & 0x80:
        return False  # FRACSEC bit 31 is reserved (0)
    size = _U16.unpack_from(payload, 2)[0]
    if size <= len(payload):
        return crc_ok(payload[:size])
    # a command frame is 18 octets, always whole in the probe: other types are longer
    return payload[1] >> 4 != 4


class C37118Analyzer(FramedStreamAnalyzer):
    protocol = "c37118"
    max_buffer = 2 * MAX_FRAME

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._resync = {True: False, False: False}

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if self.session.transport != "tcp":
            self._datagram(from_client, data, ts)
            return
        s = self.session
        pending = self._buf[from_client]
        buf = pending + data if pending else data
        n = len(buf)
        off = 0
        if self._resync[from_client]:
            # after lost bytes: skip to the first plausible header
            off = _find_sync(buf)
            if off < 0:
                s.anomaly("c37118_resync_skipped")
                self._buf[from_client] = b""
                return
            self._resync[from_client] = False
        view = memoryview(buf)
        while off < n:
            length = self.frame_length(buf, off)
            if length is None:
                break
            if length < 0:
                # lost sync inside the stream: count it and look for the next header in these bytes
                s.anomaly("c37118_bad_framing")
                nxt = _find_sync(buf, off + 1)
                if nxt < 0:
                    off = n
                    break
                off = nxt
                continue
            if off + length > n:
                break
            self.on_pdu(from_client, view[off : off + length], ts)
            off += length
        rest = buf[off:] if off < n else b""
        if len(rest) > self.max_buffer:
            s.anomaly("c37118_buffer_cap")
            rest = b""
        self._buf[from_client] = rest
        if rest or pending:
            self.report_held(ts)  # the global buffer budget (sensor/budget.py)

    def gap(self, from_client: bool, ts: float) -> None:
        super().gap(from_client, ts)
        self._resync[from_client] = True

    def frame_length(self, buf: bytes, off: int) -> int | None:
        if len(buf) - off < 4:
            return None
        if not header_ok(buf, off):
            return -1
        return _U16.unpack_from(buf, off + 2)[0]

    def _datagram(self, from_client: bool, data: bytes, ts: float) -> None:
        off = 0
        n = len(data)
        view = memoryview(data)
        while off < n:
            length = self.frame_length(data, off)
            if length is not None and length < 0:
                self.session.anomaly("c37118_bad_frame")
                return
            if length is None or off + length > n:
                self.session.anomaly("c37118_truncated")
                return
            self.on_pdu(from_client, view[off : off + length], ts)
            off += length

    def on_pdu(self, from_client: bool, f: memoryview, ts: float) -> None:
        s = self.session
        _sync, tv, size, idcode, soc, fracsec = _HDR.unpack_from(f, 0)
        ftype, version = tv >> 4, tv & 0x0F
        name, category, direction = FRAME_TYPES[ftype]
        function = ftype
        fields: dict[str, Any] | None = None
        anomaly: str | None = None
        s.stats.pdu("c37118")
        if not crc_ok(f):
            anomaly = "c37118_bad_crc"
        if ftype == 4:
            if size >= 18:
                cmd = _U16.unpack_from(f, 14)[0]
                name, category = COMMANDS.get(
                    cmd, (f"user_command-{cmd:#06x}" if 0x100 <= cmd <= 0xFFF else f"unknown-command-{cmd}", OTHER)
                )
                function = 0x100 + cmd  # commands live above the frame types: func 0x101 = turn off
            else:
                anomaly = anomaly or "c37118_bad_command"
        elif ftype != 0:
            fields = {"version": version, "soc": soc}
            if ftype in (2, 3) and anomaly is None:
                ident = _config_identity(f)
                if ident is None:
                    anomaly = "c37118_bad_config"
                else:
                    fields["identity"] = ident
        s.stats.func("c37118", name)
        if anomaly is not None:
            s.anomaly(anomaly)
        s.event(
            from_client,
            ts,
            "c37118",
            direction,
            function,
            name,
            category,
            unit=idcode,
            result=MALFORMED if anomaly else OK,
            anomaly=anomaly,
            fields=fields,
            size=size,
        )


def _find_sync(data: bytes, start: int = 0) -> int:
    """Offset of the first plausible frame header at or after ``start`` (-1 if none). A 0xAA in the
    last three octets is returned too: more bytes are needed to judge it."""
    i = data.find(b"\xaa", start)
    n = len(data)
    while i >= 0:
        if i + 4 > n or header_ok(data, i):
            return i
        i = data.find(b"\xaa", i + 1)
    return -1


def _config_identity(f: memoryview) -> dict[str, Any] | None:
    """CFG-1/CFG-2 (section 6.4): TIME_BASE, NUM_PMU, per PMU STN/IDCODE/FORMAT/counts/names/units,
    then DATA_RATE. Returns stations (name, idcode) and the data rate; None if the counts overrun."""
    end = len(f) - 2
    if end < 14 + _CFG.size:
        return None
    _timebase, num_pmu = _CFG.unpack_from(f, 14)
    off = 14 + _CFG.size
    stations: list[dict[str, Any]] = []
    for _ in range(num_pmu):
        if off + _PMU.size > end:
            return None
        stn, pmu_id, _fmt, phnmr, annmr, dgnmr = _PMU.unpack_from(f, off)
        if len(stations) < MAX_STATIONS:
            stations.append({"station": stn.decode("latin-1").strip(" \x00"), "idcode": pmu_id})
        # CHNAM 16*(PHNMR+ANNMR+16*DGNMR), PHUNIT 4*PHNMR, ANUNIT 4*ANNMR, DIGUNIT 4*DGNMR, FNOM 2, CFGCNT 2
        off += _PMU.size + 16 * (phnmr + annmr + 16 * dgnmr) + 4 * (phnmr + annmr + dgnmr) + 4
    if off + 2 > end:
        return None
    rate = struct.unpack_from("!h", f, off)[0]
    return {"num_pmu": num_pmu, "stations": stations, "data_rate": rate}


SPEC = ProtocolSpec(
    name="c37118",
    analyzer=C37118Analyzer,
    tcp_ports=frozenset({TCP_PORT}),
    udp_ports=frozenset({UDP_PORT}),
    probe=probe,
    probe_order=30,
    deep=False,
)

__all__ = ["SPEC", "C37118Analyzer", "probe", "crc_ok", "header_ok", "FRAME_TYPES", "COMMANDS"]
