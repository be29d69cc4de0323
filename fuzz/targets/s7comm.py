"""ISO-on-TCP (port 102): TPKT/COTP, S7comm, S7comm-plus identification and IEC 61850 MMS."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("s7comm")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
