"""Modbus/TCP: MBAP framing across segments, requests paired with responses, MEI and UMAS."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("modbus")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
