"""Regenerate every crafted capture in pcaps/ by running each script in tools/pcapgen/ (`make pcaps`).

The scripts are deterministic: regenerated captures are byte-identical, which the tests check.
"""

from __future__ import annotations

import pkgutil
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import tools.pcapgen as pcapgen

    for info in sorted(pkgutil.iter_modules(pcapgen.__path__), key=lambda i: i.name):
        if info.name == "common" or info.name.startswith("_"):
            continue
        print(f"== tools.pcapgen.{info.name}")
        runpy.run_module(f"tools.pcapgen.{info.name}", run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
