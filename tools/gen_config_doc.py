"""Write docs/configuration.md from the pydantic configuration model (so the doc never drifts)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from icswatch.config import Config

HEADER = """# Configuration

One YAML file, passed with `-c FILE`; every key is optional (the defaults below work with no file).
Any key can be overridden on the command line with `--set section.key=value` (the value is parsed as
YAML: `--set rules.lists.allowed_masters=[10.0.0.1,10.0.0.0/24]`). Unknown keys and wrong types are
refused on load with the key named, e.g. `config.yaml: sensor.max_flows: Input should be a valid integer`.

This page is generated from `icswatch/config.py` by `python tools/gen_config_doc.py`; a test checks that
it is up to date.
"""


REPO = Path(__file__).resolve().parents[1]


def _relative(value: object) -> object:
    """Absolute paths inside the repository are shown relative to it (the doc must not name a machine)."""
    if isinstance(value, list):
        return [_relative(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        try:
            return Path(value).relative_to(REPO).as_posix()
        except ValueError:
            return value
    return value


def render() -> str:
    lines = [HEADER]
    for name, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines.append(f"\n## `{name}`\n")
        doc = (model.__doc__ or "").strip()
        if doc:
            lines.append(doc + "\n")
        lines.append("| key | default | meaning |\n|---|---|---|")
        for key, f in model.model_fields.items():
            default = _relative(f.get_default(call_default_factory=True))
            lines.append(f"| `{name}.{key}` | `{default!r}` | {f.description or ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
