"""Capture file readers: pcap and pcapng, optionally gzip-compressed, streamed in constant memory.

Formats:
- pcap (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-03.html): both byte orders, micro- and
  nanosecond magic numbers; the link type comes from the global header.
- pcapng (draft-ietf-opsawg-pcapng): Section Header Blocks (several sections, each with its own byte
  order), Interface Description Blocks (link type, snaplen, if_tsresol, if_tsoffset per interface),
  Enhanced and Simple Packet Blocks, the obsolete Packet Block; every other block is skipped and counted.

A reader yields ``(ts, linktype, data, orig_len)`` per packet, where ``data`` is a ``bytes`` slice of
the captured bytes. The file is read in large blocks (``BLOCK`` bytes), so memory does not grow with
file size. Damage never raises out of iteration: the reader stops, sets ``error`` to a one-line
message, and everything before the damage has already been yielded.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

BLOCK = 1 << 22  # 4 MiB reads
MAX_RECORD = 1 << 18  # 256 KiB: no link layer carries more in one frame; above this a length is absurd

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

Packet = tuple[float, int, bytes, int]


class CaptureError(Exception):
    """The file cannot be read as a capture at all (bad magic, unreadable, empty)."""


def sniff_format(head: bytes) -> str | None:
    """'pcap', 'pcapng', 'gzip' or None from the first bytes of a file (the magic, never the name)."""
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_SHB:
        return "pcapng"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    return None


def is_capture_file(path: str | Path) -> bool:
    """True when the file starts with a pcap, pcapng or gzip magic (a gzip must hold a capture)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            kind = sniff_format(head)
            if kind == "gzip":
                fh.seek(0)
                with gzip.GzipFile(fileobj=fh) as gz:
                    return sniff_format(gz.read(4)) in ("pcap", "pcapng")
            return kind is not None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):  # zlib.error: corrupt deflate data
        return False


class _Buffered:
    """Block reader over a binary stream: ``take(n)`` returns the next n bytes, or fewer at EOF."""

    __slots__ = ("fh", "read", "buf", "pos", "consumed")

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        # read1: one decompression step at a time, so a gzip stream cut short still yields what was
        # decompressed before the cut (GzipFile.read(n) raises EOFError and drops it)
        self.read = getattr(fh, "read1", fh.read)
        self.buf = b""
        self.pos = 0
        self.consumed = 0  # bytes consumed before ``buf`` (for error offsets)

    def fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``pos``; False at EOF with fewer."""
        avail = len(self.buf) - self.pos
        if avail >= need:
            return True
        chunks = [self.buf[self.pos :]]
        self.consumed += self.pos
        while avail < need:
            chunk = self.read(max(BLOCK, need - avail))
            if not chunk:
                break
            chunks.append(chunk)
            avail += len(chunk)
        self.buf = b"".join(chunks)
        self.pos = 0
        return avail >= need

    @property
    def offset(self) -> int:
        return self.consumed + self.pos


class CaptureReader:
    """Iterate packets of one capture file. Use as a context manager or call ``close()``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.error: str | None = None  # set when iteration stopped on damage
        self.anomalies: dict[str, int] = {}  # counted, non-fatal oddities (unknown blocks, ...)
        self.format = ""
        try:
            raw: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot open: {exc.strerror}") from None
        head = raw.read(4)
        kind = sniff_format(head)
        raw.seek(0)
        if kind == "gzip":
            raw = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
            try:
                head = raw.read(4)
            except (OSError, EOFError, zlib.error) as exc:  # zlib.error: corrupt deflate data
                raw.close()
                raise CaptureError(f"{self.path}: damaged gzip stream: {exc}") from None
            kind = sniff_format(head)
            raw = _Rewound(head, raw)  # type: ignore[assignment]
            self.format = "gzip+"
        if not head:
            raw.close()
            raise CaptureError(f"{self.path}: empty file (0 bytes)")
        if kind not in ("pcap", "pcapng"):
            raw.close()
            raise CaptureError(f"{self.path}: not a pcap or pcapng capture (magic {head[:4].hex() or 'none'})")
        self.format += kind
        self._fh = raw
        self._kind = kind

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass

    def _count(self, name: str) -> None:
        self.anomalies[name] = self.anomalies.get(name, 0) + 1

    def __iter__(self) -> Iterator[Packet]:
        try:
            if self._kind == "pcap":
                yield from self._pcap()
            else:
                yield from self._pcapng()
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error, struct.error, ValueError) as exc:
            # I/O or decompression failure mid-file: stop here, keep what came before.
            self.error = f"read error: {exc}"

    # -- pcap ---------------------------------------------------------------------------------
    def _pcap(self) -> Iterator[Packet]:
        b = _Buffered(self._fh)
        if not b.fill(24):
            self.error = "truncated pcap global header"
            return
        endian, resolution = PCAP_MAGICS[b.buf[0:4]]
        _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack_from(endian + "HHiIII", b.buf, 4)
        linktype = network & 0x0FFFFFFF  # upper bits: FCS length flags
        b.pos = 24
        rec = struct.Struct(endian + "IIII")
        unpack = rec.unpack_from
        limit = max(snaplen, MAX_RECORD) if snaplen < (1 << 24) else MAX_RECORD
        while True:
            buf = b.buf
            pos = b.pos
            if len(buf) - pos < 16:
                if not b.fill(16):
                    if len(b.buf) - b.pos:
                        self.error = f"capture cut in the middle of a record header at byte {b.offset}"
                    return
                buf, pos = b.buf, b.pos
            sec, frac, incl, orig = unpack(buf, pos)
            if incl > limit:
                self.error = f"record at byte {b.consumed + pos} has an absurd length {incl} (snaplen {snaplen})"
                return
            end = pos + 16 + incl
            if end > len(buf):
                b.pos = pos
                if not b.fill(16 + incl):
                    self.error = f"capture cut in the middle of a record at byte {b.offset} ({incl} bytes announced)"
                    return
                buf, pos = b.buf, b.pos
                end = pos + 16 + incl
            b.pos = end
            yield sec + frac * resolution, linktype, buf[pos + 16 : end], orig

    # -- pcapng -------------------------------------------------------------------------------
    def _pcapng(self) -> Iterator[Packet]:
        b = _Buffered(self._fh)
        endian = "<"
        # per-interface (linktype, snaplen, seconds per tick, offset seconds)
        ifaces: list[tuple[int, int, float, int]] = []
        hdr = struct.Struct("<II")
        epb = struct.Struct("<IIIII")
        while True:
            if not b.fill(8):
                if len(b.buf) - b.pos:
                    self.error = f"capture cut in the middle of a block header at byte {b.offset}"
                return
            buf, pos = b.buf, b.pos
            btype_raw = buf[pos : pos + 4]
            if btype_raw == PCAPNG_SHB:
                if not b.fill(12):
                    self.error = f"capture cut in a section header at byte {b.offset}"
                    return
                buf, pos = b.buf, b.pos
                bom = buf[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    self.error = f"section header at byte {b.offset} has a bad byte-order magic {bom.hex()}"
                    return
                hdr = struct.Struct(endian + "II")
                epb = struct.Struct(endian + "IIIII")
                ifaces = []
            btype, blen = hdr.unpack_from(buf, pos)
            if blen < 12 or blen % 4:
                self.error = f"block at byte {b.offset} has an invalid length {blen}"
                return
            if blen > (1 << 26):  # 64 MiB: no real block is this large; the length field is damaged
                self.error = f"block at byte {b.offset} has an absurd length {blen}"
                return
            if not b.fill(blen):
                self.error = f"capture cut in the middle of a block at byte {b.offset} ({blen} bytes announced)"
                return
            buf, pos = b.buf, b.pos
            b.pos = pos + blen
            body = pos + 8
            if btype == 6:  # Enhanced Packet Block
                iface, tsh, tsl, caplen, orig = epb.unpack_from(buf, body)
                if iface >= len(ifaces):
                    self._count("pcapng_unknown_interface")
                    continue
                lt, _snap, tick, toff = ifaces[iface]
                if caplen > blen - 32:
                    self._count("pcapng_bad_caplen")
                    continue
                start = body + 20
                yield ((tsh << 32) | tsl) * tick + toff, lt, buf[start : start + caplen], orig
            elif btype == 3:  # Simple Packet Block: no timestamp, interface 0
                if not ifaces:
                    self._count("pcapng_unknown_interface")
                    continue
                (orig,) = struct.unpack_from(endian + "I", buf, body)
                lt, snap, _tick, _toff = ifaces[0]
                caplen = min(orig, blen - 16, snap or orig)
                yield 0.0, lt, buf[body + 4 : body + 4 + caplen], orig
            elif btype == 1:  # Interface Description Block
                lt, _res, snap = struct.unpack_from(endian + "HHI", buf, body)
                tick, toff = _idb_options(buf, body + 8, pos + blen - 4, endian)
                ifaces.append((lt, snap, tick, toff))
            elif btype == 2:  # obsolete Packet Block
                iface, _drops, tsh, tsl, caplen, orig = struct.unpack_from(endian + "HHIIII", buf, body)
                if iface >= len(ifaces) or caplen > blen - 32:
                    self._count("pcapng_bad_packet_block")
                    continue
                lt, _snap, tick, toff = ifaces[iface]
                start = body + 20
                yield ((tsh << 32) | tsl) * tick + toff, lt, buf[start : start + caplen], orig
            elif btype == 0x0A0D0D0A:
                continue
            else:
                # Name resolution, interface statistics, decryption secrets, custom blocks...
                self._count("pcapng_skipped_block")


def _idb_options(buf: bytes, off: int, end: int, endian: str) -> tuple[float, int]:
    """Read if_tsresol (9) and if_tsoffset (14) from an IDB's options: (seconds per tick, offset)."""
    tick = 1e-6
    toff = 0
    opt = struct.Struct(endian + "HH")
    while off + 4 <= end:
        code, length = opt.unpack_from(buf, off)
        off += 4
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = buf[off]
            tick = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        elif code == 14 and length >= 8:
            (toff,) = struct.unpack_from(endian + "q", buf, off)
        off += (length + 3) & ~3
    return tick, toff


class _Rewound(io.RawIOBase):
    """A stream that first returns already-read ``head`` bytes, then the rest of ``inner``."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self._head = head
        self._inner = inner

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._head:
            out, self._head = self._head, b""
            return out
        return self._inner.read1(n) if hasattr(self._inner, "read1") else self._inner.read(n)

    read1 = read

    def close(self) -> None:
        self._inner.close()
        super().close()

    def readable(self) -> bool:
        return True
