"""Capture readers (pcap, pcapng, gzip-wrapped either), fed the fuzz input as a file on disk.

The first input byte picks how the rest reaches the reader: as is (mode 0), gzip-compressed (mode 1,
so the fuzzer mutates the capture inside a valid gzip stream) or gzip-compressed then cut short
(mode 2, the cut taken from the last byte). Bytes that are not a capture must raise CaptureError and
nothing else; a capture never raises while iterated, yields well-typed packets, and never yields
more bytes than the stream holds.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile

from fuzz.invariants import require
from sensor.capture import GZIP_MAGIC, CaptureError, CaptureReader, is_capture_file

# One scratch path per process (tmpfs when there is one), written for each input and removed after
# it: libFuzzer ends the process with exit(), so nothing would clean up a file left behind.
_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_fd, PATH = tempfile.mkstemp(prefix="icswatch-fuzz-", suffix=".cap", dir=_DIR)
os.close(_fd)
os.unlink(PATH)


def _file_bytes(data: bytes) -> tuple[bytes, int | None]:
    """(bytes written to the file, size of the capture stream inside it; None when unknown)."""
    if not data:
        return b"", 0
    mode, body = data[0] % 3, data[1:]
    if mode == 0:
        # the fuzzer may have made a gzip stream itself: its decompressed size is not bounded by ours
        return body, None if body[:2] == GZIP_MAGIC else len(body)
    packed = gzip.compress(body, compresslevel=1, mtime=0)
    if mode == 2:
        packed = packed[: len(packed) * (body[-1] if body else 0) // 256]
    return packed, len(body)


def test_one_input(data: bytes) -> None:
    raw, stream_size = _file_bytes(data)
    with open(PATH, "wb") as fh:
        fh.write(raw)
    try:
        _check_file(stream_size)
    finally:
        os.unlink(PATH)


def _check_file(stream_size: int | None) -> None:
    looks_like_capture = is_capture_file(PATH)
    require(isinstance(looks_like_capture, bool), "is_capture_file did not answer a bool")
    try:
        reader = CaptureReader(PATH)
    except CaptureError as exc:
        require(str(exc).startswith(PATH), f"CaptureError without the path: {exc}")
        return
    total = 0
    with reader:
        for packet in reader:
            require(isinstance(packet, tuple) and len(packet) == 4, f"packet {packet!r}")
            ts, linktype, frame, orig = packet
            require(isinstance(ts, float) and math.isfinite(ts), f"timestamp {ts!r}")
            require(isinstance(linktype, int) and 0 <= linktype < 1 << 28, f"link type {linktype!r}")
            require(isinstance(frame, bytes), f"frame is a {type(frame).__name__}")
            require(isinstance(orig, int) and orig >= 0, f"original length {orig!r}")
            total += len(frame)
            require(
                stream_size is None or total <= stream_size,
                f"{total} bytes of packets out of a {stream_size}-byte stream",
            )
    require(reader.error is None or (isinstance(reader.error, str) and reader.error != ""), "empty error")
    require(reader.format.endswith(("pcap", "pcapng")), f"format {reader.format!r}")
    for name, n in reader.anomalies.items():
        require(isinstance(name, str) and isinstance(n, int) and n > 0, f"anomaly {name}={n!r}")
