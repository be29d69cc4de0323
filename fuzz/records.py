"""The byte layout every stream/datagram target reads its input in, and its writer for the seed corpus.

A fuzz input is ``[selector][record][record]...``. ``selector`` picks a mode of the target (transport,
port, protocol). A record is ``[control][length hi][length lo][chunk]``; a length past the end of the
input is cut to what is left, so every byte string is a valid input and libFuzzer's mutations of the
length bytes stay meaningful. Seeds written with ``encode`` are real conversations (one record per
captured segment, with its direction), so the fuzzer starts from paired requests and responses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def split(data: bytes) -> tuple[int, Iterator[tuple[int, bytes]]]:
    """(selector, records) of a fuzz input. An empty input is selector 0 with no records."""
    if not data:
        return 0, iter(())
    return data[0], records(data, 1)


def records(data: bytes, off: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(control, chunk)`` records from ``data[off:]``."""
    n = len(data)
    while off < n:
        ctl = data[off]
        if off + 3 > n:
            yield ctl, data[off + 1 :]
            return
        length = (data[off + 1] << 8) | data[off + 2]
        start = off + 3
        end = min(start + length, n)
        yield ctl, data[start:end]
        off = end


def encode(selector: int, recs: Iterable[tuple[int, bytes]]) -> bytes:
    """The fuzz input holding ``recs`` (chunks longer than 65535 bytes are cut)."""
    out = bytearray((selector & 0xFF,))
    for ctl, chunk in recs:
        chunk = chunk[:0xFFFF]
        out += bytes((ctl & 0xFF, len(chunk) >> 8, len(chunk) & 0xFF))
        out += chunk
    return bytes(out)
