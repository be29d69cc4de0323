"""Learn mode: fold events into a ``Baseline`` (a bounded summary; no event is kept).

``Learner.observe(event)`` is the per-event hook (plug it into ``Pipeline(on_event=...)``); call
``new_capture()`` between capture files (time in the next file has nothing to do with the last) and
``finish()`` at the end, which turns each request signature's interval reservoir into a ``PollEntry``
when the request is periodic (enough samples, robust spread small against the median).

Memory: per pair x function x unit an ``IntervalSet`` of at most ``max_intervals`` intervals and at
most ``max_value_addresses`` value ranges; per request signature a 64-sample reservoir (array of
doubles). All counts capped (model.MAX_*), caps hit are counted into ``baseline.truncated``.

Time going backwards (a capture whose clock restarts, as the IPAL IEC 104 files do) or a long silence
(``capture_gap``) starts a new timing epoch: no interval spans it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from detectors.baseline.keys import (
    PORTS,
    WRITE_CATEGORIES,
    connection_start,
    endpoints,
    sequence_anomaly,
    written_values,
)
from detectors.baseline.model import (
    MAD_SCALE,
    MAX_POLLS,
    Baseline,
    PollEntry,
    PollSampler,
    mad,
    median,
    poll_bounds,
)
from sensor.assets import is_host_address, protocol_of
from sensor.events import MALFORMED, REQUEST, UNSOLICITED, IcsEvent

MAX_SAMPLERS = 20_000  # request signatures timed at once, over all pairs (~200 bytes each)


class Learner:
    name = "baseline-learn"

    def __init__(self, baseline: Baseline | None = None) -> None:
        self.baseline = baseline or Baseline()
        self._events_before = _counted(self.baseline)
        self.skipped = 0  # malformed events: not learned (their function and addresses are not trusted)
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._samplers: dict[tuple, PollSampler] = {}
        self._first_flow: dict[tuple, int] = {}  # pair -> its first flow in this capture (bounded by pairs)
        self._epoch = 0
        self._prev_ts: float | None = None
        self._rng = random.Random(0x1C5)  # reservoir sampling is deterministic, so is the YAML
        self.samplers_dropped = 0
        b = self.baseline
        self._gap = float(b.setting("capture_gap"))
        self._value_cap = int(b.setting("max_value_addresses"))

    # -- the per-event hook ---------------------------------------------------------------------------
    def observe(self, event: IcsEvent) -> list:
        # Written for the hot path (it runs for every event): no helper calls in the common case of
        # known assets and pairs, as few temporary objects as the bookkeeping allows.
        ts = event.ts
        prev = self._prev_ts
        if prev is None:
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
        else:
            d = ts - prev
            if d < -1.0 or d > self._gap:
                self._epoch += 1  # clock restart or capture gap: no interval spans it
                if self.first_ts is None or ts < self.first_ts:
                    self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        self._prev_ts = ts
        if event.result == MALFORMED:
            self.skipped += 1
            return []
        b = self.baseline
        if event.transport == "l2":
            client, server, cis = endpoints(event)
        else:  # sensor.assets.orient, inlined
            sp = event.sport in PORTS
            dp = event.dport in PORTS
            cis = (dp and not sp) or (dp == sp and event.direction == REQUEST)
            if cis:
                client = event.src
                server = event.dst
            else:
                client = event.dst
                server = event.src
        proto = event.protocol
        if proto == "tcp":
            proto = protocol_of(event)
        assets = b.assets
        a = assets.get(client)
        if a is None and is_host_address(client):
            a = b.asset(client)
        if a is not None:
            a.client.add(proto)
            if a.mac is None:
                a.mac = event.src_mac if cis else event.dst_mac
        a = assets.get(server)
        if a is None and is_host_address(server):
            a = b.asset(server)
        if a is not None:
            a.server.add(proto)
            if a.mac is None:
                a.mac = event.dst_mac if cis else event.src_mac
        pk = (client, server, proto)
        pair = b.pairs.get(pk)
        if pair is None:
            pair = b.pair(client, server, proto)
            if pair is None:
                return []
        if event.transport != "l2":
            pair.ports.add(event.dport if cis else event.sport)
        first_flow = self._first_flow.get(pk)
        if first_flow is None:
            first_flow = self._first_flow[pk] = event.flow_id
        if event.fields is not None or event.anomaly is not None:
            seq = sequence_anomaly(event)
            if seq is not None:
                pair.sequence[seq] = pair.sequence.get(seq, 0) + 1
            start = connection_start(event)
            if start is not None:
                kind = "at_zero" if start == 0 else ("joined" if event.flow_id == first_flow else "midway")
                pair.starts[kind] = pair.starts.get(kind, 0) + 1
        side = "client" if cis else "server"
        name = event.function_name
        fe = pair.functions.get((side, name))
        if fe is None:
            fe = b.function(pair, side, name, event.category)
            if fe is None:
                return []
        fe.count += 1
        addr = event.address
        if addr is not None and addr.__class__ is int:
            ue = fe.units.get(event.unit)
            if ue is None:
                ue = b.unit(fe, event.unit)
            if ue is not None:
                q = event.quantity
                ue.addresses.add(addr, addr + q - 1 if q and q > 1 and q.__class__ is int else addr)
                vals = event.values
                if vals is not None and cis and event.direction == REQUEST and event.category in WRITE_CATEGORIES:
                    if event.objects is None and len(vals) == 1:  # the common single write: no generator
                        v = vals[0]
                        if v.__class__ is int or v.__class__ is float:
                            ue.add_value(addr, v, self._value_cap)
                    else:
                        for vaddr, fv in written_values(event, cis):
                            ue.add_value(vaddr, fv, self._value_cap)
        if (event.direction == REQUEST) if cis else (event.direction == UNSOLICITED):
            self._time((pk, side, name, event.unit, addr, event.quantity), ts)
        return []

    @property
    def events(self) -> int:
        """Events observed. Counted from the function counts (plus what the caps and the malformed
        check turned away) rather than per event: an integer above 256 is a new object in CPython,
        and the per-event path keeps its allocations down."""
        return _counted(self.baseline) - self._events_before + self.skipped

    def tick(self, ts: float) -> list:
        return []

    def flush(self) -> list:
        return []

    def _time(self, key: tuple, ts: float) -> None:
        """``key``: (pair key, side, function, unit, address, quantity), one flat tuple per event."""
        s = self._samplers.get(key)
        if s is None:
            if len(self._samplers) >= MAX_SAMPLERS:
                self.samplers_dropped += 1
                return
            s = self._samplers[key] = PollSampler()
            s.epoch = self._epoch
            s.last = ts
            return
        last = s.last
        if s.epoch != self._epoch or last is None or ts < last:
            s.epoch = self._epoch
            s.last = ts
            return
        s.last = ts
        dt = ts - last
        if dt <= 0.0:
            return  # two requests in one packet / same timestamp: not an interval of the poll
        # PollSampler.add, inlined: count, extremes, and the reservoir (Li's algorithm L: random numbers
        # are drawn only when an item is taken, so the steady state costs one comparison)
        n = s.n = s.n + 1
        s.lo = min(s.lo, dt)
        s.hi = max(s.hi, dt)
        if n <= PollSampler.SIZE:
            s.res.append(dt)
            if n == PollSampler.SIZE:
                s.start_skipping(self._rng)
        elif n == s.next:
            s.take(dt, self._rng)

    # -- boundaries -----------------------------------------------------------------------------------
    def new_capture(self) -> None:
        """The next events come from another capture: no interval spans the two."""
        self._epoch += 1
        self._prev_ts = None
        self._first_flow = {}

    def finish(self, run: dict[str, Any] | None = None) -> Baseline:
        """Turn timing reservoirs into poll entries, record the run, return the baseline."""
        b = self.baseline
        min_samples = int(b.setting("min_poll_samples"))
        max_cv = float(b.setting("max_poll_cv"))
        for key, s in sorted(self._samplers.items(), key=lambda kv: repr(kv[0])):
            pair_key, sig = key[0], key[1:]
            if s.n < min_samples or not s.res:
                continue
            xs = list(s.res)
            med = median(xs)
            if med <= 0.0:
                continue
            md = mad(xs, med)
            if MAD_SCALE * md > max_cv * med:
                continue  # not periodic: irregular requests are learned as functions only
            pair = b.pairs.get(pair_key)
            if pair is None:
                continue
            low, high, stop = poll_bounds(med, md, b.settings)
            entry = PollEntry(sig[0], sig[1], sig[2], sig[3], sig[4], s.n, med, md, s.lo, s.hi, low, high, stop)
            old = pair.polls.get(sig)
            if old is not None:
                from detectors.baseline.model import merge_poll

                entry = merge_poll(old, entry, b.settings)
            elif len(pair.polls) >= MAX_POLLS:
                b.truncated["polls"] = b.truncated.get("polls", 0) + 1
                continue
            pair.polls[sig] = entry
        for p in b.pairs.values():
            p.events = sum(f.count for f in p.functions.values()) + p.functions_dropped
        for a in b.assets.values():
            a.events = 0
        for (c, sv, _), p in b.pairs.items():  # per asset: events of the pairs it is part of
            for addr in (c, sv):
                a = b.assets.get(addr)
                if a is not None:
                    a.events += p.events
        if self.samplers_dropped:
            b.truncated["timed_signatures"] = b.truncated.get("timed_signatures", 0) + self.samplers_dropped
        self._samplers = {}
        if run is not None:
            b.runs.append(run)
        return b


def _counted(b: Baseline) -> int:
    """Events a baseline's counts account for (function counts, events past the caps)."""
    n = b.truncated.get("pairs", 0)
    for p in b.pairs.values():
        n += p.functions_dropped
        for f in p.functions.values():
            n += f.count
    return n


def learned_at() -> str:
    """Now, in UTC; ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) pins it, so learning
    the same captures twice gives byte-identical YAML."""
    import os
    from datetime import datetime

    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(fixed), tz=UTC) if fixed and fixed.isdigit() else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def learn_captures(
    paths: Iterable[str], config: Any | None = None, baseline: Baseline | None = None
) -> tuple[Baseline, dict[str, Any]]:
    """Learn from capture files; returns the baseline and the run record (also appended to it)."""
    from sensor.pipeline import Pipeline

    learner = Learner(baseline)
    pipeline = Pipeline(config, on_event=learner.observe)
    captures = []
    packets = 0
    for path in paths:
        learner.new_capture()
        r = pipeline.replay_file(path)
        packets += r.packets
        entry: dict[str, Any] = {"file": str(path), "packets": r.packets, "events": r.events}
        if r.error:
            entry["damaged"] = r.error
        captures.append(entry)
    run: dict[str, Any] = {
        "at": learned_at(),
        "captures": captures,
        "packets": packets,
        "events": learner.events,
        "skipped_malformed": learner.skipped,
    }
    if learner.first_ts is not None and learner.last_ts is not None and math.isfinite(learner.first_ts):
        from alerts.records import iso_time

        run["first"] = iso_time(learner.first_ts)[:19] + "Z"
        run["last"] = iso_time(learner.last_ts)[:19] + "Z"
    b = learner.finish(run)
    return b, run
