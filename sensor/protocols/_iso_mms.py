"""ISO session / MMS on ISO-on-TCP (port 102): per-flow tracking for the ``s7comm.py`` analyzer.

IEC 61850 and ICCP (TASE.2) run MMS (ISO 9506) over the OSI upper stack on RFC 1006:
TPKT -> COTP DT -> session SPDU (ISO 8327-1) -> presentation (ISO 8823) -> ACSE / MMS.
The layer walk itself lives in ``_mms.py`` (shared with the other MMS identification work); this
module adds what a flow needs: the dispatcher's cheap "is this a session SPDU" test, request/response
pairing by invokeID (latency), counting under ``mms`` and one IcsEvent per MMS PDU (identification
only: PDU kind, service, invokeID; service arguments are not decoded).

Session SPDUs whose user data holds no ACSE/MMS (a bare FINISH, a refuse without user data, another
OSI application) still produce one ``session``-layer event named after the SPDU (X.225 table 11).
Wireshark counts none of this under a protocol that GROUND_TRUTH.json compares; only ``cotp`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sensor.events import OTHER, REQUEST, RESPONSE, SESSION
from sensor.protocols._mms import mms_event_values, parse_mms
from sensor.protocols.base import pair_latency

if TYPE_CHECKING:  # pragma: no cover
    from sensor.protocols.base import Session

PROTOCOL = "mms"
MAX_PENDING = 256  # outstanding confirmed requests remembered per flow

# Session SPDU identifiers (ISO 8327-1 / X.225 table 11) -> (name, direction, category)
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
    2: ("please_tokens", REQUEST, OTHER),
    5: ("expedited", REQUEST, OTHER),
    7: ("prepare", REQUEST, SESSION),
    33: ("typed_data", REQUEST, OTHER),
}


def looks_like_session(payload: bytes) -> bool:
    """A known SPDU id with a plausible length indicator (the S7 ids 0x32/0x72 are not SPDU ids).

    Data travels as Give-Tokens + Data-Transfer (``01 00 01 LI``); the other SPDUs carry a length
    indicator (one octet, or 0xff and two octets) that must fit the payload."""
    n = len(payload)
    if n < 2:
        return False
    si = payload[0]
    if si not in SPDU:
        return False
    if si in (1, 2):
        return n >= 4 and payload[1] == 0 and payload[2] == 1
    li = payload[1]
    if li == 0xFF:
        return n >= 4 and 4 + ((payload[2] << 8) | payload[3]) <= n
    return 2 + li <= n


class MmsTracker:
    """Per-flow MMS state: invokeID pairing for latency."""

    __slots__ = ("_pending", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self._pending: dict[tuple[bool, int], tuple[float, int, str]] = {}

    def handle(self, from_client: bool, payload: bytes, ts: float) -> None:
        """One reassembled COTP payload for which ``looks_like_session`` was true."""
        session = self.session
        n = len(payload)
        session.stats.pdu(PROTOCOL)
        info = parse_mms(payload)
        if info is None:
            name, direction, category = SPDU[payload[0]]
            session.stats.func(PROTOCOL, "spdu:" + name)
            session.event(
                from_client, ts, PROTOCOL, direction, payload[0], name, category, size=n,
                fields={"layer": "session", "spdu": name},
            )
            return
        function, name, category, direction, result = mms_event_values(info)
        fields: dict[str, object] = {"pdu_kind": info.kind, "spdu": info.spdu}
        if info.acse:
            fields["acse"] = True
        latency = None
        if info.invoke_id is not None:
            fields["invoke_id"] = info.invoke_id
            key = (from_client, info.invoke_id)
            if info.kind == "confirmed-request":
                pending = self._pending
                if key not in pending and len(pending) >= MAX_PENDING:
                    pending.pop(next(iter(pending)))
                    session.anomaly("mms_pending_overflow")
                pending[key] = (ts, function, name)
            else:
                hit = self._pending.pop((not from_client, info.invoke_id), None)
                if hit is not None:
                    latency = pair_latency(hit[0], ts)
        session.stats.func(PROTOCOL, name)
        session.event(
            from_client, ts, PROTOCOL, direction, function, name, category, size=n, fields=fields,
            result=result, latency=latency,
        )
