"""``icswatch serve`` (the enterprise SOC API and dashboard) and ``icswatch token`` (its API tokens).

    icswatch serve [-c CONFIG] [--host 127.0.0.1] [--port 8500] [--workers N]
                   [--ssl-certfile CERT --ssl-keyfile KEY] [--db var/icswatch.db] [--state-db FILE]
    icswatch token issue --role viewer|analyst|admin --name NAME [--days N]   # prints the token once
    icswatch token list
    icswatch token revoke TOKEN_ID

The API (api/enterprise, docs/api.md) runs under uvicorn; flags override the ``api`` section of the
configuration. Several workers share the state file (tokens, audit log, jobs); rate limits are per
worker. Exit codes: 0 ok, 1 failure (cannot listen, unknown token), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the enterprise SOC API and dashboard",
        description="Serve the enterprise API (/api/v1, OpenAPI docs at /docs) and the dashboard (/) over the alert "
        "store, with uvicorn. Every route needs an API token (icswatch token issue) except /api/v1/health.",
    )
    _common(p)
    p.add_argument("--host", help="address to listen on (api.host, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (api.port, default 8500)")
    p.add_argument("--workers", type=int, help="worker processes (api.workers, default 1)")
    p.add_argument("--ssl-certfile", metavar="PEM", help="serve HTTPS with this certificate (and --ssl-keyfile)")
    p.add_argument("--ssl-keyfile", metavar="PEM", help="private key of --ssl-certfile")
    p.add_argument("--db", metavar="FILE.db", help="SQLite alert store (outputs.sqlite, default var/icswatch.db)")
    p.add_argument("--upload-dir", metavar="DIR", help="where uploaded captures and replay datasets go (api.upload_dir)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run_serve)

    t = sub.add_parser(
        "token",
        help="issue, list and revoke API tokens",
        description="API tokens for `icswatch serve`: the token is printed once, only its SHA-256 is kept.",
    )
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION")
    q = tsub.add_parser("issue", help="issue a token (printed once on stdout)")
    _common(q)
    q.add_argument("--role", required=True, choices=("viewer", "analyst", "admin"))
    q.add_argument("--name", required=True, help="who or what uses it (shown in the audit log)")
    q.add_argument("--days", type=float, help="expires after this many days (default: never)")
    q.set_defaults(func=run_issue)
    q = tsub.add_parser("list", help="list tokens (never the tokens themselves)")
    _common(q)
    q.set_defaults(func=run_list)
    q = tsub.add_parser("revoke", help="revoke a token at once")
    _common(q)
    q.add_argument("token_id", metavar="TOKEN_ID")
    q.set_defaults(func=run_revoke)
    t.set_defaults(func=lambda args: (t.print_help(sys.stderr), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML configuration file (the sensor's: same store, rules, linkage)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--state-db", metavar="FILE.db", help="the API's state file: tokens, audit log, jobs (api.state_db)")


def settings_from_args(args: argparse.Namespace) -> Any:
    from api.enterprise.settings import EnterpriseSettings
    from icswatch.config import ConfigError, load_config

    cfg = load_config(args.config, args.set)
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "workers": getattr(args, "workers", None),
        "ssl_certfile": getattr(args, "ssl_certfile", None),
        "ssl_keyfile": getattr(args, "ssl_keyfile", None),
        "state_db": getattr(args, "state_db", None),
        "upload_dir": getattr(args, "upload_dir", None),
    }
    try:
        return EnterpriseSettings.from_config(cfg, db=getattr(args, "db", None), **overrides)
    except ValueError as exc:
        raise ConfigError(f"api: {exc}") from None


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.enterprise.settings import ENV
    from api.enterprise.state import StateStore

    settings = settings_from_args(args)
    api = settings.api
    for path in (api.ssl_certfile, api.ssl_keyfile):
        if path and not os.path.isfile(path):
            print(f"icswatch serve: no such file: {path}", file=sys.stderr)
            return 2
    state = StateStore(settings.state_db)  # migrate once here, before the workers start
    has_tokens = bool(state.tokens())
    state.close()
    if not has_tokens:
        print("icswatch serve: no API token yet; issue one: icswatch token issue --role admin --name NAME", file=sys.stderr)
    os.environ[ENV] = settings.to_json()
    scheme = "https" if api.ssl_certfile else "http"
    print(f"icswatch serve: {scheme}://{api.host}:{api.port}/ (API /api/v1, docs /docs), alert store {settings.db}", file=sys.stderr)
    try:
        uvicorn.run(
            "api.enterprise.app:app_from_env",
            factory=True,
            host=api.host,
            port=api.port,
            workers=api.workers if api.workers > 1 else None,
            ssl_certfile=api.ssl_certfile,
            ssl_keyfile=api.ssl_keyfile,
            log_level=args.log_level,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=5,
        )
    except OSError as exc:
        print(f"icswatch serve: cannot listen on {api.host}:{api.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _state(args: argparse.Namespace) -> Any:
    from api.enterprise.state import StateStore

    return StateStore(settings_from_args(args).state_db)


def run_issue(args: argparse.Namespace) -> int:
    from api.enterprise.auth import issue_token

    state = _state(args)
    try:
        token_id, token = issue_token(state, args.name, args.role, by="cli", days=args.days)
    except ValueError as exc:
        print(f"icswatch token: {exc}", file=sys.stderr)
        return 2
    finally:
        state.close()
    print(token)
    print(f"icswatch token: issued {token_id} ({args.role}) for {args.name}; this is the only time the token is shown",
          file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    state = _state(args)
    try:
        toks = state.tokens()
    finally:
        state.close()

    def t(v: float | None) -> str:
        return datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%d %H:%M") if v else "-"

    print(f"{'id':18} {'role':8} {'created':17} {'expires':17} {'last used':17} {'state':8} name")
    for r in toks:
        st = "revoked" if r.revoked_at else "active"
        print(f"{r.id:18} {r.role:8} {t(r.created_at):17} {t(r.expires_at):17} {t(r.last_used_at):17} {st:8} {r.name}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    state = _state(args)
    try:
        if state.token(args.token_id) is None:
            print(f"icswatch token: no token {args.token_id}", file=sys.stderr)
            return 1
        done = state.revoke_token(args.token_id)
    finally:
        state.close()
    print(f"icswatch token: {args.token_id} {'revoked' if done else 'was already revoked'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m icswatch.commands.serve serve|token ...``: these commands alone, without importing every
    other command (some pull in scikit-learn: seconds of start-up a service restart does not need)."""
    from icswatch.cli import EXIT_USAGE
    from icswatch.config import ConfigError

    parser = argparse.ArgumentParser(prog="icswatch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"icswatch: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
