"""Crafted EtherNet/IP + CIP captures: ``pcaps/enip_normal.pcap`` and ``pcaps/enip_attack.pcap``.

Run as ``python -m tools.pcapgen.enip``. The byte builders at the top are pure (no scapy objects) and
are reused by tests/test_enip.py for its vectors; scapy only wraps the finished payloads into
Ethernet/IP/TCP (or UDP) packets.

Plant (10.0.30.0/24): ControlLogix PLC 10.0.30.10 (1756-L61, vendor 1) with a 1756-ENBT in slot 1
and a CompactLogix 10.0.30.11; HMI 10.0.30.2 (reads tags, writes one set point); engineering
station 10.0.30.5 (ListIdentity, identity reads); an I/O adapter 10.0.30.20 exchanging class 1
I/O with the PLC on UDP 2222. The attacker in the attack capture is 10.0.30.66.

Normal: RegisterSession, unconnected Read Tag (SendRRData) and connected Read Tag / Multiple
Service Packet (Forward Open, SendUnitData), a set point Write Tag, ListIdentity and Get
Attributes All of the Identity object from the engineering station, Forward Close, UnRegister,
class 1 I/O. Attack: ListIdentity scan of 10.0.30.1-40 over UDP, Identity Reset (0x05 on class
1) direct and through Unconnected Send to slot 1, controller Stop/Start (class 0x8E), a firmware
update attempt (class 0xA1, refused), Set Attribute Single on the Identity object (refused) and on
the TCP/IP interface object (0xF5), a File object (0x37) program download and upload, a Large
Forward Open, and a Write Tag from the unknown host.
"""

from __future__ import annotations

import struct
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Pure byte builders (CIP Vol. 2 ch. 2 encapsulation and CPF; Vol. 1 ch. 2 / 3-5 / App. C)
# --------------------------------------------------------------------------------------------------

PLC, PLC2, HMI, ENG, ADAPTER, ATTACKER = (
    "10.0.30.10",
    "10.0.30.11",
    "10.0.30.2",
    "10.0.30.5",
    "10.0.30.20",
    "10.0.30.66",
)


def encap(
    command: int, data: bytes = b"", session: int = 0, status: int = 0, context: bytes = b"\0" * 8, options: int = 0
) -> bytes:
    """Encapsulation header (24 bytes) + command data."""
    return struct.pack("<HHII8sI", command, len(data), session, status, context, options) + data


def item(itype: int, data: bytes = b"") -> bytes:
    return struct.pack("<HH", itype, len(data)) + data


def cpf(*items: bytes) -> bytes:
    return struct.pack("<H", len(items)) + b"".join(items)


def ctx(n: int) -> bytes:
    """A sender context: 8 bytes the client chooses and the server echoes."""
    return struct.pack("<Q", 0x1C5A7C4000000000 | n)


def register_session(session: int = 0, context: bytes = b"\0" * 8) -> bytes:
    return encap(0x65, struct.pack("<HH", 1, 0), session, context=context)


def unregister_session(session: int) -> bytes:
    return encap(0x66, b"", session)


def send_rr_data(cip: bytes, session: int, context: bytes, status: int = 0, timeout: int = 5) -> bytes:
    """SendRRData: interface handle 0, timeout, CPF (null address, unconnected data)."""
    return encap(0x6F, struct.pack("<IH", 0, timeout) + cpf(item(0x0000), item(0x00B2, cip)), session, status, context)


def send_unit_data(cip: bytes, session: int, connection_id: int, seq: int) -> bytes:
    """SendUnitData: CPF (connected address, connected data = sequence count + CIP)."""
    return encap(
        0x70,
        struct.pack("<IH", 0, 0)
        + cpf(item(0x00A1, struct.pack("<I", connection_id)), item(0x00B1, struct.pack("<H", seq) + cip)),
        session,
    )


def list_identity_request(context: bytes = b"\0" * 8) -> bytes:
    return encap(0x63, b"", context=context)


def identity_attributes(
    vendor: int, device_type: int, product_code: int, revision: tuple[int, int], status: int, serial: int, name: str
) -> bytes:
    """Identity object attributes 1-7 (Vol. 1 5A-2.2), as in Get Attributes All / ListIdentity."""
    raw = name.encode("latin-1")
    return (
        struct.pack("<HHHBBHI", vendor, device_type, product_code, revision[0], revision[1], status, serial)
        + bytes([len(raw)])
        + raw
    )


def list_identity_reply(ip: str, identity: bytes, state: int = 3, context: bytes = b"\0" * 8) -> bytes:
    """ListIdentity reply: one CIP Identity item (0x0C): version, sockaddr (big-endian), identity, state."""
    a, b, c, d = (int(x) for x in ip.split("."))
    sockaddr = struct.pack(">HH4B8x", 2, 44818, a, b, c, d)
    body = struct.pack("<H", 1) + sockaddr + identity + bytes([state])
    return encap(0x63, cpf(item(0x000C, body)), context=context)


def list_services_reply() -> bytes:
    return encap(0x04, cpf(item(0x0100, struct.pack("<HH16s", 1, 0x0120, b"Communications"))))


def logical(kind: int, value: int) -> bytes:
    """One logical segment (Vol. 1 C-1.4.2): kind 0 class, 1 instance, 2 member, 4 attribute."""
    if value <= 0xFF:
        return bytes((0x20 | kind << 2, value))
    if value <= 0xFFFF:
        return bytes((0x21 | kind << 2, 0)) + struct.pack("<H", value)
    return bytes((0x22 | kind << 2, 0)) + struct.pack("<I", value)


def epath(cls: int, inst: int | None = None, attr: int | None = None) -> bytes:
    out = logical(0, cls)
    if inst is not None:
        out += logical(1, inst)
    if attr is not None:
        out += logical(4, attr)
    return out


def symbol_path(tag: str, *indexes: int) -> bytes:
    """ANSI extended symbol segments (0x91) for ``A.B``, then member (element) segments."""
    out = b""
    for part in tag.split("."):
        raw = part.encode("ascii")
        out += bytes((0x91, len(raw))) + raw + (b"\0" if len(raw) & 1 else b"")
    for i in indexes:
        out += logical(2, i)
    return out


def port_segment(port: int, link: int) -> bytes:
    return bytes((port & 0x0F, link))


def request(service: int, path: bytes, data: bytes = b"") -> bytes:
    """Message Router request: service, path size in words, path, data."""
    assert len(path) % 2 == 0
    return bytes((service, len(path) // 2)) + path + data


def reply(service: int, status: int = 0, data: bytes = b"", ext: tuple[int, ...] = ()) -> bytes:
    """Message Router reply: service|0x80, reserved, general status, ext status words, data."""
    return bytes((service | 0x80, 0, status, len(ext))) + b"".join(struct.pack("<H", e) for e in ext) + data


def msp_request(*requests: bytes) -> bytes:
    """Multiple Service Packet (0x0A) to the Message Router: count, offsets, services."""
    return request(0x0A, epath(0x02, 1), _msp_body(requests))


def msp_reply(*replies: bytes, status: int = 0) -> bytes:
    return reply(0x0A, status, _msp_body(replies))


def _msp_body(parts: tuple[bytes, ...]) -> bytes:
    offsets = []
    pos = 2 + 2 * len(parts)
    for p in parts:
        offsets.append(pos)
        pos += len(p)
    return struct.pack(f"<H{len(parts)}H", len(parts), *offsets) + b"".join(parts)


def unconnected_send(embedded: bytes, port: int = 1, link: int = 0) -> bytes:
    """Unconnected Send (0x52) to the Connection Manager, routed to ``port``/``link`` (backplane slot)."""
    pad = b"\0" if len(embedded) & 1 else b""
    route = port_segment(port, link)
    data = struct.pack("<BBH", 0x0A, 0xF0, len(embedded)) + embedded + pad + bytes((len(route) // 2, 0)) + route
    return request(0x52, epath(0x06, 1), data)


def forward_open(
    ot_id: int, to_id: int, serial: int, rpi_us: int, path: bytes, large: bool = False, transport: int = 0xA3
) -> bytes:
    """(Large) Forward Open request (Vol. 1 3-5.5.2): class 3 explicit by default (transport 0xA3)."""
    params = struct.pack("<I", 0x42000000 | 4000) if large else struct.pack("<H", 0x4200 | 500)
    data = (
        struct.pack("<BBIIHHIB3xI", 0x0A, 0x0E, ot_id, to_id, serial, 0x1337, 0x00C0FFEE, 1, rpi_us)
        + params
        + struct.pack("<I", rpi_us)
        + params
        + bytes((transport, len(path) // 2))
        + path
    )
    return request(0x5B if large else 0x54, epath(0x06, 1), data)


def forward_open_reply(ot_id: int, to_id: int, serial: int, rpi_us: int, large: bool = False) -> bytes:
    data = struct.pack("<IIHHIIIBB", ot_id, to_id, serial, 0x1337, 0x00C0FFEE, rpi_us, rpi_us, 0, 0)
    return reply(0x5B if large else 0x54, 0, data)


def forward_close(serial: int, path: bytes) -> bytes:
    data = struct.pack("<BBHHI", 0x0A, 0x0E, serial, 0x1337, 0x00C0FFEE) + bytes((len(path) // 2, 0)) + path
    return request(0x4E, epath(0x06, 1), data)


def forward_close_reply(serial: int) -> bytes:
    return reply(0x4E, 0, struct.pack("<HHIBB", serial, 0x1337, 0x00C0FFEE, 0, 0))


def read_tag(tag: str, *indexes: int, elements: int = 1) -> bytes:
    return request(0x4C, symbol_path(tag, *indexes), struct.pack("<H", elements))


def read_tag_reply(dtype: int, data: bytes) -> bytes:
    return reply(0x4C, 0, struct.pack("<H", dtype) + data)


def write_tag(tag: str, dtype: int, values: bytes, elements: int = 1) -> bytes:
    return request(0x4D, symbol_path(tag), struct.pack("<HH", dtype, elements) + values)


def io_datagram(connection_id: int, encap_seq: int, seq: int, data: bytes) -> bytes:
    """Class 1 I/O (Vol. 2 3-3): CPF of a sequenced address item and a connected data item."""
    return cpf(item(0x8002, struct.pack("<II", connection_id, encap_seq)), item(0x00B1, struct.pack("<H", seq) + data))


PLC_IDENTITY = identity_attributes(1, 0x0E, 54, (20, 11), 0x3060, 0x00C0A8F1, "1756-L61/B LOGIX5561")
PLC2_IDENTITY = identity_attributes(1, 0x0E, 94, (21, 3), 0x3060, 0x00D1E2F3, "1769-L32E Ethernet Port")
ENBT_IDENTITY = identity_attributes(1, 0x0C, 58, (4, 3), 0x0030, 0x00524D8E, "1756-ENBT/A")

REAL, DINT = 0xCA, 0xC4

# --------------------------------------------------------------------------------------------------
# Conversations (scapy from here on)
# --------------------------------------------------------------------------------------------------


class EnipClient:
    """A TCP EtherNet/IP client: registers a session, then request/reply exchanges."""

    def __init__(self, conv, session: int) -> None:
        self.conv = conv
        self.session = session
        self.n = 0
        self.seq = 0

    def register(self, gap: float = 0.01) -> None:
        self.conv.exchange(register_session(0, ctx(0)), register_session(self.session, ctx(0)), gap=gap)

    def rr(self, req: bytes, rep: bytes | None, gap: float = 0.05, status: int = 0) -> None:
        self.n += 1
        c = ctx(self.n)
        self.conv.exchange(
            send_rr_data(req, self.session, c),
            None if rep is None else send_rr_data(rep, self.session, c, status),
            gap=gap,
        )

    def unit(self, connection_ot: int, connection_to: int, req: bytes, rep: bytes, gap: float = 0.1) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        self.conv.exchange(
            send_unit_data(req, self.session, connection_ot, self.seq),
            send_unit_data(rep, self.session, connection_to, self.seq),
            gap=gap,
        )

    def unregister(self) -> None:
        self.conv.send(True, unregister_session(self.session))


def build_normal() -> list:
    from tools.pcapgen.common import Clock, TcpConversation, udp_packet

    clock = Clock()
    packets: list = []

    # Engineering station: ListIdentity (UDP, unicast) and the identity object over TCP.
    t = clock.tick(0.5)
    packets.append(udp_packet(ENG, 50001, PLC, 44818, list_identity_request(ctx(1)), t))
    packets.append(
        udp_packet(PLC, 44818, ENG, 50001, list_identity_reply(PLC, PLC_IDENTITY, context=ctx(1)), t + 0.002)
    )
    eng = TcpConversation(ENG, 50002, PLC, 44818, clock, isn_c=70_000, isn_s=80_000).handshake()
    ec = EnipClient(eng, 0x11000001)
    ec.register()
    eng.exchange(encap(0x04, b"", ec.session), list_services_reply(), gap=0.01)
    ec.rr(request(0x01, epath(0x01, 1)), reply(0x01, 0, PLC_IDENTITY))
    ec.rr(
        request(0x0E, epath(0xF5, 1, 5)), reply(0x0E, 0, bytes(4 * 5) + b"\x00\x00")
    )  # TCP/IP interface configuration
    ec.unregister()
    eng.close()

    # HMI: unconnected reads, then a class 3 connection with periodic connected reads.
    hmi = TcpConversation(HMI, 51000, PLC, 44818, clock, isn_c=1_000, isn_s=500_000).handshake()
    hc = EnipClient(hmi, 0x22000001)
    hc.register()
    for i in range(3):
        hc.rr(read_tag("Line1.Speed"), read_tag_reply(REAL, struct.pack("<f", 12.5 + i)), gap=0.5)
    route = port_segment(1, 0) + epath(0x02, 1)
    hc.rr(
        forward_open(0x80000001, 0x7F000001, 0x0101, 500_000, route),
        forward_open_reply(0x80000001, 0x7F000001, 0x0101, 500_000),
    )
    for i in range(8):
        hc.unit(
            0x80000001,
            0x7F000001,
            msp_request(read_tag("Line1.Speed"), read_tag("Tank1.Level"), read_tag("Alarms", 3)),
            msp_reply(
                read_tag_reply(REAL, struct.pack("<f", 12.5)),
                read_tag_reply(REAL, struct.pack("<f", 71.0 + i)),
                read_tag_reply(DINT, struct.pack("<i", 0)),
            ),
            gap=0.5,
        )
        if i == 4:  # the operator changes a set point
            hc.unit(
                0x80000001, 0x7F000001, write_tag("Line1.SpeedSP", REAL, struct.pack("<f", 14.0)), reply(0x4D), gap=0.2
            )
    hc.rr(forward_close(0x0101, route), forward_close_reply(0x0101))
    hc.unregister()
    hmi.close()

    # I/O adapter: the PLC opens a class 1 connection, then cyclic I/O on UDP 2222 both ways.
    io = TcpConversation(PLC, 52000, ADAPTER, 44818, clock, isn_c=900_000, isn_s=950_000).handshake()
    ic = EnipClient(io, 0x33000001)
    ic.register()
    ic.rr(
        forward_open(
            0x90000001, 0x91000001, 0x0202, 20_000, epath(0x04, 1) + logical(3, 101) + logical(3, 100), transport=0x01
        ),
        forward_open_reply(0x90000001, 0x91000001, 0x0202, 20_000),
    )
    t = clock.tick(0.05)
    for k in range(6):
        packets.append(
            udp_packet(
                PLC, 2222, ADAPTER, 2222, io_datagram(0x90000001, k + 1, k + 1, b"\x01\x00\x00\x00"), t + k * 0.02
            )
        )
        packets.append(
            udp_packet(
                ADAPTER,
                2222,
                PLC,
                2222,
                io_datagram(0x91000001, k + 1, k + 1, b"\x00\x00\x0f\x00"),
                t + k * 0.02 + 0.001,
            )
        )
    clock.tick(0.2)
    for conv in (eng, hmi, io):
        packets.extend(conv.packets)
    return packets


def build_attack() -> list:
    from tools.pcapgen.common import Clock, TcpConversation, udp_packet

    clock = Clock(1_767_229_200.0)  # one hour after the normal capture's start
    packets: list = []

    # Reconnaissance: ListIdentity to every host of 10.0.30.1-40 (two answer).
    for host in range(1, 41):
        ip = f"10.0.30.{host}"
        t = clock.tick(0.01)
        packets.append(udp_packet(ATTACKER, 44818, ip, 44818, list_identity_request(), t))
        if ip == PLC:
            packets.append(udp_packet(ip, 44818, ATTACKER, 44818, list_identity_reply(ip, PLC_IDENTITY), t + 0.002))
        elif ip == PLC2:
            packets.append(udp_packet(ip, 44818, ATTACKER, 44818, list_identity_reply(ip, PLC2_IDENTITY), t + 0.002))

    conv = TcpConversation(ATTACKER, 45000, PLC, 44818, clock, isn_c=10_000, isn_s=20_000).handshake()
    a = EnipClient(conv, 0x66000001)
    a.register()
    a.rr(request(0x01, epath(0x01, 1)), reply(0x01, 0, PLC_IDENTITY))
    # Controller mode change: Stop (program mode), then Start (run).
    a.rr(request(0x07, epath(0x8E, 1)), reply(0x07))
    a.rr(request(0x06, epath(0x8E, 1)), reply(0x06))
    # Set Attribute Single on the Identity object (refused) and on the TCP/IP interface object.
    a.rr(request(0x10, epath(0x01, 1, 7), b"\x05PWNED"), reply(0x10, 0x0E))
    new_config = struct.pack("<IIII", 0x420A000A, 0x00FFFFFF, 0x420A000A, 0) + struct.pack("<I", 0)
    a.rr(request(0x10, epath(0xF5, 1, 5), new_config + b"\x00\x00"), reply(0x10))
    # Program download through the File object (0x37), then upload of the running project.
    a.rr(
        request(0x4C, epath(0x37, 0xC8), struct.pack("<IB", 4096, 0) + b"\x08program.L5K"),
        reply(0x4C, 0, struct.pack("<IB", 4096, 1)),
    )
    for block in range(4):
        a.rr(
            request(0x50, epath(0x37, 0xC8), bytes((block, 0 if block < 3 else 2)) + bytes(64)),
            reply(0x50, 0, bytes((block,))),
        )
    a.rr(request(0x4B, epath(0x37, 0xC8), b"\x80"), reply(0x4B, 0, struct.pack("<IIB", 2048, 0x1234, 0x80)))
    for block in range(2):
        a.rr(
            request(0x4F, epath(0x37, 0xC8), bytes((block,))),
            reply(0x4F, 0, bytes((block, 0 if block == 0 else 2)) + bytes(64)),
        )
    # Firmware update attempt on the firmware object (0xA1): begin, then data blocks, refused.
    a.rr(request(0x51, epath(0xA1, 1), bytes(16)), reply(0x51))
    a.rr(request(0x4B, epath(0xA1, 1), bytes(8)), reply(0x4B))
    for block in range(3):
        a.rr(
            request(0x4D, epath(0xA1, 1), struct.pack("<I", block) + bytes(128)),
            reply(0x4D, 0 if block < 2 else 0x10, ext=() if block < 2 else (0x0001,)),
        )
    # A Write Tag from this unknown host, and a connection opened with Large Forward Open.
    a.rr(write_tag("Line1.SpeedSP", REAL, struct.pack("<f", 99.0)), reply(0x4D))
    a.rr(forward_open(0x80000066, 0x7F000066, 0x0666, 100_000, port_segment(1, 0) + epath(0x02, 1), large=True),
         forward_open_reply(0x80000066, 0x7F000066, 0x0666, 100_000, large=True))  # fmt: skip
    a.unit(0x80000066, 0x7F000066, msp_request(request(0x07, epath(0x8E, 1)), read_tag("Line1.Speed")),
           msp_reply(reply(0x07), read_tag_reply(REAL, struct.pack("<f", 0.0))))  # fmt: skip
    # Identity Reset of the PLC itself, then of the ENBT in slot 1 through Unconnected Send.
    a.rr(unconnected_send(request(0x05, epath(0x01, 1), b"\x00"), port=1, link=1), reply(0x05))
    a.rr(request(0x05, epath(0x01, 1), b"\x01"), reply(0x05))
    a.unregister()
    conv.close()
    packets.extend(conv.packets)
    return packets


def main(directory: Path | None = None) -> list[Path]:
    from tools.pcapgen.common import write_normal_and_attack

    return write_normal_and_attack("enip", build_normal, build_attack, directory)


if __name__ == "__main__":
    for p in main():
        print(p, p.stat().st_size, "bytes")
