"""DNP3 over TCP and UDP: link frames and CRCs, transport reassembly, application objects."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("dnp3")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
