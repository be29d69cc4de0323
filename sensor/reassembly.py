"""TCP stream reassembly, one ``TcpStream`` per direction of a flow.

Delivers each direction's bytes in order, exactly once, to a callback:
- in-order segments go straight through (the fast path: no buffering, no copy);
- retransmissions are dropped, partial overlaps trimmed (first-seen data wins, as Linux and
  Windows do; a retransmission carrying *different* bytes is counted ``tcp_overlap_conflict``);
- out-of-order segments wait in a bounded buffer (``max_buffer`` bytes, ``MAX_SEGMENTS`` segments)
  until the hole fills, ordered by a heap so that a stream holding thousands of overlapping pieces
  costs O(log n) per segment, not O(n) (an attacker's endless overlapping retransmissions);
- what a stream holds is also charged to the sensor-wide budget (``sensor/budget.py``), which makes
  the longest-waiting stream give up its holes when the whole sensor holds too much;
- a hole that will never fill (capture loss) is declared a gap, the callback's ``gap`` is called and
  delivery resumes after it, when: the peer acknowledged data beyond the hole (it was sent and
  received, we just did not capture it), the buffer cap is hit, or the stream ends;
- sequence numbers wrap at 2**32 (serial-number arithmetic, RFC 1982).

The stream never sees the payload semantics; analyzers do.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Callable

from sensor.counters import Counters

if TYPE_CHECKING:
    from sensor.budget import HeldBytes

MOD = 1 << 32
HALF = 1 << 31
RESYNC = 1 << 24  # 16 MiB away from the expected byte: not a retransmission nor a reorder, a jump
MAX_SEGMENTS = 4096  # out-of-order segments buffered per direction (tiny overlapping pieces are a flood)
SEGMENT_COST = 200  # bytes of bookkeeping per buffered segment (bytes object, dict and heap entries)
_QUARTER = 1 << 30  # the heap orders sequence numbers from an anchor this far behind next_seq


def seq_diff(a: int, b: int) -> int:
    """a - b in serial arithmetic: positive when a is after b."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD if d >= HALF else d


class TcpStream:
    __slots__ = (
        "next_seq",
        "pending",
        "pending_bytes",
        "max_buffer",
        "counters",
        "deliver",
        "on_gap",
        "fin",
        "order",
        "anchor",
        "budget",
        "busy",
    )

    def __init__(
        self,
        deliver: Callable[[bytes, float], None],
        on_gap: Callable[[float], None],
        counters: Counters,
        max_buffer: int,
        budget: HeldBytes | None = None,
    ) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}  # seq -> data, waiting for a hole to fill
        self.pending_bytes = 0
        self.max_buffer = max_buffer
        self.counters = counters
        self.deliver = deliver
        self.on_gap = on_gap
        self.fin = False
        # min-heap of (distance from ``anchor``, seq) over the keys of ``pending``: the earliest first
        # (made on the first out-of-order segment: most streams never buffer anything)
        self.order: list[tuple[int, int]] | None = None
        self.anchor = 0
        self.budget = budget
        self.busy = False  # delivering: the budget sheds other holders first

    def syn(self, seq: int) -> None:
        """SYN seen: the first data byte is seq + 1."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) & 0xFFFFFFFF

    def segment(self, seq: int, data: bytes, ts: float, wire_len: int | None = None) -> None:
        """A segment's payload. ``wire_len`` > len(data) when the capture cut the packet (snaplen)."""
        nxt = self.next_seq
        if nxt is None:  # handshake not captured: start where we join
            nxt = self.next_seq = seq
        n = len(data)
        rel = (seq - nxt) & 0xFFFFFFFF
        if rel >= HALF:
            rel -= MOD
        if rel > RESYNC or rel < -RESYNC:
            # Far outside any plausible window: the stream jumped (sequence garbage, a long capture
            # loss, a mid-stream pickup after a restart). Resynchronise here rather than wait forever.
            self.counters["tcp_seq_jump"] += 1
            if self.pending:
                self.pending.clear()
                self.order = None
                self.pending_bytes = 0
                self._account(ts)
            self.next_seq = seq
            self.on_gap(ts)
            rel = 0
            nxt = seq
        if rel == 0:
            if n:
                self.busy = True  # the global budget must not shed this stream while it delivers
                self.deliver(data, ts)
                self.busy = False
                nxt = (nxt + n) & 0xFFFFFFFF
                self.next_seq = nxt
            if wire_len is not None and wire_len > n:
                # the rest of this segment was cut by the snaplen: bytes we will never have
                self.counters["tcp_snaplen_gap"] += 1
                self.next_seq = (nxt + wire_len - n) & 0xFFFFFFFF
                self.on_gap(ts)
            if self.pending:
                self._drain(ts)
            return
        if rel < 0:
            if rel + n <= 0:
                if n:
                    self.counters["tcp_retransmission"] += 1
                return
            self.counters["tcp_overlap"] += 1
            self.segment(nxt, data[-rel:], ts, None if wire_len is None else wire_len + rel)
            return
        # Out of order: keep it until the hole before it fills (or is declared lost).
        if not n:
            return
        old = self.pending.get(seq)
        if old is not None:
            if old != data[: len(old)]:
                self.counters["tcp_overlap_conflict"] += 1
            if len(old) >= n:
                self.counters["tcp_retransmission"] += 1
                return
            self.pending_bytes -= len(old)
        else:
            self._push(seq)
        self.pending[seq] = data
        self.pending_bytes += n
        self.counters["tcp_out_of_order"] += 1
        if self.pending_bytes > self.max_buffer or len(self.pending) > MAX_SEGMENTS:
            self.counters["tcp_buffer_cap"] += 1
            # One skip may free only a small segment while bigger ones wait behind later holes: skip
            # until the buffer is back under its cap, or the cap bounds nothing (found by fuzzing).
            while self.pending and (self.pending_bytes > self.max_buffer or len(self.pending) > MAX_SEGMENTS):
                self.skip_hole(ts)
        self._account(ts)

    def _push(self, seq: int) -> None:
        """Enter a newly buffered sequence number in the heap (distance from the anchor as key)."""
        order = self.order
        nxt = self.next_seq
        assert nxt is not None
        if order is None:
            order = self.order = []
        if not order:
            self.anchor = (nxt - _QUARTER) & 0xFFFFFFFF
        elif (nxt - self.anchor) & 0xFFFFFFFF > 2 * _QUARTER:
            # next_seq moved a gigabyte on while segments stayed buffered: re-anchor before keys wrap
            self.anchor = (nxt - _QUARTER) & 0xFFFFFFFF
            anchor = self.anchor
            order[:] = [((s - anchor) & 0xFFFFFFFF, s) for s in self.pending]
            heapify(order)
        heappush(order, ((seq - self.anchor) & 0xFFFFFFFF, seq))

    def _first(self) -> int | None:
        """The earliest buffered sequence number (heap entries of delivered segments are skipped)."""
        order = self.order
        if not order:
            return None
        pending = self.pending
        while order and order[0][1] not in pending:
            heappop(order)
        return order[0][1] if order else None

    def _account(self, ts: float) -> None:
        """Charge what this stream holds (bytes plus bookkeeping) to the sensor-wide budget."""
        budget = self.budget
        if budget is not None:
            budget.hold(self, self.pending_bytes + len(self.pending) * SEGMENT_COST if self.pending else 0, ts)

    def shed(self, ts: float) -> None:
        """The sensor-wide budget is full and this stream has waited longest: declare its holes lost."""
        self.flush(ts)

    def _drain(self, ts: float) -> None:
        """Deliver buffered segments that became contiguous."""
        pending = self.pending
        while pending:
            nxt = self.next_seq
            assert nxt is not None
            seq = self._first()  # the earliest buffered segment
            if seq is None:
                break
            rel = seq_diff(seq, nxt)
            if rel > 0:
                break
            heappop(self.order)  # type: ignore[arg-type]
            data = pending.pop(seq)
            self.pending_bytes -= len(data)
            if rel + len(data) <= 0:
                self.counters["tcp_retransmission"] += 1
                continue
            if rel < 0:
                self.counters["tcp_overlap"] += 1
                data = data[-rel:]
            self.busy = True
            self.deliver(data, ts)
            self.busy = False
            self.next_seq = (nxt + len(data)) & 0xFFFFFFFF
        self._account(ts)

    def skip_hole(self, ts: float) -> None:
        """Declare the hole before the earliest buffered segment lost and resume after it."""
        if not self.pending or self.next_seq is None:
            return
        first = self._first()
        if first is None:
            return
        self.counters["tcp_gap"] += 1
        self.next_seq = first
        self.on_gap(ts)
        self._drain(ts)

    def acked(self, ack: int, ts: float) -> None:
        """The peer acknowledged up to ``ack``: a hole below it was lost in the capture, not the network."""
        if self.pending and self.next_seq is not None and seq_diff(ack, self.next_seq) > 0:
            first = self._first()
            if first is not None and seq_diff(ack, first) >= 0:
                self.skip_hole(ts)

    def flush(self, ts: float) -> None:
        """End of stream: deliver whatever is buffered, with gaps where holes remain."""
        guard = 0
        while self.pending and guard < 100000:
            self.skip_hole(ts)
            guard += 1
