"""``make audit`` (tools/audit_deps.py): the real pip-audit, pointed at an OSV-compatible vulnerability
service run by the test on 127.0.0.1, over a package installed in a temporary directory (a dist-info
folder, which is all pip-audit reads). A known vulnerability fails the audit; a clean environment
passes; a service that cannot be reached, or that knows none of the packages (what PyPI's JSON API
behind a partial proxy looks like), passes with one WARNING line and is never called clean."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from province_testutil import REPO, free_port

from tools.audit_deps import IGNORED, judge

pytestmark = pytest.mark.timeout(300)

VULN = {
    "id": "GHSA-x84v-xcm2-53pg",
    "aliases": ["CVE-2018-18074"],
    "summary": "Requests sends the Authorization header to an http URI on redirect",
    "details": "Requests before 2.20.0 sends an HTTP Authorization header to an http URI upon a redirect.",
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
        }
    ],
}


class Osv:
    """A minimal OSV ``/v1/query`` endpoint: ``requests`` below 2.20.0 has VULN, nothing else has any."""

    def __init__(self) -> None:
        self.queries: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
                outer.queries.append(body)
                name = (body.get("package") or {}).get("name")
                version = tuple(int(x) for x in str(body.get("version", "0")).split(".")[:3] if x.isdigit())
                answer = {"vulns": [VULN]} if name == "requests" and version < (2, 20, 0) else {}
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def osv() -> Iterator[Osv]:
    s = Osv()
    yield s
    s.close()


def site(d: Path, name: str, version: str) -> Path:
    """An installation path holding one distribution (its metadata is all an audit reads)."""
    info = d / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "INSTALLER").write_text("pip\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")
    return d


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "audit_deps.py"), "--timeout", "5", *args],
        capture_output=True, text=True, timeout=240, cwd=REPO, check=False,
    )


def test_a_known_vulnerability_fails_the_audit(osv: Osv, tmp_path: Path) -> None:
    r = audit("--osv-url", osv.url, "--path", str(site(tmp_path, "requests", "2.19.0")))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "requests 2.19.0" in r.stdout and "2.20.0" in r.stdout
    assert "CVE-2018-18074" in r.stdout or "GHSA-x84v-xcm2-53pg" in r.stdout
    assert osv.queries and osv.queries[0]["package"]["name"] == "requests"


def test_a_clean_environment_passes(osv: Osv, tmp_path: Path) -> None:
    r = audit("--osv-url", osv.url, "--path", str(site(tmp_path, "requests", "2.32.3")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 packages audited against osv: no known vulnerabilities" in r.stderr


def test_an_unreachable_service_warns_in_one_line_and_passes(tmp_path: Path) -> None:
    r = audit("--osv-url", f"http://127.0.0.1:{free_port()}/v1/query", "--path", str(site(tmp_path, "requests", "2.19.0")))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("audit: WARNING: the osv vulnerability service could not be reached")
    assert "no known vulnerabilities" not in r.stderr + r.stdout


def test_a_service_that_knows_no_package_is_not_a_clean_audit() -> None:
    # pip-audit's own verdict on this report is "No known vulnerabilities found", exit 0
    report = {"dependencies": [
        {"name": "httpx", "skip_reason": "Dependency not found on PyPI and could not be audited: httpx (0.28.1)"},
        {"name": "icswatch", "skip_reason": "distribution marked as editable"},
    ], "fixes": []}
    v = judge(report, 0, "")
    assert v.status == "unreachable" and v.exit_code == 0 and "1 packages" in v.message
    # an unknown failure is not hidden as a network problem
    assert judge(None, 2, "Traceback ...\nKeyError: 'version'").exit_code == 1
    # an accepted vulnerability is reported as ignored, not as found
    vuln = {"dependencies": [{"name": "requests", "version": "2.19.0", "vulns": [
        {"id": "PYSEC-2018-28", "aliases": ["CVE-2018-18074"], "fix_versions": ["2.20.0"]}]}], "fixes": []}
    assert judge(vuln, 1, "").status == "vulnerable"
    v = judge(vuln, 1, "", ignored={"CVE-2018-18074": "test: accepted"})
    assert v.status == "clean" and v.ignored == ["requests 2.19.0 CVE-2018-18074"]
    assert all(reason.strip() for reason in IGNORED.values())


def test_make_audit_and_ci_run_it() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "\naudit:" in makefile and "tools/audit_deps.py" in makefile
    assert "make audit" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make audit" in (REPO / "README.md").read_text(encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"pip-audit>=' in pyproject
