"""Loading and validation: every problem names the file, the line and the rule, and never takes the
other rules down."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_testutil import LISTS, REPO, rules_yaml

from detectors.rules import NamedLists, RuleEngine, load_rules, load_text
from detectors.rules.attack import TECHNIQUE_RE
from detectors.rules.lists import ListError, load_lists_file
from detectors.rules.schema import parse_duration

GOOD = """  - id: good-one
    title: Good one
    severity: low
    techniques: [T0855]
    detection:
      sel: {function: 5}
"""


def load(text: str, path: str = "x.yaml", extra: str = "") -> tuple[list, list]:
    """Load dedented ``text`` (+ ``extra`` rules appended as they are)."""
    return load_text(rules_yaml(text) + extra, path)


def errors_of(problems: list) -> list[str]:
    return [str(p) for p in problems if not p.warning]


def test_good_rules_load_with_line_numbers() -> None:
    rules, problems = load("rules:", extra=GOOD)
    assert problems == []
    assert [r.id for r in rules] == ["good-one"]
    assert rules[0].line == 2 and rules[0].path == "x.yaml"


def test_unknown_field_names_file_line_rule_and_suggests() -> None:
    text = """
    rules:
      - id: bad-field
        title: Bad field
        severity: low
        techniques: [T0855]
        detection:
          sel:
            direction: request
            functon: 5
    """
    rules, problems = load(text, extra=GOOD)
    assert [r.id for r in rules] == ["good-one"]  # the other rule still loads
    assert errors_of(problems) == [
        "x.yaml:9: rule bad-field: detection.sel: unknown field 'functon' (did you mean 'function'?)"
    ]


def test_wrong_type_and_bad_vocabulary() -> None:
    text = """
    rules:
      - id: bad-types
        title: Bad types
        severity: urgent
        techniques: [T0855]
        enabled: maybe
        detection:
          sel:
            unit: one
            category: wirte
            sport: 70000
    """
    rules, problems = load(text)
    assert rules == []
    errs = errors_of(problems)
    assert "x.yaml:4: rule bad-types: severity: 'urgent' is not one of low, medium, high, critical" in errs
    assert "x.yaml:6: rule bad-types: enabled: expected true or false, got text" in errs
    assert "x.yaml:9: rule bad-types: detection.sel.unit: expected an integer, got text 'one'" in errs
    assert any(e.startswith("x.yaml:10: rule bad-types: detection.sel.category: 'wirte' is not one of") and "did you mean 'write'" in e for e in errs)
    assert "x.yaml:11: rule bad-types: detection.sel.sport: port 70000 is out of range 0-65535" in errs


def test_unknown_list_is_an_error_naming_rule_and_line(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        rules_yaml(
            """
            rules:
              - id: needs-list
                title: Needs a list
                severity: low
                techniques: [T0855]
                detection:
                  sel:
                    direction: request
                    src|list: trusted_hosts
            """
        )
        + GOOD
    )
    rs = load_rules([f], NamedLists(LISTS))
    assert [r.id for r in rs.rules] == ["good-one"]
    assert [str(p) for p in rs.errors] == [
        f"{f}:9: rule needs-list: unknown list 'trusted_hosts' (lists: allowed_masters, critical_assets, "
        "engineering_workstations, gateway_units)"
    ]


def test_yaml_syntax_error_loses_only_the_broken_rule(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text(
        "rules:\n"
        + GOOD
        + "  - id: broken-one\n    title: [unclosed\n    severity: low\n    techniques: [T0855]\n"
        + "    detection: {sel: {function: 5}}\n"
        + GOOD.replace("good-one", "good-two")
    )
    rs = load_rules([f])
    assert sorted(r.id for r in rs.rules) == ["good-one", "good-two"]
    assert len(rs.errors) == 1
    err = str(rs.errors[0])
    assert err.startswith(f"{f}:") and "rule broken-one: invalid YAML" in err
    line = int(err.split(":")[1])
    assert 9 <= line <= 12  # at the broken rule, not at the top of the file


def test_syntax_error_outside_rules_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("rules: [\n")
    rs = load_rules([f])
    assert rs.rules == [] and len(rs.errors) == 1 and "invalid YAML" in str(rs.errors[0])


def test_condition_errors() -> None:
    base = """
    rules:
      - id: cond
        title: Cond
        severity: low
        techniques: [T0855]
        detection:
          write: {category: write}
          masters: {src|list: allowed_masters}
          condition: {cond}
    """
    for cond, message in [
        ("write and not master", "unknown selection 'master'"),
        ("write and", "the condition ends too early"),
        ("(write or masters", "expected ')'"),
        ("write masters", "unexpected 'masters' after a complete condition"),
        ("1 of x*", "no selection matches 'x*'"),
    ]:
        _, problems = load(base.replace("{cond}", cond))
        errs = errors_of(problems)
        assert len(errs) == 1 and errs[0].startswith("x.yaml:9: rule cond: detection.condition: ") and message in errs[0], errs


def test_top_level_problems() -> None:
    text = """
    rules:
      - id: Bad_ID
        title: ""
        severty: high
        techniques: [T855, T0999]
        detection: {}
    """
    _, problems = load(text)
    errs = errors_of(problems)
    assert any("unknown key 'severty' (did you mean 'severity'?)" in e for e in errs)
    assert any("id must be lower-case" in e for e in errs)
    assert any("title: must not be empty" in e for e in errs)
    assert any("'T855' is not an ATT&CK for ICS technique id" in e for e in errs)
    assert any("'T0999' is not in the ATT&CK for ICS catalogue" in e for e in errs)
    assert any("missing required key 'severity'" in e for e in errs)


def test_threshold_new_suppress_validation() -> None:
    text = """
    rules:
      - id: stateful
        title: Stateful
        severity: low
        techniques: [T0855]
        detection:
          sel: {direction: request}
        threshold: {count: 0, within: soon, group_by: [src, dts], distinct: [a, b]}
        new: {per: dst, learn: -5}
        suppress: {by: [src]}
    """
    _, problems = load(text)
    errs = " | ".join(errors_of(problems))
    assert "threshold.count: expected an integer >= 1" in errs
    assert "threshold.within: expected a duration like 30, 30s, 5m, 1h, got 'soon'" in errs
    assert "threshold.group_by: unknown field 'dts' (did you mean 'dst'?)" in errs
    assert "new: missing 'value'" in errs
    assert "new.learn: a duration cannot be negative" in errs
    assert "suppress: missing 'for'" in errs


def test_modifier_errors() -> None:
    text = """
    rules:
      - id: mods
        title: Mods
        severity: low
        techniques: [T0855]
        detection:
          a: {src|cidr: 10.0.0.0/33}
          b: {unit|startswith: x}
          c: {address|range: [10, 5]}
          d: {anomaly|re: "("}
          e: {function|wat: 1}
          f: {unit|all: 1}
          condition: a or b or c or d or e or f
    """
    _, problems = load(text)
    errs = " | ".join(errors_of(problems))
    assert "'10.0.0.0/33' is not an IP address or CIDR network" in errs
    assert "modifier 'startswith' does not apply to int field 'unit'" in errs
    assert "range 10-5 is empty" in errs
    assert "bad regular expression" in errs
    assert "unknown modifier 'wat'" in errs
    assert "'all' applies only to multi-valued fields" in errs


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n" + GOOD)
    (tmp_path / "b.yaml").write_text("rules:\n" + GOOD)
    (tmp_path / "notes.txt").write_text("not a rule file")
    rs = load_rules([tmp_path])
    assert [r.id for r in rs.rules] == ["good-one"]
    assert len(rs.files) == 2
    assert [str(p) for p in rs.errors] == [f"{tmp_path / 'b.yaml'}:2: rule good-one: duplicate rule id (first defined at {tmp_path / 'a.yaml'}:2)"]


def test_missing_path_and_bad_file_shapes(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "map.yaml").write_text("rulez: []\n")
    rs = load_rules([tmp_path, tmp_path / "nope.yaml"])
    errs = [str(p) for p in rs.errors]
    assert any("nope.yaml: no such rule file or folder" in e for e in errs)
    assert any("map.yaml:1: unknown top-level key 'rulez'" in e for e in errs)
    assert any("list.yaml:1: a rule must be a mapping" in e for e in errs)


def test_unused_selection_is_a_warning_not_an_error() -> None:
    text = """
    rules:
      - id: unused
        title: Unused selection
        severity: low
        techniques: [T0855]
        detection:
          a: {function: 5}
          b: {function: 6}
          condition: a
    """
    rules, problems = load(text)
    assert [r.id for r in rules] == ["unused"]
    assert [str(p) for p in problems] == ["x.yaml:8: warning: rule unused: detection.b: selection is not used by the condition"]


def test_engine_collects_compile_errors_and_keeps_the_rest() -> None:
    rules, problems = load(
        """
        rules:
          - id: bad-list-entries
            title: List with garbage
            severity: low
            techniques: [T0855]
            detection:
              sel: {src|list: weird}
        """,
        extra=GOOD,
    )
    engine = RuleEngine(rules, NamedLists({"weird": ["10.0.0.1", "not-an-ip"]}))
    assert [r.id for r in engine.rules] == ["good-one"]
    assert [str(p) for p in engine.errors] == [
        "x.yaml:7: rule bad-list-entries: list 'weird' (?): 'not-an-ip' is not an IP address or CIDR network"
    ]


def test_lists_file(tmp_path: Path) -> None:
    f = tmp_path / "lists.yaml"
    f.write_text("lists:\n  masters: [10.0.0.1, 10.0.1.0/24]\n  empty:\n")
    assert load_lists_file(f) == {"masters": ["10.0.0.1", "10.0.1.0/24"], "empty": []}
    lists = NamedLists.from_config({"masters": ["10.9.9.9"]}, f)
    assert lists.lists["masters"] == ["10.9.9.9"]  # the config replaces the file's list of the same name
    assert lists.ip_matcher("masters")["10.9.9.9"] and not lists.ip_matcher("masters")["10.0.0.1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("lists:\n  masters: {a: 1}\n")
    with pytest.raises(ListError, match=r"bad.yaml:2: list 'masters': expected a list"):
        load_lists_file(bad)


def test_durations() -> None:
    assert parse_duration(30) == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1d") == 86400.0
    for bad in ("5 minutes", True, -1, "x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_default_ruleset_is_clean_and_each_rule_has_a_technique() -> None:
    from icswatch.config import load_config

    engine = RuleEngine.from_config(load_config().rules)
    assert [str(p) for p in engine.problems] == []
    assert len(engine.rules) >= 15
    for r in engine.rules:
        assert r.rule.techniques, r.id
        for t in r.rule.techniques:
            assert TECHNIQUE_RE.match(t), (r.id, t)
        assert all(r.technique_names), r.id
        assert r.rule.references, r.id
        assert r.rule.description, r.id
        assert f"pcaps/rule_{r.id}.pcap" in r.rule.captures, r.id
    ids = [r.id for r in engine.rules]
    assert len(ids) == len(set(ids))
    assert (REPO / "rules" / "lists" / "default.yaml").is_file()
