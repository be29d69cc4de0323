"""Build the seed corpus of every fuzz target from real captures: ``python -m fuzz.corpus``.

Sources: ``<repo>/../shared/pcaps`` (the real captures; never copied into the repository) and the
project's own crafted captures in ``pcaps/``. Output: ``var/fuzz/corpus/<target>/<sha1>`` (``var/`` is
not versioned), one file per seed, named by content like libFuzzer's own corpus entries, so running
this again adds nothing twice and keeps what the fuzzer found.

- ``capture``: the first bytes of each capture file, as is and gzip-wrapped (the target's mode byte).
- ``decode``: frames of every distinct shape (link type, ethertype, IP protocol, what the decoder
  counted), and the runs of IP fragments, with their link types.
- ``flows``: each conversation's first segments with their real flags, sequence and ack numbers.
- protocol targets: each conversation of that protocol as records (one per segment, datagram or
  frame, with its direction), cut into windows of at most ``--max-bytes``.

Seeds are picked round-robin across captures and conversations, so a big capture does not crowd out
the small ones under ``--max-per-target``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import struct
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fuzz import records
from fuzz.driver import Mode
from fuzz.targets import TARGETS
from fuzz.targets import decode as decode_target
from fuzz.targets import flows as flows_target
from sensor.capture import CaptureError, CaptureReader, is_capture_file
from sensor.counters import Counters
from sensor.decode import ETH_IPV4, ETH_IPV6, Decoded, Decoder, parse_tcp, parse_udp
from sensor.protocols import registry

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = (REPO.parent / "shared" / "pcaps", REPO / "pcaps")
DEFAULT_OUT = REPO / "var" / "fuzz" / "corpus"

PROTOCOL_TARGET = {
    "modbus": "modbus",
    "dnp3": "dnp3",
    "s7comm": "s7comm",
    "iec104": "iec104",
    "enip": "enip",
    "bacnet": "bacnet",
    "opcua": "opcua",
}  # every other registry entry is an identification protocol: the "ident" target
CAPTURE_PREFIX = 16384  # bytes of each capture file kept as a capture seed
FRAMES_PER_SHAPE = 2
MAX_FRAME = 2048
WINDOWS_PER_CONVERSATION = 3
FLOW_SEGMENTS = 48


@dataclass
class Conversation:
    """One flow as seen in a capture: who serves, and its packets in capture order."""

    spec: str | None  # registry name, None when nothing claims it
    transport: str
    server_port: int
    client: tuple  # the client's (address, port)
    # (from_client, flags, seq, ack, payload) per packet; flags/seq/ack are 0 outside TCP
    packets: list[tuple[bool, int, int, int, bytes]] = field(default_factory=list)


def capture_files(sources: list[Path]) -> list[Path]:
    files = []
    for src in sources:
        if src.is_file():
            files.append(src)
        elif src.is_dir():
            files += [p for p in sorted(src.rglob("*")) if p.is_file() and is_capture_file(p)]
    return files


def _packets(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        reader = CaptureReader(path)
    except CaptureError:
        return
    with reader:
        for _ts, linktype, frame, _orig in reader:
            yield linktype, frame


def _frame_record(linktype_index: int, frame: bytes) -> bytes:
    """A decode-target record: the control byte is the link type's index (clock untouched)."""
    frame = frame[:MAX_FRAME]
    return bytes((linktype_index,)) + struct.pack("!H", len(frame)) + frame


def _linktype_index(linktype: int) -> int:
    """The decode target's index of a link type; an unknown one maps to its unsupported entry."""
    types = decode_target.LINKTYPES
    return types.index(linktype) if linktype in types else len(types) - 1


def _mode_index(modes: tuple[Mode, ...], spec: str, transport: str, port: int) -> int | None:
    fallback = None
    for i, m in enumerate(modes):
        if m.spec == spec and m.transport == transport:
            if m.port == port:
                return i
            fallback = i if fallback is None else fallback
    return fallback


class Extractor:
    """Reads the captures once and collects seed candidates per target, grouped by source."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.reg = registry()
        # target -> source key -> candidate seeds (the round-robin picks across source keys)
        self.candidates: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))

    def add(self, target: str, source: str, seed: bytes) -> None:
        self.candidates[target][source].append(seed)

    def capture(self, path: Path) -> None:
        head = path.read_bytes()[:CAPTURE_PREFIX]
        self.add("capture", path.name, b"\x00" + head)
        self.add("capture", path.name + ":gz", b"\x01" + head[:4096])

    def file(self, path: Path) -> None:
        self.capture(path)
        counters = Counters()
        decoder = Decoder(counters)
        shapes: dict[tuple, int] = defaultdict(int)
        fragments: list[tuple[int, bytes]] = []
        convs: dict[tuple, Conversation] = {}
        for linktype, frame in _packets(path):
            snapshot = dict(counters)
            d = decoder.decode(linktype, frame)
            counted = tuple(sorted(k for k, n in counters.items() if n != snapshot.get(k)))
            lt_index = _linktype_index(linktype)
            shape = (linktype, d.ethertype if d else None, d.proto if d else None, counted)
            if "ip_fragments" in counted:
                fragments.append((lt_index, frame))
            elif shapes[shape] < FRAMES_PER_SHAPE:
                shapes[shape] += 1
                self.add("decode", f"{path.name}:{shape}", _frame_record(lt_index, frame))
            if d is not None:
                self._conversation(convs, d)
        for i in range(0, len(fragments), 8):
            run = fragments[i : i + 8]
            self.add("decode", f"{path.name}:fragments", b"".join(_frame_record(lt, f) for lt, f in run))
        for key, conv in convs.items():
            self._seeds(f"{path.name}:{key}", conv)

    def _conversation(self, convs: dict[tuple, Conversation], d: Decoded) -> None:
        reg = self.reg
        if d.ethertype not in (ETH_IPV4, ETH_IPV6):
            spec = reg.ether.get(d.ethertype)
            if spec is None:
                return
            key = ("l2", d.ethertype, *sorted((d.src, d.dst)))
            conv = convs.get(key)
            if conv is None:
                conv = convs[key] = Conversation(spec.name, "l2", d.ethertype, (d.src, d.ethertype))
            conv.packets.append(((d.src, d.ethertype) == conv.client, 0, 0, 0, d.l4))
            return
        if d.proto == 6:
            tcp = parse_tcp(d.l4)
            if tcp is None:
                return
            sport, dport, seq, ack, flags, payload = tcp
            table, transport = reg.tcp, "tcp"
        elif d.proto == 17:
            udp = parse_udp(d.l4)
            if udp is None:
                return
            sport, dport, payload = udp
            seq = ack = flags = 0
            table, transport = reg.udp, "udp"
        else:
            return
        a, b = (d.src, sport), (d.dst, dport)
        key = (transport, *sorted((a, b)))
        conv = convs.get(key)
        if conv is None:
            if dport in table:
                conv = Conversation(table[dport].name, transport, dport, a)
            elif sport in table:
                conv = Conversation(table[sport].name, transport, sport, b)
            elif flags & 0x12 == 0x12:  # SYN+ACK: the sender is the server
                conv = Conversation(None, transport, sport, b)
            else:
                conv = Conversation(None, transport, dport, a)
            convs[key] = conv
        if conv.spec is None and payload:
            spec = reg.probe(payload[:64], a == conv.client)
            if spec is not None:
                conv.spec = spec.name
        conv.packets.append((a == conv.client, flags, seq, ack, payload))

    def _seeds(self, source: str, conv: Conversation) -> None:
        if conv.transport in ("tcp", "udp"):
            port = conv.server_port if conv.server_port in flows_target.PORTS else 5020
            recs = []
            size = 0
            for from_client, flags, seq, ack, payload in conv.packets[:FLOW_SEGMENTS]:
                chunk = struct.pack("!BII", flags, seq, ack) + payload[:1024]
                if size + len(chunk) > self.max_bytes:
                    break
                size += len(chunk) + 3
                recs.append((int(from_client) | (8 if conv.transport == "udp" else 0), chunk))
            if recs:
                self.add("flows", source, records.encode(flows_target.PORTS.index(port), recs))
        if conv.spec is None:
            return
        target = PROTOCOL_TARGET.get(conv.spec, "ident")
        module = importlib.import_module(f"fuzz.targets.{target}")
        selector = _mode_index(module.MODES, conv.spec, conv.transport, conv.server_port)
        if selector is None:
            return
        seen: set[tuple[bool, int]] = set()
        recs = []
        for from_client, _flags, seq, _ack, payload in conv.packets:
            if not payload and conv.transport != "l2":
                continue
            if conv.transport == "tcp":
                if (from_client, seq) in seen:
                    continue  # a retransmission
                seen.add((from_client, seq))
            recs.append((int(from_client), payload))
        windows = 0
        window: list[tuple[int, bytes]] = []
        size = 0
        for ctl, payload in recs:
            if window and size + len(payload) + 3 > self.max_bytes:
                self.add(target, source, records.encode(selector, window))
                windows += 1
                if windows >= WINDOWS_PER_CONVERSATION:
                    return
                window, size = [], 0
            window.append((ctl, payload[: self.max_bytes]))
            size += len(payload) + 3
        if window:
            self.add(target, source, records.encode(selector, window))


def round_robin(groups: dict[str, list[bytes]], limit: int) -> list[bytes]:
    picked: list[bytes] = []
    seen: set[bytes] = set()
    queues = [list(g) for _, g in sorted(groups.items())]
    while queues and len(picked) < limit:
        rest = []
        for q in queues:
            while q:
                seed = q.pop(0)
                if seed not in seen:
                    seen.add(seed)
                    picked.append(seed)
                    break
            if q:
                rest.append(q)
            if len(picked) >= limit:
                break
        queues = rest
    return picked


def build(sources: list[Path], out: Path, max_per_target: int, max_bytes: int, targets: list[str]) -> dict[str, int]:
    """Write the seeds; return the number of seeds written per target (new or already there)."""
    ex = Extractor(max_bytes)
    for path in capture_files(sources):
        ex.file(path)
    written: dict[str, int] = {}
    for target in targets:
        seeds = round_robin(ex.candidates.get(target, {}), max_per_target)
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (d / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        written[target] = len(seeds)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.corpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", action="append", type=Path, help="capture file or directory (repeatable)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus root (default: var/fuzz/corpus)")
    ap.add_argument("--max-per-target", type=int, default=400, help="seeds per target (default: 400)")
    ap.add_argument("--max-bytes", type=int, default=4096, help="largest stream seed in bytes (default: 4096)")
    ap.add_argument("--target", action="append", choices=TARGETS, help="only these targets (repeatable)")
    args = ap.parse_args(argv)
    sources = args.source or [s for s in DEFAULT_SOURCES if s.exists()]
    if not sources:
        print(f"no capture sources: looked for {', '.join(map(str, DEFAULT_SOURCES))}", file=sys.stderr)
        return 1
    written = build(sources, args.out, args.max_per_target, args.max_bytes, args.target or list(TARGETS))
    for target, n in written.items():
        print(f"{target:10s} {n:5d} seeds -> {args.out / target}")
    empty = [t for t, n in written.items() if n == 0]
    if empty:
        print(f"no seeds for: {', '.join(empty)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
