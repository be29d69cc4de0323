"""Crafted captures for the ML detector: a plant's normal polling and four attacks, with labels.

Run as ``python -m tools.pcapgen.ml_scenarios`` (``--out DIR`` to write elsewhere). Writes into
``pcaps/``:

- ``ml_normal.pcap``: 60 minutes of normal Modbus/TCP and DNP3 polling (training);
- ``ml_holdout.pcap``: the next 40 minutes of the same plant (normal; never trained on);
- ``ml_flood.pcap``: a Modbus read flood from an unknown host, later a DNP3 flood from a second
  connection that spoofs the SCADA front end's address;
- ``ml_slow_scan.pcap``: a slow sweep of the plant subnet, one Modbus SYN every ~9 s, with a device
  identification read on each host that answers;
- ``ml_rogue_writes.pcap``: a compromised field device (PLC-2) writing registers and coils of PLC-1;
- ``ml_rhythm.pcap``: the HMI's 2 s poll of PLC-1 turns irregular (1 s / 3 s alternation: the same
  mean rate, a different rhythm), as when a man in the middle holds and releases requests;
- ``ml_labels.json``: the attack time ranges (capture time) and the hosts or pairs they involve.

Each attack capture is 10 minutes of the same plant (its background traffic continues, generated with
its own seed) with the attack in the middle. Time runs on: the holdout follows the training capture
and the attack captures follow the holdout, so a time-ordered evaluation trains strictly on the past.

The plant (Modbus addresses are 0-based wire addresses)::

    10.20.1.10  HMI              polls PLC-1 every 2 s (FC3 @0 x10, FC1 @0 x16 every 5th cycle),
                                 PLC-2 every 3 s (FC4 @100 x8), writes the PLC-1 set point
                                 (FC6 @40) every 4-6 minutes
    10.20.1.20  SCADA front end  DNP3 master (address 1): class 1 poll every 5 s, integrity poll
                                 every 60 s; the RTU reports events unsolicited now and then
    10.20.1.30  historian        every 5 minutes a short session to PLC-2: 5 reads of FC3 @200 x20
    10.20.2.11  PLC-1 (unit 1)   10.20.2.12 PLC-2 (unit 1)   10.20.3.30 RTU (DNP3 address 10)
    10.20.9.66  attacker         10.20.9.77 scanner

Packets carry real TCP sequence numbers, handshakes where connections open, jittered timing and
response times; the generator is deterministic (seeded), so files are byte-identical on every run.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Callable

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from tools.pcapgen.common import PCAP_DIR, T0, mac_for, write_pcap
from tools.pcapgen.dnp3 import analog_inputs, app_request, app_response, binary_events, class_read, frames
from tools.pcapgen.modbus_rules import (
    device_id_req,
    device_id_resp,
    mbap,
    read_bits_resp,
    read_regs_resp,
    read_req,
    write_coil,
    write_register,
    write_registers,
    write_registers_resp,
)

HMI, FEP, HIST = "10.20.1.10", "10.20.1.20", "10.20.1.30"
PLC1, PLC2, RTU = "10.20.2.11", "10.20.2.12", "10.20.3.30"
ATTACKER, SCANNER = "10.20.9.66", "10.20.9.77"
MASTER_ADDR, RTU_ADDR = 1, 10

NORMAL_MIN = 60
HOLDOUT_MIN = 40
ATTACK_MIN = 10
T_HOLDOUT = T0 + NORMAL_MIN * 60
T_ATTACKS = T_HOLDOUT + HOLDOUT_MIN * 60 + 600  # ten quiet minutes (sensor restart) before the attacks


class Conv:
    """One TCP connection writing packets at absolute times (several conversations interleave)."""

    _ports = 40000

    def __init__(self, out: list[Packet], client: str, server: str, sport: int, rng: random.Random) -> None:
        Conv._ports += 1
        self.out = out
        self.client, self.server, self.cport, self.sport = client, server, Conv._ports, sport
        self.seq_c = rng.randrange(1 << 31)
        self.seq_s = rng.randrange(1 << 31)
        self.last = {True: 0.0, False: 0.0}  # a side never sends out of order: its times only increase

    def _pkt(self, from_client: bool, flags: str, payload: bytes, t: float) -> None:
        t = max(t, self.last[from_client] + 0.00005)
        self.last[from_client] = t
        if from_client:
            src, dst, sp, dp, seq, ack = self.client, self.server, self.cport, self.sport, self.seq_c, self.seq_s
        else:
            src, dst, sp, dp, seq, ack = self.server, self.client, self.sport, self.cport, self.seq_s, self.seq_c
        p = (
            Ether(src=mac_for(src), dst=mac_for(dst))
            / IP(src=src, dst=dst, ttl=64, id=0)
            / TCP(sport=sp, dport=dp, seq=seq, ack=ack if "A" in flags else 0, flags=flags, window=8192)
        )
        if payload:
            p = p / Raw(payload)
        p.time = t
        self.out.append(p)

    def open(self, t: float) -> float:
        self._pkt(True, "S", b"", t)
        self.seq_c = (self.seq_c + 1) & 0xFFFFFFFF
        self._pkt(False, "SA", b"", t + 0.0004)
        self.seq_s = (self.seq_s + 1) & 0xFFFFFFFF
        self._pkt(True, "A", b"", t + 0.0008)
        return t + 0.001

    def send(self, from_client: bool, payload: bytes, t: float) -> None:
        self._pkt(from_client, "PA", payload, t)
        if from_client:
            self.seq_c = (self.seq_c + len(payload)) & 0xFFFFFFFF
        else:
            self.seq_s = (self.seq_s + len(payload)) & 0xFFFFFFFF

    def close(self, t: float) -> None:
        self._pkt(True, "FA", b"", t)
        self.seq_c = (self.seq_c + 1) & 0xFFFFFFFF
        self._pkt(False, "FA", b"", t + 0.0004)
        self.seq_s = (self.seq_s + 1) & 0xFFFFFFFF
        self._pkt(True, "A", b"", t + 0.0008)


class ModbusClient:
    def __init__(self, conv: Conv, rng: random.Random, unit: int = 1) -> None:
        self.conv, self.rng, self.unit, self.tid = conv, rng, unit, rng.randrange(1000)

    def ask(self, pdu: bytes, answer: bytes | None, t: float, rtt: tuple[float, float] = (0.0015, 0.004)) -> None:
        self.tid = (self.tid + 1) & 0xFFFF
        self.conv.send(True, mbap(self.tid, self.unit, pdu), t)
        if answer is not None:
            self.conv.send(False, mbap(self.tid, self.unit, answer), t + self.rng.uniform(*rtt))


class Dnp3Master:
    def __init__(self, conv: Conv, rng: random.Random) -> None:
        self.conv, self.rng = conv, rng
        self.aseq = self.tseq_m = self.tseq_o = self.useq = 0

    def poll(self, objects: bytes, answer: bytes, t: float, iin: int = 0) -> None:
        seq = self.aseq
        self.aseq = (self.aseq + 1) & 0x0F
        self.conv.send(True, frames(RTU_ADDR, MASTER_ADDR, app_request(1, seq, objects), self.tseq_m, True), t)
        self.tseq_m = (self.tseq_m + 1) & 0x3F
        frag = app_response(129, seq, iin, answer)
        self.conv.send(
            False, frames(MASTER_ADDR, RTU_ADDR, frag, self.tseq_o, False), t + self.rng.uniform(0.004, 0.012)
        )
        self.tseq_o = (self.tseq_o + 1) & 0x3F

    def request(self, fc: int, objects: bytes, t: float, answer: bytes | None = b"") -> None:
        seq = self.aseq
        self.aseq = (self.aseq + 1) & 0x0F
        self.conv.send(True, frames(RTU_ADDR, MASTER_ADDR, app_request(fc, seq, objects), self.tseq_m, True), t)
        self.tseq_m = (self.tseq_m + 1) & 0x3F
        if answer is not None:
            frag = app_response(129, seq, 0, answer)
            self.conv.send(
                False, frames(MASTER_ADDR, RTU_ADDR, frag, self.tseq_o, False), t + self.rng.uniform(0.004, 0.012)
            )
            self.tseq_o = (self.tseq_o + 1) & 0x3F

    def unsolicited(self, objects: bytes, t: float) -> None:
        seq = self.useq
        self.useq = (self.useq + 1) & 0x0F
        frag = app_response(130, seq, 0x0200, objects, con=True, uns=True)
        self.conv.send(False, frames(MASTER_ADDR, RTU_ADDR, frag, self.tseq_o, False), t)
        self.tseq_o = (self.tseq_o + 1) & 0x3F
        confirm = bytes((0xD0 | seq, 0))  # FIR FIN UNS + seq, function 0 (confirm)
        self.conv.send(
            True, frames(RTU_ADDR, MASTER_ADDR, confirm, self.tseq_m, True), t + self.rng.uniform(0.005, 0.02)
        )
        self.tseq_m = (self.tseq_m + 1) & 0x3F


# -- the plant's normal traffic ----------------------------------------------------------------------


def _regs(t: float, base: int, n: int, rng: random.Random) -> list[int]:
    """Process values drifting slowly (a level, a temperature): realistic response payloads."""
    return [(base + int(50 * ((t / 300.0 + i) % 7)) + rng.randrange(3)) & 0xFFFF for i in range(n)]


def plant(
    out: list[Packet],
    t0: float,
    t1: float,
    seed: int,
    handshake: bool,
    hmi_plc1_period: Callable[[float, int], float] | None = None,
) -> None:
    """Normal traffic between ``t0`` and ``t1``. ``hmi_plc1_period(t, cycle)`` overrides the HMI's
    2 s poll period of PLC-1 (the rhythm scenario)."""

    def rng_for(name: str) -> random.Random:
        return random.Random(f"{seed}-{name}")

    # HMI -> PLC-1: FC3 every 2 s, FC1 every 5th cycle, a set point write every 4-6 minutes.
    r = rng_for("plc1")
    c = Conv(out, HMI, PLC1, 502, r)
    m = ModbusClient(c, r)
    t = c.open(t0 + r.uniform(0, 0.5)) if handshake else t0 + r.uniform(0, 0.5)
    next_write = t + r.uniform(240, 360)
    cycle = 0
    while t < t1:
        m.ask(read_req(3, 0, 10), read_regs_resp(3, _regs(t, 1000, 10, r)), t)
        if cycle % 5 == 0:
            m.ask(read_req(1, 0, 16), read_bits_resp(1, [bool((t // 60 + i) % 3) for i in range(16)]), t + 0.05)
        if t >= next_write:
            value = 500 + r.randrange(200)
            m.ask(write_register(40, value), write_register(40, value), t + 0.1)
            next_write = t + r.uniform(240, 360)
        period = hmi_plc1_period(t, cycle) if hmi_plc1_period else 2.0
        t += period + r.gauss(0, 0.01)
        cycle += 1

    # HMI -> PLC-2: FC4 every 3 s.
    r = rng_for("plc2")
    c = Conv(out, HMI, PLC2, 502, r)
    m = ModbusClient(c, r)
    t = c.open(t0 + r.uniform(0, 1)) if handshake else t0 + r.uniform(0, 1)
    while t < t1:
        m.ask(read_req(4, 100, 8), read_regs_resp(4, _regs(t, 200, 8, r)), t, rtt=(0.002, 0.006))
        t += 3.0 + r.gauss(0, 0.01)

    # SCADA front end -> RTU over DNP3: class 1 every 5 s, integrity every 60 s, unsolicited events.
    r = rng_for("rtu")
    c = Conv(out, FEP, RTU, 20000, r)
    d = Dnp3Master(c, r)
    t = c.open(t0 + r.uniform(0, 2)) if handshake else t0 + r.uniform(0, 2)
    cycle = 0
    next_uns = t + r.expovariate(1 / 90.0)
    ms = int(t * 1000)
    while t < t1:
        if cycle % 12 == 0:
            d.poll(class_read(1, 2, 3, 0), analog_inputs(0, _regs(t, 3000, 16, r)), t)
        elif r.random() < 0.2:
            d.poll(class_read(1), binary_events([(r.randrange(8), r.randrange(2), ms)]), t, iin=0x0200)
        else:
            d.poll(class_read(1), b"", t)
        if t >= next_uns:
            d.unsolicited(binary_events([(r.randrange(8), r.randrange(2), ms)]), t + r.uniform(0.5, 4.0))
            next_uns = t + r.expovariate(1 / 90.0)
        t += 5.0 + r.gauss(0, 0.02)
        ms = int(t * 1000)
        cycle += 1

    # Historian: a short session to PLC-2 every 5 minutes.
    r = rng_for("hist")
    t = t0 + r.uniform(20, 120)
    while t + 60 < t1:
        c = Conv(out, HIST, PLC2, 502, r)
        m = ModbusClient(c, r)
        s = c.open(t)
        for _ in range(5):
            m.ask(read_req(3, 200, 20), read_regs_resp(3, _regs(s, 40, 20, r)), s, rtt=(0.002, 0.006))
            s += 10.0 + r.gauss(0, 0.05)
        c.close(s)
        t += 300.0 + r.gauss(0, 2.0)


# -- attacks -----------------------------------------------------------------------------------------


def flood(out: list[Packet], t_modbus: float, t_dnp3: float, seed: int) -> list[dict]:
    """A Modbus read flood from an unknown host (45 s, ~40 requests/s, answered), then a DNP3 flood of
    integrity polls from a new connection using the SCADA front end's address (30 s, ~40/s)."""
    r = random.Random(f"{seed}-flood")
    c = Conv(out, ATTACKER, PLC1, 502, r)
    m = ModbusClient(c, r)
    t = c.open(t_modbus)
    end = t_modbus + 45
    while t < end:
        addr = r.randrange(0, 100)
        m.ask(read_req(3, addr, 20), read_regs_resp(3, _regs(t, 1000, 20, r)), t, rtt=(0.002, 0.02))
        t += r.uniform(0.015, 0.035)
    c.close(t + 0.1)
    c = Conv(out, FEP, RTU, 20000, r)
    d = Dnp3Master(c, r)
    t = c.open(t_dnp3)
    end2 = t_dnp3 + 30
    while t < end2:
        d.poll(class_read(1, 2, 3, 0), analog_inputs(0, _regs(t, 3000, 16, r)), t)
        t += r.uniform(0.015, 0.035)
    c.close(t + 0.1)
    return [
        {"id": "modbus-flood", "kind": "flood", "start": t_modbus, "end": end + 0.2, "hosts": [ATTACKER],
         "technique": "T0814", "description": "Modbus FC3 read flood, ~40 requests/s for 45 s, from an unknown host"},
        {"id": "dnp3-flood", "kind": "flood", "start": t_dnp3, "end": end2 + 0.2, "pairs": [[FEP, RTU]],
         "technique": "T0814", "description": "DNP3 integrity-poll flood, ~40/s for 30 s, spoofing the front end"},
    ]  # fmt: skip


def slow_scan(out: list[Packet], t_start: float, seed: int) -> list[dict]:
    """One SYN to port 502 every ~9 s across 10.20.2.1-60; hosts that answer get a device id read."""
    r = random.Random(f"{seed}-scan")
    t = t_start
    live = {PLC1, PLC2}
    sport = 51000
    for host in range(1, 61):
        ip = f"10.20.2.{host}"
        sport += 1
        syn = (
            Ether(src=mac_for(SCANNER), dst=mac_for(ip))
            / IP(src=SCANNER, dst=ip, ttl=64, id=0)
            / TCP(sport=sport, dport=502, seq=r.randrange(1 << 31), flags="S", window=1024)
        )
        syn.time = t
        out.append(syn)
        if ip in live:
            c = Conv(out, SCANNER, ip, 502, r)
            c.cport = sport
            # the handshake of the SYN above, then the identification read, then close
            c.seq_c = (int(syn[TCP].seq) + 1) & 0xFFFFFFFF
            c._pkt(False, "SA", b"", t + 0.0004)
            c.seq_s = (c.seq_s + 1) & 0xFFFFFFFF
            c._pkt(True, "A", b"", t + 0.0008)
            m = ModbusClient(c, r)
            m.ask(device_id_req(1), device_id_resp({0: "Schneider", 1: "M340", 2: "v3.2"}), t + 0.01)
            c.close(t + 0.1)
        t += r.uniform(8.0, 10.0)
    return [{"id": "slow-scan", "kind": "scan", "start": t_start, "end": t + 0.2, "hosts": [SCANNER],
             "technique": "T0846", "description": "one Modbus SYN every ~9 s over 60 addresses, device id read on the 2 that answer"}]  # fmt: skip


def rogue_writes(out: list[Packet], t_start: float, seed: int) -> list[dict]:
    """PLC-2, a field device that only ever answers, opens a connection to PLC-1 and writes."""
    r = random.Random(f"{seed}-rogue")
    c = Conv(out, PLC2, PLC1, 502, r)
    m = ModbusClient(c, r)
    t = c.open(t_start)
    end = t_start + 120
    i = 0
    while t < end:
        if i % 3 == 2:
            m.ask(write_coil(i % 8, bool(i & 1)), write_coil(i % 8, bool(i & 1)), t)
        else:
            vals = [r.randrange(0, 65535) for _ in range(4)]
            m.ask(write_registers(40 + 4 * (i % 5), vals), write_registers_resp(40 + 4 * (i % 5), 4), t)
        t += r.uniform(2.5, 3.5)
        i += 1
    c.close(t)
    return [{"id": "rogue-writes", "kind": "writes", "start": t_start, "end": t + 0.1, "pairs": [[PLC2, PLC1]],
             "technique": "T0836", "description": "PLC-2 writes PLC-1 registers (FC16) and coils (FC5) every ~3 s for 2 min"}]  # fmt: skip


# -- captures ------------------------------------------------------------------------------------------


def build(out_dir: Path = PCAP_DIR) -> list[Path]:
    Conv._ports = 40000
    written: list[Path] = []
    labels: dict[str, list[dict]] = {}

    # Normal + holdout: one 100-minute stream, cut in two files at 60 minutes.
    pkts: list[Packet] = []
    plant(pkts, T0, T_HOLDOUT + HOLDOUT_MIN * 60, seed=1, handshake=True)
    train = [p for p in pkts if float(p.time) < T_HOLDOUT]
    hold = [p for p in pkts if float(p.time) >= T_HOLDOUT]
    written.append(write_pcap("ml_normal.pcap", train, out_dir))
    written.append(write_pcap("ml_holdout.pcap", hold, out_dir))

    span = ATTACK_MIN * 60
    starts = {
        name: T_ATTACKS + i * (span + 60) for i, name in enumerate(("flood", "slow_scan", "rogue_writes", "rhythm"))
    }

    t = starts["flood"]
    pkts = []
    plant(pkts, t, t + span, seed=11, handshake=False)
    labels["ml_flood.pcap"] = flood(pkts, t + 200, t + 400, seed=11)
    written.append(write_pcap("ml_flood.pcap", pkts, out_dir))

    t = starts["slow_scan"]
    pkts = []
    plant(pkts, t, t + span, seed=12, handshake=False)
    labels["ml_slow_scan.pcap"] = slow_scan(pkts, t + 30, seed=12)
    written.append(write_pcap("ml_slow_scan.pcap", pkts, out_dir))

    t = starts["rogue_writes"]
    pkts = []
    plant(pkts, t, t + span, seed=13, handshake=False)
    labels["ml_rogue_writes.pcap"] = rogue_writes(pkts, t + 240, seed=13)
    written.append(write_pcap("ml_rogue_writes.pcap", pkts, out_dir))

    t = starts["rhythm"]
    a0, a1 = t + 240, t + 480

    def rhythm(now: float, cycle: int) -> float:
        return (1.0 if cycle % 2 else 3.0) if a0 <= now < a1 else 2.0

    pkts = []
    plant(pkts, t, t + span, seed=14, handshake=False, hmi_plc1_period=rhythm)
    labels["ml_rhythm.pcap"] = [{"id": "polling-rhythm", "kind": "timing", "start": a0, "end": a1,
                                 "pairs": [[HMI, PLC1]], "technique": "T0830",
                                 "description": "HMI->PLC-1 poll period 2 s turns into 1 s / 3 s alternation (same mean rate) for 4 min"}]  # fmt: skip
    written.append(write_pcap("ml_rhythm.pcap", pkts, out_dir))

    doc = {
        "description": "Attack time ranges (capture time, seconds since the epoch) of the crafted ML "
        "scenarios; written by tools/pcapgen/ml_scenarios.py. An event belongs to an attack when its time "
        "is in [start, end] and it involves one of 'hosts' (source or destination) or is between one of "
        "'pairs'.",
        "train": ["ml_normal.pcap"],
        "test": ["ml_holdout.pcap", "ml_flood.pcap", "ml_slow_scan.pcap", "ml_rogue_writes.pcap", "ml_rhythm.pcap"],
        "captures": {"ml_normal.pcap": [], "ml_holdout.pcap": [], **labels},
    }
    side = out_dir / "ml_labels.json"
    side.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    written.append(side)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PCAP_DIR, help="output folder (default: pcaps/)")
    args = parser.parse_args(argv)
    total = 0
    for path in build(args.out):
        size = path.stat().st_size
        total += size
        print(f"{path} ({size:,} bytes)")
    print(f"total {total:,} bytes")
    assert total < 5_000_000, "the ML captures must stay under 5 MB in total"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
