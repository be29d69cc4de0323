"""S7comm over ISO-on-TCP (TCP 102): TPKT, COTP, S7comm; S7comm-plus and ISO session/MMS identified.

Layering (each layer's reference in brackets)::

    TCP 102 -> TPKT [RFC 1006 §6] -> COTP TPDU [ISO 8073 / X.224 §13]
                 -> DT user data, reassembled on the EOT bit [ISO 8073 §13.7]
                      0x32 ...  S7comm            (this module)
                      0x72 ...  S7comm-plus       (_s7comm_plus.py, identification)
                      SPDU ...  ISO session/MMS   (_iso_mms.py, identification)

S7comm has no public specification. Field layouts follow the Wireshark dissector (``packet-s7comm.c``,
Thomas Wiens), snap7 and the real captures in ``pcaps/s7comm``; where a layout is inferred from a
capture the comment says so.

S7comm PDU (big-endian)::

    0     protocol id 0x32
    1     ROSCTR: 1 job, 2 ack, 3 ack_data, 7 userdata
    2-3   redundancy id
    4-5   PDU reference (a reply echoes the job's; we pair on it, per direction)
    6-7   parameter length
    8-9   data length
    10-11 error class / error code (ROSCTR 2 and 3 only)
    param, then data

Counting (``session.stats``) follows tshark 4.0 so that ``icswatch inspect`` can be compared with
GROUND_TRUTH.json:

- ``cotp``: one PDU per TPDU that Wireshark accepts (known type code, length indicator acceptable for
  that type), function key = the type code (``"0x0f"`` DT, ``"0x0e"`` CR, ``"0x0d"`` CC, ...).
  Only the first TPDU of a TPKT is looked at: Wireshark treats whatever follows a CR/CC/DR header as
  user data, and a DT runs to the end of the TPKT.
- ``s7comm``: one PDU per reassembled DT payload that passes Wireshark's heuristic (>= 10 bytes,
  byte 0 = 0x32, ROSCTR 1..7), function key = the parameter's first byte for job and ack_data PDUs
  whose parameter length is non-zero and whose byte is present. Userdata adds no key (tshark 4.0
  puts its function group and subfunction in other fields). Nothing else counts under ``s7comm``.
- ``s7comm_plus`` / ``mms``: our own counting (stock tshark has no S7comm-plus dissector and
  GROUND_TRUTH.json has no MMS entry).

Events: one per S7 PDU (job, ack, ack_data, userdata), per COTP connection-management TPDU
(CR/CC/DR/DC/ER/ED) and per S7comm-plus message / MMS PDU. DT TPDUs are carriers and emit no event.
The parser never raises: malformed input becomes a named anomaly (``s7comm_*`` / ``cotp_*``) and, when
an S7 header was recognised, an event with ``result="malformed"``.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from typing import Any, ClassVar

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
    UNSOLICITED,
    WRITE,
    IcsEvent,
)
from sensor.protocols._iso_mms import MmsTracker, looks_like_session
from sensor.protocols._s7comm_plus import S7PlusTracker, looks_like_tls
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session, pair_latency

# ---------------------------------------------------------------------------------------------------
# Wire structures (precompiled; every read is bounds-checked by the caller before unpack_from)

_S7_HDR = struct.Struct(">BBHHHH")  # protocol id, rosctr, redundancy id, pdu ref, param len, data len
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ITEM = struct.Struct(">BHHB")  # S7ANY after varspec/len/syntax: transport size, count, db, area
_SETUP = struct.Struct(">BBHHH")  # function, reserved, max AmQ calling, max AmQ called, PDU size

MAX_REASSEMBLY = 65536  # bytes of COTP DT fragments buffered per direction before giving up
MAX_PENDING = 512  # outstanding jobs / userdata requests remembered per flow for pairing
MAX_ITEMS = 256  # objects listed per PDU (a 960-byte PDU holds at most ~80 S7ANY items)
MAX_VALUES = 64  # decoded values per item (the rest is counted in fields["values_truncated"])
MAX_UPLOADS = 64  # upload ids remembered per flow (upload id -> block name)
_ITEM_CACHE_MAX = 4096  # memoised read/write item lists (process-wide; cleared when full)
_ITEM_CACHE: dict[bytes, tuple[Any, ...]] = {}

PROTOCOL = "s7comm"

# ---------------------------------------------------------------------------------------------------
# COTP (ISO 8073 §13.2.2.3 type codes; the key is the 4-bit code Wireshark puts in cotp.type)

COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT, COTP_ED, COTP_AK, COTP_EA, COTP_RJ, COTP_ER = (
    0xE, 0xD, 0x8, 0xC, 0xF, 0x1, 0x6, 0x2, 0x5, 0x7,
)
_COTP_KEY = {c: f"0x{c:02x}" for c in range(16)}


def _li_ok(code: int, li: int) -> bool:
    """Length indicators Wireshark accepts per TPDU type (checked with tshark 4.0.17 on crafted TPDUs;
    see tests). A TPDU it rejects is shown as "data" and not counted, so we do the same."""
    if code == COTP_DT:
        return li in (2, 4, 7, 8, 11)  # class 0/1, normal, extended, each with/without checksum
    if code in (COTP_CR, COTP_CC, COTP_DR):
        return li >= 6
    if code == COTP_DC:
        return 5 <= li <= 9
    if code == COTP_AK:
        return li >= 2
    if code == COTP_ER:
        return 4 <= li <= 8
    if code == COTP_ED:
        return li in (4, 7, 8, 11)
    if code == COTP_EA:
        return li in (4, 7)
    if code == COTP_RJ:
        return li in (4, 9)
    return False


_COTP_EVENTS = {
    # code -> (function_name, direction); all connection management is category "session"
    COTP_CR: ("connection_request", REQUEST),
    COTP_CC: ("connection_confirm", RESPONSE),
    COTP_DR: ("disconnect_request", REQUEST),
    COTP_DC: ("disconnect_confirm", RESPONSE),
    COTP_ER: ("tpdu_error", RESPONSE),
    COTP_ED: ("expedited_data", REQUEST),
}

# TSAP connection types of the S7 family (first TSAP byte)
_TSAP_TYPES = {1: "pg", 2: "op", 3: "s7_basic"}

_DR_REASONS = {
    0: "not_specified", 1: "congestion", 2: "session_not_attached", 3: "address_unknown",
    128: "normal", 129: "remote_congestion", 130: "negotiation_failed", 131: "duplicate_reference",
    132: "mismatched_references", 133: "protocol_error", 135: "reference_overflow",
    136: "refused_by_peer", 138: "header_or_parameter_length_invalid",
}

# ---------------------------------------------------------------------------------------------------
# S7comm vocabulary (names from packet-s7comm.c, made lower_snake)

ROSCTR_JOB, ROSCTR_ACK, ROSCTR_ACK_DATA, ROSCTR_USERDATA = 1, 2, 3, 7
ROSCTR_NAMES = {1: "job", 2: "ack", 3: "ack_data", 4: "rosctr_4", 5: "rosctr_5", 6: "rosctr_6", 7: "userdata"}

F_CPU_SERVICES, F_SETUP, F_READ, F_WRITE = 0x00, 0xF0, 0x04, 0x05
F_REQ_DOWNLOAD, F_DOWNLOAD_BLOCK, F_DOWNLOAD_ENDED = 0x1A, 0x1B, 0x1C
F_START_UPLOAD, F_UPLOAD, F_END_UPLOAD = 0x1D, 0x1E, 0x1F
F_PI_SERVICE, F_PLC_STOP = 0x28, 0x29

# function -> (name, category). Why these categories (see docs/protocols/s7comm.md): read/write var touch
# process data; download/upload/delete change or copy the logic (program); stop/start change the run
# state (control); setup communication negotiates the session.
FUNCTIONS: dict[int, tuple[str, str]] = {
    F_CPU_SERVICES: ("cpu_services", OTHER),
    0x01: ("mode_transition", CONTROL),
    F_SETUP: ("setup_communication", SESSION),
    F_READ: ("read_var", READ),
    F_WRITE: ("write_var", WRITE),
    F_REQ_DOWNLOAD: ("request_download", PROGRAM),
    F_DOWNLOAD_BLOCK: ("download_block", PROGRAM),
    F_DOWNLOAD_ENDED: ("download_ended", PROGRAM),
    F_START_UPLOAD: ("start_upload", PROGRAM),
    F_UPLOAD: ("upload", PROGRAM),
    F_END_UPLOAD: ("end_upload", PROGRAM),
    F_PI_SERVICE: ("plc_control", CONTROL),
    F_PLC_STOP: ("plc_stop", CONTROL),
}
_FUNC_KEY = [f"0x{i:02x}" for i in range(256)]

# PI services of PLC control (0x28) -> (function_name, category)
PI_SERVICES: dict[str, tuple[str, str]] = {
    "P_PROGRAM": ("plc_control_start", CONTROL),  # start (warm/hot restart, "C " = cold restart)
    "_INSE": ("plc_control_insert_block", PROGRAM),  # activate downloaded block(s)
    "_DELE": ("plc_control_delete_block", PROGRAM),
    "_GARB": ("plc_control_compress", PROGRAM),  # compress user memory
    "_MODU": ("plc_control_copy_ram_to_rom", PROGRAM),
    "_EXTMOD": ("plc_control_nc_service", OTHER),
}

AREAS = {
    0x01: "RECORD", 0x03: "SI200", 0x05: "SF200", 0x06: "AI200", 0x07: "AO200", 0x80: "P", 0x81: "I",
    0x82: "Q", 0x83: "M", 0x84: "DB", 0x85: "DI", 0x86: "L", 0x87: "V", 0x1C: "C", 0x1D: "T",
    0x1E: "C200", 0x1F: "T200",
}
_COUNTER_TIMER = frozenset((0x1C, 0x1D, 0x1E, 0x1F))
TRANSPORT_SIZES = {
    1: "BIT", 2: "BYTE", 3: "CHAR", 4: "WORD", 5: "INT", 6: "DWORD", 7: "DINT", 8: "REAL", 9: "DATE",
    10: "TOD", 11: "TIME", 12: "S5TIME", 15: "DATE_AND_TIME", 28: "COUNTER", 29: "TIMER",
    30: "IEC_COUNTER", 31: "IEC_TIMER", 32: "HS_COUNTER",
}
# size letter in STEP 7 notation (MB, MW, MD, DBX...) and element struct code for value decoding
_SIZE_LETTER = {1: "X", 2: "B", 3: "B", 4: "W", 5: "W", 6: "D", 7: "D", 8: "D", 9: "W", 10: "D", 11: "D", 12: "W"}
_ELEM = {1: "B", 2: "B", 3: "B", 4: "H", 5: "h", 6: "I", 7: "i", 8: "f", 9: "H", 10: "I", 11: "i", 12: "H",
         28: "H", 29: "H"}
_ELEM_SIZE = {"B": 1, "H": 2, "h": 2, "I": 4, "i": 4, "f": 4}

BLOCK_TYPES = {"08": "OB", "09": "CMOD", "0A": "DB", "0B": "SDB", "0C": "FC", "0D": "SFC", "0E": "FB", "0F": "SFB"}
_FILESYSTEMS = {"P": "passive", "A": "active", "B": "active_and_passive"}

# ---------------------------------------------------------------------------------------------------
# Userdata (function group / subfunction). function = 0x10000 | group << 8 | subfunction, so userdata
# codes never collide with job codes (0x00..0xff).

UD_FUNCTION_BASE = 0x10000
UD_TYPE_DIRECTION = {0: UNSOLICITED, 1: REQUEST, 2: RESPONSE}
UD_GROUPS = {
    0: "mode_transition", 1: "programmer_commands", 2: "cyclic_data", 3: "block_functions",
    4: "cpu_functions", 5: "security", 6: "pbc_bsend", 7: "time_functions", 0x3F: "nc_programming",
    0x20: "data_record_routing",
}
UD_SUBFUNCTIONS: dict[tuple[int, int], tuple[str, str]] = {
    # 1 programmer commands (test and installation functions): monitoring reads, forcing writes
    (1, 0x01): ("block_status", READ), (1, 0x02): ("variable_status", READ),
    (1, 0x03): ("output_istack", DIAGNOSTIC), (1, 0x04): ("output_bstack", DIAGNOSTIC),
    (1, 0x05): ("output_lstack", DIAGNOSTIC), (1, 0x06): ("time_measurement", DIAGNOSTIC),
    (1, 0x07): ("force_selection", WRITE), (1, 0x08): ("modify_variable", WRITE), (1, 0x09): ("force", WRITE),
    (1, 0x0A): ("breakpoint", CONTROL), (1, 0x0B): ("exit_hold", CONTROL),
    (1, 0x0C): ("memory_reset", PROGRAM), (1, 0x0D): ("disable_job", DIAGNOSTIC),
    (1, 0x0E): ("enable_job", DIAGNOSTIC), (1, 0x0F): ("delete_job", DIAGNOSTIC),
    (1, 0x10): ("read_job_list", DIAGNOSTIC), (1, 0x11): ("read_job", DIAGNOSTIC),
    (1, 0x12): ("replace_job", DIAGNOSTIC), (1, 0x13): ("block_status_v2", READ),
    (1, 0x16): ("flash_led", DIAGNOSTIC),
    # 2 cyclic data: subscriptions to process values
    (2, 0x01): ("cyclic_transfer", READ), (2, 0x04): ("cyclic_unsubscribe", READ),
    (2, 0x05): ("change_driven_transfer", READ), (2, 0x07): ("change_driven_transfer_modify", READ),
    (2, 0x08): ("read_record", READ),
    # 3 block functions: map the program (reconnaissance)
    (3, 0x01): ("list_blocks", DISCOVERY), (3, 0x02): ("list_blocks_of_type", DISCOVERY),
    (3, 0x03): ("get_block_info", DISCOVERY),
    # 4 CPU functions
    (4, 0x01): ("read_szl", DISCOVERY), (4, 0x02): ("message_service", DIAGNOSTIC),
    (4, 0x03): ("diagnostic_message", DIAGNOSTIC), (4, 0x05): ("alarm8_indication", DIAGNOSTIC),
    (4, 0x06): ("notify_indication", DIAGNOSTIC), (4, 0x07): ("alarm8_lock", CONTROL),
    (4, 0x08): ("alarm8_unlock", CONTROL), (4, 0x09): ("scan_indication", DIAGNOSTIC),
    (4, 0x0B): ("alarm_ack", CONTROL), (4, 0x0C): ("alarm_ack_indication", DIAGNOSTIC),
    (4, 0x0D): ("alarm_lock_indication", DIAGNOSTIC), (4, 0x0E): ("alarm_unlock_indication", DIAGNOSTIC),
    (4, 0x10): ("ar_send_indication", OTHER), (4, 0x11): ("alarm_sq_indication", DIAGNOSTIC),
    (4, 0x12): ("alarm_s_indication", DIAGNOSTIC), (4, 0x13): ("alarm_query", READ),
    (4, 0x16): ("notify8_indication", DIAGNOSTIC),
    # 5 security: legitimation with the protection-level password
    (5, 0x01): ("plc_password", SESSION),
    # 7 time functions
    (7, 0x01): ("read_clock", READ), (7, 0x02): ("set_clock", WRITE),
    (7, 0x03): ("read_clock_following", READ), (7, 0x04): ("set_clock", WRITE),
    # 0x3f NC programming (Sinumerik file transfer)
    (0x3F, 0x01): ("nc_request_download", PROGRAM), (0x3F, 0x02): ("nc_download_block", PROGRAM),
    (0x3F, 0x03): ("nc_continue_download", PROGRAM), (0x3F, 0x04): ("nc_download_ended", PROGRAM),
    (0x3F, 0x06): ("nc_start_upload", PROGRAM), (0x3F, 0x07): ("nc_upload", PROGRAM),
    (0x3F, 0x08): ("nc_continue_upload", PROGRAM),
    # 0x20 data record routing
    (0x20, 0x01): ("drr_init", OTHER), (0x20, 0x02): ("drr_finish", OTHER), (0x20, 0x03): ("drr_data", OTHER),
}
MODE_NAMES = {
    0: "stop", 1: "warm_restart", 2: "run", 3: "hot_restart", 4: "hold", 6: "cold_restart",
    9: "run_redundant", 11: "link_up", 12: "update",
}
# SZL partial list numbers (low byte of the SZL id; the high byte selects an extract)
SZL_NAMES = {
    0x00: "szl_list", 0x11: "module_identification", 0x12: "cpu_characteristics", 0x13: "user_memory_areas",
    0x14: "system_areas", 0x15: "block_types", 0x19: "led_status", 0x1C: "component_identification",
    0x22: "interrupt_status", 0x24: "operating_mode", 0x25: "process_image_partitions",
    0x31: "communication_capabilities", 0x32: "communication_status", 0x37: "ethernet_details",
    0x74: "led_status", 0x90: "dp_master_system", 0x91: "module_status", 0x92: "rack_station_status",
    0x94: "rack_station_status", 0x95: "dp_master_system_extended", 0x96: "module_status_pnio",
    0xA0: "diagnostic_buffer", 0xB1: "module_diagnostics", 0xB2: "module_diagnostics",
    0xB3: "module_diagnostics", 0xB4: "module_diagnostics",
}
# SZL 0x001c component identification record index -> identity key
_SZL_1C_KEYS = {
    1: "system_name", 2: "module_name", 3: "plant_id", 4: "copyright", 5: "serial", 7: "product",
    8: "memory_card_serial", 0x0B: "location",
}


# ---------------------------------------------------------------------------------------------------
# Small pure helpers


def _ascii(b: bytes) -> str:
    """Siemens strings are space/NUL padded Latin-1; strip the padding."""
    return b.decode("latin-1").strip(" \x00")


def _block_from_filename(name: str) -> dict[str, Any] | None:
    """``_0800001P`` -> OB1 (file id ``_``/``$``, 2-char type, 5-digit number, destination filesystem).

    Layout from packet-s7comm.c (s7comm_decode_plc_controls_filename) and the download captures."""
    if len(name) < 8 or name[0] not in "_$":
        return None
    btype = BLOCK_TYPES.get(name[1:3].upper())
    num = name[3:8]
    if btype is None or not num.isdigit():
        return None
    out: dict[str, Any] = {"block_type": btype, "block_number": int(num), "block": f"{btype}{int(num)}"}
    if len(name) > 8:
        out["filesystem"] = _FILESYSTEMS.get(name[8], name[8])
    return out


def s7_object(area: int, db: int, tsize: int, count: int, address: int) -> str:
    """STEP 7 notation of an S7ANY item: DB1.DBB10[4], DB1.DBX0.3, I0.0, MW100, C5, T3.

    Addresses stay 0-based wire values (byte.bit); ``[n]`` is the element count when it is not 1."""
    name = AREAS.get(area)
    if name is None:
        name = f"AREA{area:#04x}"
    if area in _COUNTER_TIMER:
        text = f"{name}{address}"
    else:
        byte, bit = address >> 3, address & 7
        letter = _SIZE_LETTER.get(tsize, "B")
        if area in (0x84, 0x85):
            prefix = f"{name}{db}.{name}"
            text = f"{prefix}X{byte}.{bit}" if letter == "X" else f"{prefix}{letter}{byte}"
        elif letter == "X":
            text = f"{name}{byte}.{bit}"
        else:
            text = f"{name}{letter}{byte}"
    if count != 1:
        text += f"[{count}]"
    return text


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # NaN/inf are not JSON
    return v


def decode_values(data: bytes, tsize: int | None, data_tsize: int) -> tuple[Any, bool]:
    """Decode one item's data by the request's transport size (or, unpaired, the data transport size).

    Returns (value, truncated): a scalar for one element, a list for several, raw bytes when the type
    is not a fixed-size number."""
    code = _ELEM.get(tsize) if tsize is not None else None
    if code is None:
        if data_tsize == 3:
            code = "B"  # bit access: one byte per bit value
        elif data_tsize == 5:
            code = "h"
        elif data_tsize == 7:
            code = "f"
        else:
            if len(data) > MAX_VALUES * 4:
                return data[: MAX_VALUES * 4], True
            return data, False
    size = _ELEM_SIZE[code]
    k = len(data) // size
    truncated = k > MAX_VALUES
    if truncated:
        k = MAX_VALUES
    if k == 0:
        return data, False
    st = _VALUE_STRUCTS.get((k, code))
    if st is None:
        st = _VALUE_STRUCTS[(k, code)] = struct.Struct(f">{k}{code}")  # k <= MAX_VALUES: bounded
    vals = st.unpack_from(data)
    if code == "f" and not all(map(math.isfinite, vals)):
        vals = tuple(_clean(v) for v in vals)
    if k == 1:
        return vals[0], truncated
    return list(vals), truncated


_VALUE_STRUCTS: dict[tuple[int, str], struct.Struct] = {}  # (count, element code) -> compiled struct


def parse_timestamp(b: bytes, off: int) -> str | None:
    """S7 BCD timestamp (10 bytes, packet-s7comm.c s7comm_add_timestamp_to_tree): reserved, year
    century, year, month, day, hour, minute, second, 3 BCD digits of milliseconds + weekday nibble."""
    if off + 10 > len(b):
        return None

    def bcd(x: int) -> int:
        hi, lo = x >> 4, x & 0x0F
        if hi > 9 or lo > 9:
            raise ValueError
        return hi * 10 + lo

    try:
        yy = bcd(b[off + 2])
        year = 2000 + yy if yy < 90 else 1900 + yy
        month, day = bcd(b[off + 3]), bcd(b[off + 4])
        hour, minute, sec = bcd(b[off + 5]), bcd(b[off + 6]), bcd(b[off + 7])
        ms = bcd(b[off + 8]) * 10 + ((b[off + 9] >> 4) if (b[off + 9] >> 4) <= 9 else 0)
    except ValueError:
        return None
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{sec:02d}.{ms:03d}"


def _tsap_fields(prefix: str, tsap: bytes, fields: dict[str, Any]) -> int | None:
    """Describe a TSAP; return the rack/slot byte (our ``unit``) for two-byte S7 TSAPs."""
    fields[prefix] = tsap.hex()
    if len(tsap) == 2:
        kind = _TSAP_TYPES.get(tsap[0])
        if kind is None:
            return None  # not an S7 TSAP (MMS uses 0x0001): no rack/slot meaning
        fields[prefix + "_type"] = kind
        fields[prefix + "_rack"] = tsap[1] >> 5
        fields[prefix + "_slot"] = tsap[1] & 0x1F
        return tsap[1]
    if len(tsap) >= 4 and all(32 <= c < 127 for c in tsap):
        fields[prefix + "_name"] = tsap.decode("ascii")  # S7comm-plus: "SIMATIC-ROOT-HMI", ...
    return None


class _Pending:
    """An S7 job (or userdata request) waiting for its reply; what the reply event inherits."""

    __slots__ = ("address", "category", "extra", "function", "name", "objects", "quantity", "ts", "tsizes")

    def __init__(self, ts: float, function: int, name: str, category: str) -> None:
        self.ts = ts
        self.function = function
        self.name = name
        self.category = category
        self.objects: tuple[str, ...] | None = None
        self.tsizes: list[int] | None = None
        self.address: int | None = None
        self.quantity: int | None = None
        self.extra: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------------
# The analyzer


class S7commAnalyzer(FramedStreamAnalyzer):
    """One ISO-on-TCP flow: TPKT framing (base class), COTP, DT reassembly, payload dispatch."""

    protocol: ClassVar[str] = PROTOCOL
    max_buffer: ClassVar[int] = 65535 + 1024  # a TPKT is at most 65535 bytes

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._frag: dict[bool, bytearray | None] = {True: None, False: None}
        self._skip: dict[bool, bool] = {True: False, False: False}  # dropping an over-cap DT sequence
        self._pending: dict[tuple[bool, int], _Pending] = {}
        self._cr: dict[bool, float] = {}
        self._unit: int | None = None
        self._uploads: dict[int, str] = {}
        self._plus: S7PlusTracker | None = None
        self._mms: MmsTracker | None = None
        # (side, group, subfunction) -> the last userdata reply from that side announced more data:
        # the next reply continues it (no SZL header / list header of its own)
        self._ud_more: dict[tuple[bool, int, int], bool] = {}
        self._cotp_hist: Counter[str] | None = None  # function histograms, fetched once per flow
        self._s7_hist: Counter[str] | None = None

    # -- framing --------------------------------------------------------------------------------

    def frame_length(self, buf: bytes, off: int) -> int | None:
        """RFC 1006 §6: version 3, reserved, 16-bit length including the 4-byte header."""
        if len(buf) - off < 4:
            return None
        if buf[off] != 3:
            return 0  # not TPKT here: Wireshark also gives up on the rest of the segment
        length = (buf[off + 2] << 8) | buf[off + 3]
        return length if length >= 4 else 0

    def on_pdu(self, from_client: bool, pdu: memoryview, ts: float) -> None:
        try:
            self._tpkt(from_client, pdu, ts)
        except Exception:  # noqa: BLE001 - a bug of ours, never the peer's fault: count it, keep the flow
            self.session.anomaly("s7comm_internal_error")

    def gap(self, from_client: bool, ts: float) -> None:
        super().gap(from_client, ts)
        if self._frag[from_client] is not None:
            self.session.anomaly("cotp_fragment_lost")
        self._frag[from_client] = None
        self._skip[from_client] = False
        if self._plus is not None:
            self._plus.gap(from_client)

    def close(self, ts: float) -> None:
        super().close(ts)
        for side in (True, False):
            if self._frag[side]:
                self.session.anomaly("cotp_fragment_incomplete_at_close")
            self._frag[side] = None

    def held_bytes(self) -> int:
        """Partial TPKTs plus COTP DT sequences waiting for their end-of-TSDU."""
        frag = self._frag
        return super().held_bytes() + len(frag[True] or b"") + len(frag[False] or b"")

    # -- COTP -----------------------------------------------------------------------------------

    def _tpkt(self, from_client: bool, pdu: memoryview, ts: float) -> None:
        n = len(pdu)
        session = self.session
        if n >= 7 and pdu[4] == 2 and pdu[5] >> 4 == COTP_DT:
            # fast path, nearly every TPDU on a live connection: class 0 DT (counted inline)
            session.stats.pdus["cotp"] += 1
            cotp = self._cotp_hist
            if cotp is None:
                cotp = self._cotp_hist = session.stats.hist("cotp")
            cotp["0x0f"] += 1
            if pdu[6] & 0x80 and self._frag[from_client] is None and not self._skip[from_client]:
                if n > 7:
                    self._dispatch(from_client, bytes(pdu[7:]), ts)
                return
            self._dt(from_client, pdu[7:], bool(pdu[6] & 0x80), ts)
            return
        if n < 6:
            # TPKT 4..5: no room for any TPDU (Wireshark: tpkt / data, no cotp)
            session.anomaly("cotp_tpkt_too_short")
            return
        li = pdu[4]
        code = pdu[5] >> 4
        if li == 0 or li == 255 or li > n - 4:
            session.anomaly("cotp_bad_length_indicator")
            return
        if not _li_ok(code, li):
            known = code in _COTP_EVENTS or code in (COTP_DT, COTP_AK, COTP_EA, COTP_RJ)
            session.anomaly("cotp_bad_length_indicator" if known else "cotp_unknown_tpdu")
            return
        if code == COTP_DT:
            # EOT bit: class 0 (LI 2) in byte 2; normal format (LI 4/8) after the 2-byte dst-ref;
            # extended (LI 7/11) top bit of the 4-byte TPDU-NR after the dst-ref.
            pos = 6 if li == 2 else 8
            if pos >= n:
                session.anomaly("cotp_bad_length_indicator")  # Wireshark: malformed, not counted
                return
            session.stats.pdu("cotp")
            session.stats.func("cotp", "0x0f")
            self._dt(from_client, pdu[5 + li :], bool(pdu[pos] & 0x80), ts)
            return
        session.stats.pdu("cotp")
        session.stats.func("cotp", _COTP_KEY[code])
        if code in (COTP_CR, COTP_CC):
            self._connect(from_client, code, bytes(pdu[4:]), li, ts, n)
        elif code in _COTP_EVENTS:
            self._cotp_event(from_client, code, bytes(pdu[4:]), li, ts, n)

    def _connect(self, from_client: bool, code: int, c: bytes, li: int, ts: float, size: int) -> None:
        """CR/CC (ISO 8073 §13.3/13.4): LI, type|CDT, dst-ref, src-ref, class/options, parameters."""
        session = self.session
        name, direction = _COTP_EVENTS[code]
        fields: dict[str, Any] = {}
        hdr_end = min(li + 1, len(c))
        anomaly = None
        if hdr_end >= 7:
            fields["dst_ref"] = _U16.unpack_from(c, 2)[0]
            fields["src_ref"] = _U16.unpack_from(c, 4)[0]
            fields["class"] = c[6] >> 4
        off = 7
        unit = None
        for _ in range(32):  # variable part: code, length, value (bounded loop)
            if off + 2 > hdr_end:
                break
            pcode, plen = c[off], c[off + 1]
            val = c[off + 2 : off + 2 + plen]
            if off + 2 + plen > hdr_end:
                anomaly = "cotp_bad_parameter_length"
                break
            if pcode == 0xC0 and plen == 1:
                fields["tpdu_size"] = 1 << val[0] if val[0] < 17 else val[0]
            elif pcode == 0xC1:
                _tsap_fields("calling_tsap", val, fields)
            elif pcode == 0xC2:
                # the called TSAP is the responder's (the PLC) in the CR and, echoed, in the CC
                unit = _tsap_fields("called_tsap", val, fields)
            elif pcode == 0xC6 and plen == 1:
                fields["additional_options"] = val[0]
            off += 2 + plen
        if li + 1 > len(c):
            anomaly = "cotp_truncated_tpdu"
        if anomaly:
            session.anomaly(anomaly)
        # The server's TSAP names the CPU (rack/slot): kept as this flow's ``unit`` for S7 events.
        if unit is not None:
            self._unit = unit
        latency = None
        if code == COTP_CR:
            self._cr[from_client] = ts
        else:
            t0 = self._cr.pop(not from_client, None)
            if t0 is not None:
                latency = pair_latency(t0, ts)
        session.event(
            from_client, ts, "cotp", direction, code, name, SESSION, unit=self._unit, size=size,
            fields=fields, latency=latency, result=MALFORMED if anomaly else OK, anomaly=anomaly,
        )

    def _cotp_event(self, from_client: bool, code: int, c: bytes, li: int, ts: float, size: int) -> None:
        name, direction = _COTP_EVENTS[code]
        fields: dict[str, Any] = {}
        result = OK
        if code == COTP_DR and len(c) >= 7:
            fields["reason"] = _DR_REASONS.get(c[6], f"unknown-{c[6]}")
        elif code == COTP_ER and len(c) >= 5:
            fields["reject_cause"] = c[4]
            result = EXCEPTION
        self.session.event(
            from_client, ts, "cotp", direction, code, name, SESSION, unit=self._unit, size=size,
            fields=fields or None, result=result, code=fields.get("reject_cause"),
        )

    def _dt(self, from_client: bool, data: memoryview, eot: bool, ts: float) -> None:
        """Reassemble DT user data on the EOT bit (ISO 8073 §6.3), bounded by MAX_REASSEMBLY."""
        session = self.session
        if self._skip[from_client]:
            if eot:
                self._skip[from_client] = False
            return
        frag = self._frag[from_client]
        if not eot:
            if frag is None:
                self._frag[from_client] = bytearray(data)
            else:
                frag += data
                if len(frag) > MAX_REASSEMBLY:
                    session.anomaly("cotp_reassembly_cap")
                    self._frag[from_client] = None
                    self._skip[from_client] = True
            self.report_held(ts)  # the global buffer budget (sensor/budget.py)
            return
        if frag is not None:
            frag += data
            self._frag[from_client] = None
            self.report_held(ts)
            if len(frag) > MAX_REASSEMBLY:
                session.anomaly("cotp_reassembly_cap")
                return
            payload = bytes(frag)
        else:
            payload = bytes(data)
        if payload:
            self._dispatch(from_client, payload, ts)

    def _dispatch(self, from_client: bool, p: bytes, ts: float) -> None:
        b0 = p[0]
        if b0 == 0x32:
            n = len(p)
            # Wireshark's heuristic (dissect_s7comm): at least 10 bytes, ROSCTR 1..7.
            if n >= 10 and 1 <= p[1] <= 7:
                self._s7(from_client, p, ts)
            else:
                self.session.anomaly("s7comm_bad_header")
            return
        if b0 == 0x72 or (self._plus is not None and looks_like_tls(p)):
            if self._plus is None:
                self._plus = S7PlusTracker(self.session)
            self._plus.handle(from_client, p, ts, self._unit)
            return
        if looks_like_session(p):
            if self._mms is None:
                self._mms = MmsTracker(self.session)
            self._mms.handle(from_client, p, ts)
            return
        self.session.anomaly("cotp_unrecognised_payload")

    # -- S7comm ---------------------------------------------------------------------------------

    def _remember(self, key: tuple[bool, int], pend: _Pending) -> None:
        pending = self._pending
        if key not in pending and len(pending) >= MAX_PENDING:
            pending.pop(next(iter(pending)))  # oldest first (insertion order)
            self.session.anomaly("s7comm_pending_overflow")
        pending[key] = pend

    def _s7(self, from_client: bool, p: bytes, ts: float) -> None:
        session = self.session
        stats = session.stats
        n = len(p)
        _, rosctr, _, pduref, plen, dlen = _S7_HDR.unpack_from(p, 0)
        hlen = 12 if rosctr in (2, 3) else 10
        stats.pdus[PROTOCOL] += 1
        if rosctr in (1, 3) and plen and n > hlen:
            hist = self._s7_hist
            if hist is None:
                hist = self._s7_hist = stats.hist(PROTOCOL)
            hist[_FUNC_KEY[p[hlen]]] += 1
        fields: dict[str, Any] = {"rosctr": ROSCTR_NAMES[rosctr], "pdu_ref": pduref}
        anomaly = None
        if n < hlen:
            anomaly = "s7comm_truncated_header"
        elif hlen + plen + dlen > n:
            anomaly = "s7comm_truncated_pdu"
        elif hlen + plen + dlen < n:
            anomaly = "s7comm_trailing_bytes"  # Wireshark ignores them too; we parse what is declared
        if anomaly:
            session.anomaly(anomaly)
        if rosctr == ROSCTR_USERDATA:
            self._userdata(from_client, p, ts, pduref, plen, dlen, fields, anomaly)
            return
        if anomaly == "s7comm_truncated_header":
            self._malformed(from_client, ts, rosctr, fields, anomaly, n)
            return
        code = None
        result = OK
        if hlen == 12:
            errcls, errcod = p[10], p[11]
            if errcls or errcod:
                code = (errcls << 8) | errcod
                result = EXCEPTION
                fields["error_class"] = errcls
                fields["error_code"] = errcod
        par = hlen
        pend_end = min(n, hlen + plen)
        data_off = hlen + plen
        data_end = min(n, data_off + dlen)
        if rosctr == ROSCTR_JOB:
            self._job(from_client, p, ts, pduref, par, pend_end, data_off, data_end, fields, anomaly)
        elif rosctr in (ROSCTR_ACK, ROSCTR_ACK_DATA):
            self._reply(from_client, p, ts, rosctr, pduref, par, pend_end, data_off, data_end, fields,
                        anomaly, result, code)
        else:  # ROSCTR 4..6: accepted by Wireshark's heuristic, meaning unknown
            session.anomaly("s7comm_unknown_rosctr")
            session.event(
                from_client, ts, PROTOCOL, REQUEST if from_client else RESPONSE, -1, f"unknown-rosctr-{rosctr}",
                OTHER, unit=self._unit, size=n, fields=fields, result=MALFORMED, anomaly="s7comm_unknown_rosctr",
            )

    def _malformed(self, from_client: bool, ts: float, rosctr: int, fields: dict[str, Any], anomaly: str,
                   size: int) -> None:
        self.session.event(
            from_client, ts, PROTOCOL, REQUEST if rosctr == ROSCTR_JOB else RESPONSE, -1, "malformed", OTHER,
            unit=self._unit, size=size, fields=fields, result=MALFORMED, anomaly=anomaly,
        )

    def _job(self, from_client: bool, p: bytes, ts: float, pduref: int, par: int, pend: int, doff: int,
             dend: int, fields: dict[str, Any], anomaly: str | None) -> None:
        session = self.session
        n = len(p)
        if par >= pend:
            # a job without a parameter part carries no function: nothing to pair or classify
            session.anomaly("s7comm_job_without_parameter")
            self._malformed(from_client, ts, ROSCTR_JOB, fields, anomaly or "s7comm_job_without_parameter", n)
            return
        func = p[par]
        name, category = FUNCTIONS.get(func, (f"unknown-{func}", OTHER))
        pend_obj = _Pending(ts, func, name, category)
        objects: tuple[str, ...] | None = None
        values: tuple[Any, ...] | None = None
        address = quantity = None
        if func in (F_READ, F_WRITE):
            objects, tsizes, address, quantity = self._items(p, par, pend, fields)
            pend_obj.objects, pend_obj.tsizes = objects, tsizes
            pend_obj.address, pend_obj.quantity = address, quantity
            if func == F_WRITE:
                values, bad = self._data_items(p, doff, dend, tsizes, fields, request=True)
                if bad:
                    anomaly = anomaly or bad
                    session.anomaly(bad)
        elif func == F_SETUP:
            if par + 8 <= pend:
                _, _, amq_calling, amq_called, pdu_size = _SETUP.unpack_from(p, par)
                fields.update(max_amq_calling=amq_calling, max_amq_called=amq_called, pdu_size=pdu_size)
        elif func == F_PI_SERVICE:
            name, category = self._pi_service(p, par, pend, fields)
            pend_obj.name, pend_obj.category = name, category
            blocks = fields.get("blocks")
            if blocks:
                objects = tuple(blocks)
                pend_obj.objects = objects
            pend_obj.extra = {"pi_service": fields["pi_service"]} if "pi_service" in fields else None
        elif func == F_PLC_STOP:
            # 0x29, 5 unknown bytes, string length, PI service name ("P_PROGRAM")
            if par + 7 <= pend:
                sl = p[par + 6]
                fields["pi_service"] = _ascii(p[par + 7 : min(pend, par + 7 + sl)])
        elif func in (F_REQ_DOWNLOAD, F_DOWNLOAD_BLOCK, F_DOWNLOAD_ENDED, F_START_UPLOAD):
            # function, status, 2 unknown, 4-byte upload id / 0, filename length, filename [, lengths]
            if par + 9 <= pend:
                fl = p[par + 8]
                fname = _ascii(p[par + 9 : min(pend, par + 9 + fl)])
                fields["filename"] = fname
                blk = _block_from_filename(fname)
                if blk is not None:
                    fields.update(blk)
                    objects = (blk["block"],)
                    pend_obj.objects = objects
                    pend_obj.extra = {"block": blk["block"]}
                if func == F_REQ_DOWNLOAD:
                    q = par + 9 + fl
                    if q < pend and p[q] >= 13 and q + 14 <= pend:
                        s = p[q + 2 : q + 14]
                        if s.isdigit():
                            fields["load_memory_length"] = int(s[:6])
                            fields["mc7_length"] = int(s[6:12])
        elif func in (F_UPLOAD, F_END_UPLOAD) and par + 8 <= pend:
            upid = _U32.unpack_from(p, par + 4)[0]
            fields["upload_id"] = upid
            blk_name = self._uploads.get(upid)
            if blk_name is not None:
                objects = (blk_name,)
                fields["block"] = blk_name
                pend_obj.objects = objects
            if func == F_END_UPLOAD:
                self._uploads.pop(upid, None)
        self._remember((from_client, pduref), pend_obj)
        self._emit(
            from_client, ts, REQUEST, func, name, category, address, quantity, values, objects,
            MALFORMED if anomaly and anomaly != "s7comm_trailing_bytes" else OK, None, None, anomaly, fields, n,
        )

    def _reply(self, from_client: bool, p: bytes, ts: float, rosctr: int, pduref: int, par: int, pend: int,
               doff: int, dend: int, fields: dict[str, Any], anomaly: str | None, result: str,
               code: int | None) -> None:
        session = self.session
        n = len(p)
        job = self._pending.pop((not from_client, pduref), None)
        latency = pair_latency(job.ts, ts) if job is not None else None
        func = p[par] if (rosctr == ROSCTR_ACK_DATA and par < pend) else (job.function if job else -1)
        if job is not None and job.function == func:
            name, category = job.name, job.category
        elif func >= 0:
            name, category = FUNCTIONS.get(func, (f"unknown-{func}", OTHER))
        else:
            name, category = "ack", OTHER
        objects = job.objects if job is not None and job.function == func else None
        address = job.address if objects is not None and job is not None else None
        quantity = job.quantity if objects is not None and job is not None else None
        if job is not None and job.extra:
            fields.update(job.extra)
        values: tuple[Any, ...] | None = None
        if rosctr == ROSCTR_ACK_DATA and par < pend:
            if func == F_READ:
                tsizes = job.tsizes if job is not None and job.function == F_READ else None
                values, bad = self._data_items(p, doff, dend, tsizes, fields, request=False)
                if bad:
                    anomaly = anomaly or bad
                    session.anomaly(bad)
                if result == OK and fields.get("item_errors"):
                    result = EXCEPTION
                    code = fields["item_errors"][0][1]
            elif func == F_WRITE:
                rcs = []
                for i in range(min(MAX_ITEMS, max(0, dend - doff))):
                    rc = p[doff + i]
                    if rc != 0xFF:
                        rcs.append([i, rc])
                if rcs:
                    fields["item_errors"] = rcs
                    if result == OK:
                        result = EXCEPTION
                        code = rcs[0][1]
            elif func == F_SETUP and par + 8 <= pend:
                _, _, amq_calling, amq_called, pdu_size = _SETUP.unpack_from(p, par)
                fields.update(max_amq_calling=amq_calling, max_amq_called=amq_called, pdu_size=pdu_size)
            elif func == F_START_UPLOAD and par + 9 <= pend:
                upid = _U32.unpack_from(p, par + 4)[0]
                fields["upload_id"] = upid
                sl = p[par + 8]
                s = p[par + 9 : min(pend, par + 9 + sl)]
                if s.isdigit():
                    fields["block_length"] = int(s)
                blk_name = fields.get("block")
                if isinstance(blk_name, str):
                    if upid not in self._uploads and len(self._uploads) >= MAX_UPLOADS:
                        self._uploads.pop(next(iter(self._uploads)))
                    self._uploads[upid] = blk_name
            elif func in (F_UPLOAD, F_DOWNLOAD_BLOCK):
                # param: function, status (1 = more data follows); data: length, 2 unknown, block bytes
                if par + 2 <= pend:
                    fields["more_data"] = bool(p[par + 1] & 0x01)
                if doff + 2 <= dend:
                    fields["data_length"] = _U16.unpack_from(p, doff)[0]
        if job is None and rosctr == ROSCTR_ACK_DATA:
            session.anomaly("s7comm_unpaired_response")
        self._emit(
            from_client, ts, RESPONSE, func, name, category, address, quantity, values, objects,
            MALFORMED if anomaly and anomaly != "s7comm_trailing_bytes" else result, code, latency, anomaly, fields, n,
        )

    def _emit(self, from_client: bool, ts: float, direction: str, function: int, name: str, category: str,
              address: int | None, quantity: int | None, values: tuple[Any, ...] | None,
              objects: tuple[str, ...] | None, result: str, code: int | None, latency: float | None,
              anomaly: str | None, fields: dict[str, Any], size: int) -> None:
        """An s7comm event built positionally (what Session.event does without its keyword plumbing):
        jobs and their replies are nearly every event of an S7 capture."""
        session = self.session
        if from_client:
            addr = session.client_ip, session.client_port, session.server_ip, session.server_port
            smac, dmac = session.client_mac, session.server_mac
        else:
            addr = session.server_ip, session.server_port, session.client_ip, session.client_port
            smac, dmac = session.server_mac, session.client_mac
        session.emit(
            IcsEvent(
                ts, PROTOCOL, *addr, session.transport, direction, function, name, category, self._unit, address,
                quantity, values, objects, result, code, latency, anomaly, fields, session.flow_id, smac, dmac, size,
            )
        )  # fmt: skip

    def _items(self, p: bytes, par: int, pend: int, fields: dict[str, Any]
               ) -> tuple[tuple[str, ...] | None, list[int], int | None, int | None]:
        """Read/write var request items (param: function, item count, items). S7ANY items are
        ``12 0a 10 tsize count(2) db(2) area address(3)``; other syntax ids are named, not decoded.

        HMIs poll the same item list over and over, so well-formed parameter parts are memoised
        (bounded cache keyed by the parameter bytes; the result is a pure function of them)."""
        if par + 2 > pend:
            return None, [], None, None
        key = p[par + 1 : pend]
        hit = _ITEM_CACHE.get(key)
        if hit is not None:
            fields.update(hit[4])
            return hit[0], hit[1], hit[2], hit[3]
        before = len(fields)
        res = self._parse_items(p, par, pend, fields)
        if res is not None:
            if len(_ITEM_CACHE) >= _ITEM_CACHE_MAX:
                _ITEM_CACHE.clear()
            added = dict(list(fields.items())[before:])
            _ITEM_CACHE[key] = (*res, added)
            return res
        return self._parse_items(p, par, pend, fields, strict=False)  # type: ignore[return-value]

    def _parse_items(self, p: bytes, par: int, pend: int, fields: dict[str, Any], strict: bool = True
                     ) -> tuple[tuple[str, ...] | None, list[int], int | None, int | None] | None:
        """Parse the items; with ``strict`` return None (nothing counted) at the first malformed item
        so that the caller re-parses non-strictly, counting the anomaly and keeping what was read."""
        count = p[par + 1]
        fields["item_count"] = count
        objs: list[str] = []
        tsizes: list[int] = []
        address = quantity = None
        off = par + 2
        for i in range(count):
            if off + 3 > pend or off + 2 + p[off + 1] > pend or p[off + 1] < 1:
                if strict:
                    return None
                self.session.anomaly("s7comm_item_truncated")
                break
            slen = p[off + 1]
            syntax = p[off + 2]
            end = off + 2 + slen
            if syntax == 0x10 and slen >= 10:
                tsize, cnt, db, area = _ITEM.unpack_from(p, off + 3)
                addr = (p[off + 9] << 16) | (p[off + 10] << 8) | p[off + 11]
                tsizes.append(tsize)
                if i == 0:
                    address = addr if area in _COUNTER_TIMER else addr >> 3
                    quantity = cnt
                    fields["area"] = AREAS.get(area, f"unknown-{area}")
                    if area in (0x84, 0x85):
                        fields["db"] = db
                    if area not in _COUNTER_TIMER:
                        fields["bit"] = addr & 7
                    fields["transport_size"] = TRANSPORT_SIZES.get(tsize, f"unknown-{tsize}")
                if len(objs) < MAX_ITEMS:
                    objs.append(s7_object(area, db, tsize, cnt, addr))
            else:
                tsizes.append(-1)
                if len(objs) < MAX_ITEMS:
                    objs.append(f"syntax-{syntax:#04x}")  # 1200SYM (0xb2), DBREAD (0xb0), NCK (0x82)...
                if i == 0:
                    fields["syntax_id"] = syntax
            off = end
        return (tuple(objs) if objs else None), tsizes, address, quantity

    def _data_items(self, p: bytes, off: int, end: int, tsizes: list[int] | None, fields: dict[str, Any],
                    request: bool) -> tuple[tuple[Any, ...] | None, str | None]:
        """Data items of a write request or read response: return code, transport size, length
        (bits for transport sizes 3/4/5, bytes otherwise), data, fill byte after odd-length items."""
        vals: list[Any] = []
        errors: list[list[int]] = []
        truncated = False
        i = 0
        bad = None
        limit = len(tsizes) if request and tsizes is not None else MAX_ITEMS
        while off < end and i < limit:
            if off + 4 > end:
                bad = "s7comm_data_item_truncated"
                break
            rc, dts = p[off], p[off + 1]
            ln = _U16.unpack_from(p, off + 2)[0]
            nbytes = (ln + 7) >> 3 if dts in (3, 4, 5) else ln
            off += 4
            if not request and rc != 0xFF:
                errors.append([i, rc])
                if rc != 0x00:
                    nbytes = 0  # a failed item is its 4-byte head only, whatever its length says
            if off + nbytes > end:
                bad = "s7comm_data_item_truncated"
                break
            tsize = tsizes[i] if tsizes is not None and i < len(tsizes) else None
            if nbytes:
                v, t = decode_values(p[off : off + nbytes], tsize if tsize and tsize > 0 else None, dts)
                truncated = truncated or t
                vals.append(v)
            else:
                vals.append(None)  # keeps values[i] aligned with objects[i] (failed items carry no data)
            off += nbytes
            if nbytes & 1 and off < end:
                off += 1  # fill byte
            i += 1
        if errors:
            fields["item_errors"] = errors
        if truncated:
            fields["values_truncated"] = True
        return (tuple(vals) if vals else None), bad

    def _pi_service(self, p: bytes, par: int, pend: int, fields: dict[str, Any]) -> tuple[str, str]:
        """PLC control (0x28): function, 7 unknown bytes, parameter block length(2), parameter block,
        service name length, service name (packet-s7comm.c s7comm_decode_plc_controls_param_hex28)."""
        if par + 10 > pend:
            return "plc_control", CONTROL
        pbl = _U16.unpack_from(p, par + 8)[0]
        pb = p[par + 10 : min(pend, par + 10 + pbl)]
        q = par + 10 + pbl
        service = ""
        if q < pend:
            service = _ascii(p[q + 1 : min(pend, q + 1 + p[q])])
        fields["pi_service"] = service
        if service.startswith("_N_"):
            name, category = "plc_control_nc_service", OTHER
        else:
            name, category = PI_SERVICES.get(service, ("plc_control", CONTROL))
        if service == "P_PROGRAM":
            # no argument: restart as configured (snap7's "hot start"; an S7-300 performs a warm
            # restart); "C " asks for a cold restart
            fields["start_mode"] = "cold" if pb[:1] == b"C" else "hot"
        elif service in ("_INSE", "_DELE") and len(pb) >= 2:
            # block count, reserved, then 8-byte entries: type (2 ASCII), number (5 ASCII), filesystem
            blocks = []
            for k in range(min(pb[0], MAX_ITEMS)):
                e = 2 + 8 * k
                if e + 8 > len(pb):
                    break
                blk = _block_from_filename("_" + _ascii(pb[e : e + 8]))
                if blk is not None:
                    blocks.append(blk["block"])
            if blocks:
                fields["blocks"] = blocks
        elif pb:
            fields["pi_parameter"] = _ascii(pb)
        return name, category

    # -- userdata -------------------------------------------------------------------------------

    def _userdata(self, from_client: bool, p: bytes, ts: float, pduref: int, plen: int, dlen: int,
                  fields: dict[str, Any], anomaly: str | None) -> None:
        """ROSCTR 7. Parameter: head 00 01 12, parameter length, method (0x11 req / 0x12 res),
        type(2 bits)|function group(6 bits), subfunction, sequence number [, data unit ref, last data
        unit, error code]. Data: return code, transport size, length, payload."""
        session = self.session
        n = len(p)
        par = 10
        if p[par : par + 1] == b"\x01" and plen >= 8 and n >= par + 8:
            # mode transition indication (function 0x01; packet-s7comm.c s7comm_decode_ud)
            mode = p[par + 6]
            fields["mode"] = MODE_NAMES.get(mode, f"unknown-{mode}")
            session.event(
                from_client, ts, PROTOCOL, UNSOLICITED, UD_FUNCTION_BASE | mode, "mode_transition",
                DIAGNOSTIC, unit=self._unit, size=n, fields=fields, anomaly=anomaly,
            )
            return
        if plen < 8 or n < par + 8:
            session.anomaly("s7comm_userdata_truncated")
            self._malformed(from_client, ts, ROSCTR_USERDATA, fields, "s7comm_userdata_truncated", n)
            return
        tg = p[par + 5]
        typ, group, sub, seq = tg >> 6, tg & 0x3F, p[par + 6], p[par + 7]
        function = UD_FUNCTION_BASE | (group << 8) | sub
        gname = UD_GROUPS.get(group)
        if group == 0:
            name, category = "mode_transition", DIAGNOSTIC
            fields["mode"] = MODE_NAMES.get(sub, f"unknown-{sub}")
        elif group == 6:
            name, category = "pbc_bsend", OTHER
        else:
            name, category = UD_SUBFUNCTIONS.get((group, sub), (f"unknown-{function}", OTHER))
        fields["function_group"] = gname or f"unknown-{group}"
        fields["subfunction"] = sub
        fields["sequence"] = seq
        direction = UD_TYPE_DIRECTION.get(typ, REQUEST)
        result = OK
        code = None
        more = False
        if p[par + 3] >= 8 and n >= par + 12:
            more = p[par + 9] != 0  # "last data unit": 0 yes, 1 no (more follows)
            if more:
                fields["more_data"] = True
            err = _U16.unpack_from(p, par + 10)[0]
            if err:
                result, code = EXCEPTION, err
                fields["error_code"] = err
        d = par + plen
        dend = min(n, d + dlen)
        body = b""
        if d + 4 <= dend:
            ret = p[d]
            bl = _U16.unpack_from(p, d + 2)[0]
            body = p[d + 4 : min(dend, d + 4 + bl)]
            if direction == RESPONSE and ret not in (0xFF, 0x00):
                # Not an exception by itself: CPUs answer 0x0a ("object does not exist") to test jobs
                # and cyclic unsubscribes that simply return no data (step7_s300_readDiagData). The
                # parameter's error code is the failure indicator.
                fields["return_code"] = ret
        objects: tuple[str, ...] | None = None
        values: tuple[Any, ...] | None = None
        continuation = False
        if direction != REQUEST:
            key = (from_client, group, sub)
            continuation = self._ud_more.pop(key, False)
            if more:
                if key not in self._ud_more and len(self._ud_more) >= 64:
                    self._ud_more.pop(next(iter(self._ud_more)))
                self._ud_more[key] = True
        if continuation:
            fields["continuation"] = True  # a later fragment: its data has no header of its own
        elif group == 4 and sub == 0x01:
            self._szl(body, direction, fields)
        elif group == 3:
            objects = self._block_functions(sub, body, direction, fields)
        elif group == 7 and body:
            clock = parse_timestamp(body, 0)
            if clock is not None and ((sub in (2, 4) and direction == REQUEST) or (
                    sub in (1, 3) and direction == RESPONSE)):
                fields["clock"] = clock
                values = (clock,)
        elif group == 5 and sub == 0x01 and direction == REQUEST:
            # the password itself (8 bytes, trivially obfuscated) is never recorded
            fields["password_length"] = len(body)
        elif group == 2 and sub in (1, 5, 7) and direction == REQUEST and len(body) >= 4:
            objects = self._cyclic_items(body, fields)
        elif group == 4 and sub == 0x03 and len(body) >= 2:
            fields["event_id"] = _U16.unpack_from(body, 0)[0]
        latency = None
        if direction == REQUEST:
            pend = _Pending(ts, function, name, category)
            pend.objects = objects
            self._remember((from_client, pduref), pend)
        elif direction == RESPONSE:
            req = self._pending.pop((not from_client, pduref), None)
            if req is not None:
                latency = pair_latency(req.ts, ts)
                if objects is None and req.function == function:
                    objects = req.objects
        session.event(
            from_client, ts, PROTOCOL, direction, function, name, category, unit=self._unit, objects=objects,
            values=values, size=n, fields=fields, latency=latency,
            result=MALFORMED if anomaly and anomaly != "s7comm_trailing_bytes" else result, code=code,
            anomaly=anomaly,
        )

    def _szl(self, body: bytes, direction: str, fields: dict[str, Any]) -> None:
        """Read SZL (system status list). Request: SZL id, index. Response: id, index, record length,
        record count, records. Module (0x0011) and component (0x001c) identification fill
        ``fields["identity"]`` for the asset inventory."""
        if len(body) < 4:
            return
        szl_id, index = _U16.unpack_from(body, 0)[0], _U16.unpack_from(body, 2)[0]
        fields["szl_id"] = f"0x{szl_id:04x}"
        fields["szl_index"] = f"0x{index:04x}"
        fields["szl_name"] = SZL_NAMES.get(szl_id & 0xFF, f"unknown-{szl_id & 0xFF}")
        if direction != RESPONSE or len(body) < 8:
            return
        rlen, rcount = _U16.unpack_from(body, 4)[0], _U16.unpack_from(body, 6)[0]
        fields["szl_records"] = rcount
        part = szl_id & 0xFF
        if part not in (0x11, 0x1C) or rlen < 4:
            return
        identity: dict[str, Any] = {"vendor": "Siemens"}
        off = 8
        for _ in range(min(rcount, 32)):
            if off + rlen > len(body):
                break
            rec = body[off : off + rlen]
            off += rlen
            idx = _U16.unpack_from(rec, 0)[0]
            if part == 0x11 and rlen >= 28:
                # index, MLFB order number (20), module type (2), version Ausbg (2), Ausbe (2)
                mlfb = _ascii(rec[2:22])
                if idx == 1 and mlfb:
                    identity["order_number"] = mlfb
                elif idx == 6 and mlfb:
                    identity["hardware_order_number"] = mlfb
                    identity["hardware_version"] = rec[27]
                elif idx == 7:
                    if rec[24] == 0x56:  # 'V' then major, minor, patch
                        identity["firmware_version"] = f"V{rec[25]}.{rec[26]}.{rec[27]}"
                elif idx == 0x81 and mlfb:
                    identity["boot_loader"] = mlfb
            elif part == 0x1C:
                text = _ascii(rec[2:])
                key = _SZL_1C_KEYS.get(idx)
                if idx == 9 and rlen >= 4:
                    identity["vendor_id"] = _U16.unpack_from(rec, 2)[0]
                elif key is not None and text and text.isprintable():
                    identity[key] = text
        if len(identity) > 1:
            if "product" not in identity and "module_name" in identity:
                identity["product"] = identity["module_name"]
            fields["identity"] = identity

    def _block_functions(self, sub: int, body: bytes, direction: str, fields: dict[str, Any]
                         ) -> tuple[str, ...] | None:
        """Block functions (group 3): list blocks, list blocks of a type, block info."""
        if sub == 0x01 and direction == RESPONSE:
            counts: dict[str, int] = {}
            for k in range(0, min(len(body), 4 * 16) - 3, 4):
                bt = BLOCK_TYPES.get(f"0{chr(body[k + 1])}".upper())
                if bt is not None:
                    counts[bt] = _U16.unpack_from(body, k + 2)[0]
            if counts:
                fields["block_counts"] = counts
        elif sub == 0x02 and direction == REQUEST and len(body) >= 2:
            bt = BLOCK_TYPES.get(_ascii(body[:2]).upper())
            if bt is not None:
                fields["block_type"] = bt
        elif sub == 0x02 and direction == RESPONSE:
            nums = [_U16.unpack_from(body, k)[0] for k in range(0, min(len(body), 4 * MAX_VALUES) - 3, 4)]
            fields["block_numbers"] = nums
        elif sub == 0x03 and direction == REQUEST and len(body) >= 8:
            blk = _block_from_filename("_" + _ascii(body[:8]))
            if blk is not None:
                fields.update(blk)
                return (blk["block"],)
        return None

    def _cyclic_items(self, body: bytes, fields: dict[str, Any]) -> tuple[str, ...] | None:
        """Cyclic read subscription: item count(2), time base, interval, S7ANY items with fill bytes."""
        count = _U16.unpack_from(body, 0)[0]
        fields["item_count"] = count
        fields["interval"] = body[3]
        fields["time_base"] = body[2]
        objs = []
        off = 4
        for _ in range(min(count, MAX_ITEMS)):
            if off + 12 > len(body) or body[off + 2] != 0x10:
                break
            tsize, cnt, db, area = _ITEM.unpack_from(body, off + 3)
            addr = (body[off + 9] << 16) | (body[off + 10] << 8) | body[off + 11]
            objs.append(s7_object(area, db, tsize, cnt, addr))
            off += 2 + body[off + 1]
        return tuple(objs) if objs else None


# ---------------------------------------------------------------------------------------------------
# Registry entry


def probe(payload: bytes, from_client: bool) -> bool:
    """TPKT + COTP on a port other than 102. Strict, because RDP (3389) also speaks TPKT/X.224: a CR
    must carry S7/ISO TSAP parameters (0xc1/0xc2), a DT must carry S7comm, S7comm-plus or a session
    SPDU, a CC must carry a TSAP."""
    n = len(payload)
    if n < 7 or payload[0] != 3 or payload[1] != 0:
        return False
    tl = (payload[2] << 8) | payload[3]
    li = payload[4]
    if tl < 7 or li < 2 or li + 5 > min(tl, n):
        return False
    code = payload[5] >> 4
    if code in (COTP_CR, COTP_CC):
        return b"\xc1" in payload[11 : 5 + li] or b"\xc2" in payload[11 : 5 + li]
    if code == COTP_DT and li == 2 and n >= 9:
        body = payload[7:]
        if body[0] == 0x32:
            return len(body) >= 10 and body[1] in (1, 2, 3, 7)
        if body[0] == 0x72:
            return body[1] in (1, 2, 3, 0xFE, 0xFF)
        return body[:4] == b"\x01\x00\x01\x00"
    return False


SPEC = ProtocolSpec(
    name=PROTOCOL,
    analyzer=S7commAnalyzer,
    tcp_ports=frozenset({102}),
    probe=probe,
    probe_order=40,
    reports=(PROTOCOL, "cotp", "s7comm_plus", "mms"),
)
