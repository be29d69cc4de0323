"""``icswatch inspect``: per-file protocol counts in the shape of GROUND_TRUTH.json (tshark's counting)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from icswatch.config import load_config
from icswatch.inputs import expand
from sensor.capture import CaptureError
from sensor.pipeline import Pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="count PDUs and functions per protocol in captures (GROUND_TRUTH.json shape)",
        description="Print ONE JSON object: {file: {packets, protocols: {proto: {pdus, func_hist}}}}. "
        "Keys are paths relative to the folder given, or the file name. Damaged files keep their entry "
        "with an 'error' field and the counts of what came before the damage.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE|DIR")
    p.add_argument("--json", action="store_true", help="JSON output (the default and only format today)")
    p.add_argument("-c", "--config", help="YAML configuration file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=run)


def inspect_files(inputs: list[str], config: Any = None) -> tuple[dict[str, Any], list[str], bool]:
    """(result object, problems, any damaged). Shared by the CLI and the tests."""
    captures, problems = expand(inputs)
    out: dict[str, Any] = {}
    damaged = False
    for cap in captures:
        pipeline = Pipeline(config)
        try:
            result = pipeline.replay_file(cap.path)
        except CaptureError as exc:
            problems.append(str(exc))
            out[cap.key] = {"packets": 0, "protocols": {}, "error": str(exc)}
            damaged = True
            continue
        entry = result.ground_truth()
        if result.error:
            damaged = True
            problems.append(f"{cap.path}: {result.error} ({result.packets} packets before it were processed)")
        out[cap.key] = entry
    return out, problems, damaged


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    out, problems, damaged = inspect_files(args.inputs, config.sensor)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    for line in problems:
        print(f"icswatch: {line}", file=sys.stderr)
    if not out:
        return 1
    if any("no such file" in p or "not a pcap" in p or "empty file" in p or "cannot open" in p for p in problems):
        return 1
    return 3 if damaged else 0
