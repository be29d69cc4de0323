"""The identification protocols: PROFINET DCP/RT and CM, GOOSE and SV, FINS, MELSEC, HART-IP,
C37.118, Niagara Fox and Beckhoff ADS, on every transport and port each one is registered on (the
selector byte picks one)."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("profinet_dcp", "profinet_io", "goose", "sv", "fins", "melsec", "hart_ip", "c37118", "fox", "ads")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
