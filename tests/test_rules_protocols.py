"""The protocol rules (rules/dnp3.yaml, s7comm.yaml, iec104.yaml, cip.yaml, bacnet.yaml, opcua.yaml) against
their crafted captures: every rule fires where it should, as often as its `captures` entry says, with the
right evidence (function, addresses, objects, values), and from the right host (where a capture also holds
the same operation from an allowed host, that one must not fire).

Silence on normal traffic is checked for the whole default set, these rules included, by
tests/test_rules_default.py::test_normal_captures_raise_no_alert (every pcaps/*normal*.pcap); here we only
check that each rule declares its protocol's normal capture with 0, so `icswatch rules test` checks it too.

The captures are regenerated into a temporary folder by tools/pcapgen/protocol_rules.py and compared byte
for byte with the ones in pcaps/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from rules_testutil import REPO, check_first_alert, generated_captures_fixture

from detectors.rules.attack import TECHNIQUES
from icswatch.config import load_config
from tools.pcapgen import modbus_rules
from tools.pcapgen import protocol_rules as gen

RULE_FILES = ("dnp3.yaml", "s7comm.yaml", "iec104.yaml", "cip.yaml", "bacnet.yaml", "opcua.yaml")
NORMAL = {
    "dnp3": "pcaps/dnp3_normal.pcap",
    "s7comm": "pcaps/s7comm_normal.pcap",
    "iec104": "pcaps/iec104_normal.pcap",
    "cip": "pcaps/enip_normal.pcap",
    "bacnet": "pcaps/bacnet_normal.pcap",
    "opcua": "pcaps/opcua_normal.pcap",
}

DNP3_A, DNP3_M, DNP3_O = gen.DNP3_ATTACKER, gen.DNP3_MASTER, gen.DNP3_OUTSTATION
S7_A, S7_HMI, S7_PLC, S7_SCAN = gen.S7_ATTACKER, gen.S7_HMI, gen.S7_PLC, gen.S7_SCANNER
IEC_A, IEC_M, IEC_RTU = gen.IEC_ATTACKER, gen.IEC_MASTER, gen.IEC_RTU
CIP_A, CIP_PLC = gen.CIP_ATTACKER, gen.CIP_PLC
BAC_A, BAC_CA, BAC_CB = gen.BAC_ATTACKER, gen.BAC_CTRL_A, gen.BAC_CTRL_B
UA_A, UA_S = gen.UA_ATTACKER, gen.UA_SERVER

# rule id -> (alert src, alert dst, [evidence events, in order: attributes as IcsEvent.to_dict() shows them;
# "fields" is a subset of the event's fields])
EXPECT: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "dnp3-cold-restart": (DNP3_A, DNP3_O, [{"function": 13, "function_name": "cold_restart", "unit": 10}]),
    "dnp3-warm-restart": (DNP3_A, DNP3_O, [{"function": 14, "function_name": "warm_restart", "unit": 10}]),
    "dnp3-stop-application": (DNP3_A, DNP3_O, [{"function": 18, "objects": ["g90v1"], "unit": 10}]),
    "dnp3-disable-unsolicited-unknown-host": (
        DNP3_A,
        DNP3_O,
        [{"function": 21, "objects": ["g60v2", "g60v3", "g60v4"], "fields": {"src_addr": 1, "dst_addr": 10}}],
    ),
    "dnp3-file-transfer": (
        DNP3_A,
        DNP3_O,
        [{"function": 25, "objects": ["g70v3"], "fields": {"file_name": "/cfg/logic.bin", "file_mode": 2}}],
    ),
    "dnp3-direct-operate": (  # the allowed master's select/operate before it is quiet
        DNP3_M,
        DNP3_O,
        [
            {
                "function": 5,
                "address": 3,
                "objects": ["g12v1"],
                "values": [{"index": 3, "op": "pulse_on", "tcc": "trip"}],
            }
        ],
    ),
    "dnp3-control-unauthorized-master": (
        DNP3_A,
        DNP3_O,
        [{"function": 3, "address": 8, "objects": ["g12v1"], "values": [{"index": 8, "tcc": "trip"}]}],
    ),
    "dnp3-authentication-error": (  # the outstation's answer carries the error
        DNP3_O,
        DNP3_A,
        [{"function": 131, "objects": ["g120v7"], "code": 1, "fields": {"auth_error_name": "authentication_failed"}}],
    ),
    "s7-plc-stop": (S7_A, S7_PLC, [{"function": 0x29, "function_name": "plc_stop", "unit": 2}]),
    "s7-program-download": (
        S7_A,
        S7_PLC,
        [{"function": 0x1A, "objects": ["OB1"], "fields": {"filesystem": "passive"}}],
    ),
    "s7-block-delete": (S7_A, S7_PLC, [{"function_name": "plc_control_delete_block", "objects": ["FC1"]}]),
    "s7-program-upload": (S7_A, S7_PLC, [{"function": 0x1D, "objects": ["OB1"], "fields": {"filesystem": "active"}}]),
    "s7-szl-reconnaissance": (  # the HMI's mode read before it is quiet
        S7_SCAN,
        S7_PLC,
        [{"function_name": "read_szl", "fields": {"szl_id": "0x0011", "szl_name": "module_identification"}}],
    ),
    "s7-password-unknown-host": (S7_A, S7_PLC, [{"function_name": "plc_password", "direction": "request"}]),
    "s7-password-brute-force": (  # three refusals (0xD602) from the PLC to the guessing host
        S7_PLC,
        S7_HMI,
        [{"function_name": "plc_password", "result": "exception", "code": 0xD602}] * 3,
    ),
    "iec104-control-unauthorized-station": (  # the master's set point before it is quiet
        IEC_A,
        IEC_RTU,
        [{"function": 45, "address": 6001, "objects": ["ioa:6001"], "values": [0], "fields": {"se": "select"}}],
    ),
    "iec104-reset-process": (
        IEC_M,
        IEC_RTU,
        [{"function": 105, "values": [1], "fields": {"qrp_name": "general_reset"}}],
    ),
    "iec104-clock-sync-unknown-station": (
        IEC_A,
        IEC_RTU,
        [{"function": 103, "values": ["2020-01-01T00:00:00.000"], "fields": {"cot_name": "act"}}],
    ),
    "iec104-interrogation-storm": (
        IEC_A,
        IEC_RTU,
        [{"function": 100, "fields": {"qoi_name": "station"}}] * 5,  # count thresholds keep the last 5 events
    ),
    "cip-controller-stop": (
        CIP_A,
        CIP_PLC,
        [{"function": 7, "objects": ["class:0x8e/instance:1"], "fields": {"mode_change": "program"}}],
    ),
    "cip-controller-start": (
        CIP_A,
        CIP_PLC,
        [{"function": 6, "objects": ["class:0x8e/instance:1"], "fields": {"mode_change": "run"}}],
    ),
    "cip-reset": (CIP_A, CIP_PLC, [{"function": 5, "fields": {"class": 1, "reset_type": "factory_defaults"}}]),
    "cip-firmware-update": (
        CIP_A,
        CIP_PLC,
        [{"function": 0x4B, "objects": ["class:0xa1/instance:1"], "category": "program"}],
    ),
    "cip-set-attribute-identity": (
        CIP_A,
        CIP_PLC,
        [{"function": 0x10, "objects": ["class:0x01/instance:1/attribute:7"], "fields": {"class_name": "identity"}}],
    ),
    "cip-set-attribute-network": (
        CIP_A,
        CIP_PLC,
        [
            {
                "function": 0x10,
                "objects": ["class:0xf5/instance:1/attribute:5"],
                "fields": {"class_name": "tcpip_interface"},
            }
        ],
    ),
    "cip-clock-change-unknown-host": (  # the HMI's clock set before it is quiet
        CIP_A,
        CIP_PLC,
        [{"function": 0x04, "objects": ["class:0x8b/instance:1"], "fields": {"class_name": "wall_clock_time"}}],
    ),
    "cip-program-upload": (  # distinct thresholds keep the event that brought each of the last 5 values
        CIP_A,
        CIP_PLC,
        [{"function": 0x4B, "category": "program", "fields": {"class": c}} for c in gen.UPLOAD_CLASSES[3:8]],
    ),
    "cip-program-download": (  # the engineering station's download before it is quiet
        CIP_A,
        CIP_PLC,
        [{"function": 8, "function_name": "create", "fields": {"class": c}} for c in (0x6B, 0x6A, 0x6B, 0x6A, 0x6B)],
    ),
    "bacnet-reinitialize-device": (
        BAC_A,
        BAC_CA,
        [{"function_name": "reinitialize_device", "fields": {"reinit_state": "warmstart", "password_present": True}}],
    ),
    "bacnet-device-communication-control": (
        BAC_A,
        BAC_CB,
        [{"function_name": "device_communication_control", "fields": {"dcc_state": "disable", "duration_minutes": 60}}],
    ),
    "bacnet-write-priority-array": (  # the operator's write at priority 8 before it is quiet
        BAC_A,
        BAC_CA,
        [{"function_name": "write_property", "objects": ["binary-output:3"], "values": [0], "fields": {"priority": 1}}],
    ),
    "opcua-security-policy-none": (  # the listed HMI's None channel before it is quiet
        UA_A,
        UA_S,
        [
            {
                "function_name": "open_secure_channel_request",
                "fields": {"security_policy": "None", "request_type": "issue"},
            }
        ],
    ),
    "opcua-anonymous-session": (
        UA_A,
        UA_S,
        [{"function_name": "activate_session_request", "fields": {"identity_token": "anonymous"}}],
    ),
    "opcua-write-unknown-client": (
        UA_A,
        UA_S,
        [{"function_name": "write_request", "objects": ["ns=2;s=Line1.SpeedSP"], "values": [99.0]}],
    ),
    "opcua-call-unknown-client": (
        UA_A,
        UA_S,
        [{"function_name": "call_request", "objects": ["ns=2;s=Pump1->ns=2;s=Pump1.Stop"], "values": [[True]]}],
    ),
}

DISTINCT = {"cip-program-upload": list(gen.UPLOAD_CLASSES[:8])}

# list-based rules whose capture starts with the same operation from an allowed host:
# rule id -> (that host, the function it sends); it must be in the capture and raise nothing
ALLOWED_FIRST = {
    "dnp3-disable-unsolicited-unknown-host": (DNP3_M, "disable_unsolicited"),
    "dnp3-control-unauthorized-master": (DNP3_M, "operate"),
    "s7-szl-reconnaissance": (S7_HMI, "read_szl"),
    "iec104-control-unauthorized-station": (IEC_M, "c_se_nc_1"),
    "iec104-clock-sync-unknown-station": (IEC_M, "c_cs_na_1"),
    "cip-clock-change-unknown-host": (gen.CIP_HMI, "set_attribute_list"),
    "cip-program-download": (gen.CIP_EWS, "create"),
    "bacnet-write-priority-array": (gen.BAC_BMS, "write_property"),
    "opcua-security-policy-none": (gen.UA_HMI, "open_secure_channel_request"),
}


generated = generated_captures_fixture(gen.generate)


def _replay(path: Path) -> tuple[Any, list[Any]]:
    """As rules_testutil.replay, also keeping the events: (AlertSummary, events)."""
    from alerts.runtime import build_alerting
    from sensor.pipeline import Pipeline

    cfg = load_config()
    runtime = build_alerting(cfg, outputs=[])
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        runtime.on_event(event)

    Pipeline(cfg.sensor, on_event=on_event, on_tick=runtime.on_tick).replay_file(path)
    return runtime.close(), events


def _matches(got: Any, want: Any) -> bool:
    """``want`` is contained in ``got``: dicts by subset, lists element by element, the rest by equality."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _matches(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_matches(g, w) for g, w in zip(got, want))
    return got == want and type(got) is type(want)


def _has(event: Any, attrs: dict[str, Any]) -> bool:
    d = event.to_dict()
    return all(k in d and _matches(d[k], v) for k, v in attrs.items())


def test_every_protocol_rule_has_a_capture_and_an_expectation(engine_rules: list[Any]) -> None:
    ids = {r.id for r in engine_rules if Path(r.rule.path).name in RULE_FILES}
    assert ids == set(gen.RULE_CAPTURES) == set(EXPECT)
    # together with the Modbus/network script, every default rule has a capture script entry
    assert {r.id for r in engine_rules} == ids | set(modbus_rules.RULE_CAPTURES)


def test_default_set_has_40_rules_each_with_techniques_and_references(engine_rules: list[Any]) -> None:
    assert len(engine_rules) >= 40
    for r in engine_rules:
        assert r.rule.techniques, r.id
        for t in r.rule.techniques:
            assert re.fullmatch(r"T0\d{3}", t) and t in TECHNIQUES, (r.id, t)
        assert any(ref.startswith("https://attack.mitre.org/techniques/T0") for ref in r.rule.references), r.id
    protocol_rules = [r for r in engine_rules if Path(r.rule.path).name in RULE_FILES]
    assert len(protocol_rules) >= 18
    assert {next(iter(r.rule.protocols)) for r in protocol_rules} == set(NORMAL)


def test_each_protocol_rule_declares_its_capture_and_its_silent_normal_capture(engine_rules: list[Any]) -> None:
    for r in engine_rules:
        if Path(r.rule.path).name not in RULE_FILES:
            continue
        (protocol,) = r.rule.protocols
        assert r.rule.captures.get(f"pcaps/rule_{r.id}.pcap", 0) >= 1, r.id
        assert r.rule.captures.get(NORMAL[protocol]) == 0, r.id
        assert (REPO / NORMAL[protocol]).is_file()


def test_committed_captures_are_what_the_script_makes(generated: Path) -> None:
    made = sorted(generated.glob("*.pcap"))
    assert len(made) == len(gen.RULE_CAPTURES)
    for path in made:
        committed = REPO / "pcaps" / path.name
        assert committed.is_file(), f"{committed} missing: run python -m tools.pcapgen.protocol_rules"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: rerun the script"


@pytest.mark.parametrize("rule_id", sorted(EXPECT))
def test_rule_fires_on_its_capture_with_the_right_evidence(
    rule_id: str, generated: Path, engine_rules: list[Any]
) -> None:
    rule = next(r for r in engine_rules if r.id == rule_id).rule
    summary, seen = _replay(generated / f"rule_{rule_id}.pcap")
    alert = check_first_alert(rule_id, rule, summary, EXPECT[rule_id], DISTINCT, _has)
    protocol = next(iter(rule.protocols))
    assert all(e.protocol == protocol for e in alert.events)
    assert alert.to_ecs()["network"]["protocol"] == protocol
    if rule_id in ALLOWED_FIRST:  # the allowed host did the same thing first, and raised nothing
        host, function_name = ALLOWED_FIRST[rule_id]
        assert any(e.src == host and e.function_name == function_name and e.direction == "request" for e in seen)
        assert not [a for a in summary.alerts if host in (a.src, a.dst)], (rule_id, dict(summary.by_rule))


def test_rules_doc_lists_every_protocol_rule_with_its_techniques(engine_rules: list[Any]) -> None:
    """docs/rules.md, section "Protocol rules": one row per rule, `id` | title | techniques."""
    doc = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    section = doc[doc.index("\n## Protocol rules\n") :]
    rows = {
        m.group(1): (m.group(2).strip(), re.findall(r"T0\d{3}", m.group(3)))
        for m in re.finditer(r"^\| `([a-z0-9.-]+)` \|([^|]*)\|([^|]*)\|$", section, re.MULTILINE)
    }
    want = {r.id: (r.rule.title, list(r.rule.techniques)) for r in engine_rules if Path(r.rule.path).name in RULE_FILES}
    assert rows == want
