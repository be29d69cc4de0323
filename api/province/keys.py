"""The master key and the box the enterprises' HMAC secrets are kept in.

Why encrypted and not hashed: HMAC verification needs the secret itself, so the platform must be able
to recover it. Each secret is sealed with AES-256-GCM under the platform master key, with the key id
as associated data (a sealed secret copied onto another key id does not open). A copy of the database
alone (a backup, a leaked file) reveals no secret; the master key lives apart: in the environment
(``ICSWATCH_PROVINCE_MASTER_KEY``) or a 0600 file outside the backup set. Whoever has both has the
secrets: that is the trade-off of symmetric signing (docs/linkage.md discusses asymmetric keys).

A check value of the master key is stored in the database, so a platform started with the wrong key
refuses to start instead of rejecting every signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

MASTER_ENV = "ICSWATCH_PROVINCE_MASTER_KEY"
CHECK_META = "master_key_check"
BOX_VERSION = b"\x01"


class MasterKeyError(Exception):
    """The master key is missing, malformed or not the one this database was made with."""


def _decode(text: str) -> bytes:
    from alerts.logsafe import register_secret

    text = text.strip()
    register_secret(text)  # masked in every log line from now on
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise MasterKeyError(
            "the master key must be 32 bytes, base64-encoded (make one: python -c "
            '"import secrets,base64;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())")'
        )
    return raw


def load_master_key(path: Path, create: bool = True) -> bytes:
    """From the environment, else the file (created with mode 0600 when missing and ``create``)."""
    env = os.environ.get(MASTER_ENV)
    if env:
        return _decode(env)
    if path.exists():
        return _decode(path.read_text(encoding="utf-8"))
    if not create:
        raise MasterKeyError(f"no master key: set {MASTER_ENV} or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(base64.urlsafe_b64encode(key).decode() + "\n")
    print(
        f"icswatch: created the platform master key {path} (mode 0600): keep it out of database backups",
        file=sys.stderr,
    )
    return key


def check_value(master: bytes) -> str:
    return hmac.new(master, b"icswatch-province-master-key-check", hashlib.sha256).hexdigest()[:32]


class SecretBox:
    def __init__(self, master: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(master)
        self.check = check_value(master)

    def __repr__(self) -> str:
        return "SecretBox(<master key>)"

    def seal(self, key_id: str, secret: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return BOX_VERSION + nonce + self._aead.encrypt(nonce, secret.encode(), key_id.encode())

    def open(self, key_id: str, blob: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        if not blob or blob[:1] != BOX_VERSION:
            raise MasterKeyError("unknown secret box version")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], key_id.encode()).decode()
        except InvalidTag:
            raise MasterKeyError(f"the secret of {key_id} does not open with this master key") from None


def verify_master(store: object, box: SecretBox) -> None:
    """Record the key's check value on first use; refuse a different key afterwards."""
    stored = store.get_meta(CHECK_META)  # type: ignore[attr-defined]
    if stored is None:
        store.set_meta(CHECK_META, box.check)  # type: ignore[attr-defined]
    elif not hmac.compare_digest(stored, box.check):
        raise MasterKeyError("this master key is not the one the database was created with (check value differs)")
