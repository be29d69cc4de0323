"""Crafted DNP3 captures: ``pcaps/dnp3_normal.pcap`` and ``pcaps/dnp3_attack.pcap``.

Run as ``python -m tools.pcapgen.dnp3``. The byte builders at the top are pure (no scapy objects) and
are reused by tests/test_dnp3.py to build vectors; scapy only wraps the finished link frames into
Ethernet/IP/TCP (or UDP) packets.

Plant: master (SCADA front end) 10.0.20.1, link address 1; outstation (RTU) 10.0.20.10, link
address 10; a second outstation 10.0.20.11 (address 11) polled over UDP. The attacker in the attack
capture is 10.0.20.66 using the master's link address 1 (DNP3 link addresses are not authenticated).
"""

from __future__ import annotations

import struct
from pathlib import Path

from sensor.protocols.dnp3 import add_crcs

# --------------------------------------------------------------------------------------------------
# Pure byte builders (IEEE 1815-2012: link 9.2, transport 8.2, application 4.2)
# --------------------------------------------------------------------------------------------------

MASTER, OUTSTATION, OUTSTATION_UDP = 1, 10, 11


def link_frame(
    dst: int, src: int, user_data: bytes = b"", func: int = 4, master: bool = True, prm: bool = True
) -> bytes:
    """One link frame with valid CRCs. ``func`` 4 = unconfirmed user data (what DNP3/IP uses)."""
    if len(user_data) > 250:
        raise ValueError("a link frame carries at most 250 octets of user data")
    ctl = (0x80 if master else 0) | (0x40 if prm else 0) | (func & 0x0F)
    head = bytes((0x05, 0x64, 5 + len(user_data), ctl)) + struct.pack("<HH", dst, src)
    return add_crcs(head + user_data)


def segments(fragment: bytes, tseq: int = 0, max_payload: int = 249) -> list[bytes]:
    """Split an application fragment into transport segments (TH + payload), 8.2.2."""
    chunks = [fragment[i : i + max_payload] for i in range(0, len(fragment), max_payload)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        th = (0x40 if i == 0 else 0) | (0x80 if i == len(chunks) - 1 else 0) | ((tseq + i) & 0x3F)
        out.append(bytes((th,)) + chunk)
    return out


def frames(dst: int, src: int, fragment: bytes, tseq: int = 0, master: bool = True) -> bytes:
    """An application fragment as the concatenated link frames that carry it."""
    return b"".join(link_frame(dst, src, seg, 4, master) for seg in segments(fragment, tseq))


def app_request(
    fc: int, seq: int, objects: bytes = b"", fir: bool = True, fin: bool = True, con: bool = False
) -> bytes:
    ac = (0x80 if fir else 0) | (0x40 if fin else 0) | (0x20 if con else 0) | (seq & 0x0F)
    return bytes((ac, fc)) + objects


def app_response(
    fc: int,
    seq: int,
    iin: int = 0,
    objects: bytes = b"",
    fir: bool = True,
    fin: bool = True,
    con: bool = False,
    uns: bool = False,
) -> bytes:
    ac = (0x80 if fir else 0) | (0x40 if fin else 0) | (0x20 if con else 0) | (0x10 if uns else 0) | (seq & 0x0F)
    return bytes((ac, fc, iin >> 8 & 0xFF, iin & 0xFF)) + objects


# ---- objects (Annex A) ----


def class_read(*classes: int) -> bytes:
    """g60v1..v4 (class 0..3 data), qualifier 0x06 (all)."""
    return b"".join(bytes((60, c + 1, 0x06)) for c in classes)


def crob(index: int, code: int = 0x03, count: int = 1, on_ms: int = 1000, off_ms: int = 0, status: int = 0) -> bytes:
    """g12v1 control relay output block, one point, qualifier 0x28 (2-octet count, 2-octet index)."""
    block = struct.pack("<BBIIB", code, count, on_ms, off_ms, status)
    return bytes((12, 1, 0x28)) + struct.pack("<HH", 1, index) + block


def analog_output(index: int, value: float, variation: int = 1, status: int = 0) -> bytes:
    """g41v1-4 analog output block, one point, qualifier 0x17 (1-octet count, 1-octet index)."""
    fmt = {1: "<iB", 2: "<hB", 3: "<fB", 4: "<dB"}[variation]
    v = int(value) if variation <= 2 else float(value)
    return bytes((41, variation, 0x17, 1, index)) + struct.pack(fmt, v, status)


def time_object(ms: int) -> bytes:
    """g50v1 absolute time, qualifier 0x07 count 1."""
    return bytes((50, 1, 0x07, 1)) + struct.pack("<IH", ms & 0xFFFFFFFF, ms >> 32 & 0xFFFF)


def iin_clear_restart() -> bytes:
    """g80v1 index 7 (IIN1.7 device restart) written to 0, qualifier 0x00."""
    return bytes((80, 1, 0x00, 7, 7, 0x00))


def binary_inputs(start: int, states: list[int]) -> bytes:
    """g1v2 binary inputs with flags, qualifier 0x01 (2-octet start/stop)."""
    flags = bytes(0x01 | (s << 7) for s in states)  # ONLINE, state in bit 7
    return bytes((1, 2, 0x01)) + struct.pack("<HH", start, start + len(states) - 1) + flags


def analog_inputs(start: int, values: list[int]) -> bytes:
    """g30v1 32-bit analog inputs with flags, qualifier 0x01."""
    body = b"".join(struct.pack("<Bi", 0x01, v) for v in values)
    return bytes((30, 1, 0x01)) + struct.pack("<HH", start, start + len(values) - 1) + body


def binary_events(events: list[tuple[int, int, int]]) -> bytes:
    """g2v2 binary input events with time, qualifier 0x28: (index, state, ms)."""
    body = b"".join(
        struct.pack("<HB", i, 0x01 | (s << 7)) + struct.pack("<IH", ms & 0xFFFFFFFF, ms >> 32) for i, s, ms in events
    )
    return bytes((2, 2, 0x28)) + struct.pack("<H", len(events)) + body


def time_delay(ms: int) -> bytes:
    """g52v2 time delay fine, qualifier 0x07 count 1 (answer to a restart or delay measurement)."""
    return bytes((52, 2, 0x07, 1)) + struct.pack("<H", ms)


def file_command(name: str, mode: int, request_id: int = 1, size: int = 0) -> bytes:
    """g70v3 file command (open: mode 1 read / 2 write / 3 append; delete: mode 0), qualifier 0x5B."""
    raw = name.encode("latin-1")
    body = struct.pack("<HH6sHIIHHH", 26, len(raw), b"\x00" * 6, 0o644, 0, size, mode, 1024, request_id) + raw
    return bytes((70, 3, 0x5B, 1)) + struct.pack("<H", len(body)) + body


def file_status(handle: int, status: int = 0, request_id: int = 1, size: int = 0) -> bytes:
    """g70v4 file command status, qualifier 0x5B (answer to open/close/delete, or close request)."""
    body = struct.pack("<IIHHB", handle, size, 1024, request_id, status)
    return bytes((70, 4, 0x5B, 1)) + struct.pack("<H", len(body)) + body


def file_transport(handle: int, block: int, data: bytes, last: bool = False) -> bytes:
    """g70v5 file transport (one block of a file write), qualifier 0x5B."""
    body = struct.pack("<II", handle, block | (0x80000000 if last else 0)) + data
    return bytes((70, 5, 0x5B, 1)) + struct.pack("<H", len(body)) + body


def auth_challenge(csq: int, user: int = 1, data: bytes = b"\x11" * 4) -> bytes:
    """g120v1 authentication challenge (SAv5), qualifier 0x5B."""
    body = struct.pack("<IHBB", csq, user, 4, 1) + data  # MAC algorithm 4 (HMAC-SHA-256 trunc 16), reason 1
    return bytes((120, 1, 0x5B, 1)) + struct.pack("<H", len(body)) + body


def auth_reply(csq: int, user: int = 1, mac: bytes = b"\x00" * 16) -> bytes:
    """g120v2 authentication reply, qualifier 0x5B."""
    body = struct.pack("<IH", csq, user) + mac
    return bytes((120, 2, 0x5B, 1)) + struct.pack("<H", len(body)) + body


def auth_error(csq: int, code: int = 1, user: int = 1, assoc: int = 1, ms: int = 0) -> bytes:
    """g120v7 authentication error (1 = authentication failed), qualifier 0x5B."""
    body = struct.pack("<IHHB", csq, user, assoc, code) + struct.pack("<IH", ms & 0xFFFFFFFF, ms >> 32)
    return bytes((120, 7, 0x5B, 1)) + struct.pack("<H", len(body)) + body


def link_status_request(dst: int, src: int) -> bytes:
    """Request link status (primary func 9): the keep-alive of DNP3 over TCP (Annex C)."""
    return link_frame(dst, src, b"", func=9, master=True)


def link_status(dst: int, src: int) -> bytes:
    """Link status (secondary func 11)."""
    return link_frame(dst, src, b"", func=11, master=False, prm=False)


# --------------------------------------------------------------------------------------------------
# Captures
# --------------------------------------------------------------------------------------------------


class _Dnp3Talk:
    """A TCP conversation with per-side transport and application sequence counters."""

    def __init__(self, conv, master_addr: int = MASTER, outstation_addr: int = OUTSTATION) -> None:
        self.conv = conv
        self.m, self.o = master_addr, outstation_addr
        self.tseq_m = 0
        self.tseq_o = 0
        self.aseq_m = 0
        self.aseq_o = 0  # unsolicited sequence

    def request(self, fc: int, objects: bytes = b"", gap: float = 0.01) -> int:
        seq = self.aseq_m
        self.aseq_m = (self.aseq_m + 1) & 0x0F
        frag = app_request(fc, seq, objects)
        self.conv.send(True, frames(self.o, self.m, frag, self.tseq_m, True), dt=gap)
        self.tseq_m = (self.tseq_m + len(segments(frag))) & 0x3F
        return seq

    def confirm(self, seq: int, uns: bool = False, gap: float = 0.002) -> None:
        ac = 0xC0 | (0x10 if uns else 0) | (seq & 0x0F)
        frag = bytes((ac, 0))
        self.conv.send(True, frames(self.o, self.m, frag, self.tseq_m, True), dt=gap)
        self.tseq_m = (self.tseq_m + 1) & 0x3F

    def response(
        self, seq: int, objects: bytes = b"", iin: int = 0, fc: int = 129, rtt: float = 0.003, con: bool = False
    ) -> None:
        """A solicited response as one application fragment (over several transport segments when long)."""
        frag = app_response(fc, seq, iin, objects, con=con)
        self.conv.send(False, frames(self.m, self.o, frag, self.tseq_o, False), dt=rtt)
        self.tseq_o = (self.tseq_o + len(segments(frag))) & 0x3F

    def unsolicited(self, objects: bytes, iin: int = 0, gap: float = 0.5) -> int:
        seq = self.aseq_o
        self.aseq_o = (self.aseq_o + 1) & 0x0F
        frag = app_response(130, seq, iin, objects, con=True, uns=True)
        self.conv.send(False, frames(self.m, self.o, frag, self.tseq_o, False), dt=gap)
        self.tseq_o = (self.tseq_o + len(segments(frag))) & 0x3F
        return seq

    def keepalive(self, gap: float = 1.0) -> None:
        self.conv.send(True, link_status_request(self.o, self.m), dt=gap)
        self.conv.send(False, link_status(self.m, self.o), dt=0.002)


def build_normal() -> list:
    from tools.pcapgen.common import Clock, TcpConversation, udp_packet

    clock = Clock()
    conv = TcpConversation("10.0.20.1", 41000, "10.0.20.10", 20000, clock).handshake()
    t = _Dnp3Talk(conv)
    # Start-up: integrity poll (class 0 + events), the big answer spans several transport segments.
    seq = t.request(1, class_read(1, 2, 3, 0))
    static = binary_inputs(0, [i % 2 for i in range(64)]) + analog_inputs(0, [1000 + 7 * i for i in range(60)])
    t.response(seq, static, iin=0x9000)  # IIN: device restart, need time
    # Clear the restart bit and sync the clock, as a master does after an outstation restart.
    seq = t.request(2, iin_clear_restart())
    t.response(seq, iin=0x1000)
    seq = t.request(2, time_object(1_767_225_600_000))
    t.response(seq)
    seq = t.request(20, class_read(1, 2, 3))  # enable unsolicited
    t.response(seq)
    # Periodic polling for a minute: class 1 events every 2 s, integrity every 20 s, keep-alives.
    for i in range(30):
        seq = t.request(1, class_read(1), gap=2.0)
        if i % 3 == 0:
            t.response(seq, binary_events([(i % 8, i & 1, 1_767_225_600_000 + i * 2000)]), iin=0x0200)
        else:
            t.response(seq)
        if i % 10 == 9:
            seq = t.request(1, class_read(1, 2, 3, 0))
            t.response(seq, analog_inputs(0, [1000 + i + k for k in range(20)]))
        if i % 7 == 3:
            useq = t.unsolicited(binary_events([(3, 1, 1_767_225_600_000 + i * 2000 + 500)]), iin=0x0200)
            t.confirm(useq, uns=True)
        if i % 5 == 4:
            t.keepalive(gap=0.5)
    conv.close()
    packets = list(conv.packets)
    # A second outstation polled over UDP (DNP3 over UDP, IEEE 1815-2012 Annex C.2).
    ts = clock.t
    aseq = tseq_m = tseq_o = 0
    for i in range(10):
        ts += 3.0
        req = frames(OUTSTATION_UDP, MASTER, app_request(1, aseq, class_read(1, 2, 3, 0)), tseq_m, True)
        packets.append(udp_packet("10.0.20.1", 20000, "10.0.20.11", 20000, req, ts))
        answer = app_response(129, aseq, 0, analog_inputs(0, [50 + i, 60 + i]))
        resp = frames(MASTER, OUTSTATION_UDP, answer, tseq_o, False)
        packets.append(udp_packet("10.0.20.11", 20000, "10.0.20.1", 20000, resp, ts + 0.004))
        aseq = (aseq + 1) & 0x0F
        tseq_m = (tseq_m + 1) & 0x3F
        tseq_o = (tseq_o + 1) & 0x3F
    return packets


def build_attack() -> list:
    from tools.pcapgen.common import Clock, TcpConversation

    clock = Clock(1_767_229_200.0)  # one hour after the normal capture starts
    conv = TcpConversation("10.0.20.66", 51515, "10.0.20.10", 20000, clock, isn_c=7000, isn_s=9000).handshake()
    t = _Dnp3Talk(conv)
    # Reconnaissance: a class 0 read.
    seq = t.request(1, class_read(0))
    t.response(seq, analog_inputs(0, [1000, 1001, 1002, 1003]))
    # Blind the SCADA: disable unsolicited reporting.
    seq = t.request(21, class_read(1, 2, 3), gap=1.0)
    t.response(seq)
    # Control without select-before-operate: direct operate a CROB (latch on, then trip/close pulse).
    seq = t.request(5, crob(3, code=0x03, on_ms=0), gap=1.0)
    t.response(seq, crob(3, code=0x03, on_ms=0))
    seq = t.request(5, crob(4, code=0x41, on_ms=500))  # pulse on, close
    t.response(seq, crob(4, code=0x41, on_ms=500))
    t.request(6, crob(5, code=0x81, on_ms=500))  # direct operate, no acknowledgement: pulse on, trip
    # Select then operate (the normal two-step control), then one refused for no select.
    seq = t.request(3, crob(7, code=0x04), gap=1.0)
    t.response(seq, crob(7, code=0x04))
    seq = t.request(4, crob(7, code=0x04))
    t.response(seq, crob(7, code=0x04))
    seq = t.request(4, crob(8, code=0x03))
    t.response(seq, crob(8, code=0x03, status=2))  # NO_SELECT
    # Analog output set points, each variation.
    seq = t.request(5, analog_output(0, 4000, 1), gap=1.0)
    t.response(seq, analog_output(0, 4000, 1))
    seq = t.request(5, analog_output(1, -200, 2))
    t.response(seq, analog_output(1, -200, 2))
    seq = t.request(3, analog_output(2, 99.5, 3))
    t.response(seq, analog_output(2, 99.5, 3))
    seq = t.request(4, analog_output(2, 99.5, 3))
    t.response(seq, analog_output(2, 99.5, 3))
    seq = t.request(5, analog_output(3, 1e6, 4))
    t.response(seq, analog_output(3, 1e6, 4))
    # Secure authentication: a critical request is challenged, the reply's MAC is wrong, error.
    seq = t.request(5, crob(9, code=0x03), gap=1.0)
    t.response(seq, auth_challenge(1), fc=131)
    seq = t.request(32, auth_reply(1))
    t.response(seq, auth_error(1, code=1), fc=131)
    # File transfer: open for write, write two blocks, close; then delete another file.
    seq = t.request(25, file_command("/cfg/logic.bin", mode=2, request_id=1, size=300), gap=1.0)
    t.response(seq, file_status(0x1234, request_id=1))
    seq = t.request(2, file_transport(0x1234, 0, b"\xde\xad\xbe\xef" * 40))
    t.response(seq, file_status(0x1234, request_id=1))
    seq = t.request(2, file_transport(0x1234, 1, b"\x90" * 140, last=True))
    t.response(seq, file_status(0x1234, request_id=1))
    seq = t.request(26, file_status(0x1234, request_id=2))
    t.response(seq, file_status(0x1234, request_id=2))
    seq = t.request(27, file_command("/cfg/events.log", mode=0, request_id=3))
    t.response(seq, file_status(0, request_id=3))
    # Disrupt the outstation: initialize data, stop and start the application, warm and cold restart.
    seq = t.request(15, gap=1.0)
    t.response(seq)
    seq = t.request(18, bytes((90, 1, 0x06)))
    t.response(seq)
    seq = t.request(17, bytes((90, 1, 0x06)))
    t.response(seq)
    seq = t.request(14, gap=1.0)
    t.response(seq, time_delay(2000))
    seq = t.request(13, gap=1.0)
    t.response(seq, time_delay(10000), iin=0x8000)
    conv.close()
    return list(conv.packets)


def main(directory: Path | None = None) -> list[Path]:
    from tools.pcapgen.common import check_and_print_sizes, write_normal_and_attack

    return check_and_print_sizes(write_normal_and_attack("dnp3", build_normal, build_attack, directory))


if __name__ == "__main__":
    main()
