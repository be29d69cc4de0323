"""BACnet/IP (BVLC, NPDU, APDU, segmentation) over UDP and BACnet/Ethernet (LLC SAP 0x82)."""

from __future__ import annotations

from fuzz.driver import modes_of, run

MODES = modes_of("bacnet")


def test_one_input(data: bytes) -> None:
    run(MODES, data)
