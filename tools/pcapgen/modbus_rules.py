"""Crafted captures for the default rule set: one ``pcaps/rule_<rule-id>.pcap`` per rule in
rules/modbus.yaml and rules/network.yaml where that rule fires, and ``pcaps/modbus_normal.pcap``
(normal polling by the allowed masters) where no rule fires at all.

Run as ``python -m tools.pcapgen.modbus_rules`` (``--out DIR`` to write elsewhere). The Modbus bytes
are built by hand below (MBAP + PDU with ``struct``, MODBUS Application Protocol V1.1b3; UMAS after
the Kaspersky ICS CERT write-up); scapy only wraps them in Ethernet/IP/TCP with real handshakes
(tools/pcapgen/common.py). Everything is deterministic: the files are byte-identical on every run.

The demo plant (rules/lists/default.yaml names the same hosts)::

    10.10.1.10  SCADA / HMI                 allowed_masters
    10.10.1.20  engineering workstation     allowed_masters, engineering_workstations
    10.10.1.77  an office PC (no role)
    10.10.2.11  PLC-1 (unit 1)              critical_assets
    10.10.2.12  PLC-2 (unit 1)
    10.10.2.30  Modbus gateway (serial units 1-8 behind it)
    10.10.9.66  the attacker

Addresses in the requests are 0-based wire addresses.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from tools.pcapgen.common import PCAP_DIR, T0, Clock, TcpConversation, mac_for, rule_captures_cli, write_pcap

HMI = "10.10.1.10"
EWS = "10.10.1.20"
OFFICE = "10.10.1.77"
PLC1 = "10.10.2.11"
PLC2 = "10.10.2.12"
GATEWAY = "10.10.2.30"
ATTACKER = "10.10.9.66"

# --------------------------------------------------------------------------------------------------
# Modbus bytes (pure functions, reused by tests)
# --------------------------------------------------------------------------------------------------


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header (transaction id, protocol 0, length = unit + PDU) + PDU (Messaging on TCP/IP, 3.1.3)."""
    return struct.pack("!HHHB", tid & 0xFFFF, 0, len(pdu) + 1, unit) + pdu


def read_req(fc: int, address: int, quantity: int) -> bytes:
    """FC 1-4 request: address, quantity (6.1-6.4)."""
    return struct.pack("!BHH", fc, address, quantity)


def read_regs_resp(fc: int, values: Iterable[int]) -> bytes:
    vals = list(values)
    return struct.pack(f"!BB{len(vals)}H", fc, 2 * len(vals), *vals)


def read_bits_resp(fc: int, bits: Iterable[bool]) -> bytes:
    bits = list(bits)
    data = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            data[i // 8] |= 1 << (i % 8)
    return struct.pack("!BB", fc, len(data)) + bytes(data)


def write_coil(address: int, on: bool) -> bytes:
    """FC 5: 0xFF00 on, 0x0000 off (6.5); the response echoes the request."""
    return struct.pack("!BHH", 5, address, 0xFF00 if on else 0x0000)


def write_register(address: int, value: int) -> bytes:
    """FC 6 (6.6); the response echoes the request."""
    return struct.pack("!BHH", 6, address, value)


def write_registers(address: int, values: Iterable[int]) -> bytes:
    """FC 16 (6.12)."""
    vals = list(values)
    return struct.pack(f"!BHHB{len(vals)}H", 16, address, len(vals), 2 * len(vals), *vals)


def write_registers_resp(address: int, quantity: int) -> bytes:
    return struct.pack("!BHH", 16, address, quantity)


def diagnostics(sub: int, data: int = 0) -> bytes:
    """FC 8 with a sub-function and one data word (6.8); the normal response echoes it."""
    return struct.pack("!BHH", 8, sub, data)


def exception(fc: int, code: int) -> bytes:
    """Exception response: function | 0x80, exception code (7)."""
    return struct.pack("!BB", fc | 0x80, code)


def device_id_req(code: int = 1, object_id: int = 0) -> bytes:
    """FC 43 / MEI 14 Read Device Identification (6.21)."""
    return struct.pack("!BBBB", 43, 14, code, object_id)


def device_id_resp(objects: dict[int, str], code: int = 1) -> bytes:
    body = b"".join(struct.pack("!BB", oid, len(v)) + v.encode() for oid, v in objects.items())
    return struct.pack("!BBBBBBB", 43, 14, code, 0x01, 0x00, 0x00, len(objects)) + body


def umas(session: int, func: int, data: bytes = b"") -> bytes:
    """FC 90 (0x5A) Schneider UMAS: session key, UMAS function, data."""
    return struct.pack("!BBB", 90, session, func) + data


def umas_ok(session: int, data: bytes = b"") -> bytes:
    return struct.pack("!BBB", 90, session, 0xFE) + data


# --------------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------------


class Modbus:
    """A Modbus/TCP client connection (own transaction ids) over a scapy TCP conversation."""

    _next_port = 49152

    def __init__(self, client: str, server: str, clock: Clock, port: int = 502, unit: int = 1) -> None:
        Modbus._next_port += 1
        self.tcp = TcpConversation(client, Modbus._next_port, server, port, clock)
        self.tcp.handshake()
        self.unit = unit
        self.tid = 0

    def ask(self, request: bytes, response: bytes | None, unit: int | None = None, gap: float = 0.05) -> None:
        self.tid += 1
        u = self.unit if unit is None else unit
        self.tcp.exchange(mbap(self.tid, u, request), mbap(self.tid, u, response) if response is not None else None, gap=gap)

    @property
    def packets(self) -> list[Packet]:
        return self.tcp.packets

    def close(self) -> list[Packet]:
        self.tcp.close()
        return self.tcp.packets


def syn_probe(src: str, sport: int, dst: str, dport: int, ts: float, open_port: bool) -> list[Packet]:
    """A scanner's SYN and the target's answer (SYN-ACK when open, RST-ACK when closed)."""
    syn = Ether(src=mac_for(src), dst=mac_for(dst)) / IP(src=src, dst=dst, ttl=64, id=0) / TCP(
        sport=sport, dport=dport, seq=7000, flags="S", window=1024
    )
    syn.time = ts
    flags = "SA" if open_port else "RA"
    ans = Ether(src=mac_for(dst), dst=mac_for(src)) / IP(src=dst, dst=src, ttl=64, id=0) / TCP(
        sport=dport, dport=sport, seq=9000 if open_port else 0, ack=7001, flags=flags, window=8192 if open_port else 0
    )
    ans.time = ts + 0.0003
    out = [syn, ans]
    if open_port:
        rst = Ether(src=mac_for(src), dst=mac_for(dst)) / IP(src=src, dst=dst, ttl=64, id=0) / TCP(
            sport=sport, dport=dport, seq=7001, flags="R", window=0
        )
        rst.time = ts + 0.0006
        out.append(rst)
    return out


def _poll_cycle(hmi1: Modbus, hmi2: Modbus, n: int) -> None:
    """One polling cycle of the HMI: PLC-1 holding registers and coils, PLC-2 input registers."""
    hmi1.ask(read_req(3, 0, 10), read_regs_resp(3, [100 + n % 7 + i for i in range(10)]))
    hmi1.ask(read_req(1, 0, 16), read_bits_resp(1, [(n + i) % 3 == 0 for i in range(16)]))
    hmi2.ask(read_req(4, 100, 4), read_regs_resp(4, [2000 + n % 11, 15, 16, 17]))


def _baseline(clock: Clock, seconds: float, period: float = 10.0) -> tuple[Modbus, Modbus]:
    """Normal HMI polling for ``seconds`` (used before an event that needs a learned baseline)."""
    hmi1 = Modbus(HMI, PLC1, clock)
    hmi2 = Modbus(HMI, PLC2, clock)
    n = 0
    start = clock.t
    while clock.t - start < seconds:
        _poll_cycle(hmi1, hmi2, n)
        n += 1
        clock.tick(period)
    return hmi1, hmi2


# --------------------------------------------------------------------------------------------------
# The captures
# --------------------------------------------------------------------------------------------------


def normal() -> list[Packet]:
    """Eleven minutes of a quiet plant: polling, a set point written now and then, identification at start."""
    clock = Clock(T0)
    hmi1 = Modbus(HMI, PLC1, clock)
    hmi2 = Modbus(HMI, PLC2, clock)
    hmi1.ask(device_id_req(), device_id_resp({0: "Schneider Electric", 1: "BMX P34 2020", 2: "v3.20"}))
    hmi1.ask(diagnostics(0, 0xA5A5), diagnostics(0, 0xA5A5))  # echo test at start-up
    ews = Modbus(EWS, PLC1, clock)
    ews.ask(umas(0, 0x04), umas_ok(0, b"\x01\x02"))  # the engineering station reads PLC info
    ews.ask(umas(0, 0x12), umas_ok(0))  # keep-alive
    n = 0
    while clock.t - T0 < 660:
        _poll_cycle(hmi1, hmi2, n)
        if n % 6 == 3:  # a set point once a minute
            hmi1.ask(write_register(20, 500 + n), write_register(20, 500 + n))
        if n % 12 == 5:  # an address the PLC does not have, polled by a stale HMI screen
            hmi1.ask(read_req(3, 900, 2), exception(3, 2))
        if n % 12 == 7:
            hmi1.ask(diagnostics(0, 0x1234), diagnostics(0, 0x1234))
        if n == 40:  # the engineering station checks the PLC again (known host, known function)
            ews.ask(umas(0, 0x04), umas_ok(0, b"\x01\x02"))
        n += 1
        clock.tick(5.0)
    return hmi1.close() + hmi2.close() + ews.close()


def write_unauthorized(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(read_req(3, 20, 1), read_regs_resp(3, [520]))
    m.ask(write_register(20, 9999), write_register(20, 9999))
    return m.close()


def diagnostics_unauthorized(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(bytes([11]), struct.pack("!BHH", 11, 0, 42))  # FC 11 Get Comm Event Counter
    return m.close()


def force_listen_only(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(diagnostics(4, 0), None)  # the device goes silent: no response (6.8.1)
    m.ask(read_req(3, 0, 1), None)
    return m.close()


def restart_communications(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(diagnostics(1, 0xFF00), diagnostics(1, 0xFF00))  # restart and clear the event log
    return m.close()


def clear_counters(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(diagnostics(10, 0), diagnostics(10, 0))
    return m.close()


SCAN_CODES = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 22, 23, 24, 43]
SUPPORTED = {1, 2, 3, 4, 5, 6, 15, 16, 23, 43}


def _scan_request(fc: int) -> bytes:
    if fc in (1, 2, 3, 4):
        return read_req(fc, 0, 1)
    if fc == 5:
        return write_coil(0, False)
    if fc == 6:
        return write_register(0, 0)
    if fc == 8:
        return diagnostics(0, 0)
    if fc == 15:
        return struct.pack("!BHHBB", 15, 0, 1, 1, 0)
    if fc == 16:
        return write_registers(0, [0])
    if fc == 20:
        return struct.pack("!BBBHHH", 20, 7, 6, 1, 0, 1)
    if fc == 22:
        return struct.pack("!BHHH", 22, 0, 0xFFFF, 0)
    if fc == 23:
        return struct.pack("!BHHHHBH", 23, 0, 1, 0, 1, 2, 0)
    if fc == 24:
        return struct.pack("!BH", 24, 0)
    if fc == 43:
        return device_id_req()
    return bytes([fc])  # 7, 11, 12, 17: no data


def function_code_scan(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC2, clock)
    for fc in SCAN_CODES:
        if fc in SUPPORTED:
            resp = exception(fc, 2)  # supported, but the probe's address is refused
        else:
            resp = exception(fc, 1)
        m.ask(_scan_request(fc), resp, gap=0.2)
    return m.close()


def illegal_function_probe(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC2, clock)
    m.ask(struct.pack("!BBBHHH", 20, 7, 6, 1, 0, 1), exception(20, 1))
    m.ask(struct.pack("!BH", 24, 0), exception(24, 1))
    m.ask(bytes([100, 1, 2, 3]), exception(100, 1))
    return m.close()


def unit_id_scan(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, GATEWAY, clock)
    for unit in range(1, 31):
        if unit <= 8:
            resp = read_regs_resp(3, [unit])
        else:
            resp = exception(3, 11)  # gateway target device failed to respond
        m.ask(read_req(3, 0, 1), resp, unit=unit, gap=0.5)
    return m.close()


def exception_storm(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    for i in range(25):  # walking addresses the PLC does not have
        m.ask(read_req(3, 1000 + 10 * i, 10), exception(3, 2), gap=0.2)
    return m.close()


def broadcast_write(clock: Clock) -> list[Packet]:
    # Even the allowed master: a broadcast write is unconfirmed by design.
    m = Modbus(HMI, GATEWAY, clock, unit=0)
    m.ask(write_register(40, 0), None)  # broadcast: no device answers
    return m.close()


def _umas_transfer(client: str, clock: Clock, first: int) -> list[Packet]:
    m = Modbus(client, PLC1, clock)
    m.ask(umas(0, 0x10, b"\x00\x00"), umas_ok(0x2A))  # take reservation: the PLC hands a session key
    m.ask(umas(0x2A, first, b"\x01\x00"), umas_ok(0x2A))
    for block in range(3):
        data = struct.pack("!HH", 1, block) + bytes(range(32))
        m.ask(umas(0x2A, first + 1, data), umas_ok(0x2A))
    m.ask(umas(0x2A, first + 2, b"\x01\x00"), umas_ok(0x2A))
    m.ask(umas(0x2A, 0x11), umas_ok(0x2A))  # release reservation
    return m.close()


def umas_program_download(clock: Clock) -> list[Packet]:
    return _umas_transfer(ATTACKER, clock, 0x30)


def umas_program_download_ews(clock: Clock) -> list[Packet]:
    return _umas_transfer(EWS, clock, 0x30)


def umas_program_upload(clock: Clock) -> list[Packet]:
    return _umas_transfer(ATTACKER, clock, 0x33)


def umas_plc_stop(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(umas(0, 0x10, b"\x00\x00"), umas_ok(0x2B))
    m.ask(umas(0x2B, 0x41, b"\xff\x00"), umas_ok(0x2B))
    return m.close()


def umas_plc_start(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(umas(0, 0x10, b"\x00\x00"), umas_ok(0x2C))
    m.ask(umas(0x2C, 0x40, b"\xff\x00"), umas_ok(0x2C))
    return m.close()


def device_identification(clock: Clock) -> list[Packet]:
    m = Modbus(ATTACKER, PLC1, clock)
    m.ask(device_id_req(), device_id_resp({0: "Schneider Electric", 1: "BMX P34 2020", 2: "v3.20"}))
    return m.close()


def brute_force_io(clock: Clock) -> list[Packet]:
    # The allowed master itself (a compromised HMI): toggling coil 5 as fast as it can.
    m = Modbus(HMI, PLC1, clock)
    for i in range(25):
        on = i % 2 == 0
        m.ask(write_coil(5, on), write_coil(5, on), gap=0.1)
    return m.close()


def new_talker(clock: Clock) -> list[Packet]:
    hmi1, hmi2 = _baseline(clock, 360)
    office = Modbus(OFFICE, PLC1, clock)  # after the 5-minute learning period
    office.ask(read_req(3, 0, 10), read_regs_resp(3, list(range(10))))
    return hmi1.close() + hmi2.close() + office.close()


def new_function(clock: Clock) -> list[Packet]:
    hmi1, hmi2 = _baseline(clock, 360)
    # The HMI, which only ever read PLC-1, now writes several registers at once.
    hmi1.ask(write_registers(30, [1, 2, 3]), write_registers_resp(30, 3))
    return hmi1.close() + hmi2.close()


def nonstandard_port(clock: Clock) -> list[Packet]:
    m = Modbus(HMI, PLC2, clock, port=5020)
    for i in range(3):
        m.ask(read_req(3, 0, 2), read_regs_resp(3, [i, i + 1]), gap=1.0)
    return m.close()


def port_scan_hosts(clock: Clock) -> list[Packet]:
    packets: list[Packet] = []
    for i, host in enumerate(range(1, 16)):
        dst = f"10.10.2.{host}"
        packets += syn_probe(ATTACKER, 40100 + i, dst, 502, clock.tick(0.2), open_port=dst in (PLC1, PLC2))
    return packets


def port_scan_ports(clock: Clock) -> list[Packet]:
    packets: list[Packet] = []
    for i, port in enumerate((502, 102, 20000, 2404, 44818, 4840)):
        packets += syn_probe(ATTACKER, 40200 + i, PLC1, port, clock.tick(0.3), open_port=port == 502)
    return packets


# rule id -> how its capture is made
RULE_CAPTURES: dict[str, Callable[[Clock], list[Packet]]] = {
    "modbus-write-unauthorized-master": write_unauthorized,
    "modbus-diagnostics-unauthorized-master": diagnostics_unauthorized,
    "modbus-force-listen-only": force_listen_only,
    "modbus-restart-communications": restart_communications,
    "modbus-clear-counters": clear_counters,
    "modbus-function-code-scan": function_code_scan,
    "modbus-illegal-function-probe": illegal_function_probe,
    "modbus-unit-id-scan": unit_id_scan,
    "modbus-exception-storm": exception_storm,
    "modbus-broadcast-write": broadcast_write,
    "modbus-umas-program-download": umas_program_download,
    "modbus-umas-program-download-ews": umas_program_download_ews,
    "modbus-umas-program-upload": umas_program_upload,
    "modbus-umas-plc-stop": umas_plc_stop,
    "modbus-umas-plc-start": umas_plc_start,
    "modbus-device-identification-unknown-host": device_identification,
    "modbus-brute-force-io": brute_force_io,
    "ics-new-talker": new_talker,
    "ics-new-function": new_function,
    "ics-protocol-nonstandard-port": nonstandard_port,
    "ics-port-scan-hosts": port_scan_hosts,
    "ics-port-scan-ports": port_scan_ports,
}


def generate(out: Path = PCAP_DIR) -> list[Path]:
    Modbus._next_port = 49152
    written = [write_pcap("modbus_normal.pcap", normal(), out)]
    for rule_id, make in RULE_CAPTURES.items():
        Modbus._next_port = 49152  # every capture starts from the same client port: byte-identical reruns
        written.append(write_pcap(f"rule_{rule_id}.pcap", make(Clock(T0)), out))
    return written


def main(argv: list[str] | None = None) -> int:
    return rule_captures_cli(__doc__.splitlines()[0], generate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
