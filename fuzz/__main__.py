"""Run one fuzz target under atheris: ``python -m fuzz TARGET [libFuzzer flags] [CORPUS_DIR...]``.

The sensor's modules are imported inside ``atheris.instrument_imports`` so their bytecode reports
coverage to libFuzzer (the fuzz harness itself is not instrumented). Every other argument goes to
libFuzzer unchanged, e.g. ``-max_total_time=600 -timeout=10 -max_len=8192 var/fuzz/corpus/modbus``.
``python -m fuzz --list`` prints the target names.
"""

from __future__ import annotations

import importlib
import sys

from fuzz.targets import TARGETS


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        print("targets: " + " ".join(TARGETS), file=sys.stderr)
        return 2
    if argv[1] == "--list":
        print("\n".join(TARGETS))
        return 0
    name = argv[1]
    if name not in TARGETS:
        print(f"unknown fuzz target {name!r}; targets: {' '.join(TARGETS)}", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install -e '.[dev]' on Python < 3.12)", file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["sensor"]):
        target = importlib.import_module(f"fuzz.targets.{name}")
    # libFuzzer takes argv[0] as the program name; the target name is ours, not libFuzzer's
    atheris.Setup([f"{argv[0]} {name}", *argv[2:]], target.test_one_input)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits the process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
