"""Hand the heap the sensor freed back to the operating system, now and then (glibc only).

Why: a sensor lives for months. CPython returns small objects to its own pools, but glibc keeps the
pages of freed heap for later, and a long-lived process whose allocation sizes vary (bulk bodies
for Elasticsearch, HTTP buffers of the forwarder, SQLite pages, alert documents) sees its RSS creep
up in steps even when what it really uses is flat: the soak (docs/soak.md) measured +30 MB over an
hour with no Python object leaking, most of which ``malloc_trim`` gave back. ``malloc_trim(0)``
returns every free page, in the middle of the heap too (glibc >= 2.8); it takes a few milliseconds
on a heap of a few hundred MB, so once a minute costs nothing measurable.

Elsewhere (musl, macOS) there is no ``malloc_trim``: the trimmer does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """``maybe_trim()`` is cheap to call often (one clock read); it trims at most every ``every`` seconds
    of wall time (0: never)."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._trim = _malloc_trim() if every > 0 else None
        self._due = time.monotonic() + every
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        if self._trim is None:
            return False
        now = time.monotonic()
        if now < self._due:
            return False
        self._due = now + self.every
        self._trim(0)
        self.trims += 1
        return True
