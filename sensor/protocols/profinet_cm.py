"""PROFINET IO context management (IO-CM) over connectionless DCE/RPC (UDP 34964): identification.

Transport: DCE/RPC connectionless protocol (C706 "DCE 1.1: Remote Procedure Call", chapter 12.5,
the 80-byte CL header) over UDP. The server port is 34964 for the first call; many calls then run
between ephemeral ports (the device answers the controller's port, the controller's CControl call goes
to the device's ephemeral port), so the probe, not the port, finds most of these flows.

CL header (C706 12.5.2): rpc_vers (4), ptype, flags1, flags2, drep[3] (drep[0] high nibble: 0 big-
endian, 1 little-endian integers; it also orders the UUID fields), serial_hi, object UUID, interface
UUID, activity UUID, server_boot, if_vers, seqnum, opnum, ihint, ahint, len (body), fragnum,
auth_proto, serial_lo. ptypes: 0 request, 1 ping, 2 response, 3 fault, 4 working, 5 nocall, 6 reject,
7 ack, 8 cl_cancel, 9 fack, 10 cancel_ack. flags1: 0x02 last fragment, 0x04 fragment.

PROFINET IO interfaces (IEC 61158-6-10 section 4.10.3.2): DEA00001-6C97-11D1-8271-00A02442DF7D
(device), ...0002 (controller), ...0003 (supervisor), ...0004 (parameter server). The object UUID is
DEA00000-6C97-11D1-8271-<instance 2><device id 2><vendor id 2>, which names the device addressed.
Operations (section 4.10.3.2.2): 0 Connect, 1 Release, 2 Read, 3 Write, 4 Control, 5 Read Implicit.

Counting follows Wireshark's ``pn_io.opnum`` (GROUND_TRUTH.json ``profinet_io``): one PDU per request
or response of a PNIO interface, counted on its last fragment (a fragmented call is counted once), key
= opnum. Faults and rejects become events (result ``exception``) but are not counted, as in
Wireshark; pings, working, acks and the like are only counted as ``profinet_io_rpc_<ptype>``.

From the first fragment's body (NDR header of 20 octets, then big-endian PNIO blocks, section
5.2.3) we read the first block type, the record index and slot/subslot of Read/Write, the
controller's station name from the Connect's ARBlockReq, the ControlCommand of Control, and a
response's PNIOStatus (non-zero: ``exception`` with the status as code).

Responses are not paired with requests (no latency): a call and its answer usually travel on two
different UDP flows (request to 34964, response from the device's ephemeral port), and flows do not
share state.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from sensor.events import EXCEPTION, MALFORMED, OK, OTHER, READ, REQUEST, RESPONSE, SESSION, WRITE
from sensor.protocols.base import Analyzer, ProtocolSpec

PORT = 34964
HEADER = 80

_HEAD = struct.Struct("!BBBB3sB16s16s16s")  # byte-order independent part (56 octets)
_TAIL = {0: struct.Struct(">IIIHHHHHBB"), 1: struct.Struct("<IIIHHHHHBB")}  # offset 56, by drep
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_BLOCK = struct.Struct("!HHH")  # BlockType, BlockLength, BlockVersion


def _pnio_uuid(n: int) -> str:
    return f"dea0000{n}-6c97-11d1-8271-00a02442df7d"


INTERFACES: dict[str, str] = {
    _pnio_uuid(1): "device",
    _pnio_uuid(2): "controller",
    _pnio_uuid(3): "supervisor",
    _pnio_uuid(4): "parameter_server",
}
# the 16 wire octets of each interface UUID, in both byte orders -> interface name
_IFACE_BYTES: dict[bytes, str] = {}
for _text, _name in INTERFACES.items():
    _u = uuid.UUID(_text)
    _IFACE_BYTES[_u.bytes] = _name
    _IFACE_BYTES[_u.bytes_le] = _name
_OBJECT_PREFIX = {
    0: uuid.UUID("dea00000-6c97-11d1-8271-000000000000").bytes[:10],
    1: uuid.UUID("dea00000-6c97-11d1-8271-000000000000").bytes_le[:10],
}

PTYPES: dict[int, str] = {
    0: "request",
    1: "ping",
    2: "response",
    3: "fault",
    4: "working",
    5: "nocall",
    6: "reject",
    7: "ack",
    8: "cl_cancel",
    9: "fack",
    10: "cancel_ack",
}

# opnum -> (name, category)
OPERATIONS: dict[int, tuple[str, str]] = {
    0: ("connect", SESSION),
    1: ("release", SESSION),
    2: ("read", READ),
    3: ("write", WRITE),
    4: ("control", SESSION),  # IODControl: PrmEnd / ApplicationReady / Release of an AR, not process control
    5: ("read_implicit", READ),
}

CONTROL_COMMANDS = (
    (0x0001, "prm_end"),
    (0x0002, "application_ready"),
    (0x0004, "release"),
    (0x0008, "done"),
    (0x0010, "ready_for_companion"),
    (0x0020, "ready_for_rt_class_3"),
    (0x0040, "prm_begin"),
)

# block types whose record header layout we read (IEC 61158-6-10 5.2.3): IODRead/WriteReq/ResHeader
_RW_HEADERS = (0x0008, 0x0009, 0x8008, 0x8009)
_CONTROL_BLOCKS = range(0x0110, 0x0120)
_CONTROL_RES_BLOCKS = range(0x8110, 0x8120)


def probe(payload: bytes, from_client: bool) -> bool:
    """A DCE/RPC v4 connectionless header (sane ptype and drep) calling a PNIO interface."""
    if len(payload) < 40:
        return False
    vers, ptype, _f1, _f2, drep, _sh, _obj, iface, _act = _HEAD.unpack_from(payload.ljust(56, b"\0"), 0)
    if vers != 4 or ptype > 10 or drep[0] >> 4 > 1 or drep[1] > 1:
        return False
    return iface in _IFACE_BYTES


class ProfinetCmAnalyzer(Analyzer):
    protocol = "profinet_io"

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        s = self.session
        if len(data) < HEADER:
            s.anomaly("profinet_io_truncated")
            return
        vers, ptype, flags1, _f2, drep, _sh, obj, iface_b, _act = _HEAD.unpack_from(data, 0)
        order = drep[0] >> 4
        if vers != 4 or order > 1:
            s.anomaly("profinet_io_bad_header")
            return
        _boot, _ifv, seq, opnum, _ihint, _ahint, blen, fragnum, _auth, _sl = _TAIL[order].unpack_from(data, 56)
        iface = _IFACE_BYTES.get(iface_b)
        if iface is None:
            # another RPC interface on the port (the endpoint mapper's lookups): not PROFINET IO
            s.anomaly("profinet_io_other_interface")
            return
        pname = PTYPES.get(ptype)
        if pname is None:
            s.anomaly("profinet_io_bad_ptype")
            return
        if ptype not in (0, 2, 3, 6):
            s.anomaly("profinet_io_rpc_" + pname)
            return
        fragmented = bool(flags1 & 0x04)
        last = not fragmented or bool(flags1 & 0x02)
        if not last:
            return  # counted (and reported) on the fragment that completes the call, as Wireshark does
        request = ptype == 0
        name, category = OPERATIONS.get(opnum, (f"unknown-{opnum}", OTHER))
        fields: dict[str, Any] = {"interface": iface, "seqnum": seq}
        if fragmented:
            fields["fragments"] = fragnum + 1
        if obj[:10] == _OBJECT_PREFIX[order]:
            # object UUID node = instance, device id, vendor id of the device addressed
            fields["instance"], fields["device_id"], fields["vendor_id"] = struct.unpack_from("!HHH", obj, 10)
        result = OK
        code: int | None = None
        anomaly: str | None = None
        body_end = HEADER + blen
        if body_end > len(data):
            anomaly = "profinet_io_bad_length"
            body_end = len(data)
        if ptype in (3, 6):
            # fault / reject: the body is a 4-octet status code in drep order
            result = EXCEPTION
            if body_end - HEADER >= 4:
                code = int.from_bytes(data[HEADER : HEADER + 4], "little" if order else "big")
            fields["rpc"] = pname
        else:
            s.stats.pdu("profinet_io")
            s.stats.func("profinet_io", str(opnum))
            if not fragmented or fragnum == 0:
                status = _body(data, HEADER, body_end, request, fields)
                if status:
                    result, code = EXCEPTION, status
        if anomaly is not None:
            s.anomaly(anomaly)
            result = MALFORMED
        s.event(
            from_client,
            ts,
            "profinet_io",
            REQUEST if request else RESPONSE,
            opnum,
            name,
            category,
            result=result,
            code=code,
            anomaly=anomaly,
            fields=fields,
            size=len(data),
        )


def _body(data: bytes, off: int, end: int, request: bool, fields: dict[str, Any]) -> int:
    """Read the NDR header and the first PNIO block into ``fields``; return a response's PNIOStatus."""
    if end - off < 20:
        return 0
    status = 0
    if not request:
        status = _U32.unpack_from(data, off)[0]  # PNIOStatus: ErrorCode, ErrorDecode, ErrorCode1, ErrorCode2
    off += 20
    if end - off < _BLOCK.size:
        return status
    btype, blen, _bver = _BLOCK.unpack_from(data, off)
    fields["block_type"] = btype
    if btype in _RW_HEADERS and end - off >= 36:
        # BlockHeader(6) SeqNumber(2) ARUUID(16) API(4) Slot(2) Subslot(2) Padding(2) Index(2)
        fields["slot"], fields["subslot"] = struct.unpack_from("!HH", data, off + 28)
        fields["record_index"] = _U16.unpack_from(data, off + 34)[0]
    elif btype == 0x0101 and end - off >= 58:
        # ARBlockReq: ... CMInitiatorStationName at +58, its length at +56
        n = _U16.unpack_from(data, off + 56)[0]
        if 0 < n <= 240 and off + 58 + n <= end:
            fields["initiator_station_name"] = data[off + 58 : off + 58 + n].decode("latin-1")
    elif (btype in _CONTROL_BLOCKS or btype in _CONTROL_RES_BLOCKS) and end - off >= 30:
        # IODControlReq/Res: BlockHeader(6) Reserved(2) ARUUID(16) SessionKey(2) Reserved(2) ControlCommand(2)
        cmd = _U16.unpack_from(data, off + 28)[0]
        fields["control_command"] = [n for bit, n in CONTROL_COMMANDS if cmd & bit] or [f"unknown-{cmd:#06x}"]
    return status


SPEC = ProtocolSpec(
    name="profinet_io",
    analyzer=ProfinetCmAnalyzer,
    udp_ports=frozenset({PORT}),
    probe=probe,
    probe_order=20,
    deep=False,
)

__all__ = ["SPEC", "ProfinetCmAnalyzer", "probe", "OPERATIONS", "INTERFACES", "PTYPES"]
