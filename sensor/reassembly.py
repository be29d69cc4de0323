"""TCP stream reassembly, one ``TcpStream`` per direction of a flow.

Delivers each direction's bytes in order, exactly once, to a callback:
- in-order segments go straight through (the fast path: no buffering, no copy);
- retransmissions are dropped, partial overlaps trimmed (first-seen data wins, as Linux and
  Windows do; a retransmission carrying *different* bytes is counted ``tcp_overlap_conflict``);
- out-of-order segments wait in a bounded buffer (``max_buffer`` bytes) until the hole fills;
- a hole that will never fill (capture loss) is declared a gap, the callback's ``gap`` is called and
  delivery resumes after it, when: the peer acknowledged data beyond the hole (it was sent and
  received, we just did not capture it), the buffer cap is hit, or the stream ends;
- sequence numbers wrap at 2**32 (serial-number arithmetic, RFC 1982).

The stream never sees the payload semantics; analyzers do.
"""

from __future__ import annotations

from typing import Callable

from sensor.counters import Counters

MOD = 1 << 32
HALF = 1 << 31
RESYNC = 1 << 24  # 16 MiB away from the expected byte: not a retransmission nor a reorder, a jump


def seq_diff(a: int, b: int) -> int:
    """a - b in serial arithmetic: positive when a is after b."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD if d >= HALF else d


class TcpStream:
    __slots__ = ("next_seq", "pending", "pending_bytes", "max_buffer", "counters", "deliver", "on_gap", "fin")

    def __init__(
        self,
        deliver: Callable[[bytes, float], None],
        on_gap: Callable[[float], None],
        counters: Counters,
        max_buffer: int,
    ) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}  # seq -> data, waiting for a hole to fill
        self.pending_bytes = 0
        self.max_buffer = max_buffer
        self.counters = counters
        self.deliver = deliver
        self.on_gap = on_gap
        self.fin = False

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
                self.pending_bytes = 0
            self.next_seq = seq
            self.on_gap(ts)
            rel = 0
            nxt = seq
        if rel == 0:
            if n:
                self.deliver(data, ts)
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
        self.pending[seq] = data
        self.pending_bytes += n
        self.counters["tcp_out_of_order"] += 1
        if self.pending_bytes > self.max_buffer:
            self.counters["tcp_buffer_cap"] += 1
            self.skip_hole(ts)

    def _drain(self, ts: float) -> None:
        """Deliver buffered segments that became contiguous."""
        pending = self.pending
        while pending:
            nxt = self.next_seq
            assert nxt is not None
            # the earliest buffered segment, in serial order from next_seq
            seq = min(pending, key=lambda s: (s - nxt) & 0xFFFFFFFF if seq_diff(s, nxt) >= 0 else -1)
            rel = seq_diff(seq, nxt)
            if rel > 0:
                return
            data = pending.pop(seq)
            self.pending_bytes -= len(data)
            if rel + len(data) <= 0:
                self.counters["tcp_retransmission"] += 1
                continue
            if rel < 0:
                self.counters["tcp_overlap"] += 1
                data = data[-rel:]
            self.deliver(data, ts)
            self.next_seq = (nxt + len(data)) & 0xFFFFFFFF

    def skip_hole(self, ts: float) -> None:
        """Declare the hole before the earliest buffered segment lost and resume after it."""
        if not self.pending or self.next_seq is None:
            return
        nxt = self.next_seq
        first = min(self.pending, key=lambda s: (s - nxt) & 0xFFFFFFFF)
        self.counters["tcp_gap"] += 1
        self.next_seq = first
        self.on_gap(ts)
        self._drain(ts)

    def acked(self, ack: int, ts: float) -> None:
        """The peer acknowledged up to ``ack``: a hole below it was lost in the capture, not the network."""
        if self.pending and self.next_seq is not None and seq_diff(ack, self.next_seq) > 0:
            nxt = self.next_seq
            first = min(self.pending, key=lambda s: (s - nxt) & 0xFFFFFFFF)
            if seq_diff(ack, first) >= 0:
                self.skip_hole(ts)

    def flush(self, ts: float) -> None:
        """End of stream: deliver whatever is buffered, with gaps where holes remain."""
        guard = 0
        while self.pending and guard < 100000:
            self.skip_hole(ts)
            guard += 1
