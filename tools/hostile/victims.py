"""The real ICS traffic mixed into every hostile capture, so a test can check it survived the attack.

Two kinds:

- ``ModbusPoller``: a SCADA master polling a PLC (FC 3, ten holding registers) over one long-lived
  TCP connection for the whole capture, request and response, with correct sequence numbers. It
  produces no alert, but every one of its PDUs must still be parsed while the flood runs (its flow
  is the one a flow-table or buffer flood would evict).
- Rule captures from ``pcaps/`` (``rule_<id>.pcap``, crafted by ``tools/pcapgen``): each fires its
  rule a known number of times (the ``captures`` map in the rule's YAML). They are replayed with
  their timestamps moved into the hostile capture's timeline, late in it, when the caps are hit.

Victim hosts live in 10.0.0.0/8 (the demo plants of ``rules/lists/default.yaml``); hostile traffic
comes from 172.16.0.0/12, so the two never share a 5-tuple.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sensor.capture import CaptureReader
from tools.hostile.wire import TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, ip, tcp_frame

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO / "pcaps"
RULES = REPO / "rules"

Record = tuple[float, bytes]  # (timestamp, Ethernet frame)

SCADA = "10.10.1.10"  # an allowed master (rules/lists/default.yaml)
PLC = "10.10.2.11"  # the Modbus demo plant's PLC-1
POLL_PORT = 49500


class TcpConversation:
    """One TCP connection with correct sequence and acknowledgment numbers, built with ``wire``."""

    def __init__(self, client: str, cport: int, server: str, sport: int, isn_c: int = 1000, isn_s: int = 5000) -> None:
        self.client, self.server = ip(client), ip(server)
        self.cport, self.sport = cport, sport
        self.seq = [isn_c, isn_s]  # next sequence number: [client, server]

    def frame(self, from_client: bool, flags: int, payload: bytes = b"") -> bytes:
        d = 0 if from_client else 1
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sport, dport = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        seq, ack = self.seq[d], self.seq[1 - d] if flags & TCP_ACK else 0
        self.seq[d] = (seq + len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF
        return tcp_frame(src, dst, sport, dport, seq, ack, flags, payload)

    def handshake(self, ts: float) -> list[Record]:
        return [
            (ts, self.frame(True, TCP_SYN)),
            (ts + 0.0005, self.frame(False, TCP_SYN | TCP_ACK)),
            (ts + 0.001, self.frame(True, TCP_ACK)),
        ]

    def send(self, from_client: bool, payload: bytes, ts: float) -> Record:
        return ts, self.frame(from_client, TCP_PSH | TCP_ACK, payload)

    def close(self, ts: float) -> list[Record]:
        return [
            (ts, self.frame(True, TCP_FIN | TCP_ACK)),
            (ts + 0.0005, self.frame(False, TCP_FIN | TCP_ACK)),
            (ts + 0.001, self.frame(True, TCP_ACK)),
        ]


def modbus_read_request(tid: int, unit: int, address: int, quantity: int) -> bytes:
    return struct.pack("!HHHBBHH", tid, 0, 6, unit, 3, address, quantity)


def modbus_read_response(tid: int, unit: int, values: list[int]) -> bytes:
    body = struct.pack(f"!BB{len(values)}H", 3, 2 * len(values), *values)
    return struct.pack("!HHHB", tid, 0, len(body) + 1, unit) + body


class ModbusPoller:
    """SCADA polling PLC-1 every ``period`` seconds from ``start`` to ``end`` on one connection."""

    def __init__(self, start: float, end: float, period: float = 0.05) -> None:
        self.start, self.end, self.period = start, end, period
        self.polls = max(1, int((end - start) / period))

    @property
    def events(self) -> int:
        """Events the sensor should produce: one per request and one per response."""
        return 2 * self.polls

    def records(self) -> Iterator[Record]:
        conv = TcpConversation(SCADA, POLL_PORT, PLC, 502, isn_c=0x10000000, isn_s=0x20000000)
        yield from conv.handshake(self.start - 0.01)
        for i in range(self.polls):
            t = self.start + i * self.period
            tid = i & 0xFFFF
            yield conv.send(True, modbus_read_request(tid, 1, 0, 10), t)
            yield conv.send(False, modbus_read_response(tid, 1, [(i + k) & 0xFFFF for k in range(10)]), t + 0.002)
        yield from conv.close(self.start + self.polls * self.period + 0.01)


def rule_capture_alerts(rule_id: str) -> int:
    """How many times ``rule_id`` fires on ``pcaps/rule_<id>.pcap``, from the rule's own YAML."""
    for path in sorted(RULES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for rule in doc.get("rules") or []:
            if rule.get("id") == rule_id:
                captures = rule.get("captures") or {}
                return int(captures[f"pcaps/rule_{rule_id}.pcap"])
    raise KeyError(f"no rule {rule_id} in {RULES}")


def rule_capture_records(rule_id: str, at: float) -> list[Record]:
    """The packets of ``pcaps/rule_<id>.pcap`` with the first one moved to time ``at``."""
    reader = CaptureReader(PCAPS / f"rule_{rule_id}.pcap")
    try:
        packets = [(ts, bytes(data)) for ts, _link, data, _orig in reader]
    finally:
        reader.close()
    if not packets:
        return []
    shift = at - packets[0][0]
    return [(ts + shift, data) for ts, data in packets]


@dataclass
class Victims:
    """The ICS traffic of one hostile capture and what it must still produce."""

    records: list[Record] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)  # victim IP addresses (for filtering events)
    alerts: dict[str, int] = field(default_factory=dict)  # rule id -> alerts its capture fires
    poll_events: int = 0  # events of the Modbus poller

    def add_poller(self, start: float, end: float, period: float = 0.05) -> None:
        poller = ModbusPoller(start, end, period)
        self.records.extend(poller.records())
        self.hosts.update((SCADA, PLC))
        self.poll_events += poller.events

    def add_rule_capture(self, rule_id: str, at: float) -> None:
        records = rule_capture_records(rule_id, at)
        self.records.extend(records)
        self.alerts[rule_id] = self.alerts.get(rule_id, 0) + rule_capture_alerts(rule_id)
        for _ts, frame in records:
            if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
                self.hosts.add(".".join(str(b) for b in frame[26:30]))
                self.hosts.add(".".join(str(b) for b in frame[30:34]))

    def sorted(self) -> list[Record]:
        return sorted(self.records, key=lambda r: r[0])
