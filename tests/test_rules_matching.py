"""Matching semantics: values, modifiers, lists and CIDR, address spans, multi-valued fields,
selections and conditions, and the index (an event meets only the rules that can match it)."""

from __future__ import annotations

import random

import pytest
from rules_testutil import LISTS, T0, engine_from, ev, fired, rules_yaml

from detectors.rules import NamedLists, RuleEngine, load_text


def one(detection: str, **extra: str) -> RuleEngine:
    """An engine with one rule ``r`` whose detection block is ``detection`` (no suppression)."""
    more = "".join(f"\n            {k}: {v}" for k, v in extra.items())
    return engine_from(
        f"""
        rules:
          - id: rule
            title: R
            severity: low
            techniques: [T0855]
            suppress: {{for: 0}}{more}
            detection:
{detection}
        """
    )


def matches(engine: RuleEngine, event) -> bool:
    return fired(engine, event) == ["rule"]


def test_equality_lists_of_values_and_function_names() -> None:
    e = one("              sel: {function: [5, write_single_register], unit: 1}")
    assert matches(e, ev(5, "write_single_coil", "write", unit=1))
    assert matches(e, ev(6, "write_single_register", "write", unit=1))
    assert not matches(e, ev(6, "write_single_register", "write", unit=2))
    assert not matches(e, ev(16, "write_multiple_registers", "write", unit=1))
    assert not matches(e, ev(5, "write_single_coil", "write"))  # no unit: not equal to 1


def test_ip_fields_cidr_and_lists() -> None:
    e = one(
        """              a: {src: 10.10.0.0/16, dst|cidr: [10.10.2.11, 10.10.3.0/24]}
              b: {src|list: allowed_masters}
              condition: a and not b"""
    )
    assert matches(e, ev(src="10.10.9.66", dst="10.10.2.11"))
    assert matches(e, ev(src="10.10.9.66", dst="10.10.3.200"))
    assert not matches(e, ev(src="10.10.9.66", dst="10.10.2.12"))
    assert not matches(e, ev(src="10.10.1.10", dst="10.10.2.11"))  # an allowed master
    assert not matches(e, ev(src="10.11.0.1", dst="10.10.2.11"))


def test_list_cidr_entries_and_ipv6() -> None:
    e = engine_from(
        """
        rules:
          - id: rule
            title: R
            severity: low
            techniques: [T0855]
            suppress: {for: 0}
            detection:
              sel: {src|list: masters}
        """,
        lists={"masters": ["192.168.50.0/24", "fd00::/64", "10.0.0.1"]},
    )
    assert fired(e, ev(src="192.168.50.77")) == ["rule"]
    assert fired(e, ev(src="fd00::12")) == ["rule"]
    assert fired(e, ev(src="10.0.0.1")) == ["rule"]
    assert fired(e, ev(src="10.0.0.2")) == []
    assert fired(e, ev(src="fd01::12")) == []


def test_value_lists_for_non_address_fields() -> None:
    e = one("              sel: {unit|list: gateway_units}")
    assert [matches(e, ev(unit=u)) for u in (1, 2, 3, 4)] == [True, True, True, False]


@pytest.mark.parametrize(
    "test, address, quantity, expect",
    [
        ("address: 100", 100, 1, True),
        ("address: 100", 95, 10, True),  # 95..104 touches 100
        ("address: 100", 95, 5, False),  # 95..99
        ("address: 100", 101, None, False),
        ("'address|range': [100, 149]", 150, 1, False),
        ("'address|range': [100, 149]", 140, 20, True),
        ("'address|range': '100-149'", 149, 1, True),
        ("'address|range': [[0, 9], [200, 209]]", 205, 1, True),
        ("'address|gte': 1000", 990, 11, True),
        ("'address|gt': 1000", 990, 11, False),  # 990..1000
        ("'address|lt': 96", 95, 10, True),
        ("'address|lte': 10", 11, 5, False),
        ("'address|exists': false", None, None, True),
    ],
)
def test_address_is_the_span_touched(test: str, address: int | None, quantity: int | None, expect: bool) -> None:
    e = one("              sel: {" + test + "}")
    assert matches(e, ev(6, "write_single_register", "write", address=address, quantity=quantity)) is expect


def test_values_any_and_all() -> None:
    any_ = one("              sel: {values: 9999}")
    all_ = one("              sel: {'values|all|range': [0, 100]}")
    gt = one("              sel: {'values|gt': 1000}")
    coil = one("              sel: {values: true}")
    assert matches(any_, ev(values=(1, 9999, 3)))
    assert not matches(any_, ev(values=(1, 2)))
    assert not matches(any_, ev(values=None))
    assert matches(all_, ev(values=(0, 50, 100)))
    assert not matches(all_, ev(values=(0, 50, 101)))
    assert not matches(all_, ev(values=()))  # all of nothing is not a match
    assert matches(gt, ev(values=(5, 1001)))
    assert not matches(gt, ev(values=("x", 5)))  # text is never compared with numbers
    assert matches(coil, ev(values=(True,)))
    assert not matches(coil, ev(values=(False,)))


def test_text_modifiers_exists_not_and_fields() -> None:
    e = one(
        """              a: {'function_name|startswith': unknown-}
              b: {'anomaly|re': '^modbus_bad_'}
              c: {'fields.sub_function': [4, 1], 'code|exists': false}
              d: {'function|not': [3, 4], 'function_name|contains': read}
              condition: 1 of them"""
    )
    assert matches(e, ev(100, "unknown-100", "other"))
    assert matches(e, ev(-1, "malformed", "other", anomaly="modbus_bad_mbap"))
    assert not matches(e, ev(-1, "malformed", "other", anomaly="dnp3_bad_crc"))
    assert matches(e, ev(8, "diagnostics_force_listen_only_mode", "diagnostic", fields={"sub_function": 4}))
    assert not matches(e, ev(8, "diagnostics_return_query_data", "diagnostic", fields={"sub_function": 0}))
    assert not matches(e, ev(8, "x", "diagnostic", fields={"sub_function": 4}, code=3))
    assert matches(e, ev(1, "read_coils", "read"))
    assert not matches(e, ev(3, "read_holding_registers", "read"))
    assert not matches(e, ev(8, "x", "diagnostic", fields=None))


def test_any_fields_with_unexpected_types_never_raise() -> None:
    e = one("              sel: {'fields.x|gt': 5, 'fields.y|startswith': ab}")
    assert not matches(e, ev(fields={"x": "text", "y": 7}))
    assert matches(e, ev(fields={"x": 6, "y": "abc"}))
    assert e.rule("rule").errors == 0


def test_selection_alternatives_and_conditions() -> None:
    e = one(
        """              sel_a:
                - {function: 43, 'fields.mei_type': 14}
                - {function: 17}
              sel_b: {function: 8}
              masters: {src|list: allowed_masters}
              condition: (1 of sel_* and not masters) or (all of sel_* )"""
    )
    assert matches(e, ev(43, "read_device_identification", "discovery", fields={"mei_type": 14}))
    assert matches(e, ev(17, "report_server_id", "discovery"))
    assert not matches(e, ev(17, "report_server_id", "discovery", src="10.10.1.10"))
    assert not matches(e, ev(43, "x", "other", fields={"mei_type": 13}))


def test_precedence_not_and_or() -> None:
    e = one(
        """              a: {unit: 1}
              b: {unit: 2}
              c: {direction: response}
              condition: a or b and not c"""
    )
    assert matches(e, ev(unit=1, direction="response"))  # a or (b and not c)
    assert matches(e, ev(unit=2))
    assert not matches(e, ev(unit=2, direction="response"))


def test_client_server_and_standard_ports() -> None:
    e = one(
        """              sel: {'server_port|standard': false, server: 10.10.2.11}""",
        protocol="modbus",
    )
    assert matches(e, ev(dport=5020))
    assert not matches(e, ev(dport=502))
    resp = ev(direction="response", src="10.10.2.11", sport=5020, dst="10.10.1.10", dport=49152)
    assert matches(e, resp)
    assert not matches(e, ev(dport=5020, protocol="nosuchproto"))  # unknown protocol: every port standard


def test_protocol_key_and_connection_attempts() -> None:
    e = one("              sel: {direction: request}", protocol="[modbus, dnp3]")
    assert matches(e, ev(protocol="dnp3"))
    assert not matches(e, ev(protocol="s7comm"))
    assert not matches(e, ev(-1, "connection_attempt", "discovery", protocol="tcp"))


def test_index_buckets_only_hold_rules_that_can_match() -> None:
    e = engine_from(
        """
        rules:
          - id: writes
            title: W
            severity: low
            techniques: [T0855]
            protocol: modbus
            detection: {sel: {direction: request, category: write}}
          - id: listen-only
            title: L
            severity: low
            techniques: [T0814]
            protocol: modbus
            detection: {sel: {direction: request, function: 8, fields.sub_function: 4}}
          - id: anything
            title: A
            severity: low
            techniques: [T0855]
            detection: {sel: {unit|not: 0}}
        """
    )
    e.observe(ev())
    e.observe(ev(8, "diagnostics", "diagnostic", fields={"sub_function": 0}))
    read_bucket = e._index[("modbus", "request", "read", 3, "ok")]
    diag_bucket = e._index[("modbus", "request", "diagnostic", 8, "ok")]
    assert [r.id for r in read_bucket.rules] == ["anything"]
    assert [r.id for r in diag_bucket.rules] == ["listen-only", "anything"]  # in rule order
    assert "e.direction" not in diag_bucket.source and "e.function" not in diag_bucket.source
    # Tests the index decides are folded out of the generated code.
    assert e.rule("writes").compiled.match is None
    assert "e.direction" not in e.rule("listen-only").step.source
    assert "e.function" not in e.rule("listen-only").step.source


def test_generated_step_agrees_with_the_full_condition() -> None:
    """Randomised: the index + residual code decide exactly what the whole condition decides."""
    text = rules_yaml(
        """
        rules:
          - id: rule1
            title: R1
            severity: low
            techniques: [T0855]
            protocol: [modbus, dnp3]
            suppress: {for: 0}
            detection:
              a: {direction: request, category: [write, control]}
              b: {function: [5, 6, 129], unit|range: [1, 5]}
              c: {src|list: allowed_masters}
              d: {server_port|standard: false}
              condition: (a and b and not c) or (d and not a)
          - id: rule2
            title: R2
            severity: low
            techniques: [T0855]
            suppress: {for: 0}
            detection:
              x:
                - {direction: response, result: exception, code: [1, 2]}
                - {direction: request, function: 8, fields.sub_function: [1, 4]}
              y: {address|range: [10, 20]}
              condition: x or (y and not x)
        """
    )
    rules, problems = load_text(text, "t.yaml")
    assert not problems
    engine = RuleEngine(rules, NamedLists(LISTS))
    rng = random.Random(7)
    for i in range(3000):
        e = ev(
            rng.choice([3, 5, 6, 8, 129]),
            rng.choice(["read_holding_registers", "write_single_coil", "diagnostics"]),
            rng.choice(["read", "write", "control", "diagnostic"]),
            ts=T0 + i,
            protocol=rng.choice(["modbus", "dnp3", "s7comm"]),
            direction=rng.choice(["request", "response"]),
            src=rng.choice(["10.10.1.10", "10.10.9.66"]),
            dport=rng.choice([502, 20000, 5020]),
            unit=rng.choice([None, 0, 1, 5, 9]),
            address=rng.choice([None, 5, 15, 30]),
            quantity=rng.choice([None, 1, 10]),
            result=rng.choice(["ok", "exception"]),
            code=rng.choice([None, 1, 2, 3]),
            fields=rng.choice([None, {"sub_function": 1}, {"sub_function": 0}]),
        )
        expected = sorted(r.id for r in engine.rules if r.compiled.full_match(e))
        assert sorted(a.rule_id for a in engine.observe(e)) == expected, e


def test_a_rule_that_raises_is_counted_and_skipped() -> None:
    e = engine_from(
        """
        rules:
          - id: boom
            title: Boom
            severity: low
            techniques: [T0855]
            suppress: {for: 0}
            detection: {sel: {values: 1}}
          - id: fine
            title: Fine
            severity: low
            techniques: [T0855]
            suppress: {for: 0}
            detection: {sel: {direction: request}}
        """
    )
    bad = ev(values=([1, 2], {"unhashable": True}))  # a parser put lists in values
    assert fired(e, bad) == ["fine"]
    assert e.rule("boom").errors == 1
    assert fired(e, ev(values=(1,))) == ["boom", "fine"]


def test_disabled_rules_and_enabled_flag() -> None:
    text = rules_yaml(
        """
        rules:
          - id: off-by-flag
            title: Switched off
            severity: low
            techniques: [T0855]
            enabled: false
            detection: {sel: {direction: request}}
          - id: off-by-config
            title: Switched off
            severity: low
            techniques: [T0855]
            detection: {sel: {direction: request}}
          - id: on-rule
            title: Switched on
            severity: low
            techniques: [T0855]
            detection: {sel: {direction: request}}
        """
    )
    rules, _ = load_text(text, "t.yaml")
    engine = RuleEngine(rules, NamedLists(), disabled=["off-by-c*"])
    assert [r.id for r in engine.rules] == ["off-by-flag", "off-by-config", "on-rule"]
    assert fired(engine, ev()) == ["on-rule"]
