"""Evaluate the learn-then-protect baseline on the IPAL IEC 104 dataset (../shared/datasets/ipal_iec104).

Learn on ``train.pcap``; replay ``test.pcap`` (normal: every alert is a false one) and every
manipulated ``{C,R,S}-{rate}-{seed}.pcap``; compare the alerts with the manipulated packets.

Ground truth (packet positions are 1-based, in the manipulated file):

- C (clone): the ``.backtrack.txt`` lines ``Cloned packet: a to b`` replayed in order on the list of
  test.pcap's packets (the packet at ``a`` is copied and inserted at ``b``, both in the numbering of
  the file as it was before that line; checked: the replay reproduces the file byte for byte). The
  manipulated packets are the clones' final positions.
- R (remove): the lines ``Removed packet: i`` replayed the same way (checked the same way); the
  manipulated position is the packet that now follows the removed one.
- S (swap): the swap lines do not replay as plain swaps (the tool moves a third packet as well), so
  the ground truth is taken from the files themselves: every position whose packet differs from
  test.pcap's packet at that position (timestamps stay in place in these files; payloads move).

An alert is located at the packets it speaks about (``locate``): the packet of its evidence event,
or for a timing alert the packets from the previous poll to the one that completed it (for a stopped
poll, from the start of the silence to the packet whose time triggered the check). A manipulated packet is
detected when an alert is triggered at it or at one of the next ``WINDOW`` packets (a missing or
injected frame shows in the numbers of the frames that follow it). An alert is false when no
manipulated packet lies in its span or in the ``WINDOW`` packets before it, and no manipulation
touched its connection earlier in the file (a clone or a swap that makes TCP open a connection early
has TCP drop that connection's real packets later: the alert is the consequence, far from the
cause). A correct alert triggered later than the window (a slow poll noticed at the next poll, 12 s
later) is not false, but gives no detection credit either.

Run: ``python -m tools.eval_baseline_ipal [--window N] [--out docs/baseline.md]``. With ``--out`` the
results table replaces the block between the ``<!-- ipal-results -->`` markers in that file.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from detectors.baseline.learn import learn_captures
from detectors.baseline.protect import BaselineDetector
from sensor.capture import CaptureReader
from sensor.pipeline import Pipeline

DATASET = REPO.parent / "shared" / "datasets" / "ipal_iec104"
WINDOW = 5
MARK_BEGIN = "<!-- ipal-results -->"
MARK_END = "<!-- /ipal-results -->"
_CLONE = re.compile(r"Cloned packet: (\d+) to (\d+)")
_REMOVE = re.compile(r"Removed packet: (\d+)")
_SWAP = re.compile(r"Swapped packets: (\d+), (\d+)")


def read_packets(path: Path) -> list[tuple[float, bytes]]:
    reader = CaptureReader(path)
    try:
        return [(ts, bytes(data)) for ts, _lt, data, _ol in reader]
    finally:
        reader.close()


def ports_of(frame: bytes) -> tuple[int, int] | None:
    """TCP/UDP ports of an Ethernet/IPv4 frame (what the IPAL files hold)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    off = 14 + ihl
    if len(frame) < off + 4:
        return None
    return struct.unpack_from("!HH", frame, off)


def conn_of(frame: bytes) -> frozenset[int]:
    """The connection a packet belongs to, direction-agnostic: its two ports (IPAL rewrote the
    client port of every copy of the connection, the addresses are the same)."""
    p = ports_of(frame)
    return frozenset(p) if p else frozenset()


def ground_truth_detail(
    name: str, base: list[bytes], final: list[bytes], backtrack: str
) -> tuple[list[int], list[tuple[int, frozenset[int]]]]:
    """(1-based positions of the manipulated packets in the final file, and (position, connection)
    of every packet a manipulation touched: the clone, the removed packet, both packets of a swap)."""
    kind = name[0]
    if kind == "S":
        pos = [i + 1 for i, (a, b) in enumerate(zip(base, final)) if a != b]
        touched = [(p, conn_of(final[p - 1])) for p in pos] + [(p, conn_of(base[p - 1])) for p in pos]
        return pos, touched
    state: list[tuple[str, int]] = [("o", i) for i in range(len(base))]
    removed: list[tuple[int, int]] = []  # (original index of the removed packet, marker seq)
    for line in backtrack.splitlines():
        m = _CLONE.match(line)
        if m:
            a, b = int(m[1]), int(m[2])
            state.insert(b - 1, ("c", state[a - 1][1]))
            continue
        m = _REMOVE.match(line)
        if m:
            i = int(m[1])
            gone = state[i - 1][1]
            del state[i - 1]
            if i - 1 < len(state):  # mark the packet that now holds the removed one's position
                k, idx = state[i - 1]
                state[i - 1] = (k + "r", idx)
                removed.append((idx, gone))
    if len(state) != len(final) or any(base[s[1]] != final[i] for i, s in enumerate(state)):
        raise SystemExit(f"{name}: the backtrack file does not replay onto test.pcap as documented")
    if kind == "C":
        pos = [i + 1 for i, s in enumerate(state) if s[0].startswith("c")]
        return pos, [(p, conn_of(final[p - 1])) for p in pos]
    pos = [i + 1 for i, s in enumerate(state) if s[0].endswith("r")]
    gone_by_next = {}
    for nxt, gone in removed:
        gone_by_next.setdefault(nxt, []).append(gone)
    touched = []
    for p in pos:
        for gone in gone_by_next.get(state[p - 1][1], []):
            touched.append((p, conn_of(base[gone])))
    return pos, touched


def ground_truth(name: str, base: list[bytes], final: list[bytes], backtrack: str) -> list[int]:
    """1-based positions of the manipulated packets in the final file."""
    return ground_truth_detail(name, base, final, backtrack)[0]


@dataclass
class FileResult:
    name: str
    kind: str
    rate: str
    seed: str
    manipulated: int
    detected: int
    alerts: int
    false_alerts: int  # alerts no manipulation explains
    off_target: int = 0  # alerts at no manipulated packet (explained by one earlier on their connection, or not)
    by_rule: dict[str, int] = field(default_factory=dict)


def replay(detector: BaselineDetector, path: Path) -> list[Any]:
    alerts: list[Any] = []

    def on_event(e: Any) -> None:
        a = detector.observe(e)
        if a:
            alerts.extend(a)

    def on_tick(ts: float) -> None:
        a = detector.tick(ts)
        if a:
            alerts.extend(a)

    Pipeline(None, on_event=on_event, on_tick=on_tick).replay_file(path)
    alerts.extend(detector.flush())
    return alerts


def locate(alerts: list[Any], packets: list[tuple[float, bytes]]) -> list[tuple[int, int] | None]:
    """For each alert, the span of packet positions (1-based, inclusive) it speaks about; the span's
    end is the packet that triggered it.

    A point alert (new function, sequence anomaly, ...) is at the packet of its evidence event. A
    timing alert speaks about the interval between two polls: from the previous poll's packet (or the
    last poll seen, for a stopped poll) to the packet that completed it (for a stopped poll, the
    packet whose time triggered the check). Events are matched to packets by (time, ports); an event
    delivered late by TCP reassembly may carry the time of a packet of the other direction, so the
    reversed ports are tried too. None when no packet matches."""
    index: dict[tuple[float, int, int], list[int]] = defaultdict(list)
    by_ts: dict[float, list[int]] = defaultdict(list)
    for i, (ts, frame) in enumerate(packets):
        p = ports_of(frame)
        by_ts[ts].append(i + 1)
        if p is not None:
            index[(ts, p[0], p[1])].append(i + 1)

    def find(ts: float, sport: int, dport: int, after: int = 0) -> int | None:
        cands = index.get((ts, sport, dport)) or index.get((ts, dport, sport)) or by_ts.get(ts) or []
        later = [c for c in cands if c >= after]
        return (later or cands or [None])[0]

    out: list[tuple[int, int] | None] = []
    for a in alerts:
        e = a.events[-1] if a.events else None
        if e is None:
            out.append(None)
            continue
        here = find(e.ts, e.sport, e.dport)
        seen = a.extra.get("seen", {}) if a.extra else {}
        if a.rule_id in ("baseline-poll-faster", "baseline-poll-slower") and "previous_ts" in seen and here is not None:
            prev = find(seen["previous_ts"], e.sport, e.dport)
            out.append((min(prev, here), here) if prev is not None else (here, here))
        elif a.rule_id == "baseline-poll-stopped" and here is not None:
            # the silence runs from where it began (the last poll seen, or the event that began the
            # timing epoch) to the last event seen before the check that noticed it
            frm = seen.get("silence_from") or {}
            to = seen.get("noticed_after") or {}
            start = find(frm["ts"], frm["sport"], frm["dport"]) if frm else here
            end = find(to["ts"], to["sport"], to["dport"]) if to else None
            start = start or here
            out.append((start, end if end is not None and end >= start else start))
        else:
            out.append((here, here) if here is not None else None)
    return out


def evaluate(name: str, baseline: Any, base: list[bytes], window: int) -> FileResult:
    path = DATASET / f"{name}.pcap"
    packets = read_packets(path)
    final = [f for _, f in packets]
    truth: list[int] = []
    touched: list[tuple[int, frozenset[int]]] = []
    if name != "test":
        truth, touched = ground_truth_detail(name, base, final, (DATASET / f"{name}.pcap.backtrack.txt").read_text())
    det = BaselineDetector(baseline, "train.pcap")
    alerts = replay(det, path)
    spans = locate(alerts, packets)
    truth_sorted = sorted(set(truth))
    # detected: an alert triggered at the manipulated packet or within the next `window` packets
    detected = sum(1 for p in truth_sorted if any(sp and p <= sp[1] <= p + window for sp in spans))
    # false: an alert explained by no manipulation: none in its span (widened by `window` before it),
    # and none earlier on its own connection (a clone or swap that opened the connection early makes
    # TCP drop that connection's real packets later on: the alert is the consequence, far away)
    false_alerts = 0
    off_target = 0
    for a, sp in zip(alerts, spans):
        if sp is not None and any(sp[0] - window <= p <= sp[1] for p in truth_sorted):
            continue
        off_target += 1
        conns = _alert_conns(a)
        end = sp[1] if sp is not None else len(final)
        if any(p <= end and c in conns for p, c in touched):
            continue
        false_alerts += 1
    by_rule: dict[str, int] = defaultdict(int)
    for a in alerts:
        by_rule[a.rule_id] += 1
    kind, rate, seed = (name.split("-") + ["", ""])[:3] if name != "test" else ("test", "", "")
    return FileResult(
        name, kind, rate, seed, len(truth), detected, len(alerts), false_alerts, off_target, dict(by_rule)
    )


def _alert_conns(a: Any) -> set[frozenset[int]]:
    conns = {frozenset((e.sport, e.dport)) for e in a.events}
    for key in ("silence_from", "noticed_after"):
        w = (a.extra.get("seen") or {}).get(key) if a.extra else None
        if w:
            conns.add(frozenset((w["sport"], w["dport"])))
    return conns


def run(window: int = WINDOW, names: list[str] | None = None) -> tuple[list[FileResult], dict[str, Any]]:
    t0 = time.perf_counter()
    baseline, _ = learn_captures([str(DATASET / "train.pcap")])
    base = [f for _, f in read_packets(DATASET / "test.pcap")]
    if names is None:
        names = ["test"] + sorted(p.stem for p in DATASET.glob("[CRS]-*.pcap"))
    results = [evaluate(n, baseline, base, window) for n in names]
    return results, {"seconds": time.perf_counter() - t0, "window": window}


def table(results: list[FileResult], window: int) -> str:
    lines = []
    test = [r for r in results if r.kind == "test"]
    if test:
        lines.append(f"Normal traffic: `test.pcap` raised **{test[0].alerts}** alert(s).")
        lines.append("")
    lines.append(
        f"Detection rate = manipulated packets with an alert triggered at them or at one of the next {window} packets; "
        "'not at a manipulated packet' = alerts with no manipulated packet in what they speak about (their packet and the "
        f"{window} before it; for a timing alert, the packets between the two polls or the silence it measured); "
        "false alerts = those of them that no manipulation explains either (none earlier on their own connection: "
        "a clone or swap that opens a connection early makes TCP drop its real packets later). Sums over seeds 1-4."
    )
    lines.append("")
    lines.append(
        "| manipulation | rate | manipulated packets | detected | detection rate | alerts | not at a manipulated packet | false alerts |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    names = {"C": "clone", "R": "remove", "S": "swap"}
    groups: dict[tuple[str, str], list[FileResult]] = defaultdict(list)
    for r in results:
        if r.kind != "test":
            groups[(r.kind, r.rate)].append(r)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for (kind, rate), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
        m = sum(r.manipulated for r in rs)
        d = sum(r.detected for r in rs)
        al = sum(r.alerts for r in rs)
        fa = sum(r.false_alerts for r in rs)
        ot = sum(r.off_target for r in rs)
        t = totals[kind]
        for k, v in enumerate((m, d, al, ot, fa)):
            t[k] += v
        lines.append(f"| {names[kind]} | {rate} | {m} | {d} | {100.0 * d / m if m else 0:.1f}% | {al} | {ot} | {fa} |")
    for kind, (m, d, al, ot, fa) in sorted(totals.items()):
        lines.append(
            f"| **{names[kind]}, all rates** | | {m} | {d} | **{100.0 * d / m if m else 0:.1f}%** | {al} | {ot} | {fa} |"
        )
    lines.append("")
    lines.append("False alerts per file:")
    lines.append("")
    lines.append(
        "| file | manipulated | detected | alerts | not at a manipulated packet | false alerts | alerts by rule |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        rules = ", ".join(f"{k.removeprefix('baseline-')} {v}" for k, v in sorted(r.by_rule.items()))
        lines.append(
            f"| {r.name}.pcap | {r.manipulated} | {r.detected} | {r.alerts} | {r.off_target} | {r.false_alerts} | {rules} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--window", type=int, default=WINDOW, help="packets after a manipulated one where an alert still counts"
    )
    ap.add_argument("--out", help="Markdown file whose results block is replaced (e.g. docs/baseline.md)")
    ap.add_argument("files", nargs="*", help="dataset file stems (default: test and every manipulated file)")
    args = ap.parse_args(argv)
    if not DATASET.is_dir():
        print(f"eval_baseline_ipal: dataset not found at {DATASET}", file=sys.stderr)
        return 1
    results, info = run(args.window, args.files or None)
    text = table(results, args.window)
    print(text)
    print(f"\n({info['seconds']:.1f}s)", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        doc = out.read_text(encoding="utf-8") if out.exists() else ""
        block = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
        if MARK_BEGIN in doc and MARK_END in doc:
            doc = doc[: doc.index(MARK_BEGIN)] + block + doc[doc.index(MARK_END) + len(MARK_END) :]
        else:
            doc = doc + ("\n" if doc and not doc.endswith("\n") else "") + block + "\n"
        out.write_text(doc, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
