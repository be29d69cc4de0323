"""One module per fuzz target; each defines ``test_one_input(data: bytes) -> None``.

``TARGETS`` is the run order of ``make fuzz`` (readers and lower layers first).
"""

TARGETS = (
    "capture",
    "decode",
    "flows",
    "modbus",
    "dnp3",
    "s7comm",
    "iec104",
    "enip",
    "bacnet",
    "opcua",
    "ident",
)
