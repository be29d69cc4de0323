"""Replay inputs through a target without atheris and show what fails:
``python -m fuzz.reproduce TARGET FILE...`` (a crash file, or a corpus directory). Exit code 1 when
any input fails."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from fuzz.targets import TARGETS


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in TARGETS:
        print(__doc__.strip(), file=sys.stderr)
        print("targets: " + " ".join(TARGETS), file=sys.stderr)
        return 2
    target = importlib.import_module(f"fuzz.targets.{argv[1]}")
    failed = 0
    for arg in argv[2:]:
        path = Path(arg)
        for f in sorted(path.iterdir()) if path.is_dir() else [path]:
            data = f.read_bytes()
            try:
                target.test_one_input(data)
            except Exception:  # noqa: BLE001 - report every failing input, then carry on
                failed += 1
                print(f"== {f} ({len(data)} bytes): {data.hex()}", file=sys.stderr)
                traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
