"""The default rule set against its crafted captures: every rule fires where it should, with the
right evidence, and the normal-traffic captures raise no alert at all.

The captures are regenerated into a temporary folder by the project's own script and compared
byte for byte with the ones in pcaps/ (so the committed demo captures are what the script makes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rules_testutil import REPO, check_first_alert, generated_captures_fixture, replay

from tools.pcapgen import modbus_rules as gen

ATTACKER, HMI, EWS, OFFICE = gen.ATTACKER, gen.HMI, gen.EWS, gen.OFFICE
PLC1, PLC2, GATEWAY = gen.PLC1, gen.PLC2, gen.GATEWAY

# rule id -> (alert src, alert dst, [evidence event attributes that must all be present, in order])
EXPECT: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "modbus-write-unauthorized-master": (ATTACKER, PLC1, [{"function": 6, "address": 20, "values": (9999,), "unit": 1}]),
    "modbus-diagnostics-unauthorized-master": (ATTACKER, PLC1, [{"function": 11, "category": "diagnostic"}]),
    "modbus-force-listen-only": (ATTACKER, PLC1, [{"function": 8, "fields": {"sub_function": 4}}]),
    "modbus-restart-communications": (ATTACKER, PLC1, [{"function": 8, "fields": {"sub_function": 1}, "values": (0xFF00,)}]),
    "modbus-clear-counters": (ATTACKER, PLC1, [{"function": 8, "fields": {"sub_function": 10}}]),
    # distinct thresholds keep the events of the last 5 values (all values are in DISTINCT below)
    "modbus-function-code-scan": (
        ATTACKER,
        PLC2,
        [{"function": fc, "direction": "request"} for fc in gen.SCAN_CODES[5:10]],
    ),
    "modbus-illegal-function-probe": (
        PLC2,
        ATTACKER,
        [{"function": fc, "result": "exception", "code": 1} for fc in (20, 24, 100)],
    ),
    "modbus-unit-id-scan": (ATTACKER, GATEWAY, [{"unit": u, "function": 3} for u in range(16, 21)]),
    "modbus-exception-storm": (
        PLC1,
        ATTACKER,
        # count thresholds keep the last 5 events as evidence
        [{"result": "exception", "code": 2, "address": 1150}, {"result": "exception", "code": 2, "address": 1190}],
    ),
    "modbus-broadcast-write": (HMI, GATEWAY, [{"unit": 0, "function": 6, "address": 40, "values": (0,)}]),
    "modbus-umas-program-download": (ATTACKER, PLC1, [{"function": 90, "fields": {"umas_function": 0x30}}]),
    "modbus-umas-program-download-ews": (EWS, PLC1, [{"function": 90, "fields": {"umas_function": 0x30}}]),
    "modbus-umas-program-upload": (ATTACKER, PLC1, [{"function": 90, "fields": {"umas_function": 0x33}}]),
    "modbus-umas-plc-stop": (ATTACKER, PLC1, [{"function": 90, "fields": {"umas_function": 0x41}, "category": "control"}]),
    "modbus-umas-plc-start": (ATTACKER, PLC1, [{"function": 90, "fields": {"umas_function": 0x40}}]),
    "modbus-device-identification-unknown-host": (ATTACKER, PLC1, [{"function": 43, "fields": {"mei_type": 14}}]),
    "modbus-brute-force-io": (HMI, PLC1, [{"function": 5, "address": 5, "values": (True,)}, {"function": 5, "address": 5}]),
    "ics-new-talker": (OFFICE, PLC1, [{"function": 3, "src": OFFICE}]),
    "ics-new-function": (HMI, PLC1, [{"function": 16, "address": 30, "values": (1, 2, 3)}]),
    "ics-protocol-nonstandard-port": (HMI, PLC2, [{"protocol": "modbus", "dport": 5020}]),
    "ics-port-scan-hosts": (ATTACKER, "10.10.2.10", [{"function_name": "connection_attempt", "dst": f"10.10.2.{i}"} for i in range(6, 11)]),
    "ics-port-scan-ports": (ATTACKER, PLC1, [{"dport": p} for p in (502, 102, 20000, 2404)]),
}


# distinct thresholds: every value of the window that fired
DISTINCT = {
    "modbus-function-code-scan": gen.SCAN_CODES[:10],
    "modbus-illegal-function-probe": [20, 24, 100],
    "modbus-unit-id-scan": list(range(1, 21)),
    "ics-port-scan-hosts": [f"10.10.2.{i}" for i in range(1, 11)],
    "ics-port-scan-ports": [502, 102, 20000, 2404],
}


generated = generated_captures_fixture(gen.generate)


def _has(event: Any, attrs: dict[str, Any]) -> bool:
    for k, v in attrs.items():
        got = getattr(event, k)
        if k == "fields":
            if not got or any(got.get(fk) != fv for fk, fv in v.items()):
                return False
        elif got != v:
            return False
    return True


def test_every_default_rule_has_a_capture_script_entry_and_expectation(engine_rules: list[Any]) -> None:
    # the Modbus and cross-protocol rules; rules/<protocol>.yaml are covered by tests/test_rules_protocols.py
    ids = {r.id for r in engine_rules if Path(r.rule.path).name in ("modbus.yaml", "network.yaml")}
    assert ids == set(gen.RULE_CAPTURES) == set(EXPECT)


def test_committed_captures_are_what_the_script_makes(generated: Path) -> None:
    for made in sorted(generated.glob("*.pcap")):
        committed = REPO / "pcaps" / made.name
        assert committed.is_file(), f"{committed} missing: run python -m tools.pcapgen.modbus_rules"
        assert committed.read_bytes() == made.read_bytes(), f"{committed} is stale: rerun the script"


@pytest.mark.parametrize("rule_id", sorted(EXPECT))
def test_rule_fires_on_its_capture_with_the_right_evidence(rule_id: str, generated: Path, engine_rules: list[Any]) -> None:
    rule = next(r for r in engine_rules if r.id == rule_id).rule
    summary = replay(generated / f"rule_{rule_id}.pcap")
    check_first_alert(rule_id, rule, summary, EXPECT[rule_id], DISTINCT, _has)


def test_normal_captures_raise_no_alert(generated: Path) -> None:
    normals = sorted((REPO / "pcaps").glob("*normal*.pcap"))
    assert REPO / "pcaps" / "modbus_normal.pcap" in normals
    for path in [generated / "modbus_normal.pcap", *normals]:
        summary = replay(path)
        assert summary.total == 0, (path.name, dict(summary.by_rule), [(a.rule_id, a.src, a.dst) for a in summary.alerts[:5]])
