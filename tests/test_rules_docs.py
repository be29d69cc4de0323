"""Every example in docs/rules.md is loaded: ``yaml`` blocks must load cleanly and compile,
``yaml broken`` blocks must be refused with the message quoted under them."""

from __future__ import annotations

import re

from rules_testutil import LISTS, REPO, T0, ev

from detectors.rules import NamedLists, RuleEngine, load_text

DOC = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```(yaml(?: broken)?)\n(.*?)```\n(?:\n> `([^`]*)`)?", re.DOTALL)


def blocks() -> list[tuple[str, str, str | None]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(DOC)]


def test_the_doc_has_examples_of_every_kind() -> None:
    kinds = [k for k, _, _ in blocks()]
    assert kinds.count("yaml") >= 8 and kinds.count("yaml broken") >= 4
    for keyword in ("threshold:", "new:", "suppress:", "|list", "|range", "|all", "condition:", "captures:"):
        assert any(keyword in body for k, body, _ in blocks() if k == "yaml"), keyword


def test_good_examples_load_and_compile() -> None:
    for kind, body, _ in blocks():
        if kind != "yaml":
            continue
        rules, problems = load_text(body, "docs/rules.md")
        assert not problems, [str(p) for p in problems]
        engine = RuleEngine(rules, NamedLists(LISTS))
        assert not engine.problems, [str(p) for p in engine.problems]
        assert engine.rules
        engine.observe(ev(ts=T0))  # and they run


def test_broken_examples_fail_with_the_documented_message() -> None:
    for kind, body, message in blocks():
        if kind != "yaml broken":
            continue
        assert message, f"a broken example needs its error quoted under it:\n{body}"
        rules, problems = load_text(body, "docs/rules.md")
        engine = RuleEngine(rules, NamedLists(LISTS))
        if not problems:
            problems = engine.problems
        missing = [n for r in rules for n in r.list_names() if n not in LISTS]
        texts = [str(p) for p in problems] + [f"unknown list {n!r}" for n in missing]
        assert any(message in t for t in texts), (message, texts)
