"""EtherNet/IP encapsulation over TCP and UDP (44818, 2222 I/O) and the CIP messages inside it."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("enip")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
