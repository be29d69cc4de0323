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

# Commands that push packets through the sensor pipeline.
PIPELINE_COMMANDS = frozenset({"replay", "inspect", "sniff", "learn", "train", "eval", "assets", "rules"})


def tune_gc_for_packets() -> None:
    """Run CPython's cyclic collector in larger batches while packets flow.

    The per-packet path makes no reference cycles (a flow's cycles, its streams' callbacks pointing
    back at it, are broken when it closes: ``FlowTable.close``), so the collector has little to find;
    with the default thresholds it still ran every 700 net allocations and its older generations kept
    walking every live flow, event window and rule state. Under a SYN flood that was half the CPU
    (docs/hostile-traffic.md), on plant traffic 5-10% of ``replay``. What was imported before the
    first packet is frozen out of the collector's walks for good.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _command_modules() -> list[str]:
    return sorted(i.name for i in pkgutil.iter_modules(commands.__path__) if not i.name.startswith("_"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that command module: commands that need heavy
    libraries (scikit-learn, FastAPI...) import them only when they are the one being run."""
    parser = argparse.ArgumentParser(
        prog="icswatch",
        description="ICS security sensor: replay captures or sniff a tap, parse industrial protocols, raise alerts.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage/config error, 3 some capture damaged (rest processed).",
    )
    parser.add_argument("--version", action="version", version=f"icswatch {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"{commands.__name__}.{name}")
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
    from alerts import logsafe

    logsafe.install()  # no secret in any log line of any command (alerts/logsafe.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    # Most commands live in a module of the same name: load just that one (fast start); anything else
    # (help, a command registered by another module, a typo) gets the full parser and its messages.
    parser = build_parser(only=first) if first in _command_modules() and "-h" not in argv[:1] else build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command in PIPELINE_COMMANDS:
        tune_gc_for_packets()
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
