"""The baseline's data model: what "normal" is, as a bounded summary (never a copy of events).

One ``Baseline`` holds:

- ``assets``: every host seen while learning (address -> MAC, the protocols it spoke as client/server);
- ``pairs``: per talker pair and protocol (client, server, protocol): the functions used (by which
  side), per function and unit the address ranges touched (``IntervalSet``: merged intervals, at most
  ``max_intervals`` of them; when full the two closest are merged, so the set only ever grows to a
  superset and never forgets an address it saw), the value ranges written (min/max per address, or
  per function when there are too many addresses), the periodic requests (``PollEntry``: median
  period and spread, and the bounds protect mode uses), and the sequence anomalies seen (IEC 104);
- ``runs``: what was learned from (when, which captures, how many events);
- ``accepted``: deviations an analyst accepted into the baseline (who, why, when, what changed).

Everything here is plain data with ``to_dict``/``from_dict``; the YAML form (``yamlio``) writes the
dicts in a fixed order so a baseline diffs cleanly in git. Keys:

- pair: ``(client, server, protocol)``
- function: ``(side, name)`` where side is ``client`` (it sent it) or ``server``
- unit: the unit id / common address, or None
- poll signature: ``(side, function, unit, address, quantity)``
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1

# Defaults of the settings block (each is written into the YAML so a reviewer sees and can tune it).
DEFAULT_SETTINGS: dict[str, float | int] = {
    "period_mad_k": 5.0,  # spread = max(k * 1.4826 * MAD, rel * median, abs)
    "period_rel_tol": 0.25,
    "period_abs_tol": 0.05,  # seconds
    "stop_factor": 3.0,  # a poll is stopped after max(stop_factor * median, high + spread) of silence
    "min_poll_samples": 8,  # intervals needed before a request counts as periodic
    "max_poll_cv": 0.2,  # robust coefficient of variation (1.4826 * MAD / median) of a periodic request
    "capture_gap": 60.0,  # seconds without any event: a capture gap, timing state restarts
    "max_intervals": 32,  # address intervals kept per function and unit
    "max_value_addresses": 64,  # addresses with their own value range, per function and unit
    "sequence_hold_events": 8,  # after a sequence alert, that flow's next N events raise no other
}

# Caps while learning (beyond them things are counted, never silently dropped).
MAX_PAIRS = 4096
MAX_FUNCTIONS = 256  # per pair
MAX_UNITS = 64  # per function
MAX_POLLS = 256  # periodic signatures per pair
MAX_ASSETS = 10_000

SIDES = ("client", "server")
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data


def _r(x: float, nd: int = 6) -> float | int:
    """Round a measured float for the YAML, so re-learning the same traffic diffs as nothing."""
    if isinstance(x, int):
        return x
    return round(float(x), nd) if math.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------------
# Address intervals
# --------------------------------------------------------------------------------------------------


class IntervalSet:
    """Sorted, merged, closed integer intervals ``[lo, hi]`` with a cap on their number.

    Adding merges overlapping and adjacent intervals. When more than ``cap`` remain, the two
    neighbours with the smallest gap between them are merged (a superset: coverage only grows, the
    set is a summary that may cover a few addresses never seen, never one less). ``merged`` counts
    those forced merges so the YAML can say the summary was coarsened.
    """

    __slots__ = ("cap", "hi", "lo", "merged")

    def __init__(self, cap: int = 32) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.cap = max(1, cap)
        self.merged = 0

    def __len__(self) -> int:
        return len(self.lo)

    def contains(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.lo, lo) - 1
        return i >= 0 and self.hi[i] >= hi

    def add(self, lo: int, hi: int) -> None:
        if hi < lo:
            lo, hi = hi, lo
        los, his = self.lo, self.hi
        i = bisect.bisect_right(los, lo) - 1
        if i >= 0 and his[i] >= hi:  # the common case: already covered
            return
        # first interval that can merge: the one before if it touches, else the insertion point
        if i >= 0 and his[i] >= lo - 1:
            start = i
            lo = los[i]
        else:
            start = i + 1
        end = start
        n = len(los)
        while end < n and los[end] <= hi + 1:
            hi = max(hi, his[end])
            end += 1
        los[start:end] = [lo]
        his[start:end] = [hi]
        while len(los) > self.cap:
            self._merge_closest()

    def _merge_closest(self) -> None:
        los, his = self.lo, self.hi
        gaps = [b - a for a, b in zip(his, los[1:])]
        best = gaps.index(min(gaps))  # the first of the closest neighbours: deterministic
        his[best] = his[best + 1]
        del los[best + 1]
        del his[best + 1]
        self.merged += 1

    def update(self, other: IntervalSet) -> None:
        for lo, hi in zip(other.lo, other.hi):
            self.add(lo, hi)
        self.merged += other.merged

    def to_list(self) -> list[list[int]]:
        return [[lo, hi] for lo, hi in zip(self.lo, self.hi)]

    @classmethod
    def from_list(cls, items: Iterable[Iterable[int]] | None, cap: int = 32) -> IntervalSet:
        s = cls(cap)
        for item in items or ():
            vals = list(item) if not isinstance(item, int) else [item, item]
            if len(vals) == 1:
                vals = vals * 2
            s.add(int(vals[0]), int(vals[1]))
        return s

    def describe(self) -> str:
        return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in zip(self.lo, self.hi)) or "none"


# --------------------------------------------------------------------------------------------------
# Per function and unit: addresses and written values
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class UnitEntry:
    """Addresses one function touched on one unit, and the values written there."""

    addresses: IntervalSet
    values: dict[int, list[float]] = field(default_factory=dict)  # address -> [min, max]
    values_any: list[float] | None = None  # [min, max] over addresses beyond the per-address cap
    count: int = 0

    def add_value(self, address: int, v: float, cap: int) -> None:
        r = self.values.get(address)
        if r is not None:
            if v < r[0]:
                r[0] = v
            elif v > r[1]:
                r[1] = v
            return
        if len(self.values) < cap:
            self.values[address] = [v, v]
            return
        a = self.values_any
        if a is None:
            self.values_any = [v, v]
        elif v < a[0]:
            a[0] = v
        elif v > a[1]:
            a[1] = v

    def value_range(self, address: int) -> list[float] | None:
        r = self.values.get(address)
        return r if r is not None else self.values_any

    def has_values(self) -> bool:
        return bool(self.values) or self.values_any is not None

    def update(self, other: UnitEntry, cap: int) -> None:
        self.addresses.update(other.addresses)
        for a, (lo, hi) in other.values.items():
            self.add_value(a, lo, cap)
            self.add_value(a, hi, cap)
        if other.values_any is not None:
            for v in other.values_any:
                if self.values_any is None:
                    self.values_any = [v, v]
                else:
                    self.values_any[0] = min(self.values_any[0], v)
                    self.values_any[1] = max(self.values_any[1], v)
        self.count += other.count


@dataclass(slots=True)
class FunctionEntry:
    side: str
    name: str
    category: str
    count: int = 0
    units: dict[int | None, UnitEntry] = field(default_factory=dict)
    units_dropped: int = 0  # events on units beyond MAX_UNITS (their addresses are not summarised)


# --------------------------------------------------------------------------------------------------
# Periodic requests
# --------------------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if not n:
        return 0.0
    m = n // 2
    return s[m] if n % 2 else (s[m - 1] + s[m]) / 2.0


def mad(xs: list[float], med: float) -> float:
    return median([abs(x - med) for x in xs])


@dataclass(slots=True)
class PollEntry:
    """A periodic request (or periodic report): its period and the bounds protect mode enforces.

    ``low``/``high`` bound one interval; ``stop_after`` is the silence after which the poll counts as
    stopped. They are computed from median and MAD at learn time and may be edited by a reviewer
    (accepting a timing deviation widens them)."""

    side: str
    function: str
    unit: int | None
    address: int | None
    quantity: int | None
    samples: int
    median: float
    mad: float
    min: float
    max: float
    low: float
    high: float
    stop_after: float

    @property
    def signature(self) -> tuple[str, str, int | None, int | None, int | None]:
        return (self.side, self.function, self.unit, self.address, self.quantity)

    def describe(self) -> str:
        what = self.function
        if self.unit is not None:
            what += f" unit {self.unit}"
        if self.address is not None:
            what += f" @{self.address}" + (f"+{self.quantity}" if self.quantity and self.quantity > 1 else "")
        return f"{what} ({self.side}) every {self.median:.3f}s (MAD {self.mad:.3f}s)"


def poll_bounds(med: float, md: float, settings: dict[str, Any]) -> tuple[float, float, float]:
    """(low, high, stop_after) for a period."""
    spread = max(
        float(settings["period_mad_k"]) * MAD_SCALE * md,
        float(settings["period_rel_tol"]) * med,
        float(settings["period_abs_tol"]),
    )
    low = max(0.0, med - spread)
    high = med + spread
    stop = max(float(settings["stop_factor"]) * med, high + spread)
    return low, high, stop


class PollSampler:
    """Learning state of one request signature: the intervals in a bounded reservoir (Li's
    algorithm L: uniform over all intervals, random draws only when an interval is taken; the
    learner's seeded PRNG keeps it deterministic), plus count, min and max over all intervals.
    The learner updates it inline (learn.Learner._time); ``add`` is the same, for other callers."""

    __slots__ = ("epoch", "hi", "last", "lo", "n", "next", "res", "w")

    SIZE = 64

    def __init__(self) -> None:
        self.last: float | None = None
        self.epoch = 0
        self.n = 0
        self.res = array("d")
        self.lo = math.inf
        self.hi = 0.0
        self.w = 1.0
        self.next = 0

    def start_skipping(self, rng: Any) -> None:
        self.w = math.exp(math.log(rng.random() or 1e-300) / self.SIZE)
        self._skip(rng)

    def _skip(self, rng: Any) -> None:
        w = self.w
        if w >= 1.0:
            self.next = self.n + 1
            return
        self.next = self.n + int(math.log(rng.random() or 1e-300) / math.log(1.0 - w)) + 1

    def take(self, dt: float, rng: Any) -> None:
        self.res[rng.randrange(self.SIZE)] = dt
        self.w *= math.exp(math.log(rng.random() or 1e-300) / self.SIZE)
        self._skip(rng)

    def add(self, dt: float, rng: Any) -> None:
        self.n += 1
        self.lo = min(self.lo, dt)
        self.hi = max(self.hi, dt)
        if self.n <= self.SIZE:
            self.res.append(dt)
            if self.n == self.SIZE:
                self.start_skipping(rng)
        elif self.n == self.next:
            self.take(dt, rng)


# --------------------------------------------------------------------------------------------------
# Pairs and assets
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PairEntry:
    client: str
    server: str
    protocol: str
    ports: set[int] = field(default_factory=set)
    events: int = 0
    functions: dict[tuple[str, str], FunctionEntry] = field(default_factory=dict)
    polls: dict[tuple, PollEntry] = field(default_factory=dict)
    sequence: dict[str, int] = field(default_factory=dict)  # sequence anomaly -> times seen while learning
    starts: dict[str, int] = field(default_factory=dict)  # connection starts: at_zero / midway / joined
    functions_dropped: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.client, self.server, self.protocol)


@dataclass(slots=True)
class AssetEntry:
    address: str
    mac: str | None = None
    client: set[str] = field(default_factory=set)  # protocols it spoke as client
    server: set[str] = field(default_factory=set)
    events: int = 0


@dataclass
class Baseline:
    settings: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    assets: dict[str, AssetEntry] = field(default_factory=dict)
    pairs: dict[tuple[str, str, str], PairEntry] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)  # caps hit while learning

    def setting(self, name: str) -> Any:
        return self.settings.get(name, DEFAULT_SETTINGS[name])

    # -- lookups protect mode uses --------------------------------------------------------------
    def talkers(self) -> set[tuple[str, str]]:
        return {(c, s) for c, s, _ in self.pairs}

    def events(self) -> int:
        return sum(int(r.get("events", 0)) for r in self.runs)

    # -- building -------------------------------------------------------------------------------
    def asset(self, address: str) -> AssetEntry | None:
        a = self.assets.get(address)
        if a is None:
            if len(self.assets) >= MAX_ASSETS:
                self.truncated["assets"] = self.truncated.get("assets", 0) + 1
                return None
            a = self.assets[address] = AssetEntry(address)
        return a

    def pair(self, client: str, server: str, protocol: str) -> PairEntry | None:
        key = (client, server, protocol)
        p = self.pairs.get(key)
        if p is None:
            if len(self.pairs) >= MAX_PAIRS:
                self.truncated["pairs"] = self.truncated.get("pairs", 0) + 1
                return None
            p = self.pairs[key] = PairEntry(client, server, protocol)
        return p

    def function(self, pair: PairEntry, side: str, name: str, category: str) -> FunctionEntry | None:
        key = (side, name)
        f = pair.functions.get(key)
        if f is None:
            if len(pair.functions) >= MAX_FUNCTIONS:
                pair.functions_dropped += 1
                return None
            f = pair.functions[key] = FunctionEntry(side, name, category)
        return f

    def unit(self, fe: FunctionEntry, unit: int | None) -> UnitEntry | None:
        u = fe.units.get(unit)
        if u is None:
            if len(fe.units) >= MAX_UNITS:
                fe.units_dropped += 1
                return None
            u = fe.units[unit] = UnitEntry(IntervalSet(int(self.setting("max_intervals"))))
        return u

    # -- merging runs -----------------------------------------------------------------------------
    def merge(self, other: Baseline) -> None:
        """Fold another baseline in: union of everything, polls combined (see ``merge_poll``)."""
        cap = int(self.setting("max_value_addresses"))
        for addr, a in other.assets.items():
            mine = self.asset(addr)
            if mine is None:
                continue
            mine.mac = mine.mac or a.mac
            mine.client |= a.client
            mine.server |= a.server
            mine.events += a.events
        for key, p in other.pairs.items():
            mine_p = self.pair(*key)
            if mine_p is None:
                continue
            mine_p.ports |= p.ports
            mine_p.events += p.events
            mine_p.functions_dropped += p.functions_dropped
            for f in p.functions.values():
                mf = self.function(mine_p, f.side, f.name, f.category)
                if mf is None:
                    continue
                mf.count += f.count
                mf.units_dropped += f.units_dropped
                for u, ue in f.units.items():
                    mu = self.unit(mf, u)
                    if mu is not None:
                        mu.update(ue, cap)
            for sig, pe in p.polls.items():
                mp = mine_p.polls.get(sig)
                if mp is None:
                    if len(mine_p.polls) < MAX_POLLS:
                        mine_p.polls[sig] = pe
                else:
                    mine_p.polls[sig] = merge_poll(mp, pe, self.settings)
            for name, n in p.sequence.items():
                mine_p.sequence[name] = mine_p.sequence.get(name, 0) + n
            for name, n in p.starts.items():
                mine_p.starts[name] = mine_p.starts.get(name, 0) + n
        self.runs.extend(other.runs)
        seen = {a.get("alert") for a in self.accepted}
        self.accepted.extend(a for a in other.accepted if a.get("alert") not in seen)
        for k, n in other.truncated.items():
            self.truncated[k] = self.truncated.get(k, 0) + n


def merge_poll(a: PollEntry, b: PollEntry, settings: dict[str, Any]) -> PollEntry:
    """Two learning runs of the same periodic request.

    The runs' samples are gone (the baseline is a summary), so the median is the sample-weighted
    mean of the two medians and the MAD the larger of the two MADs widened by half the distance
    between the medians: conservative (a wider spread means fewer false alerts, never more).
    Bounds are the union of the recomputed bounds and both runs' own (which a reviewer may have
    edited or an analyst widened by accepting a deviation)."""
    n = a.samples + b.samples
    med = (a.median * a.samples + b.median * b.samples) / n if n else a.median
    md = max(a.mad, b.mad, abs(a.median - b.median) / 2.0)
    low, high, stop = poll_bounds(med, md, settings)
    return PollEntry(
        a.side,
        a.function,
        a.unit,
        a.address,
        a.quantity,
        n,
        med,
        md,
        min(a.min, b.min),
        max(a.max, b.max),
        min(low, a.low, b.low),
        max(high, a.high, b.high),
        max(stop, a.stop_after, b.stop_after),
    )


# --------------------------------------------------------------------------------------------------
# dict form (what yamlio writes and reads)
# --------------------------------------------------------------------------------------------------


def _unit_sort(u: int | None) -> tuple[int, int]:
    return (0, -1) if u is None else (1, int(u))


def _num(v: Any) -> float | int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else round(f, 6)


def to_dict(b: Baseline) -> dict[str, Any]:
    from sensor.assets import address_sort_key as _addr_key  # the inventory's address order

    out: dict[str, Any] = {"version": FORMAT_VERSION}
    out["learned"] = [dict(r) for r in b.runs]
    out["settings"] = {k: b.settings.get(k, v) for k, v in DEFAULT_SETTINGS.items()}
    if b.truncated:
        out["truncated"] = dict(sorted(b.truncated.items()))
    assets = []
    for addr in sorted(b.assets, key=_addr_key):
        a = b.assets[addr]
        d: dict[str, Any] = {"address": addr}
        if a.mac:
            d["mac"] = a.mac
        if a.client:
            d["client"] = sorted(a.client)
        if a.server:
            d["server"] = sorted(a.server)
        d["events"] = a.events
        assets.append(d)
    out["assets"] = assets
    pairs = []
    for key in sorted(b.pairs, key=lambda k: (_addr_key(k[0]), _addr_key(k[1]), k[2])):
        p = b.pairs[key]
        pd: dict[str, Any] = {"client": p.client, "server": p.server, "protocol": p.protocol}
        if p.ports:
            pd["ports"] = sorted(p.ports)
        pd["events"] = p.events
        funcs = []
        for fkey in sorted(p.functions, key=lambda k: (SIDES.index(k[0]) if k[0] in SIDES else 2, k[1])):
            f = p.functions[fkey]
            fd: dict[str, Any] = {"name": f.name, "from": f.side, "category": f.category, "count": f.count}
            units = []
            for u in sorted(f.units, key=_unit_sort):
                ue = f.units[u]
                if not len(ue.addresses) and not ue.has_values():
                    continue
                ud: dict[str, Any] = {"unit": u}
                key_name = _range_key(f.category)
                ud[key_name] = ue.addresses.to_list()
                if ue.addresses.merged:
                    ud["coarsened"] = ue.addresses.merged
                if ue.values:
                    ud["values"] = {a: [_num(lo), _num(hi)] for a, (lo, hi) in sorted(ue.values.items())}
                if ue.values_any is not None:
                    ud["values_other_addresses"] = [_num(ue.values_any[0]), _num(ue.values_any[1])]
                units.append(ud)
            if units:
                fd["units"] = units
            if f.units_dropped:
                fd["units_dropped"] = f.units_dropped
            funcs.append(fd)
        pd["functions"] = funcs
        if p.functions_dropped:
            pd["functions_dropped"] = p.functions_dropped
        polls = []
        for sig in sorted(p.polls, key=lambda s: (s[0], s[1], _unit_sort(s[2]), _unit_sort(s[3]), _unit_sort(s[4]))):
            pe = p.polls[sig]
            polls.append(
                {
                    "function": pe.function,
                    "from": pe.side,
                    "unit": pe.unit,
                    "address": pe.address,
                    "quantity": pe.quantity,
                    "period": {
                        "median": _r(pe.median),
                        "mad": _r(pe.mad),
                        "min": _r(pe.min),
                        "max": _r(pe.max),
                        "samples": pe.samples,
                    },
                    "expect": {"low": _r(pe.low), "high": _r(pe.high), "stop_after": _r(pe.stop_after)},
                }
            )
        if polls:
            pd["polls"] = polls
        if p.sequence or p.protocol == "iec104":
            pd["sequence_anomalies"] = dict(sorted(p.sequence.items()))
        if p.starts:
            pd["connection_starts"] = {k: p.starts[k] for k in ("at_zero", "midway", "joined") if k in p.starts}
        pairs.append(pd)
    out["pairs"] = pairs
    out["accepted"] = [dict(a) for a in b.accepted]
    return out


def _range_key(category: str) -> str:
    if category == "read":
        return "read"
    if category in ("write", "control"):
        return "written"
    return "addresses"


class BaselineFormatError(ValueError):
    """The YAML is not a baseline this icswatch can read; the message says where."""


def from_dict(d: dict[str, Any]) -> Baseline:
    if not isinstance(d, dict):
        raise BaselineFormatError("a baseline is a YAML mapping")
    version = d.get("version")
    if version != FORMAT_VERSION:
        raise BaselineFormatError(f"baseline format version {version!r}; this icswatch reads version {FORMAT_VERSION}")
    b = Baseline()
    settings = d.get("settings") or {}
    for k, v in settings.items():
        if k in DEFAULT_SETTINGS:
            b.settings[k] = type(DEFAULT_SETTINGS[k])(v)
    b.runs = [dict(r) for r in d.get("learned") or []]
    b.truncated = {str(k): int(v) for k, v in (d.get("truncated") or {}).items()}
    cap = int(b.setting("max_intervals"))
    for i, a in enumerate(d.get("assets") or []):
        try:
            addr = str(a["address"])
        except (KeyError, TypeError):
            raise BaselineFormatError(f"assets[{i}]: needs an address") from None
        b.assets[addr] = AssetEntry(
            addr, a.get("mac"), set(a.get("client") or ()), set(a.get("server") or ()), int(a.get("events") or 0)
        )
    for i, p in enumerate(d.get("pairs") or []):
        try:
            pe = PairEntry(str(p["client"]), str(p["server"]), str(p["protocol"]))
        except (KeyError, TypeError):
            raise BaselineFormatError(f"pairs[{i}]: needs client, server and protocol") from None
        pe.ports = {int(x) for x in p.get("ports") or ()}
        pe.events = int(p.get("events") or 0)
        pe.functions_dropped = int(p.get("functions_dropped") or 0)
        for j, f in enumerate(p.get("functions") or []):
            try:
                fe = FunctionEntry(
                    str(f.get("from", "client")),
                    str(f["name"]),
                    str(f.get("category", "other")),
                    int(f.get("count") or 0),
                )
            except (KeyError, TypeError):
                raise BaselineFormatError(f"pairs[{i}].functions[{j}]: needs a name") from None
            fe.units_dropped = int(f.get("units_dropped") or 0)
            for u in f.get("units") or []:
                unit = u.get("unit")
                unit = None if unit is None else int(unit)
                ranges = u.get("read", u.get("written", u.get("addresses")))
                ue = UnitEntry(IntervalSet.from_list(ranges, cap))
                ue.addresses.merged = int(u.get("coarsened") or 0)
                for a_, (lo, hi) in (u.get("values") or {}).items():
                    ue.values[int(a_)] = [float(lo), float(hi)]
                if u.get("values_other_addresses") is not None:
                    lo, hi = u["values_other_addresses"]
                    ue.values_any = [float(lo), float(hi)]
                fe.units[unit] = ue
            pe.functions[(fe.side, fe.name)] = fe
        for q in p.get("polls") or []:
            per = q.get("period") or {}
            exp = q.get("expect") or {}
            med = float(per.get("median", 0.0))
            md = float(per.get("mad", 0.0))
            low, high, stop = poll_bounds(med, md, b.settings)
            poll = PollEntry(
                str(q.get("from", "client")),
                str(q["function"]),
                None if q.get("unit") is None else int(q["unit"]),
                None if q.get("address") is None else int(q["address"]),
                None if q.get("quantity") is None else int(q["quantity"]),
                int(per.get("samples") or 0),
                med,
                md,
                float(per.get("min", med)),
                float(per.get("max", med)),
                float(exp.get("low", low)),
                float(exp.get("high", high)),
                float(exp.get("stop_after", stop)),
            )
            pe.polls[poll.signature] = poll
        pe.sequence = {str(k): int(v) for k, v in (p.get("sequence_anomalies") or {}).items()}
        pe.starts = {str(k): int(v) for k, v in (p.get("connection_starts") or {}).items()}
        b.pairs[pe.key] = pe
    b.accepted = [dict(a) for a in d.get("accepted") or []]
    return b
