"""Load rule files: YAML with line numbers -> validated Rules, collecting every problem.

A rule file is a YAML mapping ``rules: [...]`` (or just the list). Folders are read for ``*.yaml``
and ``*.yml`` (not recursively, in name order). Nothing here raises for a bad rule: each problem
becomes a ``Problem`` (``path:line: rule id: message``) in the returned ``RuleSet`` and the other
rules load. A YAML syntax error is retried rule by rule, so only the broken rule is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from detectors.rules import yamlpos
from detectors.rules.lists import NamedLists
from detectors.rules.schema import Problem, Rule, build_rule, rule_id_of


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    def by_id(self, rule_id: str) -> Rule | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None


def rule_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(x for x in path.iterdir() if x.is_file() and x.suffix in (".yaml", ".yml"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, None, "no such rule file or folder"))
    return files, problems


def load_text(text: str, path: str = "<text>") -> tuple[list[Rule], list[Problem]]:
    """Load the rules of one file's text."""
    try:
        data = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        return _recover(text, path, exc)
    return _rules_from(data, path, 0)


def _rules_from(data: object, path: str, line_offset: int) -> tuple[list[Rule], list[Problem]]:
    if data is None:
        return [], [Problem(path, 1 + line_offset, None, "empty rule file", warning=True)]
    items = data
    if isinstance(data, dict):
        extra = [k for k in data if k != "rules"]
        if "rules" not in data or extra:
            line = data.line_of(extra[0]) if extra and isinstance(data, yamlpos.LineDict) else getattr(data, "line", 1)
            what = f"unknown top-level key {extra[0]!r}" if extra else "no 'rules:' list"
            return [], [Problem(path, line, None, f"{what}: a rule file is `rules: [...]` (or a list of rules)")]
        items = data["rules"]
    if not isinstance(items, list):
        return [], [Problem(path, getattr(data, "line", 1), None, "'rules' must be a list of rules")]
    rules: list[Rule] = []
    problems: list[Problem] = []
    for i, raw in enumerate(items):
        line = items.line_of(i) if isinstance(items, yamlpos.LineList) else 0
        rule, probs = build_rule(raw, path, line)
        problems.extend(probs)
        if rule is not None:
            rules.append(rule)
    return rules, problems


def _recover(text: str, path: str, exc: yamlpos.YamlSyntaxError) -> tuple[list[Rule], list[Problem]]:
    """A syntax error: report it against the rule that holds it, load every other rule alone."""
    chunks = yamlpos.split_rule_chunks(text)
    if not chunks:
        return [], [Problem(path, exc.line, None, f"invalid YAML: {exc.message}")]
    rules: list[Rule] = []
    problems: list[Problem] = []
    for first_line, chunk in chunks:
        try:
            data = yamlpos.load(chunk, line_offset=first_line - 1)
        except yamlpos.YamlSyntaxError as err:
            rid = _guess_id(chunk)
            problems.append(Problem(path, err.line, rid, f"invalid YAML: {err.message} (this rule is skipped)"))
            continue
        r, p = _rules_from(data, path, first_line - 1)
        rules.extend(r)
        problems.extend(p)
    if not any(not p.warning for p in problems):  # the error was outside every rule (e.g. the header)
        problems.append(Problem(path, exc.line, None, f"invalid YAML: {exc.message}"))
    return rules, problems


def _guess_id(chunk: str) -> str | None:
    for line in chunk.splitlines():
        s = line.strip().lstrip("-").strip()
        if s.startswith("id:"):
            return s[3:].strip().strip("'\"") or None
    return None


def load_rules(paths: Iterable[str | Path], lists: NamedLists | None = None) -> RuleSet:
    """Load every rule file under ``paths``; check list references when ``lists`` is given."""
    files, problems = rule_files(paths)
    out = RuleSet(problems=list(problems), files=[str(f) for f in files])
    seen: dict[str, Rule] = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.problems.append(Problem(str(f), 0, None, f"cannot read: {exc}"))
            continue
        rules, probs = load_text(text, str(f))
        out.problems.extend(probs)
        for r in rules:
            if r.id in seen:
                first = seen[r.id]
                out.problems.append(Problem(str(f), r.line, r.id, f"duplicate rule id (first defined at {first.path}:{first.line})"))
                continue
            if lists is not None:
                missing = sorted(n for n in r.list_names() if n not in lists)
                if missing:
                    known = ", ".join(lists.names()) or "none defined"
                    out.problems.append(
                        Problem(str(f), _list_line(r, missing[0]), r.id, f"unknown list {missing[0]!r} (lists: {known})")
                    )
                    continue
            seen[r.id] = r
            out.rules.append(r)
    return out


def _list_line(rule: Rule, name: str) -> int:
    for sel in rule.selections.values():
        for alt in sel.alternatives:
            for t in alt:
                if t.op == "list" and t.operands[0] == name:
                    return t.line
    return rule.line


__all__ = ["RuleSet", "load_rules", "load_text", "rule_files", "rule_id_of"]
