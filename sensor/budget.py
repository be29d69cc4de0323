"""One memory budget for the bytes the sensor holds while it waits for more of them.

Out-of-order TCP segments waiting for a hole to fill, partial PDUs waiting for their tail, DNP3
transport segments waiting for the final one, OPC UA chunks waiting for the final chunk, COTP DT
fragments waiting for end-of-TSDU: each is capped per flow, but a per-flow cap times ``max_flows``
is no bound at all (200,000 flows x 1 MiB). An attacker who opens thousands of flows and leaves
each one a little incomplete would fill the sensor's memory without ever breaking a per-flow cap.

``HeldBytes`` adds the global cap (``sensor.max_buffered_bytes``). Each holder (a ``TcpStream``, an
analyzer) reports the absolute number of bytes it holds whenever that number changes; the budget
keeps the holders in the order they last grew. When the total goes over the cap, the holders that
have waited longest are shed first (``holder.shed(ts)``: a stream delivers what it has, with gaps
where the holes are; an analyzer drops its partial state as after a capture gap) until the total is
back under the cap. A flow that is still talking keeps growing and stays at the young end, so a
flood of stale, never-completed flows is what gets shed, not the live plant traffic.

Counted: ``buffered_bytes_cap`` (holders shed because the budget was full), ``buffered_bytes_shed``
(the bytes they held); ``peak`` is the highest total held (the pipeline's ``buffered_bytes_peak`` gauge).
The total may pass the cap by the one growth that triggers shedding (a segment, a PDU) before it is
brought back under.
"""

from __future__ import annotations

from typing import Protocol

from sensor.counters import Counters


class Holder(Protocol):
    def shed(self, ts: float) -> None:
        """Give up every held byte now (deliver or drop it), as after a capture gap."""


class HeldBytes:
    __slots__ = ("_shedding", "cap", "counters", "holders", "peak", "total")

    def __init__(self, cap: int, counters: Counters) -> None:
        self.cap = cap
        self.total = 0
        self.peak = 0
        # holder -> bytes it holds; insertion order = least recently grown first (the shedding order)
        self.holders: dict[Holder, int] = {}
        self.counters = counters
        self._shedding = False

    def hold(self, holder: Holder, nbytes: int, ts: float) -> None:
        """``holder`` now holds ``nbytes`` in total (0: nothing any more)."""
        holders = self.holders
        total = self.total + nbytes - holders.pop(holder, 0)
        if nbytes > 0:
            holders[holder] = nbytes  # re-inserted: now the youngest
        self.total = total
        self.peak = max(self.peak, total)
        if total > self.cap and not self._shedding:
            self._shed(holder, ts)

    def release(self, holder: Holder) -> None:
        """``holder`` is gone (its flow ended): forget it without shedding anything."""
        self.total -= self.holders.pop(holder, 0)

    def _shed(self, keep: Holder, ts: float) -> None:
        """Shed the longest-waiting holders until the total is under the cap. ``keep`` (the holder that
        just grew) goes last. Shedding a stream hands its bytes to its analyzer, which may hold some of
        them again: that holder is young, so the loop reaches it only if nothing older is left."""
        self._shedding = True
        counters = self.counters
        try:
            while self.total > self.cap:
                victim = self._oldest_sheddable(keep)
                if victim is None:
                    break  # nothing can go right now; the next hold tries again
                held = self.holders[victim]
                counters["buffered_bytes_cap"] += 1
                counters["buffered_bytes_shed"] += held
                try:
                    victim.shed(ts)
                except Exception:  # noqa: BLE001 - a holder's bug must not keep memory held
                    counters["buffered_bytes_shed_error"] += 1
                self.total -= self.holders.pop(victim, 0)  # whatever the holder did not report itself
        finally:
            self._shedding = False

    def _oldest_sheddable(self, keep: Holder) -> Holder | None:
        """The holder that waited longest, skipping ``keep`` (unless nothing else is left) and streams
        in the middle of a delivery (``busy``: shedding one would move it under its own feet)."""
        fallback = None
        for holder in self.holders:
            if getattr(holder, "busy", False):
                continue
            if holder is keep:
                fallback = holder
                continue
            return holder
        return fallback
