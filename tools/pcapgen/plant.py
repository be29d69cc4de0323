"""A small crafted plant for the learn-then-protect baseline: two normal captures and an attack one.

Run as ``python -m tools.pcapgen.plant`` (``--out DIR`` to write elsewhere). Writes
``pcaps/plant_normal_1.pcap`` (learn on it), ``pcaps/plant_normal_2.pcap`` (the same plant another
day: must raise nothing) and ``pcaps/plant_attack.pcap`` (the same plant with planted deviations).
Deterministic: a seeded PRNG for jitter and values, a fixed clock; the files are byte-identical on
every run. Modbus bytes come from tools/pcapgen/modbus_rules.py, IEC 104 bytes from
tools/pcapgen/iec104.py (pure builders); scapy only wraps them (tools/pcapgen/common.py).

The plant (MACs carry real vendor OUIs so the asset inventory has vendors to show)::

    10.20.1.10  HMI / SCADA             Intel          Modbus master of the PLCs, IEC 104 master of the RTU
    10.20.1.20  engineering station     VMware         identifies the PLCs (43/14), UMAS to PLC-1
    10.20.2.11  PLC-1 (unit 1)          Telemecanique  FC3 @0+10 every 1 s, FC1 @0+16 every 2 s, FC6 @100 set points
    10.20.2.12  PLC-2 (unit 1)          Rockwell       FC4 @100+4 every 0.5 s, FC16 @200+2 now and then
    10.20.2.13  PLC-3 (unit 1)          Siemens        FC3 @0+20 every 1 s
    10.20.3.40  RTU (common address 1)  SEL            M_ME_NC_1 IOA 4001-4004 every 2 s (cyclic), set point IOA 7001
    10.20.1.66  (attack only)           Raspberry Pi   the new asset

Polls have a few milliseconds of jitter (a fixed-rate scheduler: each request at k * period + noise).

Planted deviations in ``plant_attack.pcap`` (time from the capture start; each must raise exactly one
baseline alert, listed in ``PLANTED``):

- 20 s: new asset 10.20.1.66 reads PLC-3 (twice);
- 30 s: new talker pair: the engineering station opens IEC 104 to the RTU (known assets, never talked);
- 45 s: new protocol between known assets: the HMI sends Modbus to the RTU (they only spoke IEC 104);
- 60 s: new function: the HMI writes multiple coils (FC15) on PLC-1;
- 75 s: write outside the learned ranges: FC6 to PLC-1 address 150 (only 100 was written), value 25;
- 90 s: value outside the learned range: FC6 to PLC-1 address 100 with 9999 (learned 20-30);
- 100 s: the HMI's coil poll of PLC-1 (FC1, every 2 s) stops for good;
- 120 s: the HMI's poll of PLC-3 (FC3, every 1 s) speeds up to every 0.25 s;
- 142 s: IEC 104: the RTU's cyclic report skips two N(S) numbers (I-frames missing).
"""

from __future__ import annotations

import argparse
import random
import struct
from collections.abc import Callable
from pathlib import Path

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from tools.pcapgen import iec104 as i104
from tools.pcapgen.common import PCAP_DIR, T0, Clock, TcpConversation, write_pcap
from tools.pcapgen.modbus_rules import (
    device_id_req,
    device_id_resp,
    exception,
    mbap,
    read_bits_resp,
    read_regs_resp,
    read_req,
    umas,
    umas_ok,
    write_register,
    write_registers,
    write_registers_resp,
)

HMI = "10.20.1.10"
EWS = "10.20.1.20"
PLC1 = "10.20.2.11"
PLC2 = "10.20.2.12"
PLC3 = "10.20.2.13"
RTU = "10.20.3.40"
ATTACKER = "10.20.1.66"
MACS = {
    HMI: "00:1b:21:14:01:0a",  # Intel Corporate
    EWS: "00:0c:29:14:01:14",  # VMware, Inc.
    PLC1: "00:80:f4:14:02:0b",  # TELEMECANIQUE ELECTRIQUE (Schneider)
    PLC2: "00:1d:9c:14:02:0c",  # Rockwell Automation
    PLC3: "00:0e:8c:14:02:0d",  # Siemens AG
    RTU: "00:30:a7:14:03:28",  # SCHWEITZER ENGINEERING
    ATTACKER: "b8:27:eb:14:01:42",  # Raspberry Pi Foundation
}
IDENTITIES = {
    PLC1: {0: "Schneider Electric", 1: "BMX P34 2020", 2: "v3.20"},
    PLC2: {0: "Rockwell Automation", 1: "Micro850 2080-LC50", 2: "12.011"},
    PLC3: {0: "Siemens", 1: "S7-1200 CPU 1214C", 2: "V4.4"},
}
SETPOINTS = (20, 22, 25, 28, 30)  # FC6 @100 on PLC-1: every value used, so a second capture stays in range
RTU_SETPOINTS = (48.0, 50.0, 52.0)  # C_SE_NC_1 IOA 7001

# rule id -> how many times the attack capture must raise it (and the normal ones: none at all)
PLANTED = {
    "baseline-new-asset": 1,
    "baseline-new-talker": 1,
    "baseline-new-protocol": 1,
    "baseline-new-function": 1,
    "baseline-write-out-of-range": 1,
    "baseline-value-out-of-range": 1,
    "baseline-poll-stopped": 1,
    "baseline-poll-faster": 1,
    "baseline-sequence-anomaly": 1,
}


class Plant:
    """One capture of the plant: a time-ordered schedule of actions on long-lived connections."""

    def __init__(self, seed: int, start: float) -> None:
        self.rng = random.Random(seed)
        self.start = start
        self.actions: list[tuple[float, int, Callable[[float], None]]] = []
        self.convs: list[TcpConversation] = []
        self._n = 0
        self._port = 49200 + seed * 100

    # -- plumbing -------------------------------------------------------------------------------------
    def at(self, t: float, fn: Callable[[float], None]) -> None:
        self._n += 1
        self.actions.append((self.start + t, self._n, fn))

    def conv(self, client: str, server: str, port: int, t: float) -> TcpConversation:
        self._port += 1
        c = TcpConversation(
            client,
            self._port,
            server,
            port,
            Clock(self.start + t),
            isn_c=10_000 * self._port % 2**31,
            isn_s=77_000 + self._port,
        )
        c.handshake()
        self.convs.append(c)
        return c

    def jitter(self) -> float:
        return max(-0.03, min(0.03, self.rng.gauss(0.0, 0.008)))

    def every(self, period: float, t0: float, t1: float, fn: Callable[[float], None]) -> None:
        """Fixed-rate schedule with jitter: k * period + noise, between t0 and t1."""
        k = 0
        while True:
            t = t0 + k * period
            if t >= t1:
                break
            self.at(max(t0, t + self.jitter()), fn)
            k += 1

    def packets(self) -> list[Packet]:
        for ts, _, fn in sorted(self.actions, key=lambda a: (a[0], a[1])):
            fn(ts)
        out: list[Packet] = []
        for c in self.convs:
            out.extend(c.packets)
        for p in out:  # the plant's own MACs (vendor OUIs), not the helpers' locally administered ones
            ip = p[IP]
            p[Ether].src = MACS.get(ip.src, p[Ether].src)
            p[Ether].dst = MACS.get(ip.dst, p[Ether].dst)
        return out


class ModbusClient:
    def __init__(self, plant: Plant, client: str, server: str, t: float, unit: int = 1) -> None:
        self.c = plant.conv(client, server, 502, t)
        self.unit = unit
        self.tid = 0

    def ask(self, ts: float, request: bytes, response: bytes | None) -> None:
        self.tid = (self.tid + 1) & 0xFFFF
        self.c.clock.t = max(self.c.clock.t, ts)
        self.c.exchange(
            mbap(self.tid, self.unit, request),
            mbap(self.tid, self.unit, response) if response else None,
            gap=0.0,
            rtt=0.0021,
        )


class Iec104Client:
    """The HMI's (or another station's) IEC 104 connection to the RTU, numbered like a real link."""

    def __init__(self, plant: Plant, client: str, t: float) -> None:
        self.c = plant.conv(client, RTU, 2404, t)
        self.link = i104.Link(self.c, w=4)

    def now(self, ts: float) -> None:
        self.c.clock.t = max(self.c.clock.t, ts)

    def start(self, ts: float) -> None:
        self.now(ts)
        self.link.u(True, i104.STARTDT_ACT, gap=0.0)
        self.link.u(False, i104.STARTDT_CON, gap=0.003)
        self.link.i(True, i104.interrogation(i104.ACT), gap=0.01)
        self.link.i(False, i104.interrogation(i104.ACTCON), gap=0.003)
        self.link.i(False, i104.single_objects(13, i104.INROGEN, _measures(ts)), gap=0.002)
        self.link.i(False, i104.interrogation(i104.ACTTERM), gap=0.002)

    def cyclic(self, ts: float, skip: int = 0) -> None:
        self.now(ts)
        self.link.ns[False] = (self.link.ns[False] + skip) % 32768
        self.link.i(False, i104.single_objects(13, i104.PERIODIC, _measures(ts)), gap=0.0)

    def setpoint(self, ts: float, value: float) -> None:
        self.now(ts)
        self.link.i(True, i104.command(50, i104.ACT, 7001, i104.setpoint_flt(value)), gap=0.0)
        self.link.i(False, i104.command(50, i104.ACTCON, 7001, i104.setpoint_flt(value)), gap=0.004)
        self.link.i(False, i104.command(50, i104.ACTTERM, 7001, i104.setpoint_flt(value)), gap=0.05)

    def testfr(self, ts: float) -> None:
        self.now(ts)
        self.link.u(True, i104.TESTFR_ACT, gap=0.0)
        self.link.u(False, i104.TESTFR_CON, gap=0.002)


def _measures(ts: float) -> list[tuple[int, bytes]]:
    k = int(ts) % 60
    return [
        (4001, i104.flt_q(412.0 + (k % 7) * 0.5)),
        (4002, i104.flt_q(398.5 + (k % 5) * 0.4)),
        (4003, i104.flt_q(10.5 + (k % 3) * 0.01)),
        (4004, i104.flt_q(49.99 + (k % 2) * 0.01)),
    ]


def _regs(rng: random.Random, n: int, base: int) -> list[int]:
    return [base + rng.randrange(0, 50) for _ in range(n)]


def build(seed: int, start: float, seconds: float, attack: bool = False) -> list[Packet]:
    """One capture of the plant; ``attack`` plants the deviations listed in the module docstring."""
    p = Plant(seed, start)
    rng = p.rng
    plc1 = ModbusClient(p, HMI, PLC1, 0.0)
    plc2 = ModbusClient(p, HMI, PLC2, 0.01)
    plc3 = ModbusClient(p, HMI, PLC3, 0.02)
    rtu = Iec104Client(p, HMI, 0.03)
    ews = {plc: ModbusClient(p, EWS, plc, 0.5 + i * 0.1) for i, plc in enumerate((PLC1, PLC2, PLC3))}

    p.at(0.2, rtu.start)
    # engineering station: identify every PLC, then a UMAS session on PLC-1
    for i, plc in enumerate((PLC1, PLC2, PLC3)):
        ident = IDENTITIES[plc]
        p.at(1.0 + i * 0.3, lambda ts, c=ews[plc], ident=ident: c.ask(ts, device_id_req(1), device_id_resp(ident)))
    p.at(2.5, lambda ts: ews[PLC1].ask(ts, umas(0x00, 0x02), umas_ok(0x00, b"\x01\x02")))  # read_id
    p.at(2.8, lambda ts: ews[PLC1].ask(ts, umas(0x00, 0x04), umas_ok(0x00, b"\x00" * 8)))  # read_plc_info

    stop_coils = 100.0 if attack else seconds
    fast_from = 120.0 if attack else seconds
    p.every(1.0, 3.0, seconds, lambda ts: plc1.ask(ts, read_req(3, 0, 10), read_regs_resp(3, _regs(rng, 10, 100))))
    p.every(
        2.0,
        3.3,
        stop_coils,
        lambda ts: plc1.ask(ts, read_req(1, 0, 16), read_bits_resp(1, [rng.random() < 0.5 for _ in range(16)])),
    )
    p.every(0.5, 3.1, seconds, lambda ts: plc2.ask(ts, read_req(4, 100, 4), read_regs_resp(4, _regs(rng, 4, 2000))))
    p.every(1.0, 3.2, fast_from, lambda ts: plc3.ask(ts, read_req(3, 0, 20), read_regs_resp(3, _regs(rng, 20, 500))))
    if attack:
        p.every(
            0.25,
            fast_from + 0.2,
            seconds,
            lambda ts: plc3.ask(ts, read_req(3, 0, 20), read_regs_resp(3, _regs(rng, 20, 500))),
        )
    # RTU: cyclic measurements every 2 s, TESTFR every 15 s, a set point now and then
    gap_at = 142.0 if attack else -1.0
    k = 0
    while 4.0 + 2.0 * k < seconds:
        t = 4.0 + 2.0 * k
        skip = 2 if abs(t - gap_at) < 0.5 else 0
        p.at(t + p.jitter(), lambda ts, skip=skip: rtu.cyclic(ts, skip))
        k += 1
    p.every(15.0, 10.5, seconds, rtu.testfr)
    # irregular writes (not periodic: learned as functions, ranges and values only)
    t = 7.0
    i = 0
    while t < seconds - 5:
        v = SETPOINTS[i % len(SETPOINTS)]
        p.at(t, lambda ts, v=v: plc1.ask(ts, write_register(100, v), write_register(100, v)))
        if i % 2 == 0:
            vals = [1000 + 50 * (i % 3), i % 2]
            p.at(t + 3.3, lambda ts, vals=vals: plc2.ask(ts, write_registers(200, vals), write_registers_resp(200, 2)))
        if i % 3 == 1:
            sp = RTU_SETPOINTS[(i // 3) % len(RTU_SETPOINTS)]
            p.at(t + 5.1, lambda ts, sp=sp: rtu.setpoint(ts, sp))
        t += 6.0 + 22.0 * rng.random()
        i += 1

    if attack:
        _plant_attacks(p, plc1)
    return p.packets()


def _plant_attacks(p: Plant, plc1: ModbusClient) -> None:
    # 20 s: a host never seen reads PLC-3
    intruder = ModbusClient(p, ATTACKER, PLC3, 19.5)
    p.at(20.05, lambda ts: intruder.ask(ts, read_req(3, 0, 20), read_regs_resp(3, [0] * 20)))
    p.at(21.05, lambda ts: intruder.ask(ts, read_req(3, 0, 20), read_regs_resp(3, [0] * 20)))
    # 30 s: the engineering station (known) talks IEC 104 to the RTU (known): a new talker pair
    rogue = Iec104Client(p, EWS, 29.5)
    p.at(30.05, rogue.start)
    # 45 s: the HMI sends Modbus to the RTU (they only ever spoke IEC 104); the RTU answers "illegal function"
    hmi_rtu = p.conv(HMI, RTU, 502, 44.5)
    p.at(
        45.05,
        lambda ts: (
            setattr(hmi_rtu.clock, "t", ts),
            hmi_rtu.exchange(mbap(1, 1, read_req(3, 0, 8)), mbap(1, 1, exception(3, 1)), gap=0.0),
        ),
    )
    # 60 s: a function the HMI never used on PLC-1: write multiple coils (FC15 @0+4)
    fc15 = struct.pack("!BHHBB", 15, 0, 4, 1, 0x0F)
    p.at(60.05, lambda ts: plc1.ask(ts, fc15, struct.pack("!BHH", 15, 0, 4)))
    # 75 s: a write to an address never written (150), with a value inside the learned range
    p.at(75.05, lambda ts: plc1.ask(ts, write_register(150, 25), write_register(150, 25)))
    # 90 s: the learned set point register, with a value far outside 20-30
    p.at(90.05, lambda ts: plc1.ask(ts, write_register(100, 9999), write_register(100, 9999)))


CAPTURES = {
    "plant_normal_1.pcap": {"seed": 1, "start": T0 + 86_400.0, "seconds": 240.0},
    "plant_normal_2.pcap": {"seed": 2, "start": T0 + 2 * 86_400.0, "seconds": 180.0},
    "plant_attack.pcap": {"seed": 3, "start": T0 + 3 * 86_400.0, "seconds": 180.0, "attack": True},
}


def main(directory: Path | None = None) -> list[Path]:
    out = []
    for name, kw in CAPTURES.items():
        out.append(write_pcap(name, build(**kw), directory or PCAP_DIR))  # type: ignore[arg-type]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write the crafted plant captures (baseline learning and protect).")
    ap.add_argument("--out", type=Path, help="directory (default: pcaps/)")
    args = ap.parse_args()
    for path in main(args.out):
        print(f"{path} ({path.stat().st_size} bytes)")
