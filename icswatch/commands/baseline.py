"""``icswatch baseline show|accept``: read a baseline, and allow-list a deviation into it.

- ``show FILE``: what the baseline holds, as tables (assets, pairs with functions, ranges and periodic
  requests, accepted deviations); ``--yaml`` prints the file as it is.
- ``accept ALERT_ID --baseline FILE --by NAME --why TEXT``: take the baseline alert from the alert
  store (``--db``, default the configured outputs.sqlite) or from an ECS JSON Lines file
  (``--alerts FILE``), apply the change it describes to the baseline, and record who, why and when
  in its ``accepted`` list. The file is rewritten in place (``-o`` to write elsewhere).

Exit codes: 0 ok, 1 the alert cannot be accepted (not found, not a baseline alert, already
accepted), 2 bad arguments or an unreadable baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="show a baseline, accept a deviation into it",
        description="Work with learned baselines (docs/baseline.md): show one, or accept an alert's deviation "
        "into it (who and why are recorded).",
    )
    bsub = p.add_subparsers(dest="baseline_command", metavar="ACTION")

    q = bsub.add_parser("show", help="show what a baseline holds")
    q.add_argument("file", metavar="BASELINE.yaml")
    q.add_argument("--yaml", action="store_true", help="print the YAML itself")
    q.set_defaults(func=run_show)

    q = bsub.add_parser(
        "accept",
        help="accept a baseline alert's deviation into the baseline",
        description="Apply the change a baseline alert describes (a new asset, pair, function, address range, "
        "value, sequence anomaly or poll timing) to the baseline and record who accepted it, why and when.",
    )
    q.add_argument("alert_id", metavar="ALERT_ID")
    q.add_argument("--baseline", required=True, metavar="FILE", help="the baseline to change")
    q.add_argument("--by", required=True, metavar="NAME", help="who accepts it")
    q.add_argument("--why", required=True, metavar="TEXT", help="why it is normal")
    src = q.add_mutually_exclusive_group()
    src.add_argument(
        "--db", metavar="FILE.db", help="alert store holding the alert (default: configured outputs.sqlite)"
    )
    src.add_argument("--alerts", metavar="FILE.jsonl", help="ECS JSON Lines alert file holding the alert")
    q.add_argument("-o", "--output", metavar="FILE", help="write the changed baseline here (default: in place)")
    q.add_argument("-c", "--config", help="YAML configuration file")
    q.set_defaults(func=run_accept)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def run_show(args: argparse.Namespace) -> int:
    from detectors.baseline.model import BaselineFormatError
    from detectors.baseline.yamlio import load

    err = Console(stderr=True)
    try:
        b = load(args.file)
    except BaselineFormatError as exc:
        err.print(f"[red]icswatch:[/] {exc}", highlight=False)
        return 2
    if args.yaml:
        sys.stdout.write(Path(args.file).read_text(encoding="utf-8"))
        return 0
    con = Console()
    from detectors.baseline.yamlio import header

    for line in header(b):
        con.print(f"[dim]{line}[/]", highlight=False)
    t = Table(title="Assets", title_justify="left")
    for col in ("address", "mac", "client of", "server of", "events"):
        t.add_column(col)
    from sensor.assets import address_sort_key

    for addr in sorted(b.assets, key=address_sort_key):
        a = b.assets[addr]
        t.add_row(addr, a.mac or "", ", ".join(sorted(a.client)), ", ".join(sorted(a.server)), str(a.events))
    con.print(t)
    for key in sorted(b.pairs, key=lambda k: (address_sort_key(k[0]), address_sort_key(k[1]), k[2])):
        p = b.pairs[key]
        t = Table(title=f"{p.client} -> {p.server} {p.protocol} ({p.events} events)", title_justify="left")
        for col in ("function", "from", "category", "count", "unit: addresses [values]"):
            t.add_column(col, overflow="fold")
        for f in sorted(p.functions.values(), key=lambda f: (f.side, f.name)):
            units = []
            for u, ue in sorted(f.units.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
                s = f"{'-' if u is None else u}: {ue.addresses.describe()}"
                if ue.values:
                    s += " [" + ", ".join(f"@{a} {lo:g}..{hi:g}" for a, (lo, hi) in sorted(ue.values.items())[:8]) + "]"
                units.append(s)
            t.add_row(f.name, f.side, f.category, str(f.count), "\n".join(units))
        con.print(t)
        for pe in sorted(p.polls.values(), key=lambda e: (e.side, e.function, str(e.unit), str(e.address))):
            con.print(
                f"  periodic: {pe.describe()}; alert outside [{pe.low:.3f}, {pe.high:.3f}] s, stopped after {pe.stop_after:.1f} s",
                highlight=False,
            )
        if p.sequence:
            con.print(f"  sequence anomalies seen while learning: {p.sequence}", highlight=False)
    if b.accepted:
        t = Table(title="Accepted deviations", title_justify="left")
        for col in ("at", "by", "why", "rule", "alert"):
            t.add_column(col, overflow="fold")
        for a in b.accepted:
            t.add_row(
                str(a.get("at", "")),
                str(a.get("by", "")),
                str(a.get("why", "")),
                str(a.get("rule", "")),
                str(a.get("alert", "")),
            )
        con.print(t)
    return 0


def run_accept(args: argparse.Namespace) -> int:
    from detectors.baseline.accept import AcceptError, accept, alert_from_jsonl, alert_from_store
    from detectors.baseline.model import BaselineFormatError
    from detectors.baseline.yamlio import load, save

    err = Console(stderr=True)
    try:
        b = load(args.baseline)
    except BaselineFormatError as exc:
        err.print(f"[red]icswatch:[/] {exc}", highlight=False)
        return 2
    try:
        if args.alerts:
            rule, details = alert_from_jsonl(args.alerts, args.alert_id)
        else:
            db = args.db
            if not db:
                from icswatch.config import load_config

                db = load_config(args.config).outputs.sqlite
            if not db or not Path(db).exists():
                err.print(f"[red]icswatch:[/] no alert store at {db or '(none configured)'} (use --db or --alerts)")
                return 1
            rule, details = alert_from_store(db, args.alert_id)
        record = accept(b, args.alert_id, rule, details, args.by, args.why)
    except AcceptError as exc:
        err.print(f"[red]icswatch:[/] {exc}", highlight=False)
        return 1
    out = save(b, args.output or args.baseline)
    Console().print(
        f"Accepted {args.alert_id} ({record['rule']}) into {out} by {record['by']}: {record['why']}",
        highlight=False,
    )
    return 0
