"""The typed form of a rule and the validator that builds it from YAML, with precise errors.

A rule (Sigma-shaped; full reference in docs/rules.md)::

    - id: modbus-write-unauthorized-master
      title: Modbus write from a host that is not an allowed master
      severity: high                      # low | medium | high | critical
      techniques: [T0855, T0836]          # ATT&CK for ICS ids
      protocol: modbus                    # or a list, or "any" (the default)
      detection:                          # named selections ...
        write: {direction: request, category: write}
        allowed: {src|list: allowed_masters}
        condition: write and not allowed  # ... combined in one condition
      threshold: {count: 5, within: 10s, group_by: [src, dst], distinct: function}
      new: {value: src, per: dst, learn: 5m}
      suppress: {for: 10m, by: [src, dst]}

Validation never stops at the first problem: every problem of a rule is reported as
``Problem(path, line, rule_id, message)``; a rule with problems is left out, the others load.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from detectors.rules import fields as F
from detectors.rules.attack import TECHNIQUE_RE, TECHNIQUES
from detectors.rules.condition import ConditionError, Node, parse_condition, selection_names
from detectors.rules.yamlpos import LineDict, LineList

SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("stable", "test", "experimental", "deprecated")
ASSET_SIDES = ("server", "client", "src", "dst")
RULE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,79}$")

# Modifiers (``field|modifier: value``), and which field kinds accept each.
NUMERIC_KINDS = (F.INT, F.FLOAT, F.PORT, F.SPAN, F.MULTI, F.ANY, F.FUNCTION)
MODIFIERS: dict[str, tuple[str, ...]] = {
    "cidr": (F.IP,),
    "list": (F.IP, F.INT, F.PORT, F.STR, F.SPAN, F.FUNCTION, F.MULTI, F.ANY),
    "range": NUMERIC_KINDS,
    "gt": NUMERIC_KINDS,
    "gte": NUMERIC_KINDS,
    "lt": NUMERIC_KINDS,
    "lte": NUMERIC_KINDS,
    "startswith": (F.STR, F.FUNCTION, F.MULTI, F.ANY),
    "endswith": (F.STR, F.FUNCTION, F.MULTI, F.ANY),
    "contains": (F.STR, F.FUNCTION, F.MULTI, F.ANY),
    "re": (F.STR, F.FUNCTION, F.MULTI, F.ANY),
    "exists": tuple({F.STR, F.INT, F.FLOAT, F.IP, F.PORT, F.SPAN, F.MULTI, F.ANY, F.FUNCTION}),
    "standard": (F.PORT,),
}
FLAGS = ("not", "all")  # combine with one operator: ``values|all|range``, ``function|not: [3, 4]``

TOP_KEYS = (
    "id",
    "title",
    "description",
    "severity",
    "techniques",
    "references",
    "enabled",
    "status",
    "tags",
    "falsepositives",
    "author",
    "protocol",
    "asset",
    "detection",
    "threshold",
    "new",
    "suppress",
    "captures",
)
REQUIRED_KEYS = ("id", "title", "severity", "techniques", "detection")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rule file or rule: printed as ``path:line: rule id: message``."""

    path: str
    line: int
    rule_id: str | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        who = f" rule {self.rule_id}:" if self.rule_id else ""
        kind = " warning:" if self.warning else ""
        return f"{where}:{kind}{who} {self.message}"


@dataclass(frozen=True)
class FieldTest:
    """One ``field|modifiers: operand`` test, normalised.

    ``op`` is eq, cidr, list, range, gt, gte, lt, lte, startswith, endswith, contains, re, exists or
    standard. ``operands`` holds the normalised operand(s): for range a tuple of (lo, hi) pairs; for
    list the list name; for exists/standard a bool.
    """

    field: str
    kind: str
    op: str
    operands: tuple[Any, ...]
    negate: bool = False
    all: bool = False
    line: int = 0


@dataclass(frozen=True)
class Selection:
    """Alternatives (a YAML list of maps: any may match), each a conjunction of tests."""

    name: str
    alternatives: tuple[tuple[FieldTest, ...], ...]
    line: int = 0


@dataclass(frozen=True)
class Threshold:
    count: int
    within: float
    group_by: tuple[str, ...] = ()
    distinct: str | None = None


@dataclass(frozen=True)
class FirstSeen:
    value: tuple[str, ...]
    per: tuple[str, ...] = ()
    learn: float | None = None  # None: the config default
    known: tuple[str, ...] = ()  # named lists whose members are never "new"


@dataclass(frozen=True)
class Suppress:
    seconds: float
    by: tuple[str, ...] | None = None  # None: the rule's grouping (threshold.group_by, else src, dst)


@dataclass
class Rule:
    id: str
    title: str
    severity: str
    techniques: tuple[str, ...]
    selections: dict[str, Selection]
    condition: Node
    condition_text: str
    description: str = ""
    references: tuple[str, ...] = ()
    enabled: bool = True
    status: str = "stable"
    tags: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    author: str = ""
    protocols: frozenset[str] | None = None  # None: any protocol
    asset: str = "server"
    threshold: Threshold | None = None
    new: FirstSeen | None = None
    suppress: Suppress | None = None
    captures: dict[str, int] = field(default_factory=dict)
    path: str = ""
    line: int = 0

    def list_names(self) -> set[str]:
        names = {t.operands[0] for s in self.selections.values() for alt in s.alternatives for t in alt if t.op == "list"}
        if self.new is not None:
            names.update(self.new.known)
        return names


def parse_duration(value: Any) -> float:
    """``30`` / ``30s`` / ``500ms`` / ``5m`` / ``2h`` / ``1d`` -> seconds; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30, 30s, 5m, 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration like 30, 30s, 5m, 1h, got {value!r}")


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _typename(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Checker:
    """Collects the problems of one rule while the typed rule is built."""

    def __init__(self, path: str, rule_id: str | None) -> None:
        self.path = path
        self.rule_id = rule_id
        self.problems: list[Problem] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, self.rule_id, message))

    def warn(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, self.rule_id, message, warning=True))

    @property
    def failed(self) -> bool:
        return any(not p.warning for p in self.problems)


def _line(container: Any, key: Any, default: int) -> int:
    if isinstance(container, (LineDict, LineList)):
        return container.line_of(key)
    return default


def _str_list(ck: _Checker, raw: Any, where: str, line: int) -> tuple[str, ...] | None:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    ck.error(line, f"{where}: expected text or a list of text, got {_typename(raw)}")
    return None


def _field_names(ck: _Checker, raw: Any, where: str, line: int, allow_empty: bool = True) -> tuple[str, ...] | None:
    names = _str_list(ck, raw, where, line)
    if names is None:
        return None
    if not names and not allow_empty:
        ck.error(line, f"{where}: name at least one field")
        return None
    ok = True
    for n in names:
        if F.field_spec(n) is None:
            ck.error(line, f"{where}: unknown field {n!r}{_suggest(n, F.FIELDS)}")
            ok = False
    return names if ok else None


# --- field tests ------------------------------------------------------------------------------


def _check_scalar(spec: F.FieldSpec, value: Any, where: str) -> Any:
    """Validate one operand of an equality test; return the normalised value or raise ValueError."""
    kind = spec.kind
    if kind in (F.INT, F.PORT, F.SPAN):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {_typename(value)} {value!r}")
        if kind == F.PORT and not 0 <= value <= 65535:
            raise ValueError(f"{where}: port {value} is out of range 0-65535")
        return value
    if kind == F.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {_typename(value)} {value!r}")
        return float(value)
    if kind == F.STR:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected text, got {_typename(value)} {value!r}")
        if spec.vocab is not None and value not in spec.vocab:
            raise ValueError(
                f"{where}: {value!r} is not one of {', '.join(spec.vocab)}{_suggest(value, spec.vocab)}"
            )
        return value
    if kind == F.IP:
        from detectors.rules.lists import parse_network

        if not isinstance(value, str):
            raise ValueError(f"{where}: expected an IP address or CIDR network, got {_typename(value)}")
        try:
            return parse_network(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an IP address or CIDR network") from None
    if kind == F.FUNCTION:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{where}: expected a function code (integer) or name (text), got {_typename(value)}")
        return value
    # MULTI and ANY: any plain value
    if isinstance(value, (list, dict)) or value is None:
        raise ValueError(f"{where}: expected a plain value, got {_typename(value)}")
    return value


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {_typename(value)} {value!r}")
    return value


def _parse_range(value: Any, where: str) -> tuple[tuple[float, float], ...]:
    """``[lo, hi]``, ``"lo-hi"`` or a list of those -> ((lo, hi), ...). Bounds are inclusive."""

    def one(v: Any) -> tuple[float, float]:
        if isinstance(v, str):
            m = re.match(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*$", v)
            if not m:
                raise ValueError(f"{where}: expected a range like [lo, hi] or 'lo-hi', got {v!r}")
            lo, hi = float(m.group(1)), float(m.group(2))
            lo_n: float = int(lo) if lo.is_integer() else lo
            hi_n: float = int(hi) if hi.is_integer() else hi
            pair = (lo_n, hi_n)
        elif isinstance(v, list) and len(v) == 2:
            pair = (_number(v[0], where), _number(v[1], where))
        else:
            raise ValueError(f"{where}: expected a range like [lo, hi] or 'lo-hi', got {v!r}")
        if pair[0] > pair[1]:
            raise ValueError(f"{where}: range {pair[0]}-{pair[1]} is empty (low bound above high bound)")
        return pair

    if isinstance(value, list) and value and all(isinstance(v, (list, str)) for v in value):
        return tuple(one(v) for v in value)
    return (one(value),)


def _parse_test(ck: _Checker, key: Any, value: Any, where: str, line: int) -> FieldTest | None:
    if not isinstance(key, str):
        ck.error(line, f"{where}: a field name must be text, got {_typename(key)} {key!r}")
        return None
    name, *mods = key.split("|")
    spec = F.field_spec(name)
    if spec is None:
        ck.error(line, f"{where}: unknown field {name!r}{_suggest(name, F.FIELDS)}")
        return None
    negate = "not" in mods
    all_ = "all" in mods
    ops = [m for m in mods if m not in FLAGS]
    for m in ops:
        if m not in MODIFIERS:
            ck.error(line, f"{where}: unknown modifier {m!r}{_suggest(m, list(MODIFIERS) + list(FLAGS))}")
            return None
    if len(ops) > 1:
        ck.error(line, f"{where}: use one of {', '.join(ops)}, not several")
        return None
    op = ops[0] if ops else "eq"
    if op != "eq" and spec.kind not in MODIFIERS[op]:
        ck.error(line, f"{where}: modifier '{op}' does not apply to {spec.kind} field {name!r}")
        return None
    if all_ and spec.kind != F.MULTI:
        ck.error(line, f"{where}: 'all' applies only to multi-valued fields (values, objects)")
        return None
    label = f"{where}.{key}"
    try:
        operands = _operands(spec, op, value, label)
    except ValueError as exc:
        ck.error(line, str(exc))
        return None
    return FieldTest(name, spec.kind, op, operands, negate, all_, line)


def _operands(spec: F.FieldSpec, op: str, value: Any, label: str) -> tuple[Any, ...]:
    kind = spec.kind
    if op == "eq":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ValueError(f"{label}: an empty list matches nothing")
        checker = spec
        if kind == F.SPAN:
            checker = F.FieldSpec(spec.name, F.INT, "")
        return tuple(_check_scalar(checker, v, label) for v in items)
    if op == "cidr":
        items = value if isinstance(value, list) else [value]
        return tuple(_check_scalar(spec, v, label) for v in items)
    if op == "list":
        if not isinstance(value, str):
            raise ValueError(f"{label}: expected the name of a list, got {_typename(value)}")
        return (value,)
    if op == "range":
        return _parse_range(value, label)
    if op in ("gt", "gte", "lt", "lte"):
        return (_number(value, label),)
    if op in ("startswith", "endswith", "contains"):
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{label}: expected text or a list of text")
        return tuple(items)
    if op == "re":
        if not isinstance(value, str):
            raise ValueError(f"{label}: expected a regular expression (text)")
        try:
            return (re.compile(value),)
        except re.error as exc:
            raise ValueError(f"{label}: bad regular expression: {exc}") from None
    if op in ("exists", "standard"):
        if not isinstance(value, bool):
            raise ValueError(f"{label}: expected true or false, got {_typename(value)}")
        return (value,)
    raise ValueError(f"{label}: unsupported modifier {op!r}")  # pragma: no cover - MODIFIERS guards


def _parse_selection(ck: _Checker, name: str, raw: Any, line: int) -> Selection | None:
    where = f"detection.{name}"
    maps = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not raw:
        ck.error(line, f"{where}: an empty list of alternatives matches nothing")
        return None
    alternatives: list[tuple[FieldTest, ...]] = []
    ok = True
    for i, m in enumerate(maps):
        mline = _line(raw, i, line) if isinstance(raw, list) else line
        if m is None:
            m = {}
        if not isinstance(m, dict):
            ck.error(mline, f"{where}: expected a mapping of field tests (or a list of them), got {_typename(m)}")
            ok = False
            continue
        tests = []
        for key, value in m.items():
            t = _parse_test(ck, key, value, where, _line(m, key, mline))
            if t is None:
                ok = False
            else:
                tests.append(t)
        alternatives.append(tuple(tests))
    return Selection(name, tuple(alternatives), line) if ok else None


# --- the rule ---------------------------------------------------------------------------------


def rule_id_of(raw: Any) -> str | None:
    if isinstance(raw, dict):
        rid = raw.get("id")
        if isinstance(rid, (str, int)):
            return str(rid)
    return None


def build_rule(raw: Any, path: str, line: int) -> tuple[Rule | None, list[Problem]]:
    """Validate one rule mapping; return (rule or None, problems). Never raises."""
    ck = _Checker(path, rule_id_of(raw))
    if not isinstance(raw, dict):
        ck.error(line, f"a rule must be a mapping of keys, got {_typename(raw)}")
        return None, ck.problems
    line = getattr(raw, "line", line)
    L = lambda key: _line(raw, key, line)

    for key in raw:
        if key not in TOP_KEYS:
            ck.error(L(key), f"unknown key {key!r}{_suggest(key, TOP_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            ck.error(line, f"missing required key {key!r}")

    rid = raw.get("id")
    if "id" in raw and (not isinstance(rid, str) or not RULE_ID_RE.match(rid)):
        ck.error(L("id"), f"id must be lower-case letters, digits, '.', '_' or '-' (3-80 chars), got {rid!r}")

    def text(key: str, required: bool = False) -> str:
        v = raw.get(key, "")
        if v is None:
            v = ""
        if not isinstance(v, str):
            ck.error(L(key), f"{key}: expected text, got {_typename(v)}")
            return ""
        if required and key in raw and not v.strip():
            ck.error(L(key), f"{key}: must not be empty")
        return v.strip()

    title = text("title", True)
    description = text("description")
    author = text("author")

    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        ck.error(L("severity"), f"severity: {severity!r} is not one of {', '.join(SEVERITIES)}{_suggest(severity, SEVERITIES)}")

    status = raw.get("status", "stable")
    if status not in STATUSES:
        ck.error(L("status"), f"status: {status!r} is not one of {', '.join(STATUSES)}")

    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        ck.error(L("enabled"), f"enabled: expected true or false, got {_typename(enabled)}")
        enabled = True

    techniques: tuple[str, ...] = ()
    if "techniques" in raw:
        tl = _str_list(ck, raw["techniques"], "techniques", L("techniques")) or ()
        if not tl:
            ck.error(L("techniques"), "techniques: name at least one ATT&CK for ICS technique (T0xxx)")
        for t in tl:
            if not TECHNIQUE_RE.match(t):
                ck.error(L("techniques"), f"techniques: {t!r} is not an ATT&CK for ICS technique id (T0 and 3 digits)")
            elif t not in TECHNIQUES:
                ck.error(L("techniques"), f"techniques: {t!r} is not in the ATT&CK for ICS catalogue")
        techniques = tuple(tl)

    references = _str_list(ck, raw.get("references", []), "references", L("references")) or ()
    tags = _str_list(ck, raw.get("tags", []), "tags", L("tags")) or ()
    falsepositives = _str_list(ck, raw.get("falsepositives", []), "falsepositives", L("falsepositives")) or ()

    protocols: frozenset[str] | None = None
    if "protocol" in raw:
        pl = _str_list(ck, raw["protocol"], "protocol", L("protocol"))
        if pl is not None and "any" not in pl:
            protocols = frozenset(pl)

    asset = raw.get("asset", "server")
    if asset not in ASSET_SIDES:
        ck.error(L("asset"), f"asset: {asset!r} is not one of {', '.join(ASSET_SIDES)}")

    # detection: selections + condition
    selections: dict[str, Selection] = {}
    condition: Node | None = None
    condition_text = ""
    det = raw.get("detection")
    if "detection" in raw:
        dline = L("detection")
        if not isinstance(det, dict) or not det:
            ck.error(dline, f"detection: expected a mapping of named selections and a condition, got {_typename(det)}")
        else:
            for name, body in det.items():
                if name == "condition":
                    continue
                if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                    ck.error(_line(det, name, dline), f"detection: selection name {name!r} must be an identifier")
                    continue
                if name in ("and", "or", "not", "of", "them", "all", "any"):
                    ck.error(_line(det, name, dline), f"detection: {name!r} is a condition keyword, not a selection name")
                    continue
                sel = _parse_selection(ck, name, body, _line(det, name, dline))
                if sel is not None:
                    selections[name] = sel
            names = [n for n in det if n != "condition"]
            cond_raw = det.get("condition")
            cline = _line(det, "condition", dline)
            if cond_raw is None:
                if len(names) == 1:
                    cond_raw = str(names[0])
                else:
                    ck.error(dline, "detection: a condition is needed when there are several selections")
            elif not isinstance(cond_raw, str):
                ck.error(cline, f"detection.condition: expected text, got {_typename(cond_raw)}")
                cond_raw = None
            if isinstance(cond_raw, str):
                condition_text = cond_raw.strip()
                try:
                    condition = parse_condition(condition_text, [str(n) for n in names])
                except ConditionError as exc:
                    ck.error(cline, f"detection.condition: {exc}")
                else:
                    unused = [n for n in names if n not in selection_names(condition, [str(x) for x in names])]
                    for n in unused:
                        ck.warn(_line(det, n, dline), f"detection.{n}: selection is not used by the condition")

    threshold = _parse_threshold(ck, raw, L)
    new = _parse_new(ck, raw, L)
    suppress = _parse_suppress(ck, raw, L)

    captures: dict[str, int] = {}
    if "captures" in raw:
        cap = raw["captures"]
        if not isinstance(cap, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in cap.items()
        ):
            ck.error(L("captures"), "captures: expected a mapping of capture path to expected alert count (>= 0)")
        else:
            captures = dict(cap)

    if ck.failed or condition is None:
        return None, ck.problems
    rule = Rule(
        id=str(rid),
        title=title,
        severity=str(severity),
        techniques=techniques,
        selections=selections,
        condition=condition,
        condition_text=condition_text,
        description=description,
        references=tuple(references),
        enabled=enabled,
        status=str(status),
        tags=tuple(tags),
        falsepositives=tuple(falsepositives),
        author=author,
        protocols=protocols,
        asset=str(asset),
        threshold=threshold,
        new=new,
        suppress=suppress,
        captures=captures,
        path=path,
        line=line,
    )
    return rule, ck.problems


def _mapping(ck: _Checker, raw: Any, key: str, L: Any, allowed: tuple[str, ...]) -> dict | None:
    if key not in raw:
        return None
    body = raw[key]
    if not isinstance(body, dict):
        ck.error(L(key), f"{key}: expected a mapping, got {_typename(body)}")
        return None
    for k in body:
        if k not in allowed:
            ck.error(_line(body, k, L(key)), f"{key}: unknown key {k!r}{_suggest(k, allowed)}")
    return body


def _parse_threshold(ck: _Checker, raw: Any, L: Any) -> Threshold | None:
    body = _mapping(ck, raw, "threshold", L, ("count", "within", "group_by", "distinct"))
    if body is None:
        return None
    line = L("threshold")
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        ck.error(_line(body, "count", line), f"threshold.count: expected an integer >= 1, got {count!r}")
        count = None
    within: float | None = None
    if "within" not in body:
        ck.error(line, "threshold: missing 'within' (the window, e.g. 60s)")
    else:
        try:
            within = parse_duration(body["within"])
            if within <= 0:
                raise ValueError("the window must be longer than 0 seconds")
        except ValueError as exc:
            ck.error(_line(body, "within", line), f"threshold.within: {exc}")
            within = None
    group_by = _field_names(ck, body.get("group_by", []), "threshold.group_by", _line(body, "group_by", line))
    distinct = None
    if body.get("distinct") is not None:
        d = _field_names(ck, body["distinct"], "threshold.distinct", _line(body, "distinct", line), allow_empty=False)
        if d is not None:
            if len(d) != 1:
                ck.error(_line(body, "distinct", line), "threshold.distinct: name one field")
            else:
                distinct = d[0]
    if count is None or within is None or group_by is None:
        return None
    return Threshold(count, within, group_by, distinct)


def _parse_new(ck: _Checker, raw: Any, L: Any) -> FirstSeen | None:
    body = _mapping(ck, raw, "new", L, ("value", "per", "learn", "known"))
    if body is None:
        return None
    line = L("new")
    value = None
    if "value" not in body:
        ck.error(line, "new: missing 'value' (the field(s) whose value must be new, e.g. src)")
    else:
        value = _field_names(ck, body["value"], "new.value", _line(body, "value", line), allow_empty=False)
    per = _field_names(ck, body.get("per", []), "new.per", _line(body, "per", line))
    learn = None
    if body.get("learn") is not None:
        try:
            learn = parse_duration(body["learn"])
        except ValueError as exc:
            ck.error(_line(body, "learn", line), f"new.learn: {exc}")
    known = _str_list(ck, body.get("known", []), "new.known", _line(body, "known", line))
    if known and value is not None and len(value) != 1:
        ck.error(_line(body, "known", line), "new.known: lists can only seed a single value field")
    if value is None or per is None or known is None:
        return None
    return FirstSeen(value, per, learn, known)


def _parse_suppress(ck: _Checker, raw: Any, L: Any) -> Suppress | None:
    body = _mapping(ck, raw, "suppress", L, ("for", "by"))
    if body is None:
        return None
    line = L("suppress")
    seconds = 0.0
    if "for" not in body:
        ck.error(line, "suppress: missing 'for' (how long, e.g. 10m; 0 to never suppress)")
    else:
        try:
            seconds = parse_duration(body["for"])
        except ValueError as exc:
            ck.error(_line(body, "for", line), f"suppress.for: {exc}")
    by = None
    if "by" in body:
        by = _field_names(ck, body["by"], "suppress.by", _line(body, "by", line))
    return Suppress(seconds, by)
