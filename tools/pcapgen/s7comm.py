"""Crafted S7comm captures: ``pcaps/s7comm_normal.pcap`` and ``pcaps/s7comm_attack.pcap``.

Run as ``python -m tools.pcapgen.s7comm``. The byte builders at the top are pure (bytes in, bytes out,
no scapy objects) and are reused by ``tests/test_s7comm.py``; scapy only wraps the finished TPKTs into
Ethernet/IP/TCP packets (``tools.pcapgen.common``).

Plant: PLC (S7-315-2 PN/DP, rack 0 slot 2) 10.10.1.10; HMI 10.10.1.20 (OP connection, TSAP 0x0202)
polling data blocks, inputs and flags once a second after setting up communication.
Attack capture: a reconnaissance host 10.10.1.99 reads the module and component identification and
the operating mode (SZL 0x0011, 0x001c, 0x0424) and lists the blocks; an attacker 10.10.1.66 with a
PG connection (TSAP 0x0102) guesses the protection password (one wrong, one accepted), uploads OB1
(program theft), writes a data block, sets the clock, stops the PLC, downloads a new OB1 (request
download, the PLC pulls the blocks, download ended, _INSE), deletes FC1 (_DELE), compresses memory
(_GARB), copies RAM to ROM (_MODU), and restarts the PLC (P_PROGRAM hot restart, then cold restart).
"""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Pure byte builders (RFC 1006 TPKT, ISO 8073 COTP class 0, S7comm as in packet-s7comm.c)
# --------------------------------------------------------------------------------------------------

PLC, HMI, ATTACKER, RECON = "10.10.1.10", "10.10.1.20", "10.10.1.66", "10.10.1.99"
AREA_I, AREA_Q, AREA_M, AREA_DB = 0x81, 0x82, 0x83, 0x84
TS_BIT, TS_BYTE, TS_WORD, TS_INT, TS_DWORD, TS_REAL = 1, 2, 4, 5, 6, 8


def tpkt(payload: bytes) -> bytes:
    """RFC 1006 §6: version 3, reserved 0, length including this 4-byte header."""
    return b"\x03\x00" + struct.pack(">H", len(payload) + 4) + payload


def cotp_dt(data: bytes, eot: bool = True) -> bytes:
    """A class-0 DT TPDU (LI 2, type 0xF0, EOT bit + TPDU-NR 0) in its TPKT."""
    return tpkt(bytes((2, 0xF0, 0x80 if eot else 0x00)) + data)


def cotp_params(calling: bytes, called: bytes, tpdu_size: int | None = 0x0A) -> bytes:
    out = b""
    if tpdu_size is not None:
        out += bytes((0xC0, 1, tpdu_size))
    return out + bytes((0xC1, len(calling))) + calling + bytes((0xC2, len(called))) + called


def cotp_cr(src_ref: int, calling: bytes, called: bytes, tpdu_size: int | None = 0x0A) -> bytes:
    """Connection request: LI, 0xE0, dst-ref 0, src-ref, class 0, parameters."""
    body = bytes((0xE0,)) + struct.pack(">HH", 0, src_ref) + b"\x00" + cotp_params(calling, called, tpdu_size)
    return tpkt(bytes((len(body),)) + body)


def cotp_cc(dst_ref: int, src_ref: int, calling: bytes, called: bytes, tpdu_size: int | None = 0x0A) -> bytes:
    body = bytes((0xD0,)) + struct.pack(">HH", dst_ref, src_ref) + b"\x00" + cotp_params(calling, called, tpdu_size)
    return tpkt(bytes((len(body),)) + body)


def s7(rosctr: int, pduref: int, param: bytes = b"", data: bytes = b"", errcls: int = 0, errcod: int = 0) -> bytes:
    """An S7comm PDU: 0x32, ROSCTR, redundancy id, PDU reference, lengths [, error class/code]."""
    head = struct.pack(">BBHHHH", 0x32, rosctr, 0, pduref, len(param), len(data))
    if rosctr in (2, 3):
        head += bytes((errcls, errcod))
    return head + param + data


def job(pduref: int, param: bytes, data: bytes = b"") -> bytes:
    return cotp_dt(s7(1, pduref, param, data))


def ack_data(pduref: int, param: bytes, data: bytes = b"", errcls: int = 0, errcod: int = 0) -> bytes:
    return cotp_dt(s7(3, pduref, param, data, errcls, errcod))


def ack(pduref: int, errcls: int = 0, errcod: int = 0) -> bytes:
    return cotp_dt(s7(2, pduref, errcls=errcls, errcod=errcod))


def setup_param(pdu_size: int = 480, amq: int = 1) -> bytes:
    return struct.pack(">BBHHH", 0xF0, 0, amq, amq, pdu_size)


def s7any(area: int, tsize: int, count: int, byte: int, bit: int = 0, db: int = 0) -> bytes:
    """S7ANY item: var spec 0x12, length 10, syntax 0x10, transport size, count, DB, area, address."""
    addr = (byte << 3) | bit
    return struct.pack(">BBBBHHB", 0x12, 10, 0x10, tsize, count, db, area) + addr.to_bytes(3, "big")


def var_param(func: int, items: list[bytes]) -> bytes:
    """Read var (0x04) / write var (0x05) parameter: function, item count, items."""
    return bytes((func, len(items))) + b"".join(items)


def data_items(items: list[tuple[int, int, bytes]]) -> bytes:
    """Data items (return code, data transport size, payload); length is in bits for transport sizes
    3/4/5 and in bytes otherwise; a fill byte follows odd-length items except the last."""
    out = b""
    for i, (rc, dts, payload) in enumerate(items):
        ln = len(payload) * 8 if dts in (4, 5) else (1 if dts == 3 else len(payload))
        out += bytes((rc, dts)) + struct.pack(">H", ln) + payload
        if len(payload) % 2 and i < len(items) - 1:
            out += b"\x00"
    return out


def filename(block_type: str, number: int, fs: str = "P") -> bytes:
    """``_`` + type ("08" OB, "0A" DB, "0C" FC, "0E" FB) + 5-digit number + filesystem."""
    return f"_{block_type}{number:05d}{fs}".encode()


def block_param(func: int, name: bytes, upload_id: int = 0, status: int = 0) -> bytes:
    """Request download (0x1a, status 1), download block (0x1b), download ended (0x1c), start upload
    (0x1d): function, status, 2 unknown, 4-byte upload id, filename length, filename."""
    return bytes((func, status)) + b"\x00\x00" + struct.pack(">I", upload_id) + bytes((len(name),)) + name


def request_download_param(name: bytes, load_len: int, mc7_len: int) -> bytes:
    lengths = f"1{load_len:06d}{mc7_len:06d}".encode()
    return block_param(0x1A, name, status=1) + bytes((len(lengths),)) + lengths


def start_upload_reply(upload_id: int, length: int) -> bytes:
    """Start upload ack_data parameter: function, status, 0x0100, upload id, length as 7 ASCII digits."""
    digits = f"{length:07d}".encode()
    return b"\x1d\x00\x01\x00" + struct.pack(">I", upload_id) + bytes((len(digits),)) + digits


def upload_param(func: int, upload_id: int) -> bytes:
    """Upload (0x1e) / end upload (0x1f): function, status, 2 unknown, upload id."""
    return bytes((func, 0)) + b"\x00\x00" + struct.pack(">I", upload_id)


def block_data(chunk: bytes) -> bytes:
    """Data part of an upload / download-block reply: length, 0x00fb, block bytes."""
    return struct.pack(">H", len(chunk)) + b"\x00\xfb" + chunk


def pi_param(service: bytes, block: bytes = b"") -> bytes:
    """PLC control (0x28): function, 7 unknown bytes (..fd), parameter block length, block, name."""
    return (
        b"\x28\x00\x00\x00\x00\x00\x00\xfd" + struct.pack(">H", len(block)) + block + bytes((len(service),)) + service
    )


def pi_blocks(*entries: bytes) -> bytes:
    """_INSE/_DELE parameter block: count, reserved, then type+number+filesystem (8 ASCII each)."""
    return bytes((len(entries), 0)) + b"".join(entries)


def plc_stop_param() -> bytes:
    return b"\x29\x00\x00\x00\x00\x00\x09P_PROGRAM"


def userdata(
    pduref: int,
    typ: int,
    group: int,
    sub: int,
    seq: int,
    data: bytes,
    err: int = 0,
    ret: int = 0xFF,
    tsize: int = 0x09,
    more: bool = False,
) -> bytes:
    """Userdata (ROSCTR 7). ``typ`` 1 request (8-byte parameter) or 2 response (12-byte parameter with
    data unit reference, last-data-unit flag and error code). Data: return code, size, length."""
    tg = (typ << 6) | group
    if typ == 2:
        param = b"\x00\x01\x12\x08\x12" + bytes((tg, sub, seq, 0, 1 if more else 0)) + struct.pack(">H", err)
    else:
        param = b"\x00\x01\x12\x04\x11" + bytes((tg, sub, seq))
    body = bytes((ret, tsize)) + struct.pack(">H", len(data)) + data if (data or typ == 2) else b"\x0a\x00\x00\x00"
    return cotp_dt(s7(7, pduref, param, body))


def szl_request(pduref: int, szl_id: int, index: int = 0) -> bytes:
    return userdata(pduref, 1, 4, 1, 0, struct.pack(">HH", szl_id, index))


def szl_response(pduref: int, szl_id: int, index: int, rlen: int, records: list[bytes], err: int = 0) -> bytes:
    body = struct.pack(">HHHH", szl_id, index, rlen, len(records)) + b"".join(records)
    return userdata(pduref, 2, 4, 1, 1, body, err=err)


def szl_0011_record(index: int, mlfb: str, ausbg: bytes = b"\x00\x01", ausbe: bytes = b"\x00\x01") -> bytes:
    return struct.pack(">H", index) + mlfb.encode().ljust(20, b" ") + b"\x00\xc0" + ausbg + ausbe


def szl_001c_record(index: int, text: str) -> bytes:
    return struct.pack(">H", index) + text.encode().ljust(32, b"\x00")


def bcd(v: int) -> int:
    return ((v // 10) << 4) | (v % 10)


def s7_timestamp(t: datetime) -> bytes:
    """10-byte BCD clock: reserved, century, year, month, day, hour, minute, second, ms + weekday."""
    ms = t.microsecond // 1000
    wd = t.isoweekday() % 7 + 1
    return bytes(
        (
            0,
            0x19 if t.year < 2000 else 0x20,
            bcd(t.year % 100),
            bcd(t.month),
            bcd(t.day),
            bcd(t.hour),
            bcd(t.minute),
            bcd(t.second),
            bcd(ms // 10),
            ((ms % 10) << 4) | wd,
        )
    )


# TSAPs: connection type (1 PG, 2 OP, 3 S7 basic) and rack/slot byte
TSAP_PG, TSAP_OP = b"\x01\x00", b"\x02\x00"
TSAP_PLC_PG, TSAP_PLC_OP = b"\x01\x02", b"\x02\x02"  # rack 0 slot 2

# --------------------------------------------------------------------------------------------------
# Conversations (scapy only from here)
# --------------------------------------------------------------------------------------------------


class _S7Conn:
    """An S7 connection over a TcpConversation: COTP set-up, communication set-up, numbered jobs."""

    def __init__(self, conv, calling: bytes, called: bytes, pdu_size: int = 480) -> None:  # type: ignore[no-untyped-def]
        self.conv = conv
        self.ref = 0x0100
        conv.handshake()
        conv.exchange(cotp_cr(0x0001, calling, called), cotp_cc(0x0001, 0x0044, calling, called))
        self.exchange(setup_param(pdu_size), setup_param(min(pdu_size, 240)))

    def next_ref(self) -> int:
        self.ref = (self.ref + 1) & 0xFFFF
        return self.ref

    def exchange(
        self,
        param: bytes,
        reply_param: bytes,
        data: bytes = b"",
        reply_data: bytes = b"",
        gap: float = 0.05,
        errcls: int = 0,
        errcod: int = 0,
    ) -> None:
        ref = self.next_ref()
        self.conv.exchange(job(ref, param, data), ack_data(ref, reply_param, reply_data, errcls, errcod), gap=gap)

    def plc_job(self, param: bytes, reply_param: bytes, reply_data: bytes = b"") -> None:
        """A job sent by the PLC (download block / download ended pull the block from the PG)."""
        ref = 0xC100 + (self.ref & 0xFF)
        self.ref += 1
        self.conv.send(False, job(ref, param), dt=0.01)
        self.conv.send(True, ack_data(ref, reply_param, reply_data), dt=0.002)

    def userdata(
        self, group: int, sub: int, req: bytes, res: bytes, err: int = 0, ret: int = 0xFF, gap: float = 0.05
    ) -> None:
        ref = self.next_ref()
        self.conv.exchange(
            userdata(ref, 1, group, sub, 0, req), userdata(ref, 2, group, sub, 1, res, err=err, ret=ret), gap=gap
        )


def build_normal() -> list:  # type: ignore[type-arg]
    """HMI polling: DB1 process values, inputs and flags, once a second for two minutes."""
    from tools.pcapgen.common import Clock, TcpConversation

    clock = Clock()
    conv = TcpConversation(HMI, 49152, PLC, 102, clock, isn_c=70000, isn_s=90000)
    c = _S7Conn(conv, TSAP_OP, TSAP_PLC_OP, pdu_size=240)
    items = [
        s7any(AREA_DB, TS_BYTE, 20, 0, db=1),  # DB1.DBB0[20]: process values block
        s7any(AREA_DB, TS_REAL, 1, 20, db=1),  # DB1.DBD20: tank level
        s7any(AREA_I, TS_BYTE, 2, 0),  # IB0[2]
        s7any(AREA_M, TS_BYTE, 1, 100),  # MB100
        s7any(AREA_Q, TS_BIT, 1, 0, bit=1),  # Q0.1
    ]
    param = var_param(0x04, items)
    for k in range(120):
        level = 42.0 + (k % 20) * 0.5
        values = [
            (0xFF, 4, bytes((k + i) & 0xFF for i in range(20))),
            (0xFF, 7, struct.pack(">f", level)),
            (0xFF, 4, bytes((0x05, k & 0x0F))),
            (0xFF, 4, bytes((k & 1,))),
            (0xFF, 3, bytes((k // 30 & 1,))),
        ]
        c.exchange(param, bytes((0x04, len(items))), reply_data=data_items(values), gap=1.0 if k else 0.2)
    conv.close()
    return list(conv.packets)


def build_attack() -> list:  # type: ignore[type-arg]
    from tools.pcapgen.common import Clock, TcpConversation

    clock = Clock(start=1_767_225_600.0 + 3600)
    packets: list = []  # type: ignore[type-arg]

    # 1. Reconnaissance from an unknown host: identification and mode SZLs, then the block list.
    conv = TcpConversation(RECON, 50001, PLC, 102, clock, isn_c=11000, isn_s=21000)
    c = _S7Conn(conv, TSAP_PG, TSAP_PLC_PG)
    r = c.next_ref()
    conv.exchange(
        szl_request(r, 0x0011),
        szl_response(
            r,
            0x0011,
            0,
            28,
            [
                szl_0011_record(1, "6ES7 315-2EH14-0AB0"),
                szl_0011_record(6, "6ES7 315-2EH14-0AB0", b"\x00\x04", b"\x00\x01"),
                szl_0011_record(7, "", b"V\x03", b"\x02\x06"),
            ],
        ),
    )
    r = c.next_ref()
    conv.exchange(
        szl_request(r, 0x001C),
        szl_response(
            r,
            0x001C,
            0,
            34,
            [
                szl_001c_record(1, "S7-300 station_1"),
                szl_001c_record(2, "CPU 315-2 PN/DP"),
                szl_001c_record(3, "WATER-PLANT-PUMPS"),
                szl_001c_record(4, "Original Siemens Equipment"),
                szl_001c_record(5, "S C-H4N123452016"),
                szl_001c_record(7, "CPU 315-2 PN/DP"),
            ],
        ),
    )
    r = c.next_ref()
    conv.exchange(
        szl_request(r, 0x0424),
        szl_response(r, 0x0424, 0, 20, [struct.pack(">H", 0x5108) + bytes((0xFF, 0x08, 0x08, 0x00)) + bytes(14)]),
    )  # RUN
    c.userdata(3, 1, b"", b"\x30\x38\x00\x01\x30\x41\x00\x02\x30\x43\x00\x03")  # OB 1, DB 2, FC 3
    conv.close()
    packets += conv.packets

    # 2. The attacker: PG connection, password guessing, theft, tampering, stop, download, restart.
    conv = TcpConversation(ATTACKER, 50002, PLC, 102, clock, isn_c=31000, isn_s=41000)
    c = _S7Conn(conv, TSAP_PG, TSAP_PLC_PG)
    obf = bytes(b ^ 0x55 for b in b"admin   ")  # the wire obfuscation is irrelevant here
    c.userdata(5, 1, obf, b"", err=0xD602)  # incorrect password
    c.userdata(5, 1, bytes(b ^ 0x55 for b in b"s7pass  "), b"")  # accepted
    ob1 = filename("08", 1, "A")
    c.exchange(block_param(0x1D, ob1), start_upload_reply(7, 212))
    body = bytes(range(256))[:212]
    c.exchange(upload_param(0x1E, 7), b"\x1e\x01", reply_data=block_data(body[:120]))
    c.exchange(upload_param(0x1E, 7), b"\x1e\x00", reply_data=block_data(body[120:]))
    c.exchange(upload_param(0x1F, 7), b"\x1f")
    c.exchange(
        var_param(0x05, [s7any(AREA_DB, TS_WORD, 1, 10, db=1), s7any(AREA_DB, TS_BIT, 1, 0, 0, db=1)]),
        b"\x05\x02",
        data=data_items([(0, 4, b"\x12\x34"), (0, 3, b"\x01")]),
        reply_data=b"\xff\xff",
    )
    c.userdata(7, 2, s7_timestamp(datetime(2019, 3, 14, 3, 0, 0)), b"")  # set clock back in time
    c.exchange(plc_stop_param(), b"\x29")
    ob1p = filename("08", 1, "P")
    c.exchange(request_download_param(ob1p, 312, 212), b"\x1a")
    c.plc_job(block_param(0x1B, ob1p), b"\x1b\x01", block_data(bytes(range(200))))
    c.plc_job(block_param(0x1B, ob1p), b"\x1b\x00", block_data(bytes(range(112))))
    c.plc_job(block_param(0x1C, ob1p), b"\x1c")
    c.exchange(pi_param(b"_INSE", pi_blocks(b"0800001P")), b"\x28")
    c.exchange(pi_param(b"_DELE", pi_blocks(b"0C00001B")), b"\x28")
    c.exchange(pi_param(b"_GARB"), b"\x28")
    c.exchange(pi_param(b"_MODU", b"EP"), b"\x28")
    c.exchange(pi_param(b"P_PROGRAM"), b"\x28", gap=2.0)  # hot restart
    c.exchange(plc_stop_param(), b"\x29", gap=5.0)
    c.exchange(pi_param(b"P_PROGRAM", b"C "), b"\x28", gap=2.0)  # cold restart
    conv.close()
    packets += conv.packets
    return packets


def main(directory: Path | None = None) -> list[Path]:
    from tools.pcapgen.common import check_and_print_sizes, write_normal_and_attack

    return check_and_print_sizes(write_normal_and_attack("s7comm", build_normal, build_attack, directory))


if __name__ == "__main__":
    main()
