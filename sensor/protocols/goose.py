"""IEC 61850 GOOSE (ethertype 0x88B8) and Sampled Values (ethertype 0x88BA): identification.

IEC 61850-8-1 Annex C / 9-2 section 5.3 frame (after the ethertype, VLAN tags already removed by the
decoder): APPID (2), Length (2, counted from the APPID, so >= 8), Reserved 1 (2; bit 15 = "simulate"
in edition 2), Reserved 2 (2), then the BER-encoded APDU. Ethernet padding may follow ``Length``.

GOOSE APDU (IEC 61850-8-1 Annex A, ``IECGoosePdu ::= [APPLICATION 1] IMPLICIT SEQUENCE``, tag 0x61):
gocbRef [0], timeAllowedtoLive [1], datSet [2], goID [3] OPTIONAL, t [4] (UtcTime), stNum [5], sqNum
[6], simulation/test [7], confRev [8], ndsCom [9], numDatSetEntries [10], allData [11], security [12].
The data set values (allData) are not decoded: identification only.

Each GOOSE message is one IcsEvent (direction ``unsolicited``, unit = APPID, no function code): named
``state_change`` when it starts a new state (sqNum 0, or stNum differs from the last one seen for that
control block on this flow) and ``retransmission`` otherwise. A state change is categorised
``control``: GOOSE carries protection trips and interlocks, so a new state may operate switchgear;
retransmissions (the heartbeat) are ``read``-like status reports.

Sampled Values (``savPdu ::= [APPLICATION 0]``, tag 0x60: noASDU [0], security [1], seqASDU [2] of
ASDUs with svID [0], datSet [1], smpCnt [2], confRev [3], ...) stream at 4000+ frames per second, so
they are counted (``sv`` PDUs) and only the first frame of each svID on a flow is an event
(``sv_stream``), which gives the talker table its publishers without an event per sample.
"""

from __future__ import annotations

import struct

from sensor.events import CONTROL, MALFORMED, OTHER, READ, UNSOLICITED
from sensor.protocols._ber import CLASS_APPLICATION, CLASS_CONTEXT, children, read_str, read_tlv, read_uint
from sensor.protocols.base import Analyzer, ProtocolSpec, Session

ETHERTYPE_GOOSE = 0x88B8
ETHERTYPE_SV = 0x88BA

_HDR = struct.Struct("!HHHH")  # APPID, Length, Reserved 1, Reserved 2
_UTC = struct.Struct("!I")

MAX_CONTROL_BLOCKS = 1024  # gocbRef -> last stNum remembered per flow (a publisher has a handful)
MAX_SV_IDS = 256

# IECGoosePdu context tags
_GOCB_REF, _TTL, _DATSET, _GOID, _T, _STNUM, _SQNUM, _SIM, _CONFREV, _NDSCOM, _NUMENT = range(11)


def _frame(data: bytes, session: Session, proto: str) -> tuple[int, int, int] | None:
    """(APPID, APDU end, Reserved 1) of the common 8-byte header, or None (anomaly counted)."""
    if len(data) < 8:
        session.anomaly(proto + "_truncated")
        return None
    appid, length, res1, _res2 = _HDR.unpack_from(data, 0)
    if length < 8 or length > len(data):
        session.anomaly(proto + "_bad_length")
        return None
    return appid, length, res1


class GooseAnalyzer(Analyzer):
    protocol = "goose"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._st: dict[str, int] = {}  # gocbRef -> last stNum

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        s = self.session
        head = _frame(data, s, "goose")
        if head is None:
            return
        appid, end, res1 = head
        s.stats.pdu("goose")
        pdu = read_tlv(data, 8, end)
        if pdu is None or pdu.cls != CLASS_APPLICATION or pdu.number != 1 or not pdu.constructed:
            self._malformed(from_client, ts, appid, "goose_bad_pdu", end)
            return
        gocb = dat_set = go_id = None
        st = sq = ttl = conf_rev = entries = None
        t: float | None = None
        simulation = nds_com = None
        for el in children(data, pdu, 16):
            if el.cls != CLASS_CONTEXT:
                continue
            n = el.number
            if n == _GOCB_REF:
                gocb = read_str(data, el)
            elif n == _STNUM:
                st = read_uint(data, el, 5)
            elif n == _SQNUM:
                sq = read_uint(data, el, 5)
            elif n == _DATSET:
                dat_set = read_str(data, el)
            elif n == _GOID:
                go_id = read_str(data, el)
            elif n == _TTL:
                ttl = read_uint(data, el, 5)
            elif n == _T and el.end - el.start == 8:
                t = (
                    _UTC.unpack_from(data, el.start)[0]
                    + int.from_bytes(data[el.start + 4 : el.start + 7], "big") / 16777216.0
                )
            elif n == _SIM and el.end > el.start:
                simulation = data[el.start] != 0
            elif n == _CONFREV:
                conf_rev = read_uint(data, el, 5)
            elif n == _NDSCOM and el.end > el.start:
                nds_com = data[el.start] != 0
            elif n == _NUMENT:
                entries = read_uint(data, el, 5)
        if gocb is None or st is None or sq is None:
            self._malformed(from_client, ts, appid, "goose_missing_field", end)
            return
        if pdu.truncated:
            s.anomaly("goose_truncated_pdu")
        last = self._st.get(gocb)
        changed = sq == 0 or (last is not None and last != st)
        if last is None and len(self._st) >= MAX_CONTROL_BLOCKS:
            self._st.clear()
            s.anomaly("goose_control_block_cap")
        self._st[gocb] = st
        name = "state_change" if changed else "retransmission"
        s.stats.func("goose", name)
        fields: dict[str, object] = {"gocb_ref": gocb, "st_num": st, "sq_num": sq}
        if dat_set is not None:
            fields["dat_set"] = dat_set
        if go_id is not None:
            fields["go_id"] = go_id
        if ttl is not None:
            fields["ttl_ms"] = ttl
        if conf_rev is not None:
            fields["conf_rev"] = conf_rev
        if entries is not None:
            fields["num_entries"] = entries
        if t is not None:
            fields["t"] = t
        if simulation:
            fields["simulation"] = True
        if nds_com:
            fields["nds_com"] = True
        if res1 & 0x8000:
            fields["simulate_bit"] = True
        s.event(
            from_client,
            ts,
            "goose",
            UNSOLICITED,
            -1,
            name,
            CONTROL if changed else READ,
            unit=appid,
            fields=fields,
            size=end,
        )

    def _malformed(self, from_client: bool, ts: float, appid: int, anomaly: str, size: int) -> None:
        s = self.session
        s.anomaly(anomaly)
        s.stats.func("goose", "malformed")
        s.event(
            from_client,
            ts,
            "goose",
            UNSOLICITED,
            -1,
            "malformed",
            OTHER,
            unit=appid,
            result=MALFORMED,
            anomaly=anomaly,
            size=size,
        )


class SvAnalyzer(Analyzer):
    protocol = "sv"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._seen: set[str] = set()

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        s = self.session
        head = _frame(data, s, "sv")
        if head is None:
            return
        appid, end, _res1 = head
        s.stats.pdu("sv")
        pdu = read_tlv(data, 8, end)
        if pdu is None or pdu.cls != CLASS_APPLICATION or pdu.number != 0 or not pdu.constructed:
            s.anomaly("sv_bad_pdu")
            return
        # savPdu -> seqASDU [2] -> first ASDU (SEQUENCE) -> svID [0]
        sv_id: str | None = None
        n_asdu: int | None = None
        for el in children(data, pdu, 4):
            if el.cls != CLASS_CONTEXT:
                continue
            if el.number == 0:
                n_asdu = read_uint(data, el, 2)
            elif el.number == 2 and el.constructed:
                first = read_tlv(data, el.start, el.end)
                if first is not None and first.constructed:
                    for item in children(data, first, 2):
                        if item.cls == CLASS_CONTEXT and item.number == 0:
                            sv_id = read_str(data, item)
                            break
                break
        if sv_id is None:
            s.anomaly("sv_missing_svid")
            return
        if sv_id in self._seen:
            return
        if len(self._seen) >= MAX_SV_IDS:
            s.anomaly("sv_stream_cap")
            return
        self._seen.add(sv_id)
        s.event(
            from_client,
            ts,
            "sv",
            UNSOLICITED,
            -1,
            "sv_stream",
            OTHER,
            unit=appid,
            fields={"sv_id": sv_id, "no_asdu": n_asdu},
            size=end,
        )


SPEC = ProtocolSpec(
    name="goose",
    analyzer=GooseAnalyzer,
    ethertypes=frozenset({ETHERTYPE_GOOSE}),
    deep=False,
)

EXTRA_SPECS = (
    ProtocolSpec(
        name="sv",
        analyzer=SvAnalyzer,
        ethertypes=frozenset({ETHERTYPE_SV}),
        deep=False,
    ),
)

__all__ = ["SPEC", "EXTRA_SPECS", "GooseAnalyzer", "SvAnalyzer", "ETHERTYPE_GOOSE", "ETHERTYPE_SV"]
