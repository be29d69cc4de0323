"""Expand command-line inputs (files and folders) into capture files, by magic number, not by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sensor.capture import is_capture_file


@dataclass(frozen=True)
class CaptureInput:
    path: Path  # the file
    key: str  # its name relative to the folder given (or its file name)
    explicit: bool  # named on the command line (errors are reported) rather than found in a folder


def expand(inputs: list[str]) -> tuple[list[CaptureInput], list[str]]:
    """(captures in a stable order, problems). Folders are walked recursively; non-captures skipped."""
    found: list[CaptureInput] = []
    problems: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for name in sorted(filenames):
                    f = Path(dirpath) / name
                    if f.is_file() and is_capture_file(f):
                        found.append(CaptureInput(f, f.relative_to(p).as_posix(), False))
        elif p.is_file():
            found.append(CaptureInput(p, p.name, True))
        else:
            problems.append(f"{raw}: no such file or folder")
    return found, problems
