"""Window features for the ML detector, computed incrementally from IcsEvents.

What a row is
-------------
One row per **talker pair and protocol** (client, server, protocol) per window. The client is the
requester: for requests ``(src, dst)``, for responses and unsolicited reports ``(dst, src)`` (unless
they come from the higher port, as IEC 104 S-frames from the master do). A TCP connection attempt to an
ICS port joins that protocol's pair. Category shares, distinct functions and addresses, broadcasts and
inter-arrivals count the operations a side *initiates* (requests, reports): responses mirror them and
contribute their size, latency and result only. Per-asset
features (what the client does with all its peers, what the server sees from all its clients) are
computed when the window closes, from the rows of the same window, and attached to each row: the
model scores pairs, but sees their hosts' context (a scanner's one-SYN pair rows carry "this client
reached 12 servers in this window").

Windows are tumbling (``hop == window``, the default, 10 s) or sliding (``hop < window``; a window is
the merge of the last ``window / hop`` hop buckets). Boundaries run on a **monotonic clock** built
from event times: forward steps advance it, backward jumps (a capture whose clock restarts, merged
files) are ignored and counted, exactly as the sensor's own flow clock does. Window starts and ends
in rows are on that clock; each row also carries the capture time of its first event and of the moment
it closed. The first ``warmup`` seconds of an extractor that starts from nothing learn pairs,
functions and addresses silently (otherwise training would call the whole plant "new").

Per-event work (``observe``) is O(1) and small: find the pair (a dict lookup by flow id, checked by
identity), pack one record of ten doubles into a bytearray (``struct.pack_into``: no Python object
per event). Everything else happens when a hop closes, vectorised with numpy over the hop's records
(counts, sums, maxima, inter-arrival and rhythm statistics per pair), then per pair (ratios, set
differences against history, host context, damped statistics). A hop holding more than 262,144 records
is aggregated early, so the buffer stays under ~21 MB however busy the link.

Damped statistics (Kitsune style)
---------------------------------
Kitsune (Mirsky et al., NDSS 2018) keeps, per stream and per decay factor, a decayed weight, linear
sum and squared sum of packet sizes and inter-arrival times: ``w <- w * 2**(-lambda*dt) + 1``. We apply
the same update at hop resolution instead of per event (decay by the hop's elapsed time, then add the
hop's counts and sums): per-event cost stays O(1) and the result equals Kitsune's with event times
rounded to the hop. Three half-lives (60 s, 10 min, 1 h by default). Rates are bias-corrected by a
decayed elapsed time (``tw <- tw * d + dt``) so a cold start (a fresh sensor, a new pair) does not look
like a drop in traffic. The per-client count of new peers is kept *without* that correction (a decayed
count, half-life 1 h): a slow scan touching one new host a minute climbs steadily, while the burst of
new pairs when a plant's connections come up decays away.

Bounds
------
Pairs (``max_pairs``, the least recently active evicted first), the known-pair set, per-pair function
and address history (``max_history_per_pair``) and the total history budget (``max_history_total``),
addresses per window (``max_window_addresses``): all counted in ``stats()``; nothing grows with the
capture.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from sensor.events import CATEGORIES, EXCEPTION, OK, REQUEST, RESPONSE, IcsEvent

SCHEMA_VERSION = 1

# Damped statistics: half-lives in seconds of the monotonic clock.
DEFAULT_HALF_LIVES = (60.0, 600.0, 3600.0)
CLIENT_PEERS_HALF_LIFE = 3600.0

# Protocol broadcast unit addresses: Modbus unit 0 (broadcast, MODBUS over serial line 2.1), DNP3
# 0xFFFD-0xFFFF (IEEE 1815 9.2.5.3), IEC 104 common address 0xFFFF (global, IEC 60870-5-101 7.2.4).
BROADCAST_UNITS: dict[str, frozenset[int]] = {
    "modbus": frozenset({0}),
    "dnp3": frozenset({0xFFFD, 0xFFFE, 0xFFFF}),
    "iec104": frozenset({0xFFFF}),
}
_NO_UNITS: frozenset[int] = frozenset()
_CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
_OTHER = _CAT_INDEX["other"]
# record kinds: 0 request, 1 response, 2 unsolicited report, 3 TCP connection attempt
_NAN = math.nan
_NF = 10  # floats per event record: pair, time, kind, size, latency, function, address, category, result, unit
_REC = struct.Struct(f"{_NF}d")  # packed straight into a bytearray: twice as fast as array.extend(tuple)
_SPILL = 262_144  # records aggregated early once a hop holds this many (bounds the buffer at ~21 MB)
_FIRST_BUF = 4096  # records the buffer starts with (it doubles up to _SPILL)
_PACK = _REC.pack_into
_RECSIZE = _REC.size
_MAX_FLOW_CACHE = 100_000  # flows remembered per hop for the fast path (beyond: the slow path, still correct)
MAX_POLLS = 32  # repeated operations whose rhythm is followed, per pair
OVERFLOW = "<overflow>"  # the client and server of the pair that takes events once the pair table is full


@dataclass(frozen=True)
class FeatureDoc:
    """How to say a feature to an analyst, and which kind of deviation it is (technique mapping)."""

    label: str
    unit: str  # "/s", "%", "ms", "s", "B", "" (count)
    kind: str  # rate | timing | write | control | program | diagnostic | discovery | scan | probe | size | sequence | other


def _core_docs() -> dict[str, FeatureDoc]:
    d = {
        "rate_events": FeatureDoc("operations", "/s", "rate"),
        "rate_requests": FeatureDoc("requests", "/s", "rate"),
        "rate_responses": FeatureDoc("responses and reports", "/s", "rate"),
        "unanswered_ratio": FeatureDoc("requests left unanswered (beyond one in flight)", "%", "rate"),
    }
    kinds = {
        "read": "other",
        "write": "write",
        "control": "control",
        "program": "program",
        "diagnostic": "diagnostic",
        "discovery": "discovery",
        "session": "other",
        "other": "other",
    }
    for c in CATEGORIES:
        d[f"share_{c}"] = FeatureDoc(f"{c} operations (of requests and reports)", "%", kinds[c])
    d.update(
        {
            "distinct_functions": FeatureDoc("distinct function codes", "", "probe"),
            "distinct_addresses": FeatureDoc("distinct data addresses", "", "probe"),
            "new_function_ratio": FeatureDoc("function codes never seen on this pair", "%", "control"),
            "new_address_ratio": FeatureDoc("addresses never seen on this pair", "%", "write"),
            "new_pair": FeatureDoc("first traffic ever seen between these hosts", "", "scan"),
            "exception_ratio": FeatureDoc("exception responses", "%", "probe"),
            "anomaly_ratio": FeatureDoc("malformed or out-of-sequence PDUs", "%", "sequence"),
            "broadcast_share": FeatureDoc("broadcast operations", "%", "write"),
            "connection_attempts": FeatureDoc("TCP connection attempts", "", "other"),
            "rate_bytes": FeatureDoc("PDU bytes", "B/s", "rate"),
            "size_mean": FeatureDoc("mean PDU size", "B", "size"),
            "size_std": FeatureDoc("spread of PDU sizes", "B", "size"),
            "size_max": FeatureDoc("largest PDU", "B", "size"),
            "iat_mean": FeatureDoc("mean time between requests", "s", "timing"),
            "iat_std": FeatureDoc("jitter of time between requests", "s", "timing"),
            "iat_min": FeatureDoc("shortest time between requests", "s", "timing"),
            "latency_mean_ms": FeatureDoc("mean response time", "ms", "timing"),
            "latency_max_ms": FeatureDoc("slowest response", "ms", "timing"),
            "period_jitter": FeatureDoc(
                "mean change between consecutive periods of a repeated operation", "%", "timing"
            ),
            "period_jitter_max": FeatureDoc(
                "largest change between consecutive periods of a repeated operation", "%", "timing"
            ),
            "client_servers": FeatureDoc("servers this client reached in the window", "", "scan"),
            "client_new_peers": FeatureDoc("new servers this client reached in the window", "", "scan"),
            "client_rate": FeatureDoc("operations by this client, all peers", "/s", "rate"),
            "server_clients": FeatureDoc("clients talking to this server in the window", "", "other"),
            "server_rate": FeatureDoc("operations with this server, all clients", "/s", "rate"),
            "client_new_peers_1h": FeatureDoc("new servers this client reached (decayed, 1 h half-life)", "", "scan"),
        }
    )
    return d


def _span(h: float) -> str:
    return f"{int(h)} s" if h < 120 else (f"{int(h // 60)} min" if h < 7200 else f"{h / 3600:g} h")


def _damped_names(half_lives: Iterable[float]) -> list[tuple[str, FeatureDoc]]:
    out = []
    for h in half_lives:
        tag = f"d{int(h)}"
        span = _span(h)
        out += [
            (f"{tag}_rate", FeatureDoc(f"operations/s averaged over ~{span}", "/s", "rate")),
            (f"{tag}_size_mean", FeatureDoc(f"mean PDU size over ~{span}", "B", "size")),
            (f"{tag}_size_std", FeatureDoc(f"spread of PDU sizes over ~{span}", "B", "size")),
            (f"{tag}_iat_mean", FeatureDoc(f"mean time between requests over ~{span}", "s", "timing")),
            (f"{tag}_iat_std", FeatureDoc(f"jitter between requests over ~{span}", "s", "timing")),
        ]
    return out


@dataclass(frozen=True)
class WindowConfig:
    """Window shape and bounds. Part of the model's feature schema (a model only scores the windows it
    was trained on)."""

    window: float = 10.0  # seconds of monotonic capture time
    hop: float | None = None  # None: tumbling (hop = window); else sliding, window must be a multiple of hop
    half_lives: tuple[float, ...] = DEFAULT_HALF_LIVES
    max_pairs: int = 20_000
    idle_evict: float = 3600.0  # a pair idle this long is forgotten (its history stays in the known set)
    max_known_pairs: int = 100_000
    max_history_per_pair: int = 256  # function codes, and addresses, remembered per pair (each)
    max_history_total: int = 500_000
    max_window_addresses: int = 1024
    min_partial: float = 0.5  # a window cut short (end of input) is emitted only if it covers this share
    warmup: float = 60.0  # learning from nothing: pairs, functions, addresses seen this early are not "new"

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError("window must be > 0 seconds")
        hop = self.hop_seconds
        if hop <= 0 or hop > self.window:
            raise ValueError("hop must be in (0, window]")
        k = self.window / hop
        if abs(k - round(k)) > 1e-9:
            raise ValueError(f"window ({self.window:g} s) must be a whole multiple of hop ({hop:g} s)")

    @property
    def hop_seconds(self) -> float:
        return self.window if self.hop is None else float(self.hop)

    @property
    def buckets(self) -> int:
        return int(round(self.window / self.hop_seconds))

    def schema(self) -> dict[str, Any]:
        """What must match between training and scoring."""
        return {
            "version": SCHEMA_VERSION,
            "names": list(feature_names(self)),
            "window": self.window,
            "hop": self.hop_seconds,
            "half_lives": list(self.half_lives),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "hop": self.hop,
            "half_lives": list(self.half_lives),
            "max_pairs": self.max_pairs,
            "idle_evict": self.idle_evict,
            "max_known_pairs": self.max_known_pairs,
            "max_history_per_pair": self.max_history_per_pair,
            "max_history_total": self.max_history_total,
            "max_window_addresses": self.max_window_addresses,
            "min_partial": self.min_partial,
            "warmup": self.warmup,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowConfig":
        d = dict(d)
        d["half_lives"] = tuple(d.get("half_lives", DEFAULT_HALF_LIVES))
        return cls(**d)


CORE_DOCS = _core_docs()


def feature_docs(config: WindowConfig | None = None) -> dict[str, FeatureDoc]:
    cfg = config or WindowConfig()
    docs = dict(CORE_DOCS)
    docs.update(_damped_names(cfg.half_lives))
    mid = cfg.half_lives[min(1, len(cfg.half_lives) - 1)]
    docs["rate_change"] = FeatureDoc(f"operations/s relative to the ~{_span(mid)} average", "x", "rate")
    return docs


def feature_names(config: WindowConfig | None = None) -> tuple[str, ...]:
    return tuple(feature_docs(config))


# -- state -------------------------------------------------------------------------------------------


def _identity(windows: list["Window"]) -> list["Window"]:
    return windows


class _Bucket:
    """Counts of one pair over one hop (the open bucket is written per event)."""

    __slots__ = (
        "n", "req", "resp", "uns", "cats", "funcs", "addrs", "exc", "anom", "nbytes", "sq", "smax", "bc",
        "conn", "iat_n", "iat_sum", "iat_sq", "iat_min", "lat_n", "lat_sum", "lat_max", "per_n", "per_sum", "per_max",
        "first_ts", "last_ts", "first", "tags",
    )  # fmt: skip

    def __init__(self) -> None:
        self.n = self.req = self.resp = self.uns = 0
        self.cats = [0] * len(CATEGORIES)
        self.funcs: set[int] = set()
        self.addrs: set[int] = set()
        self.exc = self.anom = self.nbytes = self.sq = self.smax = self.bc = self.conn = 0
        self.iat_n = 0
        self.iat_sum = self.iat_sq = 0.0
        self.iat_min = math.inf
        self.lat_n = 0
        self.lat_sum = self.lat_max = 0.0
        self.per_n = 0
        self.per_sum = self.per_max = 0.0
        self.first_ts = self.last_ts = 0.0
        self.first: IcsEvent | None = None
        self.tags: set[int] | None = None

    def merge(self, o: "_Bucket") -> None:
        """Add a *later* bucket into this one (sliding windows)."""
        if not o.n:
            return
        if not self.n:
            self.first_ts, self.first = o.first_ts, o.first
        self.n += o.n
        self.req += o.req
        self.resp += o.resp
        self.uns += o.uns
        self.cats = [a + b for a, b in zip(self.cats, o.cats)]
        self.funcs |= o.funcs
        self.addrs |= o.addrs
        self.exc += o.exc
        self.anom += o.anom
        self.nbytes += o.nbytes
        self.sq += o.sq
        self.smax = max(self.smax, o.smax)
        self.bc += o.bc
        self.conn += o.conn
        self.iat_n += o.iat_n
        self.iat_sum += o.iat_sum
        self.iat_sq += o.iat_sq
        self.iat_min = min(self.iat_min, o.iat_min)
        self.lat_n += o.lat_n
        self.lat_sum += o.lat_sum
        self.lat_max = max(self.lat_max, o.lat_max)
        self.per_n += o.per_n
        self.per_sum += o.per_sum
        self.per_max = max(self.per_max, o.per_max)
        self.last_ts = o.last_ts
        if o.tags:
            self.tags = (self.tags or set()) | o.tags


class _Damped:
    """Decayed weight / elapsed time / sums for one half-life (Kitsune's incremental statistics)."""

    __slots__ = ("half_life", "w", "tw", "s1", "s2", "wi", "i1", "i2")

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.w = self.tw = self.s1 = self.s2 = self.wi = self.i1 = self.i2 = 0.0

    def update(self, dt: float, b: _Bucket) -> None:
        d = 2.0 ** (-dt / self.half_life)
        self.w = self.w * d + b.n
        self.tw = self.tw * d + dt
        self.s1 = self.s1 * d + b.nbytes
        self.s2 = self.s2 * d + b.sq
        self.wi = self.wi * d + b.iat_n
        self.i1 = self.i1 * d + b.iat_sum
        self.i2 = self.i2 * d + b.iat_sq

    def values(self, window: float) -> tuple[float, float, float, float, float]:
        rate = self.w / self.tw if self.tw > 0 else 0.0
        if self.w > 0:
            m = self.s1 / self.w
            sd = math.sqrt(max(self.s2 / self.w - m * m, 0.0))
        else:
            m = sd = 0.0
        if self.wi > 0:
            im = self.i1 / self.wi
            isd = math.sqrt(max(self.i2 / self.wi - im * im, 0.0))
        else:
            im, isd = window, 0.0
        return rate, m, sd, im, isd


class _Pair:
    __slots__ = ("key", "slot", "hop", "first", "first_ts", "cur", "past", "born", "seen", "last_req", "damped",
                 "bcast", "was_new", "damped_at", "polls", "restored")  # fmt: skip

    def __init__(self, key: tuple[str, str, str], now: float, half_lives: tuple[float, ...], k: int, new: bool,
                 ) -> None:  # fmt: skip
        self.key = key
        self.slot = 0  # its row in the open hop's records (valid while hop == the extractor's hop)
        self.hop = -1  # the hop it last had events in
        self.first: IcsEvent | None = None  # first event of the open hop (the alert's evidence)
        self.first_ts = 0.0
        self.cur = _Bucket()
        self.past: deque[_Bucket] | None = deque(maxlen=k - 1) if k > 1 else None
        self.born = now  # monotonic time of the pair's first event (rates of a first window use it)
        self.seen = now  # monotonic time of the last event
        self.last_req: float | None = None  # monotonic time of the last non-response (inter-arrivals)
        self.damped = [_Damped(h) for h in half_lives]
        self.damped_at = now
        self.bcast = BROADCAST_UNITS.get(key[2], _NO_UNITS)
        self.was_new = new  # not in the known-pair set when it appeared (reported in its first window)
        # the rhythm of each repeated operation ((function, unit) key, address): (last time, last period)
        self.polls: dict[tuple[int, int], tuple[float, float]] = {}
        self.restored = False  # carried over from training: its first window re-learns the timing state


@dataclass(slots=True)
class Window:
    """One scored row: a pair's features over one window, with what is needed to alert on it."""

    key: tuple[str, str, str]  # (client, server, protocol)
    start: float  # monotonic
    end: float  # monotonic
    first_ts: float  # capture time of the first event in the window
    last_ts: float  # capture time when the window closed (the event or tick that closed it)
    events: int
    values: list[float]
    first: IcsEvent | None = None  # kept as the evidence of an alert
    tags: frozenset[int] = field(default_factory=frozenset)
    partial: bool = False
    # The first window of a pair carried over from training (a sensor just started with the model): its
    # inter-arrival and rhythm state starts empty, so its timing features are not comparable yet. It is
    # scored and counted, but not alerted on. Pairs new to the model are never "warming".
    warming: bool = False

    @property
    def client(self) -> str:
        return self.key[0]

    @property
    def server(self) -> str:
        return self.key[1]

    @property
    def protocol(self) -> str:
        return self.key[2]


@dataclass
class History:
    """What was seen before: pairs, and per pair its function codes and addresses (bounded).

    Carried from training into the artifact so a fresh sensor does not call every address new."""

    pairs: dict[tuple[str, str, str], tuple[set[int], set[int]]] = field(default_factory=dict)
    total: int = 0  # functions + addresses held, for the global budget
    full: int = 0  # additions refused because a budget was reached

    def entry(self, key: tuple[str, str, str], cfg: WindowConfig) -> tuple[set[int], set[int]] | None:
        e = self.pairs.get(key)
        if e is None and len(self.pairs) < cfg.max_known_pairs:
            e = self.pairs[key] = (set(), set())
        return e

    def learn(self, known: set[int], new: set[int], cfg: WindowConfig) -> None:
        room = min(cfg.max_history_per_pair - len(known), cfg.max_history_total - self.total)
        if room <= 0:
            self.full += len(new)
            return
        if len(new) > room:
            self.full += len(new) - room
            new = set(list(new)[:room])
        known |= new
        self.total += len(new)

    def snapshot(self) -> dict[str, Any]:
        return {
            "pairs": [[list(k), sorted(f), sorted(a)] for k, (f, a) in self.pairs.items()],
            "total": self.total,
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any] | None) -> "History":
        h = cls()
        if not snap:
            return h
        for key, funcs, addrs in snap.get("pairs", []):
            h.pairs[tuple(key)] = (set(funcs), set(addrs))  # type: ignore[index]
        h.total = int(snap.get("total", 0))
        return h


class FeatureExtractor:
    """Events in, closed windows out. ``observe`` returns the windows a hop boundary closed (rarely)."""

    def __init__(self, config: WindowConfig | None = None, history: History | None = None) -> None:
        self.config = cfg = config or WindowConfig()
        self.names = feature_names(cfg)
        self.hop = cfg.hop_seconds
        self.k = cfg.buckets
        self.history = history or History()
        self.pairs: dict[tuple[str, str, str], _Pair] = {}
        self._active: list[_Pair] = []  # pairs with events in the open hop, in order of appearance
        self._hop_no = 0
        self._buf = bytearray(_REC.size * _FIRST_BUF)  # one record of _NF doubles per event of the open hop
        self._off = 0  # bytes used in _buf
        self._cap = len(self._buf)
        self._tags: dict[int, set[int]] = {}  # pair idx -> attack ids (evaluation only)
        self._flows: dict[int, tuple[int, str, str, str]] = {}  # flow id -> (slot, src, dst, protocol), this hop
        self._recent: dict[tuple[str, str, str], _Pair] = {}  # pairs with events in the window (sliding)
        self._client_peers: dict[str, list[float]] = {}  # client -> [decayed new-peer count, at]
        self.now = 0.0  # monotonic clock
        # capture time of the last event or tick; +inf until the first event, so that the first event
        # takes the "time did not advance" branch and the hot path needs no extra test
        self._last_ts = math.inf
        self.on_close: Callable[[list[Window]], Any] = _identity  # what observe/advance return for closed windows
        self._boundary = self.hop
        self._hop_start = 0.0
        self.counts = {
            "windows": 0,
            "clock_backwards": 0,
            "pairs_evicted": 0,
            "pairs_evicted_cap": 0,
            "partial_windows_dropped": 0,
            "pairs_overflow": 0,
        }
        self._max_addrs = cfg.max_window_addresses
        # Starting from an empty history (training from scratch), everything is new at first: the pairs,
        # functions and addresses of the first ``warmup`` seconds are learned silently, so "new" means
        # "new since the plant was first observed", as it does for a sensor that starts from a model's
        # history.
        self._warm_until = cfg.warmup if not self.history.pairs else 0.0
        self._n = 0  # events, counted per closed bucket

    # -- the hot path --------------------------------------------------------------------------
    def observe(self, e: IcsEvent, tags: tuple[int, ...] = ()) -> Any:
        """Add one event. Returns ``on_close(windows)`` when the event crossed a hop boundary (by default
        the closed windows themselves), else an empty tuple. ``tags``: ground-truth attack ids (evaluation only)."""
        out: Any = ()  # nothing closed (falsy, and a valid empty alert list for the runtime)
        d = e.direction
        if d == RESPONSE:
            # Responses do not move the clock: they land in the hop of their request (or of the last
            # tick, at most a second later), which keeps request and answer together at a boundary and
            # makes half of a polling protocol's events cheaper.
            now = self.now
        else:
            ts = e.ts
            dt = ts - self._last_ts
            if dt > 0.0:
                now = self.now = self.now + dt
                self._last_ts = ts
                if now >= self._boundary:
                    out = self.on_close(self._close(now))
            else:
                now = self.now
                if dt < -1.0 and self._last_ts != math.inf:
                    self.counts["clock_backwards"] += 1
                self._last_ts = ts
        # The pair of this event. Fast path: the flow was seen in this hop (same flow id, same protocol and
        # the same address objects: the sensor shares them per flow, and flow ids restart per capture, so
        # identity and not equality is checked); else the slow path derives the pair from the event.
        fl = self._flows.get(e.flow_id)
        if (
            fl is None
            or e.protocol is not fl[3]
            or (e.src is not fl[1] and e.src is not fl[2])
            or (e.dst is not fl[1] and e.dst is not fl[2])
        ):
            slot = self._slot(e, now)
        else:
            slot = fl[0]
        # One flat record per event; all arithmetic happens vectorised when the hop closes (_aggregate).
        # A response mirrors its request (function, addresses): only what is its own is read from it.
        r = e.result
        res = (0.0 if e.anomaly is None else 2.0) if r == OK else (1.0 if r == EXCEPTION else 2.0)
        off = self._off
        if off >= self._cap:
            off = self._room()
        if d == RESPONSE:
            lat = e.latency
            _PACK(self._buf, off, slot, now, 1.0, e.size, _NAN if lat is None else lat, -2.0, _NAN, 0.0, res, _NAN)
        else:
            a = e.address
            u = e.unit
            _PACK(
                self._buf,
                off,
                slot,
                now,
                3.0 if e.function_name == "connection_attempt" else (0.0 if d == REQUEST else 2.0),
                e.size,
                _NAN,
                e.function,
                _NAN if a is None else a,
                _CAT_INDEX.get(e.category, _OTHER),
                res,
                _NAN if u is None else u,
            )
        self._off = off + _RECSIZE
        if tags:
            t = self._tags.get(slot)
            if t is None:
                self._tags[slot] = set(tags)
            else:
                t.update(tags)
        return out

    def _room(self) -> int:
        """The record buffer is full: double it (a new bytearray: numpy views of the old one may still be
        alive), or, at the cap, aggregate what it holds. Returns the offset to write at."""
        if self._cap < _SPILL * _RECSIZE:
            grown = bytearray(min(2 * self._cap, _SPILL * _RECSIZE))
            grown[: self._off] = self._buf[: self._off]
            self._buf = grown
            self._cap = len(grown)
            return self._off
        self._aggregate()
        return self._off

    def _slot(self, e: IcsEvent, now: float) -> int:
        """The slow path of ``observe``: the pair's row in the open hop (registering the pair, the hop and
        the flow as needed)."""
        proto = e.protocol
        if proto == "tcp" and e.fields:
            # a connection attempt to an ICS port belongs with that protocol's traffic
            proto = e.fields.get("ics_protocol", proto)
        if e.direction == REQUEST or e.sport > e.dport:
            # a "response" from the high (ephemeral) port is the client's: IEC 104 S-frames, DNP3
            # confirms. Equal ports (BACnet, DNP3 over UDP) trust the direction.
            key = (e.src, e.dst, proto)
        else:
            key = (e.dst, e.src, proto)
        p = self.pairs.get(key)
        if p is None:
            p = self._new_pair(key, now)
        if p.hop != self._hop_no:
            p.hop = self._hop_no
            p.slot = len(self._active)
            p.first = e  # the evidence of an alert: one event per pair and hop is kept alive
            p.first_ts = e.ts
            self._active.append(p)
        if e.flow_id and len(self._flows) < _MAX_FLOW_CACHE:
            self._flows[e.flow_id] = (p.slot, e.src, e.dst, e.protocol)
        return p.slot

    def advance(self, ts: float) -> Any:
        """Capture time passed without events (a tick): close the hops it crossed."""
        if self._last_ts == math.inf:
            return ()
        dt = ts - self._last_ts
        if dt > 0:
            self.now += dt
            self._last_ts = ts
        if self.now >= self._boundary:
            return self.on_close(self._close(self.now))
        return ()

    def finish(self) -> list[Window]:
        """End of input: close the open hop as a partial window (kept if it covers ``min_partial``).
        Returns the windows themselves (not ``on_close``)."""
        if self._last_ts == math.inf:
            return []
        out = self._close_hop(self.now, partial=True)
        self._boundary = self.now + self.hop
        return out

    # -- records -> buckets ------------------------------------------------------------------------
    def _aggregate(self) -> None:
        """Fold the buffered event records of the open hop into each active pair's bucket, vectorised.

        Also advances the cross-hop timing state: each pair's last request time (inter-arrivals) and the
        last time and period of each repeated operation (rhythm)."""
        used = self._off
        if not used:
            return
        # a view of the used part, no copy; writing resumes at offset 0 once everything is computed
        R = np.frombuffer(self._buf, dtype=np.float64, count=used // 8).reshape(-1, _NF)
        self._off = 0
        active = self._active
        m = len(active)
        rows = R[:, 0].astype(np.int64)
        T, K, S, L = R[:, 1], R[:, 2], R[:, 3], R[:, 4]
        F, A, Q, U = R[:, 5], R[:, 6], R[:, 8], R[:, 9]
        C = R[:, 7].astype(np.int64)
        bc = np.bincount
        kinds = bc(rows * 4 + K.astype(np.int64), minlength=4 * m).reshape(m, 4)
        n = kinds.sum(axis=1)
        req, resp, uns, conn = kinds[:, 0], kinds[:, 1], kinds[:, 2], kinds[:, 3]
        isr = K == 1.0
        nbytes = bc(rows, weights=S, minlength=m)
        sq = bc(rows, weights=S * S, minlength=m)
        smax = np.zeros(m)
        np.maximum.at(smax, rows, S)
        results = bc(rows * 3 + Q.astype(np.int64), minlength=3 * m).reshape(m, 3)
        exc, anom = results[:, 1], results[:, 2]
        lm = isr & ~np.isnan(L)
        lat_n = bc(rows[lm], minlength=m)
        lat_sum = bc(rows[lm], weights=L[lm], minlength=m)
        lat_max = np.zeros(m)
        np.maximum.at(lat_max, rows[lm], L[lm])
        # operations a side initiated (requests, reports, connection attempts): responses mirror them
        nr = ~isr
        rn, Tn, Fn, An, Un, Cn = rows[nr], T[nr], F[nr], A[nr], U[nr], C[nr]
        cats = bc(rn * 8 + Cn, minlength=8 * m).reshape(m, 8)
        bcast = np.zeros(m, dtype=np.int64)
        protos = [p.key[2] for p in active]
        for proto, units in BROADCAST_UNITS.items():
            if proto in protos:
                on = np.fromiter((x == proto for x in protos), dtype=bool, count=m)
                sel = on[rn] & np.isin(Un, list(units))
                bcast += bc(rn[sel], minlength=m)
        # inter-arrival times of initiated operations (time order within a pair is record order)
        iat_n = np.zeros(m, dtype=np.int64)
        iat_sum = np.zeros(m)
        iat_sq = np.zeros(m)
        iat_min = np.full(m, np.inf)
        per_n = np.zeros(m, dtype=np.int64)
        per_sum = np.zeros(m)
        per_max = np.zeros(m)
        if len(rn):
            # stable sort by pair: a radix sort when the rows fit 16 bits (numpy picks it for int16)
            o = np.argsort(rn.astype(np.int16) if m < 32_768 else rn, kind="stable")
            rs, ts_ = rn[o], Tn[o]
            head = np.empty(len(rs), dtype=bool)
            head[0] = True
            head[1:] = rs[1:] != rs[:-1]
            gaps = np.empty(len(rs))
            gaps[1:] = ts_[1:] - ts_[:-1]
            last_req = np.array([_NAN if p.last_req is None else p.last_req for p in active])
            gaps[head] = ts_[head] - last_req[rs[head]]
            ok = ~np.isnan(gaps)
            iat_n = bc(rs[ok], minlength=m)
            iat_sum = bc(rs[ok], weights=gaps[ok], minlength=m)
            iat_sq = bc(rs[ok], weights=gaps[ok] ** 2, minlength=m)
            np.minimum.at(iat_min, rs[ok], gaps[ok])
            tail = np.empty(len(rs), dtype=bool)
            tail[-1] = True
            tail[:-1] = head[1:]
            for i, t in zip(rs[tail].tolist(), ts_[tail].tolist()):
                active[i].last_req = t
            gr, gf, gu, ga = self._rhythm(active, rn, Tn, Fn, An, Un, per_n, per_sum, per_max)
        else:
            gr = gf = gu = ga = np.zeros(0, dtype=np.int64)
        # distinct functions and addresses per pair, from the distinct operations the rhythm grouped
        fcode = np.sort(gr * 131_072 + (gf + 1))  # a few thousand operations: sort and drop repeats
        if len(fcode) > 1:
            fcode = fcode[np.concatenate(([True], fcode[1:] != fcode[:-1]))]
        frow = fcode // 131_072
        fval = (fcode % 131_072 - 1).tolist()
        fcut = np.searchsorted(frow, np.arange(m + 1)).tolist()
        va = ga >= 0
        akey = (np.maximum(gu[va], 0) << 40) ^ ga[va]
        arow = gr[va]
        ao = np.lexsort((akey, arow))
        arow, akey = arow[ao], akey[ao]
        if len(akey):
            keep = np.empty(len(akey), dtype=bool)
            keep[0] = True
            keep[1:] = (arow[1:] != arow[:-1]) | (akey[1:] != akey[:-1])
            arow, akey = arow[keep], akey[keep]
        acut = np.searchsorted(arow, np.arange(m + 1)).tolist()
        aval = akey.tolist()
        cap = self._max_addrs
        tags = self._tags
        self._tags = {}
        L_n, L_req, L_resp, L_uns, L_conn = n.tolist(), req.tolist(), resp.tolist(), uns.tolist(), conn.tolist()
        L_bytes, L_sq, L_smax, L_exc, L_anom = nbytes.tolist(), sq.tolist(), smax.tolist(), exc.tolist(), anom.tolist()
        L_ln, L_ls, L_lx, L_bc = lat_n.tolist(), lat_sum.tolist(), lat_max.tolist(), bcast.tolist()
        L_in, L_is, L_iq, L_im = iat_n.tolist(), iat_sum.tolist(), iat_sq.tolist(), iat_min.tolist()
        L_pn, L_ps, L_px, L_cats = per_n.tolist(), per_sum.tolist(), per_max.tolist(), cats.tolist()
        for i, p in enumerate(active):
            ni = L_n[i]
            if not ni:
                continue
            b = p.cur
            if not b.n:
                b.first = p.first
                b.first_ts = p.first_ts
            b.n += ni
            b.req += L_req[i]
            b.resp += L_resp[i]
            b.uns += L_uns[i]
            b.conn += L_conn[i]
            b.nbytes += L_bytes[i]
            b.sq += L_sq[i]
            if L_smax[i] > b.smax:
                b.smax = L_smax[i]
            b.exc += L_exc[i]
            b.anom += L_anom[i]
            b.bc += L_bc[i]
            if L_ln[i]:
                b.lat_n += L_ln[i]
                b.lat_sum += L_ls[i]
                if L_lx[i] > b.lat_max:
                    b.lat_max = L_lx[i]
            if L_in[i]:
                b.iat_n += L_in[i]
                b.iat_sum += L_is[i]
                b.iat_sq += L_iq[i]
                if L_im[i] < b.iat_min:
                    b.iat_min = L_im[i]
            if L_pn[i]:
                b.per_n += L_pn[i]
                b.per_sum += L_ps[i]
                if L_px[i] > b.per_max:
                    b.per_max = L_px[i]
            c = L_cats[i]
            if any(c):
                b.cats = [x + y for x, y in zip(b.cats, c)]
            f0, f1 = fcut[i], fcut[i + 1]
            if f1 > f0:
                b.funcs.update(fval[f0:f1])
            a0, a1 = acut[i], acut[i + 1]
            if a1 > a0 and len(b.addrs) < cap:
                b.addrs.update(aval[a0 : min(a1, a0 + cap - len(b.addrs))])
            t = tags.get(i)
            if t:
                b.tags = t if b.tags is None else b.tags | t

    @staticmethod
    def _rhythm(active: list[_Pair], rn: np.ndarray, Tn: np.ndarray, Fn: np.ndarray, An: np.ndarray,
                Un: np.ndarray, per_n: np.ndarray, per_sum: np.ndarray,
                per_max: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """Per repeated operation (pair, function, unit, address): the change between consecutive
        periods, ``|g - g'| / max(g, g')`` (0 for a steady poll, towards 1 when requests are held,
        injected or reordered), summed and maxed per pair. The last time and period of each operation
        carry over. Returns the distinct operations (pair row, function, unit, address; -1 for none)."""
        ak = np.nan_to_num(An, nan=-1.0)
        uk = np.nan_to_num(Un, nan=-1.0)
        fu = (Fn + 2.0) * 65_537.0 + (uk + 1.0)  # function and unit in one exact float key
        o = np.lexsort((ak, fu, rn))  # stable: within an operation, record order is time order
        r2, fu2, a2, t2 = rn[o], fu[o], ak[o], Tn[o]
        k = len(r2)
        head = np.empty(k, dtype=bool)
        head[0] = True
        head[1:] = (r2[1:] != r2[:-1]) | (fu2[1:] != fu2[:-1]) | (a2[1:] != a2[:-1])
        gap = np.empty(k)
        gap[1:] = t2[1:] - t2[:-1]
        prev = np.empty(k)
        prev[1:] = gap[:-1]
        starts = np.flatnonzero(head)
        ends = np.empty(len(starts), dtype=np.int64)
        ends[:-1] = starts[1:] - 1
        ends[-1] = k - 1
        g_r = r2[starts]
        g_fu = fu2[starts].astype(np.int64)
        g_f = g_fu // 65_537 - 2
        g_u = g_fu % 65_537 - 1
        g_a = a2[starts].astype(np.int64)
        keys = list(zip(g_r.tolist(), g_fu.tolist(), g_a.tolist()))
        none = (_NAN, _NAN)
        carried = np.array([active[r].polls.get((f, a), none) for r, f, a in keys], dtype=np.float64).reshape(-1, 2)
        gap[starts] = t2[starts] - carried[:, 0]
        prev[starts] = carried[:, 1]
        second = starts + 1
        inside = second <= ends
        prev[second[inside]] = gap[starts[inside]]
        hi = np.fmax(gap, prev)
        ok = (prev > 0.0) & (gap >= 0.0) & (hi > 0.0)
        jit = np.zeros(k)
        jit[ok] = np.abs(gap[ok] - prev[ok]) / hi[ok]
        rr = r2[ok]
        m = len(per_n)
        per_n += np.bincount(rr, minlength=m)
        per_sum += np.bincount(rr, weights=jit[ok], minlength=m)
        np.maximum.at(per_max, rr, jit[ok])
        last_t = t2[ends].tolist()
        last_g = np.nan_to_num(gap[ends], nan=0.0).tolist()  # nan: one occurrence, nothing carried: no period yet
        for (r, f, a), t, g in zip(keys, last_t, last_g):
            polls = active[r].polls
            if len(polls) < MAX_POLLS or (f, a) in polls:
                polls[(f, a)] = (t, g)
        return g_r, g_f, g_u, g_a

    # -- hop boundaries ------------------------------------------------------------------------
    def _close(self, now: float) -> list[Window]:
        out: list[Window] = []
        while now >= self._boundary:
            out.extend(self._close_hop(self._boundary))
            if now - self._boundary > self.config.window + self.hop:
                # a long silence: nothing left to slide over, realign instead of closing empty hops
                self._flush_past()
                self._boundary = self._boundary + math.floor((now - self._boundary) / self.hop) * self.hop
                self._hop_start = self._boundary
            self._boundary += self.hop
        return out

    def _flush_past(self) -> None:
        for p in self._recent.values():
            if p.past is not None:
                p.past.clear()
        self._recent.clear()

    def _close_hop(self, end: float, partial: bool = False) -> list[Window]:
        cfg = self.config
        hop_start = self._hop_start
        self._hop_start = end
        self._aggregate()
        active = self._active
        self._active = []
        self._flows = {}
        self._hop_no += 1
        sliding = self.k > 1
        start = end - cfg.window if sliding else hop_start
        # 1. close each active pair's bucket: damped statistics, history, new-pair accounting
        close_ts = self._last_ts  # capture time of the moment the hop closed (the alert's time)
        n = 0
        for p in active:
            p.first = None
            b = p.cur
            n += b.n
            b.last_ts = close_ts
            p.seen = end
            dt = end - p.damped_at
            for dmp in p.damped:
                dmp.update(dt, b)
            p.damped_at = end
        self._n += n
        if sliding:
            for p in active:
                self._recent[p.key] = p
            members = list(self._recent.values())
        else:
            members = active
        rows: list[tuple[_Pair, _Bucket]] = []
        stale: list[tuple[str, str, str]] = []
        for p in members:
            b = p.cur
            if sliding:
                merged = _Bucket()
                for old in p.past:  # type: ignore[union-attr]
                    merged.merge(old)
                merged.merge(b)
                p.past.append(b)  # type: ignore[union-attr]
                p.cur = _Bucket()
                if not merged.n:
                    stale.append(p.key)
                    continue
                rows.append((p, merged))
            else:
                p.cur = _Bucket()
                rows.append((p, b))
        for key in stale:
            self._recent.pop(key, None)
        windows = self._rows(rows, start, end, partial)
        # 2. bounds: idle pairs, then the hard cap
        self._evict(end)
        self.counts["windows"] += len(windows)
        return windows

    def _rows(self, rows: list[tuple[_Pair, _Bucket]], start: float, end: float, partial: bool) -> list[Window]:
        cfg = self.config
        W = cfg.window
        hist = self.history
        # host context
        client_servers: dict[str, int] = {}
        client_new: dict[str, int] = {}
        client_n: dict[str, int] = {}
        server_clients: dict[str, int] = {}
        server_n: dict[str, int] = {}
        new_flags: list[int] = []
        for p, b in rows:
            c, s, _ = p.key
            client_servers[c] = client_servers.get(c, 0) + 1
            client_n[c] = client_n.get(c, 0) + b.n
            server_clients[s] = server_clients.get(s, 0) + 1
            server_n[s] = server_n.get(s, 0) + b.n
            new = 1 if (p.was_new and p.born >= start) else 0
            new_flags.append(new)
            if new:
                client_new[c] = client_new.get(c, 0) + 1
        # decayed new-peer count per client (uncorrected: it accumulates)
        peers = self._client_peers
        for c, n in client_new.items():
            st = peers.get(c)
            if st is None:
                peers[c] = [float(n), end]
            else:
                st[0] = st[0] * 2.0 ** (-(end - st[1]) / CLIENT_PEERS_HALF_LIFE) + n
                st[1] = end
        out: list[Window] = []
        for (p, b), new in zip(rows, new_flags):
            c, s, _ = p.key
            span = min(end, self.now) - max(start, p.born)
            if partial:
                if span < cfg.min_partial * W and p.born < start:
                    self.counts["partial_windows_dropped"] += 1
                    continue
            dur = max(span, 1.0) if span < W else W
            n = b.n
            req = b.req
            inv_n = 1.0 / n
            ops = req + b.conn + b.uns  # operations a side initiated (responses mirror them)
            inv_ops = 1.0 / ops if ops else 0.0
            responders = b.resp + b.uns
            ent = hist.entry(p.key, cfg)
            if ent is not None:
                kf, ka = ent
                new_f = b.funcs - kf
                new_a = b.addrs - ka
                if end <= self._warm_until:
                    nf = na = 0.0
                else:
                    nf = len(new_f) / len(b.funcs) if b.funcs else 0.0
                    na = len(new_a) / len(b.addrs) if b.addrs else 0.0
                if new_f:
                    hist.learn(kf, new_f, cfg)
                if new_a:
                    hist.learn(ka, new_a, cfg)
            else:  # known-pair table full: everything unseen counts as new
                hist.full += 1
                nf = 1.0 if b.funcs else 0.0
                na = 1.0 if b.addrs else 0.0
            mean_size = b.nbytes * inv_n
            size_std = math.sqrt(max(b.sq * inv_n - mean_size * mean_size, 0.0))
            if b.iat_n:
                im = b.iat_sum / b.iat_n
                isd = math.sqrt(max(b.iat_sq / b.iat_n - im * im, 0.0))
                imin = b.iat_min
            else:
                im, isd, imin = W, 0.0, W
            if b.lat_n:
                lm, lx = 1000.0 * b.lat_sum / b.lat_n, 1000.0 * b.lat_max
            else:
                lm = lx = 0.0
            peers_st = peers.get(c)
            peers_1h = peers_st[0] * 2.0 ** (-(end - peers_st[1]) / CLIENT_PEERS_HALF_LIFE) if peers_st else 0.0
            rate = n / dur
            vals = [
                rate,
                req / dur,
                responders / dur,
                max(req - b.resp - 1, 0) / req if req else 0.0,  # one may be in flight at the boundary
                *(x * inv_ops for x in b.cats),
                float(len(b.funcs)),
                float(len(b.addrs)),
                nf,
                na,
                float(new),
                b.exc / b.resp if b.resp else 0.0,
                b.anom * inv_n,
                b.bc * inv_ops,
                float(b.conn),
                b.nbytes / dur,
                mean_size,
                size_std,
                float(b.smax),
                im,
                isd,
                imin,
                lm,
                lx,
                b.per_sum / b.per_n if b.per_n else 0.0,
                b.per_max,
                float(client_servers[c]),
                float(client_new.get(c, 0)),
                client_n[c] / dur,
                float(server_clients[s]),
                server_n[s] / dur,
                peers_1h,
            ]
            mid_rate = 0.0
            for i, dmp in enumerate(p.damped):
                dv = dmp.values(W)
                vals.extend(dv)
                if i == min(1, len(p.damped) - 1):
                    mid_rate = dv[0]
            vals.append((rate + 0.01) / (mid_rate + 0.01))
            out.append(
                Window(
                    p.key,
                    start,
                    end,
                    b.first_ts,
                    b.last_ts,
                    n,
                    vals,
                    b.first,
                    frozenset(b.tags) if b.tags else frozenset(),
                    partial,
                    p.restored,
                )
            )
            p.restored = False
            p.was_new = p.was_new and p.born >= start  # reported once
        return out

    # -- pairs ----------------------------------------------------------------------------------
    def _new_pair(self, key: tuple[str, str, str], now: float) -> _Pair:
        cfg = self.config
        if len(self.pairs) >= cfg.max_pairs:
            self._evict_cap()
            if len(self.pairs) >= cfg.max_pairs:
                # every pair is busy in this very hop (a spoofed-source flood): fold the newcomers into
                # one overflow pair per protocol, whose rates then stand out by themselves
                self.counts["pairs_overflow"] += 1
                key = (OVERFLOW, OVERFLOW, key[2])
                p = self.pairs.get(key)
                if p is not None:
                    return p
        new = key not in self.history.pairs and now >= self._warm_until
        self.history.entry(key, cfg)
        p = self.pairs[key] = _Pair(key, now, cfg.half_lives, self.k, new)
        return p

    def _evict(self, now: float) -> None:
        limit = now - self.config.idle_evict
        if limit <= 0:
            return
        hop = self._hop_no
        idle = [k for k, p in self.pairs.items() if p.seen < limit and p.hop != hop and k not in self._recent]
        for k in idle:
            del self.pairs[k]
        self.counts["pairs_evicted"] += len(idle)
        if len(self._client_peers) > 4 * self.config.max_pairs:
            # decayed to nothing long ago: keep the table bounded
            cut = sorted(self._client_peers.items(), key=lambda kv: kv[1][1])[: len(self._client_peers) // 2]
            for c, _ in cut:
                del self._client_peers[c]

    def _evict_cap(self) -> None:
        """The pair table is full: forget the least recently active tenth (not those in the open hop)."""
        n = max(1, len(self.pairs) // 10)
        hop = self._hop_no
        victims = sorted(
            (p for k, p in self.pairs.items() if p.hop != hop and k not in self._recent), key=lambda p: p.seen
        )[:n]
        for p in victims:
            del self.pairs[p.key]
        self.counts["pairs_evicted_cap"] += len(victims)

    # -- state carried from training into a sensor -------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a sensor starting with the model should know: the history and, per pair, the damped
        statistics (with their age), so the long averages do not start cold. Clock-bound state (last
        request times, poll rhythms, open buckets) is left out: across a restart it would fake a gap."""
        now = self.now
        pairs = []
        for key, p in self.pairs.items():
            pairs.append([list(key), now - p.seen, now - p.damped_at,
                          [[d.w, d.tw, d.s1, d.s2, d.wi, d.i1, d.i2] for d in p.damped]])  # fmt: skip
        return {
            "history": self.history.snapshot(),
            "pairs": pairs,
            "client_peers": [[c, v, now - at] for c, (v, at) in self._client_peers.items()],
        }

    @classmethod
    def from_snapshot(cls, config: WindowConfig, snap: dict[str, Any] | None) -> "FeatureExtractor":
        """A fresh extractor (its clock at 0) that continues from a training run's ``snapshot``."""
        if not snap:
            return cls(config)
        fx = cls(config, History.from_snapshot(snap.get("history")))
        for key, seen_age, damped_age, damped in snap.get("pairs", []):
            k = tuple(key)
            p = _Pair(k, -float(seen_age), config.half_lives, fx.k, False)  # type: ignore[arg-type]
            p.born = -1e12  # known long before: its first window is not a partial first window
            p.restored = True
            p.damped_at = -float(damped_age)
            if len(damped) == len(p.damped):
                for d, vals in zip(p.damped, damped):
                    d.w, d.tw, d.s1, d.s2, d.wi, d.i1, d.i2 = (float(v) for v in vals)
            fx.pairs[k] = p  # type: ignore[index]
            if len(fx.pairs) >= config.max_pairs:
                break
        for c, v, age in snap.get("client_peers", []):
            fx._client_peers[c] = [float(v), -float(age)]
        return fx

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        out["events"] = self._n
        out["pairs"] = len(self.pairs)
        out["known_pairs"] = len(self.history.pairs)
        out["history_entries"] = self.history.total
        out["history_full"] = self.history.full
        return out


def extract(
    events: Iterable[IcsEvent], config: WindowConfig | None = None, history: History | None = None
) -> tuple[list[Window], FeatureExtractor]:
    """All windows of an event stream (tests, small captures)."""
    fx = FeatureExtractor(config, history)
    out: list[Window] = []
    for e in events:
        w = fx.observe(e)
        if w:
            out.extend(w)
    out.extend(fx.finish())
    return out, fx
