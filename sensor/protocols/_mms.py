"""MMS (ISO 9506) identification over the OSI upper layers, for the ISO-on-TCP (port 102) analyzer.

TCP 102 belongs to the S7comm module (TPKT, RFC 1006 + COTP, ISO 8073); when a COTP DT TPDU does not
carry S7 (0x32) or S7comm-plus (0x72), it hands the TPDU's user data to ``identify_mms`` (or
``parse_mms`` for more detail). This module is a helper, not a registry entry (its name starts with
``_``).

Layers walked, each by its header only (identification, no value decoding):

- Session, ISO 8327-1 / X.225 section 8.3: an SPDU is SI (type), LI (length; 0xFF then 2 octets for
  long), parameters. Data transfer is the category-0 Give-Tokens SPDU ``01 00`` concatenated with a
  DT SPDU ``01 LI``, user data after it. CONNECT (0x0D), ACCEPT (0x0E), REFUSE (0x0C), FINISH (0x09),
  DISCONNECT (0x0A), ABORT (0x19) and NOT FINISHED (0x08) carry their user data in the User Data
  (PGI 0xC1) or Extended User Data (PGI 0xC2) parameter.
- Presentation, ISO 8823-1 / X.226 section 8: a CP or CPA PPDU is a SET (0x31) whose
  normal-mode-parameters [2] end with the user data; transfer PPDUs are fully-encoded-data
  [APPLICATION 1] (0x61) directly. Fully-encoded-data is a list of PDVs (SEQUENCE 0x30: optional
  transfer syntax, presentation-context-identifier INTEGER, presentation-data-values: single-ASN1-type
  [0] (0xA0)).
- ACSE, ISO 8650-1 / X.227: AARQ [APPLICATION 0] (0x60), AARE [1], RLRQ [2], RLRE [3], ABRT [4]. The
  AARQ/AARE user-information [30] holds an EXTERNAL (0x28) whose single-ASN1-type [0] is the MMS
  initiate PDU.
- MMS, ISO 9506-2 section 7 (MMSpdu): a CHOICE by context tag: confirmed-RequestPDU [0],
  confirmed-ResponsePDU [1], confirmed-ErrorPDU [2], unconfirmed-PDU [3], rejectPDU [4],
  cancel-Request/Response/ErrorPDU [5]-[7], initiate-Request/Response/ErrorPDU [8]-[10],
  conclude-Request/Response/ErrorPDU [11]-[13]. A confirmed request/response is a SEQUENCE of the
  invokeID (INTEGER), an optional listOfModifier (SEQUENCE) and the service, a CHOICE by context tag
  (ConfirmedServiceRequest, section 7.4: status [0], getNameList [1], identify [2], read [4], write
  [5], ...); an unconfirmed PDU's service is informationReport [0], unsolicitedStatus [1] or
  eventNotification [2].

The presentation context is not tracked: a transfer PDV whose value is an application-class element
0x60-0x64 is ACSE, a context-class element is MMS. This identifies MMS on connections whose
association was not captured (Wireshark cannot: it shows those PDUs as bare "pres" without a
context), which is why our MMS counts can exceed tshark's on such captures.

TCP 102 payloads can be cut across COTP DT fragments; lengths that run past the buffer are clipped
(``_ber.Tlv.truncated``), so the first fragment of a long PDU is still identified.
"""

from __future__ import annotations

from typing import NamedTuple

from sensor.events import (
    CONTROL,
    DIAGNOSTIC,
    DISCOVERY,
    EXCEPTION,
    OK,
    OTHER,
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    UNSOLICITED,
    WRITE,
)
from sensor.protocols._ber import CLASS_APPLICATION, CLASS_CONTEXT, CLASS_UNIVERSAL, Tlv, children, read_tlv, read_uint

# ISO 9506-2 ConfirmedServiceRequest / ConfirmedServiceResponse tags -> (ASN.1 name, category)
CONFIRMED_SERVICES: dict[int, tuple[str, str]] = {
    0: ("status", DIAGNOSTIC),
    1: ("getNameList", DISCOVERY),
    2: ("identify", DISCOVERY),
    3: ("rename", WRITE),
    4: ("read", READ),
    5: ("write", WRITE),
    6: ("getVariableAccessAttributes", DISCOVERY),
    7: ("defineNamedVariable", WRITE),
    8: ("defineScatteredAccess", WRITE),
    9: ("getScatteredAccessAttributes", DISCOVERY),
    10: ("deleteVariableAccess", WRITE),
    11: ("defineNamedVariableList", WRITE),
    12: ("getNamedVariableListAttributes", DISCOVERY),
    13: ("deleteNamedVariableList", WRITE),
    14: ("defineNamedType", WRITE),
    15: ("getNamedTypeAttributes", DISCOVERY),
    16: ("deleteNamedType", WRITE),
    17: ("input", READ),
    18: ("output", WRITE),
    19: ("takeControl", OTHER),
    20: ("relinquishControl", OTHER),
    21: ("defineSemaphore", OTHER),
    22: ("deleteSemaphore", OTHER),
    23: ("reportSemaphoreStatus", OTHER),
    24: ("reportPoolSemaphoreStatus", OTHER),
    25: ("reportSemaphoreEntryStatus", OTHER),
    # domain (program/configuration) transfer: both directions are "program" (upload = program theft)
    26: ("initiateDownloadSequence", PROGRAM),
    27: ("downloadSegment", PROGRAM),
    28: ("terminateDownloadSequence", PROGRAM),
    29: ("initiateUploadSequence", PROGRAM),
    30: ("uploadSegment", PROGRAM),
    31: ("terminateUploadSequence", PROGRAM),
    32: ("requestDomainDownload", PROGRAM),
    33: ("requestDomainUpload", PROGRAM),
    34: ("loadDomainContent", PROGRAM),
    35: ("storeDomainContent", PROGRAM),
    36: ("deleteDomain", PROGRAM),
    37: ("getDomainAttributes", DISCOVERY),
    38: ("createProgramInvocation", PROGRAM),
    39: ("deleteProgramInvocation", PROGRAM),
    40: ("start", CONTROL),
    41: ("stop", CONTROL),
    42: ("resume", CONTROL),
    43: ("reset", CONTROL),
    44: ("kill", CONTROL),
    45: ("getProgramInvocationAttributes", DISCOVERY),
    46: ("obtainFile", PROGRAM),
    47: ("defineEventCondition", WRITE),
    48: ("deleteEventCondition", WRITE),
    49: ("getEventConditionAttributes", DISCOVERY),
    50: ("reportEventConditionStatus", READ),
    51: ("alterEventConditionMonitoring", WRITE),
    52: ("triggerEvent", CONTROL),
    53: ("defineEventAction", WRITE),
    54: ("deleteEventAction", WRITE),
    55: ("getEventActionAttributes", DISCOVERY),
    56: ("reportEventActionStatus", READ),
    57: ("defineEventEnrollment", WRITE),
    58: ("deleteEventEnrollment", WRITE),
    59: ("alterEventEnrollment", WRITE),
    60: ("reportEventEnrollmentStatus", READ),
    61: ("getEventEnrollmentAttributes", DISCOVERY),
    62: ("acknowledgeEventNotification", WRITE),
    63: ("getAlarmSummary", READ),
    64: ("getAlarmEnrollmentSummary", READ),
    65: ("readJournal", READ),
    66: ("writeJournal", WRITE),
    67: ("initializeJournal", WRITE),
    68: ("reportJournalStatus", READ),
    69: ("createJournal", WRITE),
    70: ("deleteJournal", WRITE),
    71: ("getCapabilityList", DISCOVERY),
    # ISO 9506-2 annex C file services
    72: ("fileOpen", READ),
    73: ("fileRead", READ),
    74: ("fileClose", READ),
    75: ("fileRename", WRITE),
    76: ("fileDelete", WRITE),
    77: ("fileDirectory", DISCOVERY),
}

# ISO 9506-2 UnconfirmedService tags
UNCONFIRMED_SERVICES: dict[int, tuple[str, str]] = {
    0: ("informationReport", READ),
    1: ("unsolicitedStatus", DIAGNOSTIC),
    2: ("eventNotification", OTHER),
}

# MMSpdu CHOICE tags -> (kind, name used when the PDU carries no service)
PDU_KINDS: dict[int, tuple[str, str]] = {
    0: ("confirmed-request", ""),
    1: ("confirmed-response", ""),
    2: ("confirmed-error", "error"),
    3: ("unconfirmed", ""),
    4: ("reject", "reject"),
    5: ("cancel-request", "cancel"),
    6: ("cancel-response", "cancel"),
    7: ("cancel-error", "cancel"),
    8: ("initiate-request", "initiate"),
    9: ("initiate-response", "initiate"),
    10: ("initiate-error", "initiate"),
    11: ("conclude-request", "conclude"),
    12: ("conclude-response", "conclude"),
    13: ("conclude-error", "conclude"),
}

# ACSE APDU [APPLICATION n] -> kind, when no MMS PDU is inside (association release and abort)
ACSE_KINDS: dict[int, tuple[str, str]] = {
    0: ("associate-request", "associate"),
    1: ("associate-response", "associate"),
    2: ("release-request", "release"),
    3: ("release-response", "release"),
    4: ("abort", "abort"),
}

# Session SPDU identifiers (X.225 table 11) whose user data we look into
SPDU_TYPES: dict[int, str] = {
    0x01: "data",  # GT + DT
    0x08: "not-finished",
    0x09: "finish",
    0x0A: "disconnect",
    0x0C: "refuse",
    0x0D: "connect",
    0x0E: "accept",
    0x19: "abort",
}

MAX_SPDU_PARAMS = 32  # parameters walked in one SPDU: CN carries about six


class MmsInfo(NamedTuple):
    """What ``parse_mms`` found. ``service`` is -1 when the PDU carries none (initiate, conclude, ...)."""

    kind: str  # "confirmed-request", "unconfirmed", "initiate-request", "release-request", ...
    service: int  # service tag within the kind's CHOICE, -1 when none
    service_name: str  # ASN.1 identifier: "read", "getNameList", "informationReport", "initiate", ...
    invoke_id: int | None  # confirmed PDUs' invokeID
    spdu: str  # session SPDU carrying it: "data", "connect", "accept", "finish", ...
    acse: bool  # True when the PDU came out of an ACSE APDU (association set-up/release)


def identify_mms(cotp_payload: bytes) -> tuple[str, int, str] | None:
    """(pdu kind, service tag, service name) of the MMS PDU in a COTP DT TPDU's user data, else None.

    Examples: ``("confirmed-request", 4, "read")``, ``("unconfirmed", 0, "informationReport")``,
    ``("initiate-request", -1, "initiate")``, ``("release-request", -1, "release")`` (ACSE without MMS).
    Never raises; None means "not ISO session/presentation carrying ACSE or MMS".
    """
    info = parse_mms(cotp_payload)
    if info is None:
        return None
    return info.kind, info.service, info.service_name


def parse_mms(cotp_payload: bytes | memoryview) -> MmsInfo | None:
    """Like ``identify_mms`` with the invokeID, the session SPDU and whether ACSE carried it."""
    try:
        return _parse(cotp_payload)
    except (IndexError, ValueError):  # pragma: no cover - bounds are checked; this is a last guard
        return None


# Function codes for IcsEvents (one number space for every kind, so a func_hist never merges two):
#   confirmed services: the service tag (0-79); unconfirmed services: 100 + tag;
#   service-less MMS PDUs: 200 + MMSpdu tag (initiate-request = 208); ACSE-only APDUs: 300 + tag.
UNCONFIRMED_BASE = 100
PDU_BASE = 200
ACSE_BASE = 300

_ACSE_TAG = {kind: tag for tag, (kind, _name) in ACSE_KINDS.items()}
_PDU_TAG = {kind: tag for tag, (kind, _name) in PDU_KINDS.items()}


def mms_event_values(info: MmsInfo) -> tuple[int, str, str, str, str]:
    """(function, function_name, category, direction, result) for an IcsEvent built from ``info``.

    function_name is lower_snake (``get_name_list``); the direction comes from the PDU kind, not the
    TCP side; confirmed-error, reject and *-error kinds are results of ``exception``.
    """
    kind = info.kind
    name = _snake(info.service_name)
    if kind in ("confirmed-request", "confirmed-response"):
        category = CONFIRMED_SERVICES.get(info.service, ("", OTHER))[1]
        direction = REQUEST if kind == "confirmed-request" else RESPONSE
        return info.service, name, category, direction, OK
    if kind == "unconfirmed":
        category = UNCONFIRMED_SERVICES.get(info.service, ("", OTHER))[1]
        return UNCONFIRMED_BASE + info.service, name, category, UNSOLICITED, OK
    if kind in _ACSE_TAG:
        direction = RESPONSE if kind.endswith("-response") else REQUEST
        return ACSE_BASE + _ACSE_TAG[kind], kind.replace("-", "_"), SESSION, direction, OK
    tag = _PDU_TAG.get(kind, 99)
    result = EXCEPTION if kind.endswith("-error") or kind == "reject" else OK
    direction = REQUEST if kind.endswith("-request") else RESPONSE
    category = SESSION if kind.startswith(("initiate", "conclude", "cancel")) else OTHER
    return PDU_BASE + tag, kind.replace("-", "_"), category, direction, result


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out)


# -- layers ------------------------------------------------------------------------------------


def _session(buf: bytes | memoryview) -> tuple[str, int, int] | None:
    """(SPDU name, user data start, end) of the session layer, or None."""
    n = len(buf)
    if n < 2:
        return None
    si = buf[0]
    if si in (0x01, 0x02) and buf[1] == 0:
        # category-0 Give Tokens / Please Tokens (LI 0), then the DT SPDU (SI 1)
        if n < 4 or buf[2] != 0x01:
            return None
        li, off = _li(buf, 3)
        if off < 0:
            return None
        start = off + li  # DT parameters (enclosure item, rarely present) precede the user data
        return ("data", start, n) if start < n else None
    name = SPDU_TYPES.get(si)
    if name is None or si == 0x01:
        return None
    li, off = _li(buf, 1)
    if off < 0:
        return None
    end = min(n, off + li)
    # walk the top-level parameters for User Data (0xC1) or Extended User Data (0xC2)
    for _ in range(MAX_SPDU_PARAMS):
        if off + 2 > end:
            return None
        code = buf[off]
        plen, voff = _li(buf, off + 1)
        if voff < 0:
            return None
        if code in (0xC1, 0xC2):
            return name, voff, min(end, voff + plen)
        off = voff + plen
    return None


def _li(buf: bytes | memoryview, off: int) -> tuple[int, int]:
    """A session length indicator at ``off``: (length, offset after it), offset -1 if cut."""
    if off >= len(buf):
        return 0, -1
    li = buf[off]
    if li == 0xFF:
        if off + 3 > len(buf):
            return 0, -1
        return (buf[off + 1] << 8) | buf[off + 2], off + 3
    return li, off + 1


def _presentation_pdv(buf: bytes | memoryview, off: int, end: int) -> Tlv | None:
    """The first PDV's single-ASN1-type value (the APDU) of a presentation PPDU at ``off``."""
    top = read_tlv(buf, off, end)
    if top is None:
        return None
    fed: Tlv | None = None
    if top.cls == CLASS_APPLICATION and top.number == 1 and top.constructed:
        fed = top  # fully-encoded-data: a transfer PPDU (TD), the common case
    elif top.constructed:
        # CP/CPA (SET 0x31 -> normal-mode-parameters [2]) or ARU (normal-mode [0]): user data inside
        for child in children(buf, top, 16):
            if child.cls == CLASS_APPLICATION and child.number == 1 and child.constructed:
                fed = child
                break
            if child.cls == CLASS_CONTEXT and child.constructed and child.number in (0, 2):
                for grandchild in children(buf, child, 24):
                    if grandchild.cls == CLASS_APPLICATION and grandchild.number == 1 and grandchild.constructed:
                        fed = grandchild
                        break
                if fed is not None:
                    break
    if fed is None:
        return None
    pdv = read_tlv(buf, fed.start, fed.end)
    if pdv is None or pdv.cls != CLASS_UNIVERSAL or pdv.number != 16 or not pdv.constructed:
        return None
    for item in children(buf, pdv, 4):
        if item.cls == CLASS_CONTEXT and item.number == 0 and item.constructed:
            return read_tlv(buf, item.start, item.end)
    return None


def _parse(buf: bytes | memoryview) -> MmsInfo | None:
    sess = _session(buf)
    if sess is None:
        return None
    spdu, off, end = sess
    apdu = _presentation_pdv(buf, off, end)
    if apdu is None:
        return None
    acse = False
    if apdu.cls == CLASS_APPLICATION and apdu.constructed and apdu.number in ACSE_KINDS:
        acse = True
        inner = _acse_user_information(buf, apdu) if apdu.number in (0, 1) else None
        if inner is None:
            kind, name = ACSE_KINDS[apdu.number]
            return MmsInfo(kind, -1, name, None, spdu, True)
        apdu = inner
    if apdu.cls != CLASS_CONTEXT:
        return None
    tag = apdu.number
    kind_name = PDU_KINDS.get(tag)
    if kind_name is None:
        return None
    kind, plain = kind_name
    if tag in (0, 1):
        if not apdu.constructed:
            return None
        invoke: int | None = None
        for child in children(buf, apdu, 4):
            if child.cls == CLASS_UNIVERSAL and child.number == 2:
                invoke = read_uint(buf, child, 4)
            elif child.cls == CLASS_CONTEXT:
                name = CONFIRMED_SERVICES.get(child.number, (f"unknown-{child.number}", OTHER))[0]
                return MmsInfo(kind, child.number, name, invoke, spdu, acse)
        return None
    if tag == 3:
        if not apdu.constructed:
            return None
        for child in children(buf, apdu, 4):
            if child.cls == CLASS_CONTEXT:
                name = UNCONFIRMED_SERVICES.get(child.number, (f"unknown-{child.number}", OTHER))[0]
                return MmsInfo(kind, child.number, name, None, spdu, acse)
        return None
    return MmsInfo(kind, -1, plain, None, spdu, acse)


def _acse_user_information(buf: bytes | memoryview, apdu: Tlv) -> Tlv | None:
    """AARQ/AARE user-information [30] -> EXTERNAL -> single-ASN1-type [0] -> the MMS PDU."""
    for child in children(buf, apdu, 24):
        if child.cls == CLASS_CONTEXT and child.number == 30 and child.constructed:
            external = read_tlv(buf, child.start, child.end)
            if external is None or external.cls != CLASS_UNIVERSAL or external.number != 8:
                return None
            for item in children(buf, external, 4):
                if item.cls == CLASS_CONTEXT and item.number == 0 and item.constructed:
                    return read_tlv(buf, item.start, item.end)
            return None
    return None


__all__ = [
    "identify_mms",
    "parse_mms",
    "mms_event_values",
    "MmsInfo",
    "CONFIRMED_SERVICES",
    "UNCONFIRMED_SERVICES",
    "PDU_KINDS",
    "ACSE_KINDS",
]
