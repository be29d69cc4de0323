"""The baseline's YAML form: deterministic, commented, diff-friendly.

Same model in, same bytes out: keys in a fixed order, lists sorted (assets and pairs by numeric
address, functions by side and name, units and polls by their keys), measured floats rounded to six
decimals, scalar-only lists in flow style (``[0, 9]``). The header comments say when, from what and
from how many events it was learned; they are regenerated on every write (the ``learned`` list holds
the same facts as data, and survives merges).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from detectors.baseline.model import Baseline, BaselineFormatError, from_dict, to_dict


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for scalar-only lists, never YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (list, dict, tuple)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=False)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def header(b: Baseline) -> list[str]:
    lines = [
        "icswatch baseline: what this plant's network normally does (learn-then-protect).",
        "Review it like code: every entry below was seen on the wire; protect mode alerts on anything else.",
        "Format: docs/baseline.md. Addresses are 0-based wire addresses. Times in UTC.",
    ]
    for run in b.runs:
        caps = run.get("captures") or []
        files = ", ".join(str(c.get("file", "?")) for c in caps[:5]) + (
            f" (+{len(caps) - 5} more)" if len(caps) > 5 else ""
        )
        span = f", traffic {run['first']} .. {run['last']}" if run.get("first") else ""
        lines.append(
            f"learned {run.get('at', '?')} from {files or 'live traffic'}: {run.get('packets', 0)} packets, "
            f"{run.get('events', 0)} events ({run.get('skipped_malformed', 0)} malformed skipped){span}"
        )
    lines.append(
        f"{len(b.assets)} assets, {len(b.pairs)} talker pairs, "
        f"{sum(len(p.functions) for p in b.pairs.values())} functions, {sum(len(p.polls) for p in b.pairs.values())} periodic requests"
    )
    if b.accepted:
        lines.append(f"{len(b.accepted)} deviation(s) accepted by analysts (see 'accepted' at the end)")
    if b.truncated:
        lines.append(
            "caps hit while learning (summary coarser than the traffic): "
            + ", ".join(f"{k} {v}" for k, v in sorted(b.truncated.items()))
        )
    return lines


def dumps(b: Baseline) -> str:
    body = yaml.dump(
        to_dict(b), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False
    )
    return "".join(f"# {line}\n" for line in header(b)) + body


def save(b: Baseline, path: str | Path) -> Path:
    """Write atomically (a reader never sees half a baseline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(b)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def loads(text: str, source: str = "<string>") -> Baseline:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BaselineFormatError(f"{source}: not valid YAML: {exc}") from None
    try:
        return from_dict(data)
    except BaselineFormatError as exc:
        raise BaselineFormatError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise BaselineFormatError(f"{source}: {exc}") from None


def load(path: str | Path) -> Baseline:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineFormatError(f"{p}: {exc.strerror or exc}") from None
    return loads(text, str(p))
