"""OPC UA binary: HEL/ACK/OPN/MSG/CLO chunks, chunk reassembly, service requests and responses."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("opcua")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
