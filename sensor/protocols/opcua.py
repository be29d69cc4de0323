"""OPC UA binary (UA TCP / UA Secure Conversation), TCP 4840 and by signature.

References: OPC UA Part 6 (Mappings), release 1.04/1.05:

- 7.1.2 UA TCP message header: MessageType (3 ASCII: HEL, ACK, ERR, RHE, OPN, MSG, CLO),
  IsFinal (1 ASCII: 'F' final, 'C' intermediate chunk, 'A' abort), MessageSize (UInt32, whole chunk).
- 7.1.2.3 Hello (ProtocolVersion, ReceiveBufferSize, SendBufferSize, MaxMessageSize,
  MaxChunkCount, EndpointUrl), 7.1.2.4 Acknowledge (the same five UInt32), 7.1.2.5 Error (Error
  StatusCode, Reason String), 7.1.2.6 ReverseHello (ServerUri, EndpointUrl).
- 6.7.2 Message chunk: SecureChannelId(4); OPN: asymmetric security header (SecurityPolicyUri
  String, SenderCertificate ByteString, ReceiverCertificateThumbprint ByteString); MSG/CLO:
  symmetric security header (TokenId 4); then the sequence header (SequenceNumber 4, RequestId 4)
  and the body. 6.7.3: chunks of one message share the RequestId; 'A' aborts it (body: Error
  StatusCode, Reason String).
- 6.7.2 / Part 4 7.36: OPN is always signed and encrypted when the policy is not None (for Sign and
  SignAndEncrypt alike), so the SecurityMode is only readable on None channels. MSG bodies are
  encrypted only in SignAndEncrypt mode; like Wireshark we learn the mode from the first MSG: if its
  type id is a known service the channel is Sign-only, otherwise it is encrypted.
- 5.2 binary encoding: NodeId encodings (5.2.2.9: 0 two-byte, 1 four-byte, 2 numeric, 3 string,
  4 guid, 5 opaque; ExpandedNodeId flags 0x80 namespace uri, 0x40 server index), String/ByteString
  (Int32 length, -1 = null), ExtensionObject (5.2.2.15), Variant (5.2.2.16), DataValue (5.2.2.17),
  DiagnosticInfo (5.2.2.12).
- Part 4 7.28 RequestHeader, 7.29 ResponseHeader; 5.6.2 CreateSession, 5.6.3 ActivateSession
  (UserIdentityToken: an ExtensionObject whose type id names the token: Anonymous 321, UserName
  324, X509 327, Issued 940), 5.4.4 GetEndpoints, 5.10.2 Read, 5.10.4 Write, 5.11.2 Call.

What we report: one ``opcua`` event per HEL/ACK/ERR/RHE/OPN/CLO chunk and per MSG message (an
intermediate 'C' chunk is held, bounded, until its 'F' chunk; an abort is an event), function = the
service's binary encoding node id (631 Read request) and the names below. Encrypted payloads are
counted (``opcua_encrypted_chunk``) and reported as ``encrypted_message``, never parsed.

Counting follows tshark: one ``opcua`` PDU per chunk header, one function (node id, decimal key)
per decoded service type id (OPN/MSG/CLO bodies in clear; for chunked messages on the final chunk).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import Counter
from typing import Any

from sensor.events import (
    CONTROL,
    DISCOVERY,
    EXCEPTION,
    MALFORMED,
    OK,
    OTHER,
    PROGRAM,
    READ,
    REQUEST,
    RESPONSE,
    SESSION,
    WRITE,
    IcsEvent,
)
from sensor.protocols.base import Analyzer, ProtocolSpec, Session, pair_latency

_HEAD = struct.Struct("<3sBI")  # message type, chunk type, size
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_HELLO = struct.Struct("<IIIII")  # version, receive buffer, send buffer, max message, max chunks
_SEQ = struct.Struct("<II")  # sequence number, request id
_MSG_HEAD = struct.Struct("<3sBIIIII")  # type, chunk, size, channel id, token id, sequence, request id

MESSAGE_TYPES = frozenset((b"HEL", b"ACK", b"ERR", b"RHE", b"OPN", b"MSG", b"CLO"))
CHUNK_TYPES = frozenset(b"FCA")

MAX_CHUNK = 1 << 24  # a chunk header claiming more is not OPC UA (spec limits are 8192 .. 2^31)
MAX_BUFFERED = 1 << 20  # bytes of one chunk buffered; a bigger chunk is parsed from its head, rest skipped
HEAD_BYTES = 1 << 16  # head of an oversized chunk that we wait for before parsing it
MAX_MESSAGE = 1 << 20  # bytes of one chunked message reassembled; beyond: head only
MAX_OPEN_MESSAGES = 16  # chunked messages being reassembled at once per connection
MAX_CHUNKS = 4096  # chunks per message
MAX_PENDING = 1024  # requests remembered for pairing
MAX_ARRAY = 100_000  # elements in one encoded array before we call it malformed
MAX_LISTED = 32  # node ids / values listed in an event
MAX_DIAG_DEPTH = 8  # nesting of DiagnosticInfo

SECURITY_POLICY_PREFIX = "http://opcfoundation.org/UA/SecurityPolicy#"
SECURITY_MODES = {0: "Invalid", 1: "None", 2: "Sign", 3: "SignAndEncrypt"}
TOKEN_TYPES = {321: "anonymous", 324: "username", 327: "x509", 940: "issued"}
USER_TOKEN_TYPES = {0: "anonymous", 1: "username", 2: "certificate", 3: "issued_token"}
APPLICATION_TYPES = {0: "server", 1: "client", 2: "client_and_server", 3: "discovery_server"}

# Service binary encoding ids (Part 6 Annex A / NodeIds.csv): id -> (name, category).
# Requests and responses carry the same category; the name gets _request / _response.
_SERVICE_PAIRS: dict[str, tuple[int, int, str]] = {
    "find_servers": (422, 425, DISCOVERY),
    "find_servers_on_network": (12208, 12209, DISCOVERY),
    "get_endpoints": (428, 431, DISCOVERY),
    "register_server": (437, 440, DISCOVERY),
    "register_server2": (12211, 12212, DISCOVERY),
    "open_secure_channel": (446, 449, SESSION),
    "close_secure_channel": (452, 455, SESSION),
    "create_session": (461, 464, SESSION),
    "activate_session": (467, 470, SESSION),
    "close_session": (473, 476, SESSION),
    "cancel": (479, 482, SESSION),
    "add_nodes": (488, 491, PROGRAM),  # changes the server's address space: configuration
    "add_references": (494, 497, PROGRAM),
    "delete_nodes": (500, 503, PROGRAM),
    "delete_references": (506, 509, PROGRAM),
    "browse": (527, 530, READ),
    "browse_next": (533, 536, READ),
    "translate_browse_paths_to_node_ids": (554, 557, READ),
    "register_nodes": (560, 563, READ),
    "unregister_nodes": (566, 569, READ),
    "query_first": (615, 618, READ),
    "query_next": (621, 624, READ),
    "read": (631, 634, READ),
    "history_read": (664, 667, READ),
    "write": (673, 676, WRITE),
    "history_update": (700, 703, WRITE),
    "call": (712, 715, CONTROL),
    "create_monitored_items": (751, 754, READ),
    "modify_monitored_items": (763, 766, READ),
    "set_monitoring_mode": (769, 772, READ),
    "set_triggering": (775, 778, READ),
    "delete_monitored_items": (781, 784, READ),
    "create_subscription": (787, 790, READ),
    "modify_subscription": (793, 796, READ),
    "set_publishing_mode": (799, 802, READ),
    "publish": (826, 829, READ),
    "republish": (832, 835, READ),
    "transfer_subscriptions": (841, 844, READ),
    "delete_subscriptions": (847, 850, READ),
}
# id -> (function_name, category, is_response)
SERVICES: dict[int, tuple[str, str, bool]] = {397: ("service_fault", OTHER, True)}
for _base, (_req, _rsp, _cat) in _SERVICE_PAIRS.items():
    SERVICES[_req] = (_base + "_request", _cat, False)
    SERVICES[_rsp] = (_base + "_response", _cat, True)
SERVICE_FAULT = 397
SVC_OPN_REQ, SVC_OPN_RSP = 446, 449
SVC_CLO_REQ = 452

# A few common StatusCodes (Part 4 7.34, Part 6 Annex A StatusCode.csv), for display.
STATUS_NAMES: dict[int, str] = {
    0x80010000: "BadUnexpectedError",
    0x80020000: "BadInternalError",
    0x800A0000: "BadTimeout",
    0x800B0000: "BadServiceUnsupported",
    0x80130000: "BadSecurityChecksFailed",
    0x801F0000: "BadUserAccessDenied",
    0x80200000: "BadIdentityTokenInvalid",
    0x80210000: "BadIdentityTokenRejected",
    0x80220000: "BadSecureChannelIdInvalid",
    0x80250000: "BadSessionIdInvalid",
    0x80260000: "BadSessionClosed",
    0x80270000: "BadSessionNotActivated",
    0x80340000: "BadNodeIdUnknown",
    0x80350000: "BadAttributeIdInvalid",
    0x803A0000: "BadNotReadable",
    0x803B0000: "BadNotWritable",
    0x80740000: "BadTypeMismatch",
    0x80750000: "BadMethodInvalid",
    0x80280000: "BadSubscriptionIdInvalid",
    0x80780000: "BadTooManyPublishRequests",
    0x80790000: "BadNoSubscription",
}


class Truncated(Exception):
    """The encoded structure runs past the end of the body (malformed or lying length)."""


# --- binary decoding (Part 6 5.2) ----------------------------------------------------------------
# Each reader takes (buf, off, end) and returns (value, new_off); it raises Truncated.


def _u32(b: bytes, o: int, end: int) -> tuple[int, int]:
    if o + 4 > end:
        raise Truncated
    return _U32.unpack_from(b, o)[0], o + 4


def _string(b: bytes, o: int, end: int) -> tuple[str | None, int]:
    if o + 4 > end:
        raise Truncated
    n = _I32.unpack_from(b, o)[0]
    o += 4
    if n < 0:
        return None, o
    if o + n > end:
        raise Truncated
    return b[o : o + n].decode("utf-8", "replace"), o + n


def _bytestring(b: bytes, o: int, end: int) -> tuple[bytes | None, int]:
    if o + 4 > end:
        raise Truncated
    n = _I32.unpack_from(b, o)[0]
    o += 4
    if n < 0:
        return None, o
    if o + n > end:
        raise Truncated
    return b[o : o + n], o + n


def _skip_string(b: bytes, o: int, end: int) -> int:
    if o + 4 > end:
        raise Truncated
    n = _I32.unpack_from(b, o)[0]
    o += 4 + (max(0, n))
    if o > end:
        raise Truncated
    return o


def _array_len(b: bytes, o: int, end: int) -> tuple[int, int]:
    if o + 4 > end:
        raise Truncated
    n = _I32.unpack_from(b, o)[0]
    o += 4
    if n < 0:
        return 0, o
    if n > MAX_ARRAY or n > end - o:  # every element takes at least one byte
        raise Truncated
    return n, o


def nodeid(b: bytes, o: int, end: int) -> tuple[tuple[int, int | str | None], int]:
    """(namespace, identifier) of a NodeId or ExpandedNodeId; numeric ids are ints."""
    if o >= end:
        raise Truncated
    enc = b[o]
    kind = enc & 0x0F
    o += 1
    ident: int | str
    if kind == 0:
        if o + 1 > end:
            raise Truncated
        ns, ident = 0, b[o]
        o += 1
    elif kind == 1:
        if o + 3 > end:
            raise Truncated
        ns, ident = b[o], _U16.unpack_from(b, o + 1)[0]
        o += 3
    elif kind == 2:
        if o + 6 > end:
            raise Truncated
        ns, ident = _U16.unpack_from(b, o)[0], _U32.unpack_from(b, o + 2)[0]
        o += 6
    elif kind == 3:
        if o + 2 > end:
            raise Truncated
        ns = _U16.unpack_from(b, o)[0]
        s, o = _string(b, o + 2, end)
        ident = f"s={s}"
    elif kind == 4:
        if o + 18 > end:
            raise Truncated
        ns = _U16.unpack_from(b, o)[0]
        ident = "g=" + b[o + 2 : o + 18].hex()
        o += 18
    elif kind == 5:
        if o + 2 > end:
            raise Truncated
        ns = _U16.unpack_from(b, o)[0]
        raw, o = _bytestring(b, o + 2, end)
        ident = "b=" + (raw or b"").hex()
    else:
        raise Truncated
    if enc & 0x80:  # ExpandedNodeId: namespace uri
        o = _skip_string(b, o, end)
    if enc & 0x40:  # ExpandedNodeId: server index
        o += 4
        if o > end:
            raise Truncated
    return (ns, ident), o


def node_str(node: tuple[int, int | str | None]) -> str:
    """Standard text form: ``i=2258``, ``ns=2;i=5``, ``ns=1;s=Temperature``."""
    ns, ident = node
    body = f"i={ident}" if isinstance(ident, int) else str(ident)
    return body if ns == 0 else f"ns={ns};{body}"


def _localized_text(b: bytes, o: int, end: int) -> tuple[str | None, int]:
    if o >= end:
        raise Truncated
    mask = b[o]
    o += 1
    text = None
    if mask & 0x01:
        o = _skip_string(b, o, end)
    if mask & 0x02:
        text, o = _string(b, o, end)
    return text, o


def _extension_object(b: bytes, o: int, end: int) -> tuple[tuple[int, int | str | None], int, int, int]:
    """(type id, body offset, body end, next offset) of an ExtensionObject (5.2.2.15)."""
    type_id, o = nodeid(b, o, end)
    if o >= end:
        raise Truncated
    enc = b[o]
    o += 1
    if enc in (1, 2):
        if o + 4 > end:
            raise Truncated
        n = _I32.unpack_from(b, o)[0]
        o += 4
        if n < 0:
            return type_id, o, o, o
        if o + n > end:
            raise Truncated
        return type_id, o, o + n, o + n
    return type_id, o, o, o


def _diagnostic_info(b: bytes, o: int, end: int, depth: int = 0) -> int:
    """Skip a DiagnosticInfo (5.2.2.12); nested inner diagnostics are bounded."""
    if o >= end:
        raise Truncated
    if depth > MAX_DIAG_DEPTH:
        raise Truncated
    mask = b[o]
    o += 1
    for bit in (0x01, 0x02, 0x04, 0x08):  # symbolic id, namespace uri, localized text, locale
        if mask & bit:
            o += 4
    if mask & 0x10:  # additional info
        o = _skip_string(b, o, end)
    if mask & 0x20:  # inner status code
        o += 4
    if o > end:
        raise Truncated
    if mask & 0x40:
        o = _diagnostic_info(b, o, end, depth + 1)
    return o


# Variant scalar types we decode for values (Part 6 5.1.2 built-in type ids).
_SCALARS: dict[int, struct.Struct] = {
    1: struct.Struct("<?"),
    2: struct.Struct("<b"),
    3: struct.Struct("<B"),
    4: struct.Struct("<h"),
    5: struct.Struct("<H"),
    6: struct.Struct("<i"),
    7: struct.Struct("<I"),
    8: struct.Struct("<q"),
    9: struct.Struct("<Q"),
    10: _F32,
    11: _F64,
    13: _I64,  # DateTime
    19: _U32,  # StatusCode
}


def _finite(x: float) -> float | str:
    """NaN and the infinities are not JSON numbers (the event outputs and Elasticsearch reject them):
    they are kept as their text, "nan", "inf" or "-inf", as DNP3 and S7comm do."""
    return x if math.isfinite(x) else repr(x)


def _variant(b: bytes, o: int, end: int, depth: int = 0) -> tuple[Any, int]:
    """Decode a Variant (5.2.2.16): scalars and strings become Python values, others None."""
    if o >= end or depth > 4:
        raise Truncated
    mask = b[o]
    o += 1
    vtype = mask & 0x3F
    if mask & 0x80:  # array
        n, o = _array_len(b, o, end)
        values: list[Any] = []
        for _ in range(n):
            v, o = _variant_value(b, o, end, vtype, depth)
            if len(values) < MAX_LISTED:
                values.append(v)
        if mask & 0x40:  # array dimensions
            dims, o = _array_len(b, o, end)
            o += 4 * dims
            if o > end:
                raise Truncated
        return values, o
    return _variant_value(b, o, end, vtype, depth)


def _variant_value(b: bytes, o: int, end: int, vtype: int, depth: int) -> tuple[Any, int]:
    st = _SCALARS.get(vtype)
    if st is not None:
        if o + st.size > end:
            raise Truncated
        value = st.unpack_from(b, o)[0]
        if vtype == 10 or vtype == 11:  # Float, Double
            value = _finite(value)
        return value, o + st.size
    if vtype == 0:
        return None, o
    if vtype in (12, 16):  # String, XmlElement
        return _string(b, o, end)
    if vtype == 15:  # ByteString
        raw, o = _bytestring(b, o, end)
        return (raw.hex() if raw is not None and len(raw) <= 64 else None), o
    if vtype == 14:  # Guid
        if o + 16 > end:
            raise Truncated
        return b[o : o + 16].hex(), o + 16
    if vtype in (17, 18):  # NodeId, ExpandedNodeId
        node, o = nodeid(b, o, end)
        return node_str(node), o
    if vtype == 20:  # QualifiedName
        if o + 2 > end:
            raise Truncated
        return _string(b, o + 2, end)
    if vtype == 21:  # LocalizedText
        return _localized_text(b, o, end)
    if vtype == 22:  # ExtensionObject
        _t, _a, _z, o = _extension_object(b, o, end)
        return None, o
    if vtype == 23:  # DataValue
        return _data_value(b, o, end, depth + 1)
    if vtype == 24:  # Variant
        return _variant(b, o, end, depth + 1)
    if vtype == 25:  # DiagnosticInfo
        return None, _diagnostic_info(b, o, end)
    raise Truncated  # reserved type id: we cannot know its size


def _data_value(b: bytes, o: int, end: int, depth: int = 0) -> tuple[Any, int]:
    """DataValue (5.2.2.17): returns the value (Variant) and skips status and timestamps."""
    if o >= end:
        raise Truncated
    mask = b[o]
    o += 1
    value = None
    if mask & 0x01:
        value, o = _variant(b, o, end, depth)
    if mask & 0x02:
        o += 4
    if mask & 0x04:
        o += 8
    if mask & 0x10:
        o += 2
    if mask & 0x08:
        o += 8
    if mask & 0x20:
        o += 2
    if o > end:
        raise Truncated
    return value, o


def _application_description(b: bytes, o: int, end: int) -> tuple[dict[str, Any], int]:
    """ApplicationDescription (Part 4 7.1): uri, product uri, name, type, gateway, profile, urls."""
    app_uri, o = _string(b, o, end)
    product_uri, o = _string(b, o, end)
    name, o = _localized_text(b, o, end)
    app_type, o = _u32(b, o, end)
    o = _skip_string(b, o, end)  # gateway server uri
    o = _skip_string(b, o, end)  # discovery profile uri
    n, o = _array_len(b, o, end)
    for _ in range(n):
        o = _skip_string(b, o, end)
    return {
        "application_uri": app_uri,
        "product_uri": product_uri,
        "application_name": name,
        "application_type": APPLICATION_TYPES.get(app_type, f"type-{app_type}"),
    }, o


def _endpoint_description(b: bytes, o: int, end: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """EndpointDescription (Part 4 7.10): (endpoint summary, server application, next offset)."""
    url, o = _string(b, o, end)
    app, o = _application_description(b, o, end)
    cert, o = _bytestring(b, o, end)
    mode, o = _u32(b, o, end)
    policy, o = _string(b, o, end)
    n, o = _array_len(b, o, end)
    tokens = []
    for _ in range(n):
        o = _skip_string(b, o, end)  # policy id
        ttype, o = _u32(b, o, end)
        o = _skip_string(b, o, end)  # issued token type
        o = _skip_string(b, o, end)  # issuer endpoint url
        o = _skip_string(b, o, end)  # security policy uri
        tokens.append(USER_TOKEN_TYPES.get(ttype, f"type-{ttype}"))
    o = _skip_string(b, o, end)  # transport profile uri
    if o >= end:
        raise Truncated
    level = b[o]
    endpoint = {
        "url": url,
        "security_mode": SECURITY_MODES.get(mode, f"mode-{mode}"),
        "security_policy": policy_name(policy),
        "user_tokens": tokens,
        "security_level": level,
    }
    if cert:
        endpoint["certificate_sha1"] = hashlib.sha1(cert).hexdigest()
    return endpoint, app, o + 1


def policy_name(uri: str | None) -> str | None:
    """``Basic256Sha256`` for the standard policy URIs, the URI itself otherwise."""
    if uri is None:
        return None
    if uri.startswith(SECURITY_POLICY_PREFIX):
        return uri[len(SECURITY_POLICY_PREFIX) :]
    return uri


def is_bad(status: int) -> bool:
    """StatusCode severity Bad: the top two bits are 10 (Part 4 7.34.1)."""
    return (status >> 30) == 2


# --- service bodies --------------------------------------------------------------------------------


def _request_header(b: bytes, o: int, end: int, fields: dict[str, Any]) -> int:
    """RequestHeader (Part 4 7.28): auth token, timestamp, handle, diagnostics, audit id, hint, ext."""
    _token, o = nodeid(b, o, end)
    o += 8
    if o + 8 > end:
        raise Truncated
    fields["request_handle"] = _U32.unpack_from(b, o)[0]
    o += 8  # request handle, return diagnostics
    audit, o = _string(b, o, end)
    if audit:
        fields["audit_entry_id"] = audit
    o += 4  # timeout hint
    _t, _a, _z, o = _extension_object(b, o, end)
    return o


def _response_header(b: bytes, o: int, end: int, fields: dict[str, Any]) -> tuple[int, int]:
    """ResponseHeader (Part 4 7.29): returns (service result, next offset)."""
    if o + 16 > end:
        raise Truncated
    fields["request_handle"] = _U32.unpack_from(b, o + 8)[0]
    result = _U32.unpack_from(b, o + 12)[0]
    o = _diagnostic_info(b, o + 16, end)
    n, o = _array_len(b, o, end)
    for _ in range(n):
        o = _skip_string(b, o, end)
    _t, _a, _z, o = _extension_object(b, o, end)
    return result, o


def _nodes_to_read(b: bytes, o: int, end: int) -> tuple[list[str], int, int]:
    """ReadRequest after the header: maxAge, timestamps, ReadValueId[] -> (node ids, count, off)."""
    o += 12
    n, o = _array_len(b, o, end)
    nodes: list[str] = []
    for _ in range(n):
        node, o = nodeid(b, o, end)
        attr, o = _u32(b, o, end)
        o = _skip_string(b, o, end)  # index range
        o += 2  # data encoding: namespace
        o = _skip_string(b, o, end)
        if len(nodes) < MAX_LISTED:
            nodes.append(node_str(node) if attr == 13 else f"{node_str(node)}#{attr}")
    return nodes, n, o


# Clients poll the same node list over and over: the ReadRequest body after its header (maxAge,
# timestamps, ReadValueId[], nothing after it) is byte-identical from one poll to the next, and decoding
# its node ids was the largest single cost of an OPC UA capture. Remembered per distinct body (bounded).
_READ_MEMO: dict[bytes, tuple[tuple[str, ...], int]] = {}
_READ_MEMO_MAX = 4096


def _nodes_to_read_memo(b: bytes, o: int, end: int) -> tuple[tuple[str, ...], int]:
    """(node ids, count) of a ReadRequest body, as ``_nodes_to_read`` gives them; raises Truncated alike."""
    key = bytes(b[o:end])  # bytes() is free on bytes, and makes a view hashable
    hit = _READ_MEMO.get(key)
    if hit is None:
        nodes, n, _ = _nodes_to_read(b, o, end)
        hit = (tuple(nodes), n)
        if len(_READ_MEMO) >= _READ_MEMO_MAX:
            _READ_MEMO.clear()
        _READ_MEMO[key] = hit
    return hit


def _nodes_to_write(b: bytes, o: int, end: int) -> tuple[list[str], list[Any], int, int]:
    """WriteRequest after the header: WriteValue[] -> (node ids, values, count, off)."""
    n, o = _array_len(b, o, end)
    nodes: list[str] = []
    values: list[Any] = []
    for _ in range(n):
        node, o = nodeid(b, o, end)
        attr, o = _u32(b, o, end)
        o = _skip_string(b, o, end)
        value, o = _data_value(b, o, end)
        if len(nodes) < MAX_LISTED:
            nodes.append(node_str(node) if attr == 13 else f"{node_str(node)}#{attr}")
            values.append(value)
    return nodes, values, n, o


def _methods_to_call(b: bytes, o: int, end: int) -> tuple[list[str], list[Any], int, int]:
    """CallRequest after the header: CallMethodRequest[] -> ("object->method", arguments, count)."""
    n, o = _array_len(b, o, end)
    calls: list[str] = []
    args: list[Any] = []
    for _ in range(n):
        obj, o = nodeid(b, o, end)
        method, o = nodeid(b, o, end)
        m, o = _array_len(b, o, end)
        call_args = []
        for _ in range(m):
            v, o = _variant(b, o, end)
            call_args.append(v)
        if len(calls) < MAX_LISTED:
            calls.append(f"{node_str(obj)}->{node_str(method)}")
            args.append(call_args)
    return calls, args, n, o


def _nodes_to_browse(b: bytes, o: int, end: int) -> tuple[list[str], int]:
    """BrowseRequest after the header: view, max refs, BrowseDescription[] -> (node ids, count)."""
    _view, o = nodeid(b, o, end)
    o += 12  # view timestamp, view version
    o += 4  # requested max references per node
    n, o = _array_len(b, o, end)
    nodes: list[str] = []
    for _ in range(n):
        node, o = nodeid(b, o, end)
        o += 4
        _ref, o = nodeid(b, o, end)
        o += 9
        if o > end:
            raise Truncated
        if len(nodes) < MAX_LISTED:
            nodes.append(node_str(node))
    return nodes, n


def _activate_session(b: bytes, o: int, end: int, fields: dict[str, Any]) -> None:
    """ActivateSessionRequest after the header: signature, software certs, locales, identity token."""
    o = _skip_string(b, o, end)  # signature algorithm
    o = _skip_string(b, o, end)  # signature
    n, o = _array_len(b, o, end)
    for _ in range(n):
        o = _skip_string(b, o, end)
        o = _skip_string(b, o, end)
    n, o = _array_len(b, o, end)
    for _ in range(n):
        o = _skip_string(b, o, end)
    type_id, body, body_end, o = _extension_object(b, o, end)
    ident = type_id[1]
    fields["identity_token"] = (
        TOKEN_TYPES.get(ident, f"type-{node_str(type_id)}") if isinstance(ident, int) else node_str(type_id)
    )
    if ident == 324 and body < body_end:  # UserNameIdentityToken: policy id, user name, password...
        try:
            p = _skip_string(b, body, body_end)
            user, p = _string(b, p, body_end)
            fields["user_name"] = user
        except Truncated:
            pass


def _create_session_request(b: bytes, o: int, end: int, fields: dict[str, Any]) -> None:
    app, o = _application_description(b, o, end)
    fields["client_application"] = app
    o = _skip_string(b, o, end)  # server uri
    url, o = _string(b, o, end)
    name, o = _string(b, o, end)
    fields["endpoint_url"] = url
    fields["session_name"] = name
    o = _skip_string(b, o, end)  # client nonce
    cert, o = _bytestring(b, o, end)
    if cert:
        fields["client_certificate_sha1"] = hashlib.sha1(cert).hexdigest()


def _endpoints_reply(b: bytes, o: int, end: int, fields: dict[str, Any]) -> None:
    """GetEndpointsResponse: EndpointDescription[]; identity from the first server description."""
    n, o = _array_len(b, o, end)
    endpoints: list[dict[str, Any]] = []
    for _ in range(n):
        ep, app, o = _endpoint_description(b, o, end)
        if "identity" not in fields:
            fields["identity"] = _identity(app)
        if len(endpoints) < MAX_LISTED:
            endpoints.append(ep)
    fields["endpoints"] = endpoints


def _create_session_reply(b: bytes, o: int, end: int, fields: dict[str, Any]) -> None:
    session_id, o = nodeid(b, o, end)
    fields["session_id"] = node_str(session_id)
    _auth, o = nodeid(b, o, end)
    o += 8  # revised timeout
    o = _skip_string(b, o, end)  # server nonce
    cert, o = _bytestring(b, o, end)
    if cert:
        fields["server_certificate_sha1"] = hashlib.sha1(cert).hexdigest()
    _endpoints_reply(b, o, end, fields)


def _find_servers_reply(b: bytes, o: int, end: int, fields: dict[str, Any]) -> None:
    n, o = _array_len(b, o, end)
    servers: list[dict[str, Any]] = []
    for _ in range(n):
        app, o = _application_description(b, o, end)
        if len(servers) < MAX_LISTED:
            servers.append(app)
    if servers:
        fields["identity"] = _identity(servers[0])
    fields["servers"] = servers


def _identity(app: dict[str, Any]) -> dict[str, Any]:
    return {k: app.get(k) for k in ("application_uri", "product_uri", "application_name")}


def _status_results(b: bytes, o: int, end: int, fields: dict[str, Any]) -> int:
    """StatusCode[] results (Write, Call...): the number of Bad ones goes in fields."""
    n, o = _array_len(b, o, end)
    bad = 0
    for _ in range(n):
        st, o = _u32(b, o, end)
        bad += is_bad(st)
    fields["results"] = n
    if bad:
        fields["bad_results"] = bad
    return n


# --- the analyzer -------------------------------------------------------------------------------


class OpcUaAnalyzer(Analyzer):
    """One UA TCP connection. Frames chunks itself (a bytearray per direction, oversize skipped)."""

    protocol = "opcua"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._buf = {True: bytearray(), False: bytearray()}
        self._skip = {True: 0, False: 0}
        # channel security, learnt from OPN: None = not seen (parse as clear text, like Wireshark)
        self.policy: str | None = None
        self.mode: str | None = None  # "None", "Sign", "SignAndEncrypt" or None (unknown)
        self.maybe_encrypted = False  # OPN with a policy other than None seen, mode not yet known
        # (from_client, request id) -> [first chunk, bytearray of bodies, chunks, head only?, bytes so far]
        self._chunks: dict[tuple[bool, int], list[Any]] = {}
        # request id -> (ts, service id)
        self._pending: dict[int, tuple[float, int]] = {}
        self._hist: Counter[str] | None = None  # this protocol's function histogram, fetched once

    # --- framing -----------------------------------------------------------------------------------
    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        skip = self._skip[from_client]
        if skip:
            if len(data) <= skip:
                self._skip[from_client] = skip - len(data)
                return
            data = data[skip:]
            self._skip[from_client] = 0
        buf = self._buf[from_client]
        buf += data
        n = len(buf)
        off = 0
        session = self.session
        while n - off >= 8:
            mtype = bytes(buf[off : off + 3])
            chunk = buf[off + 3]
            size = _U32.unpack_from(buf, off + 4)[0]
            if mtype not in MESSAGE_TYPES or chunk not in CHUNK_TYPES or size < 8 or size > MAX_CHUNK:
                session.anomaly("opcua_bad_framing")
                off = n  # resynchronise on the next segment boundary
                break
            if size <= n - off:
                self._chunk(from_client, bytes(buf[off : off + size]), size, ts)
                off += size
                continue
            if size > MAX_BUFFERED and n - off >= HEAD_BYTES:
                # Oversized chunk: parse its head, skip the rest without buffering it.
                session.anomaly("opcua_oversized_chunk")
                have = n - off
                self._chunk(from_client, bytes(buf[off:n]), size, ts)
                self._skip[from_client] = size - have
                off = n
            break
        if off:
            del buf[:off]
        if buf or self._chunks or self._held_reported:
            self.report_held(ts)  # what this connection holds may have changed: the global budget is told

    def held_bytes(self) -> int:
        """Partial chunks plus the chunked messages waiting for their final chunk (head and bodies)."""
        held = len(self._buf[True]) + len(self._buf[False])
        for pending in self._chunks.values():
            held += len(pending[0]) + len(pending[1])
        return held

    def gap(self, from_client: bool, ts: float) -> None:
        if self._buf[from_client] or self._skip[from_client]:
            self.session.anomaly("opcua_partial_pdu_lost")
        self._buf[from_client] = bytearray()
        self._skip[from_client] = 0
        for key in [k for k in self._chunks if k[0] == from_client]:
            del self._chunks[key]

    def close(self, ts: float) -> None:
        for side in (True, False):
            if self._buf[side]:
                self.session.anomaly("opcua_truncated_at_close")
                self._buf[side] = bytearray()
        if self._chunks:
            self.session.anomaly("opcua_unfinished_message", len(self._chunks))
            self._chunks.clear()
        self._pending.clear()

    # --- chunks ------------------------------------------------------------------------------------
    def _chunk(self, from_client: bool, chunk: bytes, size: int, ts: float) -> None:
        """One chunk (complete, or the head of an oversized one: ``len(chunk) < size``)."""
        session = self.session
        session.stats.pdus["opcua"] += 1
        mtype = chunk[:3]
        try:
            if mtype == b"MSG" or mtype == b"CLO":
                self._secure_message(from_client, chunk, size, ts)
            elif mtype == b"OPN":
                self._open(from_client, chunk, size, ts)
            elif mtype == b"HEL":
                self._hello(from_client, chunk, ts)
            elif mtype == b"ACK":
                self._ack(from_client, chunk, ts)
            elif mtype == b"ERR":
                self._error(from_client, chunk, ts)
            else:
                self._reverse_hello(from_client, chunk, ts)
        except Truncated:
            self._malformed(from_client, ts, mtype, size)

    def _malformed(self, from_client: bool, ts: float, mtype: bytes, size: int) -> None:
        self.session.anomaly("opcua_malformed")
        self.session.event(
            from_client,
            ts,
            "opcua",
            REQUEST if from_client else RESPONSE,
            -1,
            "malformed_" + mtype.decode("ascii", "replace").lower(),
            OTHER,
            result=MALFORMED,
            anomaly="opcua_malformed",
            size=size,
        )

    def _hello(self, from_client: bool, c: bytes, ts: float) -> None:
        end = len(c)
        if 8 + _HELLO.size > end:
            raise Truncated
        version, rbs, sbs, mms, mcc = _HELLO.unpack_from(c, 8)
        url, _ = _string(c, 28, end)
        fields = {
            "protocol_version": version,
            "receive_buffer_size": rbs,
            "send_buffer_size": sbs,
            "max_message_size": mms,
            "max_chunk_count": mcc,
            "endpoint_url": url,
        }
        self.session.event(from_client, ts, "opcua", REQUEST, -1, "hello", SESSION, fields=fields, size=end)

    def _ack(self, from_client: bool, c: bytes, ts: float) -> None:
        end = len(c)
        if 8 + _HELLO.size > end:
            raise Truncated
        version, rbs, sbs, mms, mcc = _HELLO.unpack_from(c, 8)
        fields = {
            "protocol_version": version,
            "receive_buffer_size": rbs,
            "send_buffer_size": sbs,
            "max_message_size": mms,
            "max_chunk_count": mcc,
        }
        self.session.event(from_client, ts, "opcua", RESPONSE, -1, "acknowledge", SESSION, fields=fields, size=end)

    def _error(self, from_client: bool, c: bytes, ts: float) -> None:
        end = len(c)
        error, o = _u32(c, 8, end)
        reason, _ = _string(c, o, end)
        fields = {"error": STATUS_NAMES.get(error, f"0x{error:08x}"), "reason": reason}
        self.session.event(
            from_client,
            ts,
            "opcua",
            RESPONSE,
            -1,
            "error",
            SESSION,
            result=EXCEPTION,
            code=error,
            fields=fields,
            size=end,
        )

    def _reverse_hello(self, from_client: bool, c: bytes, ts: float) -> None:
        end = len(c)
        server_uri, o = _string(c, 8, end)
        url, _ = _string(c, o, end)
        fields = {"server_uri": server_uri, "endpoint_url": url}
        self.session.event(from_client, ts, "opcua", REQUEST, -1, "reverse_hello", SESSION, fields=fields, size=end)

    def _open(self, from_client: bool, c: bytes, size: int, ts: float) -> None:
        """OPN: asymmetric security header; body in clear only with the None policy."""
        end = len(c)
        channel_id, o = _u32(c, 8, end)
        policy_uri, o = _string(c, o, end)
        cert, o = _bytestring(c, o, end)
        thumb, o = _bytestring(c, o, end)
        policy = policy_name(policy_uri)
        fields: dict[str, Any] = {"secure_channel_id": channel_id, "security_policy": policy}
        if cert:
            fields["sender_certificate_sha1"] = hashlib.sha1(cert).hexdigest()
        if thumb:
            fields["receiver_thumbprint"] = thumb.hex()
        if c[3] != 0x46:  # 'F': OPN is never chunked in practice; keep the count honest anyway
            fields["chunk_type"] = chr(c[3])
        self.policy = policy
        if policy != "None":
            # Signed and encrypted with the asymmetric keys: the body cannot be read.
            self.maybe_encrypted = True
            self.mode = None
            self.session.anomaly("opcua_encrypted_chunk")
            fields["encrypted"] = True
            function = SVC_OPN_REQ if from_client else SVC_OPN_RSP
            name, category, is_response = SERVICES[function]
            self._emit(from_client, ts, function, name, category, is_response, fields, size, None)
            return
        self.maybe_encrypted = False
        self.mode = "None"
        seq, req_id = _SEQ.unpack_from(c, o) if o + 8 <= end else (None, None)
        if seq is None:
            raise Truncated
        fields["sequence"] = seq
        fields["request_id"] = req_id
        self._service(from_client, c, o + 8, end, ts, size, fields, req_id)

    def _secure_message(self, from_client: bool, c: bytes, size: int, ts: float) -> None:
        """MSG/CLO chunk: symmetric header, sequence header, body (reassembled per request id)."""
        end = len(c)
        if end < 24:
            raise Truncated
        _t, chunk_type, _s, channel_id, token_id, seq, req_id = _MSG_HEAD.unpack_from(c, 0)
        key = (from_client, req_id)
        if self.maybe_encrypted and self.mode is None:
            self.mode = "Sign" if _known_type_id(c, 24, end) else "SignAndEncrypt"
        fields: dict[str, Any] = {"secure_channel_id": channel_id, "token_id": token_id}
        if self.policy is not None:
            fields["security_policy"] = self.policy
        if self.mode is not None:
            fields["security_mode"] = self.mode
        if self.mode == "SignAndEncrypt":
            # The sequence header is encrypted too: no request id to reassemble or pair by.
            self.session.anomaly("opcua_encrypted_chunk")
            if chunk_type == 0x43:
                return
            fields["encrypted"] = True
            if c[:3] == b"CLO":
                function = SVC_CLO_REQ if from_client else SVC_CLO_REQ + 3
                name, category, is_response = SERVICES[function]
            else:
                function, name, category, is_response = -1, "encrypted_message", OTHER, not from_client
            if chunk_type == 0x41:
                name = "abort"
            self._emit(from_client, ts, function, name, category, is_response, fields, size, None)
            return
        fields["sequence"] = seq
        fields["request_id"] = req_id
        if chunk_type == 0x41:  # 'A': abort the message being chunked
            self._chunks.pop(key, None)
            error, o = _u32(c, 24, end)
            reason, _ = _string(c, o, end)
            fields["reason"] = reason
            self._emit(
                from_client, ts, -1, "abort", OTHER, not from_client, fields, size, None, result=EXCEPTION, code=error
            )
            return
        pending = self._chunks.get(key)
        if chunk_type == 0x43:  # 'C': intermediate chunk, hold it
            if pending is None:
                if len(self._chunks) >= MAX_OPEN_MESSAGES:
                    self.session.anomaly("opcua_reassembly_cap")
                    self._chunks.pop(next(iter(self._chunks)))
                self._chunks[key] = [c, bytearray(c[24:]), 1, len(c) < size, size]
            else:
                pending[2] += 1
                pending[4] += size
                if pending[2] > MAX_CHUNKS or len(pending[1]) + end - 24 > MAX_MESSAGE or pending[3]:
                    if not pending[3]:
                        self.session.anomaly("opcua_reassembly_cap")
                    pending[3] = True  # keep the head only
                else:
                    pending[1] += c[24:]
                    pending[3] = len(c) < size
            return
        # 'F': final chunk (alone, or closing a chunked message)
        if pending is not None:
            del self._chunks[key]
            chunks = pending[2] + 1
            if not pending[3] and len(pending[1]) + end - 24 <= MAX_MESSAGE:
                body = bytes(pending[1]) + c[24:]
            else:
                body = bytes(pending[1])
            fields["chunks"] = chunks
            size += pending[4]
        else:
            body = c[24:]
        self._service(from_client, body, 0, len(body), ts, size, fields, req_id)

    # --- services ----------------------------------------------------------------------------------
    def _service(
        self, from_client: bool, b: bytes, o: int, end: int, ts: float, size: int, fields: dict[str, Any], req_id: int
    ) -> None:
        """Decode the type id and the service body (best effort past the type id)."""
        session = self.session
        type_id, o = nodeid(b, o, end)
        ns, ident = type_id
        if not isinstance(ident, int):
            self._emit(from_client, ts, -1, "unknown-" + node_str(type_id), OTHER, not from_client, fields, size, None)
            return
        hist = self._hist
        if hist is None:
            hist = self._hist = session.stats.hist("opcua")
        hist[str(ident)] += 1
        known = SERVICES.get(ident) if ns == 0 else None
        if known is None:
            self._emit(
                from_client,
                ts,
                ident,
                f"unknown-{ident}",
                OTHER,
                not from_client,
                fields,
                size,
                None,
                anomaly="opcua_unknown_service",
            )
            session.anomaly("opcua_unknown_service")
            return
        name, category, is_response = known
        result = OK
        code = None
        anomaly = None
        latency = None
        values: tuple[Any, ...] | None = None
        objects: tuple[str, ...] | None = None
        quantity = None
        if is_response:
            found = self._pending.pop(req_id, None)
            if found is not None:
                latency = pair_latency(found[0], ts)
                if ident == SERVICE_FAULT:
                    category = SERVICES.get(found[1], (None, OTHER, False))[1]
                    fields["request_service"] = SERVICES.get(found[1], (f"unknown-{found[1]}",))[0]
        else:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
                session.anomaly("opcua_pending_evicted")
            self._pending[req_id] = (ts, ident)
        try:
            if is_response:
                status, o = _response_header(b, o, end, fields)
                if status:
                    fields["service_result"] = STATUS_NAMES.get(status, f"0x{status:08x}")
                if is_bad(status):
                    result = EXCEPTION
                    code = status
                elif ident in (464, 431):  # CreateSession, GetEndpoints
                    (_create_session_reply if ident == 464 else _endpoints_reply)(b, o, end, fields)
                elif ident == 425:  # FindServers
                    _find_servers_reply(b, o, end, fields)
                elif ident == SVC_OPN_RSP:
                    if o + 16 > end:
                        raise Truncated
                    fields["token_id"] = _U32.unpack_from(b, o + 8)[0]
                    fields["revised_lifetime_ms"] = _U32.unpack_from(b, o + 20)[0] if o + 24 <= end else None
                elif ident in (676, 715):  # Write, Call results
                    quantity = _status_results(b, o, end, fields)
            else:
                o = _request_header(b, o, end, fields)
                if ident == 631:
                    objects, quantity = _nodes_to_read_memo(b, o, end)
                elif ident == 673:
                    nodes, vals, quantity, o = _nodes_to_write(b, o, end)
                    objects = tuple(nodes)
                    values = tuple(vals)
                elif ident == 712:
                    calls, args, quantity, o = _methods_to_call(b, o, end)
                    objects = tuple(calls)
                    values = tuple(args)
                elif ident == 527:
                    nodes, quantity = _nodes_to_browse(b, o, end)
                    objects = tuple(nodes)
                elif ident == 467:
                    _activate_session(b, o, end, fields)
                elif ident == 461:
                    _create_session_request(b, o, end, fields)
                elif ident == SVC_OPN_REQ:
                    if o + 12 > end:
                        raise Truncated
                    _version, rtype, mode = struct.unpack_from("<III", b, o)
                    fields["request_type"] = "renew" if rtype == 1 else "issue"
                    fields["security_mode"] = SECURITY_MODES.get(mode, f"mode-{mode}")
                elif ident == 428:
                    url, o = _string(b, o, end)
                    fields["endpoint_url"] = url
        except Truncated:
            anomaly = "opcua_malformed_body"
            session.anomaly(anomaly)
            if result == OK:
                result = MALFORMED
        self._emit(
            from_client,
            ts,
            ident,
            name,
            category,
            is_response,
            fields,
            size,
            latency,
            result=result,
            code=code,
            anomaly=anomaly,
            values=values,
            objects=objects,
            quantity=quantity,
        )

    def _emit(
        self,
        from_client: bool,
        ts: float,
        function: int,
        name: str,
        category: str,
        is_response: bool,
        fields: dict[str, Any],
        size: int,
        latency: float | None,
        result: str = OK,
        code: int | None = None,
        anomaly: str | None = None,
        values: tuple[Any, ...] | None = None,
        objects: tuple[str, ...] | None = None,
        quantity: int | None = None,
    ) -> None:
        # Built positionally (what Session.event does, without a second round of keyword plumbing):
        # one event per message is the bulk of an OPC UA capture.
        session = self.session
        if from_client:
            addr = session.client_ip, session.client_port, session.server_ip, session.server_port
            smac, dmac = session.client_mac, session.server_mac
        else:
            addr = session.server_ip, session.server_port, session.client_ip, session.client_port
            smac, dmac = session.server_mac, session.client_mac
        session.emit(
            IcsEvent(
                ts, "opcua", *addr, session.transport, RESPONSE if is_response else REQUEST, function, name, category,
                None, None, quantity, values, objects, result, code, latency, anomaly, fields, session.flow_id,
                smac, dmac, size,
            )
        )  # fmt: skip


def _known_type_id(b: bytes, o: int, end: int) -> bool:
    """Is the body at ``o`` a known service type id? (how Wireshark tells Sign from SignAndEncrypt)."""
    try:
        (ns, ident), _ = nodeid(b, o, end)
    except Truncated:
        return False
    return ns == 0 and isinstance(ident, int) and ident in SERVICES


# --- registry ------------------------------------------------------------------------------------


def probe(payload: bytes, from_client: bool) -> bool:
    """UA TCP on a non-standard port: a message type, a chunk type and a plausible size."""
    if len(payload) < 8:
        return False
    mtype, chunk, size = _HEAD.unpack_from(payload, 0)
    if mtype not in MESSAGE_TYPES or chunk not in CHUNK_TYPES or size < 8 or size > MAX_CHUNK:
        return False
    if mtype in (b"HEL", b"ACK"):
        if size < 28 or size > 4096 or chunk != 0x46:
            return False
        if len(payload) >= 12 and _U32.unpack_from(payload, 8)[0] >= 16:
            return False  # protocol version: 0 in every stack we know
    elif mtype in (b"OPN", b"MSG", b"CLO") and size < 24:
        return False
    if size < len(payload):
        return payload[size : size + 3] in MESSAGE_TYPES
    return True


SPEC = ProtocolSpec(
    name="opcua",
    analyzer=OpcUaAnalyzer,
    tcp_ports=frozenset({4840}),
    probe=probe,
    probe_order=40,
)
