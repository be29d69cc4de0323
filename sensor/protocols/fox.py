"""Tridium Niagara Fox (TCP 1911; 4911 is Fox over TLS): identification.

Fox has no public specification. What is documented (Tridium's Niagara security notes; the nmap
script ``fox-info.nse``; Digital Bond's Redpoint) and visible on the wire: text messages

    fox a 1 -1 fox hello
    {
    fox.version=s:1.0
    id=i:1
    hostName=s:xpvm-0omdc01xmy
    ...
    };;

i.e. a first line ``fox <type> <number> <reply-to> <channel> <command>`` (type ``a`` in the hello
exchange), a body of ``key=<type code>:<value>`` lines in braces, ended by ``};;`` and a newline.
A client's hello is answered by the station's hello, then ``challenge`` / ``authenticate`` messages
run the login.

Events: one per message, function -1 (Fox has no numeric codes), function_name = the command
(``hello``, ``challenge``, ``authenticate``...); a hello is ``discovery`` (it announces the host, the
application and its version; nmap's fox-info reads exactly this), the login messages are ``session``.
The direction is the TCP side. From a hello, station name, host name and address, application name and
version, VM and OS go into ``fields["identity"]``. Bodies are read line by line, up to
``MAX_LINES`` lines; a message is at most ``MAX_MESSAGE`` octets, beyond which the buffer is
dropped (``fox_buffer_cap``).

On port 4911 the session is TLS: we check the TLS record header of the first bytes in each direction
and report one ``tls_client_hello`` / ``tls_server_hello`` session event; the content stays opaque.
"""

from __future__ import annotations

from typing import Any

from sensor.events import DISCOVERY, MALFORMED, OTHER, REQUEST, RESPONSE, SESSION
from sensor.protocols.base import Analyzer, ProtocolSpec, Session

PORT = 1911
TLS_PORT = 4911

MAGIC = b"fox "
END = b";;\n"
MAX_MESSAGE = 64 * 1024
MAX_LINES = 64

COMMAND_CATEGORIES: dict[str, str] = {
    "hello": DISCOVERY,
    "challenge": SESSION,
    "authenticate": SESSION,
    "authenticated": SESSION,
    "login": SESSION,
    "logout": SESSION,
    "close": SESSION,
    "keepalive": SESSION,
}

# hello keys -> identity field names
IDENTITY_KEYS: dict[str, str] = {
    "station.name": "station_name",
    "hostName": "host_name",
    "hostAddress": "host_address",
    "app.name": "app_name",
    "app.version": "app_version",
    "vm.name": "vm_name",
    "vm.version": "vm_version",
    "os.name": "os_name",
    "os.version": "os_version",
    "fox.version": "fox_version",
    "brandId": "brand_id",
    "hostId": "host_id",
    "lang": "lang",
    "timeZone": "time_zone",
}


def _first_line_ok(line: bytes) -> bool:
    parts = line.split(b" ")
    return (
        len(parts) >= 6
        and parts[0] == b"fox"
        and len(parts[1]) == 1
        and parts[1].isalpha()
        and parts[2].lstrip(b"-").isdigit()
        and parts[3].lstrip(b"-").isdigit()
    )


def probe(payload: bytes, from_client: bool) -> bool:
    """``fox <type> <n> <n> `` at the start of the stream (a Fox message's first line)."""
    if not payload.startswith(MAGIC):
        return False
    nl = payload.find(b"\n")
    line = payload[:nl] if nl >= 0 else payload
    parts = line.split(b" ")
    if len(parts) < 4 or len(parts[1]) != 1 or not parts[1].isalpha():
        return False
    if not parts[2].lstrip(b"-").isdigit():
        return False
    if parts[3].lstrip(b"-").isdigit():
        return True
    # the probe sees the first 64 octets only: a line cut inside the reply number is still a match
    cut = nl < 0 and len(parts) == 4
    return cut and parts[3] in (b"", b"-")


class FoxAnalyzer(Analyzer):
    protocol = "fox"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._buf: dict[bool, bytes] = {True: b"", False: b""}
        self._tls_seen: dict[bool, bool] = {True: False, False: False}

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        s = self.session
        if s.server_port == TLS_PORT:
            self._tls(from_client, data, ts)
            return
        buf = self._buf[from_client] + data if self._buf[from_client] else data
        off = 0
        n = len(buf)
        while off < n:
            if buf[off] in b"\r\n\0":
                off += 1  # separators between messages
                continue
            if not buf.startswith(MAGIC, off):
                if n - off < len(MAGIC) and MAGIC.startswith(buf[off:]):
                    break  # a cut "fox " prefix: wait for more
                self._malformed(from_client, ts, "fox_bad_message", n - off)
                off = n
                break
            end = buf.find(END, off)
            if end < 0:
                break
            self._message(from_client, buf[off : end + len(END)], ts)
            off = end + len(END)
        rest = buf[off:]
        if len(rest) > MAX_MESSAGE:
            s.anomaly("fox_buffer_cap")
            rest = b""
        had = self._buf[from_client]
        self._buf[from_client] = rest
        if rest or had:
            self.report_held(ts)  # the global buffer budget (sensor/budget.py)

    def held_bytes(self) -> int:
        return len(self._buf[True]) + len(self._buf[False])

    def gap(self, from_client: bool, ts: float) -> None:
        if self._buf[from_client]:
            self.session.anomaly("fox_partial_message_lost")
        self._buf[from_client] = b""

    def close(self, ts: float) -> None:
        for side in (True, False):
            if self._buf[side]:
                self.session.anomaly("fox_truncated_at_close")
                self._buf[side] = b""

    def _message(self, from_client: bool, msg: bytes, ts: float) -> None:
        s = self.session
        nl = msg.find(b"\n")
        first = msg[:nl] if nl >= 0 else msg
        if not _first_line_ok(first.rstrip(b"\r")):
            self._malformed(from_client, ts, "fox_bad_header", len(msg))
            return
        parts = first.rstrip(b"\r").split(b" ")
        command = parts[5].decode("latin-1")
        name = command.lower().replace(".", "_").replace("-", "_")[:48] or "unknown"
        category = COMMAND_CATEGORIES.get(name, OTHER)
        fields: dict[str, Any] = {
            "message_type": parts[1].decode("latin-1"),
            "number": int(parts[2]),
            "reply_to": int(parts[3]),
            "channel": parts[4].decode("latin-1"),
        }
        if name == "hello":
            ident = _hello_identity(msg[nl + 1 :] if nl >= 0 else b"")
            if ident:
                fields["identity"] = ident
        s.stats.pdu("fox")
        s.stats.func("fox", name)
        s.event(
            from_client,
            ts,
            "fox",
            REQUEST if from_client else RESPONSE,
            -1,
            name,
            category,
            fields=fields,
            size=len(msg),
        )

    def _tls(self, from_client: bool, data: bytes, ts: float) -> None:
        if self._tls_seen[from_client]:
            return
        head = self._buf[from_client] + data
        if len(head) < 6:  # TCP may cut the record header: wait for its 6 octets (found by fuzzing)
            self._buf[from_client] = head
            return
        self._buf[from_client] = b""
        self._tls_seen[from_client] = True
        s = self.session
        # TLS record: content type 22 (handshake), version 3.x, then a handshake message type 1/2
        if head[0] == 22 and head[1] == 3 and head[5] in (1, 2):
            name = "tls_client_hello" if head[5] == 1 else "tls_server_hello"
            s.stats.pdu("fox")
            s.stats.func("fox", name)
            s.event(
                from_client,
                ts,
                "fox",
                REQUEST if from_client else RESPONSE,
                -1,
                name,
                SESSION,
                fields={"tls": True},
                size=6,  # the record header and handshake type looked at, however TCP cut them
            )
        else:
            self._malformed(from_client, ts, "fox_not_tls", 6)

    def _malformed(self, from_client: bool, ts: float, anomaly: str, size: int) -> None:
        s = self.session
        s.anomaly(anomaly)
        s.stats.pdu("fox")
        s.stats.func("fox", "malformed")
        s.event(
            from_client,
            ts,
            "fox",
            REQUEST if from_client else RESPONSE,
            -1,
            "malformed",
            OTHER,
            result=MALFORMED,
            anomaly=anomaly,
            size=size,
        )


def _hello_identity(body: bytes) -> dict[str, str]:
    """``key=t:value`` lines of a hello body -> identity fields (known keys only, values cut at 128)."""
    out: dict[str, str] = {}
    for i, raw in enumerate(body.split(b"\n")):
        if i >= MAX_LINES:
            break
        key, sep, value = raw.rstrip(b"\r").partition(b"=")
        if not sep:
            continue
        field = IDENTITY_KEYS.get(key.decode("latin-1"))
        if field is None:
            continue
        _type, colon, text = value.partition(b":")
        out[field] = (text if colon else value)[:128].decode("latin-1")
    return out


SPEC = ProtocolSpec(
    name="fox",
    analyzer=FoxAnalyzer,
    tcp_ports=frozenset({PORT, TLS_PORT}),
    probe=probe,
    probe_order=60,
    deep=False,
)

__all__ = ["SPEC", "FoxAnalyzer", "probe"]
