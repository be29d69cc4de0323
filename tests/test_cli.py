"""The console script, run as a person runs it: ``python -m icswatch ...`` in a subprocess.

Exit codes (icswatch/cli.py): 0 ok, 1 failure (an input could not be read at all), 2 usage or
configuration error, 3 done but some capture was damaged. Data on stdout, diagnostics on stderr, never
a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TcpConv, mbap, ng_epb, ng_idb, ng_shb, pcap_bytes, write_file


def icswatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "icswatch", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def modbus_frames(reads: int = 1) -> list[tuple[float, bytes]]:
    conv = TcpConv()
    conv.handshake()
    for tid in range(1, reads + 1):
        conv.c(mbap(tid, 1, b"\x03\x00\x00\x00\x01"))
        conv.s(mbap(tid, 1, b"\x03\x02\x00\x05"))
    conv.c(mbap(99, 1, b"\x06\x00\x01\x00\x03"))
    conv.s(mbap(99, 1, b"\x06\x00\x01\x00\x03"))
    return conv.frames


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def modbus_of(entry: dict) -> dict:
    m = dict(entry["protocols"]["modbus"])
    m["func_hist"] = {k: v for k, v in m["func_hist"].items() if v}  # see test_modbus: a stray "0": 0
    return m


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """captures/ with a pcap in a subfolder, a pcapng, a damaged pcap, a capture named notes.txt, and
    non-captures named like captures."""
    root = tmp_path / "captures"
    frames = modbus_frames(2)
    write_file(root, "plant/a.pcap", pcap_bytes(frames))
    ng = ng_shb() + ng_idb(1) + b"".join(ng_epb(0, int(ts * 1e6), f) for ts, f in frames)
    write_file(root, "b.pcapng", ng)
    whole = pcap_bytes(frames)
    write_file(root, "damaged.pcap", whole[:-10])  # the last record (a response) is cut
    write_file(root, "notes.txt", pcap_bytes(modbus_frames(1)))  # a real capture with a text name
    write_file(root, "x.pcap", b"this is a text file, not a capture\n")
    write_file(root, "empty.pcap", b"")
    write_file(root, "README", b"# captures\n")
    return root


# ---------------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------------
def test_inspect_folder_shape_keys_and_skips(folder: Path) -> None:
    proc = icswatch("inspect", str(folder), "--json")
    no_traceback(proc)
    out = json.loads(proc.stdout)  # ONE JSON object
    assert isinstance(out, dict)
    assert set(out) == {"plant/a.pcap", "b.pcapng", "damaged.pcap", "notes.txt"}  # by magic, not by name
    for key in ("plant/a.pcap", "b.pcapng"):
        entry = out[key]
        assert "error" not in entry
        assert entry["packets"] == 3 + 2 * 3
        assert modbus_of(entry) == {"pdus": 6, "func_hist": {"3": 4, "6": 2}}
    assert out["notes.txt"]["packets"] == 7
    assert modbus_of(out["notes.txt"]) == {"pdus": 4, "func_hist": {"3": 2, "6": 2}}
    assert proc.returncode == 3  # a damaged capture in the set


def test_inspect_damaged_file_keeps_entry_others_unaffected(folder: Path, tmp_path: Path) -> None:
    proc = icswatch("inspect", str(folder), "--json")
    out = json.loads(proc.stdout)
    damaged = out["damaged.pcap"]
    assert damaged["error"] and "\n" not in damaged["error"]
    assert damaged["packets"] == 8  # every record before the cut one
    assert modbus_of(damaged) == {"pdus": 5, "func_hist": {"3": 4, "6": 1}}
    # the same files without the damaged one give the same entries
    clean = tmp_path / "clean"
    (clean / "plant").mkdir(parents=True)
    (clean / "plant/a.pcap").write_bytes((folder / "plant/a.pcap").read_bytes())
    (clean / "b.pcapng").write_bytes((folder / "b.pcapng").read_bytes())
    alone = json.loads(icswatch("inspect", str(clean), "--json").stdout)
    assert out["plant/a.pcap"] == alone["plant/a.pcap"] and out["b.pcapng"] == alone["b.pcapng"]
    # stderr: one line about the damage, naming the file
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "damaged.pcap" in lines[0]


def test_inspect_explicit_file_key_is_its_name(folder: Path) -> None:
    proc = icswatch("inspect", str(folder / "plant" / "a.pcap"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["a.pcap"]
    assert proc.stderr.strip() == ""


def test_inspect_explicit_damaged_file(folder: Path) -> None:
    proc = icswatch("inspect", str(folder / "damaged.pcap"), "--json")
    no_traceback(proc)
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["damaged.pcap"]["packets"] == 8
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name,what", [("empty.pcap", "empty"), ("x.pcap", "not a pcap")])
def test_inspect_unreadable_file_named_explicitly(folder: Path, name: str, what: str) -> None:
    proc = icswatch("inspect", str(folder / name), "--json")
    no_traceback(proc)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0] and name in lines[0]


def test_inspect_missing_file(tmp_path: Path) -> None:
    proc = icswatch("inspect", str(tmp_path / "nope.pcap"), "--json")
    no_traceback(proc)
    assert proc.returncode == 1
    assert "nope.pcap" in proc.stderr


def test_inspect_bad_config_value_names_the_key(folder: Path) -> None:
    proc = icswatch("inspect", str(folder), "--json", "--set", "sensor.max_flows=abc")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "sensor.max_flows" in proc.stderr
    assert proc.stdout.strip() == ""


def test_inspect_unknown_config_key(folder: Path) -> None:
    proc = icswatch("inspect", str(folder), "--set", "sensor.max_flowz=10")
    no_traceback(proc)
    assert proc.returncode == 2 and "sensor.max_flowz" in proc.stderr


def test_inspect_config_override_applies(folder: Path) -> None:
    proc = icswatch("inspect", str(folder / "plant" / "a.pcap"), "--set", "sensor.max_flows=16")
    assert proc.returncode == 0, proc.stderr
    assert modbus_of(json.loads(proc.stdout)["a.pcap"])["pdus"] == 6


# ---------------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------------
def test_replay_writes_events_as_json_lines(folder: Path, tmp_path: Path) -> None:
    events = tmp_path / "out" / "events.jsonl"
    proc = icswatch(
        "replay", str(folder / "plant" / "a.pcap"), "--no-rules", "--no-db", "--events", str(events), "-q", cwd=tmp_path
    )
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    lines = events.read_text().splitlines()
    objs = [json.loads(line) for line in lines]  # one JSON object per line
    assert all(isinstance(o, dict) for o in objs)
    modbus = [o for o in objs if o["protocol"] == "modbus"]
    assert [(o["direction"], o["function"], o["function_name"]) for o in modbus] == [
        ("request", 3, "read_holding_registers"),
        ("response", 3, "read_holding_registers"),
        ("request", 3, "read_holding_registers"),
        ("response", 3, "read_holding_registers"),
        ("request", 6, "write_single_register"),
        ("response", 6, "write_single_register"),
    ]
    assert modbus[1]["address"] == 0 and modbus[1]["values"] == [5] and modbus[1]["latency"] > 0
    assert modbus[0]["src"] == "10.0.0.1" and modbus[0]["dport"] == 502
    assert len({o["id"] for o in objs}) == len(objs)
    assert not (tmp_path / "var").exists()  # --no-db: no store written


def test_replay_folder_with_damage_and_unreadable(folder: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = icswatch("replay", str(folder), "--no-rules", "--no-db", "--events", str(events), "-q", cwd=tmp_path)
    no_traceback(proc)
    assert proc.returncode == 3
    assert "damaged.pcap" in proc.stderr.replace("\n", "")  # (see the one-line test below)
    n_modbus = sum(1 for line in events.read_text().splitlines() if json.loads(line)["protocol"] == "modbus")
    assert n_modbus == 6 + 6 + 5 + 4  # a.pcap, b.pcapng, damaged.pcap before the cut, notes.txt


def test_replay_unreadable_file_one_line_error(folder: Path, tmp_path: Path) -> None:
    proc = icswatch("replay", str(folder / "empty.pcap"), "--no-rules", "--no-db", "-q", cwd=tmp_path)
    no_traceback(proc)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "empty.pcap" in line or "empty file" in line]
    assert len(lines) == 1 and "empty.pcap" in lines[0] and "empty file" in lines[0], proc.stderr


def test_replay_unreadable_file_exit_code(folder: Path, tmp_path: Path) -> None:
    proc = icswatch("replay", str(folder / "x.pcap"), "--no-rules", "--no-db", "-q", cwd=tmp_path)
    no_traceback(proc)
    assert proc.returncode == 1
    assert "not a pcap" in proc.stderr.replace("\n", " ")


def test_no_command_is_a_usage_error() -> None:
    proc = icswatch()
    no_traceback(proc)
    assert proc.returncode == 2
