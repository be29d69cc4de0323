"""Static audit: SQL is built only from constants and whitelisted identifiers, never from data.

    python tools/sql_audit.py                 # the packages, tools/, bench/ and tests/; exit 1 on findings
    python tools/sql_audit.py FILE_OR_DIR ... # just those

Every call ``<anything>.execute(sql, ...)``, ``.executemany(...)`` and ``.executescript(...)`` is
found with ``ast``, and the expression passed as ``sql`` must be *safe*:

- a string (or number) literal;
- an f-string, ``+``, ``%``, ``str.join``, a conditional expression or a comprehension whose every
  part is safe (``", ".join("?" for _ in ids)`` is safe whatever ``ids`` holds: only ``?`` is used);
- a name whose every assignment in its function (or module) is safe: ``x = ...``, ``x += ...``,
  ``for x in <safe>``, and every ``x.append/extend/insert(...)``, including those made by a helper
  of the same module the list is passed to (``_in("rule_id", values, where, params)``);
- an element of a safe container: ``SORT_COLUMNS[query.sort]`` where ``SORT_COLUMNS`` is a
  module-level literal of constants is safe whatever the key (an unknown key is a KeyError, not SQL);
- the return value of a function of the same module whose returns are safe (element-wise for
  ``where, params = self._where(query)``);
- a parameter of the enclosing function, when every call of that function in the scanned tree
  passes a safe argument there (``self._all(sql, params)`` wrappers);
- a name in ``ALLOWED`` below: an explicit whitelist, each entry with the reason it is safe.

Anything else (an attribute, a call into another library, a parameter nobody is seen passing) is a
finding. The check is deliberately conservative: a false alarm is fixed by taking the identifier from
a fixed table (the preferred fix) or, failing that, by a reasoned ``ALLOWED`` entry.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = ("alerts", "api", "detectors", "icswatch", "sensor", "tools", "bench", "tests")
SQL_METHODS = frozenset({"execute", "executemany", "executescript"})

# (path relative to the repository, "function.name" or "name") -> why the value cannot carry data.
ALLOWED: dict[tuple[str, str], str] = {}

NUMERIC_BUILTINS = frozenset({"int", "float", "len", "bool", "round", "abs", "range", "enumerate"})
CONTAINER_BUILTINS = frozenset({"list", "tuple", "sorted", "reversed", "set", "frozenset", "str", "min", "max"})
STRING_METHODS = frozenset({"upper", "lower", "strip", "lstrip", "rstrip", "replace", "format", "join", "title"})
MUTATORS = {"append": 0, "insert": 1, "extend": 0, "add": 0}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    function: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: in {self.function}: {self.reason}"


Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Module


@dataclass
class Module:
    path: str  # relative to the repository
    tree: ast.Module
    functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = field(default_factory=dict)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)

    def scope_of(self, node: ast.AST) -> Scope:
        cur = self.parents.get(node)
        while cur is not None and not isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef)):
            cur = self.parents.get(cur)
        return cur if cur is not None else self.tree


def _own_nodes(scope: Scope) -> Iterator[ast.AST]:
    """The nodes of a function (or module) body, without descending into nested functions or classes'
    methods (they are scopes of their own); a module's class bodies are part of it."""
    stack: list[ast.AST] = list(scope.body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            stack.append(child)


def _name_of_call(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


@dataclass(frozen=True)
class Binding:
    """What a name stands for: an expression, and where to evaluate it (a helper's parameter stands
    for the caller's argument; a comprehension variable for the elements of its iterable)."""

    module: Module
    scope: Scope
    expr: ast.AST
    frame: dict[str, Binding]


Frame = dict[str, Binding]


class Auditor:
    def __init__(self, modules: list[Module], allowed: dict[tuple[str, str], str] | None = None) -> None:
        self.modules = modules
        self.allowed = ALLOWED if allowed is None else allowed
        self.calls: dict[str, list[tuple[Module, ast.Call]]] = {}
        for m in modules:
            for node in ast.walk(m.tree):
                if isinstance(node, ast.Call):
                    n = _name_of_call(node)
                    if n:
                        self.calls.setdefault(n, []).append((m, node))
        self.by_dotted = {m.path[:-3].replace("/", "."): m for m in modules if m.path.endswith(".py")}
        self._stack: set[tuple[object, ...]] = set()
        self.reasons: list[str] = []

    # -- entry point --------------------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for m in self.modules:
            for node in ast.walk(m.tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS):
                    continue
                sql = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg in ("sql", "sql_script")), None)
                if sql is None:
                    continue
                scope = m.scope_of(node)
                self.reasons = []
                if not self.safe(m, scope, sql, {}, {}):
                    fn = getattr(scope, "name", "<module>")
                    out.append(Finding(m.path, node.lineno, fn, "; ".join(dict.fromkeys(self.reasons)) or "unsafe SQL"))
        return out

    # -- the rules -------------------------------------------------------------------------------------------
    def _fail(self, m: Module, node: ast.AST, why: str) -> bool:
        self.reasons.append(f"{m.path}:{getattr(node, 'lineno', '?')}: {why}")
        return False

    def _allowed(self, m: Module, scope: Scope, name: str) -> bool:
        fn = getattr(scope, "name", None)
        return (m.path, name) in self.allowed or (fn is not None and (m.path, f"{fn}.{name}") in self.allowed)

    def safe(self, m: Module, scope: Scope, e: ast.AST | None, frame: Frame, comp: Frame) -> bool:
        """``e``, evaluated in ``scope`` of ``m``, can only hold SQL text from constants and whitelists."""
        if e is None:
            return True
        rec = lambda x: self.safe(m, scope, x, frame, comp)
        if isinstance(e, ast.Constant):
            return isinstance(e.value, (str, bytes, int, float, bool)) or e.value is None
        if isinstance(e, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)) and self._guarded(m, scope, e):
            return True
        if isinstance(e, ast.JoinedStr):
            return all(rec(v) for v in e.values)
        if isinstance(e, ast.FormattedValue):
            return rec(e.value)
        if isinstance(e, ast.BinOp):
            if isinstance(e.op, ast.Mult) and any(  # "?" * n: only the string is repeated
                isinstance(x, ast.Constant) and isinstance(x.value, str) for x in (e.left, e.right)
            ):
                return True
            return rec(e.left) and rec(e.right)
        if isinstance(e, ast.IfExp):
            return rec(e.body) and rec(e.orelse)
        if isinstance(e, ast.BoolOp):
            return all(rec(v) for v in e.values)
        if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
            return all(rec(x) for x in e.elts)
        if isinstance(e, ast.Dict):
            return all(rec(x) for x in [*e.keys, *e.values] if x is not None)
        if isinstance(e, ast.Starred):
            return rec(e.value)
        if isinstance(e, (ast.GeneratorExp, ast.ListComp, ast.SetComp)):
            inner = dict(comp)
            for gen in e.generators:
                for t in ast.walk(gen.target):
                    if isinstance(t, ast.Name):
                        inner[t.id] = Binding(m, scope, _ElementsOf(gen.iter), {**frame, **inner})
            return self.safe(m, scope, e.elt, frame, inner)
        if isinstance(e, _ElementsOf):
            return rec(e.iterable)
        if isinstance(e, ast.Subscript):
            return rec(e.value)  # an element (or slice) of a safe container is safe, whatever the key
        if isinstance(e, ast.Call):
            return self._call(m, scope, e, frame, comp)
        if isinstance(e, ast.Name):
            return self._name(m, scope, e, frame, comp)
        if isinstance(e, ast.Attribute):
            dotted = ast.unparse(e)
            if self._allowed(m, scope, dotted):
                return True
            if isinstance(e.value, ast.Name) and e.value.id in ("self", "cls"):
                return self._member_safe(m, e)
            return self._fail(m, e, f"{dotted} is an attribute: its value is not known here (take it from a fixed table)")
        return self._fail(m, e, f"{type(e).__name__} expression {ast.unparse(e)[:60]!r}")

    def _guarded(self, m: Module, scope: Scope, e: ast.AST) -> bool:
        """``e`` passed a membership test against a safe collection that raises otherwise, earlier in the
        same function: ``if by not in COUNT_BY: raise StoreError(...)``."""
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return False
        text = ast.unparse(e)
        line = getattr(e, "lineno", 10**9)
        for node in _own_nodes(scope):
            if not (isinstance(node, ast.If) and node.lineno < line and isinstance(node.test, ast.Compare)):
                continue
            test = node.test
            if not (len(test.ops) == 1 and isinstance(test.ops[0], ast.NotIn) and ast.unparse(test.left) == text):
                continue
            if not any(isinstance(stmt, ast.Raise) for stmt in node.body):
                continue
            key = ("guard", id(node))
            if key in self._stack:
                continue
            self._stack.add(key)
            try:
                saved = list(self.reasons)
                ok = self.safe(m, scope, test.comparators[0], {}, {})
                self.reasons = saved
            finally:
                self._stack.discard(key)
            if ok:
                return True
        return False

    def _member_safe(self, m: Module, e: ast.Attribute) -> bool:
        """``self.X``: every class-level ``X = ...`` and every ``self.X = ...`` of the module is safe."""
        found = False
        for node in ast.walk(m.tree):
            if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                at_class = isinstance(t, ast.Name) and t.id == e.attr and isinstance(m.parents.get(node), ast.ClassDef)
                on_self = (isinstance(t, ast.Attribute) and t.attr == e.attr and isinstance(t.value, ast.Name)
                           and t.value.id in ("self", "cls"))
                if not (at_class or on_self) or node.value is None:
                    continue
                found = True
                key = ("member", id(node))
                if key in self._stack:
                    continue
                self._stack.add(key)
                try:
                    if not self.safe(m, m.scope_of(node), node.value, {}, {}):
                        return self._fail(m, node, f"self.{e.attr} is assigned something unsafe")
                finally:
                    self._stack.discard(key)
        return found or self._fail(m, e, f"self.{e.attr} is never assigned in this module")

    def _call(self, m: Module, scope: Scope, e: ast.Call, frame: Frame, comp: Frame) -> bool:
        rec = lambda x: self.safe(m, scope, x, frame, comp)
        f = e.func
        if isinstance(f, ast.Name):
            if f.id in NUMERIC_BUILTINS:
                return True
            if f.id in ("min", "max") and any(
                isinstance(a, ast.Constant) and isinstance(a.value, (int, float)) for a in e.args
            ):
                return True  # a number, or a TypeError: never text
            if f.id in CONTAINER_BUILTINS:
                return all(rec(a) for a in e.args)
            if f.id in m.functions:
                return self._returns(m, f.id, e, None, Binding(m, scope, e, {**frame, **comp}))
            return self._fail(m, e, f"call to {f.id}(): its result is not known here")
        if isinstance(f, ast.Attribute):
            if f.attr in STRING_METHODS:
                return rec(f.value) and all(rec(a) for a in e.args)
            if f.attr in ("items", "keys", "values") and not e.args:
                return rec(f.value)
            if f.attr == "get" and e.args:
                return rec(f.value) and all(rec(a) for a in e.args[1:])
            if isinstance(f.value, ast.Name) and f.value.id in ("self", "cls") and f.attr in m.functions:
                return self._returns(m, f.attr, e, None, Binding(m, scope, e, {**frame, **comp}))
            return self._fail(m, e, f"call to {ast.unparse(f)}(): its result is not known here")
        return self._fail(m, e, f"call {ast.unparse(e)[:60]!r}")

    def _bind_arguments(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call, caller: Binding) -> Frame:
        """The callee's parameters bound to this call's arguments (evaluated where the call is)."""
        params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
            params = params[1:]
        frame: Frame = {}
        for p, a in zip(params, call.args):
            if not isinstance(a, ast.Starred):
                frame[p] = Binding(caller.module, caller.scope, a, caller.frame)
        for k in call.keywords:
            if k.arg is not None:
                frame[k.arg] = Binding(caller.module, caller.scope, k.value, caller.frame)
        return frame

    def _returns(self, m: Module, name: str, call: ast.Call, index: int | None, caller: Binding) -> bool:
        """The function's return values (element ``index`` of a returned tuple) are all safe."""
        key = ("returns", id(call), name, index)
        if key in self._stack:
            return True
        self._stack.add(key)
        try:
            for fn in m.functions[name]:
                frame = self._bind_arguments(fn, call, caller)
                for node in _own_nodes(fn):
                    if isinstance(node, ast.Return) and node.value is not None:
                        value: ast.AST = node.value
                        if index is not None:
                            if not (isinstance(value, ast.Tuple) and len(value.elts) > index):
                                return self._fail(m, node, f"{name}() does not return a tuple here")
                            value = value.elts[index]
                        if not self.safe(m, fn, value, frame, {}):
                            return self._fail(m, node, f"{name}() returns something unsafe")
            return True
        finally:
            self._stack.discard(key)

    def _name(self, m: Module, scope: Scope, e: ast.Name, frame: Frame, comp: Frame) -> bool:
        name = e.id
        b = comp.get(name) or frame.get(name)
        if b is not None:
            key = ("bound", id(b.expr), name)
            if key in self._stack:
                return True
            self._stack.add(key)
            try:
                return self.safe(b.module, b.scope, b.expr, b.frame, {})
            finally:
                self._stack.discard(key)
        if self._allowed(m, scope, name):
            return True
        iterable = self._comprehension_iterable(m, e)
        if iterable is not None:  # the SQL is built inside a comprehension that binds the name
            return self.safe(m, scope, iterable, frame, {})
        key = ("name", id(scope), name, tuple(sorted(frame)))
        if key in self._stack:
            return True  # a cycle adds nothing new: the other contributions decide
        self._stack.add(key)
        try:
            return self._binding_safe(m, scope, name, e, frame)
        finally:
            self._stack.discard(key)

    @staticmethod
    def _comprehension_iterable(m: Module, use: ast.Name) -> ast.AST | None:
        cur = m.parents.get(use)
        while cur is not None and not isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
            if isinstance(cur, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                for gen in cur.generators:
                    if any(isinstance(t, ast.Name) and t.id == use.id for t in ast.walk(gen.target)):
                        return _ElementsOf(gen.iter)
            cur = m.parents.get(cur)
        return None

    def _binding_safe(self, m: Module, scope: Scope, name: str, use: ast.AST, frame: Frame) -> bool:
        contributions = list(self._contributions(m, scope, name))
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [a.arg for a in (*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs)]
            if name in params:
                if not self._parameter_safe(m, scope, name, params):
                    return False
            elif not contributions:
                outer = m.scope_of(scope)  # a closure's variable, or a module-level name
                return self._binding_safe(m, outer, name, use, {})
        elif not contributions:
            imported = self._imported(m, name)
            if imported is not None:
                return self._binding_safe(imported[0], imported[0].tree, imported[1], use, {})
            return self._fail(m, use, f"{name} is not assigned in this module")
        for kind, node, where in contributions:
            if kind == "value" and not self.safe(m, scope, node, frame, {}):  # type: ignore[arg-type]
                return self._fail(m, where, f"{name} is assigned something unsafe")
            if kind == "unpack":
                call, index = node  # type: ignore[misc]
                callee = _name_of_call(call)
                if callee is None or callee not in m.functions or not self._returns(
                    m, callee, call, index, Binding(m, scope, call, frame)
                ):
                    return self._fail(m, where, f"{name} comes from {ast.unparse(call)[:60]}")
            if kind == "opaque":
                return self._fail(m, where, f"{name} is bound by {type(where).__name__} to something unknown")
            if kind == "passed":
                call, position = node  # type: ignore[misc]
                if not self._helper_mutations_safe(m, scope, call, position, frame):
                    return self._fail(m, where, f"{name} is filled in by {_name_of_call(call)}() with something unsafe")
        return True

    def _imported(self, m: Module, name: str) -> tuple[Module, str] | None:
        """``from package.module import NAME`` of a scanned module: that module and the name there."""
        for node in m.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        target = self.by_dotted.get(node.module)
                        if target is not None:
                            return target, alias.name
        return None

    def _contributions(self, m: Module, scope: Scope, name: str) -> Iterator[tuple[str, object, ast.AST]]:
        for node in _own_nodes(scope):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    yield from _target(t, node.value, name, node)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
                if node.target.id == name and node.value is not None:
                    yield "value", node.value, node
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                yield from _loop_target(node.target, node.iter, name, node)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None and any(
                        isinstance(t, ast.Name) and t.id == name for t in ast.walk(item.optional_vars)
                    ):
                        yield "opaque", None, node
            elif isinstance(node, ast.NamedExpr) and node.target.id == name:
                yield "value", node.value, node
            elif isinstance(node, ast.Call):
                f = node.func
                receiver = f.value if isinstance(f, ast.Attribute) else None
                if isinstance(receiver, ast.Subscript):
                    receiver = receiver.value
                if isinstance(receiver, ast.Name) and receiver.id == name and f.attr in MUTATORS:  # type: ignore[union-attr]
                    pos = MUTATORS[f.attr]  # type: ignore[union-attr]
                    if len(node.args) > pos:
                        arg = node.args[pos]
                        yield "value", (_ElementsOf(arg) if f.attr == "extend" else arg), node  # type: ignore[union-attr]
                elif _name_of_call(node) in m.functions:
                    for i, a in enumerate(node.args):
                        if isinstance(a, ast.Name) and a.id == name:
                            yield "passed", (node, i), node
            elif (
                isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name) and node.value.id == name
            ):
                parent = m.parents.get(node)  # x[k] = value
                if isinstance(parent, ast.Assign):
                    yield "value", parent.value, parent

    def _helper_mutations_safe(self, m: Module, scope: Scope, call: ast.Call, position: int, frame: Frame) -> bool:
        """A list handed to a helper of this module at ``position``: what the helper adds to it is safe,
        the helper's parameters standing for this call's arguments."""
        for fn in m.functions.get(_name_of_call(call) or "", []):
            params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
            if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
                params = params[1:]
            if position >= len(params):
                continue
            callee_frame = self._bind_arguments(fn, call, Binding(m, scope, call, frame))
            for kind, node, where in self._contributions(m, fn, params[position]):
                if kind == "passed":
                    inner_call, inner_pos = node  # type: ignore[misc]
                    if not self._helper_mutations_safe(m, fn, inner_call, inner_pos, callee_frame):
                        return False
                elif kind != "value" or not self.safe(m, fn, node, callee_frame, {}):  # type: ignore[arg-type]
                    return self._fail(m, where, f"{fn.name}() adds something unsafe to its {params[position]}")
        return True

    def _parameter_safe(self, m: Module, fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str, params: list[str]) -> bool:
        """Every call of ``fn`` anywhere in the scanned tree passes something safe as ``name``."""
        index = params.index(name)
        is_method = bool(params) and params[0] in ("self", "cls")
        called_as = fn.name
        if fn.name == "__init__" and isinstance(m.parents.get(fn), ast.ClassDef):
            called_as = m.parents[fn].name  # type: ignore[attr-defined]
            is_method = False  # Class(a, b): no self among the arguments
        sites = self.calls.get(called_as, [])
        if called_as.startswith("_") and not called_as.startswith("__"):
            sites = [(cm, c) for cm, c in sites if cm is m]  # a private helper: called from its module only
        if not sites:
            return self._fail(m, fn, f"{name} is a parameter of {fn.name}() and no call of it is in the scanned tree")
        for cm, call in sites:
            arg = next((k.value for k in call.keywords if k.arg == name), None)
            if arg is None:
                pos = index - (1 if is_method and isinstance(call.func, ast.Attribute) else 0)
                pos -= 1 if fn.name == "__init__" else 0
                if 0 <= pos < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
                    arg = call.args[pos]
            if arg is None:
                default = _default_of(fn, name)
                if default is not None and not self.safe(m, fn, default, {}, {}):
                    return self._fail(m, fn, f"the default of {name} in {fn.name}() is unsafe")
                continue
            if not self.safe(cm, cm.scope_of(call), arg, {}, {}):
                return self._fail(cm, call, f"{fn.name}() is called with an unsafe {name}")
        return True


class _ElementsOf(ast.expr):
    """The elements of an iterable (what a ``for`` target or ``list.extend`` receives)."""

    _fields = ("iterable",)

    def __init__(self, iterable: ast.AST) -> None:
        super().__init__()
        self.iterable = iterable
        self.lineno = getattr(iterable, "lineno", 0)


def _target(t: ast.AST, value: ast.AST, name: str, node: ast.AST) -> Iterator[tuple[str, object, ast.AST]]:
    if isinstance(t, ast.Name):
        if t.id == name:
            yield "value", value, node
    elif isinstance(t, (ast.Tuple, ast.List)):
        for i, elt in enumerate(t.elts):
            if not (isinstance(elt, ast.Name) and elt.id == name):
                if any(isinstance(x, ast.Name) and x.id == name for x in ast.walk(elt)):
                    yield "opaque", None, node
                continue
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(t.elts):
                yield "value", value.elts[i], node
            elif isinstance(value, ast.Call):
                yield "unpack", (value, i), node
            else:
                yield "opaque", None, node


def _loop_target(t: ast.AST, iterable: ast.AST, name: str, node: ast.AST) -> Iterator[tuple[str, object, ast.AST]]:
    """``for a, b in ((x, y), (z, w))`` binds ``a`` to x and z only; anything less literal binds every
    name of the target to the iterable's elements."""
    if not any(isinstance(x, ast.Name) and x.id == name for x in ast.walk(t)):
        return
    if isinstance(t, ast.Name):
        yield "value", _ElementsOf(iterable), node
        return
    if isinstance(t, (ast.Tuple, ast.List)) and isinstance(iterable, (ast.Tuple, ast.List)):
        rows = iterable.elts
        if all(isinstance(r, (ast.Tuple, ast.List)) and len(r.elts) == len(t.elts) for r in rows):
            for i, elt in enumerate(t.elts):
                if isinstance(elt, ast.Name) and elt.id == name:
                    for r in rows:
                        yield "value", r.elts[i], node  # type: ignore[attr-defined]
            return
    yield "value", _ElementsOf(iterable), node


def _default_of(fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> ast.AST | None:
    args = [*fn.args.posonlyargs, *fn.args.args]
    defaults = fn.args.defaults
    offset = len(args) - len(defaults)
    for i, a in enumerate(args):
        if a.arg == name and i >= offset:
            return defaults[i - offset]
    for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults):
        if a.arg == name:
            return d
    return None


def python_files(roots: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for r in roots:
        if r.is_file() and r.suffix == ".py":
            out.append(r)
        elif r.is_dir():
            out.extend(p for p in sorted(r.rglob("*.py")) if ".venv" not in p.parts and "__pycache__" not in p.parts)
    return out


def load(paths: Iterable[Path]) -> list[Module]:
    modules = []
    for p in paths:
        try:
            rel = p.resolve().relative_to(REPO).as_posix()
        except ValueError:
            rel = p.as_posix()
        modules.append(Module(rel, ast.parse(p.read_text(encoding="utf-8"), filename=str(p))))
    return modules


def audit(paths: Iterable[Path] | None = None, allowed: dict[tuple[str, str], str] | None = None) -> list[Finding]:
    files = python_files(paths if paths is not None else [REPO / r for r in DEFAULT_ROOTS])
    return Auditor(load(files), allowed).findings()


def audit_source(sources: dict[str, str], allowed: dict[tuple[str, str], str] | None = None) -> list[Finding]:
    """The audit of in-memory modules ``{path: source}`` (the tests feed it known-bad code)."""
    modules = [Module(path, ast.parse(code, filename=path)) for path, code in sources.items()]
    return Auditor(modules, allowed if allowed is not None else {}).findings()


def sql_calls(paths: Iterable[Path] | None = None) -> int:
    """How many execute/executemany/executescript calls the audit looked at."""
    n = 0
    for m in load(python_files(paths if paths is not None else [REPO / r for r in DEFAULT_ROOTS])):
        n += sum(
            1 for node in ast.walk(m.tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS
        )
    return n


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] if args else None
    findings = audit(paths)
    for f in findings:
        print(f)
    total = sql_calls(paths)
    print(f"sql_audit: {total} execute calls checked, {len(findings)} finding(s)", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
