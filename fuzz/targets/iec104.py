"""IEC 60870-5-104: APCI framing, I/S/U formats, ASDU information objects."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("iec104")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
