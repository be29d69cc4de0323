"""Capture readers (sensor/capture.py): pcap, pcapng and gzip, from hand-built bytes.

Every file here is written byte by byte with the builders of conftest.py, so each test names exactly
what is on disk: magic, byte order, block layout, options. Damage tests check the two promises of the
reader: a one-line error (``CaptureError`` when nothing can be read, ``reader.error`` when damage comes
later) and every packet before the damage still yielded.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest

import sensor.capture as capture
from conftest import (
    gz,
    ng_block,
    ng_epb,
    ng_idb,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap_bytes,
    pcap_header,
    pcap_record,
    read_all,
    write_file,
)
from sensor.capture import CaptureError, CaptureReader, is_capture_file, sniff_format

P1 = b"\x01" * 60
P2 = bytes(range(100))
P3 = b"\xab" * 7  # odd length: exercises pcapng padding


def one_line(msg: str | None) -> bool:
    return bool(msg) and "\n" not in msg and "Traceback" not in msg


# ---------------------------------------------------------------------------------------------------
# pcap
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    frac = 123_456_789 if nano else 123_456
    recs = [((1_700_000_000, frac), P1), ((1_700_000_001, 0), P2), ((1_700_000_002, 5), P3, 1500)]
    path = write_file(tmp_path, "x.pcap", pcap_bytes(recs, linktype=1, endian=endian, nano=nano))
    packets, reader = read_all(path)
    assert reader.error is None
    assert [p[2] for p in packets] == [P1, P2, P3]
    assert [p[1] for p in packets] == [1, 1, 1]
    assert [p[3] for p in packets] == [60, 100, 1500]  # orig_len kept (the third was cut by the snaplen)
    scale = 1e-9 if nano else 1e-6
    assert packets[0][0] == pytest.approx(1_700_000_000 + frac * scale, abs=1e-9)
    assert packets[2][0] == pytest.approx(1_700_000_002 + 5 * scale, abs=1e-9)


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_reader_format_of_plain_capture(tmp_path: Path, kind: str) -> None:
    data = pcap_bytes([(1.0, P1)]) if kind == "pcap" else ng_shb() + ng_idb(1) + ng_epb(0, 1, P1)
    with CaptureReader(write_file(tmp_path, "x", data)) as reader:
        assert reader.format == kind


def test_pcap_magic_numbers_on_disk() -> None:
    # the four magics as they appear in the first four bytes of a file
    assert pcap_header(endian="<")[:4] == bytes.fromhex("d4c3b2a1")
    assert pcap_header(endian=">")[:4] == bytes.fromhex("a1b2c3d4")
    assert pcap_header(endian="<", nano=True)[:4] == bytes.fromhex("4d3cb2a1")
    assert pcap_header(endian=">", nano=True)[:4] == bytes.fromhex("a1b23c4d")
    for e in "<>":
        for nano in (False, True):
            assert sniff_format(pcap_header(endian=e, nano=nano)) == "pcap"


@pytest.mark.parametrize("linktype", [0, 1, 101, 113, 228, 229, 276])
def test_pcap_linktype_from_global_header(tmp_path: Path, linktype: int) -> None:
    path = write_file(tmp_path, "x.pcap", pcap_bytes([(1.0, P1)], linktype=linktype))
    packets, _ = read_all(path)
    assert packets[0][1] == linktype


def test_pcap_fcs_bits_of_linktype_ignored(tmp_path: Path) -> None:
    # The upper bits of the network field say "an FCS of n bytes follows"; the link type is the low 28.
    path = write_file(tmp_path, "x.pcap", pcap_bytes([(1.0, P1)], linktype=0x10000000 | 1))
    packets, _ = read_all(path)
    assert packets[0][1] == 1


def test_pcap_empty_capture_is_not_an_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "x.pcap", pcap_header())
    packets, reader = read_all(path)
    assert packets == [] and reader.error is None


def test_pcap_zero_length_record(tmp_path: Path) -> None:
    path = write_file(tmp_path, "x.pcap", pcap_bytes([(1.0, b""), (2.0, P1)]))
    packets, reader = read_all(path)
    assert [p[2] for p in packets] == [b"", P1] and reader.error is None


@pytest.mark.parametrize("block", [1, 7, 16, 17, 100])
def test_pcap_records_across_read_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    # With tiny read blocks every header and record straddles a boundary somewhere.
    monkeypatch.setattr(capture, "BLOCK", block)
    recs = [(1.0 + i, bytes([i]) * (i * 13 % 97)) for i in range(40)]
    path = write_file(tmp_path, "x.pcap", pcap_bytes(recs))
    packets, reader = read_all(path)
    assert reader.error is None
    assert [p[2] for p in packets] == [r[1] for r in recs]


# ---------------------------------------------------------------------------------------------------
# pcapng
# ---------------------------------------------------------------------------------------------------
def test_pcapng_interfaces_with_own_linktype_and_resolution(tmp_path: Path) -> None:
    data = b"".join(
        [
            ng_shb(options=[(4, b"test suite")]),  # shb_userappl
            ng_idb(1, 65535),  # default resolution: microseconds
            ng_idb(113, 262144, tsresol=9),  # nanoseconds
            ng_idb(101, 0, tsresol=0x80 | 10),  # 2^-10 s per tick
            ng_idb(276, 0, tsresol=6, tsoffset=1_000_000),  # microseconds + 1e6 s offset
            ng_epb(0, 1_700_000_000_500_000, P1),
            ng_epb(1, 1_700_000_000_123_456_789, P2),
            ng_epb(2, 1024 * 1000 + 512, P3),  # 1000.5 s
            ng_epb(3, 2_500_000, P1, orig_len=9000),  # 2.5 s + offset
        ]
    )
    path = write_file(tmp_path, "x.pcapng", data)
    packets, reader = read_all(path)
    assert reader.error is None
    assert [(p[1], p[2], p[3]) for p in packets] == [(1, P1, 60), (113, P2, 100), (101, P3, 7), (276, P1, 9000)]
    assert packets[0][0] == pytest.approx(1_700_000_000.5, abs=1e-6)
    assert packets[1][0] == pytest.approx(1_700_000_000.123456789, abs=1e-6)
    assert packets[2][0] == pytest.approx(1000.5, abs=1e-9)
    assert packets[3][0] == pytest.approx(1_000_002.5, abs=1e-6)


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    data = ng_shb() + ng_idb(1, 0, tsresol=3) + ng_spb(P1) + ng_pb(0, 4_500, P2) + ng_spb(P3)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert reader.error is None
    assert [p[2] for p in packets] == [P1, P2, P3]
    assert all(p[1] == 1 for p in packets)
    assert packets[1][0] == pytest.approx(4.5)  # if_tsresol 3: milliseconds


def test_pcapng_simple_packet_block_cut_by_interface_snaplen(tmp_path: Path) -> None:
    # An SPB has no captured-length field: it is the original length capped by the interface's snaplen.
    data = ng_shb() + ng_idb(1, 64) + ng_spb(P2[:64], orig_len=100)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert reader.error is None
    assert [(p[2], p[3]) for p in packets] == [(P2[:64], 100)]


def test_pcapng_unknown_blocks_skipped_and_counted(tmp_path: Path) -> None:
    nrb = ng_block(4, struct.pack("<HH", 0, 0))  # name resolution block, empty
    isb = ng_block(5, struct.pack("<III", 0, 0, 0))  # interface statistics
    custom = ng_block(0x40000BAD, b"vendor data")
    data = ng_shb() + ng_idb(1) + nrb + ng_epb(0, 1, P1) + isb + custom + ng_epb(0, 2, P2)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert reader.error is None
    assert [p[2] for p in packets] == [P1, P2]
    assert reader.anomalies.get("pcapng_skipped_block") == 3


def test_pcapng_second_section_other_byte_order(tmp_path: Path) -> None:
    # Each section has its own byte order and its own interfaces (interface ids restart at 0).
    first = ng_shb("<") + ng_idb(1, endian="<") + ng_epb(0, 1_000_000, P1, endian="<")
    second = (
        ng_shb(">")
        + ng_idb(228, endian=">", tsresol=9)
        + ng_epb(0, 3_000_000_000, P2, endian=">")
        + ng_spb(P3, endian=">")
    )
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", first + second))
    assert reader.error is None
    assert [(p[1], p[2]) for p in packets] == [(1, P1), (228, P2), (228, P3)]
    assert packets[0][0] == pytest.approx(1.0)
    assert packets[1][0] == pytest.approx(3.0)


def test_pcapng_big_endian_only(tmp_path: Path) -> None:
    data = ng_shb(">") + ng_idb(1, endian=">") + ng_epb(0, 7_000_001, P3, endian=">")
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert reader.error is None
    assert packets == [(pytest.approx(7.000001), 1, P3, 7)]


def test_pcapng_packet_for_unknown_interface_counted(tmp_path: Path) -> None:
    data = ng_shb() + ng_idb(1) + ng_epb(5, 1, P1) + ng_epb(0, 2, P2)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert [p[2] for p in packets] == [P2]
    assert reader.anomalies.get("pcapng_unknown_interface") == 1
    assert reader.error is None


def test_pcapng_interfaces_reset_by_new_section(tmp_path: Path) -> None:
    # interface 1 exists in the first section only: in the second it is unknown
    data = ng_shb() + ng_idb(1) + ng_idb(1) + ng_shb() + ng_idb(1) + ng_epb(1, 1, P1) + ng_epb(0, 1, P2)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert [p[2] for p in packets] == [P2]
    assert reader.anomalies.get("pcapng_unknown_interface") == 1


@pytest.mark.parametrize("block", [3, 8, 13, 64])
def test_pcapng_blocks_across_read_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(capture, "BLOCK", block)
    payloads = [bytes([i]) * (i * 7 % 61) for i in range(30)]
    data = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, i, p) for i, p in enumerate(payloads))
    data += ng_shb(">") + ng_idb(1, endian=">") + ng_epb(0, 9, P2, endian=">")
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert reader.error is None
    assert [p[2] for p in packets] == payloads + [P2]


# ---------------------------------------------------------------------------------------------------
# gzip
# ---------------------------------------------------------------------------------------------------
def test_gzip_pcap(tmp_path: Path) -> None:
    raw = pcap_bytes([(1.5, P1), (2.5, P2)], endian=">", nano=True)
    path = write_file(tmp_path, "x.pcap.gz", gz(raw))
    assert is_capture_file(path)
    packets, reader = read_all(path)
    assert reader.error is None and reader.format == "gzip+pcap"
    assert [(p[0], p[2]) for p in packets] == [(1.5, P1), (2.5, P2)]


def test_gzip_pcapng(tmp_path: Path) -> None:
    raw = ng_shb() + ng_idb(113, tsresol=9) + ng_epb(0, 10**9, P1) + ng_spb(P3)
    path = write_file(tmp_path, "capture", gz(raw))  # no extension: found by magic
    assert is_capture_file(path)
    packets, reader = read_all(path)
    assert reader.error is None and reader.format == "gzip+pcapng"
    assert [(p[1], p[2]) for p in packets] == [(113, P1), (113, P3)]


def test_gzip_of_something_else_is_not_a_capture(tmp_path: Path) -> None:
    path = write_file(tmp_path, "notes.pcap.gz", gz(b"hello, this is not a capture\n"))
    assert not is_capture_file(path)
    with pytest.raises(CaptureError) as exc:
        CaptureReader(path)
    assert one_line(str(exc.value)) and "not a pcap or pcapng" in str(exc.value)


def _cut_gzip(tmp_path: Path) -> tuple[Path, list[tuple[float, bytes]], int]:
    """A gzip'd pcap cut at 2/3 of its compressed size, and how many records its readable prefix holds."""
    recs = [(float(i), bytes([i % 256]) * 200) for i in range(2000)]
    packed = gz(pcap_bytes(recs))
    cut = packed[: len(packed) * 2 // 3]
    prefix = zlib.decompressobj(wbits=31).decompress(cut)  # everything decompressible before the cut
    whole = (len(prefix) - 24) // (16 + 200)
    return write_file(tmp_path, "x.pcap.gz", cut), recs, whole


def test_gzip_cut_short_is_a_one_line_error(tmp_path: Path) -> None:
    path, recs, _whole = _cut_gzip(tmp_path)
    packets, reader = read_all(path)
    assert one_line(reader.error)
    assert [p[2] for p in packets] == [r[1] for r in recs[: len(packets)]]


def test_gzip_cut_short_keeps_packets_before(tmp_path: Path) -> None:
    path, recs, whole = _cut_gzip(tmp_path)
    assert 1000 < whole < 2000
    packets, reader = read_all(path)
    assert one_line(reader.error)
    assert len(packets) == whole


# ---------------------------------------------------------------------------------------------------
# Streaming: memory does not grow with the file
# ---------------------------------------------------------------------------------------------------
N_BIG = 200_000
CHUNK = 10_000


def _frame(i: int) -> bytes:
    return struct.pack("!I", i) + b"\x55" * 246


def _peak_while_reading(path: Path) -> tuple[int, bytes, int]:
    """(packets, last packet, tracemalloc peak) for one pass over a capture, keeping nothing."""
    tracemalloc.start()
    try:
        n = 0
        last = b""
        with CaptureReader(path) as reader:
            for _ts, _lt, data, _orig in reader:
                n += 1
                last = data
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.error is None
    return n, last, peak


def test_streaming_pcap_memory_bounded(tmp_path: Path) -> None:
    # 200k packets, ~54 MB, read with the real block size: the peak stays a few blocks, not the file.
    chunk = b"".join(pcap_record(1.0 + i * 1e-3, _frame(i)) for i in range(CHUNK))
    path = tmp_path / "big.pcap"
    with open(path, "wb") as fh:
        fh.write(pcap_header())
        for _ in range(N_BIG // CHUNK):
            fh.write(chunk)
    size = path.stat().st_size
    assert size > 50_000_000
    n, last, peak = _peak_while_reading(path)
    assert n == N_BIG and last == _frame(CHUNK - 1)
    assert peak < size / 3, f"peak {peak} bytes while reading a {size}-byte capture"


def test_streaming_gzip_pcapng_memory_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Same promise through gzip, with 64 KiB read blocks so a 20 MB capture is 300 blocks: memory is a
    # function of the block size, not of the file (the real 4 MiB block is covered above).
    monkeypatch.setattr(capture, "BLOCK", 1 << 16)
    chunk = b"".join(ng_epb(0, i, _frame(i)) for i in range(CHUNK))
    path = tmp_path / "big.pcapng.gz"
    rounds = 8
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(ng_shb() + ng_idb(1))
        for _ in range(rounds):
            fh.write(chunk)
    size = rounds * len(chunk)
    assert size > 20_000_000
    n, last, peak = _peak_while_reading(path)
    assert n == rounds * CHUNK and last == _frame(CHUNK - 1)
    assert peak < 2_000_000, f"peak {peak} bytes while reading a {size}-byte (uncompressed) capture"


# ---------------------------------------------------------------------------------------------------
# Bad input: a one-line error, and every packet before the damage
# ---------------------------------------------------------------------------------------------------
def test_zero_byte_file(tmp_path: Path) -> None:
    path = write_file(tmp_path, "empty.pcap", b"")
    assert not is_capture_file(path)
    with pytest.raises(CaptureError) as exc:
        CaptureReader(path)
    assert one_line(str(exc.value)) and "empty" in str(exc.value)


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\r\n", b"\x00\x00\x00\x00" * 8, b"PK\x03\x04zipzipzip", b"\xd4\xc3"])
def test_wrong_magic(tmp_path: Path, head: bytes) -> None:
    path = write_file(tmp_path, "x.pcap", head)
    assert not is_capture_file(path)
    with pytest.raises(CaptureError) as exc:
        CaptureReader(path)
    msg = str(exc.value)
    assert one_line(msg) and "not a pcap or pcapng" in msg and str(path) in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as exc:
        CaptureReader(tmp_path / "nope.pcap")
    assert one_line(str(exc.value))


def test_pcap_global_header_cut(tmp_path: Path) -> None:
    path = write_file(tmp_path, "x.pcap", pcap_header()[:15])
    packets, reader = read_all(path)
    assert packets == [] and one_line(reader.error)


GOOD = [(1.0, P1), (2.0, P2), (3.0, P3)]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcap_cut_in_record_header(tmp_path: Path, endian: str) -> None:
    data = pcap_bytes(GOOD, endian=endian) + pcap_record(4.0, P1, endian=endian)[:9]
    packets, reader = read_all(write_file(tmp_path, "x.pcap", data))
    assert [p[2] for p in packets] == [P1, P2, P3]
    assert one_line(reader.error) and "record header" in reader.error


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcap_cut_in_record_data(tmp_path: Path, endian: str) -> None:
    data = pcap_bytes(GOOD, endian=endian) + pcap_record(4.0, P2, endian=endian)[:16 + 40]
    packets, reader = read_all(write_file(tmp_path, "x.pcap", data))
    assert [p[2] for p in packets] == [P1, P2, P3]
    assert one_line(reader.error) and "cut" in reader.error and "100 bytes announced" in reader.error


def test_pcap_absurd_record_length(tmp_path: Path) -> None:
    absurd = struct.pack("<IIII", 4, 0, 0x7FFFFFF0, 60) + P1 + pcap_record(5.0, P2)
    data = pcap_bytes(GOOD) + absurd
    packets, reader = read_all(write_file(tmp_path, "x.pcap", data))
    assert [p[2] for p in packets] == [P1, P2, P3]
    assert one_line(reader.error) and "absurd length" in reader.error


def test_pcapng_block_with_bad_length(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, P1) + ng_epb(0, 2, P2)
    for bad_len in (5, 13, 0):  # below the 12-byte minimum, not a multiple of 4, zero
        bad = struct.pack("<II", 6, bad_len) + b"\0" * 40
        packets, reader = read_all(write_file(tmp_path, f"bad{bad_len}.pcapng", good + bad))
        assert [p[2] for p in packets] == [P1, P2], bad_len
        assert one_line(reader.error) and "invalid length" in reader.error


def test_pcapng_block_with_absurd_length(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, P1)
    bad = struct.pack("<II", 6, 0xFFFFFFF0) + b"\0" * 64
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", good + bad))
    assert [p[2] for p in packets] == [P1]
    assert one_line(reader.error) and "absurd length" in reader.error


def test_pcapng_cut_in_block(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, P1) + ng_epb(0, 2, P2)
    for cut in (3, 20):  # inside the block header, inside the body
        packets, reader = read_all(write_file(tmp_path, f"cut{cut}.pcapng", good + ng_epb(0, 3, P3 * 9)[:cut]))
        assert [p[2] for p in packets] == [P1, P2]
        assert one_line(reader.error) and "cut" in reader.error


def test_pcapng_epb_caplen_larger_than_block_counted(tmp_path: Path) -> None:
    epb = bytearray(ng_epb(0, 1, P1))
    struct.pack_into("<I", epb, 20, 5000)  # captured length field beyond the block
    data = ng_shb() + ng_idb(1) + bytes(epb) + ng_epb(0, 2, P2)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert [p[2] for p in packets] == [P2]
    assert reader.anomalies.get("pcapng_bad_caplen") == 1


def test_pcapng_bad_byte_order_magic(tmp_path: Path) -> None:
    good = ng_shb() + ng_idb(1) + ng_epb(0, 1, P1)
    shb = bytearray(ng_shb())
    shb[8:12] = b"\xde\xad\xbe\xef"
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", good + bytes(shb) + ng_epb(0, 2, P2)))
    assert [p[2] for p in packets] == [P1]
    assert one_line(reader.error) and "byte-order" in reader.error


def test_pcapng_unknown_block_is_not_damage(tmp_path: Path) -> None:
    # An unknown block type is skipped and counted; the packets after it are still read.
    data = ng_shb() + ng_idb(1) + ng_epb(0, 1, P1) + ng_block(0x1234, b"????") + ng_epb(0, 2, P2)
    packets, reader = read_all(write_file(tmp_path, "x.pcapng", data))
    assert [p[2] for p in packets] == [P1, P2]
    assert reader.error is None
    assert reader.anomalies == {"pcapng_skipped_block": 1}
