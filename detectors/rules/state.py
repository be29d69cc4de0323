"""The bounded state behind thresholds, first-seen and suppression.

Each structure is touched only after a rule's condition matched (never for every event), holds at
most ``max_keys`` groups (the oldest go first, counted in ``evicted``), and forgets what fell out of
its time window. Capture time can jump backwards (merged captures, a clock restart): a window whose
newest entry is more than a second in the future is dropped rather than mixed with the new clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

KeyFn = Callable[[Any], Any]
BACKWARDS = 1.0  # seconds of backward jump tolerated inside a window (reordered packets)
EVIDENCE_TAIL = 5  # distinct thresholds keep the events of the last values before the count


def _evict_oldest(table: dict, cap: int) -> int:
    """Drop the oldest-inserted keys until ``table`` has room for one more; return how many went."""
    n = 0
    while len(table) >= cap:
        table.pop(next(iter(table)))
        n += 1
    return n


class ThresholdState:
    """``count N within T [grouped by ...] [distinct F]`` with a sliding window per group.

    Plain count: per group, a deque of the times of the last N matching events; it fires when they
    span no more than T seconds. The events themselves are kept only once the group is within
    ``EVIDENCE_TAIL`` events of the count (the evidence: the last events before it fired).
    Distinct: per group, the time each distinct value was last
    seen (``groups``) and the event that brought the value in (``evidence``); stale values are
    purged only when a new value brings the count to N, then it fires if N values remain. After
    firing the group starts over.

    Why distinct keeps times, not events: a scan rule matches every request, and keeping the last
    event per value would keep (and make the garbage collector walk) one live event per request.
    A value seen again only refreshes its time, a float; and the event that brought a value in is
    kept only for the last ``EVIDENCE_TAIL`` values before the count (so a master polling with its
    usual three function codes keeps no event at all). ``fired_values`` lists every value of the
    window that fired. The engine runs that common path inline
    (compiler.build_step) and calls ``slow`` for the rest: a new group, a new value, a deque that
    reached the count. ``add`` does the whole thing (tests, tools).
    """

    __slots__ = (
        "count",
        "distinct_key",
        "evicted",
        "evidence",
        "fired_start",
        "fired_values",
        "group_key",
        "groups",
        "keep_after",
        "max_keys",
        "room_credit",
        "within",
    )

    def __init__(self, count: int, within: float, group_key: KeyFn, distinct_key: KeyFn | None, max_keys: int) -> None:
        self.count = count
        self.within = within
        self.group_key = group_key
        self.distinct_key = distinct_key
        self.max_keys = max_keys
        self.groups: dict[Any, Any] = {}  # key -> deque of times (count) or {value: last time} (distinct)
        self.evidence: dict[Any, Any] = {}  # key -> deque of the last events (count) / {value: first event}
        self.evicted = 0
        self.keep_after = max(0, count - EVIDENCE_TAIL)  # distinct: keep events from this many values on
        self.fired_values: list[Any] = []  # distinct: the values of the window that fired last
        self.fired_start = 0.0  # the time of the first event of the window that fired last
        self.room_credit = 0  # new groups that may still make room without a sweep (see _make_room)

    def add(self, event: Any) -> tuple[Any, ...] | None:
        """Count ``event``; return the events that completed the threshold (the evidence), or None."""
        key = self.group_key(event)
        if self.distinct_key is not None:
            times = self.groups.get(key)
            value = self.distinct_key(event)
            if times is not None and value in times:
                times[value] = event.ts
                return None
        return self.slow(event, key)

    def slow(self, event: Any, key: Any) -> tuple[Any, ...] | None:
        groups = self.groups
        state = groups.get(key)
        ts = event.ts
        if self.distinct_key is None:
            if state is None:
                if len(groups) >= self.max_keys:
                    self._make_room(ts)
                state = groups[key] = deque(maxlen=self.count)
            elif state and ts < state[-1] - BACKWARDS:
                state.clear()
                self.evidence.pop(key, None)
            state.append(ts)
            near = self.count - EVIDENCE_TAIL  # keep events only within EVIDENCE_TAIL of the count
            if near <= 0 or (len(state) >= near and ts - state[-near] <= self.within):
                kept = self.evidence.get(key)
                if kept is None:  # made when first needed: most groups never get near their count
                    kept = self.evidence[key] = deque(maxlen=min(self.count, EVIDENCE_TAIL))
                kept.append(event)
            if len(state) >= self.count and ts - state[0] <= self.within:
                start = self.fired_start = state[0]
                del groups[key]
                kept = self.evidence.pop(key)
                return tuple(e for e in kept if e.ts >= start)
            return None
        value = self.distinct_key(event)
        if state is None:
            if len(groups) >= self.max_keys:
                self._make_room(ts)
            state = groups[key] = {}
        if value in state:
            state[value] = ts
            return None
        state[value] = ts
        evidence = self.evidence.get(key)
        if len(state) > self.keep_after:
            if evidence is None:  # made when first needed
                evidence = self.evidence[key] = {}
            evidence[value] = event
        if len(state) < self.count:
            return None
        horizon = ts - self.within
        for v in [v for v, t in state.items() if t < horizon or t > ts + BACKWARDS]:
            del state[v]
            if evidence is not None:
                evidence.pop(v, None)
        if len(state) >= self.count:
            del groups[key]
            self.evidence.pop(key, None)
            evidence = evidence or {}
            self.fired_values = list(state)
            self.fired_start = min([*state.values(), *(e.ts for e in evidence.values())])
            return tuple(sorted(evidence.values(), key=lambda e: e.ts))
        return None

    def _newest(self, state: Any) -> float:
        if isinstance(state, deque):
            return state[-1] if state else float("-inf")
        return max(state.values(), default=float("-inf"))

    def sweep(self, now: float) -> None:
        """Forget groups whose newest event left the window."""
        horizon = now - self.within
        stale = [k for k, s in self.groups.items() if self._newest(s) < horizon]
        for k in stale:
            del self.groups[k]
            self.evidence.pop(k, None)

    def _make_room(self, now: float) -> None:
        # A sweep walks every group: sweeping for each new group of a flood of distinct keys (a SYN
        # flood from spoofed sources) would cost O(max_keys) per event. Sweep once, then let the next
        # max_keys / 4 new groups take the oldest group's place: amortised O(1).
        if self.room_credit <= 0:
            self.sweep(now)
            self.room_credit = max(1, self.max_keys // 4)
        self.room_credit -= 1
        while len(self.groups) >= self.max_keys:
            k = next(iter(self.groups))
            del self.groups[k]
            self.evidence.pop(k, None)
            self.evicted += 1


class FirstSeenState:
    """``new``: alert when a value (talker, function, address...) appears for an asset after learning.

    Everything seen during the first ``learn`` seconds is the baseline; the clock starts with the
    first event the engine sees (``start``), or the first event this rule checks. Members of the
    ``known`` lists are never new. Bounded: at most ``max_keys`` assets (oldest forgotten, counted in
    ``evicted``) and ``max_values`` values per asset (beyond that new values still alert but are not
    remembered, counted in ``capped``). The engine inlines the "already seen" test and calls ``slow``
    for an unseen value; ``check`` does the whole thing.
    """

    __slots__ = (
        "capped",
        "evicted",
        "known",
        "learn",
        "learn_until",
        "learned",
        "relearned",
        "max_keys",
        "max_values",
        "per_key",
        "seen",
        "value_key",
    )

    def __init__(
        self,
        value_key: KeyFn,
        per_key: KeyFn,
        known: Callable[[Any], bool] | None,
        learn: float,
        max_keys: int,
        max_values: int,
    ) -> None:
        self.value_key = value_key
        self.per_key = per_key
        self.known = known
        self.learn = learn
        self.learn_until: float | None = None
        self.learned = False  # learning is over for good (see ``slow``)
        self.relearned = 0  # learning restarted because the clock went back before its start
        self.max_keys = max_keys
        self.max_values = max_values
        self.seen: dict[Any, set[Any]] = {}
        self.evicted = 0
        self.capped = 0

    def start(self, ts: float) -> None:
        """Start the learning period at ``ts`` (once)."""
        if self.learn_until is None:
            self.learn_until = ts + self.learn

    def check(self, event: Any) -> bool:
        """True when the event's value is new for its asset (and learning is over)."""
        self.start(event.ts)
        value = self.value_key(event)
        if value is None or (self.known is not None and self.known(value)):
            return False
        asset = self.per_key(event)
        seen = self.seen.get(asset)
        if seen is not None and value in seen:
            return False
        return self.slow(event, value, asset)

    def slow(self, event: Any, value: Any, asset: Any) -> bool:
        """``value`` is not yet known for ``asset``: remember it; True if learning is over.

        Capture time is not trusted blindly: an event from before the learning period started means
        the clock that started it was wrong (a first packet dated 2100) or went back (merged captures)
        while learning, and learning starts again on the new clock (``relearned``); once learning is
        over it stays over, so a clock going back later cannot blind the rule."""
        ts = event.ts
        if self.learn_until is None:
            self.learn_until = ts + self.learn
        elif not self.learned and ts < self.learn_until - self.learn - BACKWARDS:
            self.learn_until = ts + self.learn
            self.relearned += 1
        seen = self.seen.get(asset)
        if seen is None:
            self.evicted += _evict_oldest(self.seen, self.max_keys)
            seen = self.seen[asset] = set()
        if len(seen) < self.max_values:
            seen.add(value)
        else:
            self.capped += 1
        if not self.learned and ts >= self.learn_until:
            self.learned = True
        return self.learned

    def in_learning(self, ts: float) -> bool:
        return not self.learned and (self.learn_until is None or ts < self.learn_until)


class SuppressState:
    """Per rule and per key (e.g. src, dst): after an alert, the same key stays quiet for ``seconds``."""

    __slots__ = ("evicted", "key", "max_keys", "room_credit", "seconds", "suppressed", "until")

    def __init__(self, seconds: float, key: KeyFn, max_keys: int) -> None:
        self.seconds = seconds
        self.key = key
        self.max_keys = max_keys
        self.until: dict[Any, float] = {}
        self.evicted = 0
        self.suppressed = 0
        self.room_credit = 0  # new keys that may still make room without a sweep (as ThresholdState)

    def check(self, event: Any) -> bool:
        """True when an alert for ``event`` must be suppressed; otherwise start the quiet period."""
        if self.seconds <= 0:
            return False
        key = self.key(event)
        ts = event.ts
        until = self.until.get(key)
        if until is not None and until - self.seconds - BACKWARDS <= ts < until:
            self.suppressed += 1
            return True
        if until is None and len(self.until) >= self.max_keys:
            if self.room_credit <= 0:  # amortised: see ThresholdState._make_room
                self.sweep(ts)
                self.room_credit = max(1, self.max_keys // 4)
            self.room_credit -= 1
            self.evicted += _evict_oldest(self.until, self.max_keys)
        self.until[key] = ts + self.seconds
        return False

    def sweep(self, now: float) -> None:
        stale = [k for k, u in self.until.items() if u <= now]
        for k in stale:
            del self.until[k]
