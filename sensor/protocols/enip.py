"""EtherNet/IP encapsulation (TCP/UDP 44818) and implicit I/O (UDP 2222), carrying CIP.

References: ODVA "The CIP Networks Library" Vol. 2 (EtherNet/IP Adaptation of CIP):

- 2-3 Encapsulation header, 24 bytes little-endian: command(2) length(2) session handle(4)
  status(4) sender context(8) options(4); ``length`` counts the bytes after the header.
- 2-4 Commands: NOP 0x00, ListServices 0x04, ListIdentity 0x63, ListInterfaces 0x64,
  RegisterSession 0x65, UnRegisterSession 0x66, SendRRData 0x6F, SendUnitData 0x70,
  IndicateStatus 0x72, Cancel 0x73. 2-3.3 encapsulation status codes.
- 2-4.2.3 ListIdentity reply: CPF item 0x0C = encapsulation version(2), socket address (16 bytes,
  big-endian sin_family/sin_port/sin_addr/zero), then the Identity object attributes (vendor, device
  type, product code, revision, status, serial, product name) and state(1).
- 2-6 Common Packet Format: item count(2) then items type(2) length(2) data: null address 0x0000,
  connected address 0x00A1 (connection id), sequenced address 0x8002 (connection id, sequence),
  unconnected data 0x00B2 (a CIP request/reply), connected data 0x00B1 (explicit messaging over
  TCP: 2-byte sequence count then a CIP message; class 0/1 I/O over UDP: the I/O data),
  sockaddr info 0x8000 (O->T) / 0x8001 (T->O), ListIdentity 0x0C, ListServices 0x100.
- 3-2 / 3-3 UDP: implicit (class 0/1) I/O on 2222 is CPF only, without an encapsulation header.

What we report (the contract with detectors, see docs/protocols/enip.md):

- one ``enip`` event per encapsulation message (function = command, e.g. ``send_rr_data``), with
  the session handle, status (result ``exception`` when non-zero) and CPF summary in ``fields``;
- one ``cip`` event per CIP message in it, in Wireshark's order: a Multiple Service Packet and then
  each of its services, an Unconnected Send and then its embedded request (see ``_cip``). Replies
  are paired with their request (sender context for SendRRData, sequence count for SendUnitData,
  position inside a Multiple Service Packet) to name them by their request's class and to compute
  the latency;
- ``fields["identity"]`` on a ListIdentity reply and on a Get Attributes All reply of the Identity
  object, for the asset inventory;
- one ``enip`` ``io_data`` event per implicit I/O datagram (connection id and sequence only).

Counting (``icswatch inspect``) follows tshark: ``enip`` = one per encapsulation header (func key
``0x006f``), ``cip`` = one per ``cip.sc`` (func key ``0x4c``, response bit removed as tshark does).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from typing import Any

from sensor.events import (
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OK,
    OTHER,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    IcsEvent,
)
from sensor.protocols import _cip
from sensor.protocols._cip import Path, Record
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session, pair_latency

HEADER = struct.Struct("<HHII8sI")  # command, length, session handle, status, sender context, options
HEADER_LEN = 24
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ITEM = struct.Struct("<HH")  # CPF item type, length
_RR_HEAD = struct.Struct("<IHH")  # interface handle, timeout, item count (SendRRData / SendUnitData)
_SOCKADDR = struct.Struct(">HH4s8x")  # sin_family, sin_port, sin_addr, sin_zero (big-endian!)
_LIST_SERVICE = struct.Struct("<HH16s")  # version, capability flags, name

# Encapsulation commands (Vol. 2 Table 2-3.2): code -> (name, category).
COMMANDS: dict[int, tuple[str, str]] = {
    0x0000: ("nop", SESSION),
    0x0001: ("list_targets", DISCOVERY),  # obsolete, still answered by old adapters
    0x0004: ("list_services", DISCOVERY),
    0x0063: ("list_identity", DISCOVERY),
    0x0064: ("list_interfaces", DISCOVERY),
    0x0065: ("register_session", SESSION),
    0x0066: ("unregister_session", SESSION),
    0x006F: ("send_rr_data", OTHER),
    0x0070: ("send_unit_data", OTHER),
    0x0072: ("indicate_status", OTHER),
    0x0073: ("cancel", OTHER),
}
CMD_LIST_SERVICES = 0x0004
CMD_LIST_IDENTITY = 0x0063
CMD_LIST_INTERFACES = 0x0064
CMD_REGISTER_SESSION = 0x0065
CMD_SEND_RR_DATA = 0x006F
CMD_SEND_UNIT_DATA = 0x0070
_LIST_COMMANDS = frozenset((CMD_LIST_SERVICES, CMD_LIST_IDENTITY, CMD_LIST_INTERFACES, 0x0001))
_NO_REPLY = frozenset((0x0000, 0x0066))  # NOP and UnRegisterSession are never answered (Vol. 2 2-4.1, 2-4.5)

# Encapsulation status codes (Vol. 2 Table 2-3.3).
STATUSES: dict[int, str] = {
    0x0000: "success",
    0x0001: "invalid_command",
    0x0002: "insufficient_memory",
    0x0003: "incorrect_data",
    0x0064: "invalid_session_handle",
    0x0065: "invalid_length",
    0x0069: "unsupported_protocol_version",
    0x006A: "cip_service_not_allowed",  # CIP Security: encapsulation over TLS required
}

# CPF item types (Vol. 2 Table 2-6.3).
ITEM_NULL = 0x0000
ITEM_LIST_IDENTITY = 0x000C
ITEM_CONNECTED_ADDRESS = 0x00A1
ITEM_CONNECTED_DATA = 0x00B1
ITEM_UNCONNECTED_DATA = 0x00B2
ITEM_LIST_SERVICES = 0x0100
ITEM_SOCKADDR_OT = 0x8000
ITEM_SOCKADDR_TO = 0x8001
ITEM_SEQUENCED_ADDRESS = 0x8002
MAX_CPF_ITEMS = 16  # real traffic has 2 to 4; a ListIdentity reply has one per identity

MAX_PENDING = 512  # unanswered requests remembered per flow for pairing (oldest dropped, counted)
_FUNC_KEYS = tuple(f"0x{i:02x}" for i in range(128))  # tshark's cip.sc rendering, precomputed
_CMD_KEYS = {c: f"0x{c:04x}" for c in COMMANDS}  # tshark's enip.command rendering


class EnipAnalyzer(FramedStreamAnalyzer):
    """One EtherNet/IP flow (TCP or UDP). Parses encapsulation, CPF and the CIP it carries."""

    protocol = "enip"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        # pairing key -> list of (ts, command, records) of requests waiting for their reply
        self._pending: dict[tuple[Any, ...], list[tuple[float, int, list[Record]]]] = {}
        self._npending = 0
        self._udp = session.transport == "udp"
        self._handle = (-1, "")  # last session handle and its text: one per session, not per PDU
        self._enip_hist: Counter[str] | None = None  # function histograms, fetched once per flow
        self._cip_hist: Counter[str] | None = None

    # --- framing ---------------------------------------------------------------------------------
    def frame_length(self, buf: bytes, off: int) -> int | None:
        if len(buf) - off < 4:
            return None
        command = buf[off] | (buf[off + 1] << 8)
        if command not in COMMANDS:
            return 0  # not an encapsulation header: Wireshark's check on the first PDU too
        return HEADER_LEN + (buf[off + 2] | (buf[off + 3] << 8))

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if not self._udp:
            super().feed(from_client, data, ts)
            return
        # UDP: one datagram = one encapsulation message, or CPF-only implicit I/O.
        view = memoryview(data)
        n = len(data)
        if n >= HEADER_LEN and (data[0] | (data[1] << 8)) in COMMANDS:
            total = HEADER_LEN + (data[2] | (data[3] << 8))
            if total <= n:
                self.on_pdu(from_client, view[:total], ts)
                return
            self.session.anomaly("enip_truncated")
            return
        if n >= 6 and _looks_like_io(data):
            self._on_io(from_client, view, ts)
            return
        self.session.anomaly("enip_bad_datagram")

    # --- encapsulation -----------------------------------------------------------------------------
    def on_pdu(self, from_client: bool, pdu: memoryview, ts: float) -> None:
        session = self.session
        if len(pdu) < HEADER_LEN:
            session.anomaly("enip_truncated")
            return
        command, length, handle, status, context, options = HEADER.unpack_from(pdu, 0)
        stats = session.stats
        stats.pdus["enip"] += 1
        hist = self._enip_hist
        if hist is None:
            hist = self._enip_hist = stats.hist("enip")
        hist[_CMD_KEYS.get(command) or f"0x{command:04x}"] += 1
        found_cmd = COMMANDS.get(command)
        name, category = found_cmd if found_cmd is not None else (f"unknown-{command}", OTHER)
        end = HEADER_LEN + length
        if command in _LIST_COMMANDS and self._udp:
            # Broadcast discovery: the reply comes back on a different UDP 5-tuple, so the flow's
            # "client" may be the device. A List* request carries no data; a reply always does.
            is_request = length == 0
        else:
            is_request = from_client
        if self._handle[0] != handle:
            self._handle = (handle, f"0x{handle:08x}")
        fields: dict[str, Any] = {"session_handle": self._handle[1], "sender_context": context.hex()}
        if options:
            fields["options"] = options
        result = OK
        code = None
        if status:
            result = EXCEPTION
            code = status
            fields["status"] = STATUSES.get(status, f"status-{status}")
        records: list[Record] | None = None
        pair_key: tuple[Any, ...] | None = None
        anomaly = None
        if command in (CMD_SEND_RR_DATA, CMD_SEND_UNIT_DATA):
            records, pair_key, anomaly = self._cpf_cip(pdu, end, command, context, fields)
        elif command == CMD_LIST_IDENTITY and not is_request and length:
            anomaly = _list_identity(pdu, end, fields)
        elif command == CMD_LIST_SERVICES and not is_request and length:
            anomaly = _list_services(pdu, end, fields)
        elif command == CMD_REGISTER_SESSION and length >= 4:
            fields["protocol_version"] = _U16.unpack_from(pdu, HEADER_LEN)[0]
        if pair_key is None:
            pair_key = ("ctx", command, context)
        latency = None
        paired: list[Record] | None = None
        if is_request:
            if command not in _NO_REPLY:
                self._remember(pair_key, ts, command, records or [])
        else:
            found = self._take(pair_key)
            if found is not None:
                latency = pair_latency(found[0], ts)
                paired = found[2]
        if anomaly:
            session.anomaly(anomaly)
            if result == OK:
                result = MALFORMED
        if from_client:
            src, sport, dst, dport = session.client_ip, session.client_port, session.server_ip, session.server_port
            smac, dmac = session.client_mac, session.server_mac
        else:
            src, sport, dst, dport = session.server_ip, session.server_port, session.client_ip, session.client_port
            smac, dmac = session.server_mac, session.client_mac
        session.emit(
            IcsEvent(
                ts, "enip", src, sport, dst, dport, session.transport, REQUEST if is_request else RESPONSE, command,
                name, category, None, None, None, None, None, result, code, latency, anomaly, fields,
                session.flow_id, smac, dmac, len(pdu),
            )
        )  # fmt: skip
        if records:
            self._emit_cip(from_client, ts, pdu, records, paired, latency)

    def _cpf_cip(
        self, pdu: memoryview, end: int, command: int, context: bytes, fields: dict[str, Any]
    ) -> tuple[list[Record] | None, tuple[Any, ...] | None, str | None]:
        """SendRRData / SendUnitData: interface handle, timeout, CPF items; parse the CIP data item."""
        if end < HEADER_LEN + _RR_HEAD.size:
            return None, None, "enip_bad_cpf"
        iface, timeout, count = _RR_HEAD.unpack_from(pdu, HEADER_LEN)
        if iface:
            fields["interface_handle"] = iface
        fields["timeout"] = timeout
        off = HEADER_LEN + _RR_HEAD.size
        records: list[Record] | None = None
        pair_key: tuple[Any, ...] | None = None
        items = []
        for _ in range(min(count, MAX_CPF_ITEMS)):
            if off + 4 > end:
                return records, pair_key, "enip_bad_cpf"
            itype, ilen = _ITEM.unpack_from(pdu, off)
            data_off = off + 4
            off = data_off + ilen
            if off > end:
                return records, pair_key, "enip_bad_cpf"
            items.append(itype)
            if itype == ITEM_CONNECTED_ADDRESS and ilen >= 4:
                fields["connection_id"] = f"0x{_U32.unpack_from(pdu, data_off)[0]:08x}"
            elif itype == ITEM_SEQUENCED_ADDRESS and ilen >= 8:
                fields["connection_id"] = f"0x{_U32.unpack_from(pdu, data_off)[0]:08x}"
                fields["encap_sequence"] = _U32.unpack_from(pdu, data_off + 4)[0]
            elif itype == ITEM_UNCONNECTED_DATA:
                records = []
                _cip.parse_message(pdu, data_off, off, records)
            elif itype == ITEM_CONNECTED_DATA:
                # Explicit (class 3) messaging: sequence count, then the CIP message. The reply
                # echoes the sequence count: that is how connected replies pair with requests.
                if ilen >= 2:
                    seq = _U16.unpack_from(pdu, data_off)[0]
                    fields["cip_sequence"] = seq
                    pair_key = ("seq", seq)
                    records = []
                    _cip.parse_message(pdu, data_off + 2, off, records)
            elif itype in (ITEM_SOCKADDR_OT, ITEM_SOCKADDR_TO) and ilen >= 16:
                _family, port, addr = _SOCKADDR.unpack_from(pdu, data_off)
                key = "sockaddr_o_t" if itype == ITEM_SOCKADDR_OT else "sockaddr_t_o"
                fields[key] = f"{socket.inet_ntoa(bytes(addr))}:{port}"
        fields["cpf_items"] = items
        if count > MAX_CPF_ITEMS:
            return records, pair_key, "enip_cpf_item_cap"
        if records is not None and command == CMD_SEND_RR_DATA:
            pair_key = ("rr", context)
        return records, pair_key, None

    # --- CIP -------------------------------------------------------------------------------------
    def _emit_cip(
        self,
        from_client: bool,
        ts: float,
        pdu: memoryview,
        records: list[Record],
        paired: list[Record] | None,
        latency: float | None,
    ) -> None:
        session = self.session
        stats = session.stats
        stats.pdus["cip"] += len(records)  # one cip.sc per record, as tshark counts
        hist = self._cip_hist
        if hist is None:
            hist = self._cip_hist = stats.hist("cip")
        request_paths = _align(records, paired) if paired is not None else None
        if from_client:
            src, sport, dst, dport = session.client_ip, session.client_port, session.server_ip, session.server_port
            smac, dmac = session.client_mac, session.server_mac
        else:
            src, sport, dst, dport = session.server_ip, session.server_port, session.client_ip, session.client_port
            smac, dmac = session.server_mac, session.client_mac
        transport, flow_id, emit = session.transport, session.flow_id, session.emit
        for i, rec in enumerate(records):
            depth, sc, is_response, path, gstat, ext, doff, dend, ok = rec
            hist[_FUNC_KEYS[sc]] += 1
            if is_response and request_paths is not None:
                path = request_paths[i]
            name, category, base, objects = _describe(sc, path)
            fields = base.copy()
            if depth:
                fields["depth"] = depth
            result = OK
            code = None
            values = None
            quantity = None
            anomaly = None
            if not ok:
                anomaly = "cip_truncated"
                session.anomaly(anomaly)
                result = MALFORMED
            if is_response:
                fields["general_status"] = gstat
                if gstat:
                    fields["status_name"] = _cip.GENERAL_STATUS.get(gstat, f"status-{gstat}")
                    if ext is not None:
                        fields["extended_status"] = ext
                    # 0x06 partial transfer is the normal reply of a fragmented read: not an error
                    if gstat != 0x06 and result == OK:
                        result = EXCEPTION
                        code = gstat
                if gstat == 0 and ok and sc in _REPLY_DETAILS:
                    _reply_details(sc, path, pdu, doff, dend, fields)
            elif ok:
                values, quantity = _request_details(sc, path, pdu, doff, dend, fields)
            # Built positionally (not through Session.event's keywords): this is the hot path,
            # one event per CIP message, dozens per PDU in a Multiple Service Packet.
            emit(
                IcsEvent(
                    ts, "cip", src, sport, dst, dport, transport, RESPONSE if is_response else REQUEST, sc, name,
                    category, None, None, quantity, values, objects, result, code,
                    latency if is_response else None, anomaly, fields, flow_id, smac, dmac, dend - doff,
                )
            )  # fmt: skip

    # --- implicit I/O ----------------------------------------------------------------------------
    def _on_io(self, from_client: bool, view: memoryview, ts: float) -> None:
        """Class 0/1 I/O datagram (Vol. 2 3-3): sequenced address item then connected data item."""
        count = _U16.unpack_from(view, 0)[0]
        off = 2
        fields: dict[str, Any] = {}
        size = 0
        for _ in range(min(count, MAX_CPF_ITEMS)):
            if off + 4 > len(view):
                break
            itype, ilen = _ITEM.unpack_from(view, off)
            off += 4
            if itype == ITEM_SEQUENCED_ADDRESS and ilen >= 8 and off + 8 <= len(view):
                fields["connection_id"] = f"0x{_U32.unpack_from(view, off)[0]:08x}"
                fields["encap_sequence"] = _U32.unpack_from(view, off + 4)[0]
            elif itype == ITEM_CONNECTED_DATA:
                size = ilen
            off += ilen
        fields["io_bytes"] = size
        self.session.event(
            from_client,
            ts,
            "enip",
            REQUEST if from_client else UNSOLICITED,
            -1,
            "io_data",
            OTHER,
            fields=fields,
            size=len(view),
        )

    # --- pairing ---------------------------------------------------------------------------------
    def _remember(self, key: tuple[Any, ...], ts: float, command: int, records: list[Record]) -> None:
        waiting = self._pending.get(key)
        if waiting is None:
            waiting = self._pending[key] = []
        waiting.append((ts, command, records))
        self._npending += 1
        if self._npending > MAX_PENDING:
            oldest = next(iter(self._pending))
            lst = self._pending[oldest]
            lst.pop(0)
            if not lst:
                del self._pending[oldest]
            self._npending -= 1
            self.session.anomaly("enip_pending_evicted")

    def _take(self, key: tuple[Any, ...]) -> tuple[float, int, list[Record]] | None:
        waiting = self._pending.get(key)
        if not waiting:
            return None
        found = waiting.pop(0)
        if not waiting:
            del self._pending[key]
        self._npending -= 1
        return found

    def close(self, ts: float) -> None:
        super().close(ts)
        self._pending.clear()
        self._npending = 0


def _align(replies: list[Record], requests: list[Record]) -> list[Path]:
    """Request path for each reply record (EMPTY_PATH where the shapes disagree).

    An Unconnected Send reply is the embedded reply (Vol. 1 3-5.5.2), so when the request was an
    Unconnected Send and the reply is not a 0x52 router error, the request side is its embedded
    subtree. Inside a Multiple Service Packet the n-th reply answers the n-th request.
    """
    reqs = requests
    if reqs and replies:
        top = reqs[0]
        if (
            top[1] == _cip.SC_UNCONNECTED_SEND
            and top[3][0] == _cip.CLASS_CONNECTION_MANAGER
            and replies[0][1] != _cip.SC_UNCONNECTED_SEND
        ):
            reqs = reqs[1:]
    out: list[Path] = []
    for i, rep in enumerate(replies):
        if i < len(reqs) and reqs[i][1] == rep[1]:
            out.append(reqs[i][3])
        else:
            out.append(_cip.EMPTY_PATH)
    return out


_DESCRIBE_CACHE: dict[tuple[int, Path], tuple[str, str, dict[str, Any], tuple[str, ...] | None]] = {}
_DESCRIBE_CACHE_MAX = 8192


def _describe(sc: int, path: Path) -> tuple[str, str, dict[str, Any], tuple[str, ...] | None]:
    """(name, category, path fields, objects) of a service on a path, memoised (bounded).

    The returned fields dict is shared: callers copy it before adding to it.
    """
    key = (sc, path)
    found = _DESCRIBE_CACHE.get(key)
    if found is None:
        name, category = _cip.service_name(sc, path)
        okey = _cip.path_key(path)
        found = (name, category, _path_fields(path), (okey,) if okey is not None else None)
        if len(_DESCRIBE_CACHE) >= _DESCRIBE_CACHE_MAX:
            _DESCRIBE_CACHE.clear()
        _DESCRIBE_CACHE[key] = found
    return found


def _path_fields(path: Path) -> dict[str, Any]:
    cls, inst, attr, member, symbol, route = path
    fields: dict[str, Any] = {}
    if cls is not None:
        fields["class"] = cls
        cname = _cip.CLASS_NAMES.get(cls)
        if cname is not None:
            fields["class_name"] = cname
        elif _cip.is_vendor_class(cls):
            fields["class_name"] = "vendor_specific"
    if inst is not None:
        fields["instance"] = inst
    if attr is not None:
        fields["attribute"] = attr
    if member is not None:
        fields["member"] = member
    if symbol is not None:
        fields["symbol"] = symbol
    if route is not None:
        fields["route"] = route
    return fields


def _request_details(
    sc: int, path: Path, buf: memoryview, off: int, end: int, fields: dict[str, Any]
) -> tuple[tuple[Any, ...] | None, int | None]:
    """Service-specific request details: returns (values, quantity) and fills ``fields``."""
    cls = path[0]
    if cls == _cip.CLASS_CONNECTION_MANAGER and path[4] is None:
        if sc in (_cip.SC_FORWARD_OPEN, _cip.SC_LARGE_FORWARD_OPEN):
            fo = _cip.forward_open_fields(buf, off, end, sc == _cip.SC_LARGE_FORWARD_OPEN)
            if fo:
                fields.update(fo)
        elif sc == _cip.SC_FORWARD_CLOSE:
            fc = _cip.forward_close_fields(buf, off, end)
            if fc:
                fields.update(fc)
        elif sc == _cip.SC_UNCONNECTED_SEND:
            route = _cip.unconnected_send_route(buf, off, end)
            if route:
                fields["target_route"] = route
        return None, None
    if sc == _cip.SC_MULTIPLE_SERVICE_PACKET and off + 2 <= end:
        return None, _U16.unpack_from(buf, off)[0]
    if sc == _cip.SC_RESET and cls == _cip.CLASS_IDENTITY:
        rtype = buf[off] if off < end else 0
        fields["reset_type"] = _cip.RESET_TYPES.get(rtype, f"type-{rtype}")
        return None, None
    if cls == _cip.CLASS_CONTROLLER and sc in (_cip.SC_START, _cip.SC_STOP):
        fields["mode_change"] = "run" if sc == _cip.SC_START else "program"
        return None, None
    if sc in (_cip.SC_GET_ATTRIBUTE_LIST, _cip.SC_SET_ATTRIBUTE_LIST) and off + 2 <= end:
        n = _U16.unpack_from(buf, off)[0]
        if sc == _cip.SC_GET_ATTRIBUTE_LIST and off + 2 + 2 * n <= end and n <= 64:
            fields["attributes"] = list(struct.unpack_from(f"<{n}H", buf, off + 2))
        return None, n
    if path[4] is not None or cls == _cip.CLASS_SYMBOL:
        if sc in (0x4C, 0x52) and off + 2 <= end:  # read tag (fragmented): element count
            return None, _U16.unpack_from(buf, off)[0]
        if sc in (0x4D, 0x53) and off + 4 <= end:  # write tag (fragmented): type, elements, data
            dtype, count = struct.unpack_from("<HH", buf, off)
            fields["data_type"] = f"0x{dtype:04x}"
            return _cip.tag_write_values(sc, buf, off, end), count
    if cls == _cip.CLASS_PCCC and sc == 0x4B:
        _pccc(buf, off, end, fields)
    return None, None


_REPLY_DETAILS = frozenset((_cip.SC_GET_ATTRIBUTES_ALL, _cip.SC_FORWARD_OPEN, _cip.SC_LARGE_FORWARD_OPEN))


def _reply_details(sc: int, path: Path, buf: memoryview, off: int, end: int, fields: dict[str, Any]) -> None:
    """Service-specific reply details for successful replies."""
    cls = path[0]
    if cls == _cip.CLASS_IDENTITY and sc == _cip.SC_GET_ATTRIBUTES_ALL:
        ident = _cip.identity_fields(buf, off, end)
        if ident is not None:
            fields["identity"] = ident
    elif cls == _cip.CLASS_CONNECTION_MANAGER and sc in (_cip.SC_FORWARD_OPEN, _cip.SC_LARGE_FORWARD_OPEN):
        fo = _cip.forward_open_reply_fields(buf, off, end)
        if fo:
            fields.update(fo)


# PCCC function codes carried by Execute PCCC (DF1 protocol manual 1770-6.5.16, command 0x0F).
_PCCC_FNC = {
    0x01: "unprotected_read",
    0x67: "typed_write",
    0x68: "typed_read",
    0x80: "change_mode",
    0xA1: "protected_typed_logical_read_2",
    0xA2: "protected_typed_logical_read_3",
    0xA9: "protected_typed_logical_write_mask",
    0xAA: "protected_typed_logical_write_3",
    0xAB: "protected_typed_logical_write_4",
}


def _pccc(buf: memoryview, off: int, end: int, fields: dict[str, Any]) -> None:
    """Execute PCCC request: requestor id (length-prefixed), then CMD, STS, TNSW(2), FNC."""
    if off >= end:
        return
    p = off + buf[off]  # the requestor id length includes its own length byte
    if p + 5 > end:
        return
    cmd = buf[p]
    fields["pccc_command"] = cmd
    if cmd in (0x0F, 0x0E, 0x06, 0x07):  # commands that carry a function code
        fnc = buf[p + 4]
        fields["pccc_function"] = _PCCC_FNC.get(fnc, f"fnc-{fnc}")


def _list_identity(pdu: memoryview, end: int, fields: dict[str, Any]) -> str | None:
    """ListIdentity reply: CPF items of type 0x0C (Vol. 2 2-4.2.3)."""
    off = HEADER_LEN
    if off + 2 > end:
        return "enip_bad_cpf"
    count = _U16.unpack_from(pdu, off)[0]
    off += 2
    for _ in range(min(count, MAX_CPF_ITEMS)):
        if off + 4 > end:
            return "enip_bad_cpf"
        itype, ilen = _ITEM.unpack_from(pdu, off)
        data = off + 4
        off = data + ilen
        if off > end:
            return "enip_bad_cpf"
        if itype != ITEM_LIST_IDENTITY or ilen < 2 + 16 + 15:
            continue
        fields["encap_version"] = _U16.unpack_from(pdu, data)[0]
        _family, port, addr = _SOCKADDR.unpack_from(pdu, data + 2)
        fields["device_address"] = f"{socket.inet_ntoa(bytes(addr))}:{port}"
        ident = _cip.identity_fields(pdu, data + 18, off)
        if ident is None:
            return "enip_bad_identity"
        name_end = data + 18 + 14 + 1 + len(ident["product_name"])
        if name_end < off:
            ident["state"] = pdu[name_end]
        if "identity" not in fields:  # one device answers for itself: the first item is it
            fields["identity"] = ident
    return None


def _list_services(pdu: memoryview, end: int, fields: dict[str, Any]) -> str | None:
    """ListServices reply: items 0x100 (version, capability flags, 16-byte name)."""
    off = HEADER_LEN
    if off + 2 > end:
        return "enip_bad_cpf"
    count = _U16.unpack_from(pdu, off)[0]
    off += 2
    services = []
    for _ in range(min(count, MAX_CPF_ITEMS)):
        if off + 4 > end:
            return "enip_bad_cpf"
        itype, ilen = _ITEM.unpack_from(pdu, off)
        data = off + 4
        off = data + ilen
        if off > end:
            return "enip_bad_cpf"
        if itype == ITEM_LIST_SERVICES and ilen >= _LIST_SERVICE.size:
            _version, flags, name = _LIST_SERVICE.unpack_from(pdu, data)
            services.append({"name": bytes(name).rstrip(b"\0").decode("latin-1"), "capabilities": flags})
    fields["services"] = services
    return None


def _looks_like_io(data: bytes) -> bool:
    """CPF-only class 0/1 I/O: item count 1..4 and a first item that is an address item."""
    count = data[0] | (data[1] << 8)
    first = data[2] | (data[3] << 8)
    return 1 <= count <= 4 and first in (ITEM_SEQUENCED_ADDRESS, ITEM_CONNECTED_ADDRESS, ITEM_NULL)


# --- registry ------------------------------------------------------------------------------------
_PROBE_COMMANDS = frozenset((0x0004, 0x0063, 0x0064, 0x0065, 0x0066, 0x006F, 0x0070))


def probe(payload: bytes, from_client: bool) -> bool:
    """ENIP on a non-standard port: a strict encapsulation header check on the first payload.

    NOP (an all-zero header would match) and the rare IndicateStatus/Cancel are not accepted;
    options must be 0 and the status a defined one; SendRRData/SendUnitData must carry interface
    handle 0 and a plausible CPF item count; RegisterSession protocol version 1; the List*
    requests are empty; a complete first PDU must be followed by nothing or another valid header.
    """
    n = len(payload)
    if n < HEADER_LEN:
        return False
    command, length, _handle, status, _ctx, options = HEADER.unpack_from(payload, 0)
    if command not in _PROBE_COMMANDS or options or status not in STATUSES:
        return False
    total = HEADER_LEN + length
    if command in (CMD_SEND_RR_DATA, CMD_SEND_UNIT_DATA):
        if length < 10 or n < HEADER_LEN + 8:
            return False
        iface, _timeout, count = _RR_HEAD.unpack_from(payload, HEADER_LEN)
        if iface or not 1 <= count <= 8:
            return False
    elif command == CMD_REGISTER_SESSION:
        if length != 4 or n < 28 or _U16.unpack_from(payload, HEADER_LEN)[0] != 1:
            return False
    elif command == 0x0066:
        if length:
            return False
    elif from_client and length:
        return False  # List* request with data
    if total > n:
        return command in (CMD_SEND_RR_DATA, CMD_SEND_UNIT_DATA)  # first segment of a large PDU
    if total < n:
        return n - total >= 2 and (payload[total] | (payload[total + 1] << 8)) in COMMANDS
    return True


SPEC = ProtocolSpec(
    name="enip",
    analyzer=EnipAnalyzer,
    tcp_ports=frozenset({44818}),
    udp_ports=frozenset({44818, 2222}),
    probe=probe,
    probe_order=60,
    reports=("enip", "cip"),
)
