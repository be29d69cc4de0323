"""``icswatch province``: run the provincial platform and administer it on its host.

    icswatch province serve [--host 127.0.0.1] [--port 8600] [--db var/province.db] [--store sqlite|es --es-url URL]
    icswatch province enterprise add --id E1 --name ... --uscc ... --city ... --industry ... --class 2 [--cii]
    icswatch province enterprise list [--json]
    icswatch province credential issue|list ENTERPRISE_ID      (issue prints the secret once, on stdout)
    icswatch province credential rotate KEY_ID [--overlap-hours 168]
    icswatch province credential revoke KEY_ID
    icswatch province token issue --name NAME --role analyst|admin [--days N]
    icswatch province token list | revoke TOKEN_ID

The admin commands work on the database directly (run them on the platform host, as the service
user) and write an audit entry each, with the actor ``cli:<login>``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "province",
        help="the provincial platform: serve it, manage enterprises, keys and tokens",
        description="Run and administer the provincial platform (docs/linkage.md).",
    )
    psub = p.add_subparsers(dest="province_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", help="platform database (default var/province.db or ICSWATCH_PROVINCE_DB)")
        q.add_argument(
            "--master-key-file", help="master key file (default <db>.key; ICSWATCH_PROVINCE_MASTER_KEY overrides)"
        )
        q.add_argument(
            "--store",
            choices=("sqlite", "es"),
            help="where incidents, advisories and the audit log live (default sqlite or ICSWATCH_PROVINCE_STORE); "
            "with es the registry, keys and tokens stay in --db",
        )
        q.add_argument(
            "--es-url",
            action="append",
            metavar="URL",
            help="Elasticsearch node for --store es (repeatable; default ICSWATCH_PROVINCE_ES_URLS or ICSWATCH_ES_URL)",
        )

    s = psub.add_parser("serve", help="run the platform (API + dashboard) with uvicorn")
    common(s)
    s.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1: put a TLS reverse proxy in front)"
    )
    s.add_argument("--port", type=int, default=8600)
    s.add_argument("--root-path", default="", help="path prefix the reverse proxy serves the platform under")
    s.add_argument("--ssl-certfile", help="serve TLS directly with this certificate (PEM)")
    s.add_argument("--ssl-keyfile", help="the certificate's key (PEM)")
    s.add_argument(
        "--ssl-client-ca",
        metavar="PEM",
        help="require a client certificate issued by this CA (mutual TLS; with --ssl-certfile); docs/tls.md",
    )
    s.add_argument(
        "--rate-limit", type=float, help="requests per second per enterprise key or staff token (0 = no limit)"
    )
    s.add_argument("--max-body", type=int, help="largest request body in bytes")
    s.add_argument("--clock-skew", type=float, help="accepted timestamp difference in seconds")
    s.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--access-log", action="store_true", help="uvicorn's access log (the audit log is always kept)")
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes sharing the port and the database (default 1: more add capacity only "
        "with idle cores to run them; docs/linkage.md, Throughput)",
    )
    s.set_defaults(func=serve)

    e = psub.add_parser("enterprise", help="the enterprise registry")
    esub = e.add_subparsers(dest="enterprise_command", metavar="ACTION")
    ea = esub.add_parser("add", help="register an enterprise")
    common(ea)
    ea.add_argument("--id", required=True, help="short id (the sensor's sensor.enterprise_id)")
    ea.add_argument("--name", required=True)
    ea.add_argument("--uscc", required=True, help="unified social credit code (18 characters, checked)")
    ea.add_argument("--city", required=True)
    ea.add_argument("--industry", required=True)
    ea.add_argument(
        "--class",
        dest="security_class",
        type=int,
        required=True,
        choices=(1, 2, 3),
        help="MIIT security class: 1 一级, 2 二级, 3 三级",
    )
    ea.add_argument("--cii", action="store_true", help="operates critical information infrastructure (1 h deadline)")
    ea.add_argument("--contact", action="append", default=[], metavar="NAME,PHONE,EMAIL", help="repeatable")
    ea.set_defaults(func=enterprise_add)
    el = esub.add_parser("list", help="list enterprises")
    common(el)
    el.add_argument("--json", action="store_true")
    el.set_defaults(func=enterprise_list)

    c = psub.add_parser("credential", help="enterprise keys: issue, list, rotate, revoke")
    csub = c.add_subparsers(dest="credential_command", metavar="ACTION")
    ci = csub.add_parser("issue", help="issue a key id + secret (the secret is printed once)")
    common(ci)
    ci.add_argument("enterprise_id")
    ci.add_argument("--note", default="")
    ci.set_defaults(func=credential_issue)
    cl = csub.add_parser("list", help="an enterprise's keys")
    common(cl)
    cl.add_argument("enterprise_id")
    cl.set_defaults(func=credential_list)
    cr = csub.add_parser("rotate", help="issue a successor; the old key works during the overlap")
    common(cr)
    cr.add_argument("key_id")
    cr.add_argument("--overlap-hours", type=float, default=168.0)
    cr.set_defaults(func=credential_rotate)
    cv = csub.add_parser("revoke", help="revoke a key at once")
    common(cv)
    cv.add_argument("key_id")
    cv.set_defaults(func=credential_revoke)

    t = psub.add_parser("token", help="bearer tokens of province analysts and admins")
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION")
    ti = tsub.add_parser("issue", help="issue a token (printed once)")
    common(ti)
    ti.add_argument("--name", required=True)
    ti.add_argument("--role", required=True, choices=("analyst", "admin"))
    ti.add_argument("--days", type=float, help="lifetime in days (default: until revoked)")
    ti.set_defaults(func=token_issue)
    tl = tsub.add_parser("list", help="list tokens")
    common(tl)
    tl.set_defaults(func=token_list)
    tr = tsub.add_parser("revoke", help="revoke a token")
    common(tr)
    tr.add_argument("token_id")
    tr.set_defaults(func=token_revoke)

    p.set_defaults(func=lambda a: _help(p))
    for parser, name in ((e, "enterprise"), (c, "credential"), (t, "token")):
        parser.set_defaults(func=lambda a, parser=parser: _help(parser))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from api.province.settings import ProvinceSettings

    urls = [u.strip() for given in (args.es_url or []) for u in given.split(",") if u.strip()] or None
    return ProvinceSettings.from_env(
        db=args.db, master_key_file=args.master_key_file, store=args.store, es_urls=urls, **extra
    )


class _Admin:
    """Store + secret box + an audit trail for one CLI action."""

    def __init__(self, args: argparse.Namespace) -> None:
        from api.province.keys import SecretBox, load_master_key, verify_master
        from api.province.stores import open_store

        self.settings = _settings(args)
        self.store = open_store(self.settings)  # with --store es the audit entries go where the API's go
        self.box = SecretBox(load_master_key(self.settings.key_path(), self.settings.create_master_key))
        verify_master(self.store, self.box)
        try:
            self.actor = "cli:" + getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in a container
            self.actor = "cli"

    def audit(self, action: str, resource: str, ok: bool = True, detail: str = "") -> None:
        from api.province.store import AuditEntry

        self.store.write_audit(
            [
                AuditEntry(
                    time.time(),
                    self.actor,
                    "admin",
                    "",
                    "CLI",
                    "",
                    action,
                    resource,
                    0 if ok else 1,
                    "ok" if ok else "invalid",
                    detail,
                    "local",
                    "",
                )
            ]
        )

    def close(self) -> None:
        self.store.close()


def _run_admin(args: argparse.Namespace, fn: Any) -> int:
    from api.province.errors import ApiError
    from api.province.keys import MasterKeyError
    from api.province.store import StoreError

    try:
        admin = _Admin(args)
    except (MasterKeyError, StoreError) as exc:
        print(f"icswatch: {exc}", file=sys.stderr)
        return EXIT_FAIL
    try:
        return int(fn(admin) or 0)
    except ApiError as exc:
        print(f"icswatch: {exc.message}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        admin.close()


# -- serve ---------------------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import ssl

    import uvicorn

    from api.province.app import create_app
    from api.province.keys import MasterKeyError
    from api.province.store import StoreError

    if args.ssl_client_ca and not args.ssl_certfile:
        print("icswatch: --ssl-client-ca needs --ssl-certfile and --ssl-keyfile (TLS served here)", file=sys.stderr)
        return EXIT_USAGE
    extra = {
        k: v
        for k, v in (("max_body", args.max_body), ("clock_skew", args.clock_skew), ("rate_limit", args.rate_limit))
        if v is not None
    }
    if args.workers < 1:
        print("icswatch: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.workers > 1:
            st = _prepare_workers(_settings(args, **extra))
            app: Any = "icswatch.commands.province:worker_app"  # each worker builds its own (factory)
        else:
            app = create_app(_settings(args, **extra))
            st = app.state.settings
            _tune_gc()
    except (MasterKeyError, StoreError) as exc:
        print(f"icswatch: {exc}", file=sys.stderr)
        return EXIT_FAIL
    where = f"database {st.db}"
    if st.store == "es":
        where += f"; incidents, advisories and the audit log in Elasticsearch, indices {st.es_index_prefix}-*"
    if args.workers > 1:
        where += f"; {args.workers} worker processes"
    print(
        f"icswatch province: serving on http{'s' if args.ssl_certfile else ''}://{args.host}:{args.port}/ ({where})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        factory=args.workers > 1,
        workers=args.workers,
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        log_level=args.log_level,
        access_log=args.access_log,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_ca_certs=args.ssl_client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if args.ssl_client_ca else ssl.CERT_NONE,
        proxy_headers=False,  # the audit middleware reads X-Forwarded-For from trusted proxies itself
        server_header=False,
    )
    return EXIT_OK


WORKER_SETTINGS_ENV = "_ICSWATCH_PROVINCE_WORKER_SETTINGS"  # the parent's settings, as JSON, for its workers


def _prepare_workers(settings: Any) -> Any:
    """Before the workers start: migrate the database, make or check the master key (the workers must not
    race to do either), and hand them the settings resolved from flags, variables and defaults."""
    import os

    from api.province.keys import SecretBox, load_master_key, verify_master
    from api.province.stores import open_store

    store = open_store(settings)
    try:
        verify_master(store, SecretBox(load_master_key(settings.key_path(), settings.create_master_key)))
    finally:
        store.close()
    os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
    return settings


def worker_app() -> Any:
    """The app of one ``serve --workers N`` worker process (uvicorn calls it: ``factory=True``)."""
    import os

    from api.province.app import create_app
    from api.province.settings import ProvinceSettings

    raw = os.environ.get(WORKER_SETTINGS_ENV)
    app = create_app(ProvinceSettings.model_validate_json(raw) if raw else ProvinceSettings.from_env())
    _tune_gc()
    return app


def _tune_gc() -> None:
    """Once the app is built: move its long-lived objects (routes, models, schemas) out of the cyclic
    collector's generations, and collect the young generation less often. Under load a request leaves
    almost no cycles behind, yet the default thresholds run a collection every few requests and a full
    one (walking every object of the app) every few hundred: about a tenth of the intake's CPU."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


# -- registry ---------------------------------------------------------------------------------------------


def enterprise_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from api.province.models import EnterpriseIn
    from api.province.service import ProvinceService

    contacts = []
    for c in args.contact:
        parts = [x.strip() for x in c.split(",")]
        contacts.append(
            {"name": parts[0], "phone": parts[1] if len(parts) > 1 else "", "email": parts[2] if len(parts) > 2 else ""}
        )
    try:
        data = EnterpriseIn(
            id=args.id,
            name=args.name,
            uscc=args.uscc,
            city=args.city,
            industry=args.industry,
            security_class=args.security_class,
            cii=args.cii,
            contacts=contacts,
        )
    except ValidationError as exc:
        for e in exc.errors(include_input=False):
            print(f"icswatch: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}", file=sys.stderr)
        return EXIT_USAGE

    def act(admin: _Admin) -> int:
        e = ProvinceService(admin.store, admin.settings).add_enterprise(data)
        admin.audit("enterprise add", f"enterprise:{e.id}")
        print(
            json.dumps(
                {"id": e.id, "name": e.name, "city": e.city, "industry": e.industry, "cii": e.cii}, ensure_ascii=False
            )
        )
        return EXIT_OK

    return _run_admin(args, act)


def enterprise_list(args: argparse.Namespace) -> int:
    def act(admin: _Admin) -> int:
        items, cursor = [], None
        while True:
            page = admin.store.list_enterprises(limit=1000, cursor=cursor)
            items.extend(page.items)
            cursor = page.next_cursor
            if not cursor:
                break
        if args.json:
            from dataclasses import asdict

            print(json.dumps([asdict(e) for e in items], ensure_ascii=False, indent=1))
        else:
            for e in items:
                flags = ("CII " if e.cii else "") + ("" if e.active else "inactive")
                print(f"{e.id}\t{e.name}\t{e.uscc}\t{e.city}\t{e.industry}\tclass {e.security_class}\t{flags}".rstrip())
        return EXIT_OK

    return _run_admin(args, act)


# -- credentials and tokens -------------------------------------------------------------------------------


def credential_issue(args: argparse.Namespace) -> int:
    from api.province import auth

    def act(admin: _Admin) -> int:
        key_id, secret = auth.issue_credential(admin.store, admin.box, args.enterprise_id, args.note)
        admin.audit("credential issue", f"credential:{key_id}", detail=f"enterprise {args.enterprise_id}")
        print(json.dumps({"key_id": key_id, "secret": secret, "enterprise_id": args.enterprise_id}))
        print("icswatch: the secret is shown once: give it to the enterprise over a secure channel", file=sys.stderr)
        return EXIT_OK

    return _run_admin(args, act)


def credential_list(args: argparse.Namespace) -> int:
    from api.province.routers.credentials import view

    def act(admin: _Admin) -> int:
        now = time.time()
        for c in admin.store.list_credentials(args.enterprise_id):
            print(json.dumps(view(c, now), ensure_ascii=False))
        return EXIT_OK

    return _run_admin(args, act)


def credential_rotate(args: argparse.Namespace) -> int:
    from api.province import auth
    from api.province.models import iso

    def act(admin: _Admin) -> int:
        new_id, secret, ends = auth.rotate_credential(admin.store, admin.box, args.key_id, args.overlap_hours * 3600)
        admin.audit("credential rotate", f"credential:{args.key_id}", detail=f"successor {new_id}")
        print(
            json.dumps(
                {"key_id": new_id, "secret": secret, "previous_key_id": args.key_id, "previous_expires_at": iso(ends)}
            )
        )
        return EXIT_OK

    return _run_admin(args, act)


def credential_revoke(args: argparse.Namespace) -> int:
    from api.province import auth

    def act(admin: _Admin) -> int:
        changed = auth.revoke_credential(admin.store, args.key_id)
        admin.audit("credential revoke", f"credential:{args.key_id}", detail="" if changed else "already revoked")
        print(json.dumps({"key_id": args.key_id, "revoked": True, "already_revoked": not changed}))
        return EXIT_OK

    return _run_admin(args, act)


def token_issue(args: argparse.Namespace) -> int:
    from api.province import auth

    def act(admin: _Admin) -> int:
        token_id, token = auth.issue_token(admin.store, args.name, args.role, args.days)
        admin.audit("token issue", f"token:{token_id}", detail=args.role)
        print(json.dumps({"token_id": token_id, "token": token, "role": args.role}))
        return EXIT_OK

    return _run_admin(args, act)


def token_list(args: argparse.Namespace) -> int:
    from api.province.models import iso

    def act(admin: _Admin) -> int:
        for t in admin.store.list_tokens():
            print(
                json.dumps(
                    {
                        "token_id": t.token_id,
                        "name": t.name,
                        "role": t.role,
                        "created_at": iso(t.created_at),
                        "expires_at": iso(t.expires_at),
                        "revoked_at": iso(t.revoked_at),
                    },
                    ensure_ascii=False,
                )
            )
        return EXIT_OK

    return _run_admin(args, act)


def token_revoke(args: argparse.Namespace) -> int:
    def act(admin: _Admin) -> int:
        ok = admin.store.revoke_token(args.token_id, time.time())
        admin.audit("token revoke", f"token:{args.token_id}", ok=ok)
        if not ok:
            print(f"icswatch: no active token {args.token_id}", file=sys.stderr)
            return EXIT_FAIL
        print(json.dumps({"token_id": args.token_id, "revoked": True}))
        return EXIT_OK

    return _run_admin(args, act)


def main(argv: list[str] | None = None) -> int:
    """``python -m icswatch.commands.province ...``: the same commands without loading every other
    icswatch command (the platform host needs none of the sensor's detectors)."""
    parser = argparse.ArgumentParser(prog="icswatch")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["province", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
