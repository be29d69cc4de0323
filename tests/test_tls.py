"""TLS between the forwarder and the provincial platform (docs/tls.md), for real: a CA and certificates
made in the test with ``cryptography``, ``icswatch province serve --ssl-certfile/--ssl-keyfile`` on
127.0.0.1, and the enterprise forwarder built from the configuration as the sensor builds it.

- with ``linkage.ca_file`` pinned to the platform's CA, reports are delivered over HTTPS;
- without it (the system's trust store does not know this CA), or pinned to another CA, nothing is
  sent: the entry waits in the outbox with the certificate error, and goes once the CA is right;
- the platform negotiates TLS 1.2 at least, and refuses a client that offers only 1.0/1.1;
- with ``--ssl-client-ca`` the platform asks for a client certificate (mutual TLS): refused without
  one, delivered with ``linkage.client_cert``/``client_key``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from province_testutil import REPO, dumps, free_port, make_platform, sample_report

pytestmark = pytest.mark.timeout(300)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "icswatch tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(d: Path, cn: str) -> tuple[Any, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = d / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def issue(d: Path, ca: tuple[Any, x509.Certificate, Path], cn: str, *, server: bool) -> tuple[Path, Path]:
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    cert = b.sign(ca_key, hashes.SHA256())
    cert_path, key_path = d / f"{cn}.crt.pem", d / f"{cn}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


class TlsProvince:
    def __init__(self, d: Path, plat: Any, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.port = free_port()
        self.log = d / f"province-{self.port}.log"
        args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        if client_ca is not None:
            args += ["--ssl-client-ca", str(client_ca)]
        env = dict(os.environ, PYTHONPATH=str(REPO), ICSWATCH_PROVINCE_MASTER_KEY=plat.master_key)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "icswatch.commands.province", "serve", "--port", str(self.port), "--db", str(plat.db), *args],
            cwd=REPO, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                pass
            assert time.monotonic() < end, "the TLS platform did not start"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "province-ca")
    other = make_ca(d, "someone-else-ca")
    server_cert, server_key = issue(d, ca, "soc.province.test", server=True)
    client_cert, client_key = issue(d, ca, "acme-sensor", server=False)
    return {"dir": d, "ca": ca[2], "other_ca": other[2], "server": (server_cert, server_key), "client": (client_cert, client_key)}


@pytest.fixture()
def world(tmp_path: Path, pki: dict[str, Any]) -> Iterator[tuple[Any, TlsProvince]]:
    plat = make_platform(tmp_path / "province.db")
    server = TlsProvince(tmp_path, plat, *pki["server"])
    yield plat, server
    server.stop()


def forwarder(tmp_path: Path, plat: Any, url: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Any:
    from alerts.forwarder import Forwarder
    from alerts.outbox import Outbox
    from icswatch.config import load_config

    key_id, secret = plat.keys["acme"]
    monkeypatch.setenv("ICSWATCH_LINKAGE_SECRET", secret)
    cfg = load_config(
        None,
        ["sensor.enterprise_id=acme", "linkage.enabled=true", f"linkage.url={url}", f"linkage.key_id={key_id}",
         f"linkage.outbox={tmp_path / 'outbox.db'}", "linkage.timeout=5", "linkage.retry_base=0.1", *extra],
    )
    return Forwarder.from_config(cfg, Outbox(cfg.linkage.outbox))


def queue_report(fwd: Any, incident_id: str) -> None:
    with fwd.outbox.transaction() as c:
        fwd.outbox.enqueue(c, "report", incident_id, incident_id, "POST", "/api/v1/incidents",
                           dumps(sample_report(incident_id)), time.time())


def stored(plat: Any) -> list[str]:
    import sqlite3

    with sqlite3.connect(plat.db) as c:
        return sorted(r[0] for r in c.execute("SELECT incident_id FROM incidents"))


def test_delivery_with_the_ca_pinned_and_refusal_without_it(
    world: tuple[Any, TlsProvince], pki: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plat, server = world
    # the system's trust store does not know the province's CA: nothing is sent
    (tmp_path / "a").mkdir()
    fwd = forwarder(tmp_path / "a", plat, server.url, monkeypatch)
    queue_report(fwd, "inc-tls-1")
    fwd.run_once()
    entry = fwd.outbox.entries("pending")[0]
    assert entry["last_status"] == 0 and "CERTIFICATE_VERIFY_FAILED" in entry["last_error"], entry
    fwd.close()
    # pinned to another CA: refused the same way
    (tmp_path / "b").mkdir()
    fwd = forwarder(tmp_path / "b", plat, server.url, monkeypatch, f"linkage.ca_file={pki['other_ca']}")
    queue_report(fwd, "inc-tls-2")
    fwd.run_once()
    assert "CERTIFICATE_VERIFY_FAILED" in fwd.outbox.entries("pending")[0]["last_error"]
    fwd.close()
    assert stored(plat) == []
    # pinned to the province's CA: delivered over TLS 1.2+, the queued entry included
    fwd = forwarder(tmp_path / "b", plat, server.url, monkeypatch, f"linkage.ca_file={pki['ca']}")
    fwd.outbox.retry_now()
    assert fwd.drain(timeout=30), fwd.outbox.status()
    fwd.close()
    assert stored(plat) == ["inc-tls-2"]


def test_the_platform_negotiates_tls_12_or_later_only(world: tuple[Any, TlsProvince], pki: dict[str, Any]) -> None:
    _, server = world
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client would offer 1.0/1.1: the platform must say no
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="127.0.0.1").close()
    # and the plain-HTTP port does not exist: the same port speaks TLS only
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/api/v1/health", timeout=3)


def test_mutual_tls(tmp_path: Path, pki: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    plat = make_platform(tmp_path / "province.db")
    server = TlsProvince(tmp_path, plat, *pki["server"], client_ca=pki["ca"])
    try:
        (tmp_path / "a").mkdir()
        fwd = forwarder(tmp_path / "a", plat, server.url, monkeypatch, f"linkage.ca_file={pki['ca']}")
        queue_report(fwd, "inc-mtls-1")
        fwd.run_once()
        assert fwd.outbox.pending_count() == 1 and fwd.stats.sent == 0  # no client certificate: refused
        fwd.close()
        cert, key = pki["client"]
        fwd = forwarder(tmp_path / "a", plat, server.url, monkeypatch, f"linkage.ca_file={pki['ca']}",
                        f"linkage.client_cert={cert}", f"linkage.client_key={key}")
        fwd.outbox.retry_now()
        assert fwd.drain(timeout=30), fwd.outbox.status()
        fwd.close()
        assert stored(plat) == ["inc-mtls-1"]
    finally:
        server.stop()


def test_bad_tls_settings_are_clear_errors(tmp_path: Path, pki: dict[str, Any]) -> None:
    from alerts.forwarder import LinkageError, tls_context

    with pytest.raises(LinkageError, match="ca_file"):
        tls_context(str(tmp_path / "missing.pem"))
    with pytest.raises(LinkageError, match="client_cert"):
        tls_context(str(pki["ca"]), client_cert=str(tmp_path / "missing.pem"), client_key=str(tmp_path / "k.pem"))
    assert tls_context(min_version="1.3").minimum_version == ssl.TLSVersion.TLSv1_3
    lab = tls_context(verify=False)
    assert lab.verify_mode == ssl.CERT_NONE and not lab.check_hostname
