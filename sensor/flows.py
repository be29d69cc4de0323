"""The flow table: TCP, UDP and layer-2 conversations, their analyzers and their bounds.

A flow is found by the sender's 5-tuple; each flow is stored under both directions' keys so a
packet costs one dict lookup. The client is the side that sent the SYN; when the handshake was not
captured, the side talking to a registered ICS port is the client, else the first sender.

The protocol of a flow is chosen by the server port (registry), else by the client port (roles are
then swapped: we joined mid-stream from the server's side), else by payload signature on the first
data segments (``probe``), so Modbus on port 5020 is still found.

Bounds (all counted): ``max_flows`` (idle-first eviction, flows that never carried a byte first),
per-direction reassembly buffer, the sensor-wide budget of bytes held waiting for more
(``max_buffered_bytes``, ``sensor/budget.py``: out-of-order segments and the analyzers' partial PDUs,
fragments and chunks), idle timeouts in capture time (on a monotonic clock that ignores capture clock
restarts and absurd forward jumps).
"""

from __future__ import annotations

import itertools
import socket
import traceback
from collections import Counter
from typing import Callable

from sensor.budget import HeldBytes
from sensor.config_types import SensorLimits
from sensor.counters import Counters, ProtocolStats
from sensor.events import IcsEvent
from sensor.protocols import Registry
from sensor.protocols.base import Analyzer, ProtocolSpec, Session
from sensor.reassembly import TcpStream

# Flow ids are unique in the process, not only in one file's table: events of two captures replayed
# by one sensor must never share a flow id (per-flow evidence, ML features and the asset inventory
# key on it).
_flow_ids = itertools.count(1)

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
PROBE_TRIES = 4  # data segments a flow on an unknown port is probed with before giving up


def ip_str(raw: bytes) -> str:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex(":")  # layer-2 "address" (a MAC)


class Flow:
    __slots__ = (
        "id",
        "transport",
        "keys",
        "session",
        "spec",
        "analyzer",
        "streams",
        "first_seen",
        "last_seen",
        "probe_tries",
        "fins",
        "packets",
        "bytes",
        "client_port",
        "server_port",
    )

    def __init__(self, fid: int, transport: str, keys: tuple[tuple, tuple], now: float) -> None:
        self.id = fid
        self.transport = transport
        self.keys = keys  # (client->server key, server->client key)
        self.session: Session | None = None
        self.spec: ProtocolSpec | None = None
        self.analyzer: Analyzer | None = None
        self.streams: tuple[TcpStream, TcpStream] | None = None  # (client->server, server->client)
        self.first_seen = now
        self.last_seen = now
        self.probe_tries = 0
        self.fins = 0
        self.packets = 0
        self.bytes = 0
        self.client_port = 0
        self.server_port = 0


class FlowTable:
    """Owns flows and drives their analyzers. ``now`` is the monotonic capture clock."""

    def __init__(
        self,
        registry: Registry,
        limits: SensorLimits,
        sink: Callable[[IcsEvent], None],
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.sink = sink
        self.stats = ProtocolStats()
        self.budget = HeldBytes(limits.max_buffered_bytes, Counters())
        self.counters = Counters()
        self.flows: dict[tuple, tuple[Flow, bool]] = {}
        self.count = 0  # live flows
        self.now = 0.0
        self.errors: list[str] = []  # first analyzer tracebacks (for bug reports), bounded
        self.talkers: Counter[tuple[str, str, str]] = Counter()  # (protocol, client, server) -> events
        self.events = 0

    @property
    def counters(self) -> Counters:
        return self._counters

    @counters.setter
    def counters(self, counters: Counters) -> None:
        # The pipeline hands each file's counters to the table after building it: the budget counts there too.
        self._counters = counters
        self.budget.counters = counters

    # -- TCP ----------------------------------------------------------------------------------
    def tcp(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        wire_len: int,
        ts: float,
        smac: bytes | None,
        dmac: bytes | None,
    ) -> None:
        key = (src, sport, dst, dport, 6)
        hit = self.flows.get(key)
        if hit is not None and not flags & 0x07:
            # Fast path: a known flow, no SYN/FIN/RST, data in order with nothing buffered.
            flow, from_client = hit
            flow.last_seen = self.now
            flow.packets += 1
            streams = flow.streams
            if streams is not None:
                stream = streams[0] if from_client else streams[1]
                n = len(payload)
                if n and stream.next_seq == seq and not stream.pending and wire_len == n and flow.analyzer is not None:
                    flow.bytes += n
                    if flags & ACK:  # release the peer's held-back data first: it was sent before this
                        other = streams[1] if from_client else streams[0]
                        if other.pending:
                            other.acked(ack, ts)
                    stream.next_seq = (seq + n) & 0xFFFFFFFF
                    try:
                        flow.analyzer.feed(from_client, payload, ts)
                    except Exception:  # noqa: BLE001 - an analyzer bug must not stop the sensor
                        self._analyzer_failed(flow)
                    return
                if not n and not wire_len:
                    if flags & ACK:
                        other = streams[1] if from_client else streams[0]
                        if other.pending:
                            other.acked(ack, ts)
                    return
            self._tcp_slow(flow, from_client, key, seq, ack, flags, payload, wire_len, ts)
            return
        if hit is None:
            if flags & SYN:
                flow, from_client = self._new_tcp(key, src, dst, sport, dport, flags, ts, smac, dmac)
            elif payload:
                flow, from_client = self._new_tcp(key, src, dst, sport, dport, flags, ts, smac, dmac)
                self.counters["tcp_flows_without_handshake"] += 1
            else:
                # a lone ACK/FIN/RST of a flow we never saw (or that just ended): nothing to analyse
                self.counters["tcp_orphan_control"] += 1
                return
        else:
            flow, from_client = hit
            if flags & SYN and not flags & ACK and flow.streams is not None:
                stream = flow.streams[0 if from_client else 1]
                if stream.next_seq is not None and stream.next_seq != (seq + 1) & 0xFFFFFFFF:
                    # a new connection reusing the 4-tuple: end the old one
                    self.counters["tcp_port_reuse"] += 1
                    self.close(flow, ts)
                    flow, from_client = self._new_tcp(key, src, dst, sport, dport, flags, ts, smac, dmac)
        flow.last_seen = self.now
        flow.packets += 1
        self._tcp_slow(flow, from_client, key, seq, ack, flags, payload, wire_len, ts)

    def _tcp_slow(
        self,
        flow: Flow,
        from_client: bool,
        key: tuple,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        wire_len: int,
        ts: float,
    ) -> None:
        """Every TCP case: handshake, probing, reassembly out of order, FIN/RST."""
        streams = flow.streams
        if streams is None:  # unidentified flow: nothing to reassemble
            if flags & (FIN | RST):
                self._fin_rst(flow, flags, ts)
            return
        stream = streams[0 if from_client else 1]
        if flags & SYN:
            stream.syn(seq)
        if flags & ACK:
            # The peer's data held back behind a hole this ACK proves lost was sent before this
            # segment: release it first, so requests and responses stay in order.
            other = streams[1 if from_client else 0]
            if other.pending:
                other.acked(ack, ts)
        if payload or wire_len:
            flow.bytes += wire_len
            if flow.analyzer is None:
                if not self._probe(flow, payload, from_client, key):
                    if flags & (FIN | RST):
                        self._fin_rst(flow, flags, ts)
                    return
                from_client = self.flows[key][1]
                stream = flow.streams[0 if from_client else 1]  # type: ignore[index]
                if stream.next_seq is None:
                    stream.next_seq = seq
            stream.segment(seq, payload, ts, wire_len if wire_len > len(payload) else None)
        if flags & (FIN | RST):
            self._fin_rst(flow, flags, ts)

    def _fin_rst(self, flow: Flow, flags: int, ts: float) -> None:
        if flags & RST:
            self.counters["tcp_rst"] += 1
            self.close(flow, ts)
            return
        flow.fins += 1
        if flow.fins >= 2:
            self.close(flow, ts)

    def _new_tcp(
        self,
        key: tuple,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        flags: int,
        ts: float,
        smac: bytes | None,
        dmac: bytes | None,
    ) -> tuple[Flow, bool]:
        tcp_ports = self.registry.tcp
        if flags & SYN:
            sender_is_client = not flags & ACK
        elif dport in tcp_ports:
            sender_is_client = True
        elif sport in tcp_ports:
            sender_is_client = False
        else:
            sender_is_client = dport < sport  # ephemeral ports are high: the lower port serves
        if sender_is_client:
            cip, cport, sip, sport_, cmac, smac_ = src, sport, dst, dport, smac, dmac
        else:
            cip, cport, sip, sport_, cmac, smac_ = dst, dport, src, sport, dmac, smac
        spec = tcp_ports.get(sport_)
        if spec is None:
            spec = tcp_ports.get(cport)
            if spec is not None:
                # The registered port is on the side we took for the client: either we joined
                # mid-stream, or a SYN came *from* a service port (scans, fuzzers). The service port
                # decides: that side is the server.
                if flags & SYN:
                    self.counters["tcp_syn_from_service_port"] += 1
                cip, cport, sip, sport_, cmac, smac_ = sip, sport_, cip, cport, smac_, cmac
                sender_is_client = not sender_is_client
        flow = self._insert(key, "tcp", cip, cport, sip, sport_, cmac, smac_, sender_is_client, ts)
        session = flow.session
        assert session is not None
        counters, cap, budget = self.counters, self.limits.max_flow_buffer, self.budget
        flow.streams = (
            TcpStream(self._deliverer(flow, True), self._gapper(flow, True), counters, cap, budget),
            TcpStream(self._deliverer(flow, False), self._gapper(flow, False), counters, cap, budget),
        )
        if spec is not None:
            self._attach(flow, spec)
        if flags & SYN and not flags & ACK and sport_ in tcp_ports:
            self._connection_attempt(flow, ts, tcp_ports[sport_].name)
        return flow, sender_is_client

    def _connection_attempt(self, flow: Flow, ts: float, proto: str) -> None:
        s = flow.session
        assert s is not None
        self.events += 1
        self.sink(
            IcsEvent(
                ts,
                "tcp",
                s.client_ip,
                s.client_port,
                s.server_ip,
                s.server_port,
                "tcp",
                "request",
                -1,
                "connection_attempt",
                "discovery",
                fields={"ics_protocol": proto},
                flow_id=flow.id,
                src_mac=s.client_mac,
                dst_mac=s.server_mac,
            )
        )

    # -- UDP ----------------------------------------------------------------------------------
    def udp(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        payload: bytes,
        ts: float,
        smac: bytes | None,
        dmac: bytes | None,
    ) -> None:
        key = (src, sport, dst, dport, 17)
        hit = self.flows.get(key)
        if hit is None:
            udp_ports = self.registry.udp
            spec = udp_ports.get(dport)
            sender_is_client = True
            if spec is None:
                spec = udp_ports.get(sport)
                if spec is not None:
                    sender_is_client = False
                else:
                    sender_is_client = dport <= sport
            if sender_is_client:
                args = (src, sport, dst, dport, smac, dmac)
            else:
                args = (dst, dport, src, sport, dmac, smac)
            flow = self._insert(key, "udp", *args, sender_is_client, ts)  # type: ignore[arg-type]
            from_client = sender_is_client
            if spec is not None:
                self._attach(flow, spec)
        else:
            flow, from_client = hit
        flow.last_seen = self.now
        flow.packets += 1
        flow.bytes += len(payload)
        if not payload:
            return
        if flow.analyzer is None:
            if not self._probe(flow, payload, from_client, key):
                return
            from_client = self.flows[key][1]
        self._feed(flow, from_client, payload, ts)

    # -- layer 2 ------------------------------------------------------------------------------
    def l2(self, ethertype: int, smac: bytes, dmac: bytes, payload: bytes, ts: float) -> None:
        spec = self.registry.ether.get(ethertype)
        if spec is None:
            self.counters["non_ip_frames"] += 1
            return
        key = (smac, ethertype, dmac, 0, 0)
        hit = self.flows.get(key)
        if hit is None:
            flow = self._insert(key, "l2", smac, ethertype, dmac, ethertype, smac, dmac, True, ts)
            self._attach(flow, spec)
            from_client = True
        else:
            flow, from_client = hit
        flow.last_seen = self.now
        flow.packets += 1
        flow.bytes += len(payload)
        self._feed(flow, from_client, payload, ts)

    # -- common -------------------------------------------------------------------------------
    def _insert(
        self,
        key: tuple,
        transport: str,
        cip: bytes,
        cport: int,
        sip: bytes,
        sport: int,
        cmac: bytes | None,
        smac: bytes | None,
        sender_is_client: bool,
        ts: float,
    ) -> Flow:
        if self.count >= self.limits.max_flows:
            self.evict()
        rkey = (key[2], key[3], key[0], key[1], key[4])
        keys = (key, rkey) if sender_is_client else (rkey, key)
        flow = Flow(next(_flow_ids), transport, keys, self.now)
        flow.client_port, flow.server_port = cport, sport
        flow.session = Session(
            flow.id,
            transport,
            ip_str(cip),
            cport,
            ip_str(sip),
            sport,
            self.stats,
            self.counters,
            self.sink,
            None if cmac is None else cmac.hex(":"),
            None if smac is None else smac.hex(":"),
            self.budget,
        )
        self.flows[keys[0]] = (flow, True)
        self.flows[keys[1]] = (flow, False)
        self.count += 1
        self.counters[f"flows_{transport}"] += 1
        return flow

    def _attach(self, flow: Flow, spec: ProtocolSpec) -> None:
        flow.spec = spec
        assert flow.session is not None
        flow.analyzer = spec.analyzer(flow.session)

    def _probe(self, flow: Flow, payload: bytes, from_client: bool, key: tuple) -> bool:
        """Find the protocol of a flow on an unregistered port from its first payloads."""
        if flow.probe_tries >= PROBE_TRIES:
            return False
        flow.probe_tries += 1
        spec = self.registry.probe(payload[: max(self.limits.signature_probe_bytes, 16)], from_client)
        if spec is None:
            if flow.probe_tries >= PROBE_TRIES:
                self.counters["flows_unidentified"] += 1
                if flow.streams is not None:
                    self._release_streams(flow)
                    flow.streams = None  # stop reassembling a flow nobody will read
            return False
        self._attach(flow, spec)
        self.counters["flows_identified_by_signature"] += 1
        return True

    def _deliverer(self, flow: Flow, from_client: bool) -> Callable[[bytes, float], None]:
        feed = self._feed

        def deliver(data: bytes, ts: float) -> None:
            feed(flow, from_client, data, ts)

        return deliver

    def _gapper(self, flow: Flow, from_client: bool) -> Callable[[float], None]:
        def gap(ts: float) -> None:
            analyzer = flow.analyzer
            if analyzer is not None:
                try:
                    analyzer.gap(from_client, ts)
                    analyzer.report_held(ts)  # the gap dropped partial state: the budget is told
                except Exception:  # noqa: BLE001 - an analyzer bug must not stop the sensor
                    self._analyzer_failed(flow)

        return gap

    def _feed(self, flow: Flow, from_client: bool, data: bytes, ts: float) -> None:
        analyzer = flow.analyzer
        if analyzer is None:
            return
        try:
            analyzer.feed(from_client, data, ts)
        except Exception:  # noqa: BLE001 - an analyzer bug must not stop the sensor
            self._analyzer_failed(flow)

    def _analyzer_failed(self, flow: Flow) -> None:
        name = flow.spec.name if flow.spec else "unknown"
        self.counters[f"analyzer_error_{name}"] += 1
        if len(self.errors) < 10:
            self.errors.append(traceback.format_exc(limit=6))
        if flow.analyzer is not None:
            self.budget.release(flow.analyzer)
        self._release_streams(flow)
        flow.analyzer = None
        flow.streams = None

    def _release_streams(self, flow: Flow) -> None:
        """The flow's streams are dropped: nothing they buffered counts against the budget any more."""
        if flow.streams is not None:
            for stream in flow.streams:
                self.budget.release(stream)

    def close(self, flow: Flow, ts: float) -> None:
        """End a flow: flush reassembly, close the analyzer, forget both keys."""
        if flow.streams is not None:
            for stream in flow.streams:
                if stream.pending:
                    stream.flush(ts)
        if flow.analyzer is not None:
            try:
                flow.analyzer.close(ts)
            except Exception:  # noqa: BLE001
                self._analyzer_failed(flow)
            if flow.analyzer is not None:
                self.budget.release(flow.analyzer)
        self._release_streams(flow)
        s = flow.session
        if s is not None and s.events:
            self.events += s.events
            self.talkers[(flow.spec.name if flow.spec else "?", s.client_ip, s.server_ip)] += s.events
        for k in flow.keys:
            hit = self.flows.get(k)
            if hit is not None and hit[0] is flow:
                del self.flows[k]
        self.count -= 1
        # Break the flow's reference cycles (its streams' callbacks point back at it): a closed flow is
        # freed at once by reference counting, not left for the cyclic collector to find, so a flood of
        # short flows does not pile up garbage between collections.
        flow.streams = None
        flow.analyzer = None

    def expire(self, ts: float) -> None:
        """End flows idle longer than their timeout (capture time, monotonic clock)."""
        tcp_limit = self.now - self.limits.tcp_idle_timeout
        other_limit = self.now - self.limits.udp_idle_timeout
        stale = []
        for (flow, is_client_key) in self.flows.values():
            if not is_client_key:
                continue
            limit = tcp_limit if flow.transport == "tcp" else other_limit
            if flow.last_seen < limit:
                stale.append(flow)
        for flow in stale:
            self.close(flow, ts)
        if stale:
            self.counters["flows_idle_timeout"] += len(stale)

    def evict(self) -> None:
        """Table full: end the idlest tenth of the flows (counted ``flow_cap_evictions``). Flows that
        never carried a byte nor got past two packets (the SYN, at most a SYN-ACK: a SYN flood or a
        scan) go first, then other flows without data (a completed handshake waiting for its first
        request), then the rest, idlest first: a SYN flood must not push the plant's own
        connections out of the table."""
        flows = [f for f, is_client_key in self.flows.values() if is_client_key]
        flows.sort(key=lambda f: (f.bytes > 0, f.packets > 2, f.last_seen))
        victims = flows[: max(1, len(flows) // 10)]
        for flow in victims:
            self.close(flow, flow.last_seen)
        self.counters["flow_cap_evictions"] += len(victims)

    def close_all(self, ts: float) -> None:
        for flow in [f for f, is_client_key in self.flows.values() if is_client_key]:
            self.close(flow, ts)
