"""``icswatch rules list|check|test``: see the rule set, validate it, and watch it fire on captures.

- ``list``: one row per rule (id, title, severity, techniques, enabled); ``--verbose`` adds each
  rule's generated code and index keys, ``--json`` prints the rules as JSON.
- ``check``: load every rule file (the configured ones, or those given) and the named lists; print
  every problem as ``file:line: rule id: what is wrong`` on stderr; exit 1 if any is an error.
- ``test FILE.pcap|DIR ...``: replay captures through the sensor and the rules (no outputs written)
  and show which rules fire where: packet time, flow, evidence. Without a capture, replay each
  rule's ``captures:`` and compare the alert counts with the expected ones (exit 1 on a mismatch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from icswatch.config import Config, load_config, source_checkout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rules",
        help="list, check and test detection rules",
        description="Work with the YAML detection rules (rules/*.yaml; language: docs/rules.md).",
    )
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("-c", "--config", help="YAML configuration file")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        q.add_argument("--rules", action="append", metavar="PATH", help="rule file or folder instead of the configured ones")

    q = rsub.add_parser("list", help="table of the rules (id, title, severity, techniques, enabled)")
    common(q)
    q.add_argument("--json", action="store_true", help="print the rules as JSON")
    q.add_argument("-v", "--verbose", action="store_true", help="also show each rule's index keys and generated code")
    q.set_defaults(func=run_list)

    q = rsub.add_parser("check", help="validate rule files and lists; exit 1 on any error")
    common(q)
    q.add_argument("files", nargs="*", metavar="FILE", help="rule files or folders (default: the configured ones)")
    q.add_argument("--strict", action="store_true", help="treat warnings as errors")
    q.set_defaults(func=run_check)

    q = rsub.add_parser(
        "test",
        help="replay captures and show which rules fire where",
        description="Replay captures through the sensor and the rules (nothing is stored) and show every alert "
        "with its packet time, flow and evidence. Without captures, replay each rule's `captures:` and compare "
        "the alert counts with the expected ones.",
    )
    common(q)
    q.add_argument("inputs", nargs="*", metavar="FILE.pcap|DIR")
    q.add_argument("--rule", action="append", metavar="ID", help="only these rules (repeatable; globs allowed)")
    q.add_argument("--json", action="store_true", help="print the alerts as ECS JSON Lines")
    q.set_defaults(func=run_test)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, args.set)
    if getattr(args, "rules", None):
        cfg.rules.paths = list(args.rules)
    return cfg


def _engine(cfg: Config) -> Any:
    from detectors.rules import RuleEngine

    return RuleEngine.from_config(cfg.rules)


# --- list ---------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    cfg = _config(args)
    engine = _engine(cfg)
    err = Console(stderr=True)
    for p in engine.problems:
        err.print(str(p), style="yellow" if p.warning else "red", highlight=False, markup=False)
    if args.json:
        out = []
        for r in engine.rules:
            rule = r.rule
            out.append(
                {
                    "id": rule.id,
                    "title": rule.title,
                    "severity": rule.severity,
                    "techniques": list(rule.techniques),
                    "technique_names": list(r.technique_names),
                    "tactics": list(r.tactics),
                    "enabled": rule.id not in engine.disabled_ids,
                    "protocols": sorted(rule.protocols) if rule.protocols else ["any"],
                    "file": f"{rule.path}:{rule.line}",
                }
            )
        json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    console = Console()
    table = Table(title=f"{len(engine.rules)} rules ({len(engine.active)} enabled)", title_justify="left")
    for col in ("id", "title", "severity", "technique", "enabled"):
        table.add_column(col, overflow="fold")
    for r in engine.rules:
        rule = r.rule
        techniques = ", ".join(f"{t} {n}" for t, n in zip(rule.techniques, r.technique_names))
        enabled = "yes" if rule.id not in engine.disabled_ids else "[dim]no[/]"
        table.add_row(rule.id, rule.title, rule.severity, techniques, enabled)
    console.print(table)
    if args.verbose:
        for r in engine.rules:
            idx = {k: sorted(map(str, v)) for k, v in r.compiled.index.items() if v is not None}
            console.print(f"[bold]{r.id}[/] ({r.rule.path}:{r.rule.line}) index {idx}")
            console.print(r.step.source, markup=False, highlight=False)
    return 0


# --- check --------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.files:
        cfg.rules.paths = list(args.files)
    engine = _engine(cfg)
    err = Console(stderr=True)
    errors = [p for p in engine.problems if not p.warning or args.strict]
    for p in engine.problems:
        err.print(str(p), style="yellow" if p.warning else "red", highlight=False, markup=False)
    files = len(engine.files)
    if errors:
        err.print(f"{len(errors)} error(s) in {files} file(s); {len(engine.rules)} rule(s) loaded", style="red")
        return 1
    print(f"ok: {len(engine.rules)} rules in {files} file(s), {len(engine.lists.names())} lists")
    return 0


# --- test ---------------------------------------------------------------------------------------


def replay_alerts(paths: list[Path], cfg: Config, rule_globs: list[str] | None = None) -> tuple[list[Any], list[str]]:
    """Replay captures through the pipeline and the rule engine: (alerts, problems). Nothing is stored."""
    import fnmatch

    from alerts.runtime import AlertingRuntime
    from sensor.capture import CaptureError
    from sensor.pipeline import Pipeline

    alerts: list[Any] = []
    problems: list[str] = []
    for path in paths:
        engine = _engine(cfg)
        if rule_globs:
            keep = [r for r in engine.active if any(fnmatch.fnmatchcase(r.id, g) for g in rule_globs)]
            engine.active = keep
        runtime = AlertingRuntime([engine], outputs=[], context_events=0)
        pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
        try:
            result = pipeline.replay_file(path)
        except CaptureError as exc:
            problems.append(str(exc))
            continue
        if result.error:
            problems.append(f"{path}: {result.error}")
        summary = runtime.close()
        for a in summary.alerts:
            a.extra.setdefault("capture", str(path))
        alerts.extend(summary.alerts)
    return alerts, problems


def run_test(args: argparse.Namespace) -> int:
    cfg = _config(args)
    cfg.outputs.sqlite = None
    err = Console(stderr=True)
    if not args.inputs:
        return _self_test(cfg, args, err)
    from icswatch.inputs import expand

    captures, problems = expand(args.inputs)
    for p in problems:
        err.print(f"icswatch: {p}", style="red", highlight=False, markup=False)
    if not captures:
        return 1
    alerts, problems = replay_alerts([c.path for c in captures], cfg, args.rule)
    for p in problems:
        err.print(f"icswatch: {p}", style="yellow", highlight=False, markup=False)
    if args.json:
        from alerts.records import Observer

        obs = Observer.from_config(cfg.sensor)
        for a in alerts:
            sys.stdout.write(json.dumps(a.to_ecs(obs), ensure_ascii=False) + "\n")
        return 0
    _print_alerts(Console(), alerts)
    return 0


def _print_alerts(console: Console, alerts: list[Any]) -> None:
    from alerts.records import iso_time
    from alerts.runtime import describe_evidence

    if not alerts:
        console.print("No rule fired.")
        return
    table = Table(title=f"{len(alerts)} alert(s)", title_justify="left")
    for col in ("capture", "packet time (UTC)", "rule", "severity", "flow", "evidence"):
        table.add_column(col, overflow="fold")
    for a in alerts:
        table.add_row(
            Path(a.extra.get("capture", "")).name,
            iso_time(a.ts)[:23],
            a.rule_id,
            a.severity,
            f"#{a.flow_id} {a.src}:{a.sport} -> {a.dst}:{a.dport}",
            describe_evidence(a, limit=4),
        )
    console.print(table)


def _self_test(cfg: Config, args: argparse.Namespace, err: Console) -> int:
    import fnmatch

    engine = _engine(cfg)
    for p in engine.errors:
        err.print(str(p), style="red", highlight=False, markup=False)
    table = Table(title="Rule captures", title_justify="left")
    for col in ("rule", "capture", "expected", "got", ""):
        table.add_column(col, overflow="fold")
    failures = 0
    checked = 0
    missing = 0
    cache: dict[Path, list[Any]] = {}
    # The rules' captures (pcaps/...) are named relative to the repository and are not installed with
    # the wheel: from an installed icswatch they are looked up under the current directory (a clone).
    base = source_checkout() or Path.cwd()
    for r in engine.active:
        if args.rule and not any(fnmatch.fnmatchcase(r.id, g) for g in args.rule):
            continue
        for rel, expected in r.rule.captures.items():
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            if not path.is_file():
                table.add_row(r.id, rel, str(expected), "missing", "[red]FAIL[/]")
                failures += 1
                missing += 1
                continue
            if path not in cache:
                cache[path], _ = replay_alerts([path], cfg)
            got = sum(1 for a in cache[path] if a.rule_id == r.id)
            ok = got == expected
            failures += not ok
            checked += 1
            table.add_row(r.id, rel, str(expected), str(got), "ok" if ok else "[red]FAIL[/]")
    Console().print(table)
    if missing and source_checkout() is None:
        err.print(
            f"{missing} capture(s) not found under {base}: the rules' captures ship with the source repository "
            "(pcaps/), not with the installed package; run this from a clone of it",
            style="yellow", highlight=False, markup=False,
        )
    if failures or engine.errors:
        err.print(f"{failures} capture check(s) failed", style="red")
        return 1
    print(f"ok: {checked} capture checks")
    return 0
