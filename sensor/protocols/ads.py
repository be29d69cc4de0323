"""Beckhoff ADS/AMS (TCP 48898) and the TwinCAT UDP discovery / route service (UDP 48899): identification.

Beckhoff Information System, "TwinCAT ADS" > "ADS specification" (AMS/TCP packet, AMS header, ADS
commands), all integers little-endian:

- AMS/TCP header (6): reserved (2, 0), length (4) of the AMS header and data.
- AMS header (32): target AMS net id (6), target port (2), source net id (6), source port (2),
  command id (2), state flags (2: 0x0001 response, 0x0004 ADS command, 0x0040 UDP), data length (4),
  error code (4), invoke id (4).
- Commands: 1 ReadDeviceInfo, 2 Read, 3 Write, 4 ReadState, 5 WriteControl, 6 AddDeviceNotification,
  7 DeleteDeviceNotification, 8 DeviceNotification (server to client), 9 ReadWrite. Read/Write/
  ReadWrite requests start with index group (4), index offset (4), length (4); WriteControl with the
  ADS state (2) and device state (2); every response with a result (4), and ReadDeviceInfo's with the
  version (major, minor, build) and the 16-octet device name.

UDP 48899 carries the (undocumented) TwinCAT discovery and route service, as implemented by
Beckhoff's own tools and by pyads/ads-client: magic 0x71146603, invoke id (4), service (4: 1
discovery, 6 add route; bit 31 = response), sender AMS net id (6) + port (2), tag count (4), tags
(id 2, length 2, value): 2 password, 3 TwinCAT version (major, minor, build), 4 OS version
(OSVERSIONINFO), 5 host name / address, 7 AMS net id, 12 route name, 13 user name. Passwords are never
copied into events (``password_present`` only). Anything else on that port is tried as a bare AMS
header (AMS over UDP).

Events: one per ADS command or discovery message; function = command id, unit = the ADS port of the
device (the target port of a request, the source port of a response: 851/801 PLC runtime, 10000
system service...); ``address`` = index offset and ``quantity`` = length for Read/Write/ReadWrite,
``fields["index_group"]``. Categories: ReadWrite is ``discovery`` for the symbol lookups (0xF003,
0xF007, 0xF009), ``read`` for sum reads, else ``write``. Identity: ReadDeviceInfo response (device
name and version) and the discovery response (host name, net id, TwinCAT and OS versions).
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
    UNSOLICITED,
    WRITE,
)
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session, pair_latency

TCP_PORT = 48898
UDP_PORT = 48899
DISCOVERY_MAGIC = 0x71146603

_TCP = struct.Struct("<HI")  # reserved, length
_AMS = struct.Struct("<6sH6sHHHIII")  # target id, port, source id, port, command, flags, length, error, invoke
_RW = struct.Struct("<III")  # index group, index offset, length
_DISC = struct.Struct("<III6sHI")  # magic, invoke id, service, net id, port, tag count
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

MAX_FRAME = 4 * 1024 * 1024  # ADS reads of large symbol tables run to megabytes
MAX_TAGS = 32
MAX_PENDING = 512

# command id -> (name, category)
COMMANDS: dict[int, tuple[str, str]] = {
    0: ("invalid", OTHER),
    1: ("read_device_info", DISCOVERY),
    2: ("read", READ),
    3: ("write", WRITE),
    4: ("read_state", DIAGNOSTIC),
    5: ("write_control", CONTROL),
    6: ("add_device_notification", READ),
    7: ("delete_device_notification", READ),
    8: ("device_notification", READ),
    9: ("read_write", WRITE),
}

# ADS index groups of the symbol and sum services (TwinCAT ADS "Index groups")
INDEX_GROUPS: dict[int, str] = {
    0xF003: "symbol_handle_by_name",
    0xF004: "symbol_value_by_name",
    0xF005: "symbol_value_by_handle",
    0xF006: "release_symbol_handle",
    0xF007: "symbol_info_by_name",
    0xF008: "symbol_version",
    0xF009: "symbol_info_by_name_ex",
    0xF00B: "symbol_upload",
    0xF00C: "symbol_upload_info",
    0xF00E: "datatype_upload",
    0xF00F: "symbol_upload_info2",
    0xF020: "input_image",
    0xF030: "output_image",
    0xF080: "sum_read",
    0xF081: "sum_write",
    0xF082: "sum_read_write",
    0xF083: "sum_read_ex",
    0xF084: "sum_read_ex2",
    0xF085: "sum_add_notification",
    0xF086: "sum_delete_notification",
}
_LOOKUP_GROUPS = frozenset({0xF003, 0xF007, 0xF009, 0xF00B, 0xF00C, 0xF00E, 0xF00F})
_SUM_READS = frozenset({0xF080, 0xF083, 0xF084})

ADS_STATES: dict[int, str] = {
    0: "invalid",
    1: "idle",
    2: "reset",
    3: "init",
    4: "start",
    5: "run",
    6: "stop",
    7: "savecfg",
    8: "loadcfg",
    9: "powerfailure",
    10: "powergood",
    11: "error",
    12: "shutdown",
    13: "suspend",
    14: "resume",
    15: "config",
    16: "reconfig",
}

DISCOVERY_SERVICES: dict[int, tuple[str, str]] = {1: ("discovery", DISCOVERY), 6: ("add_route", WRITE)}


def net_id(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _ams_ok(cmd: int, flags: int, length: int, avail: int | None = None) -> bool:
    if cmd > 9 or not flags & 0x0004 and cmd != 0:
        # every ADS message sets the "ADS command" flag (0x0004); system messages use command 0
        return False
    return avail is None or length == avail


def probe(payload: bytes, from_client: bool) -> bool:
    """AMS/TCP (reserved 0, length = 32 + AMS data length, a known command with the ADS flag) or the
    UDP discovery magic with a known service."""
    if len(payload) >= 12 and _U32.unpack_from(payload, 0)[0] == DISCOVERY_MAGIC:
        return _U32.unpack_from(payload, 8)[0] & 0x7FFFFFFF in DISCOVERY_SERVICES
    if len(payload) < 6 + _AMS.size:
        return False
    reserved, length = _TCP.unpack_from(payload, 0)
    if reserved != 0:
        return False
    *_ids, cmd, flags, dlen, _err, _inv = _AMS.unpack_from(payload, 6)
    return length == 32 + dlen and cmd != 0 and _ams_ok(cmd, flags, dlen)


class AdsAnalyzer(FramedStreamAnalyzer):
    protocol = "ads"
    max_buffer = MAX_FRAME + 64

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._pending: dict[int, tuple[int, float, int]] = {}  # invoke id -> (command, ts, index group)
        self._ids: dict[bytes, str] = {}  # AMS net id octets -> text: a flow has two or three of them

    def _net_id(self, raw: bytes) -> str:
        text = self._ids.get(raw)
        if text is None:
            if len(self._ids) >= 64:
                self._ids.clear()
            text = self._ids[raw] = net_id(raw)
        return text

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if self.session.transport == "tcp":
            super().feed(from_client, data, ts)
            return
        if len(data) >= 12 and _U32.unpack_from(data, 0)[0] == DISCOVERY_MAGIC:
            self._discovery(from_client, data, ts)
        elif len(data) >= _AMS.size:
            self._ams(from_client, memoryview(data), ts)
        else:
            self._malformed(from_client, ts, "ads_truncated", len(data))

    # -- AMS/TCP framing ----------------------------------------------------------------------
    def frame_length(self, buf: bytes, off: int) -> int | None:
        if len(buf) - off < 6:
            return None
        reserved, length = _TCP.unpack_from(buf, off)
        if reserved != 0 or length < _AMS.size or length > MAX_FRAME:
            return -1
        return 6 + length

    def on_bad_framing(self, from_client: bool, data: memoryview, ts: float) -> None:
        self._malformed(from_client, ts, "ads_bad_framing", len(data), counted=False)

    def on_pdu(self, from_client: bool, pdu: memoryview, ts: float) -> None:
        self._ams(from_client, pdu[6:], ts)

    # -- AMS header + ADS command -------------------------------------------------------------
    def _ams(self, from_client: bool, m: memoryview, ts: float) -> None:
        s = self.session
        if len(m) < _AMS.size:
            self._malformed(from_client, ts, "ads_truncated", len(m))
            return
        tid, tport, sid, sport, cmd, flags, dlen, error, invoke = _AMS.unpack_from(m, 0)
        anomaly: str | None = None
        if dlen != len(m) - _AMS.size:
            anomaly = "ads_bad_length"
        if not _ams_ok(cmd, flags, dlen):
            anomaly = anomaly or "ads_bad_header"
        s.stats.pdu("ads")
        s.stats.func("ads", str(cmd))
        response = bool(flags & 0x0001)
        name, category = COMMANDS.get(cmd, (f"unknown-{cmd}", OTHER))
        fields: dict[str, Any] = {
            "target_net_id": self._net_id(tid),
            "target_port": tport,
            "source_net_id": self._net_id(sid),
            "source_port": sport,
            "invoke_id": invoke,
        }
        data = m[_AMS.size :]
        address = quantity = None
        result = OK
        code: int | None = None
        latency: float | None = None
        if response:
            direction = RESPONSE
            req = self._pending.pop(invoke, None)
            if req is not None:
                latency = pair_latency(req[1], ts)
                if req[0] == 9:
                    category = _rw_category(req[2])
            ads_result = _U32.unpack_from(data, 0)[0] if len(data) >= 4 else 0
            if error or ads_result:
                result, code = EXCEPTION, error or ads_result
            elif cmd == 1 and len(data) >= 24:
                major, minor, build = struct.unpack_from("<BBH", data, 4)
                fields["identity"] = {"device_name": _text(data[8:24]), "version": f"{major}.{minor}.{build}"}
            elif cmd == 4 and len(data) >= 8:
                state, dev_state = struct.unpack_from("<HH", data, 4)
                fields["ads_state"] = ADS_STATES.get(state, str(state))
                fields["device_state"] = dev_state
        else:
            direction = UNSOLICITED if cmd == 8 else REQUEST
            group = -1
            if cmd in (2, 3, 6, 9) and len(data) >= _RW.size:
                group, address, quantity = _RW.unpack_from(data, 0)
                fields["index_group"] = group
                gname = INDEX_GROUPS.get(group)
                if gname is not None:
                    fields["index_group_name"] = gname
                if cmd == 9:
                    category = _rw_category(group)
            elif cmd == 5 and len(data) >= 4:
                state, dev_state = struct.unpack_from("<HH", data, 0)
                fields["ads_state"] = ADS_STATES.get(state, str(state))
                fields["device_state"] = dev_state
            elif cmd == 7 and len(data) >= 4:
                fields["notification_handle"] = _U32.unpack_from(data, 0)[0]
            if cmd != 8:
                pending = self._pending
                if len(pending) >= MAX_PENDING:
                    pending.clear()
                    s.anomaly("ads_pending_overflow")
                pending[invoke] = (cmd, ts, group)
        if anomaly is not None:
            s.anomaly(anomaly)
            result = MALFORMED
        s.event(
            from_client,
            ts,
            "ads",
            direction,
            cmd,
            name,
            category,
            unit=sport if response else tport,
            address=address,
            quantity=quantity,
            result=result,
            code=code,
            latency=latency,
            anomaly=anomaly,
            fields=fields,
            size=len(m),
        )

    # -- UDP discovery / route service --------------------------------------------------------
    def _discovery(self, from_client: bool, data: bytes, ts: float) -> None:
        s = self.session
        s.stats.pdu("ads")
        if len(data) < _DISC.size:
            self._malformed(from_client, ts, "ads_discovery_truncated", len(data), counted=True, stats=False)
            return
        _magic, invoke, service, nid, port, ntags = _DISC.unpack_from(data, 0)
        response = bool(service & 0x80000000)
        sid = service & 0x7FFFFFFF
        name, category = DISCOVERY_SERVICES.get(sid, (f"discovery_service-{sid}", OTHER))
        s.stats.func("ads", f"udp:{sid}")
        fields: dict[str, Any] = {"invoke_id": invoke, "net_id": net_id(nid), "port": port}
        identity: dict[str, Any] = {}
        off = _DISC.size
        anomaly: str | None = None
        for _ in range(min(ntags, MAX_TAGS)):
            if off + _TAG.size > len(data):
                anomaly = "ads_discovery_bad_tag"
                break
            tag, tlen = _TAG.unpack_from(data, off)
            off += _TAG.size
            value = data[off : off + tlen]
            if len(value) < tlen:
                anomaly = "ads_discovery_bad_tag"
                break
            off += tlen
            if tag == 5:
                identity["host"] = _text(value)
            elif tag == 3 and tlen >= 4:
                identity["twincat_version"] = f"{value[0]}.{value[1]}.{_U16.unpack_from(value, 2)[0]}"
            elif tag == 4 and tlen >= 20:
                major, minor, build, platform = struct.unpack_from("<IIII", value, 4)
                identity["os_version"] = f"{major}.{minor}.{build}"
                identity["os_platform"] = platform
            elif tag == 7 and tlen >= 6:
                fields["route_net_id"] = net_id(value[:6])
            elif tag == 12:
                fields["route_name"] = _text(value)
            elif tag == 13:
                fields["user_name"] = _text(value)
            elif tag == 2:
                fields["password_present"] = True  # never the password itself
        if identity:
            identity["net_id"] = fields["net_id"]
            fields["identity"] = identity
        if anomaly is not None:
            s.anomaly(anomaly)
        s.event(
            from_client,
            ts,
            "ads",
            RESPONSE if response else REQUEST,
            -1,
            name,
            category,
            result=MALFORMED if anomaly else OK,
            anomaly=anomaly,
            fields=fields,
            size=len(data),
        )

    def _malformed(
        self, from_client: bool, ts: float, anomaly: str, size: int, counted: bool = True, stats: bool = True
    ) -> None:
        s = self.session
        if counted:
            s.anomaly(anomaly)
        if stats:
            s.stats.pdu("ads")
        s.stats.func("ads", "malformed")
        s.event(
            from_client,
            ts,
            "ads",
            REQUEST if from_client else RESPONSE,
            -1,
            "malformed",
            OTHER,
            result=MALFORMED,
            anomaly=anomaly,
            size=size,
        )


def _rw_category(group: int) -> str:
    if group in _LOOKUP_GROUPS:
        return DISCOVERY
    if group in _SUM_READS:
        return READ
    return WRITE


def _text(raw: bytes | memoryview) -> str:
    return bytes(raw).split(b"\x00", 1)[0].decode("latin-1").strip()


SPEC = ProtocolSpec(
    name="ads",
    analyzer=AdsAnalyzer,
    tcp_ports=frozenset({TCP_PORT}),
    udp_ports=frozenset({UDP_PORT}),
    probe=probe,
    probe_order=40,
    deep=False,
)

__all__ = ["SPEC", "AdsAnalyzer", "probe", "COMMANDS", "INDEX_GROUPS", "ADS_STATES"]
