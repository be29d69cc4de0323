"""A small, bounded BER (X.690) TLV reader for the identification-only parsers (GOOSE, SV, MMS).

Only what identification needs: read one identifier + length at an offset, walk the children of a
constructed value, decode short INTEGERs and strings. No recursion: callers descend a fixed path, so
the depth is bounded by their code, and every length is checked against the buffer and a cap.

X.690 section 8.1.2 (identifier octets): class in bits 8-7, constructed in bit 6, tag number in bits
5-1, or 31 there and the number in base-128 continuation octets. Section 8.1.3 (length octets): short
form (< 128), long form (0x80 | n, then n octets). The indefinite form (0x80) is not used by GOOSE,
SV or MMS over ISO presentation as seen in practice; it is refused (``None``) and the caller names the
anomaly.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_TAG_OCTETS = 4  # tag numbers up to 2^21: far more than MMS' largest (cs-request-detail [79])
MAX_LENGTH_OCTETS = 3  # lengths up to 16 MiB: more than any frame or reassembled TPDU we accept

CLASS_UNIVERSAL = 0x00
CLASS_APPLICATION = 0x40
CLASS_CONTEXT = 0x80
CLASS_PRIVATE = 0xC0


class Tlv(NamedTuple):
    """One BER element: ``cls`` (0x00/0x40/0x80/0xC0), ``constructed``, tag ``number``, and the value's
    ``start`` and ``end`` offsets in the buffer. ``end`` is clipped to the buffer (``truncated`` says
    the declared length ran past it), so a parser can still read the head of a cut PDU."""

    cls: int
    constructed: bool
    number: int
    start: int
    end: int
    truncated: bool


def read_tlv(buf: bytes | memoryview, off: int, end: int) -> Tlv | None:
    """The element at ``buf[off]`` within ``buf[:end]``; None when the header itself does not parse."""
    if off >= end:
        return None
    first = buf[off]
    off += 1
    number = first & 0x1F
    if number == 0x1F:
        number = 0
        for i in range(MAX_TAG_OCTETS + 1):
            if off >= end or i == MAX_TAG_OCTETS:
                return None
            b = buf[off]
            off += 1
            number = (number << 7) | (b & 0x7F)
            if not b & 0x80:
                break
    if off >= end:
        return None
    length = buf[off]
    off += 1
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > MAX_LENGTH_OCTETS or off + n > end:
            return None  # indefinite form, absurd length-of-length, or cut inside the length
        length = int.from_bytes(buf[off : off + n], "big")
        off += n
    value_end = off + length
    truncated = value_end > end
    return Tlv(first & 0xC0, bool(first & 0x20), number, off, end if truncated else value_end, truncated)


def children(buf: bytes | memoryview, tlv: Tlv, limit: int = 64) -> list[Tlv]:
    """The first ``limit`` child elements of a constructed value (stops at the first that does not parse)."""
    out: list[Tlv] = []
    off = tlv.start
    end = tlv.end
    while off < end and len(out) < limit:
        child = read_tlv(buf, off, end)
        if child is None:
            break
        out.append(child)
        if child.end <= off:  # cannot happen with a parsed header, but never loop
            break
        off = child.end
    return out


def read_uint(buf: bytes | memoryview, tlv: Tlv, max_octets: int = 8) -> int | None:
    """A non-negative INTEGER/Unsigned value of at most ``max_octets`` octets (None if longer/empty)."""
    n = tlv.end - tlv.start
    if n <= 0 or n > max_octets:
        return None
    return int.from_bytes(buf[tlv.start : tlv.end], "big")


def read_int(buf: bytes | memoryview, tlv: Tlv, max_octets: int = 8) -> int | None:
    """A two's-complement INTEGER of at most ``max_octets`` octets."""
    n = tlv.end - tlv.start
    if n <= 0 or n > max_octets:
        return None
    return int.from_bytes(buf[tlv.start : tlv.end], "big", signed=True)


def read_str(buf: bytes | memoryview, tlv: Tlv, max_len: int = 129) -> str:
    """A VisibleString/OCTET STRING as text (latin-1, so any byte decodes), cut to ``max_len`` chars."""
    end = min(tlv.end, tlv.start + max_len)
    return bytes(buf[tlv.start : end]).decode("latin-1")
