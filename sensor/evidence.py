"""Evidence: the recent packets of ICS flows kept in memory, and, when an alert fires, the packets of
its flow(s) around the alert written to a pcap file the alert points to.

```
packet ─▶ add() ─▶ ICS flow?  yes ─▶ main ring   (``ring_seconds`` / ``ring_mb``)
                              no  ─▶ other ring  (``other_seconds`` / ``other_mb``: short, for flows
                                                  identified later, on a non-standard port)
alert  ─▶ on_alert() ─▶ packets of the alert's flows from both rings since ``before_seconds`` before
                         its first evidence event ─▶ DIR/<time>_<rule>_<alert id>.pcap
                         ─▶ later packets of those flows appended for ``after_seconds``
                         ─▶ alert.extra["evidence_pcap"] = the file's path
```

- **Which packets.** A packet belongs to an ICS flow when one of its ports (or its EtherType) is one a
  protocol module registers, or when the pipeline already produced an event on its flow (learnt from
  ``on_event``: Modbus on port 5020 becomes relevant at its first PDU). Everything else stays only
  a few seconds in the *other* ring, enough for the handshake of a flow identified at its first PDU.
- **Bounded.** Both rings are bounded by age and by bytes (packet bytes plus what Python spends per
  packet, so ``ring_mb`` is close to real memory); each file by ``max_file_mb``; the files open at once
  by ``max_open``; the directory by ``max_total_mb`` and ``max_age_days`` (the oldest files are deleted
  first). Every cap hit is counted in ``stats()``.
- **One file per flow set and window.** Alerts that fire on the same flows while a file is still
  collecting (a brute-force alert every few seconds) point to that file instead of writing another.
- **Never in the capture thread.** This runs in the pipeline thread (live) or the replay loop; disk
  errors are logged and counted, never raised into the pipeline.

The format is classic pcap with nanosecond timestamps (magic ``a1b23c4d``), which Wireshark, tshark and
this project's own reader open; the link type is the one of the alert's first packet.

The module is duck-typed on alerts (``id``, ``ts``, ``first_ts``, ``rule_id``, ``events``, ``extra``,
``src``/``sport``/``dst``/``dport``/``transport``) so the sensor never imports ``alerts/``.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sensor.capture import Packet
from sensor.protocols import Registry
from sensor.protocols import registry as default_registry

log = logging.getLogger(__name__)

PCAP_HEADER = struct.Struct("<IHHiIII")  # magic, version 2.4, thiszone, sigfigs, snaplen, linktype
PCAP_RECORD = struct.Struct("<IIII")  # seconds, nanoseconds, captured length, original length
PCAP_MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144
PACKET_OVERHEAD = 200  # Python bytes a ring entry costs beyond its data (two tuples, float, bytes, deques)
_PORTS = struct.Struct("!HH")
# Ethernet type, IPv4 version/IHL, flags+fragment offset, protocol, addresses, then the L4 ports.
_ETH_IP4_PORTS = struct.Struct("!12xHBx2x2xHxB2x4s4sHH").unpack_from
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

Key = tuple  # (address a, port a, address b, port b, protocol): the lower endpoint first


@dataclass(frozen=True)
class EvidenceOptions:
    directory: str
    ring_seconds: float = 300.0  # how far back the ring of ICS packets reaches
    ring_mb: float = 64.0
    other_seconds: float = 10.0  # packets of flows not (yet) known to be ICS
    other_mb: float = 8.0
    before_seconds: float = 60.0  # packets kept in the file before the alert's first evidence event
    after_seconds: float = 10.0  # packets of the flows appended after the alert
    max_file_mb: float = 16.0
    max_total_mb: float = 1024.0  # the directory: oldest files deleted beyond this
    max_age_days: float = 30.0
    max_open: int = 64  # files still collecting their "after" packets
    max_flows_per_alert: int = 16
    max_learned_flows: int = 65_536


# -- packet -> flow key -------------------------------------------------------------------------------
def _l3_offset(linktype: int, data: bytes) -> tuple[int, int] | None:
    """(EtherType, offset of the network header) for the link types the decoder knows."""
    n = len(data)
    if linktype == 1:
        if n < 14:
            return None
        et = data[12] << 8 | data[13]
        off = 14
        while et in (0x8100, 0x88A8, 0x9100) and n >= off + 4:
            et = data[off + 2] << 8 | data[off + 3]
            off += 4
        return et, off
    if linktype == 113 and n >= 16:  # Linux cooked v1
        return data[14] << 8 | data[15], 16
    if linktype == 276 and n >= 20:  # Linux cooked v2
        return data[0] << 8 | data[1], 20
    if linktype in (101, 12, 14) and n:  # raw IP
        return (0x0800 if data[0] >> 4 == 4 else 0x86DD), 0
    if linktype in (0, 108) and n >= 5:  # BSD loopback: the version nibble tells
        return (0x0800 if data[4] >> 4 == 4 else 0x86DD), 4
    return None


def packet_flow(linktype: int, data: bytes) -> tuple[int, bytes, int, bytes, int] | None:
    """(protocol, source, source port, destination, destination port) of a packet, or None.

    IP: protocol 6/17/other with the ports (0 for non-first fragments and other protocols); link-layer
    ICS (GOOSE, PROFINET...): protocol = the EtherType, addresses = the MACs, ports 0.
    """
    l3 = _l3_offset(linktype, data)
    if l3 is None:
        return None
    et, off = l3
    n = len(data)
    if et == 0x0800:
        if n < off + 20:
            return None
        ihl = (data[off] & 15) * 4
        proto = data[off + 9]
        src = data[off + 12 : off + 16]
        dst = data[off + 16 : off + 20]
        if (data[off + 6] & 0x1F or data[off + 7]) or n < off + ihl + 4 or proto not in (6, 17):
            return proto, src, 0, dst, 0
        sport, dport = _PORTS.unpack_from(data, off + ihl)
        return proto, src, sport, dst, dport
    if et == 0x86DD:
        if n < off + 40:
            return None
        proto = data[off + 6]
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        if proto not in (6, 17) or n < off + 44:
            return proto, src, 0, dst, 0
        sport, dport = _PORTS.unpack_from(data, off + 40)
        return proto, src, sport, dst, dport
    if linktype == 1:
        return et, data[6:12], 0, data[0:6], 0
    return None


def canonical(proto: int, a: bytes, ap: int, b: bytes, bp: int) -> Key:
    """The same key for both directions of a flow."""
    return (a, ap, b, bp, proto) if (a, ap) <= (b, bp) else (b, bp, a, ap, proto)


def _address(text: str) -> bytes | None:
    """An event's address (IPv4, IPv6 or MAC text) as the bytes on the wire."""
    try:
        if ":" in text:
            if len(text) == 17 and text.count(":") == 5 and "::" not in text:
                try:
                    return bytes.fromhex(text.replace(":", ""))
                except ValueError:
                    pass
            return socket.inet_pton(socket.AF_INET6, text)
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None


def record_flow(rec: Any, ethertypes: Iterable[int] = ()) -> Key | None:
    """The flow key of an event or alert (``src``, ``sport``, ``dst``, ``dport``, ``transport``)."""
    transport = getattr(rec, "transport", "")
    src = _address(str(getattr(rec, "src", "") or ""))
    dst = _address(str(getattr(rec, "dst", "") or ""))
    if src is None or dst is None:
        return None
    sport = int(getattr(rec, "sport", 0) or 0)
    dport = int(getattr(rec, "dport", 0) or 0)
    if transport == "tcp":
        return canonical(6, src, sport, dst, dport)
    if transport == "udp":
        return canonical(17, src, sport, dst, dport)
    if len(src) == 6 and len(dst) == 6:  # link layer: the flow table puts the EtherType in the ports
        et = sport or dport
        if et in ethertypes:
            return canonical(et, src, 0, dst, 0)
    return None


# -- the rings --------------------------------------------------------------------------------------
class _Ring:
    """Packets in arrival order, bounded by age and by bytes, indexed by flow."""

    __slots__ = ("by_flow", "bytes", "evicted", "max_bytes", "order", "seconds")

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.order: deque[tuple[Packet, Key]] = deque()
        self.by_flow: dict[Key, deque[Packet]] = {}
        self.bytes = 0
        self.evicted = 0

    def add(self, pkt: Packet, key: Key) -> None:
        order = self.order
        order.append((pkt, key))
        flow = self.by_flow.get(key)
        if flow is None:
            flow = self.by_flow[key] = deque()
        flow.append(pkt)
        self.bytes += len(pkt[2]) + PACKET_OVERHEAD
        oldest = pkt[0] - self.seconds
        if self.bytes <= self.max_bytes and order[0][0][0] >= oldest:
            return
        # capture time may run backwards (merged files): then only the byte cap applies
        while order and (self.bytes > self.max_bytes or order[0][0][0] < oldest):
            old, okey = order.popleft()
            q = self.by_flow[okey]
            q.popleft()
            if not q:
                del self.by_flow[okey]
            self.bytes -= len(old[2]) + PACKET_OVERHEAD
            self.evicted += 1

    def since(self, key: Key, start: float) -> list[Packet]:
        flow = self.by_flow.get(key)
        if not flow:
            return []
        return [p for p in flow if p[0] >= start]

    def clear(self) -> None:
        self.order.clear()
        self.by_flow.clear()
        self.bytes = 0


# -- evidence files ---------------------------------------------------------------------------------
class _Job:
    """One evidence file, open while it collects the packets that follow its alert."""

    __slots__ = ("alerts", "bytes", "fh", "full", "keys", "linktype", "packets", "path", "until")

    def __init__(self, path: Path, fh: BinaryIO, keys: frozenset, until: float, linktype: int) -> None:
        self.path = path
        self.fh = fh
        self.keys = keys
        self.until = until
        self.linktype = linktype
        self.bytes = PCAP_HEADER.size
        self.packets = 0
        self.full = False
        self.alerts = 1


class _Retention:
    """The evidence files on disk, oldest first: deletes beyond a total size and an age."""

    def __init__(self, directory: Path, max_bytes: int, max_age: float) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.files: dict[Path, tuple[float, int]] = {}  # path -> (mtime, size), insertion = age order
        self.total = 0
        self.deleted = 0
        found = []
        for p in directory.glob("*.pcap"):
            try:
                st = p.stat()
            except OSError:
                continue
            found.append((st.st_mtime, p, st.st_size))
        for mtime, p, size in sorted(found):
            self.files[p] = (mtime, size)
            self.total += size

    def add(self, path: Path, size: int) -> None:
        old = self.files.pop(path, None)
        if old is not None:
            self.total -= old[1]
        self.files[path] = (time.time(), size)
        self.total += size

    def enforce(self, keep: set[Path]) -> None:
        now = time.time()
        for path in list(self.files):
            mtime, size = self.files[path]
            if self.total <= self.max_bytes and now - mtime <= self.max_age:
                break
            if path in keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("evidence: cannot delete %s: %s", path, exc)
                continue
            del self.files[path]
            self.total -= size
            self.deleted += 1


class EvidenceRecorder:
    """The evidence ring and the evidence files (see the module docstring)."""

    def __init__(self, options: EvidenceOptions, registry: Registry | None = None) -> None:
        self.options = options
        reg = registry or default_registry()
        self.tcp_ports = frozenset(reg.tcp)
        self.udp_ports = frozenset(reg.udp)
        self.ethertypes = frozenset(reg.ether)
        self.directory = Path(options.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ring = _Ring(options.ring_seconds, int(options.ring_mb * (1 << 20)))
        self.other = _Ring(options.other_seconds, int(options.other_mb * (1 << 20)))
        self.learned: dict[Key, None] = {}  # flows on non-standard ports the pipeline found ICS in
        self._learned_text: dict[tuple, None] = {}  # the same, keyed as events spell them (cheap check)
        self.retention = _Retention(self.directory, int(options.max_total_mb * (1 << 20)), options.max_age_days * 86400)
        self._jobs: dict[frozenset, _Job] = {}  # open files by flow set, oldest first
        self._by_flow: dict[Key, list[_Job]] = {}
        self._next_check = 0.0
        self.max_file_bytes = int(options.max_file_mb * (1 << 20))
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "packets_unparsed",
                "files_written",
                "packets_written",
                "bytes_written",
                "alerts_with_evidence",
                "alerts_sharing_a_file",
                "alerts_without_packets",
                "files_truncated",
                "files_closed_early",
                "linktype_skipped",
                "learned_flows_evicted",
                "errors",
            ),
            0,
        )

    # -- the per-packet path --------------------------------------------------------------------
    def add(self, pkt: Packet) -> None:
        """Keep one packet (call it before the pipeline sees the packet: an alert raised by that
        packet then finds it in the ring)."""
        data = pkt[2]
        # The common case in one unpack: Ethernet, IPv4 without options, not a fragment, TCP or UDP.
        if pkt[1] == 1 and len(data) >= 38:
            et, vihl, frag, proto, a, b, ap, bp = _ETH_IP4_PORTS(data)
            if et != 0x0800 or vihl != 0x45 or frag & 0x3FFF or (proto != 6 and proto != 17):
                flow = packet_flow(1, data)
                if flow is None:
                    self.counters["packets_unparsed"] += 1
                    return
                proto, a, ap, b, bp = flow
        else:
            flow = packet_flow(pkt[1], data)
            if flow is None:
                self.counters["packets_unparsed"] += 1
                return
            proto, a, ap, b, bp = flow
        key = (a, ap, b, bp, proto) if (a, ap) <= (b, bp) else (b, bp, a, ap, proto)
        if proto == 6:
            ics = ap in self.tcp_ports or bp in self.tcp_ports
        elif proto == 17:
            ics = ap in self.udp_ports or bp in self.udp_ports
        else:
            ics = proto in self.ethertypes
        if ics or key in self.learned:
            self.ring.add(pkt, key)
        else:
            self.other.add(pkt, key)
        if self._by_flow:
            jobs = self._by_flow.get(key)
            if jobs:
                self._append(jobs, pkt)
        if pkt[0] >= self._next_check:
            self._next_check = pkt[0] + 1.0
            self.expire(pkt[0])

    def tap(self, packets: Iterable[Packet]) -> Iterator[Packet]:
        """``packets`` unchanged, each one kept first (wrap a replay's reader with this)."""
        add = self.add
        for pkt in packets:
            add(pkt)
            yield pkt

    def on_event(self, event: Any) -> None:
        """Learn the ICS flows on non-standard ports (an event is proof the flow is ICS)."""
        transport = event.transport
        if transport == "tcp":
            ports = self.tcp_ports
        elif transport == "udp":
            ports = self.udp_ports
        else:
            return
        if event.sport in ports or event.dport in ports:
            return
        text = (event.src, event.sport, event.dst, event.dport, transport)
        if text in self._learned_text:
            return
        key = record_flow(event)
        if key is None:
            return
        if len(self.learned) >= self.options.max_learned_flows:
            del self.learned[next(iter(self.learned))]
            del self._learned_text[next(iter(self._learned_text))]
            self.counters["learned_flows_evicted"] += 1
        self.learned[key] = None
        self._learned_text[text] = None

    # -- alerts -------------------------------------------------------------------------------------
    def on_alert(self, alert: Any) -> str | None:
        """Write the evidence file of ``alert`` and set ``alert.extra["evidence_pcap"]``; its path, or
        None when the ring holds no packet of the alert's flows."""
        opts = self.options
        events = tuple(getattr(alert, "events", ()) or ())
        keys: set[Key] = set()
        for rec in (*events, alert):
            if len(keys) >= opts.max_flows_per_alert:
                break
            key = record_flow(rec, self.ethertypes)
            if key is not None:
                keys.add(key)
        if not keys:
            self.counters["alerts_without_packets"] += 1
            return None
        fkeys = frozenset(keys)
        ts = float(getattr(alert, "ts", 0.0) or 0.0)
        job = self._jobs.get(fkeys)
        if job is not None:
            job.until = max(job.until, ts + opts.after_seconds)
            job.alerts += 1
            self.counters["alerts_sharing_a_file"] += 1
            return self._refer(alert, job.path)
        first = min((e.ts for e in events), default=float(getattr(alert, "first_ts", 0.0) or ts))
        start = min(first, ts) - opts.before_seconds
        packets: list[Packet] = []
        for key in keys:
            packets.extend(self.ring.since(key, start))
            packets.extend(self.other.since(key, start))
        if not packets:
            self.counters["alerts_without_packets"] += 1
            return None
        packets.sort(key=lambda p: p[0])  # stable: same-time packets keep their arrival order
        job = self._open(alert, fkeys, ts + opts.after_seconds, packets[0][1])
        if job is None:
            return None
        self._write(job, packets)
        try:
            job.fh.flush()  # a complete, readable file from the start; the rest is appended
        except OSError as exc:
            self._failed(job, exc)
            return None
        self.counters["alerts_with_evidence"] += 1
        return self._refer(alert, job.path)

    @staticmethod
    def _refer(alert: Any, path: Path) -> str:
        text = str(path)
        extra = getattr(alert, "extra", None)
        if isinstance(extra, dict):
            extra["evidence_pcap"] = text
        return text

    def _open(self, alert: Any, keys: frozenset, until: float, linktype: int) -> _Job | None:
        opts = self.options
        while len(self._jobs) >= opts.max_open:
            self._close(next(iter(self._jobs.values())))
            self.counters["files_closed_early"] += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(float(getattr(alert, "ts", 0.0) or 0.0)))
        rule = _SAFE.sub("_", str(getattr(alert, "rule_id", "alert")))[:60]
        ident = _SAFE.sub("_", str(getattr(alert, "id", "")))[:24]
        path = (self.directory / f"{stamp}_{rule}_{ident}.pcap").resolve()
        try:
            fh = open(path, "wb", buffering=1 << 16)
            fh.write(PCAP_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, linktype))
        except OSError as exc:
            self.counters["errors"] += 1
            log.error("evidence: cannot write %s: %s", path, exc)
            return None
        job = _Job(path, fh, keys, until, linktype)
        self._jobs[keys] = job
        for key in keys:
            self._by_flow.setdefault(key, []).append(job)
        self.counters["files_written"] += 1
        self.retention.add(path, PCAP_HEADER.size)
        self.retention.enforce({j.path for j in self._jobs.values()})
        return job

    def _write(self, job: _Job, packets: Iterable[Packet]) -> None:
        if job.full:
            return
        parts = []
        limit = self.max_file_bytes
        size = job.bytes
        n = 0
        for ts, linktype, data, orig_len in packets:
            if linktype != job.linktype:
                self.counters["linktype_skipped"] += 1
                continue
            rec = PCAP_RECORD.size + len(data)
            if size + rec > limit:
                job.full = True
                self.counters["files_truncated"] += 1
                break
            sec = int(ts)
            nsec = min(int(round((ts - sec) * 1e9)), 999_999_999)
            parts.append(PCAP_RECORD.pack(sec, nsec, len(data), max(orig_len, len(data))))
            parts.append(data)
            size += rec
            n += 1
        if not n:
            return
        try:
            job.fh.write(b"".join(parts))
        except OSError as exc:
            self._failed(job, exc)
            return
        self.counters["packets_written"] += n
        self.counters["bytes_written"] += size - job.bytes
        job.bytes = size
        job.packets += n

    def _append(self, jobs: list[_Job], pkt: Packet) -> None:
        for job in list(jobs):
            if pkt[0] > job.until:
                self._close(job)
            else:
                self._write(job, (pkt,))

    def _failed(self, job: _Job, exc: OSError) -> None:
        self.counters["errors"] += 1
        log.error("evidence: writing %s failed: %s", job.path, exc)
        job.full = True
        self._close(job)

    def _close(self, job: _Job) -> None:
        if self._jobs.get(job.keys) is job:
            del self._jobs[job.keys]
        for key in job.keys:
            jobs = self._by_flow.get(key)
            if jobs and job in jobs:
                jobs.remove(job)
                if not jobs:
                    del self._by_flow[key]
        try:
            job.fh.close()
        except OSError as exc:
            self.counters["errors"] += 1
            log.error("evidence: closing %s failed: %s", job.path, exc)
        self.retention.add(job.path, job.bytes)

    # -- time and the end -------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Close the files whose window ended; flush the others (so they can be opened meanwhile)."""
        for job in list(self._jobs.values()):
            if now > job.until:
                self._close(job)
            else:
                try:
                    job.fh.flush()
                except OSError as exc:
                    self._failed(job, exc)
        self.retention.enforce({j.path for j in self._jobs.values()})

    def new_capture(self) -> None:
        """A new file of a replay: flows never span files, so neither does evidence."""
        for job in list(self._jobs.values()):
            self._close(job)
        self.ring.clear()
        self.other.clear()
        self.learned.clear()
        self._learned_text.clear()
        self._next_check = 0.0

    def close(self) -> None:
        for job in list(self._jobs.values()):
            self._close(job)
        self.retention.enforce(set())

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out.update(
            {
                "directory": str(self.directory),
                "ring_packets": len(self.ring.order),
                "ring_bytes": self.ring.bytes,
                "ring_evicted": self.ring.evicted,
                "other_packets": len(self.other.order),
                "other_evicted": self.other.evicted,
                "learned_flows": len(self.learned),
                "open_files": len(self._jobs),
                "files_on_disk": len(self.retention.files),
                "bytes_on_disk": self.retention.total,
                "files_deleted": self.retention.deleted,
            }
        )
        return out


def instrument_pipeline(pipeline: Any, recorder: EvidenceRecorder) -> None:
    """Make a ``Pipeline`` feed ``recorder`` (for ``replay``): every packet goes through the ring before
    the pipeline sees it, every event teaches it the ICS flows, and each file starts a fresh ring
    (flows never span files).

    Call it before the first ``start``/``replay_file``: it wraps the instance's ``start``, ``run`` and
    ``on_event`` (the flow table takes ``on_event`` at ``start``)."""
    start = pipeline.start
    run = pipeline.run

    def start_with_evidence(path: str = "<live>") -> Any:
        recorder.new_capture()
        return start(path)

    def run_with_evidence(packets: Iterable[Packet], progress: Callable[[int, int], None] | None = None) -> None:
        return run(recorder.tap(packets), progress)

    pipeline.start = start_with_evidence
    pipeline.run = run_with_evidence
    on_event = pipeline.on_event
    learn = recorder.on_event
    if on_event is None:
        pipeline.on_event = learn
    else:

        def both(event: Any) -> None:
            learn(event)
            on_event(event)

        pipeline.on_event = both
