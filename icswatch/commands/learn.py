"""``icswatch learn CAPTURES... -o baseline.yaml [--merge existing.yaml]``: learn mode.

Also from a live interface for a period: ``icswatch learn -i IFACE [-i IFACE2] [--bpf FILTER]
--duration SECONDS -o baseline.yaml`` (sensor/live.py captures; Ctrl-C ends learning early and still
writes what was learned).

Replays the captures through the sensor and folds every event into a baseline (docs/baseline.md):
per talker pair and protocol the functions, address ranges, written value ranges, periodic requests
and sequence behaviour, plus the assets seen. Writes deterministic, commented YAML meant to be
reviewed and kept in git. ``--merge`` folds the new run into an existing baseline (its accepted
deviations are kept). Protect mode: ``icswatch replay --baseline baseline.yaml``.

Exit codes: 0 written, 1 no capture could be read, 2 bad arguments or an unreadable --merge file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "learn",
        help="learn a baseline (normal behaviour) from captures",
        description="Learn what normal looks like from captures: talker pairs, functions, address and value "
        "ranges, polling periods, assets. Writes a reviewable YAML baseline for protect mode "
        "(icswatch replay --baseline FILE).",
    )
    p.add_argument("inputs", nargs="*", metavar="CAPTURE|DIR")
    p.add_argument(
        "-i",
        "--interface",
        dest="interfaces",
        action="append",
        metavar="IFACE",
        help="learn from a live interface (repeatable)",
    )
    p.add_argument("--bpf", metavar="FILTER", help="with -i: capture filter (tcpdump syntax)")
    p.add_argument(
        "--duration", type=float, metavar="SECONDS", help="with -i: how long to learn (default: until Ctrl-C)"
    )
    p.add_argument("-o", "--output", required=True, metavar="BASELINE.yaml", help="where to write the baseline")
    p.add_argument("--merge", metavar="EXISTING.yaml", help="fold this run into an existing baseline")
    p.add_argument("-c", "--config", help="YAML configuration file (sensor limits)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detectors.baseline.learn import learn_captures
    from detectors.baseline.model import BaselineFormatError
    from detectors.baseline.yamlio import load, save
    from icswatch.config import load_config
    from icswatch.inputs import expand
    from sensor.capture import CaptureError

    err = Console(stderr=True)
    cfg = load_config(args.config, args.set)
    if args.interfaces:
        if args.inputs:
            err.print("[red]icswatch:[/] learn from captures or from interfaces (-i), not both")
            return 2
        return _learn_live(args, cfg, err)
    if not args.inputs:
        err.print("[red]icswatch:[/] nothing to learn from: give captures or -i IFACE")
        return 2
    captures, problems = expand(args.inputs)
    for prob in problems:
        err.print(f"[red]icswatch:[/] {prob}", highlight=False)
    if not captures:
        err.print("[red]icswatch:[/] no capture files to learn from")
        return 1
    base = None
    if args.merge:
        try:
            base = load(args.merge)
        except BaselineFormatError as exc:
            err.print(f"[red]icswatch:[/] {exc}", highlight=False)
            return 2
    try:
        baseline, run_info = learn_captures([str(c.path) for c in captures], cfg.sensor)
    except CaptureError as exc:
        err.print(f"[red]icswatch:[/] {exc}", highlight=False)
        return 1
    if base is not None:
        base.merge(baseline)
        baseline = base
    path = save(baseline, args.output)
    for c in run_info["captures"]:
        if c.get("damaged"):
            err.print(
                f"[yellow]icswatch:[/] {c['file']}: {c['damaged']} (learned from what came before)", highlight=False
            )
    if not args.quiet:
        con = Console()
        polls = sum(len(p.polls) for p in baseline.pairs.values())
        funcs = sum(len(p.functions) for p in baseline.pairs.values())
        con.print(
            f"Learned from {len(captures)} capture(s), {run_info['events']:,} events "
            f"({run_info['skipped_malformed']} malformed skipped): {len(baseline.assets)} assets, "
            f"{len(baseline.pairs)} talker pairs, {funcs} functions, {polls} periodic requests."
            + (f" Merged into {args.merge}." if args.merge else ""),
            highlight=False,
        )
        if baseline.truncated:
            con.print(f"[yellow]caps hit (summary coarser than traffic): {baseline.truncated}[/]", highlight=False)
        con.print(
            f"Baseline written to {path}. Review it, then: icswatch replay --baseline {Path(path)} CAPTURES",
            highlight=False,
        )
    return 0


def _learn_live(args: argparse.Namespace, cfg: object, err: Console) -> int:
    """Learn from live interfaces for ``--duration`` seconds (or until Ctrl-C), then write the baseline."""
    import time

    from detectors.baseline.learn import Learner, learned_at
    from detectors.baseline.model import BaselineFormatError
    from detectors.baseline.yamlio import load, save
    from sensor.live import CaptureOptions, LiveCapture, LiveError
    from sensor.pipeline import Pipeline

    base = None
    if args.merge:
        try:
            base = load(args.merge)
        except BaselineFormatError as exc:
            err.print(f"[red]icswatch:[/] {exc}", highlight=False)
            return 2
    try:
        capture = LiveCapture(CaptureOptions(interfaces=tuple(args.interfaces), bpf=args.bpf))
        capture.open()
    except LiveError as exc:
        err.print(f"[red]icswatch:[/] {exc}", highlight=False)
        return 2 if exc.usage else 1
    learner = Learner()
    pipeline = Pipeline(getattr(cfg, "sensor", None), on_event=learner.observe)
    pipeline.start(capture.name)
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def between(idle: bool) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            capture.stop()

    at = learned_at()
    capture.start()
    if not args.quiet:
        err.print(
            f"learning on {', '.join(args.interfaces)}"
            + (f" for {args.duration:g} s" if args.duration is not None else "")
            + "; Ctrl-C ends learning and writes the baseline",
            highlight=False,
        )
    try:
        pipeline.run(capture.packets(between))
    except KeyboardInterrupt:
        capture.stop()
    finally:
        result = pipeline.end()
        capture.close()
    run_info = {
        "at": at,
        "captures": [{"file": capture.name, "packets": result.packets, "events": result.events}],
        "packets": result.packets,
        "events": learner.events,
        "skipped_malformed": learner.skipped,
    }
    if learner.first_ts is not None and learner.last_ts is not None:
        from alerts.records import iso_time

        run_info["first"] = iso_time(learner.first_ts)[:19] + "Z"
        run_info["last"] = iso_time(learner.last_ts)[:19] + "Z"
    baseline = learner.finish(run_info)
    if base is not None:
        base.merge(baseline)
        baseline = base
    path = save(baseline, args.output)
    if not args.quiet:
        Console().print(
            f"Learned {learner.events:,} events from {result.packets:,} packets: {len(baseline.assets)} assets, "
            f"{len(baseline.pairs)} talker pairs. Baseline written to {path}.",
            highlight=False,
        )
    return 0
