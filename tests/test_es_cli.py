"""``icswatch es init|check|stats`` against the test server, and the ``--es-url`` option."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from es_testutil import EsServer, es_prefix, es_server  # noqa: F401 (fixtures)

from alerts.es_sink import ElasticsearchSink, es_outputs
from icswatch.commands import es as es_cmd
from icswatch.config import load_config


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="icswatch")
    es_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def common(server: EsServer, prefix: str, tmp_path: Path) -> list[str]:
    argv = [
        "--es-url",
        server.url,
        "--set",
        f"elasticsearch.index_prefix={prefix}",
        "--set",
        f"elasticsearch.spool={tmp_path / 'spool.db'}",
    ]
    if server.api_key:
        argv += ["--set", "elasticsearch.api_key_env=ICSWATCH_TEST_ES_API_KEY"]
    if server.ca_file:
        argv += ["--set", f"elasticsearch.ca_file={server.ca_file}"]
    return argv


def test_init_check_stats(
    es_server: EsServer, es_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = common(es_server, es_prefix, tmp_path)
    code, out, _ = run(["es", "check", *opts, "--json"], capsys)
    assert code == 1 and any(c["check"].startswith("component template") and not c["ok"] for c in json.loads(out))

    code, out, _ = run(["es", "init", *opts], capsys)
    assert code == 0 and f"{es_prefix}-alerts-mappings" in out and f"{es_prefix}-alerts-*" in out

    code, out, _ = run(["es", "check", *opts], capsys)
    assert code == 0, out
    assert "FAIL" not in out and "version" in out

    # some alerts through the sink, then the counters view
    settings = es_server.settings(es_prefix, tmp_path / "spool.db")
    from test_es_sink import alert, batch

    sink = ElasticsearchSink(settings)
    sink.write(batch([alert(i) for i in range(3)]))
    sink.close()
    es_server.client().indices.refresh(index=f"{es_prefix}-alerts")
    code, out, _ = run(["es", "stats", *opts, "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["sink"]["sent"] == 3 and data["sink"]["rejected"] == 0 and data["spool"]["pending"] == 0
    assert data["cluster"]["documents"][f"{es_prefix}-alerts"] == 3
    code, out, _ = run(["es", "stats", *opts], capsys)
    assert code == 0 and "sent" in out and f"{es_prefix}-alerts 3" in out


def test_check_finds_an_index_made_without_the_template(
    es_server: EsServer, es_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = common(es_server, es_prefix, tmp_path)
    assert run(["es", "init", *opts], capsys)[0] == 0
    es = es_server.client()
    # An index of the pattern whose mapping was forced (or predates the template): rule.id as text.
    es.indices.create(
        index=f"{es_prefix}-alerts-2020.01.01",
        mappings={"properties": {"rule": {"properties": {"id": {"type": "text"}}}}},
    )
    code, out, _ = run(["es", "check", *opts], capsys)
    assert code == 1
    assert "FAIL" in out and "rule.id is text not keyword" in out


def test_no_url_and_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ICSWATCH_ES_URL", raising=False)
    code, _, err = run(["es", "check"], capsys)
    assert code == 2 and "no Elasticsearch URL" in err
    code, _, err = run(["es", "init", "--es-url", "http://127.0.0.1:9"], capsys)
    assert code == 1 and "cannot reach Elasticsearch" in err
    code, out, _ = run(["es", "stats", "--offline", "--set", f"elasticsearch.spool={tmp_path / 'none.db'}"], capsys)
    assert code == 0 and "no counters yet" in out


def test_es_url_option_env_and_output_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = argparse.ArgumentParser()
    es_cmd.add_es_options(p)
    es_cmd.add_es_options(p)  # idempotent
    args = p.parse_args(["--es-url", "http://a:9200,http://b:9200", "--es-url", "https://c:9200"])
    monkeypatch.setenv("ICSWATCH_ES_URL", "http://env:9200")
    cfg = load_config(None, [f"elasticsearch.spool={tmp_path / 'spool.db'}"])
    assert cfg.elasticsearch.urls == ["http://env:9200"]  # the environment, when the file sets none
    es_cmd.apply_es_args(cfg, args)
    assert cfg.elasticsearch.urls == ["http://a:9200", "http://b:9200", "https://c:9200"]  # the flag wins
    outs = es_outputs(cfg)
    assert len(outs) == 1 and outs[0].settings.urls == cfg.elasticsearch.urls
    outs[0].close()
    monkeypatch.delenv("ICSWATCH_ES_URL")
    assert es_outputs(load_config()) == []  # off by default


def test_the_documented_configuration_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "elasticsearch.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    f = tmp_path / "c.yaml"
    f.write_text(block, encoding="utf-8")
    cfg = load_config(f)
    es = cfg.elasticsearch
    assert es.urls == ["https://es1.plant.local:9200", "https://es2.plant.local:9200"]
    assert es.events == "sampled" and es.events_sample == 100 and es.ilm_policy == "icswatch-90d"
