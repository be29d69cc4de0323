"""Configuration: defaults without a file, validation errors that name the key, --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from icswatch.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_work_without_a_file() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.sensor.max_flows > 0
    assert cfg.outputs.sqlite


def test_yaml_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sensor:\n  max_flows: 1234\n  name: plant-a\n", encoding="utf-8")
    cfg = load_config(f, ["sensor.tcp_idle_timeout=42", "rules.lists.allowed_masters=[10.0.0.1, 10.0.0.0/24]"])
    assert cfg.sensor.max_flows == 1234
    assert cfg.sensor.name == "plant-a"
    assert cfg.sensor.tcp_idle_timeout == 42
    assert cfg.rules.lists["allowed_masters"] == ["10.0.0.1", "10.0.0.0/24"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sensor:\n  max_flows: lots\n", "sensor.max_flows: Input should be a valid integer"),
        ("sensor:\n  bogus: 1\n", "sensor.bogus: unknown key"),
        ("nonsense: 1\n", "nonsense: unknown key"),
        ("sensor: [1, 2]\n", "sensor:"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("sensor:\n  max_flows: [\n", "invalid YAML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert expected in str(err.value)
    assert str(f) in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_set_without_equals_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["sensor.max_flows"])


def test_configuration_doc_is_up_to_date() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_config_doc", REPO / "tools" / "gen_config_doc.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    current = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == mod.render(), "docs/configuration.md is stale: run python tools/gen_config_doc.py"
