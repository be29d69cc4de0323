"""The end-of-replay summary: per protocol PDUs, top functions and talkers; counters of everything
dropped or malformed; the alerts raised. Printed with rich, also available as a dict (JSON)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from sensor.pipeline import FileResult, Pipeline

# Counters that are informational, not problems (shown apart from drops and anomalies).
INFO_COUNTERS = {
    "flows_tcp",
    "flows_udp",
    "flows_l2",
    "flows_identified_by_signature",
    "flows_idle_timeout",
    "tcp_flows_without_handshake",
    "tcp_rst",
    "ip_fragments",
    "ip_fragments_reassembled",
    "ipv6_extension_headers",
    "non_ip_frames",
    "ip_other_protocol",
    "tcp_orphan_control",
    "flows_unidentified",
    "pcapng_skipped_block",
}


def summary_dict(pipeline: Pipeline, results: list[FileResult], elapsed: float, alerts: Any = None) -> dict[str, Any]:
    protocols: dict[str, Any] = {}
    talkers: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for (proto, src, dst), n in pipeline.talkers.items():
        talkers[proto][(src, dst)] += n
    for proto, n in pipeline.totals.pdus.most_common():
        hist = pipeline.totals.funcs.get(proto, Counter())
        protocols[proto] = {
            "pdus": n,
            "top_functions": dict(hist.most_common(8)),
            "top_talkers": [
                {"src": s, "dst": d, "events": c} for (s, d), c in talkers.get(proto, Counter()).most_common(5)
            ],
        }
    out: dict[str, Any] = {
        "files": len(results),
        "packets": pipeline.packets,
        "bytes": pipeline.bytes,
        "events": pipeline.events,
        "seconds": round(elapsed, 3),
        "packets_per_second": round(pipeline.packets / elapsed) if elapsed > 0 else None,
        "protocols": protocols,
        "counters": pipeline.counters.as_dict(),
        "gauges": dict(getattr(pipeline, "gauges", {})),
        "damaged_files": {r.path: r.error for r in results if r.error},
    }
    if alerts is not None and hasattr(alerts, "as_dict"):
        out["alerts"] = alerts.as_dict()
    return out


def print_summary(
    console: Console,
    pipeline: Pipeline,
    results: list[FileResult],
    elapsed: float,
    alerts: Any = None,
    title: str = "icswatch replay",
) -> None:
    data = summary_dict(pipeline, results, elapsed, alerts)
    rate = f"{data['packets_per_second']:,} pkt/s" if data["packets_per_second"] else "-"
    console.print(
        f"[bold]{title}[/]: {data['files']} file(s), {data['packets']:,} packets, "
        f"{data['bytes'] / 1e6:,.1f} MB, {data['events']:,} ICS events in {elapsed:.2f} s ({rate})"
    )
    if data["protocols"]:
        table = Table(title="Protocols", title_justify="left")
        table.add_column("protocol")
        table.add_column("PDUs", justify="right")
        table.add_column("top functions (code: count)")
        table.add_column("top talkers (src -> dst: events)")
        for proto, info in data["protocols"].items():
            funcs = ", ".join(f"{k}: {v}" for k, v in list(info["top_functions"].items())[:5])
            talk = "\n".join(f"{t['src']} -> {t['dst']}: {t['events']}" for t in info["top_talkers"][:3])
            table.add_row(proto, f"{info['pdus']:,}", funcs, talk)
        console.print(table)
    counters = data["counters"]
    problems = {k: v for k, v in counters.items() if k not in INFO_COUNTERS}
    if problems:
        table = Table(title="Dropped, malformed and capped (counters)", title_justify="left")
        table.add_column("counter")
        table.add_column("count", justify="right")
        for k, v in sorted(problems.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(k, f"{v:,}")
        console.print(table)
    info = {k: v for k, v in counters.items() if k in INFO_COUNTERS}
    if info:
        console.print("[dim]" + ", ".join(f"{k}={v:,}" for k, v in sorted(info.items())) + "[/]")
    for path, error in data["damaged_files"].items():
        console.print(f"[yellow]damaged:[/] {path}: {error}")
    if alerts is not None and hasattr(alerts, "print"):
        alerts.print(console)
