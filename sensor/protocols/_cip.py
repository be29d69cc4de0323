"""CIP (Common Industrial Protocol) message layer, shared by the EtherNet/IP analyzer.

Not a registry entry (leading underscore): CIP has no transport of its own here; ``enip.py`` hands it
the payload of a CPF data item. This module knows the CIP message format and the vocabulary of
services and objects; it returns plain tuples and never builds an object per field.

References (ODVA, "The CIP Networks Library"):

- Vol. 1 (CIP Common), ch. 2-2 "Message Router request/response format": a request is
  ``service(1) path_size_words(1) path(2*n) data``; a response is
  ``service|0x80(1) reserved(1) general_status(1) ext_status_size_words(1) ext_status(2*n) data``.
- Vol. 1 Appendix A (A-4 "Common services"): service codes 0x01-0x1C; 0x4B-0x63 are object-class
  specific, so a code's meaning depends on the class it is sent to (0x52 is Unconnected Send on the
  Connection Manager but Read Tag Fragmented on a Logix tag; 0x4E is Forward Close or Read Modify
  Write Tag).
- Vol. 1 Appendix B (B-1 "General status codes") and 3-5.6 (Connection Manager extended status).
- Vol. 1 Appendix C (C-1.4 "Segment types"): port, logical (class, instance, member, connection
  point, attribute, special/electronic key, service, extended), network, symbolic, data (simple and
  ANSI extended symbol 0x91) segments.
- Vol. 1 ch. 3-5.5 Connection Manager services: Forward Open 0x54, Large Forward Open 0x5B, Forward
  Close 0x4E, Unconnected Send 0x52 (request layout 3-5.5.2, its reply is the embedded reply).
- Vol. 1 ch. 4 / 5A-1 Identity object (class 0x01): Get Attributes All reply layout and the Reset
  service 0x05 (type 0 = power cycle, 1 = factory defaults, 2 = keep communication parameters).
- Vol. 1 A-4.10 Multiple Service Packet 0x0A: ``count(2) offsets(2*count) services``; the reply
  has the same shape after the general status.
- Rockwell "Logix 5000 Controllers Data Access" (1756-PM020): Read Tag 0x4C, Write Tag 0x4D, Read
  Modify Write Tag 0x4E, Read/Write Tag Fragmented 0x52/0x53, Get Instance Attribute List 0x55 on
  the Symbol object (0x6B) or a symbolic (0x91) path; the Template object is 0x6C.
- Rockwell-specific objects are in the vendor range 0x64-0xC7 (and 0x300-0x4FF): the controller
  object 0x8E (Start 0x06 = run, Stop 0x07 = program mode, as in the Digital Bond Quickdraw
  captures), the wall-clock object 0x8B (Set Attribute List = change of controller time), the
  firmware object 0xA1 (ControlFLASH: 0x51, 0x4B then a stream of 0x4D data blocks). On vendor
  objects Rockwell reuses its data-table codes (0x4C read, 0x4D write, 0x4E read-modify-write,
  0x52/0x53 fragmented); the other codes in 0x4B-0x63 (0x4B, 0x4F, 0x50, 0x51 ...) on vendor
  classes are the proprietary program upload/download machinery of RSLogix (classes 0x68-0x7E,
  0xAC, 0x3xx): we name them ``unknown-<n>`` (their meaning is not public) and file them under
  ``program``. Anything on the firmware object is ``program``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from sensor.events import CONTROL, DIAGNOSTIC, DISCOVERY, OTHER, PROGRAM, READ, SESSION, WRITE

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_REQ_HEAD = struct.Struct("<BB")  # service, path size in words
_RSP_HEAD = struct.Struct("<BBBB")  # service|0x80, reserved, general status, ext status size (words)
# Forward Open request (Vol. 1 3-5.5.2): priority/tick, timeout ticks, O->T id, T->O id, serial,
# originator vendor, originator serial, timeout multiplier, 3 reserved, O->T RPI.
_FWD_OPEN_HEAD = struct.Struct("<BBIIHHIB3xI")
_FWD_OPEN_RSP = struct.Struct("<IIHHIII")  # O->T id, T->O id, serial, vendor, orig serial, O->T API, T->O API
_FWD_CLOSE_HEAD = struct.Struct("<BBHHI")  # priority/tick, timeout, serial, vendor, orig serial
_UNCONN_SEND_HEAD = struct.Struct("<BBH")  # priority/tick, timeout ticks, embedded message size
_IDENTITY = struct.Struct("<HHHBBHI")  # vendor, device type, product code, rev major, rev minor, status, serial

MAX_DEPTH = 4  # nesting of Multiple Service Packet / Unconnected Send (real traffic uses 2)
MAX_MSP_SERVICES = 512  # services unpacked from one Multiple Service Packet (a 64 KiB PDU holds ~16k)
MAX_PATH_SEGMENTS = 32
MAX_SYMBOL = 128  # characters kept from a symbolic path

# --- services (Vol. 1 Appendix A) ----------------------------------------------------------------
SC_GET_ATTRIBUTES_ALL = 0x01
SC_SET_ATTRIBUTES_ALL = 0x02
SC_GET_ATTRIBUTE_LIST = 0x03
SC_SET_ATTRIBUTE_LIST = 0x04
SC_RESET = 0x05
SC_START = 0x06
SC_STOP = 0x07
SC_MULTIPLE_SERVICE_PACKET = 0x0A
SC_GET_ATTRIBUTE_SINGLE = 0x0E
SC_SET_ATTRIBUTE_SINGLE = 0x10
SC_FORWARD_CLOSE = 0x4E
SC_UNCONNECTED_SEND = 0x52
SC_FORWARD_OPEN = 0x54
SC_LARGE_FORWARD_OPEN = 0x5B

# Common services: code -> (name, category). Meaning is the same on every object.
COMMON_SERVICES: dict[int, tuple[str, str]] = {
    0x01: ("get_attributes_all", READ),
    0x02: ("set_attributes_all", WRITE),
    0x03: ("get_attribute_list", READ),
    0x04: ("set_attribute_list", WRITE),
    0x05: ("reset", DIAGNOSTIC),
    0x06: ("start", CONTROL),
    0x07: ("stop", CONTROL),
    0x08: ("create", WRITE),
    0x09: ("delete", WRITE),
    0x0A: ("multiple_service_packet", OTHER),
    0x0D: ("apply_attributes", WRITE),
    0x0E: ("get_attribute_single", READ),
    0x10: ("set_attribute_single", WRITE),
    0x11: ("find_next_object_instance", READ),
    0x14: ("error_response", OTHER),
    0x15: ("restore", PROGRAM),
    0x16: ("save", PROGRAM),
    0x17: ("nop", OTHER),
    0x18: ("get_member", READ),
    0x19: ("set_member", WRITE),
    0x1A: ("insert_member", WRITE),
    0x1B: ("remove_member", WRITE),
    0x1C: ("group_sync", OTHER),
    0x1D: ("get_connection_point_member_list", READ),
}

# --- classes (Vol. 1 5-1, Rockwell vendor range) ------------------------------------------------
CLASS_IDENTITY = 0x01
CLASS_MESSAGE_ROUTER = 0x02
CLASS_CONNECTION_MANAGER = 0x06
CLASS_FILE = 0x37
CLASS_PCCC = 0x67
CLASS_SYMBOL = 0x6B
CLASS_TEMPLATE = 0x6C
CLASS_WALL_CLOCK = 0x8B
CLASS_CONTROLLER = 0x8E
CLASS_FIRMWARE = 0xA1
CLASS_TCPIP = 0xF5
CLASS_ETHERNET_LINK = 0xF6

CLASS_NAMES: dict[int, str] = {
    0x01: "identity",
    0x02: "message_router",
    0x03: "devicenet",
    0x04: "assembly",
    0x05: "connection",
    0x06: "connection_manager",
    0x07: "register",
    0x08: "discrete_input_point",
    0x09: "discrete_output_point",
    0x0A: "analog_input_point",
    0x0B: "analog_output_point",
    0x0F: "parameter",
    0x10: "parameter_group",
    0x12: "group",
    0x29: "control_supervisor",
    0x2A: "ac_dc_drive",
    0x2B: "acknowledge_handler",
    0x2C: "overload",
    0x37: "file",
    0x39: "safety_supervisor",
    0x3A: "safety_validator",
    0x41: "event_log",
    0x43: "time_sync",
    0x44: "modbus",
    0x47: "dlr",
    0x48: "qos",
    0x4D: "target_connection_list",
    0x5D: "cip_security",
    0x5E: "ethernetip_security",
    0x5F: "certificate_management",
    0x67: "pccc",
    0x6B: "symbol",
    0x6C: "template",
    0x8B: "wall_clock_time",
    0x8E: "controller",
    0xA1: "firmware",
    0xF0: "controlnet",
    0xF1: "controlnet_keeper",
    0xF2: "controlnet_scheduling",
    0xF3: "connection_configuration",
    0xF4: "port",
    0xF5: "tcpip_interface",
    0xF6: "ethernet_link",
}

# Class-specific services: (class, code) -> (name, category). Vol. 1 3-5.5 (Connection Manager),
# 5-42 (File object), 1756-PM020 (Logix Symbol/Template), Vol. 1 ch. 4 PCCC object.
CLASS_SERVICES: dict[tuple[int, int], tuple[str, str]] = {
    (0x06, 0x4E): ("forward_close", SESSION),
    (0x06, 0x52): ("unconnected_send", OTHER),
    (0x06, 0x54): ("forward_open", SESSION),
    (0x06, 0x56): ("get_connection_data", READ),
    (0x06, 0x57): ("search_connection_data", READ),
    (0x06, 0x5A): ("get_connection_owner", READ),
    (0x06, 0x5B): ("large_forward_open", SESSION),
    (0x37, 0x4B): ("initiate_upload", PROGRAM),
    (0x37, 0x4C): ("initiate_download", PROGRAM),
    (0x37, 0x4D): ("initiate_partial_read", PROGRAM),
    (0x37, 0x4E): ("initiate_partial_write", PROGRAM),
    (0x37, 0x4F): ("upload_transfer", PROGRAM),
    (0x37, 0x50): ("download_transfer", PROGRAM),
    (0x37, 0x51): ("clear_file", PROGRAM),
    (0x67, 0x4B): ("execute_pccc", OTHER),
    (0x67, 0x4C): ("execute_dh_plus", OTHER),
    (0x67, 0x4D): ("execute_local_pccc", OTHER),
    (0x6C, 0x4C): ("read_template", READ),
}

# Logix tag services: valid on the Symbol object (0x6B) and on any symbolic (ANSI 0x91) path.
TAG_SERVICES: dict[int, tuple[str, str]] = {
    0x4C: ("read_tag", READ),
    0x4D: ("write_tag", WRITE),
    0x4E: ("read_modify_write_tag", WRITE),
    0x52: ("read_tag_fragmented", READ),
    0x53: ("write_tag_fragmented", WRITE),
    0x55: ("get_instance_attribute_list", READ),
}

# Rockwell's data-table services keep the same codes on its other vendor objects (icsnpp-enip names
# them "Read Data", "Write Data"...; the ControlFLASH capture streams firmware as 0x4D blocks).
VENDOR_DATA_SERVICES: dict[int, tuple[str, str]] = {
    0x4C: ("read_data", READ),
    0x4D: ("write_data", WRITE),
    0x4E: ("read_modify_write_data", WRITE),
    0x52: ("read_data_fragmented", READ),
    0x53: ("write_data_fragmented", WRITE),
}

# General status codes (Vol. 1 Appendix B-1), for display in fields.
GENERAL_STATUS: dict[int, str] = {
    0x00: "success",
    0x01: "connection_failure",
    0x02: "resource_unavailable",
    0x03: "invalid_parameter_value",
    0x04: "path_segment_error",
    0x05: "path_destination_unknown",
    0x06: "partial_transfer",
    0x07: "connection_lost",
    0x08: "service_not_supported",
    0x09: "invalid_attribute_value",
    0x0A: "attribute_list_error",
    0x0B: "already_in_requested_mode",
    0x0C: "object_state_conflict",
    0x0D: "object_already_exists",
    0x0E: "attribute_not_settable",
    0x0F: "privilege_violation",
    0x10: "device_state_conflict",
    0x11: "reply_data_too_large",
    0x12: "fragmentation_of_primitive",
    0x13: "not_enough_data",
    0x14: "attribute_not_supported",
    0x15: "too_much_data",
    0x16: "object_does_not_exist",
    0x17: "no_fragmentation_in_progress",
    0x18: "no_stored_attribute_data",
    0x19: "store_operation_failure",
    0x1A: "request_too_large",
    0x1B: "response_too_large",
    0x1C: "missing_list_data",
    0x1D: "invalid_attribute_value_list",
    0x1E: "embedded_service_error",
    0x1F: "vendor_specific_error",
    0x20: "invalid_parameter",
    0x21: "write_once_failure",
    0x22: "invalid_reply_received",
    0x23: "buffer_overflow",
    0x24: "invalid_message_format",
    0x25: "key_failure_in_path",
    0x26: "path_size_invalid",
    0x27: "unexpected_attribute",
    0x28: "invalid_member_id",
    0x29: "member_not_settable",
    0x2A: "group2_server_failure",
    0x2B: "unknown_modbus_error",
    0x2C: "attribute_not_gettable",
}

# Vendor ids (ODVA vendor list, the ones met on plant floors).
VENDORS: dict[int, str] = {
    1: "Rockwell Automation/Allen-Bradley",
    2: "Namco Controls",
    3: "Honeywell",
    5: "Rockwell Automation/Reliance Electric",
    8: "Molex",
    12: "Banner Engineering",
    26: "Festo",
    40: "WAGO",
    44: "Yaskawa",
    47: "Omron",
    48: "Turck",
    50: "ABB",
    58: "Phoenix Contact",
    90: "HMS Industrial Networks",
    108: "Beckhoff",
    161: "Keyence",
    243: "Schneider Electric",
    252: "OMRON Software",
    283: "Hilscher",
    356: "Fanuc",
    678: "Cognex",
    772: "Moxa",
    808: "SICK",
    1251: "Siemens",
}

# Device types (Vol. 1 6-1 device profiles).
DEVICE_TYPES: dict[int, str] = {
    0x00: "generic_device",
    0x02: "ac_drive",
    0x03: "motor_overload",
    0x04: "limit_switch",
    0x05: "inductive_proximity_switch",
    0x06: "photoelectric_sensor",
    0x07: "general_purpose_discrete_io",
    0x09: "resolver",
    0x0C: "communications_adapter",
    0x0E: "programmable_logic_controller",
    0x10: "position_controller",
    0x13: "dc_drive",
    0x15: "contactor",
    0x16: "motor_starter",
    0x17: "soft_start",
    0x18: "human_machine_interface",
    0x1A: "mass_flow_controller",
    0x1B: "pneumatic_valve",
    0x1C: "vacuum_pressure_gauge",
    0x1D: "process_control_value",
    0x1E: "residual_gas_analyzer",
    0x1F: "dc_power_generator",
    0x20: "rf_power_generator",
    0x21: "turbomolecular_vacuum_pump",
    0x22: "encoder",
    0x23: "safety_discrete_io",
    0x24: "fluid_flow_controller",
    0x25: "cip_motion_drive",
    0x26: "compo_net_repeater",
    0x2B: "managed_switch",
    0x96: "embedded_component",
}

# Identity object reset types (Vol. 1 5A-2.4).
RESET_TYPES = {0: "power_cycle", 1: "factory_defaults", 2: "factory_defaults_keep_comms"}

# --- paths (Vol. 1 Appendix C) -------------------------------------------------------------------
# A parsed path is a 6-tuple: (class, instance, attribute, member, symbol, route)
# - class/instance/attribute/member: int or None (the last one of each kind seen wins, except that
#   members collect as array indexes into the symbol)
# - symbol: "Tag.Member[3]" for symbolic paths, or None
# - route: "port:1/link:0" for port segments (Unconnected Send routes), or None
Path = tuple[int | None, int | None, int | None, int | None, str | None, str | None]
EMPTY_PATH: Path = (None, None, None, None, None, None)


def parse_path(buf: Any, off: int, end: int) -> tuple[Path, bool]:
    """Parse an EPATH in ``buf[off:end]`` (packed, word-padded as in Message Router requests).

    Returns (path, ok). ``ok`` is False when a segment was cut short or reserved; what was parsed up
    to that point is still returned (the reply still counts, the detail is best effort).
    """
    cls = inst = attr = member = None
    symbol: str | None = None
    route: str | None = None
    segments = 0
    while off < end:
        segments += 1
        if segments > MAX_PATH_SEGMENTS:
            return (cls, inst, attr, member, symbol, route), False
        seg = buf[off]
        kind = seg & 0xE0
        if kind == 0x20:  # logical segment 001TTTFF
            ltype = (seg >> 2) & 0x07
            fmt = seg & 0x03
            if ltype == 5:  # special: electronic key (format 0, key format 4: 8 bytes of key data)
                if seg == 0x34 and off + 2 <= end:
                    off += 2 + (8 if buf[off + 1] == 4 else 0)
                    continue
                return (cls, inst, attr, member, symbol, route), False
            if fmt == 0:
                if off + 2 > end:
                    return (cls, inst, attr, member, symbol, route), False
                value = buf[off + 1]
                off += 2
            elif fmt == 1:
                if off + 4 > end:
                    return (cls, inst, attr, member, symbol, route), False
                value = buf[off + 2] | (buf[off + 3] << 8)
                off += 4
            elif fmt == 2:
                if off + 6 > end:
                    return (cls, inst, attr, member, symbol, route), False
                value = _U32.unpack_from(buf, off + 2)[0]
                off += 6
            else:
                return (cls, inst, attr, member, symbol, route), False
            if ltype == 0:
                cls = value
            elif ltype == 1:
                inst = value
            elif ltype == 2:
                member = value
                if symbol is not None and len(symbol) < MAX_SYMBOL:
                    symbol = f"{symbol}[{value}]"  # Logix array element: Tag[3]
            elif ltype == 3:
                inst = value  # connection point: the assembly instance of an I/O connection
            elif ltype == 4:
                attr = value
            # 6 (service id) and 7 (extended logical) carry nothing we report
        elif kind == 0x00:  # port segment 000EPPPP
            extended_link = seg & 0x10
            port = seg & 0x0F
            p = off + 1
            if extended_link:
                if p >= end:
                    return (cls, inst, attr, member, symbol, route), False
                link_len = buf[p]
                p += 1
            else:
                link_len = 1
            if port == 0x0F:  # 16-bit port number follows
                if p + 2 > end:
                    return (cls, inst, attr, member, symbol, route), False
                port = buf[p] | (buf[p + 1] << 8)
                p += 2
            if p + link_len > end:
                return (cls, inst, attr, member, symbol, route), False
            link = bytes(buf[p : p + link_len])
            p += link_len
            link_s = str(link[0]) if link_len == 1 else link.decode("ascii", "replace")
            hop = f"port:{port}/link:{link_s}"
            route = hop if route is None else f"{route}/{hop}"
            off = p + ((p - off) & 1)  # padded to a word
        elif seg == 0x91:  # ANSI extended symbol segment: length, chars, pad to even
            if off + 2 > end:
                return (cls, inst, attr, member, symbol, route), False
            n = buf[off + 1]
            if off + 2 + n > end:
                return (cls, inst, attr, member, symbol, route), False
            name = bytes(buf[off + 2 : off + 2 + n]).decode("latin-1")
            symbol = name if symbol is None else f"{symbol}.{name}"
            if len(symbol) > MAX_SYMBOL:
                symbol = symbol[:MAX_SYMBOL]
            off += 2 + n + (n & 1)
        elif kind == 0x60:  # symbolic segment 011SSSSS (size in bytes; 0 = extended format)
            n = seg & 0x1F
            if n == 0:
                return (cls, inst, attr, member, symbol, route), False  # extended double-byte symbols: rare
            if off + 1 + n > end:
                return (cls, inst, attr, member, symbol, route), False
            name = bytes(buf[off + 1 : off + 1 + n]).decode("latin-1")
            symbol = name if symbol is None else f"{symbol}.{name}"
            off += 1 + n + ((1 + n) & 1)
        elif kind == 0x40:  # network segment 010XXXXX: 0x5X carry a word count, others one byte
            if seg & 0x10:
                if off + 2 > end:
                    return (cls, inst, attr, member, symbol, route), False
                off += 2 + 2 * buf[off + 1]
            else:
                off += 2
        elif seg == 0x80:  # simple data segment: word count, words
            if off + 2 > end:
                return (cls, inst, attr, member, symbol, route), False
            off += 2 + 2 * buf[off + 1]
        else:  # data type segments (0xA0+) and reserved: nothing more we can read
            return (cls, inst, attr, member, symbol, route), False
    return (cls, inst, attr, member, symbol, route), off == end


def path_key(path: Path) -> str | None:
    """The ``objects`` key of a path: ``class:0x01/instance:1/attribute:7`` or ``tag:Name[3]``."""
    cls, inst, attr, member, symbol, _route = path
    if symbol is not None:
        return f"tag:{symbol}"
    if cls is None:
        return None
    key = f"class:0x{cls:02x}"
    if inst is not None:
        key += f"/instance:{inst}"
    if attr is not None:
        key += f"/attribute:{attr}"
    if member is not None:
        key += f"/member:{member}"
    return key


def service_name(code: int, path: Path) -> tuple[str, str]:
    """(function_name, category) of a service code (no response bit) sent to ``path``.

    Class-specific codes (0x4B-0x63) take their meaning from the class: Connection Manager, File,
    PCCC, Template, and the Logix tag services on Symbol (0x6B) or symbolic paths. Unknown ones are
    ``unknown-<n>``; on a Rockwell vendor class their category is ``program`` (see module doc).
    """
    cls = path[0]
    if code < 0x4B or code > 0x63:
        found = COMMON_SERVICES.get(code)
        if found is None:
            return f"unknown-{code}", OTHER
        name, category = found
        if cls is not None:
            if cls == CLASS_IDENTITY and category == READ:
                category = DISCOVERY  # identity reads are how tools fingerprint a device
            elif cls == CLASS_FIRMWARE:
                category = PROGRAM
            # Create/Delete on Logix objects stay "write": RSLogix creates monitoring data tables
            # on the Symbol and program objects every time it goes online (Quickdraw captures).
        return name, category
    if path[4] is not None or cls == CLASS_SYMBOL:
        found = TAG_SERVICES.get(code)
        if found is not None:
            return found
    if cls is not None:
        found = CLASS_SERVICES.get((cls, code))
        if found is not None:
            return found
        if cls == CLASS_FIRMWARE:
            found = VENDOR_DATA_SERVICES.get(code)
            return (found[0] if found else f"unknown-{code}"), PROGRAM
        if is_vendor_class(cls):
            found = VENDOR_DATA_SERVICES.get(code)
            return found if found else (f"unknown-{code}", PROGRAM)
    return f"unknown-{code}", OTHER


def is_vendor_class(cls: int) -> bool:
    """Vendor-specific class ranges (Vol. 1 Table 5-1.2): 0x64-0xC7 and 0x300-0x4FF."""
    return 0x64 <= cls <= 0xC7 or 0x300 <= cls <= 0x4FF


# --- messages ------------------------------------------------------------------------------------
# One parsed CIP message ("record"), a plain tuple so the hot path builds no objects:
#   (depth, sc, is_response, path, general_status, ext_status, data_off, data_end, ok)
# - sc: service code without the response bit
# - path: the request path (requests) or EMPTY_PATH (responses: the path is only in the request)
# - ext_status: first extended status word or None
# - data_off/data_end: the service data in the buffer (request data or reply data)
# - ok: False when the message was cut short (counted by the caller as an anomaly)
Record = tuple[int, int, bool, Path, int | None, int | None, int, int, bool]


_PATH_CACHE: dict[bytes, tuple[Path, bool]] = {}
_PATH_CACHE_MAX = 4096  # distinct request paths remembered (process-wide; cleared when full)


def parse_message(buf: Any, off: int, end: int, out: list[Record], depth: int = 0) -> bool:
    """Parse one CIP message in ``buf[off:end]`` and append it (and what it carries) to ``out``.

    Wireshark counts one ``cip.sc`` per message it dissects: the Multiple Service Packet itself and
    each embedded service (request and reply), the Unconnected Send and its embedded request (the
    reply of an Unconnected Send is the embedded reply itself: one message). We append records in
    that same order so the caller's counting matches.

    Returns False when nothing could be parsed (fewer than 2 bytes).
    """
    if end - off < 2:
        return False
    sc_raw = buf[off]
    sc = sc_raw & 0x7F
    if sc_raw & 0x80:
        if end - off < 4:
            out.append((depth, sc, True, EMPTY_PATH, None, None, end, end, False))
            return True
        _, _, status, ext_words = _RSP_HEAD.unpack_from(buf, off)
        data_off = off + 4 + 2 * ext_words
        ext = None
        ok = data_off <= end
        if ext_words and off + 6 <= end:
            ext = _U16.unpack_from(buf, off + 4)[0]
        if not ok:
            data_off = end
        out.append((depth, sc, True, EMPTY_PATH, status, ext, data_off, end, ok))
        if sc == SC_MULTIPLE_SERVICE_PACKET and ok and depth < MAX_DEPTH:
            _msp(buf, data_off, end, out, depth)
        return True
    path_words = buf[off + 1]
    path_end = off + 2 + 2 * path_words
    if path_end > end:
        path, _ = parse_path(buf, off + 2, end)
        out.append((depth, sc, False, path, None, None, end, end, False))
        return True
    # Polling traffic repeats the same few paths: memoise them by their bytes (bounded).
    key = bytes(buf[off + 2 : path_end])
    cached = _PATH_CACHE.get(key)
    if cached is None:
        cached = parse_path(key, 0, len(key))
        if len(_PATH_CACHE) >= _PATH_CACHE_MAX:
            _PATH_CACHE.clear()
        _PATH_CACHE[key] = cached
    path, ok = cached
    out.append((depth, sc, False, path, None, None, path_end, end, ok))
    if depth >= MAX_DEPTH:
        return True
    if sc == SC_MULTIPLE_SERVICE_PACKET:
        _msp(buf, path_end, end, out, depth)
    elif sc == SC_UNCONNECTED_SEND and path[0] == CLASS_CONNECTION_MANAGER and path[4] is None and path_end + 4 <= end:
        # Vol. 1 3-5.5.2: priority/tick, timeout ticks, embedded message size, embedded message
        _, _, size = _UNCONN_SEND_HEAD.unpack_from(buf, path_end)
        inner = path_end + 4
        parse_message(buf, inner, min(inner + size, end), out, depth + 1)
    return True


def _msp(buf: Any, off: int, end: int, out: list[Record], depth: int) -> None:
    """Unpack a Multiple Service Packet body; a lying count or offset marks the outer record bad."""
    index = len(out) - 1
    if not _parse_msp(buf, off, end, out, depth + 1):
        out[index] = out[index][:8] + (False,)


def _parse_msp(buf: Any, off: int, end: int, out: list[Record], depth: int) -> bool:
    """Multiple Service Packet body (Vol. 1 A-4.10): count, offsets from the count, services.

    Returns False when the count or an offset does not fit the packet (the services that do are
    still unpacked) or when more than MAX_MSP_SERVICES are announced (the first ones are unpacked).
    """
    if off + 2 > end:
        return off == end  # an empty body (error reply) is fine, one odd byte is not
    count = _U16.unpack_from(buf, off)[0]
    ok = True
    if count > MAX_MSP_SERVICES:
        count = MAX_MSP_SERVICES
        ok = False
    table_end = off + 2 + 2 * count
    if table_end > end:
        return False  # the offset table itself does not fit: nothing trustworthy to unpack
    offsets = [_U16.unpack_from(buf, off + 2 + 2 * i)[0] for i in range(count)]
    for i, rel in enumerate(offsets):
        start = off + rel
        stop = off + offsets[i + 1] if i + 1 < count else end
        if stop > end or stop <= start:
            stop = end
        if start >= end or start < table_end:
            ok = False  # offset outside the services area
            continue
        parse_message(buf, start, stop, out, depth)
    return ok


# --- service data decoders (requests) ------------------------------------------------------------


def forward_open_fields(buf: Any, off: int, end: int, large: bool) -> dict[str, Any] | None:
    """Forward Open / Large Forward Open request data (Vol. 1 3-5.5.2 / 3-5.5.3)."""
    if off + _FWD_OPEN_HEAD.size > end:
        return None
    _tick, _timeout, ot_id, to_id, serial, vendor, orig_serial, mult, ot_rpi = _FWD_OPEN_HEAD.unpack_from(buf, off)
    p = off + _FWD_OPEN_HEAD.size
    psize = 4 if large else 2
    if p + psize + 4 + psize + 2 > end:
        return None
    ot_params = _U32.unpack_from(buf, p)[0] if large else _U16.unpack_from(buf, p)[0]
    p += psize
    to_rpi = _U32.unpack_from(buf, p)[0]
    p += 4
    to_params = _U32.unpack_from(buf, p)[0] if large else _U16.unpack_from(buf, p)[0]
    p += psize
    transport = buf[p]
    path_words = buf[p + 1]
    path, _ = parse_path(buf, p + 2, min(end, p + 2 + 2 * path_words))
    fields: dict[str, Any] = {
        "o_t_connection_id": ot_id,
        "t_o_connection_id": to_id,
        "connection_serial": serial,
        "originator_vendor": vendor,
        "originator_serial": orig_serial,
        "timeout_multiplier": mult,
        "o_t_rpi_us": ot_rpi,
        "t_o_rpi_us": to_rpi,
        "o_t_params": ot_params,
        "t_o_params": to_params,
        "transport_class": transport & 0x0F,
        "transport_trigger": (transport >> 4) & 0x07,
    }
    key = path_key(path)
    if key is not None:
        fields["connection_path"] = key
    if path[5] is not None:
        fields["route"] = path[5]
    return fields


def forward_open_reply_fields(buf: Any, off: int, end: int) -> dict[str, Any] | None:
    """Successful Forward Open reply (Vol. 1 3-5.5.2.2): connection ids and actual packet intervals."""
    if off + _FWD_OPEN_RSP.size > end:
        return None
    ot_id, to_id, serial, vendor, orig_serial, ot_api, to_api = _FWD_OPEN_RSP.unpack_from(buf, off)
    return {
        "o_t_connection_id": ot_id,
        "t_o_connection_id": to_id,
        "connection_serial": serial,
        "originator_vendor": vendor,
        "originator_serial": orig_serial,
        "o_t_api_us": ot_api,
        "t_o_api_us": to_api,
    }


def forward_close_fields(buf: Any, off: int, end: int) -> dict[str, Any] | None:
    """Forward Close request (Vol. 1 3-5.5.4): the connection triad."""
    if off + _FWD_CLOSE_HEAD.size > end:
        return None
    _tick, _timeout, serial, vendor, orig_serial = _FWD_CLOSE_HEAD.unpack_from(buf, off)
    return {"connection_serial": serial, "originator_vendor": vendor, "originator_serial": orig_serial}


def unconnected_send_route(buf: Any, off: int, end: int) -> str | None:
    """Route path of an Unconnected Send request (after the embedded message, padded to a word)."""
    if off + 4 > end:
        return None
    size = _U16.unpack_from(buf, off + 2)[0]
    p = off + 4 + size + (size & 1)
    if p + 2 > end:
        return None
    words = buf[p]
    path, _ = parse_path(buf, p + 2, min(end, p + 2 + 2 * words))
    return path[5]


def identity_fields(buf: Any, off: int, end: int) -> dict[str, Any] | None:
    """Identity object attributes 1-7 as laid out in Get Attributes All / ListIdentity (Vol. 1 5A-2.2).

    vendor(2) device type(2) product code(2) revision(1+1) status(2) serial(4) name(SHORT_STRING).
    """
    if off + _IDENTITY.size + 1 > end:
        return None
    vendor, dtype, product, major, minor, status, serial = _IDENTITY.unpack_from(buf, off)
    p = off + _IDENTITY.size
    n = buf[p]
    if p + 1 + n > end:
        return None  # the product name runs past the data
    name = bytes(buf[p + 1 : p + 1 + n]).decode("latin-1", "replace")
    return {
        "vendor_id": vendor,
        "vendor": VENDORS.get(vendor, f"vendor-{vendor}"),
        "device_type": DEVICE_TYPES.get(dtype, f"device-type-{dtype}"),
        "product_code": product,
        "revision": f"{major}.{minor:02d}",
        "serial": f"0x{serial:08x}",
        "product_name": name,
        "status": status,
    }


def tag_write_values(sc: int, buf: Any, off: int, end: int) -> tuple[Any, ...] | None:
    """Values of a Write Tag (0x4D) request: data type(2), element count(2), data (1756-PM020).

    Elementary types only (BOOL 0xC1, SINT 0xC2, INT 0xC3, DINT 0xC4, LINT 0xC5, REAL 0xCA,
    LREAL 0xCB, USINT/UINT/UDINT 0xC6-0xC8); at most 16 elements. Others: None.
    """
    if sc != 0x4D or off + 4 > end:
        return None
    dtype, count = struct.unpack_from("<HH", buf, off)
    fmt = _ELEMENTARY.get(dtype)
    if fmt is None:
        return None
    n = min(count, 16)
    size = struct.calcsize("<" + fmt)
    if off + 4 + n * size > end:
        return None
    values = struct.unpack_from("<" + fmt * n, buf, off + 4)
    if fmt in ("f", "d"):  # NaN and the infinities are not JSON numbers: kept as text, as elsewhere
        values = tuple(v if math.isfinite(v) else repr(v) for v in values)
    return values


_ELEMENTARY = {
    0xC1: "B",
    0xC2: "b",
    0xC3: "h",
    0xC4: "i",
    0xC5: "q",
    0xC6: "B",
    0xC7: "H",
    0xC8: "I",
    0xCA: "f",
    0xCB: "d",
}
