"""The default rules on the Digital Bond Quickdraw CompactLogix captures (../shared/pcaps/enip/iti__CL5000EIP-*):
the rule matching the event in each file name fires, with the CIP evidence that identifies the event, and
the table in docs/quickdraw.md says exactly what fires in each file.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SHARED_PCAPS, require_shared

PREFIX = "iti__CL5000EIP-"

# file -> every alert the default rule set raises on it (rule id -> count)
EXPECTED: dict[str, dict[str, int]] = {
    "Reboot_or_Restart": {
        "cip-controller-stop": 1,
        "cip-reset": 1,
        "cip-program-download": 1,
        "cip-clock-change-unknown-host": 1,
        "cip-controller-start": 1,
    },
    "Software_Upload": {"cip-program-upload": 1},
    "Firmware_Change_Failure": {"cip-firmware-update": 1},
    "Change_Date_Attempt": {"cip-clock-change-unknown-host": 1},
    "Change_Port_Configuration_Attempt": {"cip-set-attribute-network": 1},
    "View_Device_Status": {},
    "Software_Download_Failure": {},
}

EWS, PLC, ENBT = "192.168.10.105", "192.168.10.120", "192.168.10.121"


def _run(path: Path) -> tuple[Any, Counter]:
    """Replay through the pipeline and a fresh alerting runtime: (AlertSummary, protocols of the events)."""
    from alerts.runtime import build_alerting
    from icswatch.config import load_config
    from sensor.pipeline import Pipeline

    cfg = load_config()
    runtime = build_alerting(cfg, outputs=[])
    protocols: Counter = Counter()

    def on_event(event: Any) -> None:
        protocols[event.protocol] += 1
        runtime.on_event(event)

    Pipeline(cfg.sensor, on_event=on_event, on_tick=runtime.on_tick).replay_file(path)
    return runtime.close(), protocols


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[Any, Counter]]:
    require_shared()
    return {name: _run(SHARED_PCAPS / "enip" / f"{PREFIX}{name}.pcap") for name in EXPECTED}


def _alerts(results: dict[str, tuple[Any, Counter]], name: str, rule_id: str) -> list[Any]:
    return [a for a in results[name][0].alerts if a.rule_id == rule_id]


def test_every_quickdraw_capture_is_covered() -> None:
    require_shared()
    files = {p.name[len(PREFIX) : -len(".pcap")] for p in (SHARED_PCAPS / "enip").glob(f"{PREFIX}*.pcap")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_what_fires_per_file(name: str, results: dict[str, tuple[Any, Counter]]) -> None:
    summary, _ = results[name]
    assert dict(summary.by_rule) == EXPECTED[name], name


def test_reboot_is_stop_reset_start_around_a_download(results: dict[str, tuple[Any, Counter]]) -> None:
    summary, _ = results["Reboot_or_Restart"]
    order = [a.rule_id for a in summary.alerts]
    assert order.index("cip-controller-stop") < order.index("cip-reset") < order.index("cip-controller-start")
    (stop,) = _alerts(results, "Reboot_or_Restart", "cip-controller-stop")
    (reset,) = _alerts(results, "Reboot_or_Restart", "cip-reset")
    (start,) = _alerts(results, "Reboot_or_Restart", "cip-controller-start")
    assert (stop.src, stop.dst) == (EWS, PLC)
    assert stop.events[0].function == 0x07 and stop.events[0].fields["mode_change"] == "program"
    assert reset.events[0].function == 0x05 and reset.events[0].fields["class"] == 0x72
    assert start.events[0].function == 0x06 and start.events[0].fields["mode_change"] == "run"
    (download,) = _alerts(results, "Reboot_or_Restart", "cip-program-download")
    assert download.count == 10 and all(e.function_name == "create" for e in download.events)
    assert stop.ts < download.ts < start.ts  # the objects are re-created while the controller is in Program


def test_software_upload_walks_the_project(results: dict[str, tuple[Any, Counter]]) -> None:
    (alert,) = _alerts(results, "Software_Upload", "cip-program-upload")
    assert (alert.src, alert.dst) == (EWS, PLC)
    distinct = alert.extra["threshold"]["distinct_values"]
    assert distinct == [0x6C, 0x6A, 0xB0, 0xB1, 0x32B, 0x331, 0x332, 0x8D]
    assert all(e.function == 0x4B and e.category == "program" for e in alert.events)


def test_firmware_change_is_the_firmware_object(results: dict[str, tuple[Any, Counter]]) -> None:
    (alert,) = _alerts(results, "Firmware_Change_Failure", "cip-firmware-update")
    first = alert.events[0]
    assert (alert.src, alert.dst) == (EWS, PLC)
    assert first.fields["class"] == 0xA1 and first.function == 0x51  # ControlFLASH's first request
    assert results["Firmware_Change_Failure"][1]["cip"] > 10_000  # 5250 requests, one alert (suppressed 30 min)


def test_change_date_is_a_set_attribute_on_the_wall_clock(results: dict[str, tuple[Any, Counter]]) -> None:
    (alert,) = _alerts(results, "Change_Date_Attempt", "cip-clock-change-unknown-host")
    (event,) = alert.events
    assert (alert.src, alert.dst) == (EWS, PLC)
    assert event.function_name == "set_attribute_list" and event.objects == ("class:0x8b/instance:1",)


def test_port_configuration_is_a_set_attribute_on_the_ethernet_link(results: dict[str, tuple[Any, Counter]]) -> None:
    (alert,) = _alerts(results, "Change_Port_Configuration_Attempt", "cip-set-attribute-network")
    (event,) = alert.events
    assert (alert.src, alert.dst) == (EWS, ENBT)
    assert event.function_name == "set_attribute_single"
    assert event.objects == ("class:0xf6/instance:1/attribute:6",)  # Ethernet link, interface control


def test_the_two_captures_without_enip(results: dict[str, tuple[Any, Counter]]) -> None:
    _, protocols = results["View_Device_Status"]
    assert "enip" not in protocols and "cip" not in protocols and protocols["dnp3"] == 2
    _, protocols = results["Software_Download_Failure"]
    assert sum(protocols.values()) == 0  # ARP, STP, LLDP, CDP only: the controller never answered ARP


def test_docs_table_says_what_fires() -> None:
    """docs/quickdraw.md: one row per file, the rules and counts in the third column ("none" for nothing)."""
    table: dict[str, dict[str, int]] = {}
    for line in (REPO / "docs" / "quickdraw.md").read_text(encoding="utf-8").splitlines():
        m = re.match(rf"\|\s*`{PREFIX}(\w+)\.pcap`\s*\|[^|]*\|([^|]*)\|", line)
        if m:
            table[m.group(1)] = {rule: int(n) for rule, n in re.findall(r"`([a-z0-9-]+)` ×(\d+)", m.group(2))}
    assert table == EXPECTED
