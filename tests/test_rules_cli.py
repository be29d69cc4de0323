"""``icswatch rules list|check|test``: exit codes, data on stdout, problems on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rules_testutil import REPO

from icswatch.cli import main


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    assert len(rules) >= 15
    first = rules[0]
    assert set(first) >= {"id", "title", "severity", "techniques", "enabled"}
    assert all(r["enabled"] for r in rules)


def test_list_table_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "modbus-force-listen-only" in out and "def _step(e):" in out


def test_check_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check"]) == 0
    assert "ok: " in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - id: bad-rule\n    title: Bad\n    severity: low\n    techniques: [T0855]\n"
        "    detection:\n      sel: {src|list: nobody}\n"
    )
    assert main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:7: rule bad-rule: unknown list 'nobody'" in err.replace("\n", "")


def test_test_on_a_capture(capsys: pytest.CaptureFixture[str]) -> None:
    pcap = REPO / "pcaps" / "rule_modbus-umas-plc-stop.pcap"
    assert main(["rules", "test", str(pcap), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["rule"]["id"] for d in lines] == ["modbus-umas-plc-stop"]
    assert main(["rules", "test", str(pcap), "--rule", "ics-*"]) == 0
    assert "No rule fired" in capsys.readouterr().out


def test_self_test_of_declared_captures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", "--rule", "modbus-umas-*"]) == 0
    assert "ok: 10 capture checks" in capsys.readouterr().out
