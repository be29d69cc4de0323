"""Helpers shared by the tests of the benchmark's capture generators (tests/test_bench_gen.py for
bench/gen_modbus.py, tests/test_bench_protocols.py for bench/gen_protocols.py).

- ``load_bench_module``: a script of bench/ as a module (bench/ is not a package).
- ``TSHARK`` / ``needs_tshark``: tshark's path, and the mark that skips a test when it is not installed.
- ``pcap_records`` and ``ones_complement_sum``: read back what a generator wrote, in pure Python (classic
  pcap framing, IPv4/TCP/UDP checksums), so the check never shares code with the generator.

Test modules import them with ``from bench_testutil import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO

BENCH = REPO / "bench"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (.ci/setup-system.sh installs it)")


def load_bench_module(name: str) -> ModuleType:
    """bench/``name``.py as the module ``name``, registered in ``sys.modules`` (so its dataclasses
    resolve their annotations, and a bench script importing it by name gets this one)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pcap_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(timestamp in microseconds, frame) of each record of a classic little-endian Ethernet pcap,
    asserting the framing on the way: the header, whole records, no truncated frame, no trailing byte."""
    data = path.read_bytes()
    magic, major, minor, _, _, _snaplen, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    off = 24
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig and usec < 1_000_000
        off += 16
        yield sec * 1_000_000 + usec, data[off : off + incl]
        off += incl
    assert off == len(data)


def ones_complement_sum(b: bytes) -> int:
    """The 16-bit one's complement sum of ``b`` (RFC 1071): 0xFFFF over a header or a pseudo-header and
    segment whose checksum is right."""
    if len(b) & 1:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s
