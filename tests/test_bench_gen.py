"""The benchmark's capture generator (bench/gen_modbus.py) writes what it says it writes.

Checked here: valid pcap framing and IPv4/TCP checksums (in pure Python), byte-identical output for a
seed, and, when tshark is installed, that tshark reads the same number of packets, Modbus PDUs and
function codes as the generator's truth file, with no TCP analysis warnings (sequence numbers right).
No timing here: speed is measured by bench/run_bench.py, never by a test.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from bench_testutil import TSHARK, load_bench_module, needs_tshark, ones_complement_sum, pcap_records

gen = load_bench_module("gen_modbus")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("gen") / "small.pcap"
    truth = gen.generate(path, 2000, 40, 5)
    return path, truth


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> tuple[Path, dict]:
    """Large enough for every function code, exceptions, splits and closes to appear (seed 1)."""
    path = tmp_path_factory.mktemp("gen") / "mix.pcap"
    truth = gen.generate(path, 20000, 200, 1)
    return path, truth


def test_pcap_framing_checksums_and_time_order(small):
    path, truth = small
    last = 0
    n = 0
    for ts, frame in pcap_records(path):
        n += 1
        assert ts >= last
        last = ts
        assert frame[12:14] == b"\x08\x00"
        ip = frame[14:34]
        assert ip[0] == 0x45 and ip[9] == 6
        assert ones_complement_sum(ip) == 0xFFFF, "IPv4 header checksum"
        total = struct.unpack_from("!H", ip, 2)[0]
        assert total == len(frame) - 14
        seg = frame[34:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(seg))
        assert ones_complement_sum(pseudo + seg) == 0xFFFF, "TCP checksum"
        sport, dport = struct.unpack_from("!HH", seg, 0)
        assert 502 in (sport, dport)
    assert n == truth["packets"] == 2000


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    gen.generate(a, 3000, 50, 11)
    gen.generate(b, 3000, 50, 11)
    gen.generate(c, 3000, 50, 12)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1]
    assert digest[0] != digest[2]
    ta = json.loads((tmp_path / "a.pcap.truth.json").read_text())
    tb = json.loads((tmp_path / "b.pcap.truth.json").read_text())
    ta["generator"].pop("seconds"), tb["generator"].pop("seconds")
    assert ta == tb


def test_mix_covers_the_traffic_it_promises(mix):
    _, truth = mix
    hist = truth["protocols"]["modbus"]["func_hist"]
    assert set(hist) == {"1", "2", "3", "4", "5", "6", "15", "16", "23"}
    traffic = truth["generator"]["traffic"]
    for key in ("handshakes", "closes", "exceptions", "split_adus", "multi_adu_segments", "unanswered"):
        assert traffic.get(key, 0) > 0, key
    assert traffic["handshakes"] < traffic["connections"]  # some connections began before the capture


def _tshark_fields(path: Path, *extra: str) -> tuple[int, int, Counter]:
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), *extra, "-T", "fields", "-e", "mbtcp.trans_id", "-e", "modbus.func_code",
         "-E", "occurrence=a"],
        capture_output=True, text=True, check=True,
    ).stdout
    packets = pdus = 0
    hist: Counter = Counter()
    for line in out.splitlines():
        packets += 1
        tid, _, fcs = line.partition("\t")
        if tid:
            pdus += len(tid.split(","))
        if fcs:
            hist.update(fcs.split(","))
    return packets, pdus, hist


@needs_tshark
@pytest.mark.parametrize("which", ["small", "mix"])
def test_tshark_counts_what_the_truth_says(which, request):
    path, truth = request.getfixturevalue(which)
    packets, pdus, hist = _tshark_fields(path)
    assert packets == truth["packets"]
    assert pdus == truth["protocols"]["modbus"]["pdus"]
    assert dict(hist) == truth["protocols"]["modbus"]["func_hist"]


# Packets tshark would flag: a bad checksum, any TCP analysis flag (retransmission, dup ACK, lost
# segment, ...) or an expert warning other than the resets the generator sends on purpose.
CLEAN_FILTER = (
    "ip.checksum.status != 1 or tcp.checksum.status != 1 or tcp.analysis.flags"
    " or (_ws.expert.severity >= warning and tcp.flags.reset == 0)"
)


@needs_tshark
def test_tshark_sees_valid_checksums_and_clean_tcp(mix):
    path, _ = mix
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-Y",
         CLEAN_FILTER],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip() == ""


@needs_tshark
@pytest.mark.parametrize("pcapng,gz", [(True, False), (False, True), (True, True)])
def test_pcapng_and_gzip_hold_the_same_packets(tmp_path, small, pcapng, gz):
    _, truth = small
    path = tmp_path / ("x.pcapng" if pcapng else "x.pcap")
    other = gen.generate(path, 2000, 40, 5, pcapng=pcapng, gz=gz)
    assert other["protocols"] == truth["protocols"]
    if gz:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    packets, pdus, _ = _tshark_fields(path)
    assert (packets, pdus) == (truth["packets"], truth["protocols"]["modbus"]["pdus"])
