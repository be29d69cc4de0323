"""ISO session / presentation / MMS identification on ISO-on-TCP (port 102), for ``s7comm.py``.

IEC 61850 and ICCP (TASE.2) run MMS (ISO 9506) over the full OSI upper stack on RFC 1006:
TPKT -> COTP DT -> session SPDU (ISO 8327-1) -> presentation PPDU (ISO 8823, BER) -> MMS PDU (BER).
This module identifies that traffic (identification-only, issue 4): the session SPDU type, and for data
SPDUs the MMS PDU type, invoke id and confirmed/unconfirmed service, with request/response pairing by
invoke id. It never decodes service arguments.

Session layer (ISO 8327-1 §8.3): an SPDU is ``SI (1 byte) | LI (1 byte, or 0xff + 2 bytes) | params``.
Connection set-up uses CN (SI 13) / AC (14) / RF (12); release FN (9) / DN (10) / AB (25) / AA (26).
User data travels as the concatenation GIVE-TOKENS (SI 1, LI 0) + DATA TRANSFER (SI 1, LI 0), i.e. the
four bytes ``01 00 01 00``, followed by the presentation PPDU: fully-encoded-data ``[APPLICATION 1]``
(0x61) holding a PDV-list (0x30) whose single-ASN1-type ``[0]`` (0xa0) is the MMS PDU.

MMS PDU choice (ISO 9506-2 §7): [0] confirmed-Request, [1] confirmed-Response, [2] confirmed-Error,
[3] unconfirmed, [4] reject, [5..7] cancel, [8..10] initiate, [11..13] conclude.
Wireshark counts none of this under a protocol that GROUND_TRUTH.json compares, only ``cotp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sensor.events import (
    CONTROL,
    DIAGNOSTIC,
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OTHER,
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
)

if TYPE_CHECKING:  # pragma: no cover
    from sensor.protocols.base import Session

PROTOCOL = "mms"
MAX_PENDING = 256
MAX_DEPTH_BYTES = 8  # BER lengths longer than this many octets are refused (no real MMS needs them)

# Session SPDU identifiers (ISO 8327-1 Table 6) -> (name, direction, category)
SPDU: dict[int, tuple[str, str, str]] = {
    13: ("connect", REQUEST, SESSION),
    14: ("accept", RESPONSE, SESSION),
    12: ("refuse", RESPONSE, SESSION),
    9: ("finish", REQUEST, SESSION),
    10: ("disconnect", RESPONSE, SESSION),
    8: ("not_finished", RESPONSE, SESSION),
    25: ("abort", REQUEST, SESSION),
    26: ("abort_accept", RESPONSE, SESSION),
    1: ("data_transfer", REQUEST, OTHER),
    5: ("expedited", REQUEST, OTHER),
    7: ("prepare", REQUEST, SESSION),
    33: ("typed_data", REQUEST, OTHER),
}

PDU_TYPES = (
    "confirmed_request",
    "confirmed_response",
    "confirmed_error",
    "unconfirmed",
    "reject",
    "cancel_request",
    "cancel_response",
    "cancel_error",
    "initiate_request",
    "initiate_response",
    "initiate_error",
    "conclude_request",
    "conclude_response",
    "conclude_error",
)
_PDU_DIRECTION = (
    REQUEST, RESPONSE, RESPONSE, UNSOLICITED, RESPONSE, REQUEST, RESPONSE, RESPONSE,
    REQUEST, RESPONSE, RESPONSE, REQUEST, RESPONSE, RESPONSE,
)

# ConfirmedServiceRequest choice tags (ISO 9506-2 §7.5), lower_snake.
SERVICES = (
    "status", "get_name_list", "identify", "rename", "read", "write", "get_variable_access_attributes",
    "define_named_variable", "define_scattered_access", "get_scattered_access_attributes",
    "delete_variable_access", "define_named_variable_list", "get_named_variable_list_attributes",
    "delete_named_variable_list", "define_named_type", "get_named_type_attributes", "delete_named_type",
    "input", "output", "take_control", "relinquish_control", "define_semaphore", "delete_semaphore",
    "report_semaphore_status", "report_pool_semaphore_status", "report_semaphore_entry_status",
    "initiate_download_sequence", "download_segment", "terminate_download_sequence",
    "initiate_upload_sequence", "upload_segment", "terminate_upload_sequence", "request_domain_download",
    "request_domain_upload", "load_domain_content", "store_domain_content", "delete_domain",
    "get_domain_attributes", "create_program_invocation", "delete_program_invocation", "start", "stop",
    "resume", "reset", "kill", "get_program_invocation_attributes", "obtain_file",
    "define_event_condition", "delete_event_condition", "get_event_condition_attributes",
    "report_event_condition_status", "alter_event_condition_monitoring", "trigger_event",
    "define_event_action", "delete_event_action", "get_event_action_attributes",
    "report_event_action_status", "define_event_enrollment", "delete_event_enrollment",
    "alter_event_enrollment", "report_event_enrollment_status", "get_event_enrollment_attributes",
    "acknowledge_event_notification", "get_alarm_summary", "get_alarm_enrollment_summary", "read_journal",
    "write_journal", "initialize_journal", "report_journal_status", "create_journal", "delete_journal",
    "get_capability_list", "file_open", "file_read", "file_close", "file_rename", "file_delete",
    "file_directory",
)


def _service_category(n: int) -> str:
    """Why: reads and writes are what the rules look at; domain/program-invocation services change
    the loaded logic (program), start/stop/resume/reset/kill run it (control); name lists, identify
    and attribute queries map the device (discovery)."""
    if n in (4, 65, 73):
        return READ
    if n in (5, 66, 75, 76):
        return WRITE
    if n in (0, 1, 2, 6, 12, 15, 37, 45, 49, 55, 61, 71, 77):
        return DISCOVERY
    if 26 <= n <= 39 or n == 46:
        return PROGRAM
    if 40 <= n <= 44 or n in (19, 20):
        return CONTROL
    if n in (63, 64, 50, 56, 60, 68):
        return DIAGNOSTIC
    return OTHER


UNCONFIRMED = ("information_report", "unsolicited_status", "event_notification")


def looks_like_session(payload: bytes) -> bool:
    """Cheap check used by the dispatcher: a known SPDU id with a plausible length indicator."""
    n = len(payload)
    if n < 2:
        return False
    si = payload[0]
    if si not in SPDU:
        return False
    if si == 1:
        return n >= 4 and payload[1] == 0 and payload[2] == 1 and payload[3] == 0
    li = payload[1]
    if li == 0xFF:
        return n >= 4 and 4 + ((payload[2] << 8) | payload[3]) <= n
    return 2 + li <= n


def _ber(buf: bytes, off: int, end: int) -> tuple[int, int, int, int] | None:
    """Read one BER TLV header at ``off``: (tag byte, tag number, content offset, content end) or None.

    High tag numbers (low 5 bits all set) are read base-128 (at most 4 octets); indefinite and over-long
    lengths are refused. Everything is bounded by ``end``.
    """
    if off + 2 > end:
        return None
    t = buf[off]
    num = t & 0x1F
    p = off + 1
    if num == 0x1F:
        num = 0
        for _ in range(4):
            if p >= end:
                return None
            b = buf[p]
            p += 1
            num = (num << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        else:
            return None
    if p >= end:
        return None
    ln = buf[p]
    p += 1
    if ln & 0x80:
        k = ln & 0x7F
        if k == 0 or k > MAX_DEPTH_BYTES or p + k > end:
            return None
        ln = int.from_bytes(buf[p : p + k], "big")
        p += k
    if p + ln > end:
        return None
    return t, num, p, p + ln


class MmsTracker:
    """Per-flow MMS state: invoke-id pairing for latency."""

    __slots__ = ("session", "_pending")

    def __init__(self, session: "Session") -> None:
        self.session = session
        self._pending: dict[tuple[bool, int], tuple[float, int]] = {}

    def handle(self, from_client: bool, payload: bytes, ts: float) -> None:
        session = self.session
        n = len(payload)
        si = payload[0]
        name, direction, category = SPDU[si]
        session.stats.pdu(PROTOCOL)
        if si != 1:
            session.stats.func(PROTOCOL, "spdu:" + name)
            session.event(
                from_client, ts, PROTOCOL, direction, si, name, category, size=n,
                fields={"layer": "session", "spdu": name},
            )
            return
        info = self._mms(payload, 4, n)
        if info is None:
            session.anomaly("mms_unparsed_presentation")
            session.stats.func(PROTOCOL, "spdu:data_transfer")
            session.event(
                from_client, ts, PROTOCOL, direction, si, "data_transfer", OTHER, size=n,
                fields={"layer": "session", "spdu": "data_transfer"}, result=MALFORMED,
                anomaly="mms_unparsed_presentation",
            )
            return
        pdu_type, invoke, service = info
        if pdu_type < 0:
            session.stats.func(PROTOCOL, "spdu:data_transfer")
            session.event(
                from_client, ts, PROTOCOL, direction, si, "data_transfer", OTHER, size=n,
                fields={"layer": "presentation"},
            )
            return
        fields: dict[str, object] = {"pdu_type": PDU_TYPES[pdu_type]}
        if invoke is not None:
            fields["invoke_id"] = invoke
        result = "ok"
        latency = None
        if pdu_type in (0, 1) and service is not None:
            fname = SERVICES[service] if service < len(SERVICES) else f"unknown-{service}"
            category = _service_category(service)
            function = service
        elif pdu_type == 3 and service is not None:
            fname = UNCONFIRMED[service] if service < len(UNCONFIRMED) else f"unknown-{service}"
            category = READ if service == 0 else DIAGNOSTIC
            function = 0x300 | service
        else:
            fname = PDU_TYPES[pdu_type]
            category = SESSION if pdu_type >= 5 else OTHER
            function = pdu_type << 8
            if pdu_type in (2, 4, 7, 10, 13):
                result = EXCEPTION
        if pdu_type in (1, 2) and invoke is not None:
            hit = self._pending.pop((not from_client, invoke), None)
            if hit is not None:
                latency = ts - hit[0]
                if pdu_type == 2:  # an error answer names no service: take the request's
                    function = hit[1]
                    fname = SERVICES[function] if 0 <= function < len(SERVICES) else fname
        elif pdu_type == 0 and invoke is not None:
            pending = self._pending
            if len(pending) >= MAX_PENDING:
                pending.pop(next(iter(pending)))
                session.anomaly("mms_pending_overflow")
            pending[(from_client, invoke)] = (ts, function)
        session.stats.func(PROTOCOL, fname)
        session.event(
            from_client, ts, PROTOCOL, _PDU_DIRECTION[pdu_type], function, fname, category, size=n,
            fields=fields, result=result, latency=latency,
        )

    @staticmethod
    def _mms(buf: bytes, off: int, end: int) -> tuple[int, int | None, int | None] | None:
        """Walk presentation fully-encoded-data -> PDV-list -> single-ASN1-type to the MMS PDU."""
        tlv = _ber(buf, off, end)
        if tlv is None or tlv[0] != 0x61:  # fully-encoded-data [APPLICATION 1]
            return None
        tlv = _ber(buf, tlv[2], tlv[3])
        if tlv is None or tlv[0] != 0x30:  # PDV-list SEQUENCE
            return None
        p, e = tlv[2], tlv[3]
        for _ in range(4):  # transfer-syntax-name, presentation-context-identifier, then the data
            tlv = _ber(buf, p, e)
            if tlv is None:
                return None
            if tlv[0] == 0xA0:  # single-ASN1-type: the MMS PDU
                break
            if tlv[0] not in (0x06, 0x02):
                return None
            p = tlv[3]
        else:
            return None
        pdu = _ber(buf, tlv[2], tlv[3])
        if pdu is None:
            return None
        if (pdu[0] & 0xC0) != 0x80 or pdu[1] >= len(PDU_TYPES):
            return -1, None, None  # well-formed presentation data that is not an MMS PDU (e.g. ACSE)
        pdu_type = pdu[1]
        invoke: int | None = None
        service: int | None = None
        p, e = pdu[2], pdu[3]
        if pdu_type in (0, 1, 2):
            tlv = _ber(buf, p, e)
            if tlv is not None and tlv[0] == 0x02 and tlv[3] - tlv[2] <= 4:
                invoke = int.from_bytes(buf[tlv[2] : tlv[3]], "big")
                p = tlv[3]
                if pdu_type == 0 and p < e and buf[p] == 0x30:  # optional listOfModifier SEQUENCE OF
                    skip = _ber(buf, p, e)
                    p = skip[3] if skip is not None else e
                svc = _ber(buf, p, e) if pdu_type != 2 else None
                if svc is not None and (svc[0] & 0xC0) == 0x80:
                    service = svc[1]
        elif pdu_type == 3:
            svc = _ber(buf, p, e)
            if svc is not None and (svc[0] & 0xC0) == 0x80:
                service = svc[1]
        return pdu_type, invoke, service
