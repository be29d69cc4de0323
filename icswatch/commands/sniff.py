"""``icswatch sniff``: live capture from a SPAN port or a network tap through the same pipeline as replay.

    icswatch sniff -i IFACE [-i IFACE2] [--bpf FILTER] [--evidence-dir DIR]
                   [--stats-interval S] [--duration S] [--count N] [replay's options]

Threads: one capture thread per interface (sensor/live.py) fills a bounded queue; this thread (the
main one) runs the pipeline over it, then the detectors and the outputs. Everything that must not
happen in the middle of a packet (signals, reloads, counters, idle ticks) runs in ``between``, which
the capture generator calls between two batches of packets.

Signals: SIGINT/SIGTERM stop the capture, process what is still queued, flush the detectors, the
outputs (and the linkage outbox, an output) and the evidence files, print the summary and exit 0; a
second one aborts. SIGHUP re-reads the configuration file and reloads the rules and the baseline
between two batches (the capture threads keep filling the queue meanwhile, so no packet is lost);
rules whose definition did not change keep their state (learning periods, thresholds, suppression).

Exit codes: 0 stopped normally; 1 the capture could not start or every capture thread failed;
2 usage or configuration error (no such interface, bad filter, bad option).

The helpers ``add_evidence_options``/``evidence_options_from_args``/``enable_evidence`` give
``replay`` the same ``--evidence-dir``; ``add_alert_hook`` and ``replace_detectors`` are adapters
over ``alerts.runtime.AlertingRuntime`` until it has those hooks itself (see docs/live-capture.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from icswatch.commands.replay import EventWriter, add_common_options, config_from_args
from icswatch.config import Config, ConfigError
from sensor.evidence import EvidenceOptions, EvidenceRecorder, instrument_pipeline
from sensor.live import CaptureOptions, LiveCapture, LiveError
from sensor.pipeline import Pipeline

log = logging.getLogger(__name__)
TICK_SECONDS = 1.0  # idle ticks to the detectors and outputs while no packet arrives


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sniff",
        help="capture live from a SPAN port or tap (needs CAP_NET_RAW)",
        description="Capture from network interfaces (AF_PACKET, kernel BPF filter, promiscuous) through the "
        "sensor and the detectors, like replay; print counters periodically. SIGINT/SIGTERM stop cleanly, "
        "SIGHUP reloads rules and baseline. See docs/live-capture.md.",
    )
    p.add_argument("-i", "--interface", action="append", required=True, dest="interfaces", metavar="IFACE",
                   help="interface to capture on (repeatable)")
    p.add_argument("--bpf", metavar="FILTER", help="kernel capture filter, tcpdump syntax (e.g. 'tcp port 502 or udp')")
    p.add_argument("--stats-interval", type=float, default=60.0, metavar="S",
                   help="seconds between counter lines on stderr (0: none; default 60)")
    p.add_argument("--stats-json", metavar="FILE", help="rewrite every counter as JSON here at each interval (for the API / metrics)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    cap = p.add_argument_group("capture")
    cap.add_argument("--capture-method", choices=("auto", "ring", "socket"), default="auto",
                     help="ring: TPACKET_V3 memory-mapped ring; socket: recvmsg per packet; auto (default): ring, else socket")
    cap.add_argument("--buffer-mb", type=int, default=64, metavar="MB", help="kernel buffer per interface (default 64)")
    cap.add_argument("--queue-packets", type=int, default=200_000, metavar="N",
                     help="packets waiting for the pipeline before drops are counted (default 200000)")
    cap.add_argument("--queue-mb", type=int, default=256, metavar="MB", help="and their memory (default 256)")
    cap.add_argument("--no-promisc", action="store_true", help="do not put the interfaces in promiscuous mode")
    add_common_options(p)
    if not _has_option(p, "--baseline"):  # replay's common options may come to carry it
        p.add_argument("--baseline", metavar="FILE", help="protect mode: raise alerts on departures from this baseline")
    add_evidence_options(p)
    p.set_defaults(func=run)


def _has_option(p: argparse.ArgumentParser, flag: str) -> bool:
    return any(flag in a.option_strings for a in p._actions)


# -- evidence (shared with replay) ---------------------------------------------------------------------
def add_evidence_options(p: argparse.ArgumentParser) -> None:
    """``--evidence-dir`` and its bounds (for sniff and replay; does nothing if already there)."""
    if _has_option(p, "--evidence-dir"):
        return
    g = p.add_argument_group("evidence (packets behind each alert, as pcap files)")
    d = EvidenceOptions("")
    g.add_argument("--evidence-dir", metavar="DIR", help="write an evidence pcap per alert here (off by default)")
    g.add_argument("--evidence-ring-seconds", type=float, default=d.ring_seconds, metavar="S",
                   help=f"how far back ICS packets are kept in memory (default {d.ring_seconds:g})")
    g.add_argument("--evidence-ring-mb", type=float, default=d.ring_mb, metavar="MB",
                   help=f"memory for them (default {d.ring_mb:g})")
    g.add_argument("--evidence-before", type=float, default=d.before_seconds, metavar="S",
                   help=f"seconds of the flow kept before the alert's first evidence (default {d.before_seconds:g})")
    g.add_argument("--evidence-after", type=float, default=d.after_seconds, metavar="S",
                   help=f"seconds of the flow appended after the alert (default {d.after_seconds:g})")
    g.add_argument("--evidence-max-file-mb", type=float, default=d.max_file_mb, metavar="MB",
                   help=f"cap per file (default {d.max_file_mb:g})")
    g.add_argument("--evidence-max-total-mb", type=float, default=d.max_total_mb, metavar="MB",
                   help=f"cap of the directory: oldest files deleted beyond (default {d.max_total_mb:g})")
    g.add_argument("--evidence-max-age-days", type=float, default=d.max_age_days, metavar="D",
                   help=f"files older than this are deleted (default {d.max_age_days:g})")


def evidence_options_from_args(args: argparse.Namespace) -> EvidenceOptions | None:
    directory = getattr(args, "evidence_dir", None)
    if not directory:
        return None
    return EvidenceOptions(
        directory=directory,
        ring_seconds=args.evidence_ring_seconds,
        ring_mb=args.evidence_ring_mb,
        before_seconds=args.evidence_before,
        after_seconds=args.evidence_after,
        max_file_mb=args.evidence_max_file_mb,
        max_total_mb=args.evidence_max_total_mb,
        max_age_days=args.evidence_max_age_days,
    )


def enable_evidence(pipeline: Pipeline, alerting: Any, options: EvidenceOptions) -> EvidenceRecorder:
    """Evidence for a ``replay``: call after building the pipeline and the alerting runtime, before the
    first file; ``close()`` the recorder after ``alerting.close()``."""
    recorder = EvidenceRecorder(options)
    instrument_pipeline(pipeline, recorder)
    if alerting is not None:
        alerting.add_alert_hook(recorder.on_alert)
    return recorder


# -- adapters over the alerting runtime ----------------------------------------------------------------
def carry_rule_state(old: Any, new: Any) -> int:
    """Keep the state (learning, thresholds, suppression, counts) of the rules a reload did not change:
    the old compiled rule replaces the new one when the rule reads the same and the named lists are
    the same. Returns how many rules kept their state."""
    if old is None or getattr(old, "lists", None) is None or old.lists.lists != new.lists.lists:
        return 0
    before = {r.id: r for r in old.rules}
    kept = 0
    for i, cr in enumerate(new.rules):
        prev = before.get(cr.id)
        if prev is None:
            continue
        try:
            same = dataclasses.replace(prev.rule, path="", line=0) == dataclasses.replace(cr.rule, path="", line=0)
        except Exception:  # noqa: BLE001 - an uncomparable rule simply starts fresh
            same = False
        if same:
            prev.drop = new._standing_drop  # the new standing suppressions apply to it
            new.rules[i] = prev
            kept += 1
    new.active = [r for r in new.rules if r.id not in new.disabled_ids]
    new._started = old._started
    return kept


def build_detectors(cfg: Config, baseline: str | None, previous: Sequence[Any] = ()) -> tuple[list[Any], list[str], int]:
    """The detectors ``build_alerting`` would build from ``cfg`` (rule engine, then the baseline), for a
    reload: (detectors, problems, rules that kept their state)."""
    from detectors.rules import RuleEngine

    dets: list[Any] = []
    problems: list[str] = []
    kept = 0
    if cfg.rules.enabled:
        engine = RuleEngine.from_config(cfg.rules)
        problems.extend(str(p) for p in engine.problems)
        old = next((d for d in previous if isinstance(d, RuleEngine)), None)
        kept = carry_rule_state(old, engine)
        dets.append(engine)
    if baseline:
        dets.append(_baseline(baseline))
    return dets, problems, kept


def _baseline(path: str) -> Any:
    from detectors.baseline.protect import BaselineDetector

    return BaselineDetector.from_file(path)


# -- the run -----------------------------------------------------------------------------------------
def _usage_problems(args: argparse.Namespace) -> list[str]:
    out = []
    if args.count is not None and args.count < 1:
        out.append("--count must be at least 1")
    if args.duration is not None and args.duration <= 0:
        out.append("--duration must be positive")
    if args.stats_interval < 0:
        out.append("--stats-interval cannot be negative")
    if args.buffer_mb < 1 or args.queue_packets < 1 or args.queue_mb < 1:
        out.append("--buffer-mb, --queue-packets and --queue-mb must be positive")
    return out


class _Session:
    """The state ``between`` works on: signal flags, clocks, the counters shown on stderr."""

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.stop_requested: str | None = None
        self.reload = False
        self.events = 0
        self.reloads = 0
        self.failed = False
        self.stats_due = float("inf")  # monotonic time of the next counter line
        self.tick_due = 0.0  # ... of the next idle tick
        self.rate_at = 0.0  # when the last counter line was printed, and how many packets then
        self.rate_n = 0

    def on_signal(self, signum: int, _frame: Any) -> None:
        # Runs in the main thread between two bytecodes, possibly inside the pipeline's hot loop:
        # only set flags here; ``between`` acts on them at the next batch boundary.
        if signum == signal.SIGHUP:
            self.reload = True
            return
        if self.stop_requested is not None:
            raise KeyboardInterrupt  # the second one: stop now
        self.stop_requested = signal.Signals(signum).name


def run(args: argparse.Namespace) -> int:
    problems = _usage_problems(args)
    for p in problems:
        print(f"icswatch sniff: {p}", file=sys.stderr)
    if problems:
        return 2
    cfg = config_from_args(args)
    baseline = getattr(args, "baseline", None)
    options = CaptureOptions(
        interfaces=tuple(args.interfaces),
        bpf=args.bpf,
        promisc=not args.no_promisc,
        method=args.capture_method,
        buffer_mb=args.buffer_mb,
        queue_packets=args.queue_packets,
        queue_mb=args.queue_mb,
    )
    try:
        capture = LiveCapture(options)
        capture.open()
    except LiveError as exc:
        print(f"icswatch sniff: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1

    alerting = None
    recorder = None
    writer = None
    try:
        extra = [_baseline(baseline)] if baseline else []
        if cfg.rules.enabled or extra or cfg.outputs.sqlite or cfg.outputs.eve or args.alerts_out:
            from alerts.runtime import build_alerting

            alerting = build_alerting(cfg, detectors=extra, alerts_out=args.alerts_out)
        ev_options = evidence_options_from_args(args)
        if ev_options is not None:
            recorder = EvidenceRecorder(ev_options)
            if alerting is not None:
                alerting.add_alert_hook(recorder.on_alert)
        writer = EventWriter(cfg.outputs.events) if cfg.outputs.events else None
    except Exception as exc:
        capture.close()
        if writer is not None:
            writer.close()
        if alerting is not None:
            alerting.close()
        if isinstance(exc, (ConfigError, OSError, ValueError)):  # a bad baseline file, an unwritable directory
            print(f"icswatch sniff: {exc}", file=sys.stderr)
            return 2
        raise
    return _capture_loop(args, cfg, capture, alerting, recorder, writer, baseline)


def _capture_loop(
    args: argparse.Namespace,
    cfg: Config,
    capture: LiveCapture,
    alerting: Any,
    recorder: EvidenceRecorder | None,
    writer: EventWriter | None,
    baseline: str | None,
) -> int:
    session = _Session()
    learn = recorder.on_event if recorder is not None else None

    def on_event(event: Any) -> None:
        session.events += 1
        if learn is not None:
            learn(event)
        if writer is not None:
            writer(event)
        if alerting is not None:
            alerting.on_event(event)  # looked up per event: a reload swaps it

    pipeline = Pipeline(cfg.sensor, on_event=on_event, on_tick=alerting.on_tick if alerting is not None else None)
    result = pipeline.start(capture.name)
    started = time.monotonic()
    if args.stats_interval:
        session.stats_due = started + args.stats_interval
    session.tick_due = session.rate_at = started

    def counters() -> dict[str, Any]:
        return {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "uptime": round(time.monotonic() - started, 3),
            "capture": capture.stats(),
            "pipeline": {"processed": capture.delivered, "events": session.events, "counters": result.counters.as_dict()},
            "alerts": alerting.summary.total if alerting is not None else 0,
            "reloads": session.reloads,
            "evidence": recorder.stats() if recorder is not None else None,
        }

    def report(final: bool = False) -> None:
        data = counters()
        if args.stats_json:
            _write_json(args.stats_json, data)
        if not final and args.quiet:
            return
        print(_stats_line(data, session), file=sys.stderr, flush=True)

    def reload() -> None:
        t0 = time.perf_counter()
        if alerting is None:
            print("icswatch sniff: SIGHUP: nothing to reload (no detectors)", file=sys.stderr, flush=True)
            return
        try:
            new_cfg = config_from_args(args)
            dets, problems, kept = build_detectors(new_cfg, baseline, alerting.detectors)
        except Exception as exc:  # noqa: BLE001 - a bad edit must not stop a running sensor
            print(f"icswatch sniff: reload failed, the running rules stay: {exc}", file=sys.stderr, flush=True)
            return
        alerting.replace_detectors(dets)  # the old ones are flushed first: their alerts are kept
        session.reloads += 1
        names = ", ".join(getattr(d, "name", type(d).__name__) for d in dets) or "no detectors"
        print(
            f"icswatch sniff: reloaded ({names}) in {time.perf_counter() - t0:.2f} s; "
            f"{kept} unchanged rule(s) kept their state; {len(problems)} rule problem(s)",
            file=sys.stderr,
            flush=True,
        )
        for p in problems:
            print(f"icswatch sniff: rules: {p}", file=sys.stderr)

    def between(idle: bool) -> None:
        now = time.monotonic()
        if session.stop_reason is None:
            reason = session.stop_requested
            if reason is None and args.duration is not None and now - started >= args.duration:
                reason = "duration reached"
            if reason is None and not any(c.alive for c in capture.captures):
                reason = "every capture thread stopped"
                session.failed = True
            if reason is not None:
                session.stop_reason = reason
                capture.stop()
                print(
                    f"icswatch sniff: stopping ({reason}); {capture.queue.packets:,} queued packets still go through",
                    file=sys.stderr,
                    flush=True,
                )
        if session.reload:
            session.reload = False
            reload()
        if idle and now >= session.tick_due:
            session.tick_due = now + TICK_SECONDS
            wall = time.time()
            if alerting is not None:
                alerting.on_tick(wall)  # flush partial batches, close windows, while the wire is quiet
            if recorder is not None:
                recorder.expire(wall)
        if now >= session.stats_due:
            session.stats_due = now + args.stats_interval
            report()

    handlers = {s: signal.signal(s, session.on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    summary_alerts = None
    try:
        capture.start()
        _announce(capture, args)
        pipeline.run(capture.packets(between, limit=args.count, tap=recorder.add if recorder is not None else None))
    finally:
        capture.close()
        stats = capture.stats()
        for name, value in (
            ("capture_kernel_dropped", stats["totals"]["kernel_dropped"]),
            ("capture_queue_dropped", stats["totals"]["queue_dropped"]),
            ("capture_truncated", stats["totals"]["truncated"]),
            ("capture_errors", stats["totals"]["errors"]),
        ):
            if value:
                result.counters[name] += value
        pipeline.end()
        try:
            summary_alerts = alerting.close() if alerting is not None else None
        finally:
            if writer is not None:
                writer.close()
            if recorder is not None:
                recorder.close()
            for s, h in handlers.items():
                signal.signal(s, h)
    elapsed = time.monotonic() - started
    report(final=True)
    _finish(args, pipeline, result, elapsed, summary_alerts, stats, recorder)
    return 1 if session.failed else 0


def _announce(capture: LiveCapture, args: argparse.Namespace) -> None:
    parts = []
    for c in capture.captures:
        parts.append(f"{c.iface} ({c.method}, {c.buffer_bytes / (1 << 20):.0f} MiB buffer)")
    bpf = f", filter {args.bpf!r}" if args.bpf else ""
    print(
        f"icswatch sniff: listening on {', '.join(parts)}{bpf}; SIGINT/SIGTERM stop, SIGHUP reloads rules and baseline",
        file=sys.stderr,
        flush=True,
    )


def _stats_line(data: dict[str, Any], session: _Session) -> str:
    cap = data["capture"]
    t = cap["totals"]
    now = time.monotonic()
    processed = data["pipeline"]["processed"]
    rate = (processed - session.rate_n) / max(now - session.rate_at, 1e-9)
    session.rate_at, session.rate_n = now, processed
    ifaces = " ".join(
        f"{i['interface']}: received {i['kernel_received']:,} kernel-dropped {i['kernel_dropped']:,};" for i in cap["interfaces"]
    )
    ev = data["evidence"]
    evidence = f" | evidence files {ev['files_written']:,}" if ev else ""
    return (
        f"icswatch sniff: {data['time']} | {ifaces} queue {t['queued']:,} (peak {t['queue_peak']:,}/{t['queue_capacity']:,}) "
        f"queue-dropped {t['queue_dropped']:,} | processed {processed:,} ({rate:,.0f}/s) | events {data['pipeline']['events']:,} "
        f"| alerts {data['alerts']:,}{evidence}"
    )


def _write_json(path: str, data: Any) -> None:
    """Atomically: a reader (the API) never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, target)


def _finish(
    args: argparse.Namespace,
    pipeline: Pipeline,
    result: Any,
    elapsed: float,
    summary_alerts: Any,
    stats: dict[str, Any],
    recorder: EvidenceRecorder | None,
) -> None:
    from rich.console import Console

    from icswatch.summary import print_summary, summary_dict

    if not args.quiet:
        t = stats["totals"]
        print(
            f"icswatch sniff: kernel received {t['kernel_received']:,}, kernel dropped {t['kernel_dropped']:,}, "
            f"queue dropped {t['queue_dropped']:,}, processed {t['processed']:,} in {elapsed:.1f} s",
            file=sys.stderr,
        )
        print_summary(Console(), pipeline, [result], elapsed, summary_alerts, title="icswatch sniff")
    if args.json_summary:
        data = summary_dict(pipeline, [result], elapsed, summary_alerts)
        data["capture"] = stats
        data["evidence"] = recorder.stats() if recorder is not None else None
        _write_json(args.json_summary, data)


def main(argv: list[str] | None = None) -> int:
    """``python -m icswatch.commands.sniff -i IFACE ...``: the sniff command alone, with the CLI's exit
    codes, without importing every other command (the ML commands pull in scikit-learn: seconds of
    start-up a service restart or a test does not need)."""
    parser = argparse.ArgumentParser(prog="icswatch")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["sniff", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"icswatch: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icswatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
