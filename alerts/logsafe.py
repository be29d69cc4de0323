"""Secrets never reach a log line, an error message or a ``repr``.

Two nets, because a secret reaches text by two roads:

- **by its shape**: icswatch's own tokens and secrets have fixed prefixes (``icsw_`` enterprise API
  tokens, ``ipt_`` province staff tokens, ``isk_`` enterprise HMAC secrets), credentials sit in
  recognisable places (``Authorization: Bearer ...``, ``ApiKey ...``, ``Basic ...``, the password of
  ``https://user:password@host``, ``X-Icswatch-Signature: <hex>``, ``password=...``);
- **by its value**: secrets without a shape (the province master key, an Elasticsearch password or
  API key, a linkage secret read from a file) are registered with ``register_secret`` where they are
  read, and every later occurrence is masked.

``redact(text)`` applies both. ``install()`` puts it in front of every log record of the process (a
``logging`` record factory: it runs whatever handler, formatter or library logs the record, uvicorn's
access log included), masking the message, its arguments and a traceback's text. The CLI's entry
point, both API app factories and the replay job process call it; it is idempotent.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MIN_REGISTERED = 8  # shorter values are too likely to occur in ordinary text to be masked by value

_SHAPES: list[tuple[re.Pattern[str], str]] = [
    # icswatch credentials: a prefix and 20+ URL-safe characters (issued with 43)
    (re.compile(r"\b(icsw|ipt|isk)_[A-Za-z0-9_-]{20,}"), r"\1_" + MASK),
    # HTTP credentials, whatever the header they travel in
    (re.compile(r"(?i)\b(bearer|apikey|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1\2" + MASK),
    # the password of a URL's userinfo: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@'\"]*):[^\s@/'\"]+@"), r"\1:" + MASK + "@"),
    # the platform's request signature (a one-time MAC, but nothing a log needs)
    (re.compile(r"(?i)(x-icswatch-signature['\"]?\s*[:=,]\s*['\"]?)[0-9a-f]{16,}"), r"\1" + MASK),
    # key=value and "key": "value" pairs whose key names a secret
    (
        re.compile(
            r"(?i)\b((?:password|passwd|secret|api_key|apikey|token|authorization|master_key)['\"]?\s*[:=]\s*['\"]?)"
            r"(?!\*\*\*)[^\s'\",;&]{4,}"
        ),
        r"\1" + MASK,
    ),
]

_registered: set[str] = set()
_registered_re: re.Pattern[str] | None = None
_lock = threading.Lock()
_installed = False


def register_secret(value: str | bytes | None) -> None:
    """Mask every later occurrence of ``value`` in redacted text (and so in every log record)."""
    global _registered_re
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not value or len(value) < MIN_REGISTERED:
        return
    with _lock:
        if value in _registered:
            return
        _registered.add(value)
        ordered = sorted(_registered, key=len, reverse=True)  # longest first: no half-masked secret
        _registered_re = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***`` (see the module docstring)."""
    if not text:
        return text
    pattern = _registered_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for rx, repl in _SHAPES:
        text = rx.sub(repl, text)
    return text


def redact_url(url: str) -> str:
    """The URL with its password (and any secret in the query) masked, for logs and summaries."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<bad url>"
    if parts.password is None:
        return redact(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:{MASK}@{host}"
    return redact(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


def _safe_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if arg is None or isinstance(arg, (int, float, bool, bytes)):
        return arg
    text = str(arg)
    masked = redact(text)
    return arg if masked == text else masked  # keep the object (for %r, %d ...) unless it held a secret


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask a record's message, arguments and traceback in place."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None and not isinstance(record.msg, (int, float)):
        record.msg = _safe_arg(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_safe_arg(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _safe_arg(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """The same masking as a filter, for a handler configured elsewhere (``logging.config``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Mask every log record the process creates from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
