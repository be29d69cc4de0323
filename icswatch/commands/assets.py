"""``icswatch assets``: the passive asset inventory (docs/assets.md).

- ``icswatch assets [--db FILE]``: the inventory kept in the embedded store (a table);
- ``icswatch assets --from CAPTURES...``: build it from captures directly (``--save`` also merges it
  into the store);
- ``--csv OUT`` / ``--json OUT`` export it (``-`` for stdout: then no table is printed).

Exit codes: 0 ok, 1 nothing to show (no store, no capture could be read).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alerts.records import iso_time

CSV_COLUMNS = (
    "address",
    "ips",
    "mac",
    "mac_vendor",
    "vendor",
    "product",
    "firmware",
    "serial",
    "role",
    "role_reason",
    "client_protocols",
    "server_protocols",
    "units",
    "first_seen",
    "last_seen",
    "events",
    "peer_count",
    "identity",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "assets",
        help="show and export the passive asset inventory",
        description="The hosts seen on the wire: MAC and vendor, role, protocols spoken as client and server, "
        "first/last seen, and the identity devices gave of themselves (Modbus 43/14, CIP ListIdentity, S7 SZL, "
        "BACnet I-Am, OPC UA, DNP3). Read from the embedded store, or built from captures with --from.",
    )
    p.add_argument("--db", metavar="FILE.db", help="SQLite store (default: the configured outputs.sqlite)")
    p.add_argument("--from", dest="captures", nargs="+", metavar="CAPTURE", help="build the inventory from captures")
    p.add_argument("--save", action="store_true", help="with --from: merge the inventory into the store")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="OUT", help="export as CSV ('-' for stdout)")
    out.add_argument("--json", metavar="OUT", help="export as JSON ('-' for stdout)")
    p.add_argument("-c", "--config", help="YAML configuration file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from icswatch.config import load_config

    err = Console(stderr=True)
    cfg = load_config(args.config, args.set)
    db = args.db or cfg.outputs.sqlite
    if args.captures:
        from icswatch.inputs import expand
        from sensor.assets import build_inventory
        from sensor.capture import CaptureError

        captures, problems = expand(args.captures)
        for prob in problems:
            err.print(f"[red]icswatch:[/] {prob}", highlight=False)
        if not captures:
            err.print("[red]icswatch:[/] no capture files to read")
            return 1
        try:
            inventory, _ = build_inventory([c.path for c in captures], cfg.sensor)
        except CaptureError as exc:
            err.print(f"[red]icswatch:[/] {exc}", highlight=False)
            return 1
        if args.save:
            if not db:
                err.print("[red]icswatch:[/] --save needs a store (--db FILE)")
                return 2
            from alerts.asset_store import AssetStore

            with AssetStore(db) as store:
                n = store.save(inventory)
            err.print(f"[dim]{n} asset(s) merged into {db}[/]")
        records = inventory.records()
        shared = inventory.shared_macs()
    else:
        if not db or not Path(db).exists():
            err.print(
                f"[red]icswatch:[/] no asset store at {db or '(none configured)'}; replay captures first or use --from"
            )
            return 1
        from alerts.asset_store import AssetStore

        with AssetStore(db) as store:
            inventory = store.load()
        records = inventory.records()
        shared = inventory.shared_macs()

    to_stdout = (args.csv == "-") or (args.json == "-")
    if args.csv:
        _write(args.csv, to_csv(records))
    if args.json:
        _write(args.json, json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    if not to_stdout:
        print_table(Console(), records, shared)
        if args.csv or args.json:
            err.print(f"[dim]{len(records)} asset(s) written to {args.csv or args.json}[/]")
    return 0


def _write(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def to_csv(records: list[dict[str, Any]]) -> str:
    """One row per asset; lists joined with spaces, protocol counts as ``proto:n``, identity as JSON."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        row = []
        for col in CSV_COLUMNS:
            v = r.get(col)
            if col in ("first_seen", "last_seen") and v:
                v = iso_time(float(v))
            elif col in ("client_protocols", "server_protocols"):
                v = " ".join(f"{k}:{n}" for k, n in (v or {}).items())
            elif col in ("ips", "units"):
                v = " ".join(str(x) for x in (v or []))
            elif col == "identity":
                v = json.dumps(v, ensure_ascii=False, sort_keys=True) if v else ""
            row.append("" if v is None else v)
        w.writerow(row)
    return buf.getvalue()


def print_table(console: Console, records: list[dict[str, Any]], shared: dict[str, int] | None = None) -> None:
    if not records:
        console.print("[yellow]No assets.[/]")
        return
    table = Table(title=f"Assets ({len(records)})", title_justify="left")
    table.add_column("address", no_wrap=True)
    table.add_column("MAC / vendor", overflow="fold")
    table.add_column("role", no_wrap=True)
    for col in ("identity", "client of", "server of", "first / last seen (UTC)", "events"):
        table.add_column(col, overflow="fold")
    for r in records:
        ident = " ".join(x for x in (r.get("vendor"), r.get("product"), r.get("firmware")) if x)
        if r.get("serial"):
            ident += f" (s/n {r['serial']})"
        mac = r.get("mac") or ""
        if r.get("mac_vendor"):
            mac += f"\n{r['mac_vendor']}"
        if shared and r.get("mac") in shared:
            mac += f"\n[dim](router? shared by {shared[r['mac']]} IPs)[/]"
        addr = r["address"]
        aliases = [ip for ip in r.get("ips") or [] if ip != addr]
        if aliases:
            addr += "\n[dim](also " + ", ".join(aliases) + ")[/]"
        table.add_row(
            addr,
            mac,
            r["role"],
            ident,
            ", ".join(r.get("client_protocols") or {}),
            ", ".join(r.get("server_protocols") or {}),
            f"{iso_time(r['first_seen'])[:19]}\n{iso_time(r['last_seen'])[:19]}",
            str(r.get("events", 0)),
        )
    console.print(table)
