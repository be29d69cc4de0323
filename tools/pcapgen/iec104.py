"""Crafted IEC 60870-5-104 captures: ``pcaps/iec104_normal.pcap`` and ``pcaps/iec104_attack.pcap``.

Run as ``python -m tools.pcapgen.iec104``. The byte builders at the top are pure (``struct`` only) and
are reused by tests/test_iec104.py to build vectors; scapy only wraps the finished APDUs into
Ethernet/IP/TCP packets (tools/pcapgen/common.py).

Plant: SCADA master (controlling station) 10.0.104.1, RTU (controlled station) 10.0.104.10 port 2404,
common address 1. Information object addresses: single points 1001-1016 (breaker positions), double
points 2001-2004 (disconnectors), measured floats 4001-4008 (feeder currents and voltages), scaled
5001-5004 (tap positions, temperatures), counters 9001-9002, commands: breakers 6001-6002, set points
7001-7003, transformer tap changer 8001. The attacker in the attack capture is 10.0.104.66, a station
that never talks to this RTU in the normal capture.
"""

from __future__ import annotations

import calendar
import struct
import time
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Pure byte builders (IEC 60870-5-104 clause 5 APCI; IEC 60870-5-101 clause 7 ASDU)
# --------------------------------------------------------------------------------------------------

STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
STOPDT_ACT, STOPDT_CON = 0x13, 0x23
TESTFR_ACT, TESTFR_CON = 0x43, 0x83

# causes of transmission
PERIODIC, SPONT, REQ, ACT, ACTCON, DEACT, DEACTCON, ACTTERM, INROGEN, REQCOGEN = 1, 3, 5, 6, 7, 8, 9, 10, 20, 37
UNKNOWN_IOA = 47

# quality descriptor bits (QDS)
OV, BL, SB, NT, IV = 0x01, 0x10, 0x20, 0x40, 0x80


def apci_i(ns: int, nr: int, asdu: bytes) -> bytes:
    """An I-format APDU: N(S) and N(R) are shifted left one bit in the control field (clause 5.1)."""
    return bytes((0x68, len(asdu) + 4)) + struct.pack("<HH", (ns << 1) & 0xFFFE, (nr << 1) & 0xFFFE) + asdu


def apci_s(nr: int) -> bytes:
    return bytes((0x68, 4, 0x01, 0x00)) + struct.pack("<H", (nr << 1) & 0xFFFE)


def apci_u(function: int) -> bytes:
    return bytes((0x68, 4, function, 0, 0, 0))


def ioa(address: int) -> bytes:
    return struct.pack("<I", address)[:3]


def asdu(
    type_id: int,
    cot: int,
    objects: bytes,
    num: int,
    ca: int = 1,
    sq: bool = False,
    pn: bool = False,
    test: bool = False,
    oa: int = 0,
) -> bytes:
    """ASDU header (type, VSQ, COT with P/N and T bits, originator, common address) + objects."""
    vsq = (0x80 if sq else 0) | (num & 0x7F)
    cotb = (cot & 0x3F) | (0x40 if pn else 0) | (0x80 if test else 0)
    return bytes((type_id, vsq, cotb, oa)) + struct.pack("<H", ca) + objects


def cp56(epoch: float, invalid: bool = False, summer: bool = False) -> bytes:
    """CP56Time2a of a UTC epoch (IEC 60870-5-101 7.2.6.18)."""
    t = time.gmtime(int(epoch))
    ms = t.tm_sec * 1000 + round((epoch - int(epoch)) * 1000) % 1000
    dow = t.tm_wday + 1  # 1 = Monday
    return struct.pack(
        "<HBBBBB",
        ms,
        t.tm_min | (0x80 if invalid else 0),
        t.tm_hour | (0x80 if summer else 0),
        t.tm_mday | (dow << 5),
        t.tm_mon,
        t.tm_year % 100,
    )


def epoch_of(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


# information elements
def siq(on: int, q: int = 0) -> bytes:
    return bytes(((on & 1) | (q & 0xF0),))


def diq(state: int, q: int = 0) -> bytes:
    return bytes(((state & 3) | (q & 0xF0),))


def flt_q(value: float, q: int = 0) -> bytes:
    return struct.pack("<fB", value, q)


def sva_q(value: int, q: int = 0) -> bytes:
    return struct.pack("<hB", value, q)


def nva_q(value: float, q: int = 0) -> bytes:
    return struct.pack("<hB", max(-32768, min(32767, round(value * 32768))), q)


def bcr(counter: int, seq: int = 0, flags: int = 0) -> bytes:
    return struct.pack("<iB", counter, (seq & 0x1F) | (flags & 0xE0))


def sco(on: int, select: bool = False, qu: int = 0) -> bytes:
    return bytes(((on & 1) | ((qu & 0x1F) << 2) | (0x80 if select else 0),))


def dco(state: int, select: bool = False, qu: int = 0) -> bytes:
    return bytes(((state & 3) | ((qu & 0x1F) << 2) | (0x80 if select else 0),))


rco = dco  # same layout: RCS in bits 0-1 (1 lower, 2 higher)


def qos(ql: int = 0, select: bool = False) -> bytes:
    return bytes(((ql & 0x7F) | (0x80 if select else 0),))


def setpoint_nva(value: float, select: bool = False) -> bytes:
    return struct.pack("<h", max(-32768, min(32767, round(value * 32768)))) + qos(0, select)


def setpoint_sva(value: int, select: bool = False) -> bytes:
    return struct.pack("<h", value) + qos(0, select)


def setpoint_flt(value: float, select: bool = False) -> bytes:
    return struct.pack("<f", value) + qos(0, select)


def single_objects(type_id: int, cot: int, items: list[tuple[int, bytes]], ca: int = 1, pn: bool = False) -> bytes:
    """SQ=0: each element with its own information object address."""
    return asdu(type_id, cot, b"".join(ioa(a) + e for a, e in items), len(items), ca=ca, pn=pn)


def sequence_objects(type_id: int, cot: int, first: int, elements: list[bytes], ca: int = 1) -> bytes:
    """SQ=1: one address, consecutive elements."""
    return asdu(type_id, cot, ioa(first) + b"".join(elements), len(elements), ca=ca, sq=True)


def command(type_id: int, cot: int, address: int, element: bytes, ca: int = 1, pn: bool = False) -> bytes:
    return asdu(type_id, cot, ioa(address) + element, 1, ca=ca, pn=pn)


def interrogation(cot: int, qoi: int = 20, ca: int = 1) -> bytes:
    return command(100, cot, 0, bytes((qoi,)), ca)


def counter_interrogation(cot: int, qcc: int = 5, ca: int = 1) -> bytes:
    return command(101, cot, 0, bytes((qcc,)), ca)


def clock_sync(cot: int, epoch: float, ca: int = 1) -> bytes:
    return command(103, cot, 0, cp56(epoch), ca)


def reset_process(cot: int, qrp: int = 1, ca: int = 1) -> bytes:
    return command(105, cot, 0, bytes((qrp,)), ca)


# --------------------------------------------------------------------------------------------------
# A station pair on one TCP connection, keeping N(S)/N(R) like a real 104 link layer would
# --------------------------------------------------------------------------------------------------


class Link:
    """Both ends of one IEC 104 connection: numbers I-frames, acknowledges with S-frames every ``w``."""

    def __init__(self, conv, w: int = 8) -> None:
        self.conv = conv
        self.w = w
        self.ns = {True: 0, False: 0}  # next N(S) per sender (True = master/client)
        self.unacked = {True: 0, False: 0}  # I-frames received by each side and not yet acknowledged

    def u(self, from_master: bool, function: int, gap: float = 0.01) -> None:
        self.conv.send(from_master, apci_u(function), dt=gap)

    def i(self, from_master: bool, asdu_bytes: bytes, gap: float = 0.01) -> None:
        nr = self.ns[not from_master]
        self.conv.send(from_master, apci_i(self.ns[from_master], nr, asdu_bytes), dt=gap)
        self.ns[from_master] = (self.ns[from_master] + 1) % 32768
        self.unacked[from_master] = 0  # an I-frame acknowledges everything received so far
        self.unacked[not from_master] += 1
        if self.unacked[not from_master] >= self.w:
            self.s(not from_master)

    def s(self, from_master: bool, gap: float = 0.005) -> None:
        self.conv.send(from_master, apci_s(self.ns[not from_master]), dt=gap)
        self.unacked[from_master] = 0

    def replay(self, from_master: bool, apdu: bytes, gap: float = 0.01) -> None:
        """Send raw bytes as they are (an injected or replayed APDU: its N(S) is not ours)."""
        self.conv.send(from_master, apdu, dt=gap)


def _measurements(t: float) -> list[bytes]:
    """Eight feeder measurements drifting slowly (deterministic, no randomness)."""
    import math

    base = [412.0, 398.5, 405.2, 220.1, 10.52, 10.49, 10.51, 49.99]
    return [flt_q(v + (0.8 if i < 4 else 0.01) * math.sin(t / 17.0 + i)) for i, v in enumerate(base)]


def build_normal() -> list:
    from tools.pcapgen.common import T0, Clock, TcpConversation

    clock = Clock(T0)
    conv = TcpConversation("10.0.104.1", 50000, "10.0.104.10", 2404, clock).handshake()
    link = Link(conv)
    link.u(True, STARTDT_ACT)
    link.u(False, STARTDT_CON, gap=0.003)
    # Clock synchronisation by the master, at the capture's own time.
    link.i(True, clock_sync(ACT, clock.t + 0.01))
    link.i(False, clock_sync(ACTCON, clock.t + 0.01), gap=0.004)
    # General interrogation: activation, confirmation, the station image, termination.
    link.i(True, interrogation(ACT))
    link.i(False, interrogation(ACTCON), gap=0.004)
    link.i(False, sequence_objects(1, INROGEN, 1001, [siq(i % 3 == 0) for i in range(16)]), gap=0.003)
    link.i(False, single_objects(3, INROGEN, [(2001 + i, diq(2 if i != 3 else 1)) for i in range(4)]), gap=0.003)
    link.i(False, sequence_objects(13, INROGEN, 4001, _measurements(0.0)), gap=0.003)
    link.i(False, single_objects(11, INROGEN, [(5001, sva_q(7)), (5002, sva_q(65)), (5003, sva_q(58)),
                                               (5004, sva_q(-12, NT))]), gap=0.003)
    link.i(False, interrogation(ACTTERM), gap=0.003)
    link.s(True)
    # Counter interrogation (general, freeze without reset).
    link.i(True, counter_interrogation(ACT, qcc=0x45))
    link.i(False, counter_interrogation(ACTCON, qcc=0x45), gap=0.004)
    link.i(False, single_objects(15, REQCOGEN, [(9001, bcr(1_204_511, 1)), (9002, bcr(88_310, 1))]), gap=0.003)
    link.i(False, counter_interrogation(ACTTERM, qcc=0x45), gap=0.003)
    link.s(True)
    # Two minutes of operation: periodic measurements, spontaneous changes, keep-alives.
    start = clock.t
    for k in range(24):
        link.i(False, sequence_objects(13, PERIODIC, 4001, _measurements(5.0 * (k + 1))), gap=5.0)
        if k % 3 == 1:
            state = (k // 3) % 2
            link.i(False, single_objects(30, SPONT, [(1003, siq(state) + cp56(clock.t - 0.02))]), gap=0.8)
        if k % 4 == 2:
            link.i(False, single_objects(36, SPONT, [(4002, flt_q(415.5 + k) + cp56(clock.t - 0.01))]), gap=0.5)
        if k % 6 == 5:
            link.u(True, TESTFR_ACT, gap=0.3)
            link.u(False, TESTFR_CON, gap=0.002)
        if k % 8 == 7:
            link.s(True, gap=0.05)
    link.s(True, gap=0.05)
    assert clock.t - start > 100
    link.u(True, STOPDT_ACT, gap=1.0)
    link.u(False, STOPDT_CON, gap=0.003)
    conv.close()
    return list(conv.packets)


def build_attack() -> list:
    from tools.pcapgen.common import T0, Clock, TcpConversation

    clock = Clock(T0 + 3600.0)  # one hour after the normal capture starts
    conv = TcpConversation("10.0.104.66", 51000, "10.0.104.10", 2404, clock, isn_c=7000, isn_s=9000).handshake()
    link = Link(conv)
    link.u(True, STARTDT_ACT)
    link.u(False, STARTDT_CON, gap=0.003)
    # Clock synchronisation from a station that is not the master, to a time far in the past.
    link.i(True, clock_sync(ACT, epoch_of(2020, 1, 1, 0, 0, 0)))
    link.i(False, clock_sync(ACTCON, epoch_of(2020, 1, 1, 0, 0, 0)), gap=0.004)
    # Interrogation storm: 40 general interrogations in two seconds.
    for _ in range(40):
        link.i(True, interrogation(ACT), gap=0.05)
        link.i(False, interrogation(ACTCON), gap=0.002)
        link.i(False, sequence_objects(1, INROGEN, 1001, [siq(1), siq(0), siq(1), siq(1)]), gap=0.002)
        link.i(False, interrogation(ACTTERM), gap=0.002)
    link.s(True)
    # Single command, select then execute, on breaker 6001 (open it).
    link.i(True, command(45, ACT, 6001, sco(0, select=True)), gap=1.0)
    link.i(False, command(45, ACTCON, 6001, sco(0, select=True)), gap=0.01)
    execute = command(45, ACT, 6001, sco(0, select=False))
    replayed = apci_i(link.ns[True], link.ns[False], execute)
    link.i(True, execute, gap=0.2)
    link.i(False, command(45, ACTCON, 6001, sco(0)), gap=0.01)
    link.i(False, command(45, ACTTERM, 6001, sco(0)), gap=0.05)
    link.i(False, single_objects(30, SPONT, [(1001, siq(0) + cp56(clock.t))]), gap=0.01)
    # The same execute replayed (identical bytes, old N(S)): a duplicate on the wire.
    link.replay(True, replayed, gap=0.5)
    # Double command on disconnector 6002 (off), with a short pulse, select/execute.
    link.i(True, command(46, ACT, 6002, dco(1, select=True, qu=1)), gap=0.8)
    link.i(False, command(46, ACTCON, 6002, dco(1, select=True, qu=1)), gap=0.01)
    link.i(True, command(46, ACT, 6002, dco(1, qu=1)), gap=0.2)
    link.i(False, command(46, ACTCON, 6002, dco(1, qu=1)), gap=0.01)
    # A command to an address the RTU does not have: negative confirmation, cause "unknown IOA".
    link.i(True, command(46, ACT, 6099, dco(2)), gap=0.3)
    link.i(False, command(46, UNKNOWN_IOA, 6099, dco(2), pn=True), gap=0.01)
    # Set points: normalised, scaled, floating point.
    link.i(True, command(48, ACT, 7001, setpoint_nva(0.75)), gap=0.6)
    link.i(False, command(48, ACTCON, 7001, setpoint_nva(0.75)), gap=0.01)
    link.i(True, command(49, ACT, 7002, setpoint_sva(1500)), gap=0.4)
    link.i(False, command(49, ACTCON, 7002, setpoint_sva(1500)), gap=0.01)
    link.i(True, command(50, ACT, 7003, setpoint_flt(95.5)), gap=0.4)
    link.i(False, command(50, ACTCON, 7003, setpoint_flt(95.5)), gap=0.01)
    # Regulating step command: tap changer one step higher, twice.
    for _ in range(2):
        link.i(True, command(47, ACT, 8001, rco(2)), gap=0.5)
        link.i(False, command(47, ACTCON, 8001, rco(2)), gap=0.01)
        link.i(False, command(47, ACTTERM, 8001, rco(2)), gap=0.5)
    # Time-tagged single command (C_SC_TA_1): close breaker 6001 again.
    link.i(True, command(58, ACT, 6001, sco(1) + cp56(clock.t)), gap=0.7)
    link.i(False, command(58, ACTCON, 6001, sco(1) + cp56(clock.t)), gap=0.01)
    link.s(True)
    # Reset process command (general reset of the process): the RTU restarts its application.
    link.i(True, reset_process(ACT, qrp=1), gap=1.0)
    link.i(False, reset_process(ACTCON, qrp=1), gap=0.01)
    link.i(False, command(70, 4, 0, bytes((0x02,))), gap=2.0)  # M_EI_NA_1: end of init, remote reset
    link.s(True)
    conv.close()
    return list(conv.packets)


def main(directory: Path | None = None) -> list[Path]:
    from tools.pcapgen.common import check_and_print_sizes, write_normal_and_attack

    return check_and_print_sizes(write_normal_and_attack("iec104", build_normal, build_attack, directory))


if __name__ == "__main__":
    main()
