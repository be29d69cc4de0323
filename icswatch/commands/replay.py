"""``icswatch replay``: run captures through the whole pipeline (parse, detect, store, report)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

from icswatch.config import Config, load_config
from icswatch.inputs import expand
from sensor.capture import CaptureError
from sensor.events import IcsEvent
from sensor.pipeline import FileResult, Pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay captures through the sensor and detectors",
        description="Replay pcap/pcapng files (or folders of them) through the sensor: parse every ICS "
        "operation, run the detectors, store alerts, print a summary.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE|DIR")
    add_common_options(p)
    from icswatch.commands.sniff import add_evidence_options

    add_evidence_options(p)
    p.set_defaults(func=run)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run the pipeline (replay, sniff)."""
    p.add_argument("-c", "--config", help="YAML configuration file (defaults work without one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--events", metavar="FILE.jsonl", help="write every ICS event as JSON Lines")
    p.add_argument("--alerts-out", metavar="FILE.jsonl", help="write every alert as one ECS JSON object per line")
    p.add_argument("--eve", metavar="FILE.jsonl", help="write alerts in Suricata EVE style (event_type: alert)")
    p.add_argument("--db", metavar="FILE.db", help="SQLite alert store (default var/icswatch.db)")
    p.add_argument("--no-db", action="store_true", help="do not write the SQLite store")
    p.add_argument("--rules", action="append", metavar="PATH", help="rule file or folder (repeatable)")
    p.add_argument("--no-rules", action="store_true", help="run without the rule engine")
    p.add_argument("--max-flows", type=int, help="flow table cap (sensor.max_flows)")
    p.add_argument("--baseline", metavar="FILE.yaml", help="protect mode: alert on departures from this learned baseline")
    p.add_argument("--model", metavar="FILE.joblib", help="score windows with this trained ML model (icswatch train)")
    p.add_argument("--model-cooldown", type=float, default=300.0, metavar="SECONDS",
                   help="quiet time per talker pair after an ML alert (default 300)")
    p.add_argument("--allow-version-mismatch", action="store_true",
                   help="load a model written by other scikit-learn/PyOD versions")

    p.add_argument("--no-assets", action="store_true", help="do not update the asset inventory in the SQLite store")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--json-summary", metavar="FILE", help="write the end summary as JSON")
    from icswatch.commands.es import add_es_options

    add_es_options(p)


def extra_detectors(args: argparse.Namespace) -> list[Any]:
    """Detectors beyond the rules, from the command line: ``--baseline`` (protect mode)."""
    detectors: list[Any] = []
    if getattr(args, "baseline", None):
        from detectors.baseline import BaselineDetector

        detectors.append(BaselineDetector.from_file(args.baseline))
    if getattr(args, "model", None):
        from detectors.ml.detector import MlDetector  # scikit-learn/PyOD load only when a model is used

        detectors.append(
            MlDetector.from_file(
                args.model,
                cooldown=getattr(args, "model_cooldown", 300.0),
                allow_version_mismatch=getattr(args, "allow_version_mismatch", False),
            )
        )
    return detectors


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.set)
    cfg = load_config(args.config, overrides)
    if args.max_flows is not None:
        cfg.sensor.max_flows = args.max_flows
    if args.db:
        cfg.outputs.sqlite = args.db
    if args.no_db:
        cfg.outputs.sqlite = None
    if args.eve:
        cfg.outputs.eve = args.eve
    if args.events:
        cfg.outputs.events = args.events
    if args.rules:
        cfg.rules.paths = list(args.rules)
    if args.no_rules:
        cfg.rules.enabled = False
    from icswatch.commands.es import apply_es_args

    apply_es_args(cfg, args)
    return cfg


class EventWriter:
    """JSON Lines of events, buffered."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "w", encoding="utf-8")
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def __call__(self, event: IcsEvent) -> None:
        self._fh.write(self._dumps(event.to_dict()))
        self._fh.write("\n")

    def close(self) -> None:
        self._fh.close()


class _Stderr:
    """Messages to stderr through rich, imported on first use: a quiet replay that meets no problem
    (scripts, the benchmark) never loads rich's console and progress bar (about 25 ms of start-up)."""

    def __init__(self) -> None:
        self._console: Any = None

    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, soft_wrap=True)
        return self._console

    def print(self, message: str) -> None:
        self.console().print(message)


def _progress_bar(console: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[packets]:>10,} pkts"),
        TextColumn("{task.fields[rate]:>9,.0f} pkt/s"),
        TextColumn("{task.fields[mb]:>8.1f} MB"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    err = _Stderr()
    captures, problems = expand(args.inputs)
    for p in problems:
        err.print(f"[red]icswatch:[/] {p}")
    if not captures:
        err.print("[red]icswatch:[/] no capture files to replay")
        return 1

    try:
        detectors = extra_detectors(args)
    except ValueError as exc:  # a baseline or model file that cannot be used: say why, in one line
        err.print(f"[red]icswatch:[/] {exc}")
        return 2
    alerting = None
    if cfg.rules.enabled or cfg.outputs.sqlite or cfg.outputs.eve or args.alerts_out or detectors or cfg.elasticsearch.urls:
        from alerts.runtime import build_alerting  # the alert half: detectors, incidents, stores, outputs

        alerting = build_alerting(cfg, detectors, alerts_out=args.alerts_out)
    writer = EventWriter(cfg.outputs.events) if cfg.outputs.events else None
    inventory = None
    if cfg.outputs.sqlite and not getattr(args, "no_assets", False):
        from sensor.assets import AssetInventory  # passive asset discovery, saved with the alerts

        inventory = AssetInventory()
    from alerts.es_sink import event_tap  # ICS events to Elasticsearch too, when configured

    es_events = event_tap(alerting) if alerting else None
    taps = [t for t in (writer, es_events) if t is not None]
    if alerting is not None:
        for t in taps:
            alerting.tap(t)  # called from the runtime's own sink: one call less per event
        if inventory is not None:
            alerting.attach_inventory(inventory)  # counted with the rules' signature lookup
        on_event = alerting.on_event
    else:  # no runtime: no SQLite output (so no inventory) and no Elasticsearch; events to a file at most
        on_event = writer
    pipeline = Pipeline(cfg.sensor, on_event=on_event, on_tick=alerting.on_tick if alerting else None)
    recorder = None
    if getattr(args, "evidence_dir", None) and alerting is not None:
        from icswatch.commands.sniff import enable_evidence, evidence_options_from_args

        evidence_opts = evidence_options_from_args(args)
        recorder = enable_evidence(pipeline, alerting, evidence_opts) if evidence_opts else None

    results: list[FileResult] = []
    damaged = False
    failed = False
    started = time.perf_counter()
    show = not args.quiet and err.console().is_terminal
    progress = _progress_bar(err.console()) if show else None
    try:
        with progress if progress is not None else nullcontext():
            for cap in captures:
                tick: Any = None  # the pipeline's progress callback, only under a progress bar
                if progress is not None:
                    size = cap.path.stat().st_size
                    task = progress.add_task(cap.key[-40:], total=size or 1, packets=0, rate=0.0, mb=0.0)
                    t0 = time.perf_counter()

                    def _tick(n: int, nbytes: int, task: Any = task, t0: float = t0, size: int = size) -> None:
                        dt = max(time.perf_counter() - t0, 1e-9)
                        progress.update(task, completed=min(nbytes, size), packets=n, rate=n / dt, mb=nbytes / 1e6)

                    tick = _tick
                try:
                    result = pipeline.replay_file(cap.path, progress=tick)
                except CaptureError as exc:
                    err.print(f"[red]icswatch:[/] {exc}")
                    failed = True
                    if progress is not None:
                        progress.remove_task(task)
                    continue
                if progress is not None:
                    progress.remove_task(task)
                results.append(result)
                if result.error:
                    damaged = True
                    err.print(
                        f"[yellow]icswatch:[/] {cap.path}: {result.error} "
                        f"({result.packets} packets before it were processed)"
                    )
    finally:
        summary_alerts = alerting.close() if alerting else None
        if inventory is not None and cfg.outputs.sqlite:
            from alerts.asset_store import AssetStore

            store = AssetStore(cfg.outputs.sqlite)
            try:
                store.save(inventory)
            finally:
                store.close()
        if recorder is not None:
            recorder.close()
        if writer:
            writer.close()
    elapsed = time.perf_counter() - started
    if not args.quiet:
        from rich.console import Console

        from icswatch.summary import print_summary

        print_summary(Console(), pipeline, results, elapsed, summary_alerts)
    if args.json_summary:
        from icswatch.summary import summary_dict

        Path(args.json_summary).write_text(
            json.dumps(summary_dict(pipeline, results, elapsed, summary_alerts), indent=1, ensure_ascii=False),
            encoding="utf-8",
        )
    if failed and not results:
        return 1
    if failed:
        return 1
    return 3 if damaged else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace()))
