"""The ``icswatch`` console script.

Subcommands live one per module in ``icswatch/commands/`` (each exports ``register(subparsers)``), so a
new command is one new file. Exit codes (click's convention): 0 success, 1 failure (an input could
not be read at all, a check failed), 2 usage or configuration error, 3 done but some capture was
damaged (everything before the damage was processed; the damage is reported). Data goes to stdout,
diagnostics to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from icswatch import commands
from icswatch.config import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DAMAGED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icswatch",
        description="ICS security sensor: replay captures or sniff a tap, parse industrial protocols, raise alerts.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 some capture damaged (rest processed).",
    )
    parser.add_argument("--version", action="version", version=f"icswatch {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("icswatch")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
        print("icswatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
