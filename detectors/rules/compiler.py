"""Compile a typed rule into one Python function per rule: matching is then pure comparison.

Why generate code: a rule is a handful of comparisons, and the per-event budget is a few
microseconds for the whole rule set. Closures cost a call per test; one generated function per rule
(``def match(e): return e.direction == 'request' and e.category == 'write' and not M[e.src]``) costs
one call per rule and runs at the speed of hand-written Python. Only names from the field table
(fields.py) and generated variable names appear in the source text: every operand taken from a rule
file is bound as a constant in the function's namespace, never pasted into the source.

The compiler also works out, from the condition, which protocols / directions / categories an event
must have to possibly match (``Compiled.index``): the engine files each rule under those keys, so a
Modbus read response never meets a rule about write requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.rules import fields as F
from detectors.rules.lists import IpMatcher, ListError, NamedLists
from detectors.rules.schema import FieldTest, Rule, Selection
from detectors.rules.state import EVIDENCE_TAIL

_INF = float("inf")
_NUM_TYPES = frozenset({int, float, bool})
_NO_FIELDS: dict[str, Any] = {}  # ``(e.fields or _E)``: shared by every rule, never written
_GEN_IDS = itertools.count(1)
INDEXED_FIELDS = ("protocol", "direction", "category", "function", "result")
# What one event *signature* fixes (sensor.events.signature_of: flow, sender address and port, protocol,
# direction, category, function code and name, unit, result). A flow's endpoints, transport and MACs are set
# when the flow starts, so the sender fixes the receiver too. Every event of a signature reads the same here.
SIGNATURE_FIELDS = frozenset(
    INDEXED_FIELDS
    + ("function_name", "unit", "transport", "src", "dst", "sport", "dport", "client", "server", "server_port",
       "src_mac", "dst_mac", "flow_id")
)


class CompileError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _AnyPort:
    """Stands for the port set of a protocol the registry does not know: every port is standard."""

    def __contains__(self, item: object) -> bool:
        return True


_ANY_PORT = _AnyPort()


class _PortsByTransport(dict):
    """transport -> the registered ports of one protocol (``_ANY_PORT`` when it registers none)."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.spec = spec

    def __missing__(self, transport: str) -> Any:
        ports: Any = None
        if self.spec is not None:
            ports = self.spec.tcp_ports if transport == "tcp" else self.spec.udp_ports if transport == "udp" else None
        ports = ports or _ANY_PORT
        self[transport] = ports
        return ports


class StandardPorts(dict):
    """``STANDARD_PORTS[protocol][transport]``: the ports the sensor's registry gives the protocol.

    Two dict lookups and no allocation per event; filled on first use. A protocol the registry does
    not know (or a transport it registers no port for) has every port standard: no alert.
    """

    def __missing__(self, protocol: str) -> _PortsByTransport:
        try:
            from sensor.protocols import registry

            spec = registry().specs.get(protocol)
        except Exception:  # noqa: BLE001 - the registry failing must not take the rules down
            spec = None
        table = _PortsByTransport(spec)
        self[protocol] = table
        return table


STANDARD_PORTS = StandardPorts()

KeyFn = Callable[[Any], Any]


@dataclass
class Compiled:
    match: Callable[[Any], bool] | None  # what is left once the index bucket matched (None: nothing)
    source: str  # the generated source of ``match`` (``icswatch rules list --verbose`` shows it)
    index: dict[str, frozenset[Any] | None]  # field -> values an event must have (None: any)
    group_key: KeyFn | None = None  # threshold.group_by
    distinct_key: KeyFn | None = None  # threshold.distinct
    new_value: KeyFn | None = None
    new_per: KeyFn | None = None
    new_known: Callable[[Any], bool] | None = None
    suppress_key: KeyFn | None = None
    asset: KeyFn | None = None
    full_match: Callable[[Any], bool] | None = None  # the whole condition, for any event
    residual: str = "True"  # the expression of ``match``
    gen: Any = None  # the generator (namespace and field readers) ``build_step`` continues with
    # The condition reads only SIGNATURE_FIELDS: it has the same outcome for every event of a signature.
    signature_match: bool = False
    # ... and so do the first-seen value and key (``new``): once its value is remembered, it stays known.
    signature_new: bool = False
    # ... and so do a distinct threshold's group and value: a signature's later events only refresh the
    # time its value was last seen (they can never add a value of their own).
    signature_distinct: bool = False


class _Gen:
    """Generates one rule's code. With ``index`` (what the engine's bucket guarantees about every event
    it hands this rule), tests the bucket already decided become ``True`` and fold away."""

    def __init__(self, rule: Rule, lists: NamedLists, index: dict[str, frozenset[Any] | None] | None = None) -> None:
        self.rule = rule
        self.lists = lists
        self.index = index or {}
        self.ns: dict[str, Any] = {"_E": _NO_FIELDS, "_NUMT": _NUM_TYPES, "_STD": STANDARD_PORTS}
        self.n = 0
        # Generated names are unique across every generator of the process, so the engine can merge the
        # namespaces of several rules and inline their code into one function (build_bucket).
        self.prefix = f"_r{next(_GEN_IDS)}"

    def const(self, obj: Any) -> str:
        self.n += 1
        name = f"{self.prefix}c{self.n}"
        self.ns[name] = obj
        return name

    def var(self) -> str:
        self.n += 1
        return f"{self.prefix}v{self.n}"

    # -- reading fields -----------------------------------------------------------------------
    def accessor(self, name: str) -> str:
        spec = F.field_spec(name)
        assert spec is not None
        if spec.kind == F.ANY:
            return f"(e.fields or _E).get({self.const(name[len(F.FIELD_PREFIX):])})"
        directions = self.index.get("direction")
        if name in _BY_DIRECTION and directions is not None:
            # The bucket fixes the direction: read the side directly instead of testing it per event.
            request = directions == frozenset({"request"})
            if request or "request" not in directions:
                return _BY_DIRECTION[name][0 if request else 1]
        return spec.source

    def implied(self, t: FieldTest) -> bool:
        """True when every event the bucket hands this rule passes ``t`` (an equality on an indexed field)."""
        if t.op != "eq" or t.negate or t.field not in INDEXED_FIELDS:
            return False
        known = self.index.get(t.field)
        if known is None:
            return False
        if t.field == "function":
            return known <= frozenset(v for v in t.operands if type(v) is int)
        return known <= frozenset(str(v) for v in t.operands)

    def key_fn(self, names: tuple[str, ...], single: bool = True) -> KeyFn:
        """A function reading ``names`` off an event: the value itself for one name, else a tuple."""
        if single and len(names) == 1:
            body = self.accessor(names[0])
        else:
            body = "(" + "".join(self.accessor(n) + ", " for n in names) + ")"
        return self._function(f"def _key(e):\n    return {body}\n", "_key")

    def _function(self, src: str, name: str) -> Any:
        code = compile(src, f"<rule {self.rule.id}>", "exec")
        exec(code, self.ns)  # noqa: S102 - source built from the field table and generated names only
        return self.ns[name]

    # -- one test -----------------------------------------------------------------------------
    def test(self, t: FieldTest) -> str:
        if self.implied(t):
            return "True"
        if t.negate and t.op == "eq" and len(t.operands) == 1 and t.kind in (F.STR, F.INT, F.PORT, F.FLOAT):
            return f"({self.accessor(t.field)} != {self.const(t.operands[0])})"
        if t.kind == F.MULTI and t.op != "exists":
            core = self._multi(t)
        else:
            core = self._scalar(t, self.accessor(t.field), t.kind)
        return f"(not {core})" if t.negate else core

    def _multi(self, t: FieldTest) -> str:
        v = self.var()
        x = self.accessor(t.field)
        if t.op == "eq" and not t.all:
            return f"(({v} := {x}) is not None and not {self.const(frozenset(t.operands))}.isdisjoint({v}))"
        elem = self._scalar(t, "_w", F.ANY)
        if t.all:
            return f"(bool({v} := {x}) and all({elem} for _w in {v}))"
        return f"(({v} := {x}) is not None and any({elem} for _w in {v}))"

    def _list_values(self, t: FieldTest) -> tuple[Any, ...]:
        name = t.operands[0]
        if name not in self.lists:
            known = ", ".join(self.lists.names()) or "none defined"
            raise CompileError(t.line, f"{t.field}|list: unknown list {name!r} (lists: {known})")
        return tuple(self.lists.lists[name])

    def _ints(self, t: FieldTest, values: tuple[Any, ...]) -> tuple[int, ...]:
        out = []
        for v in values:
            if isinstance(v, bool):
                raise CompileError(t.line, f"{t.field}|list: list {t.operands[0]!r} holds {v!r}, not an integer")
            if isinstance(v, int):
                out.append(v)
            elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
                out.append(int(v, 0) if v.strip().lower().startswith("0x") else int(v))
            else:
                raise CompileError(t.line, f"{t.field}|list: list {t.operands[0]!r} holds {v!r}, not an integer")
        return tuple(out)

    def _scalar(self, t: FieldTest, x: str, kind: str) -> str:
        op = t.op
        if op == "exists":
            return f"({x} is not None)" if t.operands[0] else f"({x} is None)"
        if kind == F.SPAN:
            return self._span(t)
        if kind == F.IP:
            if op == "list":
                self._list_values(t)
                try:
                    matcher = self.lists.ip_matcher(t.operands[0])
                except ListError as exc:
                    raise CompileError(t.line, str(exc)) from None
            else:  # eq / cidr: operands are networks
                matcher = IpMatcher(t.operands)
            return f"{self.const(matcher)}[{x}]"
        if kind == F.FUNCTION:
            return self._function_test(t)
        if op == "eq" or op == "list":
            values = t.operands if op == "eq" else self._list_values(t)
            if op == "list" and kind in (F.INT, F.PORT):
                values = self._ints(t, values)
            if len(values) == 1:
                return f"({x} == {self.const(values[0])})"
            return f"({x} in {self.const(frozenset(values))})"
        v = self.var()
        guard = f"({v} := {x}) is not None"
        if kind in (F.ANY, F.MULTI):
            numeric_guard = f"({v} := {x}).__class__ in _NUMT"
            text_guard = f"({v} := {x}).__class__ is str"
        else:
            numeric_guard = text_guard = guard
        if op == "range":
            parts = [f"{self.const(lo)} <= {v} <= {self.const(hi)}" for lo, hi in t.operands]
            return f"({numeric_guard} and ({' or '.join(parts)}))"
        if op in ("gt", "gte", "lt", "lte"):
            sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            return f"({numeric_guard} and {v} {sym} {self.const(t.operands[0])})"
        if op == "startswith":
            return f"({text_guard} and {v}.startswith({self.const(tuple(t.operands))}))"
        if op == "endswith":
            return f"({text_guard} and {v}.endswith({self.const(tuple(t.operands))}))"
        if op == "contains":
            parts = [f"{self.const(s)} in {v}" for s in t.operands]
            return f"({text_guard} and ({' or '.join(parts)}))"
        if op == "re":
            return f"({text_guard} and {self.const(t.operands[0])}.search({v}) is not None)"
        if op == "standard":
            core = f"({x} in _STD[e.protocol][e.transport])"
            return core if t.operands[0] else f"(not {core})"
        raise CompileError(t.line, f"{t.field}: modifier {op!r} is not supported here")  # pragma: no cover

    def _function_test(self, t: FieldTest) -> str:
        op = t.op
        if op in ("eq", "list"):
            values = t.operands if op == "eq" else self._list_values(t)
            codes = frozenset(v for v in values if isinstance(v, int) and not isinstance(v, bool))
            names = frozenset(str(v) for v in values if isinstance(v, str) and not str(v).isdigit())
            codes |= frozenset(int(v) for v in values if isinstance(v, str) and str(v).isdigit())
            parts = []
            if codes:
                parts.append(
                    f"e.function == {self.const(next(iter(codes)))}"
                    if len(codes) == 1
                    else f"e.function in {self.const(codes)}"
                )
            if names:
                parts.append(
                    f"e.function_name == {self.const(next(iter(names)))}"
                    if len(names) == 1
                    else f"e.function_name in {self.const(names)}"
                )
            return "(" + " or ".join(parts) + ")"
        if op in ("startswith", "endswith", "contains", "re"):
            return self._scalar(t, "e.function_name", F.STR)
        return self._scalar(t, "e.function", F.INT)

    def _span(self, t: FieldTest) -> str:
        op = t.op
        if op == "eq":
            intervals = [(v, v) for v in t.operands]
        elif op == "list":
            intervals = [(v, v) for v in self._ints(t, self._list_values(t))]
        elif op == "range":
            intervals = list(t.operands)
        elif op == "gt":
            intervals = [(t.operands[0] + 1 if isinstance(t.operands[0], int) else t.operands[0], _INF)]
        elif op == "gte":
            intervals = [(t.operands[0], _INF)]
        elif op == "lt":
            intervals = [(-_INF, t.operands[0] - 1 if isinstance(t.operands[0], int) else t.operands[0])]
        elif op == "lte":
            intervals = [(-_INF, t.operands[0])]
        else:  # pragma: no cover - the schema refuses other modifiers on address
            raise CompileError(t.line, f"address: modifier {op!r} is not supported")
        a, last = self.var(), self.var()
        parts = [f"{last} >= {self.const(lo)} and {a} <= {self.const(hi)}" for lo, hi in intervals]
        return (
            f"(({a} := e.address) is not None and (({last} := {a} + ((e.quantity or 1) - 1)) is not None)"
            f" and ({' or '.join(parts)}))"
        )

    # -- selections and the condition -------------------------------------------------------
    def selection(self, sel: Selection) -> str:
        return _or([_and([self.test(t) for t in alt]) for alt in sel.alternatives])

    def condition(self, node: Any) -> str:
        kind = node[0]
        if kind == "sel":
            return self.selection(self.rule.selections[node[1]])
        if kind == "not":
            inner = self.condition(node[1])
            return {"True": "False", "False": "True"}.get(inner, f"(not {inner})")
        parts = [self.condition(c) for c in node[1]]
        return _and(parts) if kind == "and" else _or(parts)


# Fields whose reading depends on the direction: (when requests only, when responses only).
_BY_DIRECTION = {
    "client": ("e.src", "e.dst"),
    "server": ("e.dst", "e.src"),
    "server_port": ("e.dport", "e.sport"),
}


def _and(parts: list[str]) -> str:
    """Join with ``and``, folding the constants left by implied tests."""
    if "False" in parts:
        return "False"
    parts = [p for p in parts if p != "True"]
    if not parts:
        return "True"
    return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"


def _or(parts: list[str]) -> str:
    if "True" in parts:
        return "True"
    parts = [p for p in parts if p != "False"]
    if not parts:
        return "False"
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def _necessary(rule: Rule, node: Any, field: str) -> frozenset[Any] | None:
    """Values ``field`` must take for ``node`` to be true (None: no constraint found)."""
    kind = node[0]
    if kind == "sel":
        sel = rule.selections[node[1]]
        out: set[Any] = set()
        for alt in sel.alternatives:
            vals: frozenset[Any] | None = None
            for t in alt:
                if t.field == field and t.op == "eq" and not t.negate:
                    if field == "function" and not all(type(v) is int for v in t.operands):
                        continue  # names are compared with function_name: no constraint on the code
                    s = frozenset(t.operands) if field == "function" else frozenset(str(v) for v in t.operands)
                    vals = s if vals is None else vals & s
            if vals is None:
                return None
            out |= vals
        return frozenset(out)
    if kind == "not":
        return None
    subs = [_necessary(rule, c, field) for c in node[1]]
    if kind == "and":
        known = [s for s in subs if s is not None]
        if not known:
            return None
        acc = known[0]
        for s in known[1:]:
            acc = acc & s
        return acc
    if any(s is None for s in subs):
        return None
    acc = frozenset()
    for s in subs:
        acc = acc | s  # type: ignore[operator]
    return acc


def condition_fields(rule: Rule) -> frozenset[str]:
    """Every field the rule's selections test (all of them, used by the condition or not)."""
    return frozenset(t.field for sel in rule.selections.values() for alt in sel.alternatives for t in alt)


def compile_rule(rule: Rule, lists: NamedLists) -> Compiled:
    """Compile a validated rule; raise CompileError (with the line) for what only shows here.

    Two functions come out: ``full_match`` tests everything (tools, tests, any event), ``match``
    only what the engine's index bucket does not already guarantee (None when nothing is left).
    """
    index: dict[str, frozenset[Any] | None] = {f: _necessary(rule, rule.condition, f) for f in INDEXED_FIELDS}
    if rule.protocols is not None:
        p = index["protocol"]
        index["protocol"] = rule.protocols if p is None else p & rule.protocols
    full = _Gen(rule, lists)
    expr = full.condition(rule.condition)
    if rule.protocols is not None:
        expr = _and([f"e.protocol in {full.const(rule.protocols)}", expr])
    full_src = f"def _match(e):\n    return {expr}\n"
    full_match = full._function(full_src, "_match")
    gen = _Gen(rule, lists, index)
    residual = gen.condition(rule.condition)
    if residual == "True":
        match, src = None, f"# every event of the index bucket matches\n{full_src}"
    else:
        src = f"def _match(e):\n    return {residual}\n"
        match = gen._function(src, "_match")
    out = Compiled(match=match, source=src, index=index, full_match=full_match, residual=residual, gen=gen)
    out.signature_match = condition_fields(rule) <= SIGNATURE_FIELDS
    if rule.new is not None:
        out.signature_new = out.signature_match and frozenset(rule.new.value + rule.new.per) <= SIGNATURE_FIELDS
    th = rule.threshold
    if th is not None and th.distinct and rule.new is None:
        out.signature_distinct = out.signature_match and frozenset((*th.group_by, th.distinct)) <= SIGNATURE_FIELDS
    if th is not None:
        out.group_key = gen.key_fn(th.group_by)
        if th.distinct:
            out.distinct_key = gen.key_fn((th.distinct,))
    nw = rule.new
    if nw is not None:
        out.new_value = gen.key_fn(nw.value)
        out.new_per = gen.key_fn(nw.per)
        if nw.known:
            out.new_known = _known_check(rule, nw.value[0], nw.known, lists)
    by = rule.suppress.by if rule.suppress is not None and rule.suppress.by is not None else None
    if by is None:
        by = th.group_by if th is not None and th.group_by else ("src", "dst")
    out.suppress_key = gen.key_fn(by)
    side = {"server": "server", "client": "client", "src": "src", "dst": "dst"}[rule.asset]
    out.asset = gen.key_fn((side,))
    return out


def _key_source(gen: _Gen, names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return gen.accessor(names[0])
    return "(" + "".join(gen.accessor(n) + ", " for n in names) + ")"


def _rule_block(
    compiled: Compiled,
    rule: Rule,
    threshold: Any | None,
    first_seen: Any | None,
    finish: Callable[[Any, tuple[Any, ...]], Any],
    fire: Callable[[str], list[str]],
    indent: int,
) -> list[str]:
    """The lines that run one rule on the event ``e``: residual condition, first-seen and threshold
    fast paths inlined, then ``fire(call)`` with ``call`` the source of ``finish(event, evidence)``
    (suppression, alert). No early ``return``: each stage nests under the one before, so the same
    block is the body of a rule's own function (``build_step``) and one section of a bucket's fused
    function (``build_bucket``). Locals (``_v``, ``_k``, ...) are reassigned before every use."""
    gen: _Gen = compiled.gen
    c = gen.const
    out: list[str] = []
    pad = "    " * indent

    def line(text: str) -> None:
        out.append(pad + text)

    if compiled.residual != "True":
        line(f"if {compiled.residual}:")
        pad += "    "
    if first_seen is not None:
        nw = rule.new
        assert nw is not None
        line(f"_v = {_key_source(gen, nw.value)}")
        known = f" and not {c(first_seen.known)}(_v)" if first_seen.known is not None else ""
        line(f"if _v is not None{known}:")
        pad += "    "
        line(f"_a = {_key_source(gen, nw.per) if nw.per else '()'}")
        line(f"_s = {c(first_seen.seen)}.get(_a)")
        line(f"if (_s is None or _v not in _s) and {c(first_seen.slow)}(e, _v, _a):")
        pad += "    "
    if threshold is None:
        out.extend(pad + x for x in fire(f"{c(finish)}(e, (e,))"))
        return out
    th = rule.threshold
    assert th is not None
    line(f"_k = {_key_source(gen, th.group_by) if th.group_by else '()'}")
    line(f"_g = {c(threshold.groups)}.get(_k)")
    far = th.count - EVIDENCE_TAIL  # below this many times, no event is kept: only its time
    if th.distinct:
        # a distinct value seen again in the window: only its time moves
        line(f"if _g is not None and (_d := {gen.accessor(th.distinct)}) in _g:")
        line("    _g[_d] = e.ts")
        line("else:")
        pad += "    "
    elif far > 0:
        line(f"if _g is not None and len(_g) < {c(far)} and e.ts >= _g[-1] - 1.0:")
        line("    _g.append(e.ts)")
        line("else:")
        pad += "    "
    line(f"_ev = {c(threshold.slow)}(e, _k)")
    line("if _ev is not None:")
    out.extend(pad + "    " + x for x in fire(f"{c(finish)}(e, _ev)"))
    return out


def build_step(
    compiled: Compiled,
    rule: Rule,
    threshold: Any | None,
    first_seen: Any | None,
    finish: Callable[[Any, tuple[Any, ...]], Any],
) -> Callable[[Any], Any]:
    """Generate the rule's per-event function (the alert or None): ``_rule_block`` as a function body.

    The fast paths handle the common cases with plain dict operations (a known value, a distinct
    value seen again, a group below its count); everything else goes to the state objects' ``slow``
    methods (state.py). The state's dicts are bound once: they are only ever mutated, never replaced.
    """
    body = _rule_block(compiled, rule, threshold, first_seen, finish, lambda call: [f"return {call}"], 1)
    src = "def _step(e):\n" + "\n".join(body) + "\n    return None\n"
    step = compiled.gen._function(src, "_step")
    step.source = src  # type: ignore[attr-defined]
    return step


def bucket_block(
    compiled: Compiled,
    rule: Rule,
    threshold: Any | None,
    first_seen: Any | None,
    finish: Callable[[Any, tuple[Any, ...]], Any],
) -> list[str]:
    """The rule's section of a fused bucket function (``build_bucket``), unindented: an alert is
    appended to ``_out`` (created on the first one)."""

    def into_out(call: str) -> list[str]:
        return [f"_x = {call}", "if _x is not None:", "    if _out is None:", "        _out = [_x]", "    else:", "        _out.append(_x)"]

    return _rule_block(compiled, rule, threshold, first_seen, finish, into_out, 0)


def build_bucket(rules: Sequence[Any], failed: Callable[[Any, Any], None]) -> Callable[[Any], list[Any] | None]:
    """One function that runs every rule of an index bucket on an event, in order: the rules' blocks
    inlined one after the other (no call or loop per rule), each in its own ``try`` (free in CPython
    3.11+ until something raises) so a rule that raises is reported with ``failed(rule.step, event)``
    and the rules after it still run. Returns the alerts, or None.

    ``rules`` are ``CompiledRule``s (``compiled``, ``rule``, ``block``, ``step``); their generators'
    names are unique process-wide (``_Gen.prefix``), so their namespaces merge without clashes."""
    ns: dict[str, Any] = {"_failed": failed}
    lines = ["def _bucket(e):", "    _out = None"]
    for i, r in enumerate(rules):
        ns.update(r.compiled.gen.ns)
        ns[f"_step{i}"] = r.step
        lines.append(f"    # rule {i} (ids stay out of the source, like every other rule text)")
        lines.append("    try:")
        lines.extend("        " + x for x in r.block or ["pass"])
        lines.append("    except Exception:  # noqa: BLE001 - one rule's surprise must not stop the others")
        lines.append(f"        _failed(_step{i}, e)")
    lines.append("    return _out")
    src = "\n".join(lines) + "\n"
    exec(compile(src, "<rule bucket>", "exec"), ns)  # noqa: S102 - generated from the rules' own blocks
    fn = ns["_bucket"]
    fn.source = src
    fn.rules = tuple(rules)  # what it runs, in order (tools, tests)
    return fn


def _known_check(rule: Rule, value_field: str, names: tuple[str, ...], lists: NamedLists) -> Callable[[Any], bool]:
    for name in names:
        if name not in lists:
            known = ", ".join(lists.names()) or "none defined"
            raise CompileError(rule.line, f"new.known: unknown list {name!r} (lists: {known})")
    spec = F.field_spec(value_field)
    if spec is not None and spec.kind == F.IP:
        try:
            nets = [n for name in names for n in lists.networks(name)]
        except ListError as exc:
            raise CompileError(rule.line, str(exc)) from None
        matcher = IpMatcher(nets)
        return matcher.__getitem__
    values = frozenset(v for name in names for v in lists.lists[name])
    return values.__contains__
