"""PROFINET DCP and real-time frames (ethertype 0x8892): identification.

The flow layer hands us the bytes after the ethertype (VLAN tags removed); the session's addresses are
the MAC addresses. Every PROFINET RT frame starts with a 2-byte FrameID (IEC 61158-6-10 section
4.2.2.2, table "FrameID"), which says what follows:

======================  ==========================================================================
FrameID                 meaning (what we do)
======================  ==========================================================================
0x0000-0x00FF           time synchronisation, PTCP (counted ``ptcp``)
0x0100-0x0FFF           RT_CLASS_3 cyclic data (counted ``cyclic``)
0x8000-0xBFFF           RT_CLASS_2 cyclic data (counted ``cyclic``)
0xC000-0xFBFF           RT_CLASS_1 / RT_CLASS_UDP cyclic data (counted ``cyclic``)
0xFC01, 0xFE01          alarm high / low, RTA-PDU (an event: ``alarm_high`` / ``alarm_low``)
0xFEFC                  DCP Hello request (event)
0xFEFD                  DCP Get/Set request and response (event)
0xFEFE                  DCP Identify request, multicast (event)
0xFEFF                  DCP Identify response (event)
0xFF00-0xFF7F           PTCP delay/announce/follow-up (counted ``ptcp``)
0xFF80-0xFF8F           RT fragmentation (counted ``fragment``)
======================  ==========================================================================

Cyclic frames arrive every millisecond or so; they are counted under the ``profinet_rt`` protocol
(PDUs and a func histogram of the kinds above) and never become events.

DCP (IEC 61158-6-10 section 4.3, "DCP"): after the FrameID, ServiceID (1: 3 Get, 4 Set, 5 Identify,
6 Hello), ServiceType (1: 0 request, 1 response success, 5 response "not supported"), Xid (4),
ResponseDelay or reserved (2), DCPDataLength (2), then blocks: Option (1), Suboption (1),
DCPBlockLength (2), the value, padded to an even length. Block values start with a 2-byte BlockInfo in
responses and Hello, with a 2-byte BlockQualifier in Set requests; Identify filters carry the bare
value; a Get request is a list of Option/Suboption pairs.

From Identify responses and Hello we take the station's identity into ``fields["identity"]``: name of
station, type of station (vendor text), vendor and device id, role, alias, instance, OEM ids, IP
parameters. Set requests list what they set (name, IP, factory reset, signal): these are the
configuration changes a rule wants to see.
"""

from __future__ import annotations

import struct
from typing import Any

from sensor.events import (
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
    UNSOLICITED,
    WRITE,
)
from sensor.protocols.base import Analyzer, ProtocolSpec

ETHERTYPE_PROFINET = 0x8892

_U16 = struct.Struct("!H")
_DCP = struct.Struct("!HBBIHH")  # FrameID, ServiceID, ServiceType, Xid, ResponseDelay, DCPDataLength
_BLOCK = struct.Struct("!BBH")  # Option, Suboption, DCPBlockLength
_RTA = struct.Struct("!HHBBHH")  # AlarmDst, AlarmSrc, PDUType, AddFlags, SendSeqNum, AckSeqNum

MAX_BLOCKS = 32  # blocks read per DCP PDU (an Identify response has about eight)
MAX_TEXT = 240  # NameOfStation is at most 240 octets (IEC 61158-6-10)

SERVICES: dict[int, str] = {3: "get", 4: "set", 5: "identify", 6: "hello"}
SERVICE_TYPES: dict[int, str] = {0: "request", 1: "response", 5: "response_not_supported"}

# (option, suboption) -> name
OPTIONS: dict[tuple[int, int], str] = {
    (1, 1): "mac_address",
    (1, 2): "ip_parameter",
    (1, 3): "full_ip_suite",
    (2, 1): "type_of_station",
    (2, 2): "name_of_station",
    (2, 3): "device_id",
    (2, 4): "device_role",
    (2, 5): "device_options",
    (2, 6): "alias_name",
    (2, 7): "device_instance",
    (2, 8): "oem_device_id",
    (2, 9): "standard_gateway",
    (3, 12): "dhcp_host_name",
    (3, 43): "dhcp_vendor_specific",
    (3, 54): "dhcp_server_id",
    (3, 55): "dhcp_parameter_request",
    (3, 60): "dhcp_class_id",
    (3, 61): "dhcp_client_id",
    (3, 81): "dhcp_fqdn",
    (3, 97): "dhcp_uuid",
    (5, 1): "start_transaction",
    (5, 2): "end_transaction",
    (5, 3): "signal",
    (5, 4): "response",
    (5, 5): "factory_reset",
    (5, 6): "reset_to_factory",
    (6, 1): "device_initiative",
    (0xFF, 0xFF): "all_selector",
}

# Frame ids that must carry a given DCP service (anything else is counted as a mismatch)
_FRAME_SERVICES: dict[int, tuple[int, ...]] = {0xFEFC: (6,), 0xFEFD: (3, 4), 0xFEFE: (5,), 0xFEFF: (5,)}


def frame_kind(frame_id: int) -> str:
    """The func-histogram key of a non-DCP RT frame (see the module table)."""
    if frame_id <= 0x00FF or 0xFF00 <= frame_id <= 0xFF7F:
        return "ptcp"
    if 0x0100 <= frame_id <= 0x0FFF or 0x8000 <= frame_id <= 0xFBFF:
        return "cyclic"
    if 0xFF80 <= frame_id <= 0xFF8F:
        return "fragment"
    if frame_id in (0xFC01, 0xFE01):
        return "alarm"
    return "other"


def _text(value: bytes) -> str:
    return value[:MAX_TEXT].split(b"\x00", 1)[0].decode("latin-1")


def _ip(value: bytes) -> str:
    return ".".join(str(b) for b in value[:4])


class ProfinetAnalyzer(Analyzer):
    """One layer-2 conversation on ethertype 0x8892 (DCP events, RT frames counted)."""

    protocol = "profinet_dcp"

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        s = self.session
        if len(data) < 2:
            s.anomaly("profinet_rt_truncated")
            return
        frame_id = _U16.unpack_from(data, 0)[0]
        if 0xFEFC <= frame_id <= 0xFEFF:
            self._dcp(from_client, data, ts, frame_id)
            return
        kind = frame_kind(frame_id)
        stats = s.stats
        stats.pdu("profinet_rt")
        stats.func("profinet_rt", kind)
        if kind == "alarm":
            self._alarm(from_client, data, ts, frame_id)

    # -- alarms -------------------------------------------------------------------------------
    def _alarm(self, from_client: bool, data: bytes, ts: float, frame_id: int) -> None:
        s = self.session
        name = "alarm_high" if frame_id == 0xFC01 else "alarm_low"
        if len(data) < 2 + _RTA.size:
            s.anomaly("profinet_rt_alarm_truncated")
            s.event(
                from_client,
                ts,
                "profinet_rt",
                UNSOLICITED,
                frame_id,
                name,
                DIAGNOSTIC,
                result=MALFORMED,
                anomaly="profinet_rt_alarm_truncated",
                size=len(data),
            )
            return
        dst, src, pdu_type, _flags, send_seq, ack_seq = _RTA.unpack_from(data, 2)
        rta = {1: "data", 2: "nack", 3: "ack", 4: "err"}.get(pdu_type & 0x0F, f"unknown-{pdu_type & 0x0F}")
        s.event(
            from_client,
            ts,
            "profinet_rt",
            UNSOLICITED,
            frame_id,
            name,
            DIAGNOSTIC,
            result=EXCEPTION if rta == "err" else OK,
            fields={"rta_pdu_type": rta, "alarm_dst": dst, "alarm_src": src, "send_seq": send_seq, "ack_seq": ack_seq},
            size=len(data),
        )

    # -- DCP ----------------------------------------------------------------------------------
    def _dcp(self, from_client: bool, data: bytes, ts: float, frame_id: int) -> None:
        s = self.session
        s.stats.pdu("profinet_dcp")
        if len(data) < _DCP.size:
            self._malformed(from_client, ts, frame_id, "profinet_dcp_truncated", len(data))
            return
        _fid, service, stype, xid, _delay, dlen = _DCP.unpack_from(data, 0)
        name = SERVICES.get(service)
        if name is None:
            self._malformed(from_client, ts, frame_id, "profinet_dcp_unknown_service", len(data), service)
            return
        anomaly: str | None = None
        if service not in _FRAME_SERVICES[frame_id] or stype not in SERVICE_TYPES:
            anomaly = "profinet_dcp_service_mismatch"
        end = _DCP.size + dlen
        if end > len(data):
            anomaly = "profinet_dcp_bad_length"
            end = len(data)
        request = stype == 0
        fields: dict[str, Any] = {"xid": xid, "frame_id": frame_id}
        options: list[str] = []
        identity: dict[str, Any] = {}
        values: dict[str, Any] = {}
        block_error: int | None = None
        if service == 3 and request:
            # Get request: a list of option/suboption pairs, no block bodies
            off = _DCP.size
            while off + 2 <= end and len(options) < MAX_BLOCKS:
                options.append(OPTIONS.get((data[off], data[off + 1]), f"option-{data[off]}-{data[off + 1]}"))
                off += 2
        else:
            # BlockInfo (responses, Hello) or BlockQualifier (Set request) precede the value;
            # Identify request filters have neither.
            skip = 0 if (service == 5 and request) else 2
            off = _DCP.size
            blocks = 0
            while off + _BLOCK.size <= end:
                if blocks >= MAX_BLOCKS:
                    s.anomaly("profinet_dcp_block_cap")
                    break
                blocks += 1
                opt, sub, blen = _BLOCK.unpack_from(data, off)
                voff = off + _BLOCK.size
                vend = voff + blen
                if vend > end:
                    anomaly = anomaly or "profinet_dcp_bad_block"
                    break
                oname = OPTIONS.get((opt, sub), f"option-{opt}-{sub}")
                options.append(oname)
                if (opt, sub) == (5, 4):
                    # Set/Get response: the option answered and its BlockError
                    if blen >= 3:
                        err = data[voff + 2]
                        if err:
                            block_error = err
                elif blen >= skip:
                    value = data[voff + skip : vend]
                    target = values if (service == 4 and request) else identity
                    _option_value(oname, value, target)
                off = vend + (blen & 1)  # blocks are padded to an even length
        if options:
            fields["options"] = options
        if identity:
            # an Identify request's blocks are a filter (whom it asks for), everywhere else an identity
            fields["filter" if (service == 5 and request) else "identity"] = identity
        if values:
            fields["set"] = values
        result = OK
        code: int | None = None
        if stype == 5:
            result = EXCEPTION
        elif block_error is not None:
            result, code = EXCEPTION, block_error
        if anomaly is not None:
            s.anomaly(anomaly)
            result = MALFORMED
        category = _category(service, options)
        s.stats.func("profinet_dcp", name)
        s.event(
            from_client,
            ts,
            "profinet_dcp",
            REQUEST if request else RESPONSE,
            service,
            name,
            category,
            result=result,
            code=code,
            anomaly=anomaly,
            fields=fields,
            size=end,
        )

    def _malformed(
        self, from_client: bool, ts: float, frame_id: int, anomaly: str, size: int, service: int = -1
    ) -> None:
        s = self.session
        s.anomaly(anomaly)
        s.stats.func("profinet_dcp", "malformed")
        s.event(
            from_client,
            ts,
            "profinet_dcp",
            REQUEST,
            service,
            "malformed" if service < 0 else f"unknown-{service}",
            OTHER,
            result=MALFORMED,
            anomaly=anomaly,
            fields={"frame_id": frame_id},
            size=size,
        )


def _option_value(name: str, value: bytes, out: dict[str, Any]) -> None:
    """Decode the option values that identify a station (others are only listed by name)."""
    if name in ("name_of_station", "type_of_station", "alias_name"):
        out[name] = _text(value)
    elif name == "device_id" and len(value) >= 4:
        out["vendor_id"], out["device_id"] = struct.unpack_from("!HH", value, 0)
    elif name == "oem_device_id" and len(value) >= 4:
        out["oem_vendor_id"], out["oem_device_id"] = struct.unpack_from("!HH", value, 0)
    elif name == "device_role" and value:
        out["device_role"] = value[0]
    elif name == "device_instance" and len(value) >= 2:
        out["device_instance"] = (value[0] << 8) | value[1]
    elif name in ("ip_parameter", "full_ip_suite") and len(value) >= 12:
        out["ip"], out["netmask"], out["gateway"] = _ip(value), _ip(value[4:]), _ip(value[8:])
    elif name == "mac_address" and len(value) >= 6:
        out["mac"] = value[:6].hex(":")
    elif name in ("factory_reset", "reset_to_factory", "signal"):
        out[name] = True


def _category(service: int, options: list[str]) -> str:
    if service in (5, 6):
        return DISCOVERY
    if service == 3:
        return READ
    # Set: a factory reset rewrites the configuration; signal only blinks an LED
    if "factory_reset" in options or "reset_to_factory" in options:
        return PROGRAM
    if options and all(o in ("signal", "start_transaction", "end_transaction", "response") for o in options):
        return DIAGNOSTIC
    return WRITE


SPEC = ProtocolSpec(
    name="profinet_dcp",
    analyzer=ProfinetAnalyzer,
    ethertypes=frozenset({ETHERTYPE_PROFINET}),
    reports=("profinet_dcp", "profinet_rt"),
    deep=False,
)

__all__ = ["SPEC", "ProfinetAnalyzer", "SERVICES", "OPTIONS", "frame_kind", "ETHERTYPE_PROFINET"]
