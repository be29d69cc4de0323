"""``icswatch linkage``: the enterprise side of reporting to the provincial platform.

    icswatch linkage status [--list [--state pending|sent|failed]] [--json]
    icswatch linkage send [--wait SECONDS] [--retry-failed]
    icswatch linkage advisories [--no-fetch] [--ack ADVISORY_ID [--note TEXT] [--send]]
    icswatch linkage mark INCIDENT_ID [--db var/icswatch.db]     (report an incident whatever its level)
    icswatch linkage show SEQ                                    (the exact bytes queued for the platform)

Configuration: the ``linkage`` section (docs/configuration.md); the secret comes from the variable
named by ``linkage.secret_env`` or ``linkage.secret_file``. Exit codes: 0 ok, 1 failure (platform
unreachable, entries left), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "linkage",
        help="report incidents to the provincial platform; fetch its advisories",
        description="The enterprise side of the province linkage (docs/linkage.md).",
    )
    lsub = p.add_subparsers(dest="linkage_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("-c", "--config", help="YAML configuration file")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
        q.add_argument("--outbox", help="outbox database (linkage.outbox)")

    s = lsub.add_parser("status", help="what waits in the outbox, what was sent, the last error")
    common(s)
    s.add_argument("--list", action="store_true", help="list entries too")
    s.add_argument("--state", choices=("pending", "sent", "failed"))
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=status)

    d = lsub.add_parser("send", help="deliver what is due now (or keep going with --wait)")
    common(d)
    d.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="keep trying until empty or this long")
    d.add_argument("--retry-failed", action="store_true", help="re-queue entries the platform refused")
    d.set_defaults(func=send)

    a = lsub.add_parser("advisories", help="fetch the platform's advisories for this enterprise; acknowledge one")
    common(a)
    a.add_argument("--no-fetch", action="store_true", help="show what was fetched before, offline")
    a.add_argument("--ack", metavar="ADVISORY_ID", help="acknowledge this advisory (queued, then delivered)")
    a.add_argument("--note", default="", help="note sent with the acknowledgement")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=advisories)

    m = lsub.add_parser("mark", help="queue an incident for reporting, whatever its level (analyst's decision)")
    common(m)
    m.add_argument("incident_id")
    m.add_argument("--db", help="enterprise alert store (outputs.sqlite)")
    m.set_defaults(func=mark)

    w = lsub.add_parser("show", help="print the exact body of an outbox entry")
    common(w)
    w.add_argument("seq", type=int)
    w.set_defaults(func=show)

    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), EXIT_USAGE)[1])


def _config(args: argparse.Namespace) -> Any:
    from icswatch.config import load_config

    cfg = load_config(args.config, list(args.set))
    if args.outbox:
        cfg.linkage.outbox = args.outbox
    return cfg


def _outbox(cfg: Any) -> Any:
    from alerts.outbox import Outbox

    return Outbox(cfg.linkage.outbox)


def _forwarder(cfg: Any, box: Any) -> Any:
    from alerts.forwarder import Forwarder, LinkageError

    if not cfg.linkage.url or not cfg.linkage.key_id:
        raise LinkageError("set linkage.url and linkage.key_id (docs/linkage.md)")
    return Forwarder.from_config(cfg, box)


def status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    box = _outbox(cfg)
    try:
        st = box.status()
        st["outbox"] = box.path
        if args.list or args.state:
            st["items"] = box.entries(args.state, args.limit)
    finally:
        box.close()
    if args.json:
        print(json.dumps(st, ensure_ascii=False, indent=1))
        return EXIT_OK
    e = st["entries"]
    print(f"outbox {st['outbox']}: {e['pending']} pending, {e['sent']} sent, {e['failed']} failed")
    print(
        f"incidents: {st['incidents_reported']} reported of {st['incidents_seen']} seen; "
        f"{st['duplicates_acknowledged']} deliveries the platform already had (retries)"
    )
    if st["oldest_pending_age_s"] is not None:
        print(f"oldest pending entry: {st['oldest_pending_age_s']:.0f} s old")
    if st["last_error"]:
        le = st["last_error"]
        print(f"last error (entry {le['seq']}): {le['last_status'] or 'no answer'} {le['last_error']}")
    adv = st["advisories"]
    print(f"advisories: {adv['known']} known, {adv['acknowledged']} acknowledged")
    for it in st.get("items", []):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(it["created_at"]))
        print(
            f"  {it['seq']:>6} {it['state']:<7} {it['kind']:<6} {it['method']:<5} {it['path']:<48} "
            f"tries {it['attempts']:<3} {when}Z {it['last_status'] or ''} {it['last_error'] or ''}".rstrip()
        )
    return EXIT_OK


def send(args: argparse.Namespace) -> int:
    from alerts.forwarder import LinkageError

    cfg = _config(args)
    box = _outbox(cfg)
    try:
        fwd = _forwarder(cfg, box)
    except LinkageError as exc:
        box.close()
        print(f"icswatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.retry_failed:
            n = box.retry_failed()
            print(f"re-queued {n} refused entr{'y' if n == 1 else 'ies'}", file=sys.stderr)
        box.retry_now()
        if args.wait > 0:
            fwd.drain(args.wait)
        else:
            fwd.run_once(max_items=10_000)
        left = box.pending_count()
        s = fwd.stats
        print(
            json.dumps(
                {
                    "sent": s.sent,
                    "duplicates": s.duplicates,
                    "retried": s.retried,
                    "failed": s.failed,
                    "pending": left,
                    "last_error": s.last_error or None,
                }
            )
        )
        return EXIT_OK if left == 0 else EXIT_FAIL
    finally:
        fwd.close()
        box.close()


def advisories(args: argparse.Namespace) -> int:
    from alerts.forwarder import LinkageError

    cfg = _config(args)
    box = _outbox(cfg)
    try:
        if not args.no_fetch:
            try:
                fwd = _forwarder(cfg, box)
            except LinkageError as exc:
                print(f"icswatch: {exc}", file=sys.stderr)
                return EXIT_USAGE
            try:
                res = fwd.fetch_advisories()
                if args.ack:
                    box.acknowledge(args.ack, args.note)
                    fwd.drain(10.0)
            finally:
                fwd.close()
            if not res.ok:
                print(f"icswatch: fetching advisories failed: {res.status or 'no answer'} {res.error}", file=sys.stderr)
                return EXIT_FAIL
        elif args.ack:
            box.acknowledge(args.ack, args.note)
        items = box.advisories()
    finally:
        box.close()
    if args.json:
        print(json.dumps(items, ensure_ascii=False, indent=1))
        return EXIT_OK
    for a in items:
        acked = "acknowledged" if (a.get("acknowledged_at") or a.get("local_acked_at")) else "NOT acknowledged"
        print(
            f"{a['id']}  [{a.get('kind', '')}/{a.get('severity', '')}]  {a.get('issued_at', '')}  {acked}\n"
            f"  {a.get('title', '')}"
        )
    if not items:
        print("no advisories")
    return EXIT_OK


def mark(args: argparse.Namespace) -> int:
    from alerts.outbox import OutboxWriter
    from alerts.sqlite_store import SQLiteStore
    from alerts.store import AlertQuery

    cfg = _config(args)
    db = args.db or cfg.outputs.sqlite
    if not db:
        print("icswatch: no alert store: pass --db", file=sys.stderr)
        return EXIT_USAGE
    store = SQLiteStore(db)
    try:
        doc = store.get_incident(args.incident_id)
        if doc is None:
            print(f"icswatch: no incident {args.incident_id} in {db}", file=sys.stderr)
            return EXIT_FAIL
        alerts = store.search_alerts(AlertQuery(incident_id=args.incident_id, sort="ts", limit=200)).items
    finally:
        store.close()
    writer = OutboxWriter.from_config(cfg)
    try:
        n = writer.mark(doc, alerts)
    finally:
        writer.close()
    print(json.dumps({"incident_id": args.incident_id, "queued": n}))
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    box = _outbox(cfg)
    try:
        body = box.body(args.seq)
    finally:
        box.close()
    if body is None:
        print(f"icswatch: no entry {args.seq}", file=sys.stderr)
        return EXIT_FAIL
    try:
        print(json.dumps(json.loads(body), ensure_ascii=False, indent=1))
    except ValueError:
        sys.stdout.write(body.decode("utf-8", "replace"))
    return EXIT_OK
