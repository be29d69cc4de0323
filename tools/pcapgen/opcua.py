"""Crafted OPC UA binary captures: ``pcaps/opcua_normal.pcap`` and ``pcaps/opcua_attack.pcap``.

Run as ``python -m tools.pcapgen.opcua``. The byte builders at the top are pure (no scapy objects)
and are reused by tests/test_opcua.py; scapy only wraps the payloads into Ethernet/IP/TCP.

Plant (10.0.40.0/24): OPC UA server 10.0.40.10:4840 (a SCADA gateway); HMI 10.0.40.2 (known client,
policy None, user name "operator"); engineering client 10.0.40.5 (known, Basic256Sha256
SignAndEncrypt: its payloads are opaque bytes). The attacker in the attack capture is 10.0.40.66.

Normal: HMI session (HEL/ACK, OPN None, GetEndpoints, CreateSession, ActivateSession with a
UserName token, Browse, Read in a loop, CreateSubscription, CreateMonitoredItems, Publish; one Read
response split into three chunks C/C/F), and an encrypted session from the engineering client
(OPN Basic256Sha256, encrypted MSGs, CLO). Attack: an ERR to a bad Hello, then from the unknown
host: OPN with policy None, GetEndpoints, CreateSession, anonymous ActivateSession, Browse, Write
to set points (one refused), Call of a method (pump stop), an aborted chunked message, CloseSession.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------
# Pure byte builders (OPC UA Part 6 5.2 encoding, 6.7 secure conversation, 7.1 UA TCP)
# --------------------------------------------------------------------------------------------------

SERVER, HMI, ENG, ATTACKER = "10.0.40.10", "10.0.40.2", "10.0.40.5", "10.0.40.66"
URL = "opc.tcp://10.0.40.10:4840/scada"
POLICY_NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"
POLICY_B256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"


def string(s: str | None) -> bytes:
    if s is None:
        return struct.pack("<i", -1)
    raw = s.encode("utf-8")
    return struct.pack("<i", len(raw)) + raw


def bytestring(b: bytes | None) -> bytes:
    if b is None:
        return struct.pack("<i", -1)
    return struct.pack("<i", len(b)) + b


def nodeid(ident: int | str, ns: int = 0) -> bytes:
    """NodeId in the smallest encoding (two-byte, four-byte, numeric, string)."""
    if isinstance(ident, str):
        return struct.pack("<BH", 3, ns) + string(ident)
    if ns == 0 and ident <= 0xFF:
        return bytes((0, ident))
    if ns <= 0xFF and ident <= 0xFFFF:
        return struct.pack("<BBH", 1, ns, ident)
    return struct.pack("<BHI", 2, ns, ident)


def localized(text: str | None) -> bytes:
    return b"\x00" if text is None else b"\x02" + string(text)


def extension_object(type_id: int, body: bytes | None = None) -> bytes:
    if body is None:
        return nodeid(type_id) + b"\x00"
    return nodeid(type_id) + b"\x01" + bytestring(body)


def array(items: list[bytes]) -> bytes:
    return struct.pack("<i", len(items)) + b"".join(items)


def variant(value: Any) -> bytes:
    """Scalar Variant: bool (1), int (Int32, 6), float (Double, 11), str (String, 12)."""
    if isinstance(value, bool):
        return bytes((1, int(value)))
    if isinstance(value, int):
        return b"\x06" + struct.pack("<i", value)
    if isinstance(value, float):
        return b"\x0b" + struct.pack("<d", value)
    return b"\x0c" + string(value)


def data_value(value: Any) -> bytes:
    return b"\x01" + variant(value)


def request_header(handle: int, token: int = 0) -> bytes:
    """RequestHeader (Part 4 7.28)."""
    return (
        nodeid(token)
        + struct.pack("<qII", 133_000_000_000_000_000, handle, 0)
        + string(None)
        + struct.pack("<I", 10000)
        + extension_object(0)
    )


def response_header(handle: int, result: int = 0) -> bytes:
    """ResponseHeader (Part 4 7.29): no diagnostics, empty string table."""
    return struct.pack("<qII", 133_000_000_000_000_000, handle, result) + b"\x00" + array([]) + extension_object(0)


def chunk(mtype: bytes, chunk_type: bytes, body: bytes) -> bytes:
    """UA TCP message header (7.1.2) + body."""
    return mtype + chunk_type + struct.pack("<I", 8 + len(body)) + body


def hello(url: str = URL) -> bytes:
    return chunk(b"HEL", b"F", struct.pack("<IIIII", 0, 65536, 65536, 0, 0) + string(url))


def acknowledge() -> bytes:
    return chunk(b"ACK", b"F", struct.pack("<IIIII", 0, 65536, 65536, 0, 0))


def error(code: int, reason: str) -> bytes:
    return chunk(b"ERR", b"F", struct.pack("<I", code) + string(reason))


def opn(
    channel: int,
    seq: int,
    req_id: int,
    body: bytes,
    policy: str = POLICY_NONE,
    cert: bytes | None = None,
    thumb: bytes | None = None,
) -> bytes:
    """OPN chunk: asymmetric security header (policy, sender cert, receiver thumbprint), sequence header."""
    head = struct.pack("<I", channel) + string(policy) + bytestring(cert) + bytestring(thumb)
    return chunk(b"OPN", b"F", head + struct.pack("<II", seq, req_id) + body)


def msg(
    channel: int, token: int, seq: int, req_id: int, body: bytes, chunk_type: bytes = b"F", mtype: bytes = b"MSG"
) -> bytes:
    """MSG/CLO chunk: symmetric security header (token id), sequence header, body."""
    return chunk(mtype, chunk_type, struct.pack("<IIII", channel, token, seq, req_id) + body)


def opn_request_body(mode: int = 1) -> bytes:
    return (
        nodeid(446) + request_header(0) + struct.pack("<III", 0, 0, mode) + bytestring(b"") + struct.pack("<I", 600000)
    )


def opn_response_body(channel: int, token: int) -> bytes:
    return (
        nodeid(449)
        + response_header(0)
        + struct.pack("<IIIqI", 0, channel, token, 133_000_000_000_000_000, 600000)
        + bytestring(b"")
    )


def application(uri: str, product: str, name: str, app_type: int) -> bytes:
    return (
        string(uri)
        + string(product)
        + localized(name)
        + struct.pack("<I", app_type)
        + string(None)
        + string(None)
        + array([string(URL)])
    )


SERVER_APP = application("urn:plant:scada-gateway", "urn:vendor:ua-gateway:2.4", "Plant SCADA Gateway", 0)


def endpoint(mode: int, policy: str, tokens: tuple[int, ...]) -> bytes:
    policies = [string(f"p{t}") + struct.pack("<I", t) + string(None) + string(None) + string(None) for t in tokens]
    return (
        string(URL) + SERVER_APP + bytestring(b"\x30\x82" + bytes(32)) + struct.pack("<I", mode) + string(policy)
        + array(policies) + string("http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary") + bytes((0 if mode == 1 else 3,))
    )  # fmt: skip


ENDPOINTS = [endpoint(1, POLICY_NONE, (0, 1)), endpoint(3, POLICY_B256, (1, 2))]


def get_endpoints_request(handle: int) -> bytes:
    return nodeid(428) + request_header(handle) + string(URL) + array([]) + array([])


def get_endpoints_response(handle: int) -> bytes:
    return nodeid(431) + response_header(handle) + array(ENDPOINTS)


def create_session_request(handle: int, app_uri: str, session_name: str) -> bytes:
    client = application(app_uri, "urn:vendor:client", session_name, 1)
    return (
        nodeid(461) + request_header(handle) + client + string(None) + string(URL) + string(session_name)
        + bytestring(bytes(32)) + bytestring(None) + struct.pack("<dI", 1_200_000.0, 0)
    )  # fmt: skip


def create_session_response(handle: int, session: int) -> bytes:
    return (
        nodeid(464) + response_header(handle) + nodeid(session, 1) + nodeid(session + 1000, 1) + struct.pack("<d", 1_200_000.0)
        + bytestring(bytes(32)) + bytestring(None) + array(ENDPOINTS) + array([]) + string(None) + bytestring(None)
        + struct.pack("<I", 0)
    )  # fmt: skip


def activate_session_request(handle: int, token: int, user: str | None = None) -> bytes:
    """ActivateSession with an anonymous (321) or user name (324) identity token."""
    if user is None:
        identity = extension_object(321, string("anonymous"))
    else:
        identity = extension_object(324, string("username") + string(user) + bytestring(b"\x11" * 16) + string(None))
    return (
        nodeid(467) + request_header(handle, token) + string(None) + bytestring(None) + array([]) + array([string("en")])
        + identity + string(None) + bytestring(None)
    )  # fmt: skip


def simple_response(type_id: int, handle: int, result: int = 0, tail: bytes = b"") -> bytes:
    return nodeid(type_id) + response_header(handle, result) + tail


def browse_request(handle: int, token: int, *nodes: int) -> bytes:
    descs = [nodeid(n) + struct.pack("<I", 0) + nodeid(33) + struct.pack("<?II", True, 0, 0x3F) for n in nodes]
    return nodeid(527) + request_header(handle, token) + nodeid(0) + struct.pack("<qII", 0, 0, 100) + array(descs)


def read_request(handle: int, token: int, *nodes: tuple[int, str]) -> bytes:
    ids = [
        nodeid(ident, ns) + struct.pack("<I", 13) + string(None) + struct.pack("<H", 0) + string(None)
        for ns, ident in nodes
    ]
    return nodeid(631) + request_header(handle, token) + struct.pack("<dI", 0.0, 2) + array(ids)


def read_response(handle: int, *values: Any) -> bytes:
    return nodeid(634) + response_header(handle) + array([data_value(v) for v in values]) + array([])


def write_request(handle: int, token: int, *writes: tuple[int, str, Any]) -> bytes:
    items = [nodeid(ident, ns) + struct.pack("<I", 13) + string(None) + data_value(v) for ns, ident, v in writes]
    return nodeid(673) + request_header(handle, token) + array(items)


def write_response(handle: int, *statuses: int) -> bytes:
    return nodeid(676) + response_header(handle) + array([struct.pack("<I", s) for s in statuses]) + array([])


def call_request(handle: int, token: int, obj: tuple[int, str], method: tuple[int, str], *args: Any) -> bytes:
    call = nodeid(obj[1], obj[0]) + nodeid(method[1], method[0]) + array([variant(a) for a in args])
    return nodeid(712) + request_header(handle, token) + array([call])


def call_response(handle: int, status: int = 0) -> bytes:
    result = struct.pack("<I", status) + array([]) + array([]) + array([])
    return nodeid(715) + response_header(handle) + array([result]) + array([])


def create_subscription_request(handle: int, token: int) -> bytes:
    return nodeid(787) + request_header(handle, token) + struct.pack("<dIIIB?", 1000.0, 10, 3, 0, 0, True)


def create_subscription_response(handle: int, sub: int) -> bytes:
    return simple_response(790, handle, 0, struct.pack("<IdII", sub, 1000.0, 10, 3))


def create_monitored_items_request(handle: int, token: int, sub: int, node: tuple[int, str]) -> bytes:
    item = (nodeid(node[1], node[0]) + struct.pack("<I", 13) + string(None) + struct.pack("<H", 0) + string(None)
            + struct.pack("<II", 2, 1) + struct.pack("<d", 250.0) + extension_object(0) + struct.pack("<I?", 1, True))  # fmt: skip
    return nodeid(751) + request_header(handle, token) + struct.pack("<II", sub, 2) + array([item])


def publish_request(handle: int, token: int) -> bytes:
    return nodeid(826) + request_header(handle, token) + array([])


def publish_response(handle: int, sub: int, seq: int) -> bytes:
    return simple_response(829, handle, 0, struct.pack("<I", sub) + array([struct.pack("<I", seq)]) + struct.pack("<?", False)
                           + struct.pack("<IqI", seq, 0, 0) + array([]) + array([]))  # fmt: skip


def close_session_request(handle: int, token: int) -> bytes:
    return nodeid(473) + request_header(handle, token) + struct.pack("<?", True)


def clo_body(handle: int) -> bytes:
    return nodeid(452) + request_header(handle)


def opaque(seed: bytes, n: int) -> bytes:
    """Deterministic bytes that look like ciphertext (SHA-256 in counter mode)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + struct.pack("<I", i)).digest()
        i += 1
    return out[:n]


def encrypted(seed: bytes, n: int) -> bytes:
    """Opaque bytes that no dissector can mistake for clear text.

    Octets 0 and 8 (where a sequence header or a type id would start) are forced out of the NodeId
    encodings 0-5: tshark 4.0 decodes encrypted MSG bodies as if they were clear and would count a
    garbage service id whenever the ciphertext at offset 24 of the chunk happens to read as one
    (see tests/test_opcua.py::test_tshark_counts_garbage_ids_in_encrypted_chunks).
    """
    data = bytearray(opaque(seed, n))
    data[0] |= 0x08
    if n > 8:
        data[8] |= 0x08
    return bytes(data)


# --------------------------------------------------------------------------------------------------
# Conversations (scapy from here on)
# --------------------------------------------------------------------------------------------------


class UaClient:
    """A None-policy OPC UA client on one TCP connection: channel, session, requests."""

    def __init__(self, conv, channel: int, session: int) -> None:
        self.conv = conv
        self.channel = channel
        self.token = 1
        self.session = session
        self.auth = session + 1000  # authentication token numeric id (ns 1 in real servers; ns 0 here)
        self.seq_c = 0
        self.seq_s = 0
        self.req = 0
        self.handle = 0

    def open(self) -> None:
        self.conv.exchange(hello(), acknowledge(), gap=0.05)
        self.seq_c += 1
        self.seq_s += 1
        self.req += 1
        self.conv.exchange(
            opn(0, self.seq_c, self.req, opn_request_body(1)),
            opn(self.channel, self.seq_s, self.req, opn_response_body(self.channel, self.token)),
            gap=0.01,
        )

    def call(self, request_body: bytes, response_body: bytes | None, gap: float = 0.05) -> None:
        self.seq_c += 1
        self.req += 1
        req = msg(self.channel, self.token, self.seq_c, self.req, request_body)
        rsp = None
        if response_body is not None:
            self.seq_s += 1
            rsp = msg(self.channel, self.token, self.seq_s, self.req, response_body)
        self.conv.exchange(req, rsp, gap=gap)

    def next_handle(self) -> int:
        self.handle += 1
        return self.handle

    def login(self, app_uri: str, name: str, user: str | None) -> None:
        h = self.next_handle()
        self.call(get_endpoints_request(h), get_endpoints_response(h))
        h = self.next_handle()
        self.call(create_session_request(h, app_uri, name), create_session_response(h, self.session))
        h = self.next_handle()
        self.call(
            activate_session_request(h, self.auth, user),
            simple_response(470, h, 0, bytestring(bytes(32)) + array([]) + array([])),
        )

    def close(self) -> None:
        h = self.next_handle()
        self.call(close_session_request(h, self.auth), simple_response(476, h))
        self.seq_c += 1
        self.req += 1
        self.conv.send(
            True,
            msg(self.channel, self.token, self.seq_c, self.req, clo_body(self.next_handle()), mtype=b"CLO"),
            dt=0.01,
        )


def build_normal() -> list:
    from tools.pcapgen.common import Clock, TcpConversation

    clock = Clock()
    conv = TcpConversation(HMI, 52000, SERVER, 4840, clock, isn_c=3_000, isn_s=7_000).handshake()
    ua = UaClient(conv, channel=7, session=5001)
    ua.open()
    ua.login("urn:plant:hmi-1", "HMI-1", "operator")
    h = ua.next_handle()
    ua.call(browse_request(h, ua.auth, 85), simple_response(530, h, 0, array([]) + array([])))
    tags = ((2, "Line1.Speed"), (2, "Tank1.Level"), (2, "Pump1.Running"))
    for i in range(6):
        h = ua.next_handle()
        ua.call(read_request(h, ua.auth, *tags), read_response(h, 12.5, 70.0 + i, True), gap=1.0)
    h = ua.next_handle()
    ua.call(create_subscription_request(h, ua.auth), create_subscription_response(h, 31))
    h = ua.next_handle()
    ua.call(create_monitored_items_request(h, ua.auth, 31, tags[1]), simple_response(754, h, 0, array([]) + array([])))
    for i in range(4):
        h = ua.next_handle()
        ua.call(publish_request(h, ua.auth), publish_response(h, 31, i + 1), gap=1.0)
    # A long Read response in three chunks (C, C, F) sharing one request id (Part 6 6.7.2.2).
    h = ua.next_handle()
    big = read_response(h, *[f"alarm text {k:03d} " + "x" * 40 for k in range(60)])
    ua.seq_c += 1
    ua.req += 1
    conv.send(True, msg(ua.channel, ua.token, ua.seq_c, ua.req, read_request(h, ua.auth, (2, "Alarms.Texts"))), dt=0.5)
    third = len(big) // 3
    parts = [(b"C", big[:third]), (b"C", big[third : 2 * third]), (b"F", big[2 * third :])]
    for chunk_type, part in parts:
        ua.seq_s += 1
        conv.send(False, msg(ua.channel, ua.token, ua.seq_s, ua.req, part, chunk_type), dt=0.002)
    ua.close()
    conv.close()

    # The engineering client: Basic256Sha256, SignAndEncrypt. Everything after the OPN security
    # header is ciphertext (here: deterministic opaque bytes of plausible sizes).
    enc = TcpConversation(ENG, 53000, SERVER, 4840, clock, isn_c=11_000, isn_s=13_000).handshake()
    enc.exchange(hello(), acknowledge(), gap=0.05)
    cert_c, cert_s = opaque(b"client-cert", 900), opaque(b"server-cert", 950)
    thumb_c, thumb_s = hashlib.sha1(cert_c).digest(), hashlib.sha1(cert_s).digest()
    enc.exchange(
        opn(0, 0, 0, encrypted(b"opn-req", 512), POLICY_B256, cert_c, thumb_s),
        opn(9, 0, 0, encrypted(b"opn-rsp", 512), POLICY_B256, cert_s, thumb_c),
        gap=0.01,
    )
    for k, (req_len, rsp_len) in enumerate(((1200, 2400), (300, 140), (160, 120), (160, 120), (160, 120))):
        enc.exchange(
            struct.pack("<3s1sIII", b"MSG", b"F", 16 + req_len, 9, 1) + encrypted(b"req%d" % k, req_len),
            struct.pack("<3s1sIII", b"MSG", b"F", 16 + rsp_len, 9, 1) + encrypted(b"rsp%d" % k, rsp_len),
            gap=1.0,
        )
    enc.send(True, struct.pack("<3s1sIII", b"CLO", b"F", 16 + 96, 9, 1) + encrypted(b"clo", 96), dt=0.5)
    enc.close()
    return conv.packets + enc.packets


def build_attack() -> list:
    from tools.pcapgen.common import Clock, TcpConversation

    clock = Clock(1_767_229_200.0)
    # A Hello to a wrong endpoint: the server answers ERR BadTcpEndpointUrlInvalid and closes.
    probe = TcpConversation(ATTACKER, 46000, SERVER, 4840, clock, isn_c=40_000, isn_s=41_000).handshake()
    probe.exchange(hello("opc.tcp://10.0.40.10:4840/nope"), error(0x80830000, "endpoint url invalid"), gap=0.05)
    probe.close()

    conv = TcpConversation(ATTACKER, 46001, SERVER, 4840, clock, isn_c=50_000, isn_s=60_000).handshake()
    ua = UaClient(conv, channel=66, session=6601)
    ua.open()
    ua.login("urn:kali:opcua-client", "probe", None)  # anonymous
    h = ua.next_handle()
    ua.call(browse_request(h, ua.auth, 85, 2253), simple_response(530, h, 0, array([]) + array([])))
    h = ua.next_handle()
    ua.call(
        write_request(h, ua.auth, (2, "Line1.SpeedSP", 99.0), (2, "Tank1.HighAlarm", 150)),
        write_response(h, 0, 0x803B0000),
    )
    h = ua.next_handle()
    ua.call(call_request(h, ua.auth, (2, "Pump1"), (2, "Pump1.Stop"), True), call_response(h))
    # A chunked message started and aborted ('A' chunk: StatusCode + reason, Part 6 6.7.3).
    ua.seq_c += 1
    ua.req += 1
    h = ua.next_handle()
    first = write_request(h, ua.auth, (2, "Recipe.Data", "x" * 200))
    conv.send(True, msg(ua.channel, ua.token, ua.seq_c, ua.req, first[:120], b"C"), dt=0.05)
    ua.seq_c += 1
    conv.send(
        True,
        msg(ua.channel, ua.token, ua.seq_c, ua.req, struct.pack("<I", 0x80AC0000) + string("aborted by client"), b"A"),
        dt=0.01,
    )
    ua.close()
    conv.close()
    return probe.packets + conv.packets


def main(directory: Path | None = None) -> list[Path]:
    from tools.pcapgen.common import write_normal_and_attack

    return write_normal_and_attack("opcua", build_normal, build_attack, directory)


if __name__ == "__main__":
    for p in main():
        print(p, p.stat().st_size, "bytes")
