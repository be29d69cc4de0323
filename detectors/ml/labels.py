"""Ground-truth labels for evaluation: per-packet CSV, packet index lists (IPAL backtrack), time ranges.

Every format becomes a ``Labels`` object that tags events with an *attack id* (an int >= 1; 0 is
normal) as the evaluation replays the capture. An attack is one labeled episode: one line of a
backtrack file (one clone, removal or swap), one run of consecutive labeled packets in a CSV, one
time range. "Caught" is judged per attack (any alerting window that holds one of its events).

Formats
-------
- **Per-packet CSV** (``.csv`` with a ``packet`` or ``index`` column and a ``label`` column; 1-based
  packet numbers as Wireshark shows them): a label of ``0``, ``normal``, ``benign`` or empty is normal;
  anything else is attack traffic. Consecutive labeled packets with the same label are one attack.
- **Packet index list** (``.txt``): one 1-based index per line (``#`` comments), consecutive indices
  grouped into attacks; or the **IPAL backtrack** format (``Cloned packet: a to b``, ``Removed packet:
  n``, ``Swapped packets: a, b``), whose indices are relative to the trace *after the previous
  change*: the operations are replayed on the original packet order to find where each changed packet
  ended up, with the semantics of IPAL's TraceManipulator (clone inserts a copy at ``b``; a swap pops
  ``a`` then ``b`` and re-inserts them crossed). A removed packet is labeled on the packet that took
  its place (the first packet after the hole).
- **Time ranges**: JSON ``{"captures": {"file.pcap": [{"id": "flood", "start": t0, "end": t1,
  "hosts": [...], "pairs": [[a, b]], "technique": "T0814"}]}}`` (``hosts``: an event is in the attack
  if its source or destination is one of them; ``pairs``: if its two endpoints are that pair; neither:
  every event in the range) or CSV with ``start,end[,name]`` columns. Times are capture timestamps
  (seconds since the epoch); a capture whose clock restarts makes time ranges ambiguous: use packet
  indices for such captures.

Packets that produce no event of their own (a duplicate dropped by TCP reassembly, a lone ACK, a
packet whose data waits behind a hole) pass their tag to the next event the sensor emits: the window
in which the manipulation happened is the one that should alert.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sensor.events import IcsEvent

NORMAL_LABELS = {"", "0", "normal", "benign", "false", "no"}


class LabelError(ValueError):
    """A label file that cannot be read: says which file, which line and why."""


@dataclass
class Attack:
    id: int
    name: str
    kind: str = ""  # clone / remove / swap / flood / scan / ...
    technique: str = ""
    events: int = 0  # events tagged with it during the replay
    first_mono: float | None = None  # monotonic time of its first tagged event
    last_mono: float | None = None
    first_ts: float | None = None  # capture time of its first tagged event
    hosts: set[str] = field(default_factory=set)  # endpoints of its tagged events (bounded)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "technique": self.technique,
            "events": self.events,
        }


@dataclass
class TimeRange:
    attack: int
    start: float
    end: float
    hosts: frozenset[str] = frozenset()
    pairs: frozenset[frozenset[str]] = frozenset()

    def matches(self, e: IcsEvent) -> bool:
        if not self.start <= e.ts <= self.end:
            return False
        if self.hosts and e.src not in self.hosts and e.dst not in self.hosts:
            return False
        if self.pairs and frozenset((e.src, e.dst)) not in self.pairs:
            return False
        return True


@dataclass
class Labels:
    """Labels of one capture. ``packet_tags``: 1-based packet index -> attack ids; ``ranges``: time ranges."""

    source: str
    attacks: dict[int, Attack] = field(default_factory=dict)
    packet_tags: dict[int, tuple[int, ...]] = field(default_factory=dict)
    ranges: list[TimeRange] = field(default_factory=list)

    def new_attack(self, name: str, kind: str = "", technique: str = "") -> Attack:
        a = Attack(len(self.attacks) + 1, name, kind, technique)
        self.attacks[a.id] = a
        return a

    @property
    def empty(self) -> bool:
        return not self.attacks


class Tagger:
    """Tags events during a replay: feed it packet indices (``packet``) and events (``tag``)."""

    def __init__(self, labels: Labels | None) -> None:
        self.labels = labels
        self._pending: list[int] = []
        self._packet_tags = labels.packet_tags if labels else {}
        self._ranges = labels.ranges if labels else []

    def packet(self, index: int) -> None:
        tags = self._packet_tags.get(index)
        if tags:
            self._pending.extend(tags)

    def tag(self, e: IcsEvent) -> tuple[int, ...]:
        """The attack ids of this event (empty = normal)."""
        if self._pending:
            tags = tuple(dict.fromkeys(self._pending))
            self._pending = []
            return tags
        if self._ranges:
            return tuple(r.attack for r in self._ranges if r.matches(e))
        return ()


# -- readers ------------------------------------------------------------------------------------------


def _group_runs(labels: Labels, indexed: Iterable[tuple[int, str]], kind: str) -> None:
    """Consecutive packet indices with the same label become one attack."""
    prev_i = None
    prev_l = None
    attack = None
    for i, lab in sorted(indexed):
        if attack is None or prev_l != lab or prev_i is None or i != prev_i + 1:
            attack = labels.new_attack(f"{lab} @{i}" if lab not in ("1", "attack") else f"packets {i}..", kind or lab)
        labels.packet_tags[i] = labels.packet_tags.get(i, ()) + (attack.id,)
        prev_i, prev_l = i, lab
    for a in labels.attacks.values():
        if a.name.endswith(".."):
            ids = [i for i, t in labels.packet_tags.items() if a.id in t]
            a.name = f"packets {min(ids)}-{max(ids)}" if len(ids) > 1 else f"packet {ids[0]}"


_BACKTRACK = re.compile(r"^(Cloned packet|Removed packet|Swapped packets):\s*(\d+)(?:\s*(?:to|,)\s*(\d+))?")


def read_backtrack(path: str | Path, n_original: int) -> Labels:
    """IPAL backtrack file -> labels on the manipulated capture (see the module docstring).

    ``n_original``: packets in the unmanipulated trace (the backtrack only lists changes)."""
    path = Path(path)
    labels = Labels(str(path))
    trace: list[int] = list(range(n_original))  # original packet ids, in order; clones get negative ids
    marks: dict[int, list[int]] = {}  # packet id -> attack ids
    next_clone = -1
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        m = _BACKTRACK.match(line.strip())
        if not m:
            continue
        op, a, b = m.group(1), int(m.group(2)), m.group(3)
        try:
            if op.startswith("Cloned"):
                if b is None:
                    raise LabelError(f"{path}:{lineno}: a clone needs a source and a destination")
                src, dst = a - 1, int(b) - 1
                attack = labels.new_attack(f"clone {a}->{b}", "clone")
                clone_id = next_clone
                next_clone -= 1
                _ = trace[src]
                trace.insert(dst, clone_id)
                marks.setdefault(clone_id, []).append(attack.id)
            elif op.startswith("Removed"):
                j = a - 1
                attack = labels.new_attack(f"remove {a}", "remove")
                trace.pop(j)
                if j < len(trace):
                    marks.setdefault(trace[j], []).append(attack.id)
            else:
                if b is None:
                    raise LabelError(f"{path}:{lineno}: a swap needs two indices")
                ia, ib = a - 1, int(b) - 1
                attack = labels.new_attack(f"swap {a}<->{b}", "swap")
                pa = trace.pop(ia)
                pb = trace.pop(ib)
                trace.insert(ia, pb)
                trace.insert(ib, pa)
                marks.setdefault(pa, []).append(attack.id)
                marks.setdefault(pb, []).append(attack.id)
        except IndexError:
            raise LabelError(f"{path}:{lineno}: index out of range for a trace of {len(trace)} packets") from None
    for pos, pid in enumerate(trace, 1):
        ids = marks.get(pid)
        if ids:
            labels.packet_tags[pos] = tuple(ids)
    return labels


def read_index_list(path: str | Path) -> Labels:
    path = Path(path)
    labels = Labels(str(path))
    items: list[tuple[int, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.split("#", 1)[0].strip().rstrip(",")
        if not s:
            continue
        for tok in re.split(r"[,\s]+", s):
            if not tok:
                continue
            if not tok.isdigit() or int(tok) < 1:
                raise LabelError(f"{path}:{lineno}: {tok!r} is not a 1-based packet index")
            items.append((int(tok), "attack"))
    _group_runs(labels, items, "packets")
    return labels


def read_csv(path: str | Path) -> Labels:
    """Per-packet CSV (packet/index + label) or time ranges (start, end[, name])."""
    path = Path(path)
    labels = Labels(str(path))
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return labels
    cols = {c.strip().lower(): c for c in rows[0].keys() if c}
    if "start" in cols and "end" in cols:
        for n, row in enumerate(rows, 2):
            try:
                t0, t1 = float(row[cols["start"]]), float(row[cols["end"]])
            except ValueError:
                raise LabelError(f"{path}:{n}: start and end must be capture timestamps (seconds)") from None
            name = row.get(cols.get("name", ""), "") or f"range {n - 1}"
            a = labels.new_attack(name, name)
            labels.ranges.append(TimeRange(a.id, t0, t1))
        return labels
    idx_col = cols.get("packet") or cols.get("index") or cols.get("frame") or cols.get("no")
    lab_col = cols.get("label") or cols.get("attack") or cols.get("class")
    if not idx_col or not lab_col:
        raise LabelError(f"{path}: a label CSV needs packet,label columns or start,end columns (found {list(cols)})")
    items = []
    for n, row in enumerate(rows, 2):
        raw_i = (row[idx_col] or "").strip()
        if not raw_i.isdigit() or int(raw_i) < 1:
            raise LabelError(f"{path}:{n}: {raw_i!r} is not a 1-based packet number")
        lab = (row[lab_col] or "").strip()
        if lab.lower() in NORMAL_LABELS:
            continue
        items.append((int(raw_i), lab))
    _group_runs(labels, items, "")
    return labels


def read_time_ranges(path: str | Path, capture_name: str) -> Labels | None:
    """The entry for ``capture_name`` in a JSON time-range file, or None when it has none."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path}: {exc}") from None
    caps = doc.get("captures", doc)
    entries = caps.get(capture_name)
    if entries is None:
        return None
    labels = Labels(f"{path}#{capture_name}")
    for i, ent in enumerate(entries):
        try:
            t0, t1 = float(ent["start"]), float(ent["end"])
        except (KeyError, TypeError, ValueError):
            raise LabelError(f"{path}: {capture_name} entry {i}: needs numeric start and end") from None
        a = labels.new_attack(str(ent.get("id", f"range {i + 1}")), str(ent.get("kind", ent.get("id", ""))),
                              str(ent.get("technique", "")))  # fmt: skip
        hosts = frozenset(ent.get("hosts", ()))
        pairs = frozenset(frozenset(p) for p in ent.get("pairs", ()))
        labels.ranges.append(TimeRange(a.id, t0, t1, hosts, pairs))
    return labels


def count_packets(path: str | Path) -> int:
    from sensor.capture import CaptureReader

    reader = CaptureReader(path)
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


def labels_for(capture: str | Path, explicit: Iterable[str] = (), original: str | Path | None = None) -> Labels | None:
    """Find the labels of one capture.

    ``explicit``: label files given on the command line, either ``CAPTURE=FILE`` (for that capture) or a
    JSON time-range file (looked up by the capture's file name). Without one, the files next to the
    capture are used: ``<capture>.backtrack.txt`` (needs ``original``, the unmanipulated trace, or a
    ``test.pcap`` in the same folder), ``<capture>.labels.csv``, ``<capture>.labels.txt``."""
    cap = Path(capture)
    for spec in explicit:
        if "=" in spec and not Path(spec).exists():
            name, file = spec.split("=", 1)
            if name in (cap.name, str(cap)):
                return read_file(file, cap, original)
            continue
        if spec.endswith(".json"):
            found = read_time_ranges(spec, cap.name)
            if found is not None:
                return found
    for suffix in (".backtrack.txt", ".labels.csv", ".labels.txt"):
        side = cap.with_name(cap.name + suffix)
        if side.exists():
            return read_file(side, cap, original)
    return None


def read_file(path: str | Path, capture: Path, original: str | Path | None = None) -> Labels:
    p = Path(path)
    if not p.exists():
        raise LabelError(f"{p}: no such label file")
    if p.suffix == ".json":
        found = read_time_ranges(p, capture.name)
        return found or Labels(str(p))
    if p.suffix == ".csv":
        return read_csv(p)
    head = p.read_text(encoding="utf-8", errors="replace")[:4096]
    if _BACKTRACK.search(head) or "!!! NOTE !!!" in head or re.search(r"^(Cloned|Removed|Swapped)", head, re.MULTILINE):
        orig = Path(original) if original else capture.with_name("test.pcap")
        if not orig.exists():
            raise LabelError(f"{p}: a backtrack file needs the unmanipulated trace (looked for {orig})")
        return read_backtrack(p, count_packets(orig))
    return read_index_list(p)
