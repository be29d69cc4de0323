"""The ``condition`` of a rule: selection names combined with and / or / not, Sigma-style.

Grammar (``not`` binds tighter than ``and``, which binds tighter than ``or``)::

    expr   := term ('or' term)*
    term   := factor ('and' factor)*
    factor := 'not' factor | '(' expr ')' | NAME
            | ('1' | 'any' | 'all') 'of' (PATTERN | 'them')

``PATTERN`` is a selection name with ``*`` wildcards (``1 of write_*``); ``them`` means every
selection. The parser returns a small tree of tuples the compiler turns into Python.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Union

# ("sel", name) | ("not", node) | ("and", (nodes...)) | ("or", (nodes...))
Node = Union[tuple[str, str], tuple[str, "Node"], tuple[str, tuple["Node", ...]]]

_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z_*][A-Za-z0-9_*]*|\d+|\S)")
KEYWORDS = ("and", "or", "not", "of", "them", "all", "any")


class ConditionError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:  # pragma: no cover - \S always matches
            raise ConditionError(f"cannot read {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_condition(text: str, names: Iterable[str]) -> Node:
    """Parse ``text`` over the selection ``names``; raise ConditionError saying what is wrong."""
    known = list(names)
    toks = _tokens(text)
    if not toks:
        raise ConditionError("the condition is empty")
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise ConditionError(f"the condition ends too early{f' (expected {expected!r})' if expected else ''}")
        if expected is not None and tok.lower() != expected:
            raise ConditionError(f"expected {expected!r}, found {tok!r}")
        pos += 1
        return tok

    def expr() -> Node:
        nodes = [term()]
        while (peek() or "").lower() == "or":
            take()
            nodes.append(term())
        return nodes[0] if len(nodes) == 1 else ("or", tuple(nodes))

    def term() -> Node:
        nodes = [factor()]
        while (peek() or "").lower() == "and":
            take()
            nodes.append(factor())
        return nodes[0] if len(nodes) == 1 else ("and", tuple(nodes))

    def factor() -> Node:
        tok = take()
        low = tok.lower()
        if low == "not":
            return ("not", factor())
        if tok == "(":
            node = expr()
            take(")")
            return node
        if low in ("1", "any", "all") and (peek() or "").lower() == "of":
            take("of")
            target = take()
            if target.lower() == "them":
                matched = list(known)
            else:
                matched = [n for n in known if fnmatch.fnmatchcase(n, target)]
                if not matched:
                    raise ConditionError(f"no selection matches {target!r}")
            if not matched:
                raise ConditionError("there are no selections")
            subs = tuple(("sel", n) for n in matched)
            if len(subs) == 1:
                return subs[0]
            return ("and", subs) if low == "all" else ("or", subs)
        if low in KEYWORDS or tok == ")":
            raise ConditionError(f"unexpected {tok!r}")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", tok):
            raise ConditionError(f"unexpected {tok!r}")
        if tok not in known:
            close = [n for n in known if n.lower() == tok.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else f" (selections: {', '.join(known) or 'none'})"
            raise ConditionError(f"unknown selection {tok!r}{hint}")
        return ("sel", tok)

    node = expr()
    if pos != len(toks):
        raise ConditionError(f"unexpected {toks[pos]!r} after a complete condition")
    return node


def selection_names(node: Node, known: Iterable[str] = ()) -> set[str]:
    """The selections a condition refers to."""
    kind = node[0]
    if kind == "sel":
        return {node[1]}  # type: ignore[arg-type]
    if kind == "not":
        return selection_names(node[1])  # type: ignore[arg-type]
    out: set[str] = set()
    for child in node[1]:  # type: ignore[union-attr]
        out |= selection_names(child)  # type: ignore[arg-type]
    return out
