"""Ground truth: ``inspect`` over the shared reference captures, scored the way the team scores it.

The captures in ``../shared/pcaps`` come with ``GROUND_TRUTH.json``, made by tshark
(``shared/tools/gen_ground_truth.sh``). We run the same ``inspect`` as the CLI (in-process, through
``icswatch.commands.inspect.inspect_files``), write its JSON, and score it with the team's own
``shared/tools/gt_compare.py`` (run as a script, so its logic is the one that counts):

- per protocol, agreement on PDUs and on function histograms at least the threshold in ``THRESHOLDS``
  (a protocol's author adds its line when its parser lands);
- packet counts equal to tshark's on every file tshark read without complaint (entries without
  ``tshark_stderr``).

A last test builds captures by hand (pcap/pcapng variants, gzip) and checks our packet and Modbus PDU
counts against tshark's on them (skipped only where tshark is not installed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import TcpConv, gz, mbap, ng_epb, ng_idb, ng_shb, ng_spb, pcap_bytes, require_shared, write_file

# protocol -> minimum agreement (PDUs and functions), as gt_compare.py computes it
# (issue 2 asks 99.5% for Modbus; issue 4 asks 97% for every other protocol and 99% macro over the
# eight: we hold each to 99%, which they all pass, so a regression shows at once)
THRESHOLDS: dict[str, float] = {
    "modbus": 0.995,
    "dnp3": 0.99,
    "s7comm": 0.99,
    "iec104": 0.99,
    "enip": 0.99,
    "cip": 0.99,
    "bacnet": 0.99,
    "opcua": 0.99,
    "profinet_io": 0.99,
}
CORE = ["modbus", "dnp3", "s7comm", "iec104", "enip", "cip", "bacnet", "opcua"]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """``inspect`` over the shared captures: (result object, path of its JSON)."""
    shared = require_shared()
    from icswatch.commands.inspect import inspect_files

    out, _problems, _damaged = inspect_files([str(shared / "pcaps")])
    path = tmp_path_factory.mktemp("gt") / "ours.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True))
    return out, path


def gt_compare(ours_json: Path, protocol: str, minimum: float) -> tuple[int, str]:
    tool = require_shared() / "tools" / "gt_compare.py"
    truth = require_shared() / "pcaps" / "GROUND_TRUTH.json"
    proc = subprocess.run(
        [sys.executable, str(tool), str(ours_json), str(truth), "--protocols", protocol, "--min", str(minimum), "--worst", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("protocol", sorted(THRESHOLDS))
def test_agreement_with_tshark(ours: tuple[dict[str, Any], Path], protocol: str) -> None:
    _out, path = ours
    minimum = THRESHOLDS[protocol]
    rc, report = gt_compare(path, protocol, minimum)
    m = re.search(r"agreement: pdus ([\d.]+)%, functions ([\d.]+)%", report)
    assert m, report
    pdus, funcs = float(m.group(1)) / 100, float(m.group(2)) / 100
    assert pdus >= minimum and funcs >= minimum, report
    assert rc == 0, report
    assert re.search(rf"^{protocol}\s", report, re.M), f"{protocol} not scored at all:\n{report}"


def test_macro_agreement_over_the_eight_protocols(ours: tuple[dict[str, Any], Path]) -> None:
    _out, path = ours
    rc, report = gt_compare(path, ",".join(CORE), 0.99)
    m = re.search(r"agreement: pdus ([\d.]+)%, functions ([\d.]+)% \(macro over (\d+) protocols\)", report)
    assert m, report
    assert int(m.group(3)) == len(CORE), report
    assert float(m.group(1)) >= 99.0 and float(m.group(2)) >= 99.0, report
    assert rc == 0, report


def test_every_reference_capture_is_inspected(ours: tuple[dict[str, Any], Path], ground_truth: dict[str, Any]) -> None:
    out, _ = ours
    missing = sorted(set(ground_truth) - set(out))
    assert not missing, f"files in GROUND_TRUTH.json without an entry: {missing}"
    for key, entry in out.items():
        assert isinstance(entry.get("packets"), int) and isinstance(entry.get("protocols"), dict), key


def test_packet_counts_equal_tshark(ours: tuple[dict[str, Any], Path], ground_truth: dict[str, Any]) -> None:
    out, _ = ours
    clean = {k: v for k, v in ground_truth.items() if not v.get("tshark_stderr")}
    assert len(clean) >= len(ground_truth) - 5  # nearly every file reads cleanly
    wrong = {k: (out.get(k, {}).get("packets"), v["packets"]) for k, v in clean.items() if out.get(k, {}).get("packets") != v["packets"]}
    assert not wrong, f"(ours, tshark) packet counts differ: {wrong}"
    # where tshark complained (a capture cut short), we report the damage too, with what came before
    for key, truth in ground_truth.items():
        if truth.get("tshark_stderr") and "cut short" in truth["tshark_stderr"]:
            assert out[key].get("error"), key
            assert out[key]["packets"] >= truth["packets"] - 1, key


def test_no_false_modbus_outside_modbus_captures(ours: tuple[dict[str, Any], Path], ground_truth: dict[str, Any]) -> None:
    # gt_compare counts Modbus PDUs we claim where tshark saw none; show them file by file if any appear.
    out, _ = ours
    false = {
        k: out[k]["protocols"]["modbus"]["pdus"]
        for k in ground_truth
        if not ground_truth[k].get("protocols", {}).get("modbus", {}).get("pdus")
        and out.get(k, {}).get("protocols", {}).get("modbus", {}).get("pdus")
    }
    total = sum(v.get("protocols", {}).get("modbus", {}).get("pdus", 0) for v in ground_truth.values())
    assert sum(false.values()) <= total * (1 - THRESHOLDS["modbus"]), false


# ---------------------------------------------------------------------------------------------------
# Hand-built captures against tshark
# ---------------------------------------------------------------------------------------------------
def _frames() -> list[tuple[float, bytes]]:
    conv = TcpConv()
    conv.handshake()
    for tid in range(1, 6):
        conv.c(mbap(tid, 1, b"\x03\x00\x00\x00\x02"))
        conv.s(mbap(tid, 1, b"\x03\x04\x00\x01\x00\x02"))
    conv.c(b"".join(mbap(tid, 1, b"\x06\x00\x01\x00\x03") for tid in (10, 11)))  # two ADUs, one segment
    conv.s(mbap(10, 1, b"\x86\x02"))
    conv.fin()
    return conv.frames


def _tshark_counts(tshark: str, path: Path) -> tuple[int, int]:
    proc = subprocess.run(
        [tshark, "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "mbtcp.trans_id", "-E", "occurrence=a", "-E", "aggregator=|"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    packets = pdus = 0
    for line in proc.stdout.splitlines():
        packets += 1
        _num, _, tids = line.partition("\t")
        pdus += len(tids.split("|")) if tids else 0
    return packets, pdus


def test_hand_built_captures_agree_with_tshark(tshark: str, tmp_path: Path) -> None:
    from icswatch.commands.inspect import inspect_files

    frames = _frames()
    ng = ng_shb(">") + ng_idb(1, endian=">", tsresol=9) + b"".join(ng_epb(0, int(t * 1e9), f, endian=">") for t, f in frames)
    two_sections = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, int(t * 1e6), f) for t, f in frames[:8])
    two_sections += ng_shb(">") + ng_idb(1, endian=">") + b"".join(ng_spb(f, endian=">") for _t, f in frames[8:])
    files = {
        "le_usec.pcap": pcap_bytes(frames),
        "be_nsec.pcap": pcap_bytes(frames, endian=">", nano=True),
        "be.pcapng": ng,
        "sections.pcapng": two_sections,
        "zipped.pcap.gz": gz(pcap_bytes(frames)),
    }
    for name, data in files.items():
        write_file(tmp_path, name, data)
    out, problems, damaged = inspect_files([str(tmp_path)])
    assert not problems and not damaged
    for name in files:
        packets, pdus = _tshark_counts(tshark, tmp_path / name)
        assert (out[name]["packets"], out[name]["protocols"]["modbus"]["pdus"]) == (packets, pdus), name
        assert pdus == 13
