"""Live capture from a SPAN port or a tap: one capture thread per interface, one bounded queue, and the
pipeline thread consuming it.

```
 eth1 ─ AF_PACKET socket (scapy: BPF, promisc, bind) ─ TPACKET_V3 ring ─ capture thread ─┐
 eth2 ─ AF_PACKET socket ...                                           ─ capture thread ─┼─▶ PacketQueue ─▶ pipeline thread
                                                                                          (bounded; full = counted drop)
```

Why the pieces are what they are:

- **scapy opens the socket, never parses a packet.** ``scapy.arch.linux.L2ListenSocket`` creates the
  ``AF_PACKET`` socket, compiles the BPF filter with libpcap and attaches it before ``bind`` (so no
  unfiltered packet is ever queued), joins promiscuous mode (``PACKET_ADD_MEMBERSHIP``, undone by the
  kernel when the socket closes, even after a crash) and enables kernel timestamps and aux data. The
  packets themselves are read as bytes, below scapy.
- **A memory-mapped ring (TPACKET_V3), not ``recv()`` per packet.** Measured on this project's 2-core
  machine: a thread calling ``recvmsg`` per packet releases the GIL on every call, and each time it
  wants it back it waits for the pipeline thread's switch interval (5 ms), so the capture thread
  starves exactly when the pipeline is busy (56% lost in the kernel at 56 kpkt/s with a 64 MiB socket
  buffer). With the ring the capture thread sleeps in one ``poll()`` per block of packets and copies a
  whole block out while holding the GIL once: no kernel drop at 73 kpkt/s, tcpreplay's top speed
  (bench/sniff_rate.py, figures in docs/live-capture.md). The ring is also the large kernel buffer (``buffer_mb`` per interface).
  ``method="socket"`` keeps the per-packet ``recvmsg_into`` reader (with ``SO_RCVBUF``/
  ``SO_RCVBUFFORCE``) for kernels or sandboxes without ``PACKET_RX_RING``; ``"auto"`` falls back to it.
- **Capture never waits for analysis.** The queue between the capture threads and the pipeline is
  bounded in packets and bytes and ``put`` never blocks: when the pipeline (or an output behind it) is
  too slow, the batch is dropped and counted (``queue_dropped``), so a slow disk shows up as a named
  counter instead of silent kernel drops.
- **Counters from both sides.** ``PACKET_STATISTICS`` gives what passed the BPF filter (``received``)
  and what the kernel dropped because the ring was full (``kernel_dropped``); reading it resets it,
  so it is accumulated here under a lock.

VLAN tags: most NICs strip the 802.1Q tag in hardware and the kernel reports it beside the packet;
like libpcap we put it back in the bytes, so the pipeline sees what was on the wire.
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sensor.capture import Packet

log = logging.getLogger(__name__)

# <linux/if_packet.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4
PACKET_AUXDATA = 8
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33  # like SO_RCVBUF, but above net.core.rmem_max (needs CAP_NET_ADMIN)
ETH_P_8021Q = 0x8100

# ARPHRD_* (the interface's hardware type) -> pcap link type of what a SOCK_RAW packet socket returns.
ARPHRD_TO_LINKTYPE = {1: 1, 772: 1, 65534: 101}  # Ethernet; loopback (Ethernet framing); none (tun: raw IP)
ARPHRD_LOOPBACK = 772

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status, num_pkts,
# offset_to_first_pkt (we read the last three, at offset 8).
_BLOCK = struct.Struct("=III")
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac, tp_net,
# then hv1: tp_rxhash, tp_vlan_tci, tp_vlan_tpid (40 of its 48 bytes).
_V3_HDR = struct.Struct("=IIIIIIHHIIH")
_SLL_PKTTYPE = 48 + 10  # sockaddr_ll follows the 48-byte header; sll_pkttype is its 11th byte
_STATUS = struct.Struct("=I")
_VLAN = struct.Struct("!HH")
_TIMESPEC = struct.Struct("=qq")
_AUXDATA = struct.Struct("=IIIHHHH")  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
_PACKET_OVERHEAD = 160  # Python bytes a queued packet costs beyond its data (tuple, float, bytes header)


class LiveError(Exception):
    """The capture cannot start (no such interface, no permission, bad filter). The message says what
    to do; ``usage`` is True when the user's arguments are at fault (exit code 2, not 1)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class CaptureOptions:
    interfaces: tuple[str, ...]
    bpf: str | None = None  # tcpdump filter syntax, compiled by libpcap, run in the kernel
    promisc: bool = True
    method: str = "auto"  # "ring" (TPACKET_V3), "socket" (recvmsg per packet), "auto" (ring, else socket)
    buffer_mb: int = 64  # per interface: the ring, or the socket receive buffer
    block_kb: int = 1024  # ring block: the unit the kernel hands over (and a capture thread copies out)
    block_timeout_ms: int = 20  # a partly filled block is handed over after this long (latency when quiet)
    snaplen: int = 65535  # socket method: bytes kept per packet (the ring keeps whole packets up to a block)
    queue_packets: int = 200_000  # packets waiting for the pipeline, all interfaces together
    queue_mb: int = 256  # and their bytes (with per-packet overhead)
    batch_packets: int = 512  # socket method: packets per queue item
    poll_ms: int = 100  # how often an idle capture thread checks that it should stop


class PacketQueue:
    """Bounded queue of packet batches from the capture threads to the pipeline thread.

    ``put`` never blocks: a capture thread must go straight back to the kernel, so when the queue is
    full the whole batch is dropped and counted (``dropped``, ``dropped_bytes``). ``get`` waits at most
    ``timeout`` seconds and returns None when nothing came; after ``close`` it returns what is left,
    then None with ``drained`` True.
    """

    def __init__(self, max_packets: int, max_bytes: int) -> None:
        if max_packets < 1 or max_bytes < 1:
            raise ValueError("queue bounds must be positive")
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self._items: deque[tuple[list[Packet], int]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._closed = False
        self.packets = 0  # held now
        self.bytes = 0
        self.enqueued = 0  # accepted since the start
        self.dropped = 0
        self.dropped_bytes = 0
        self.peak = 0  # most packets held at once

    def put(self, batch: list[Packet], nbytes: int) -> bool:
        n = len(batch)
        with self._cond:
            if self._closed or self.packets + n > self.max_packets or self.bytes + nbytes > self.max_bytes:
                self.dropped += n
                self.dropped_bytes += nbytes
                return False
            self._items.append((batch, nbytes))
            self.packets += n
            self.bytes += nbytes
            self.enqueued += n
            self.peak = max(self.peak, self.packets)
            if self._waiting:
                self._cond.notify()
        return True

    def get(self, timeout: float) -> list[Packet] | None:
        with self._cond:
            if not self._items:
                if self._closed:
                    return None
                self._waiting = True
                self._cond.wait(timeout)
                self._waiting = False
                if not self._items:
                    return None
            batch, nbytes = self._items.popleft()
            self.packets -= len(batch)
            self.bytes -= nbytes
            return batch

    def close(self) -> None:
        """No more puts (they count as drops); ``get`` empties what is held, then reports ``drained``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        return self._closed and not self._items

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "queued": self.packets,
                "queued_bytes": self.bytes,
                "queue_peak": self.peak,
                "queue_capacity": self.max_packets,
                "enqueued": self.enqueued,
                "queue_dropped": self.dropped,
                "queue_dropped_bytes": self.dropped_bytes,
            }


@contextmanager
def _quiet_scapy() -> Iterator[None]:
    """scapy warns that it cannot guess a layer class for the socket: we never ask it to."""
    logger = logging.getLogger("scapy.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def interface_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


class InterfaceCapture:
    """One interface: its socket, its ring (or plain socket reads), its thread and its counters."""

    def __init__(self, iface: str, options: CaptureOptions, queue: PacketQueue) -> None:
        self.iface = iface
        self.options = options
        self.queue = queue
        self.method = ""
        self.linktype = 1
        self.buffer_bytes = 0
        self.captured = 0  # packets copied out of the kernel
        self.captured_bytes = 0
        self.truncated = 0  # packets longer than what was kept
        self.outgoing_skipped = 0  # loopback only: each packet is seen leaving and arriving
        self.errors = 0
        self.kernel_received = 0  # passed the BPF filter (PACKET_STATISTICS tp_packets, drops included)
        self.kernel_dropped = 0  # the ring / socket buffer was full (tp_drops)
        self.kernel_freezes = 0  # TPACKET_V3 tp_freeze_q_cnt: times the ring was full
        self._l2: Any = None
        self._sock: socket.socket | None = None
        self._mm: mmap.mmap | None = None
        self._blocks = 0
        self._block_size = 0
        self._loopback = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self.last_error: str | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def open(self) -> None:
        opts = self.options
        if not interface_exists(self.iface):
            raise LiveError(f"{self.iface}: no such network interface (see `ip link`)", usage=True)
        try:
            with _quiet_scapy():
                from scapy.arch.linux import L2ListenSocket
                from scapy.error import Scapy_Exception

                try:
                    self._l2 = L2ListenSocket(iface=self.iface, promisc=opts.promisc, filter=opts.bpf or None)
                except Scapy_Exception as exc:
                    raise LiveError(f"{self.iface}: cannot set the BPF filter {opts.bpf!r}: {exc}", usage=True) from None
        except PermissionError:
            raise LiveError(
                f"{self.iface}: opening a packet socket needs CAP_NET_RAW (and CAP_NET_ADMIN for a buffer above "
                "net.core.rmem_max): the systemd unit deploy/icswatch-sensor.service grants both to the icswatch "
                "user; see docs/live-capture.md for setcap, or run as root"
            ) from None
        except OSError as exc:
            raise LiveError(f"{self.iface}: cannot open a packet socket: {exc.strerror or exc}") from None
        sock = self._l2.ins
        self._sock = sock
        hatype = sock.getsockname()[3]
        linktype = ARPHRD_TO_LINKTYPE.get(hatype)
        if linktype is None:
            self.close()
            raise LiveError(f"{self.iface}: unsupported interface type ARPHRD {hatype} (Ethernet, loopback and tun are)")
        self.linktype = linktype
        self._loopback = hatype == ARPHRD_LOOPBACK
        self._set_rcvbuf(opts.buffer_mb << 20)
        method = opts.method
        if method in ("ring", "auto"):
            try:
                self._setup_ring()
                method = "ring"
            except OSError as exc:
                if opts.method == "ring":
                    self.close()
                    raise LiveError(f"{self.iface}: cannot map a TPACKET_V3 ring: {exc.strerror or exc}") from None
                log.warning("%s: no TPACKET_V3 ring (%s): reading the socket packet by packet", self.iface, exc)
                method = "socket"
        elif method != "socket":
            self.close()
            raise LiveError(f"capture method must be ring, socket or auto, not {method!r}", usage=True)
        self.method = method
        sock.setblocking(False)
        self._discard_pending()

    def _set_rcvbuf(self, size: int) -> None:
        """A large socket buffer: forced past net.core.rmem_max when we hold CAP_NET_ADMIN."""
        assert self._sock is not None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        # the kernel reports twice what it grants (bookkeeping overhead included)
        self.buffer_bytes = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2

    def _setup_ring(self) -> None:
        assert self._sock is not None
        opts = self.options
        page = mmap.PAGESIZE
        block = max(page, 1 << max(0, (opts.block_kb * 1024 - 1).bit_length()))  # a power of two pages
        blocks = max(4, (opts.buffer_mb << 20) // block)
        frame = 2048  # TPACKET_V3 ignores frames but the kernel checks frame_nr * frame_size == ring size
        req = struct.pack("=7I", block, blocks, frame, block * blocks // frame, opts.block_timeout_ms, 0, 0)
        self._sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        self._sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._mm = mmap.mmap(self._sock.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._blocks = blocks
        self._block_size = block
        self.buffer_bytes = block * blocks

    def _discard_pending(self) -> None:
        """Packets queued on the socket before the ring existed would keep poll() readable forever."""
        assert self._sock is not None
        for _ in range(100_000):
            try:
                self._sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return

    # -- the thread -------------------------------------------------------------------------------
    def start(self) -> None:
        target = self._run_ring if self.method == "ring" else self._run_socket
        self._thread = threading.Thread(target=self._guard, args=(target,), name=f"capture-{self.iface}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - reported and counted; the other interfaces go on
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: capture thread stopped", self.iface)

    def _wait(self, poller: select.poll) -> None:
        for _fd, ev in poller.poll(self.options.poll_ms):
            if ev & (select.POLLERR | select.POLLNVAL):
                # the interface went down, or was removed: clear the error, count it, do not spin
                self._socket_error()
                self._stop.wait(0.5)

    def _socket_error(self) -> None:
        assert self._sock is not None
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.errors += 1
        self.last_error = os.strerror(err) if err else "poll error"

    def _run_ring(self) -> None:
        mm = self._mm
        sock = self._sock
        assert mm is not None and sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        block_info = _BLOCK.unpack_from
        header = _V3_HDR.unpack_from
        release = _STATUS.pack_into
        vlan = _VLAN.pack
        put = self.queue.put
        stopped = self._stop.is_set
        linktype = self.linktype
        loopback = self._loopback
        size = self._block_size
        blocks = self._blocks
        index = 0
        while not stopped():
            base = index * size
            status, count, first = block_info(mm, base + 8)
            if not status & TP_STATUS_USER:
                self._wait(poller)
                continue
            batch: list[Packet] = []
            append = batch.append
            nbytes = 0
            truncated = 0
            off = base + first
            for _ in range(count):
                nxt, sec, nsec, snap, length, st, mac, _net, _hash, tci, tpid = header(mm, off)
                if loopback and mm[off + _SLL_PKTTYPE] == PACKET_OUTGOING:
                    self.outgoing_skipped += 1
                    off += nxt
                    continue
                start = off + mac
                if st & TP_STATUS_VLAN_VALID:
                    tag = vlan(tpid if st & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q, tci)
                    data = mm[start : start + 12] + tag + mm[start + 12 : start + snap]
                    snap += 4
                    length += 4
                else:
                    data = mm[start : start + snap]
                if snap < length:
                    truncated += 1
                append((sec + nsec * 1e-9, linktype, data, length))
                nbytes += snap + _PACKET_OVERHEAD
                off += nxt
            release(mm, base + 8, TP_STATUS_KERNEL)  # the bytes are copied: the block goes back at once
            index = index + 1 if index + 1 < blocks else 0
            self.captured += len(batch)
            self.captured_bytes += nbytes - _PACKET_OVERHEAD * len(batch)
            self.truncated += truncated
            if batch:
                put(batch, nbytes)

    def _run_socket(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        buf = bytearray(self.options.snaplen)
        view = memoryview(buf)
        bufs = [buf]
        recv = sock.recvmsg_into
        put = self.queue.put
        stopped = self._stop.is_set
        linktype = self.linktype
        loopback = self._loopback
        most = self.options.batch_packets
        timespec = _TIMESPEC.unpack
        auxdata = _AUXDATA.unpack
        vlan = _VLAN.pack
        while not stopped():
            batch: list[Packet] = []
            nbytes = 0
            try:
                while len(batch) < most:
                    n, anc, _flags, addr = recv(bufs, 128)
                    if loopback and addr[2] == PACKET_OUTGOING:
                        self.outgoing_skipped += 1
                        continue
                    ts = 0.0
                    length = n
                    tag = None
                    for level, kind, cdata in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) == 16:
                            sec, nsec = timespec(cdata)
                            ts = sec + nsec * 1e-9
                        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= 20:
                            st, length, _snap, _mac, _net, tci, tpid = auxdata(cdata[:20])
                            if st & TP_STATUS_VLAN_VALID:
                                tag = vlan(tpid if st & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q, tci)
                    if not ts:
                        ts = time.time()
                    if tag is not None:
                        data = bytes(view[:12]) + tag + bytes(view[12:n])
                        n += 4
                        length += 4
                    else:
                        data = bytes(view[:n])
                    if n < length:
                        self.truncated += 1
                    batch.append((ts, linktype, data, length))
                    nbytes += n + _PACKET_OVERHEAD
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._socket_error()
                self._stop.wait(0.5)
            if batch:
                self.captured += len(batch)
                self.captured_bytes += nbytes - _PACKET_OVERHEAD * len(batch)
                put(batch, nbytes)
            if len(batch) < most:
                self._wait(poller)

    # -- counters and shutdown ------------------------------------------------------------------
    def read_kernel_stats(self) -> None:
        """Fold PACKET_STATISTICS into the totals (reading it resets it in the kernel)."""
        with self._stats_lock:
            sock = self._sock
            if sock is None or sock.fileno() < 0:
                return
            try:
                raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            except OSError:
                return
            if len(raw) >= 8:
                received, dropped = struct.unpack_from("=II", raw)
                self.kernel_received += received
                self.kernel_dropped += dropped
            if len(raw) >= 12:
                self.kernel_freezes += struct.unpack_from("=I", raw, 8)[0]

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop the thread, take the last kernel counters, release the ring and the socket."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.read_kernel_stats()
        with self._stats_lock:
            if self._mm is not None:
                try:
                    self._mm.close()
                except (BufferError, ValueError):
                    pass
                self._mm = None
            if self._l2 is not None:
                try:
                    self._l2.close()  # also leaves promiscuous mode
                except OSError:
                    pass
                self._l2 = None
            self._sock = None

    def stats(self) -> dict[str, Any]:
        self.read_kernel_stats()
        return {
            "interface": self.iface,
            "method": self.method,
            "linktype": self.linktype,
            "buffer_bytes": self.buffer_bytes,
            "kernel_received": self.kernel_received,
            "kernel_dropped": self.kernel_dropped,
            "kernel_ring_full": self.kernel_freezes,
            "captured": self.captured,
            "captured_bytes": self.captured_bytes,
            "truncated": self.truncated,
            "outgoing_skipped": self.outgoing_skipped,
            "errors": self.errors,
            "last_error": self.last_error,
        }


class LiveCapture:
    """All the interfaces of a sniff run, one queue, and the generator the pipeline runs over.

    Life cycle: ``open()`` (may raise LiveError), ``start()``, iterate ``packets()`` in the pipeline
    thread, ``stop()`` from anywhere (the generator then yields what is still queued and ends),
    ``close()`` at the end (idempotent).
    """

    def __init__(self, options: CaptureOptions) -> None:
        if not options.interfaces:
            raise LiveError("no interface to capture on (-i IFACE)", usage=True)
        if len(set(options.interfaces)) != len(options.interfaces):
            raise LiveError("an interface is given twice", usage=True)
        self.options = options
        self.queue = PacketQueue(options.queue_packets, options.queue_mb << 20)
        self.captures = [InterfaceCapture(i, options, self.queue) for i in options.interfaces]
        self.delivered = 0  # packets handed to the pipeline
        self.started = 0.0
        self._stopped = False
        self._closed = False

    @property
    def name(self) -> str:
        return "live:" + ",".join(self.options.interfaces)

    def open(self) -> None:
        try:
            for cap in self.captures:
                cap.open()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        self.started = time.monotonic()
        for cap in self.captures:
            cap.start()

    def stop(self) -> None:
        """Stop reading the interfaces; what is queued still reaches the pipeline."""
        if self._stopped:
            return
        self._stopped = True
        for cap in self.captures:
            cap.stop()
        for cap in self.captures:
            cap.close()
        self.queue.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopped = True
        for cap in self.captures:
            cap.close()
        self.queue.close()

    def packets(
        self,
        between: Callable[[bool], None] | None = None,
        limit: int | None = None,
        tap: Callable[[Packet], None] | None = None,
        wait: float = 0.2,
    ) -> Iterator[Packet]:
        """Packets for ``Pipeline.run``, in the pipeline thread.

        ``between(idle)`` runs between batches (idle=True after ``wait`` seconds without a packet): the
        place for signals, reloads and counters, since the pipeline is then between two packets.
        ``limit`` stops the capture after that many packets; ``tap`` sees each packet before the
        pipeline does (the evidence ring).
        """
        get = self.queue.get
        left = -1 if limit is None else limit
        while left:
            batch = get(wait)
            if batch is None:
                if self.queue.drained:
                    return
                if between is not None:
                    between(True)
                continue
            if between is not None:
                between(False)
            if 0 < left < len(batch):
                batch = batch[:left]
            if tap is None:
                yield from batch
            else:
                for pkt in batch:
                    tap(pkt)
                    yield pkt
            self.delivered += len(batch)
            if left > 0:
                left -= len(batch)
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Every counter of the capture side (see docs/live-capture.md for what each one means)."""
        per = [cap.stats() for cap in self.captures]
        q = self.queue.stats()
        totals = {
            "kernel_received": sum(p["kernel_received"] for p in per),
            "kernel_dropped": sum(p["kernel_dropped"] for p in per),
            "captured": sum(p["captured"] for p in per),
            "truncated": sum(p["truncated"] for p in per),
            "errors": sum(p["errors"] for p in per),
            "processed": self.delivered,
            **q,
        }
        return {"interfaces": per, "totals": totals, "seconds": round(time.monotonic() - self.started, 3) if self.started else 0.0}
