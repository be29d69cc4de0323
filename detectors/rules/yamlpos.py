"""YAML loading that remembers where things are, so rule errors can name ``file:line``.

PyYAML's composer gives every node a ``start_mark``; the constructor below keeps the line of each
mapping key and list item next to the value (``LineDict.lines`` / ``LineList.lines``), which is all
the validator needs to say ``rules/modbus.yaml:42: rule x: threshold.count: ...``.

A syntax error would lose the whole file; ``split_rule_chunks`` lets the loader retry a broken file
rule by rule (each ``- id:`` item of the top-level list is parsed alone), so one broken rule does not
take its neighbours down.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class LineDict(dict):
    """A mapping that knows the 1-based line of itself (``line``) and of each key (``lines``)."""

    line: int = 0
    lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


class LineList(list):
    line: int = 0
    lines: list[int]

    def line_of(self, index: int) -> int:
        return self.lines[index] if 0 <= index < len(self.lines) else self.line


# libyaml's parser when PyYAML was built with it (the wheels are): about 10x faster than the pure-Python
# one at start-up, and its nodes carry the same ``start_mark`` lines.
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """SafeLoader whose mappings and sequences carry line numbers (plus an optional line offset)."""

    line_offset = 0


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1 + loader.line_offset
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in out.lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1 + loader.line_offset
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1 + loader.line_offset
    out.lines = [child.start_mark.line + 1 + loader.line_offset for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class YamlSyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def load(text: str, line_offset: int = 0) -> Any:
    """Parse one YAML document; raise YamlSyntaxError(line, message) on any YAML problem."""
    loader = _Loader(text)
    loader.line_offset = line_offset
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = (mark.line + 1 if mark is not None else 1) + line_offset
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(line, problem) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1 + line_offset, str(exc)) from None
    finally:
        loader.dispose()


_ITEM_START = re.compile(r"^(\s*)-\s+id\s*:")


def split_rule_chunks(text: str) -> list[tuple[int, str]]:
    """Cut a rule file into its top-level ``- id:`` items: [(first line number, item text), ...].

    Used only after a syntax error, to load the rules that are intact. Items are found by their
    ``- id:`` line at the smallest indentation such lines have in the file.
    """
    lines = text.splitlines(keepends=True)
    starts: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        m = _ITEM_START.match(line)
        if m:
            starts.append((i, len(m.group(1))))
    if not starts:
        return []
    indent = min(ind for _, ind in starts)
    idx = [i for i, ind in starts if ind == indent]
    chunks: list[tuple[int, str]] = []
    for n, i in enumerate(idx):
        end = idx[n + 1] if n + 1 < len(idx) else len(lines)
        body = lines[i:end]
        # Dedent so the item parses as a one-element list on its own.
        dedented = "".join(ln[indent:] if ln[:indent].strip() == "" else ln for ln in body)
        chunks.append((i + 1, dedented))
    return chunks
