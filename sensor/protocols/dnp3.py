"""DNP3 (IEEE 1815-2012) over TCP and UDP: link, transport and application layers.

Design
======
DNP3 was built for serial lines and keeps its three serial layers when carried over IP
(IEEE 1815-2012 Annex C: "DNP3 over IP" simply wraps the serial octet stream in TCP or UDP):

    link frame (clause 9.2)      05 64 | LEN | CTL | DST(le16) | SRC(le16) | CRC(le16)   <- 10-octet header
                                 then the user data in blocks of 16 octets, each followed by a CRC
    transport segment (8.2)      TH (FIN 0x80, FIR 0x40, SEQ 0x3f) + up to 249 octets of fragment
    application fragment (4.2)   AC (FIR 0x80, FIN 0x40, CON 0x20, UNS 0x10, SEQ 0x0f) | FC |
                                 [IIN1 IIN2, responses only] | object headers and objects

``LEN`` counts CTL, DST, SRC and the user data (not the CRCs), so it is at least 5 and at most 255;
the wire length of a frame is ``10 + (LEN-5) + 2*ceil((LEN-5)/16)``, 292 octets at most.

What this module does, in order, for each direction of a flow:

1. **Framing** (TCP: over the in-order byte stream, buffered below one frame; UDP: within each
   datagram). A frame must start with 05 64 and carry a valid header CRC. Where the start octets are
   missing we count ``dnp3_bad_framing`` once and scan for the next 05 64 whose header CRC checks
   (resynchronisation); a header whose CRC fails where a frame was due is ``dnp3_bad_header_crc``.
   During a resynchronisation scan, candidates that fail their CRC are skipped silently: they are
   data octets, not frames, and counting them would inflate the anomaly.
2. **Link layer** (clause 9): each frame with a good header counts one PDU (Wireshark's
   ``dnp3.start``), including link-only frames (reset link, link status, ACK) and frames whose data
   blocks then fail their CRC. A failing data block CRC drops the frame (``dnp3_bad_data_crc``).
3. **Transport** (clause 8): segments are reassembled per direction and per (source, destination)
   link address pair, following FIR/FIN and the 6-bit sequence number, which wraps 63 -> 0. The
   fragment buffer is bounded (``max_fragment``); going over it is ``dnp3_reassembly_overflow``.
4. **Application layer** (clause 4): one IcsEvent per complete fragment, with the function code and
   name, IIN bits, every object header (group, variation, qualifier, range), and for the control
   objects (CROB g12v1, analog output block g41v1-4) the commanded values. Requests and responses
   are paired by the application sequence number to fill ``latency``.

The parser reports, it never judges: it names anomalies and leaves verdicts to the rules. It never
raises: every malformed input is a counted anomaly, and every loop consumes input or is bounded by a
count checked against the octets available.

Counting for ``icswatch inspect`` follows Wireshark: ``pdu`` per link frame with a good header,
``func`` per reassembled application fragment of at least two octets. Where we differ from
Wireshark, see docs/protocols/dnp3.md ("Where tshark differs").
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from enum import IntEnum
from typing import Any

from sensor.events import (
    CONTROL,
    DIAGNOSTIC,
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
from sensor.protocols.base import Analyzer, ProtocolSpec, Session, pair_latency

PROTOCOL = "dnp3"
PORT = 20000

# --------------------------------------------------------------------------------------------------
# CRC-16/DNP (IEEE 1815-2012 clause 9.2.4.1.3 / Annex E): polynomial 0x3D65, processed LSB first
# (reflected 0xA6BC), initial value 0, result complemented, sent low octet first.
# --------------------------------------------------------------------------------------------------


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


CRC_TABLE = _make_crc_table()


def _crc16_dnp_table(data: bytes) -> int:
    """Table-driven CRC-16/DNP in pure Python (about 0.8 us for a 16-octet block)."""
    table = CRC_TABLE
    crc = 0
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFF


# Every link frame costs 1 + ceil(data/16) CRCs, and in pure Python they were a third of the time
# DNP3 takes (bench/protocol_bench.py). fastcrc (MIT, Rust) computes the same CRC-16/DNP in ~60 ns
# a block against ~800 ns for the table loop; the loop stays as the fallback where it is missing.
try:
    from fastcrc.crc16 import dnp as _crc16_dnp_fast
except ImportError:  # pragma: no cover - fastcrc is a dependency; the fallback gives the same values
    _crc16_dnp_fast = None

_crc = _crc16_dnp_fast or _crc16_dnp_table  # (bytes) -> CRC-16/DNP, complemented


def crc16_dnp(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """CRC-16/DNP of ``data[start:end]`` (check value of b"123456789" is 0xEA82)."""
    return _crc(bytes(data[start:end]))


def add_crcs(frame_without_crcs: bytes) -> bytes:
    """Insert the header CRC and the per-block CRCs into a frame given as header(8) + user data.

    Used by tests and by the capture generator to build valid frames.
    """
    head, data = frame_without_crcs[:8], frame_without_crcs[8:]
    out = bytearray(head)
    out += struct.pack("<H", crc16_dnp(head))
    for i in range(0, len(data), 16):
        block = data[i : i + 16]
        out += block
        out += struct.pack("<H", crc16_dnp(block))
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# Link layer (clause 9.2)
# --------------------------------------------------------------------------------------------------

_HDR = struct.Struct("<BBBBHHH")  # 0x05, 0x64, LEN, CTL, DST, SRC, header CRC
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
HEADER_LEN = 10
MIN_LEN_FIELD = 5  # CTL + DST + SRC
MAX_FRAME = 292  # LEN 255: 10 + 250 + 2*16

# CTL: DIR 0x80 (sent by the master), PRM 0x40, FCB 0x20, FCV/DFC 0x10, function 0x0f.
CTL_PRM = 0x40  # 1 = primary (initiating) frame
CTL_FUNC = 0x0F

# Link function codes (Tables 9-1 and 9-2): primary 0 reset link states, 2 test link states,
# 3 confirmed user data, 4 unconfirmed user data, 9 request link status; secondary 0 ACK, 1 NACK,
# 11 link status, 15 not supported. Only primary 3 and 4 carry transport segments (9.2.5.1).
_USER_DATA_FUNCS = frozenset((3, 4))


def frame_length(length_field: int) -> int:
    """Wire length of a link frame whose LEN octet is ``length_field`` (>= 5)."""
    data = length_field - MIN_LEN_FIELD
    return HEADER_LEN + data + 2 * ((data + 15) >> 4)


# --------------------------------------------------------------------------------------------------
# Application layer: function codes (clause 4.2.2.5, Table 4-2), with names and categories
# --------------------------------------------------------------------------------------------------


class FunctionCode(IntEnum):
    """Application function codes (IEEE 1815-2012 clause 4.2.2.5, Table 4-2)."""

    CONFIRM = 0
    READ = 1
    WRITE = 2
    SELECT = 3
    OPERATE = 4
    DIRECT_OPERATE = 5
    DIRECT_OPERATE_NO_ACK = 6
    IMMEDIATE_FREEZE = 7
    IMMEDIATE_FREEZE_NO_ACK = 8
    FREEZE_CLEAR = 9
    FREEZE_CLEAR_NO_ACK = 10
    FREEZE_AT_TIME = 11
    FREEZE_AT_TIME_NO_ACK = 12
    COLD_RESTART = 13
    WARM_RESTART = 14
    INITIALIZE_DATA = 15
    INITIALIZE_APPLICATION = 16
    START_APPLICATION = 17
    STOP_APPLICATION = 18
    SAVE_CONFIGURATION = 19  # deprecated
    ENABLE_UNSOLICITED = 20
    DISABLE_UNSOLICITED = 21
    ASSIGN_CLASS = 22
    DELAY_MEASURE = 23
    RECORD_CURRENT_TIME = 24
    OPEN_FILE = 25
    CLOSE_FILE = 26
    DELETE_FILE = 27
    GET_FILE_INFO = 28
    AUTHENTICATE_FILE = 29
    ABORT_FILE = 30
    ACTIVATE_CONFIG = 31
    AUTHENTICATE_REQUEST = 32
    AUTHENTICATE_REQUEST_NO_ACK = 33
    RESPONSE = 129
    UNSOLICITED_RESPONSE = 130
    AUTHENTICATE_RESPONSE = 131


FC = FunctionCode
# Freezes copy counters/analogs into frozen points: a command to the outstation (control), not a
# write. Enable/disable unsolicited and time functions manage the session. A solicited response
# takes its request's category when paired (OTHER otherwise); unsolicited responses report data.
_CATEGORIES: dict[FunctionCode, str] = {
    FC.CONFIRM: SESSION,
    FC.READ: READ,
    FC.WRITE: WRITE,
    **dict.fromkeys((FC.SELECT, FC.OPERATE, FC.DIRECT_OPERATE, FC.DIRECT_OPERATE_NO_ACK), CONTROL),
    **dict.fromkeys(range(FC.IMMEDIATE_FREEZE, FC.FREEZE_AT_TIME_NO_ACK + 1), CONTROL),
    **dict.fromkeys(range(FC.COLD_RESTART, FC.STOP_APPLICATION + 1), DIAGNOSTIC),
    FC.SAVE_CONFIGURATION: PROGRAM,
    FC.ENABLE_UNSOLICITED: SESSION,
    FC.DISABLE_UNSOLICITED: SESSION,
    FC.ASSIGN_CLASS: WRITE,
    FC.DELAY_MEASURE: SESSION,
    FC.RECORD_CURRENT_TIME: SESSION,
    **dict.fromkeys(range(FC.OPEN_FILE, FC.ACTIVATE_CONFIG + 1), PROGRAM),
    FC.AUTHENTICATE_REQUEST: SESSION,
    FC.AUTHENTICATE_REQUEST_NO_ACK: SESSION,
    FC.RESPONSE: OTHER,
    FC.UNSOLICITED_RESPONSE: READ,
    FC.AUTHENTICATE_RESPONSE: SESSION,
}
# code -> (lower_snake name, category): the one lookup the hot path makes
FUNCTIONS: dict[int, tuple[str, str]] = {int(fc): (fc.name.lower(), _CATEGORIES[fc]) for fc in FunctionCode}

# Requests answered by no response at all: they must not wait in the pairing table.
_NO_RESPONSE_FCS = frozenset(
    (
        FC.CONFIRM,
        FC.DIRECT_OPERATE_NO_ACK,
        FC.IMMEDIATE_FREEZE_NO_ACK,
        FC.FREEZE_CLEAR_NO_ACK,
        FC.FREEZE_AT_TIME_NO_ACK,
        FC.AUTHENTICATE_REQUEST_NO_ACK,
    )
)
# Requests whose object headers carry no object data (clause 4.4: read-like requests name points only).
_NO_DATA_FCS = frozenset(
    (
        FC.READ,
        *range(FC.IMMEDIATE_FREEZE, FC.FREEZE_AT_TIME_NO_ACK + 1),
        FC.ENABLE_UNSOLICITED,
        FC.DISABLE_UNSOLICITED,
        FC.ASSIGN_CLASS,
    )
)


_FUNC_KEYS = tuple(str(fc) for fc in range(256))  # histogram keys, Wireshark's decimal rendering


def function_name(code: int) -> str:
    entry = FUNCTIONS.get(code)
    return entry[0] if entry else f"unknown-{code}"


def function_category(code: int) -> str:
    entry = FUNCTIONS.get(code)
    return entry[1] if entry else OTHER


# --------------------------------------------------------------------------------------------------
# Internal indications (clause 4.2.2.7.2, Table 4-3): IIN1 is the first octet on the wire, IIN2 the
# second; the integer form is IIN1 << 8 | IIN2, the way Wireshark shows it (0x9000 = restart + time).
# --------------------------------------------------------------------------------------------------

IIN_BITS: tuple[tuple[int, str], ...] = (
    (0x8000, "device_restart"),  # IIN1.7
    (0x4000, "device_trouble"),  # IIN1.6
    (0x2000, "local_control"),  # IIN1.5
    (0x1000, "need_time"),  # IIN1.4
    (0x0800, "class_3_events"),  # IIN1.3
    (0x0400, "class_2_events"),  # IIN1.2
    (0x0200, "class_1_events"),  # IIN1.1
    (0x0100, "broadcast"),  # IIN1.0
    (0x0080, "reserved_2"),  # IIN2.7
    (0x0040, "reserved_1"),  # IIN2.6
    (0x0020, "config_corrupt"),  # IIN2.5
    (0x0010, "already_executing"),  # IIN2.4
    (0x0008, "event_buffer_overflow"),  # IIN2.3
    (0x0004, "parameter_error"),  # IIN2.2
    (0x0002, "object_unknown"),  # IIN2.1
    (0x0001, "no_func_code_support"),  # IIN2.0
)
# IIN2.0-2.2: the outstation refused the request (function, object or parameter not supported).
IIN_ERROR_MASK = 0x0007


def iin_names(iin: int) -> list[str]:
    return [name for bit, name in IIN_BITS if iin & bit]


# The names of each IIN octet's bits, per octet value: every response carries an IIN, and two table
# lookups and a list concatenation (a fresh list per event) cost less than testing sixteen bits.
_IIN1_NAMES = tuple([name for bit, name in IIN_BITS[:8] if (v << 8) & bit] for v in range(256))
_IIN2_NAMES = tuple([name for bit, name in IIN_BITS[8:] if v & bit] for v in range(256))


# --------------------------------------------------------------------------------------------------
# Objects (clause 4.4 headers; Annex A object sizes)
# --------------------------------------------------------------------------------------------------

# Qualifier range specifier codes (Table 4-5): code -> (struct to read it, kind)
# kind: "range" start/stop, "count" a count, "all" nothing, "free" a 1-octet count of variable objects.
_RANGE_SPECS: dict[int, tuple[struct.Struct | None, str]] = {
    0x0: (struct.Struct("<BB"), "range"),
    0x1: (struct.Struct("<HH"), "range"),
    0x2: (struct.Struct("<II"), "range"),
    0x3: (struct.Struct("<BB"), "range"),  # virtual addresses (obsolete), same layout
    0x4: (struct.Struct("<HH"), "range"),
    0x5: (struct.Struct("<II"), "range"),
    0x6: (None, "all"),
    0x7: (struct.Struct("<B"), "count"),
    0x8: (struct.Struct("<H"), "count"),
    0x9: (struct.Struct("<I"), "count"),
    0xB: (struct.Struct("<B"), "free"),
}
# Prefix codes (Table 4-4): 1-3 an index of 1/2/4 octets, 4-6 an object size of 1/2/4 octets.
_PREFIX_LEN = (0, 1, 2, 4, 1, 2, 4, -1)  # 7 is reserved
_PREFIX_STRUCT = {1: struct.Struct("<B"), 2: _U16, 4: _U32}

BIT1 = -1  # packed, 1 bit per point
BIT2 = -2  # packed, 2 bits per point
VAR = None  # variable size, only walkable with an object-size prefix


def _sizes() -> dict[int, int | None]:
    """Object data size in octets per (group << 8 | variation), IEEE 1815-2012 Annex A."""
    t: dict[int, tuple[int | None, ...]] = {
        # group: sizes of variations 1, 2, 3, ...
        1: (BIT1, 1),
        2: (1, 7, 3),
        3: (BIT2, 1),
        4: (1, 7, 3),
        10: (BIT1, 1),
        11: (1, 7),
        12: (11, 11, BIT1),
        13: (1, 7),
        20: (5, 3, 5, 3, 4, 2, 4, 2),
        21: (5, 3, 5, 3, 11, 9, 11, 9, 4, 2, 4, 2),
        22: (5, 3, 5, 3, 11, 9, 11, 9),
        23: (5, 3, 5, 3, 11, 9, 11, 9),
        30: (5, 3, 4, 2, 5, 9),
        31: (5, 3, 11, 9, 4, 2, 5, 9),
        32: (5, 3, 11, 9, 5, 9, 11, 15),
        33: (5, 3, 11, 9, 5, 9, 11, 15),
        34: (2, 4, 4),
        40: (5, 3, 5, 9),
        41: (5, 3, 5, 9),
        42: (5, 3, 11, 9, 5, 9, 11, 15),
        43: (5, 3, 11, 9, 5, 9, 11, 15),
        50: (6, 10, 6, 11),
        51: (6, 6),
        52: (2, 2),
        60: (0, 0, 0, 0),
        70: (VAR, VAR, VAR, VAR, VAR, VAR, VAR, VAR),
        80: (BIT1,),
        101: (2, 4, 8),
        102: (1,),
        120: (VAR, VAR, 6, 2, VAR, VAR, VAR, VAR, VAR, VAR, VAR, VAR, VAR, VAR, VAR),
        121: (7,),
        122: (7, 13),
    }
    out: dict[int, int | None] = {}
    for group, sizes in t.items():
        for i, size in enumerate(sizes, 1):
            out[group << 8 | i] = size
    # Octet strings and virtual terminal objects: the variation is the length (A.37-A.40).
    for group in (110, 111, 112, 113):
        for v in range(1, 256):
            out[group << 8 | v] = v
    return out


OBJECT_SIZES = _sizes()

# Control relay output block (g12v1, A.10.1): control code, count, on time, off time, status.
_CROB = struct.Struct("<BBIIB")
# Analog output block (g41v1-4, A.22): value then status.
_AOB = {1: struct.Struct("<iB"), 2: struct.Struct("<hB"), 3: struct.Struct("<fB"), 4: struct.Struct("<dB")}
_U48 = struct.Struct("<IH")  # DNP3 time: 48-bit milliseconds since 1970, low word first
# File command (g70v3, A.36.3): name offset, name size, created (6), permissions, auth key, file size,
# operational mode, max block size, request id; then the name.
_G70V3 = struct.Struct("<HH6sHIIHHH")
_G70V4 = struct.Struct("<IIHHB")  # file command status: handle, size, max block, request id, status
_G70V5 = struct.Struct("<II")  # file transport: handle, block number (bit 31 = last block)
_G120V7 = struct.Struct("<IHHB")  # authentication error: challenge seq, user, association, error code

CROB_OPS = ("nul", "pulse_on", "pulse_off", "latch_on", "latch_off")
CROB_TCC = ("nul", "close", "trip", "reserved")
CONTROL_STATUS = {
    0: "success",
    1: "timeout",
    2: "no_select",
    3: "format_error",
    4: "not_supported",
    5: "already_active",
    6: "hardware_error",
    7: "local",
    8: "too_many_objs",
    9: "not_authorized",
    10: "automation_inhibit",
    11: "processing_limited",
    12: "out_of_range",
    126: "non_participating",
    127: "undefined",
}
AUTH_ERRORS = {
    1: "authentication_failed",
    2: "unexpected_response",
    3: "no_response",
    4: "aggressive_mode_not_supported",
    5: "mac_algorithm_not_supported",
    6: "key_wrap_algorithm_not_supported",
    7: "authorization_failed",
    8: "update_key_change_method_not_permitted",
    9: "invalid_signature",
    10: "invalid_certification_data",
    11: "unknown_user",
    12: "max_session_key_status_requests_exceeded",
}

MAX_HEADERS_RECORDED = 32  # object headers kept in fields["objects"] (the walk itself goes on)
MAX_VALUES = 64  # commanded values kept per event


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


class AppFragment:
    """What the application layer parser found in one fragment (one per fragment, not per field)."""

    __slots__ = ("ac", "fc", "iin", "headers", "objects", "values", "anomalies", "address", "quantity", "extra")

    def __init__(self, ac: int, fc: int) -> None:
        self.ac = ac
        self.fc = fc
        self.iin: int | None = None
        self.headers: list[dict[str, int]] = []
        self.objects: list[str] = []
        self.values: list[dict[str, Any]] = []
        self.anomalies: list[str] = []
        self.address: int | None = None
        self.quantity: int | None = None
        self.extra: dict[str, Any] = {}


def parse_application(frag: bytes) -> AppFragment | None:
    """Parse one reassembled application fragment (IEEE 1815-2012 clause 4.2).

    Returns None when the fragment has no function code (fewer than two octets). Never raises:
    problems land in ``anomalies`` (stable ``dnp3_*`` names) and the walk stops where it must.
    """
    n = len(frag)
    if n < 2:
        return None
    fc = frag[1]
    app = AppFragment(frag[0], fc)
    off = 2
    if fc >= 129:  # responses carry IIN (4.2.2.7)
        if n < 4:
            app.anomalies.append("dnp3_truncated_response_header")
            return app
        app.iin = frag[2] << 8 | frag[3]
        off = 4
    if fc not in FUNCTIONS:
        app.anomalies.append("dnp3_unknown_function")
        return app  # object layout of an unknown function is unknown: do not guess
    if fc in _NO_DATA_FCS:
        # Polls (class reads, freezes, unsolicited on/off) repeat byte for byte: walk each distinct
        # request once. The memo holds a snapshot; every fragment gets fresh lists and dicts.
        key = bytes(frag[1:])  # function code and object headers (requests carry no IIN)
        hit = _POLL_MEMO.get(key)
        if hit is not None:
            headers, objects, values, anomalies, address, quantity, extra = hit
            app.headers = [h.copy() for h in headers]
            app.objects = list(objects)
            app.values = [v.copy() for v in values]
            app.anomalies = list(anomalies)
            app.address, app.quantity = address, quantity
            app.extra = dict(extra)
            return app
        _walk_objects(app, frag, off, n, True)
        if len(_POLL_MEMO) >= _POLL_MEMO_MAX:
            _POLL_MEMO.clear()
        _POLL_MEMO[key] = ([h.copy() for h in app.headers], tuple(app.objects), [v.copy() for v in app.values],
                           tuple(app.anomalies), app.address, app.quantity, dict(app.extra))
        return app
    _walk_objects(app, frag, off, n, False)
    return app


_POLL_MEMO: dict[bytes, tuple[Any, ...]] = {}  # read-like request bytes -> what the walk found
_POLL_MEMO_MAX = 4096  # distinct polls remembered (process-wide; cleared when full)


def _walk_objects(app: AppFragment, frag: bytes, off: int, n: int, no_data: bool) -> None:
    """Walk the object headers and objects (clause 4.4) from ``off`` to ``n``."""
    fc = app.fc
    headers = app.headers
    objects = app.objects
    seen: set[str] = set()
    while off < n:
        if n - off < 3:
            app.anomalies.append("dnp3_truncated_object_header")
            return
        group = frag[off]
        var = frag[off + 1]
        qual = frag[off + 2]
        off += 3
        prefix = (qual >> 4) & 0x07
        spec = _RANGE_SPECS.get(qual & 0x0F)
        if spec is None or prefix == 7 or (qual & 0x80):
            app.anomalies.append("dnp3_bad_qualifier")
            return
        st, kind = spec
        header: dict[str, int] = {"group": group, "variation": var, "qualifier": qual}
        start = None
        if st is None:  # all points: no range field, no objects follow
            count = 0
        else:
            if n - off < st.size:
                app.anomalies.append("dnp3_truncated_object_header")
                return
            if kind == "range":
                start, stop = st.unpack_from(frag, off)
                if stop < start:
                    app.anomalies.append("dnp3_bad_range")
                    return
                count = stop - start + 1
                header["start"] = start
                header["stop"] = stop
            else:
                (count,) = st.unpack_from(frag, off)
                header["count"] = count
            off += st.size
        key = f"g{group}v{var}"
        if len(headers) < MAX_HEADERS_RECORDED:
            headers.append(header)
            if key not in seen:
                seen.add(key)
                objects.append(key)
        if app.quantity is None and count:
            app.address = start  # None for plain counts; index-prefixed values fill it in later
            app.quantity = count
        # Which headers are followed by object data?
        if st is None or group == 60:
            continue
        if no_data and prefix < 4 and not (group == 50 and fc in (11, 12)):
            # Read-like requests name points without values. Exceptions: size-prefixed objects
            # (a read of a file block carries its g70v5 transport object) and the g50 time of a
            # freeze-at-time.
            if prefix and kind != "range":
                # index-prefixed points in a read: the indexes are on the wire, no values
                need = count * _PREFIX_LEN[prefix]
                if n - off < need:
                    app.anomalies.append("dnp3_truncated_object")
                    return
                off += need
            continue
        off = _walk_data(app, frag, off, n, group, var, prefix, kind, start, count)
        if off < 0:
            return


def _walk_data(
    app: AppFragment,
    frag: bytes,
    off: int,
    n: int,
    group: int,
    var: int,
    prefix: int,
    kind: str,
    start: int | None,
    count: int,
) -> int:
    """Consume the objects that follow one header; decode the ones we report. -1 = stop the walk."""
    plen = _PREFIX_LEN[prefix]
    if group == 0 and prefix == 0:
        # Device attributes (A.1): data type code, length, value; one per index.
        for _ in range(count):
            if n - off < 2:
                app.anomalies.append("dnp3_truncated_object")
                return -1
            off += 2 + frag[off + 1]
            if off > n:
                app.anomalies.append("dnp3_truncated_object")
                return -1
        return off
    if prefix >= 4:
        # Object-size prefix: each object says how long it is, whatever its group.
        pst = _PREFIX_STRUCT[plen]
        for i in range(count):
            if n - off < plen:
                app.anomalies.append("dnp3_truncated_object")
                return -1
            (size,) = pst.unpack_from(frag, off)
            off += plen
            if n - off < size:
                app.anomalies.append("dnp3_truncated_object")
                return -1
            if i < 4:
                _decode_sized(app, frag, off, size, group, var)
            off += size
        return off
    size = OBJECT_SIZES.get(group << 8 | var, VAR)
    if size is VAR or (group == 0):
        app.anomalies.append("dnp3_unknown_object")
        return -1
    if size < 0:
        if prefix:
            app.anomalies.append("dnp3_bad_qualifier")  # packed objects only take a plain range
            return -1
        need = (count * -size + 7) >> 3
        if n - off < need:
            app.anomalies.append("dnp3_truncated_object")
            return -1
        return off + need
    item = plen + size
    need = count * item
    if n - off < need:
        app.anomalies.append("dnp3_truncated_object")
        return -1
    if (group == 12 and var == 1) or group == 41 or (group == 50 and var in (1, 3)):
        _decode_fixed(app, frag, off, group, var, prefix, start, min(count, MAX_VALUES))
    return off + need


def _decode_fixed(
    app: AppFragment, frag: bytes, off: int, group: int, var: int, prefix: int, start: int | None, count: int
) -> None:
    """Values of the fixed-size objects we report (CROB, analog output block, absolute time)."""
    plen = _PREFIX_LEN[prefix]
    pst = _PREFIX_STRUCT.get(plen)
    values = app.values
    if group == 12:
        size = 11
    elif group == 41:
        size = _AOB[var].size
    else:
        size = 6
    for i in range(count):
        if len(values) >= MAX_VALUES:
            return
        if pst is not None:
            (index,) = pst.unpack_from(frag, off)
        else:
            index = start + i if start is not None else None
        p = off + plen
        if group == 12:
            code, cnt, on_ms, off_ms, status = _CROB.unpack_from(frag, p)
            op = code & 0x0F
            values.append(
                {
                    "index": index,
                    "group": 12,
                    "code": code,
                    "op": CROB_OPS[op] if op < 5 else f"unknown-{op}",
                    "tcc": CROB_TCC[code >> 6],
                    "queue": bool(code & 0x10),
                    "clear": bool(code & 0x20),
                    "count": cnt,
                    "on_ms": on_ms,
                    "off_ms": off_ms,
                    "status": status & 0x7F,
                    "status_name": CONTROL_STATUS.get(status & 0x7F, f"unknown-{status & 0x7F}"),
                }
            )
        elif group == 41:
            value, status = _AOB[var].unpack_from(frag, p)
            if var >= 3:
                value = _finite(value)
            st = status & 0x7F
            values.append(
                {
                    "index": index,
                    "group": 41,
                    "variation": var,
                    "value": value,
                    "status": st,
                    "status_name": CONTROL_STATUS.get(st, f"unknown-{st}"),
                }
            )
        else:
            lo, hi = _U48.unpack_from(frag, p)
            values.append({"index": index, "group": 50, "time_ms": hi << 32 | lo})
        off += plen + size


def _decode_sized(app: AppFragment, frag: bytes, off: int, size: int, group: int, var: int) -> None:
    """Details of the size-prefixed objects we report: file commands and authentication errors."""
    extra = app.extra
    if group == 70:
        if var == 3 and size >= _G70V3.size:
            name_off, name_len, _created, _perm, _key, fsize, mode, _max_block, req = _G70V3.unpack_from(frag, off)
            extra["file_mode"] = mode
            extra["file_size"] = fsize
            extra["file_request_id"] = req
            if name_off >= _G70V3.size and name_off + name_len <= size:
                raw = frag[off + name_off : off + name_off + name_len]
                extra["file_name"] = raw.decode("latin-1")
        elif var == 4 and size >= _G70V4.size:
            handle, _fsize, _max_block, _req, status = _G70V4.unpack_from(frag, off)
            extra["file_handle"] = handle
            extra["file_status"] = status
        elif var == 5 and size >= _G70V5.size:
            handle, block = _G70V5.unpack_from(frag, off)
            extra["file_handle"] = handle
            extra["file_block"] = block & 0x7FFFFFFF
            extra["file_last_block"] = bool(block & 0x80000000)
            extra["file_data_len"] = size - _G70V5.size
    elif group == 120 and var == 7 and size >= _G120V7.size:
        _csq, user, _assoc, err = _G120V7.unpack_from(frag, off)
        extra["auth_error"] = err
        extra["auth_error_name"] = AUTH_ERRORS.get(err, f"unknown-{err}")
        extra["auth_user"] = user


# --------------------------------------------------------------------------------------------------
# The per-flow analyzer
# --------------------------------------------------------------------------------------------------


class _Reasm:
    """Transport reassembly state of one (direction, source, destination) link pair (clause 8.2)."""

    __slots__ = ("data", "next_seq", "segments")

    def __init__(self, data: bytes, next_seq: int) -> None:
        self.data = bytearray(data)
        self.next_seq = next_seq
        self.segments = 1


class Dnp3Analyzer(Analyzer):
    """One TCP or UDP flow carrying DNP3 (both directions).

    TCP data arrive in order with arbitrary splits; UDP data arrive one datagram at a time (clause
    C.2 of IEEE 1815-2012: a datagram holds whole link frames).
    """

    protocol = PROTOCOL
    max_stream_buffer = 4 * MAX_FRAME  # partial frame carry-over per direction (one frame is <= 292)
    max_fragment = 65536  # application fragment reassembly cap (clause 8.2: devices choose <= 2048 typ.)
    max_links = 16  # concurrent link address pairs in reassembly per flow
    max_pending = 64  # requests awaiting their response per flow

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._stream = session.transport != "udp"
        self._buf: dict[bool, bytes] = {True: b"", False: b""}
        self._synced: dict[bool, bool] = {True: True, False: True}
        self._tp: dict[tuple[bool, int, int], _Reasm] = {}
        # (outstation, master, app seq) -> requests awaiting a response: [(ts, fc, category)], oldest first
        self._pending: dict[tuple[int, int, int], list[tuple[float, int, str]]] = {}
        # (outstation, master) -> the request a multi-fragment response answers, until its FIN
        self._chain: dict[tuple[int, int], tuple[float, int, str, int]] = {}
        self._hist: Counter[str] | None = None  # this protocol's function histogram, fetched once

    # ---- flow-layer interface -------------------------------------------------------------------

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        if not self._stream:
            self._synced[from_client] = True
            self._frames(from_client, bytes(data), ts, False)
            if self._tp or self._held_reported:
                self.report_held(ts)
            return
        pending = self._buf[from_client]
        buf = pending + data if pending else bytes(data)
        off = self._frames(from_client, buf, ts, True)
        rest = buf[off:] if off < len(buf) else b""
        if len(rest) > self.max_stream_buffer:  # cannot happen with frames <= 292 octets; kept as a guard
            self.session.anomaly("dnp3_buffer_cap")
            rest = b""
        self._buf[from_client] = rest
        if rest or pending or self._tp or self._held_reported:
            self.report_held(ts)  # what this flow holds may have changed: the global budget is told

    def held_bytes(self) -> int:
        """Partial link frames plus the application fragments waiting for their final segment."""
        return len(self._buf[True]) + len(self._buf[False]) + sum(len(r.data) for r in self._tp.values())

    def gap(self, from_client: bool, ts: float) -> None:
        if self._buf[from_client]:
            self.session.anomaly("dnp3_partial_pdu_lost")
        self._buf[from_client] = b""
        self._synced[from_client] = False  # the next octets may start mid-frame: resynchronise
        for key in [k for k in self._tp if k[0] == from_client]:
            del self._tp[key]
            self.session.anomaly("dnp3_partial_fragment_lost")

    def close(self, ts: float) -> None:
        for side in (True, False):
            if self._buf[side]:
                self.session.anomaly("dnp3_truncated_at_close")
                self._buf[side] = b""
        if self._tp:
            self.session.anomaly("dnp3_incomplete_fragment_at_close", len(self._tp))
            self._tp.clear()
        self._pending.clear()
        self._chain.clear()

    # ---- link layer -----------------------------------------------------------------------------

    def _frames(self, from_client: bool, buf: bytes, ts: float, stream: bool) -> int:
        """Consume whole link frames from ``buf``; return the offset of the first unconsumed octet."""
        session = self.session
        n = len(buf)
        off = 0
        synced = self._synced[from_client]
        crc = _crc
        pdus = session.stats.pdus  # counted inline: one PDU per frame with a good header
        while off < n:
            if buf[off] != 0x05 or (off + 1 < n and buf[off + 1] != 0x64):
                if synced:
                    session.anomaly("dnp3_bad_framing")
                    synced = False
                i = buf.find(b"\x05\x64", off + 1)
                if i < 0:
                    # keep a trailing 0x05: it may be the first half of the next start field
                    off = n - 1 if stream and buf[n - 1] == 0x05 else n
                    break
                off = i
                continue
            if n - off < HEADER_LEN:
                if not stream:
                    if synced:
                        session.anomaly("dnp3_truncated")
                    off = n
                break
            _s0, _s1, length, ctl, dst, src, hcrc = _HDR.unpack_from(buf, off)
            if crc(buf[off : off + 8]) != hcrc:
                if synced:
                    session.anomaly("dnp3_bad_header_crc")
                    synced = False
                off += 1  # rescan from the next octet
                continue
            if length < MIN_LEN_FIELD:
                # A CRC-valid header with an impossible length: a real frame, malformed. Wireshark
                # marks it malformed and shows no dnp3.start; we count it as an anomaly only.
                session.anomaly("dnp3_bad_length")
                synced = False  # where the next frame starts is unknown: resynchronise quietly
                off += HEADER_LEN
                continue
            flen = frame_length(length)
            if n - off < flen:
                if not stream:
                    pdus[PROTOCOL] += 1
                    session.anomaly("dnp3_truncated")
                    off = n
                break
            synced = True
            pdus[PROTOCOL] += 1
            if length > MIN_LEN_FIELD:
                self._link_data(from_client, buf, off, length, ctl, dst, src, ts)
            off += flen
        self._synced[from_client] = synced
        return off

    def _link_data(
        self, from_client: bool, buf: bytes, off: int, length: int, ctl: int, dst: int, src: int, ts: float
    ) -> None:
        """Check the CRC of every data block (9.2.4.1.3) and hand the user data to the transport."""
        crc = _crc
        remaining = length - MIN_LEN_FIELD
        p = off + HEADER_LEN
        if remaining <= 16:  # one block: most requests, confirms and null responses
            block = buf[p : p + remaining]
            if crc(block) != buf[p + remaining] | buf[p + remaining + 1] << 8:
                self.session.anomaly("dnp3_bad_data_crc")
                return
            data = block
        else:
            parts = []
            while remaining > 0:
                k = 16 if remaining > 16 else remaining
                block = buf[p : p + k]
                if crc(block) != buf[p + k] | buf[p + k + 1] << 8:
                    self.session.anomaly("dnp3_bad_data_crc")
                    return
                parts.append(block)
                p += k + 2
                remaining -= k
            data = b"".join(parts)
        if not (ctl & CTL_PRM and (ctl & CTL_FUNC) in _USER_DATA_FUNCS):
            self.session.anomaly("dnp3_unexpected_link_data")
            return
        self._transport(from_client, src, dst, data, ts)

    # ---- transport layer ------------------------------------------------------------------------

    def _transport(self, from_client: bool, src: int, dst: int, seg: bytes, ts: float) -> None:
        """Reassemble application fragments from transport segments (clause 8.2.3)."""
        th = seg[0]
        fin = th & 0x80
        fir = th & 0x40
        seq = th & 0x3F
        key = (from_client, src, dst)
        tp = self._tp
        state = tp.get(key)
        session = self.session
        if fir:
            if state is not None:
                # A new first segment while a fragment is open: the open one is abandoned (8.2.3.2).
                session.anomaly("dnp3_transport_discarded")
                del tp[key]
            if fin:
                self._application(from_client, src, dst, seg[1:], ts, 1)
                return
            if len(tp) >= self.max_links:
                session.anomaly("dnp3_reassembly_table_cap")
                del tp[next(iter(tp))]
            tp[key] = _Reasm(seg[1:], (seq + 1) & 0x3F)
            return
        if state is None:
            session.anomaly("dnp3_transport_no_fir")
            return
        if seq != state.next_seq:
            if seq == (state.next_seq - 1) & 0x3F:
                session.anomaly("dnp3_transport_duplicate")  # a repeated segment is ignored (8.2.3.3)
                return
            session.anomaly("dnp3_transport_seq_error")
            del tp[key]
            return
        if len(state.data) + len(seg) - 1 > self.max_fragment:
            session.anomaly("dnp3_reassembly_overflow")
            del tp[key]
            return
        state.data += seg[1:]
        state.segments += 1
        state.next_seq = (seq + 1) & 0x3F
        if fin:
            del tp[key]
            self._application(from_client, src, dst, bytes(state.data), ts, state.segments)

    # ---- application layer ----------------------------------------------------------------------

    def _application(self, from_client: bool, src: int, dst: int, frag: bytes, ts: float, segments: int) -> None:
        session = self.session
        app = parse_application(frag)
        if app is None:
            session.anomaly("dnp3_short_fragment")
            return
        fc = app.fc
        hist = self._hist
        if hist is None:
            hist = self._hist = session.stats.hist(PROTOCOL)
        hist[_FUNC_KEYS[fc]] += 1
        for name in app.anomalies:
            session.anomaly(name)
        ac = app.ac
        seq = ac & 0x0F
        fields: dict[str, Any] = {
            "src_addr": src,
            "dst_addr": dst,
            "fir": ac & 0x80 != 0,
            "fin": ac & 0x40 != 0,
            "con": ac & 0x20 != 0,
            "uns": ac & 0x10 != 0,
            "seq": seq,
            "segments": segments,
        }
        if app.headers:
            fields["objects"] = app.headers
        if app.extra:
            fields.update(app.extra)
        name, category = FUNCTIONS.get(fc) or (f"unknown-{fc}", OTHER)
        result = OK
        code = None
        latency = None
        if fc >= 129:
            outstation, master = src, dst
            iin = app.iin
            if iin is not None:
                fields["iin"] = iin
                fields["iin_bits"] = _IIN1_NAMES[iin >> 8] + _IIN2_NAMES[iin & 0xFF]
                if iin & IIN_ERROR_MASK:
                    result, code = EXCEPTION, iin
            if fc == FC.UNSOLICITED_RESPONSE:
                direction = UNSOLICITED
                fields["identity"] = {"dnp3_address": outstation}
            elif fc in FUNCTIONS:  # response, authentication response
                direction = RESPONSE
                fields["identity"] = {"dnp3_address": outstation}
                req = self._pair(outstation, master, seq, bool(ac & 0x80), bool(ac & 0x40))
                if req is not None:
                    latency = pair_latency(req[0], ts)
                    fields["request_function"] = req[1]
                    category = req[2]
                else:
                    session.anomaly("dnp3_response_unpaired")
            else:
                # 132-255 are reserved response codes: from the outstation's side, but nothing to pair
                # and no identity taken from a fragment we cannot read.
                direction = RESPONSE
            unit = outstation
        else:
            direction = REQUEST
            unit = dst
            if fc not in _NO_RESPONSE_FCS:
                # A master should have one request outstanding (4.3), but some pipeline them with
                # repeated sequence numbers: keep them first in, first out, per sequence number.
                pend = self._pending
                key = (dst, src, seq)
                queue = pend.get(key)
                if queue is None:
                    if len(pend) >= self.max_pending:
                        session.anomaly("dnp3_pending_cap")
                        del pend[next(iter(pend))]
                    pend[key] = [(ts, fc, category)]
                else:
                    if len(queue) >= 4:
                        session.anomaly("dnp3_pending_cap")
                        del queue[0]
                    queue.append((ts, fc, category))
        values = app.values
        address = app.address
        if address is None and values:
            address = values[0]["index"]  # index-prefixed points: the first commanded index
        if values and result == OK and direction == RESPONSE:
            for v in values:  # the outstation's echo carries its verdict on each control
                if v.get("status"):
                    result, code = EXCEPTION, v["status"]
                    break
        if "auth_error" in app.extra:
            result, code = EXCEPTION, app.extra["auth_error"]
        anomaly = None
        if app.anomalies:
            result = MALFORMED
            anomaly = app.anomalies[0]
        # Built positionally and handed to emit (what Session.event does, minus the keyword plumbing):
        # one event per fragment is most of what a DNP3 PDU costs once the CRCs are cheap.
        if from_client:
            addr = session.client_ip, session.client_port, session.server_ip, session.server_port
            smac, dmac = session.client_mac, session.server_mac
        else:
            addr = session.server_ip, session.server_port, session.client_ip, session.client_port
            smac, dmac = session.server_mac, session.client_mac
        session.emit(
            IcsEvent(
                ts, PROTOCOL, *addr, session.transport, direction, fc, name, category, unit, address,
                app.quantity, tuple(values) if values else None, tuple(app.objects) if app.objects else None,
                result, code, latency, anomaly, fields, session.flow_id, smac, dmac, len(frag),
            )
        )  # fmt: skip

    def _pair(self, outstation: int, master: int, seq: int, fir: bool, fin: bool) -> tuple[float, int, str] | None:
        """Find the request a solicited response answers (4.2.2.4: a response echoes the request's
        sequence number in its first fragment; later fragments count on from it)."""
        link = (outstation, master)
        if fir:
            key = (outstation, master, seq)
            queue = self._pending.get(key)
            if not queue:
                return None
            req = queue.pop(0)
            if not queue:
                del self._pending[key]
            if not fin:
                chain = self._chain
                if link not in chain and len(chain) >= self.max_links:
                    del chain[next(iter(chain))]
                chain[link] = (req[0], req[1], req[2], (seq + 1) & 0x0F)
            return req
        chain = self._chain.get(link)
        if chain is None or chain[3] != seq:
            return None
        if fin:
            del self._chain[link]
        else:
            self._chain[link] = (chain[0], chain[1], chain[2], (seq + 1) & 0x0F)
        return chain[0], chain[1], chain[2]


# --------------------------------------------------------------------------------------------------
# Registry entry
# --------------------------------------------------------------------------------------------------


def probe(payload: bytes, from_client: bool) -> bool:
    """DNP3 by signature: 05 64, a length of at least 5 and a valid header CRC (clause 9.2.4)."""
    if len(payload) < HEADER_LEN or payload[0] != 0x05 or payload[1] != 0x64 or payload[2] < MIN_LEN_FIELD:
        return False
    return crc16_dnp(payload, 0, 8) == (payload[8] | payload[9] << 8)


SPEC = ProtocolSpec(
    name=PROTOCOL,
    tcp_ports=frozenset({PORT}),
    udp_ports=frozenset({PORT}),
    probe=probe,
    probe_order=20,  # strict: 2 fixed octets and a 16-bit CRC
    analyzer=Dnp3Analyzer,
)
