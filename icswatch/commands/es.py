"""``icswatch es``: set up and watch the Elasticsearch output (docs/elasticsearch.md).

    icswatch es init  [--es-url URL] [-c FILE] [--set KEY=VALUE]   install the index templates
    icswatch es check [--es-url URL] [--json]                      connectivity, version, templates, mappings
    icswatch es stats [--es-url URL] [--json] [--offline]          the sink's counters, the spool, document counts

The cluster comes from ``--es-url``, else ``elasticsearch.urls`` in the configuration, else the
ICSWATCH_ES_URL environment variable. Exit codes: 0 ok, 1 failure (cluster unreachable, a check
failed), 2 usage or configuration error (no URL). Data on stdout, diagnostics on stderr.

This module also carries the ``--es-url`` option of the commands that run the pipeline (replay, sniff,
serve): ``add_es_options(parser)`` and ``apply_es_args(config, args)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


# -- the --es-url option of replay / sniff / serve ------------------------------------------------------
def add_es_options(p: argparse.ArgumentParser) -> None:
    """``--es-url URL`` (repeatable or comma-separated): send alerts to Elasticsearch too."""
    if any("--es-url" in a.option_strings for a in p._actions):
        return
    p.add_argument(
        "--es-url",
        action="append",
        metavar="URL",
        help="also send alerts to Elasticsearch at URL (repeatable; or set ICSWATCH_ES_URL); see docs/elasticsearch.md",
    )


def apply_es_args(cfg: Any, args: argparse.Namespace) -> Any:
    """Put ``--es-url`` into ``cfg.elasticsearch.urls`` (it wins over the file and the environment)."""
    from alerts.es_sink import split_urls

    given = getattr(args, "es_url", None)
    if given:
        urls = [u for g in given for u in split_urls(g)]
        cfg.elasticsearch.urls = urls
    return cfg


# -- icswatch es ---------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "es",
        help="Elasticsearch output: install templates, check the cluster, show counters",
        description="Set up and watch the Elasticsearch output (docs/elasticsearch.md).",
    )
    esub = p.add_subparsers(dest="es_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("-c", "--config", help="YAML configuration file")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
        add_es_options(q)

    i = esub.add_parser("init", help="install the component and index templates (idempotent)")
    common(i)
    i.set_defaults(func=init)

    c = esub.add_parser("check", help="verify connectivity, version, templates and the mapping of existing indices")
    common(c)
    c.add_argument("--json", action="store_true", help="print the checks as JSON")
    c.set_defaults(func=check)

    s = esub.add_parser(
        "stats", help="the sink's counters (sent, retried, spooled, rejected), the spool, document counts"
    )
    common(s)
    s.add_argument("--json", action="store_true", help="print as JSON")
    s.add_argument("--offline", action="store_true", help="do not ask the cluster (counters and spool only)")
    s.set_defaults(func=stats)

    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), EXIT_USAGE)[1])


def _settings(args: argparse.Namespace, need_url: bool = True) -> Any:
    from alerts.es_sink import EsSettings
    from icswatch.config import load_config

    cfg = apply_es_args(load_config(args.config, list(args.set)), args)
    settings = EsSettings.from_config(cfg.elasticsearch)
    if need_url and not settings.urls:
        print(
            "icswatch: no Elasticsearch URL: give --es-url URL, set elasticsearch.urls or ICSWATCH_ES_URL",
            file=sys.stderr,
        )
        return None
    return settings


def _connect(settings: Any) -> tuple[Any, dict[str, Any]] | None:
    from alerts.es_sink import connect, make_client, redact_url

    try:
        return connect(make_client(settings))
    except Exception as exc:
        urls = ", ".join(redact_url(u) for u in settings.urls)
        print(f"icswatch: cannot reach Elasticsearch at {urls}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def init(args: argparse.Namespace) -> int:
    from alerts import es_templates

    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    got = _connect(settings)
    if got is None:
        return EXIT_FAIL
    es, info = got
    try:
        done = es_templates.install(es, settings.index_prefix, **settings.template_settings())
    except Exception as exc:
        print(f"icswatch: cannot install the templates: {exc}", file=sys.stderr)
        return EXIT_FAIL
    version = info.get("version", {}).get("number", "?")
    print(f"Elasticsearch {version}: installed {len(done)} templates (version {es_templates.TEMPLATE_VERSION}):")
    for name in done:
        print(f"  {name}")
    n = es_templates.names(settings.index_prefix)
    print("daily indices " + ", ".join(n["patterns"].values()) + "; read aliases " + ", ".join(n["aliases"].values()))
    return EXIT_OK


def run_checks(es: Any, info: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Each check: name, ok, detail. Used by ``icswatch es check`` and the tests."""
    from alerts import es_templates

    checks: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    version = str(info.get("version", {}).get("number", "?"))
    major = version.split(".")[0]
    add("connect", True, f"{info.get('name', '?')} (cluster {info.get('cluster_name', '?')}), version {version}")
    add(
        "version",
        major in ("8", "9"),
        f"server {version}: " + ("supported" if major in ("8", "9") else "8.x or 9.x expected"),
    )
    try:
        health = es.cluster.health()
        status = health.get("status", "?")
        add("health", status in ("green", "yellow"), f"cluster status {status}")
    except Exception as exc:
        add("health", True, f"not readable ({exc}); skipped")
    n = es_templates.names(prefix)
    ours = es_templates.component_templates(prefix)
    for name, body in ours.items():
        try:
            got = es.cluster.get_component_template(name=name)["component_templates"][0]["component_template"]
        except Exception:
            add(f"component template {name}", False, "missing: run `icswatch es init`")
            continue
        want = es_templates.leaf_fields(body["mappings"])
        have = es_templates.leaf_fields(got.get("template", {}).get("mappings", {}))
        diff = sorted(f for f, t in want.items() if have.get(f) != t)
        ver = got.get("version")
        ok = not diff and ver == es_templates.TEMPLATE_VERSION
        detail = (
            "up to date"
            if ok
            else (
                f"differs on {', '.join(diff[:8])}"
                if diff
                else f"version {ver}, expected {es_templates.TEMPLATE_VERSION}"
            )
        )
        add(f"component template {name}", ok, detail + ("" if ok else ": run `icswatch es init`"))
    for kind, name in n["templates"].items():
        try:
            got = es.indices.get_index_template(name=name)["index_templates"][0]["index_template"]
        except Exception:
            add(f"index template {name}", False, "missing: run `icswatch es init`")
            continue
        ok = n["patterns"][kind] in got.get("index_patterns", []) and set(got.get("composed_of", [])) >= {
            n["common"],
            n["components"][kind],
        }
        aliases = (got.get("template") or {}).get("aliases") or {}
        ok = ok and n["aliases"][kind] in aliases
        add(
            f"index template {name}",
            ok,
            "patterns, components and alias as expected" if ok else "differs: run `icswatch es init`",
        )
    # Indices that exist: do they have the template's mapping (an index made before the templates has not)?
    for kind in es_templates.KINDS:
        want = es_templates.leaf_fields(es_templates.merged_mappings(prefix, kind))
        try:
            mappings = es.indices.get_mapping(index=n["patterns"][kind], allow_no_indices=True, ignore_unavailable=True)
        except Exception as exc:
            add(f"{kind} indices", False, f"cannot read mappings: {exc}")
            continue
        if not mappings:
            add(f"{kind} indices", True, "none yet (created on the first document)")
            continue
        bad = []
        for index, body in mappings.items():
            have = es_templates.leaf_fields(body.get("mappings", {}))
            wrong = [f"{f} is {have[f]} not {t}" for f, t in want.items() if f in have and have[f] != t]
            if wrong:
                bad.append(f"{index}: {', '.join(wrong[:4])}")
        try:
            aliased = set(es.indices.get_alias(name=n["aliases"][kind], ignore_unavailable=True) or {})
        except Exception:
            aliased = set()
        missing_alias = sorted(set(mappings) - aliased)
        if missing_alias:
            bad.append(f"not behind alias {n['aliases'][kind]}: {', '.join(missing_alias[:4])}")
        add(
            f"{kind} indices",
            not bad,
            f"{len(mappings)} index(es) with the template's mapping"
            if not bad
            else "; ".join(bad[:4]) + " (reindex them)",
        )
    return checks


def check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    got = _connect(settings)
    if got is None:
        return EXIT_FAIL
    es, info = got
    checks = run_checks(es, info, settings.index_prefix)
    if args.json:
        print(json.dumps(checks, indent=1))
    else:
        width = max(len(c["check"]) for c in checks)
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'}  {c['check']:<{width}}  {c['detail']}")
    return EXIT_OK if all(c["ok"] for c in checks) else EXIT_FAIL


def collect_stats(settings: Any, offline: bool = False) -> dict[str, Any]:
    from alerts import es_templates
    from alerts.es_spool import read_stats

    out: dict[str, Any] = {"spool": read_stats(settings.spool) or {"pending": 0, "pending_bytes": 0, "file": "absent"}}
    stats_file = Path(settings.spool + ".stats.json")
    if stats_file.is_file():
        try:
            sink = json.loads(stats_file.read_text(encoding="utf-8"))
            sink["age_seconds"] = round(time.time() - float(sink.get("updated", 0)), 1)
            out["sink"] = sink
        except (OSError, ValueError):
            out["sink"] = {"error": f"{stats_file} unreadable"}
    else:
        out["sink"] = None
    if not offline and settings.urls:
        got = _connect(settings)
        if got is None:
            out["cluster"] = {"reachable": False}
        else:
            es, info = got
            counts = {}
            for alias in es_templates.names(settings.index_prefix)["aliases"].values():
                try:
                    counts[alias] = int(es.count(index=alias, ignore_unavailable=True, allow_no_indices=True)["count"])
                except Exception as exc:
                    counts[alias] = f"error: {exc}"
            out["cluster"] = {"reachable": True, "version": info.get("version", {}).get("number"), "documents": counts}
    return out


def stats(args: argparse.Namespace) -> int:
    settings = _settings(args, need_url=False)
    if settings is None:
        return EXIT_USAGE
    data = collect_stats(settings, offline=args.offline or not settings.urls)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        sink = data.get("sink")
        if sink:
            print(
                f"sink ({sink.get('urls', '?')}), state {sink.get('state')}, updated {sink.get('age_seconds')} s ago:"
            )
            for key in (
                "sent",
                "already_present",
                "retried",
                "rejected",
                "spooled",
                "spool_pending",
                "spool_dropped",
                "queued",
                "failed_requests",
            ):
                print(f"  {key:<16} {sink.get(key)}")
            if sink.get("last_error"):
                print(f"  last error       {sink['last_error']}")
        else:
            print(f"sink: no counters yet ({settings.spool}.stats.json is written by a running sensor)")
        sp = data["spool"]
        print(f"spool {settings.spool}: {sp.get('pending', 0)} document(s), {sp.get('pending_bytes', 0) / 1e6:.1f} MB")
        cl = data.get("cluster")
        if cl is not None:
            if not cl.get("reachable"):
                print("cluster: unreachable")
            else:
                print(f"cluster {cl.get('version')}: " + ", ".join(f"{k} {v}" for k, v in cl["documents"].items()))
    cl = data.get("cluster")
    return EXIT_FAIL if cl is not None and not cl.get("reachable") else EXIT_OK
