"""The per-protocol bench captures (bench/gen_protocols.py) are what they claim, and the bench counts right.

For each of DNP3, S7comm, IEC 104, EtherNet/IP + CIP, BACnet/IP and OPC UA a small capture is
generated and checked: pcap framing, IPv4/TCP/UDP checksums and time order (in pure Python), the
same bytes for the same seed, ``icswatch inspect`` equal to the generator's truth, and, when tshark is
installed, tshark's counts (the ground-truth fields, counted by bench/protocol_bench.py) equal to it
too, with no TCP analysis flag and no malformed packet. No timing here: speed is bench/'s business.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_testutil import BENCH, TSHARK, load_bench_module, needs_tshark, ones_complement_sum, pcap_records

sys.path.insert(0, str(BENCH))  # the bench scripts import each other by name (bench/ is not a package)

gen = load_bench_module("gen_protocols")
bench = load_bench_module("protocol_bench")
PROTOCOLS = list(bench.PROTOCOLS)
PACKETS = 4000


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = {}
    folder = tmp_path_factory.mktemp("protocols")
    for proto in PROTOCOLS:
        path = folder / f"{proto}.pcap"
        out[proto] = (path, gen.generate(proto, path, PACKETS, 40, 3))
    return out


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_framing_checksums_and_time_order(captures, proto: str) -> None:
    path, truth = captures[proto]
    last = n = 0
    for ts, frame in pcap_records(path):
        n += 1
        assert ts >= last, "frames are written in time order"
        last = ts
        assert frame[12:14] == b"\x08\x00"
        ip = frame[14:34]
        assert ip[0] == 0x45 and ip[9] in (6, 17)
        assert ones_complement_sum(ip) == 0xFFFF, "IPv4 header checksum"
        assert struct.unpack_from("!H", ip, 2)[0] == len(frame) - 14
        l4 = frame[34:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(l4))
        assert ones_complement_sum(pseudo + l4) == 0xFFFF, "TCP/UDP checksum"
    assert n == truth["packets"] == PACKETS


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_truth_has_the_promised_mix(captures, proto: str) -> None:
    _, truth = captures[proto]
    counted = truth["protocols"]
    assert set(counted) == set(bench.reported(proto))
    expected = {  # function keys each plant shows in 4,000 packets
        "dnp3": {"0", "1", "21", "129"},
        "s7comm": {"0x04", "0xf0"},
        "iec104": {"apci:0", "apci:1", "apci:3", "asdu:100"},
        "enip": {"0x0065", "0x006f", "0x0070"},
        "bacnet": {"confirmed:12", "confirmed:14", "unconfirmed:0", "unconfirmed:8"},
        "opcua": {"446", "461", "467", "631", "634"},
    }[proto]
    hist = counted[bench.reported(proto)[0]]["func_hist"]
    assert expected <= set(hist), hist
    for name in bench.reported(proto):
        assert counted[name]["pdus"] > PACKETS // 3
    traffic = truth["generator"]["traffic"]
    if proto != "bacnet":  # UDP: no connections
        assert 0 < traffic["handshakes"] < traffic["connections"]  # some connections began before the capture


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        gen.generate("iec104", tmp_path / f"{name}.pcap", 1500, 20, seed)
        digests.append(hashlib.sha256((tmp_path / f"{name}.pcap").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_icswatch_inspect_counts_the_truth(captures, proto: str) -> None:
    from icswatch.commands.inspect import inspect_files

    path, truth = captures[proto]
    out, problems, damaged = inspect_files([str(path)])
    assert not problems and not damaged
    entry = next(iter(out.values()))
    assert bench.differences(entry, truth, bench.reported(proto)) == []


@needs_tshark
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_tshark_counts_the_truth_without_warnings(captures, proto: str, tmp_path: Path) -> None:
    path, truth = captures[proto]
    tsv = tmp_path / "fields.tsv"
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in bench.tshark_fields(proto):
        cmd += ["-e", f]
    with open(tsv, "w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.DEVNULL, check=True, timeout=300)
    theirs = bench.count_tshark(tsv, proto)
    assert bench.differences(theirs, truth, bench.reported(proto)) == []
    flagged = subprocess.run([TSHARK, "-n", "-r", str(path), "-Y", "tcp.analysis.flags || _ws.malformed"],
                             capture_output=True, text=True, check=True, timeout=300).stdout
    assert flagged.strip() == "", flagged[:500]


def test_counting_helpers() -> None:
    """The comparison the bench prints: keys normalised as gt_compare.py does, differences named."""
    assert bench.norm_key("apci:0x00000000") == "apci:0" and bench.norm_key("0x4c") == "76"
    assert bench.norm_key("confirmed:12") == "confirmed:12" and bench.norm_key("x") == "x"
    a = {"packets": 3, "protocols": {"iec104": {"pdus": 2, "func_hist": {"apci:0": 2, "asdu:13": 2}}}}
    b = {"packets": 3, "protocols": {"iec104": {"pdus": 2, "func_hist": {"apci:0x00000000": 2, "asdu:13": 2}}}}
    assert bench.differences(a, b, ["iec104"]) == []
    b["protocols"]["iec104"]["func_hist"]["asdu:13"] = 1
    b["packets"] = 4
    assert bench.differences(a, b, ["iec104"]) == ["packets 3 vs 4", "iec104 func asdu:13:2/1"]


def test_count_tshark_reads_aggregated_occurrences(tmp_path: Path) -> None:
    tsv = tmp_path / "t.tsv"
    # enip.command, cip.sc: a Multiple Service Packet frame, then a frame with no ENIP
    tsv.write_text("0x006f\t0x0a|0x4c|0x4c\n\t\n")
    got = bench.count_tshark(tsv, "enip")
    assert got == {"packets": 2, "protocols": {"enip": {"pdus": 1, "func_hist": {"0x006f": 1}},
                                               "cip": {"pdus": 3, "func_hist": {"0x0a": 1, "0x4c": 2}}}}
