"""The sensor pipeline: capture packets -> L2-L4 decode -> flow table and reassembly -> analyzers -> events.

``Pipeline.replay_file`` reads one capture; ``Pipeline.packet`` takes one packet (live capture feeds
this). Events go to ``on_event``; ``on_tick(ts)`` is called about once per second of capture time so
time-based detectors can close windows. Each file gets its own flow table (flows never span files)
and its own counts (``FileResult``); totals accumulate on the pipeline.

Capture time can jump backwards (a capture whose clock restarts, merged files): idle timeouts and
ticks run on a monotonic clock that only moves forward (backward jumps are counted, not applied),
while events keep the packet's own timestamp.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from sensor.capture import CaptureError, CaptureReader, Packet
from sensor.config_types import SensorLimits
from sensor.counters import Counters, ProtocolStats
from sensor.decode import ETH_IPV4, ETH_IPV6, Decoder, parse_tcp, parse_udp
from sensor.events import IcsEvent
from sensor.flows import FlowTable
from sensor.memory import HeapTrimmer
from sensor.protocols import Registry, registry as default_registry

# Ethernet payload = IPv4 (version/ihl, total length, flags+fragment offset, protocol, addresses) + TCP
# (ports, seq, ack, data offset, flags), in one unpack.
_ETH_IP4_TCP = struct.Struct("!BxHxxHxBxx4s4sHHIIBB")


def _discard(event: IcsEvent) -> None:
    """Event sink when nobody listens (inspect counts PDUs; events are still built, then dropped)."""


TICK = 1.0  # seconds of capture time between on_tick calls
SWEEP = 10.0  # seconds of capture time between idle-flow sweeps
MAX_KEPT_ERRORS = 100  # analyzer tracebacks kept over all files (each file's table keeps its first 10)


@dataclass
class FileResult:
    path: str
    packets: int = 0
    bytes: int = 0
    events: int = 0
    error: str | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    stats: ProtocolStats = field(default_factory=ProtocolStats)
    counters: Counters = field(default_factory=Counters)
    gauges: dict[str, int] = field(default_factory=dict)  # high-water marks (buffered_bytes_peak, ...)
    format: str = ""

    def ground_truth(self) -> dict[str, Any]:
        """This file's entry in the GROUND_TRUTH.json shape."""
        out: dict[str, Any] = {"packets": self.packets, "protocols": self.stats.as_ground_truth()}
        if self.error:
            out["error"] = self.error
        return out


class Pipeline:
    def __init__(
        self,
        config: Any | None = None,
        on_event: Callable[[IcsEvent], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.limits = SensorLimits.from_config(config)
        self.registry = registry or default_registry()
        self.on_event = on_event
        self.on_tick = on_tick
        self.totals = ProtocolStats()
        self.counters = Counters()  # totals over all files
        self.gauges: dict[str, int] = {}  # high-water marks over all files (FileResult.gauges)
        self.packets = 0
        self.bytes = 0
        self.events = 0
        self.talkers: Counter[tuple[str, str, str]] = Counter()
        self.errors: list[str] = []
        self._table: FlowTable | None = None
        self._decoder: Decoder | None = None
        self._file: FileResult | None = None
        self.now = 0.0  # monotonic capture clock
        self._last_ts: float | None = None
        self._next_tick = 0.0
        self._next_sweep = 0.0
        self._heap = HeapTrimmer(self.limits.heap_trim_seconds)

    # -- files --------------------------------------------------------------------------------
    def start(self, path: str = "<live>") -> FileResult:
        """Begin a capture (a file, or a live session): a fresh flow table and fresh counts."""
        self._file = FileResult(path)
        self._table = FlowTable(self.registry, self.limits, self.on_event or _discard)
        self._table.counters = self._file.counters
        self._table.stats = self._file.stats
        limits = self.limits
        self._decoder = Decoder(self._file.counters, limits.max_fragment_sets, limits.fragment_timeout, limits.max_fragment_bytes)
        # The new table and decoder start on the pipeline's clock, not at 0: otherwise a flow opened before
        # the file's first tick gets last_seen 0 and, once the clock is past the idle timeout (any file
        # after the first 10 minutes of a run), the next sweep ends it as idle in the middle of its traffic.
        self._table.now = self.now
        self._decoder.now = self.now
        return self._file

    def end(self) -> FileResult:
        """End the current capture: close every flow, fold its counts into the totals."""
        assert self._file is not None and self._table is not None
        result = self._file
        ts = self._last_ts if self._last_ts is not None else 0.0
        self._table.close_all(ts)
        # analyzer tracebacks, for bug reports: the first ones are what matters, and a sensor replaying
        # file after file for months must not keep them all
        self.errors.extend(self._table.errors[: max(0, MAX_KEPT_ERRORS - len(self.errors))])
        self.talkers.update(self._table.talkers)
        result.events = self._table.events
        self.events += result.events
        self.totals.merge(result.stats)
        self.counters.update(result.counters)
        # High-water marks of what the caps bound (bytes held at the worst moment): the highest of the
        # files, never a sum. In the summary next to the counters (docs/counters.md).
        result.gauges["buffered_bytes_peak"] = self._table.budget.peak
        result.gauges["ip_fragment_bytes_peak"] = self._decoder.frag_peak if self._decoder is not None else 0
        for name, value in result.gauges.items():
            self.gauges[name] = max(self.gauges.get(name, 0), value)
        self._table = None
        self._decoder = None
        self._file = None
        return result

    def replay_file(self, path: str | Path, progress: Callable[[int, int], None] | None = None) -> FileResult:
        """Replay one capture file. Damage after the start is reported in ``error``, never raised.

        Raises CaptureError only when the file cannot be read as a capture at all.
        """
        reader = CaptureReader(path)
        result = self.start(str(path))
        result.format = reader.format
        try:
            self.run(reader, progress)
        finally:
            reader.close()
        result.error = reader.error
        for name, count in reader.anomalies.items():
            result.counters[name] += count
        if reader.error:
            result.counters["capture_damaged"] += 1
        self.end()
        if progress is not None:
            progress(result.packets, result.bytes)
        return result

    def packet(self, ts: float, linktype: int, data: bytes, orig_len: int) -> None:
        """Process one packet (for callers that hand packets over one at a time)."""
        self.run(((ts, linktype, data, orig_len),))

    def run(self, packets: Iterable[Packet], progress: Callable[[int, int], None] | None = None) -> None:
        """Process packets from any iterable of (ts, linktype, data, orig_len): a file reader or a live
        capture queue. The hot loop: the common case (Ethernet, IPv4 without options, TCP, a known flow,
        in-order data) is handled inline; everything else takes the general path."""
        result = self._file if self._file is not None else self.start()
        table = self._table
        assert table is not None
        flows = table.flows
        counters = result.counters
        unpack = _ETH_IP4_TCP.unpack_from
        general = self._general
        analyzer_failed = table._analyzer_failed
        now = self.now
        max_jump = self.limits.max_clock_jump
        last = self._last_ts
        next_tick = self._next_tick
        first = result.first_ts
        n = 0
        nbytes = 0
        try:
            for ts, linktype, data, orig_len in packets:
                n += 1
                size = len(data)
                nbytes += size
                if first is None:
                    first = last = ts
                dt = ts - last  # type: ignore[operator]
                if dt > 0:
                    if dt <= max_jump:
                        now += dt
                    else:  # a packet dated 2100, a clock step: not time passing (idle timeouts, ticks)
                        counters["capture_clock_jump_forward"] += 1
                elif dt < -1.0:
                    counters["capture_clock_backwards"] += 1
                last = ts
                if now >= next_tick:
                    self.now = now
                    self._time_passes(ts, now)
                    next_tick = self._next_tick
                if progress is not None and not n & 0x3FFF:
                    progress(result.packets + n, result.bytes + nbytes)
                if linktype == 1 and size >= 54 and data[12] == 8 and data[13] == 0 and orig_len == size:
                    vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff, flags = unpack(data, 14)
                    if vihl == 0x45 and proto == 6 and not frag & 0x3FFF and 40 <= total <= size - 14:
                        hl = (doff >> 4) * 4
                        if 20 <= hl <= total - 20:
                            payload = data[34 + hl : 14 + total]
                            plen = total - 20 - hl
                            hit = flows.get((src, sport, dst, dport, 6))
                            if hit is not None and not flags & 0x07 and plen:
                                # Known flow, no SYN/FIN/RST, data exactly where expected: straight to
                                # the analyzer (what FlowTable.tcp would do, minus the calls).
                                flow, from_client = hit
                                streams = flow.streams
                                if streams is not None:
                                    stream = streams[0] if from_client else streams[1]
                                    analyzer = flow.analyzer
                                    if stream.next_seq == seq and not stream.pending and analyzer is not None:
                                        flow.last_seen = now
                                        flow.packets += 1
                                        flow.bytes += plen
                                        if flags & 0x10:
                                            # Data segments carry ACKs too: a hole the peer acknowledged
                                            # was lost in the capture, not the network. The held-back
                                            # data it releases was sent before this segment: deliver it first.
                                            other = streams[1] if from_client else streams[0]
                                            if other.pending:
                                                other.acked(ack, ts)
                                        stream.next_seq = (seq + plen) & 0xFFFFFFFF
                                        try:
                                            analyzer.feed(from_client, payload, ts)
                                        except Exception:  # noqa: BLE001 - an analyzer bug never stops the sensor
                                            analyzer_failed(flow)
                                        continue
                            table.tcp(src, dst, sport, dport, seq, ack, flags, payload, plen, ts, data[6:12], data[0:6])
                            continue
                general(ts, linktype, data, orig_len, table, counters)
        finally:
            self.now = now
            self._last_ts = last
            self._next_tick = next_tick
            result.first_ts = first
            result.last_ts = last
            result.packets += n
            result.bytes += nbytes
            self.packets += n
            self.bytes += nbytes

    def _general(self, ts: float, linktype: int, data: bytes, orig_len: int, table: FlowTable, counters: Counters) -> None:
        """Every packet the fast path does not take: other link types, IPv6, options, fragments, UDP..."""
        if orig_len > len(data):
            counters["snaplen_truncated"] += 1
        dec = self._decoder.decode(linktype, data)  # type: ignore[union-attr]
        if dec is None:
            return
        etype, src, dst, proto, l4, l4_len, smac, dmac = dec
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            table.l2(etype, src, dst, l4, ts)
            return
        if proto == 6:
            tcp = parse_tcp(l4)
            if tcp is None:
                counters["tcp_bad_header"] += 1
                return
            sport, dport, seq, ack, flags, payload = tcp
            wire = l4_len - (len(l4) - len(payload))
            table.tcp(src, dst, sport, dport, seq, ack, flags, payload, wire, ts, smac, dmac)
        elif proto == 17:
            udp = parse_udp(l4)
            if udp is None:
                counters["udp_bad_header"] += 1
                return
            table.udp(src, dst, udp[0], udp[1], udp[2], ts, smac, dmac)
        else:
            counters["ip_other_protocol"] += 1

    def _time_passes(self, ts: float, now: float) -> None:
        self._next_tick = now + TICK
        assert self._table is not None and self._decoder is not None
        self._decoder.now = now
        self._table.now = now
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP
            self._table.expire(ts)
            self._decoder.expire()
            self._heap.maybe_trim()
        if self.on_tick is not None:
            self.on_tick(ts)
