"""Dependency audit: ``pip-audit`` over the installed environment, with an honest verdict.

    python tools/audit_deps.py                    # what `make audit` runs (PyPI's vulnerability data)
    python tools/audit_deps.py -s osv             # against OSV instead
    python tools/audit_deps.py --osv-url URL      # against an OSV-compatible mirror (implies -s osv)

Exit codes:

- **1** when a known vulnerability affects an installed package (each is listed with the versions that
  fix it), or when pip-audit failed for a reason that is not the network (a bug to look at);
- **0** when the audit ran and found nothing, and also, with a one-line ``WARNING``, when the
  vulnerability service could not be reached. pip-audit itself reports "no known vulnerabilities"
  when it could not look a single package up (a proxy that serves the package index but not PyPI's
  per-version JSON answers 404 for every package): that is counted here as *not audited*, never as
  clean.

Accepted vulnerabilities are listed in ``IGNORED`` (an id each, with the reason: no fixed release
yet, or the vulnerable code is never reached by icswatch); nothing else is ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Vulnerability id -> why it is accepted. Keep this empty unless there is no fixed release to move to.
IGNORED: dict[str, str] = {}

NETWORK_ERRORS = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Max retries exceeded|NewConnectionError|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|Connection refused|timed out|ProxyError|SSLError",
    re.IGNORECASE,
)
NOT_FOUND = "not found on PyPI"
EXIT_OK, EXIT_VULNERABLE = 0, 1


@dataclass
class Verdict:
    status: str  # "clean" | "vulnerable" | "unreachable" | "error"
    audited: int = 0
    skipped: int = 0
    vulnerabilities: list[tuple[str, str, str, list[str]]] = field(default_factory=list)  # name, version, id, fixes
    ignored: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_VULNERABLE if self.status in ("vulnerable", "error") else EXIT_OK


def judge(report: dict[str, Any] | None, returncode: int, stderr: str, ignored: dict[str, str] = IGNORED) -> Verdict:
    """The verdict on one pip-audit run: its JSON report (None when it wrote none) and its stderr."""
    if report is None:
        if NETWORK_ERRORS.search(stderr):
            last = next((ln for ln in reversed(stderr.strip().splitlines()) if NETWORK_ERRORS.search(ln)), "")
            return Verdict("unreachable", message=last.strip()[:200])
        tail = " | ".join(stderr.strip().splitlines()[-3:])[:400]
        return Verdict("error", message=f"pip-audit exited with {returncode} and no report: {tail}")
    deps = report.get("dependencies") or []
    audited = [d for d in deps if "skip_reason" not in d]
    not_found = [d for d in deps if NOT_FOUND in str(d.get("skip_reason", ""))]
    v = Verdict("clean", audited=len(audited), skipped=len(deps) - len(audited))
    for d in audited:
        for vuln in d.get("vulns") or []:
            ids = {vuln.get("id", ""), *(vuln.get("aliases") or [])}
            hit = next((i for i in ids if i in ignored), None)
            if hit is not None:
                v.ignored.append(f"{d['name']} {d['version']} {hit}")
                continue
            v.vulnerabilities.append((d["name"], d["version"], vuln.get("id", "?"), list(vuln.get("fix_versions") or [])))
    if v.vulnerabilities:
        v.status = "vulnerable"
    elif not audited and not_found:
        v.status = "unreachable"
        v.message = f"the service had no answer for any of the {len(not_found)} packages ({NOT_FOUND})"
    return v


def run_pip_audit(extra: list[str], timeout: float) -> tuple[dict[str, Any] | None, int, str]:
    exe = Path(sys.executable).with_name("pip-audit")
    cmd = [str(exe) if exe.exists() else "pip-audit", "--format", "json", "--progress-spinner", "off", "--skip-editable"]
    with tempfile.TemporaryDirectory(prefix="icswatch-audit-") as tmp:
        out = Path(tmp) / "report.json"
        try:
            proc = subprocess.run(
                [*cmd, "--output", str(out), *extra], capture_output=True, text=True, timeout=timeout, check=False,
                env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
            )
        except FileNotFoundError:
            return None, 127, "pip-audit is not installed: pip install -e '.[dev]'"
        except subprocess.TimeoutExpired:
            return None, 124, f"pip-audit timed out after {timeout:.0f} s (ReadTimeout)"
        report = None
        if out.exists() and out.stat().st_size:
            try:
                report = json.loads(out.read_text(encoding="utf-8"))
            except ValueError:
                report = None
        return report, proc.returncode, proc.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--service", choices=("pypi", "osv"), default="pypi", help="vulnerability service (default pypi)")
    ap.add_argument("--osv-url", help="an OSV-compatible query URL (implies --service osv)")
    ap.add_argument("--path", action="append", default=[], help="audit only the packages installed under PATH")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per request to the service")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="give up on the whole audit after this long")
    args = ap.parse_args(argv)
    service = "osv" if args.osv_url else args.service
    extra = ["--vulnerability-service", service, "--timeout", str(int(args.timeout))]
    if args.osv_url:
        extra += ["--osv-url", args.osv_url]
    for p in args.path:
        extra += ["--path", p]
    for vid in IGNORED:
        extra += ["--ignore-vuln", vid]
    report, code, stderr = run_pip_audit(extra, args.max_seconds)
    v = judge(report, code, stderr)
    if v.status == "unreachable":
        print(f"audit: WARNING: the {service} vulnerability service could not be reached, nothing was audited: {v.message}",
              file=sys.stderr)
    elif v.status == "error":
        print(f"audit: {v.message}", file=sys.stderr)
    elif v.status == "vulnerable":
        for name, version, vid, fixes in v.vulnerabilities:
            print(f"{name} {version}: {vid} (fixed in {', '.join(fixes) or 'no release yet'})")
        print(f"audit: {len(v.vulnerabilities)} known vulnerabilit{'y' if len(v.vulnerabilities) == 1 else 'ies'} "
              f"in {len({x[0] for x in v.vulnerabilities})} installed package(s) ({service})", file=sys.stderr)
    else:
        note = f", {v.skipped} not on the index (skipped)" if v.skipped else ""
        print(f"audit: {v.audited} packages audited against {service}: no known vulnerabilities{note}", file=sys.stderr)
    for line in v.ignored:
        print(f"audit: ignored (see IGNORED in tools/audit_deps.py): {line}", file=sys.stderr)
    return v.exit_code


if __name__ == "__main__":
    sys.exit(main())
