"""S7comm-plus (protocol id 0x72) identification, for the ISO-on-TCP analyzer in ``s7comm.py``.

S7comm-plus is the proprietary protocol of the S7-1200 (firmware 4+) and S7-1500 CPUs and of TIA Portal.
It rides in COTP DT user data exactly like classic S7comm, but has no public specification; the field
layout used here follows the community Wireshark plugin (Thomas Wiens, ``s7commwireshark``,
``packet-s7comm_plus.c``) and the captures in ``pcaps/s7comm`` (S7-1200 upload, S7-1511 HMI, the icsnpp
V3 capture). Stock Wireshark 4.0 has no S7comm-plus dissector, so nothing here is counted under
``s7comm``; we count under ``s7comm_plus`` (one PDU per message start).

Frame layout (all big-endian)::

    0    0x72                      protocol id
    1    version                   0x01 V1, 0x02 V2, 0x03 V3, 0xfe ext. keep-alive, 0xff keep-alive
    2-3  data length               bytes after this 4-byte header, without the trailer
    --- V3 only: integrity part ---
    4    digest length (0x20)
    5..  digest (HMAC-SHA256 over the data; the session key is negotiated in CreateObject)
    --- data ---
    +0   opcode                    0x31 request, 0x32 response, 0x33 notification, 0x02 response2
    +1-2 reserved
    +3-4 function                  0x04ca CreateObject, 0x054c GetMultiVariables, ...
    +5-6 reserved
    +7-8 sequence number           a response echoes the request's
    +9-12 session id               requests only
    ...
    trailer  0x72 version 0x00 0x00   only on the last fragment of a message

A message larger than one COTP unit is cut into fragments; every fragment starts with the 4-byte header
and only the last one carries the trailer, so "no trailer" means "continuation follows". We emit one
event per message (on its first fragment, where opcode and function are visible) and count the rest.

Integrity: V3 frames carry a 32-byte digest right after the header (S7-1500 since TIA V14, and
S7-1200 firmware 4.3+ in "V3" mode); such a session cannot be spoofed without the session key, which
detectors need to know when weighing an alert. Once a V3 frame is seen, every later event of the flow
carries ``fields["session_integrity"] = True``. After an InitSSL (function 0x05b3, TIA V17+) the COTP
payload becomes TLS records; those are recognised (``tls_record``) and counted, not parsed.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from sensor.events import CONTROL, DISCOVERY, OTHER, PROGRAM, READ, REQUEST, RESPONSE, SESSION, UNSOLICITED, WRITE
from sensor.protocols.base import pair_latency

if TYPE_CHECKING:  # pragma: no cover
    from sensor.protocols.base import Session

PROTOCOL = "s7comm_plus"
PROT_ID = 0x72

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

VERSION_NAMES = {0x01: "v1", 0x02: "v2", 0x03: "v3", 0xFE: "extended_keep_alive", 0xFF: "keep_alive"}

OPCODE_REQUEST = 0x31
OPCODE_RESPONSE = 0x32
OPCODE_NOTIFICATION = 0x33
OPCODE_RESPONSE2 = 0x02
OPCODE_NAMES = {0x31: "request", 0x32: "response", 0x33: "notification", 0x02: "response2"}

# function code -> (lower_snake name, category). Categories are coarse on purpose: S7comm-plus objects
# are not decoded, so a SetMultiVariables that writes a tag and one that changes the CPU state look the
# same here. Begin/EndSequence bracket TIA Portal download transactions, hence "program".
FUNCTIONS: dict[int, tuple[str, str]] = {
    0x04B1: ("error", OTHER),
    0x04BB: ("explore", DISCOVERY),
    0x04CA: ("create_object", SESSION),
    0x04D4: ("delete_object", SESSION),
    0x04F2: ("set_variable", WRITE),
    0x04FC: ("get_variable", READ),
    0x0506: ("add_link", OTHER),
    0x051A: ("remove_link", OTHER),
    0x0524: ("get_link", READ),
    0x0542: ("set_multi_variables", WRITE),
    0x054C: ("get_multi_variables", READ),
    0x0556: ("begin_sequence", PROGRAM),
    0x0560: ("end_sequence", PROGRAM),
    0x056B: ("invoke", CONTROL),
    0x057C: ("set_var_sub_streamed", WRITE),
    0x0586: ("get_var_sub_streamed", READ),
    0x0590: ("get_variables_address", READ),
    0x059A: ("abort", SESSION),
    0x05A9: ("error_2", OTHER),
    0x05B3: ("init_ssl", SESSION),
}

_TLS_CONTENT = {0x14: "change_cipher_spec", 0x15: "alert", 0x16: "handshake", 0x17: "application_data"}

MAX_PENDING = 256  # outstanding requests remembered per flow for latency pairing


def looks_like_tls(payload: bytes) -> bool:
    """A TLS record header (content type 20..23, version 3.x) at the start of a COTP payload."""
    return len(payload) >= 5 and payload[0] in _TLS_CONTENT and payload[1] == 0x03 and payload[2] <= 0x04


class S7PlusTracker:
    """Per-flow S7comm-plus state: fragment continuation per direction, integrity flag, request pairing."""

    __slots__ = ("_cont", "_pending", "_tls", "integrity", "session", "version")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.integrity = False  # a V3 (digest-carrying) frame was seen on this flow
        self.version: int | None = None
        self._cont = {True: False, False: False}  # next payload of that direction continues a message
        self._pending: dict[tuple[bool, int], float] = {}
        self._tls = False

    def gap(self, from_client: bool) -> None:
        self._cont[from_client] = False

    def handle(self, from_client: bool, payload: bytes, ts: float, unit: int | None) -> None:
        """One reassembled COTP payload that starts with 0x72 (or a TLS record once TLS was seen)."""
        session = self.session
        n = len(payload)
        if payload[0] != PROT_ID:
            # TLS inside COTP after InitSSL: recognised and counted, content is opaque.
            self._tls = True
            session.stats.pdu(PROTOCOL)
            kind = _TLS_CONTENT.get(payload[0], "tls")
            session.stats.func(PROTOCOL, "tls")
            if payload[0] == 0x16:  # handshakes are few and worth an event; application data is not
                session.event(
                    from_client, ts, PROTOCOL, REQUEST if from_client else RESPONSE, -1, "tls_" + kind, SESSION,
                    unit=unit, size=n, fields={"tls": True, "session_integrity": True},
                )
            return
        if n < 4:
            session.anomaly("s7comm_plus_truncated")
            session.event(
                from_client, ts, PROTOCOL, REQUEST if from_client else RESPONSE, -1, "malformed", OTHER,
                unit=unit, size=n, result="malformed", anomaly="s7comm_plus_truncated",
            )
            return
        version = payload[1]
        dlen = _U16.unpack_from(payload, 2)[0]
        # Trailer: "72 vv 00 00" right after the data; its absence announces a continuation fragment.
        end = 4 + dlen
        has_trailer = n >= end + 4 and payload[end] == PROT_ID and payload[end + 2] == 0 and payload[end + 3] == 0
        continuation = self._cont[from_client]
        self._cont[from_client] = not has_trailer and version in (1, 2, 3)
        if continuation:
            return  # a later fragment of a message already reported (fragments are normal, no anomaly)
        if version == 3:
            self.integrity = True
        self.version = version
        session.stats.pdu(PROTOCOL)
        fields: dict[str, object] = {"version": VERSION_NAMES.get(version, f"unknown-{version}"), "data_length": dlen}
        if end > n:
            # data length lies (or the message was cut): still identify what is visible
            session.anomaly("s7comm_plus_length_mismatch")
        off = 4
        if version == 3 and n > 4:
            # integrity part: digest length byte then the digest (32 bytes with HMAC-SHA256)
            dig = payload[4]
            fields["integrity"] = True
            fields["digest_length"] = dig
            off = 5 + dig
        if self.integrity:
            fields["session_integrity"] = True
        if version in (0xFE, 0xFF) or off >= n:
            name = "keep_alive" if version in (0xFE, 0xFF) else "no_data"
            session.stats.func(PROTOCOL, name)
            session.event(
                from_client, ts, PROTOCOL, REQUEST if from_client else RESPONSE, -1, name, SESSION,
                unit=unit, size=n, fields=fields,
            )
            return
        opcode = payload[off]
        fields["opcode"] = OPCODE_NAMES.get(opcode, f"unknown-{opcode}")
        function = -1
        fname = "notification" if opcode == OPCODE_NOTIFICATION else f"unknown-opcode-{opcode}"
        category = READ if opcode == OPCODE_NOTIFICATION else OTHER
        seq: int | None = None
        if opcode in (OPCODE_REQUEST, OPCODE_RESPONSE, OPCODE_RESPONSE2) and off + 9 <= n:
            function = _U16.unpack_from(payload, off + 3)[0]
            seq = _U16.unpack_from(payload, off + 7)[0]
            fname, category = FUNCTIONS.get(function, (f"unknown-{function}", OTHER))
            fields["sequence"] = seq
            if opcode == OPCODE_REQUEST and off + 13 <= n:
                fields["session_id"] = _U32.unpack_from(payload, off + 9)[0]
            session.stats.func(PROTOCOL, f"0x{function:04x}")
        else:
            session.stats.func(PROTOCOL, fields["opcode"])  # type: ignore[arg-type]
        latency = None
        if opcode == OPCODE_REQUEST:
            direction = REQUEST
            if seq is not None:
                pending = self._pending
                if len(pending) >= MAX_PENDING:
                    pending.pop(next(iter(pending)))
                    session.anomaly("s7comm_plus_pending_overflow")
                pending[(from_client, seq)] = ts
        elif opcode in (OPCODE_RESPONSE, OPCODE_RESPONSE2):
            direction = RESPONSE
            if seq is not None:
                t0 = self._pending.pop((not from_client, seq), None)
                if t0 is not None:
                    latency = pair_latency(t0, ts)
        else:
            direction = UNSOLICITED
        session.event(
            from_client, ts, PROTOCOL, direction, function, fname, category,
            unit=unit, size=n, fields=fields, latency=latency,
        )
