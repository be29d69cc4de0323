"""icswatch from a normal (non-editable) install: the wheel carries the default rules, the named lists and
the dashboards' static files, and the installed program finds them next to its own code.

The wheel is built without build isolation (setuptools and wheel are dev extras, so no network), from a
copy of the files the build reads (a build in the checkout would leave a build/ folder whose stale copies
could end up in later wheels). It is installed with ``--no-deps`` into a fresh venv that sees the
dependencies through a ``.pth`` line naming this interpreter's site-packages, and never the checkout:
every command runs from a temporary directory outside the repository, with no PYTHONPATH. The test
captures are read from ``pcaps/`` by absolute path (they are inputs, not part of the distribution).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.timeout(300)
# Building, installing and running the wheel: 20-30 s of wall time, about 10 s of CPU (the servers test 9 s).
slow = pytest.mark.slow

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIRS: dict[str, str] = SETUPTOOLS.get("package-dir", {})
RULES_PACKAGE = "icswatch_rules"
# The rule whose own `captures:` say where it fires: it needs the shipped lists (allowed_masters).
ATTACK_RULE = "modbus-write-unauthorized-master"


def source_dir(package: str) -> Path:
    """Where a package's files are in the checkout (package-dir maps icswatch_rules to rules/)."""
    if package in PACKAGE_DIRS:
        return REPO / PACKAGE_DIRS[package]
    top, _, rest = package.partition(".")
    base = REPO / PACKAGE_DIRS[top] if top in PACKAGE_DIRS else REPO / top
    return base.joinpath(*rest.split(".")) if rest else base


def installed_name(path: Path) -> str:
    """The name a checkout file has inside the wheel (rules/x.yaml -> icswatch_rules/x.yaml)."""
    for package, folder in PACKAGE_DIRS.items():
        root = REPO / folder
        if path.is_relative_to(root):
            return "/".join([*package.split("."), *path.relative_to(root).parts])
    return path.relative_to(REPO).as_posix()


def tree_files(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


def shipped_roots() -> list[Path]:
    """The top-level folders the distribution is made of."""
    return sorted({source_dir(p.partition(".")[0]) for p in PACKAGES})


def rule_count() -> int:
    """The default rules, counted straight from the YAML (not through the loader under test)."""
    return sum(len(yaml.safe_load(f.read_text(encoding="utf-8"))["rules"]) for f in (REPO / "rules").glob("*.yaml"))


def attack_capture() -> tuple[Path, int]:
    """ATTACK_RULE's own attack capture and the number of alerts it must raise there."""
    rules = yaml.safe_load((REPO / "rules" / "modbus.yaml").read_text(encoding="utf-8"))["rules"]
    captures = next(r["captures"] for r in rules if r["id"] == ATTACK_RULE)
    rel, expected = next((k, v) for k, v in captures.items() if v > 0)
    return REPO / rel, expected


# ---------------------------------------------------------------------------------------------------
# The package list and the data files, checked against the tree (fast, no build)
# ---------------------------------------------------------------------------------------------------
def test_every_package_directory_is_in_the_explicit_package_list() -> None:
    # pyproject.toml lists the packages by hand (a renamed package cannot join packages.find): a new
    # sub-package must be added there, or the wheel would silently lack it.
    found = {RULES_PACKAGE}
    for root in shipped_roots():
        if root == REPO / PACKAGE_DIRS[RULES_PACKAGE]:
            continue
        for init in root.rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join(init.parent.relative_to(REPO).parts))
    assert set(PACKAGES) == found, "pyproject.toml [tool.setuptools] packages is out of date with the tree"
    for package in PACKAGES:
        assert (source_dir(package) / "__init__.py").is_file(), package


def test_checkout_finds_its_own_rules_and_the_editable_install_maps_the_rules_package() -> None:
    from icswatch.config import Config, default_rules_dir, source_checkout

    assert source_checkout() == REPO
    assert default_rules_dir() == REPO / "rules"
    # the editable install (make install) resolves icswatch_rules to the same folder
    try:
        mapped = Path(str(importlib.resources.files(RULES_PACKAGE)))
    except ModuleNotFoundError:
        pytest.fail(f"{RULES_PACKAGE} is not importable: the venv predates pyproject.toml's package-dir (make install)")
    assert mapped == REPO / "rules"
    rules = Config().rules
    assert rules.paths == [str(REPO / "rules")]
    assert rules.lists_file == str(REPO / "rules" / "lists" / "default.yaml")


def test_a_replay_job_child_gets_the_checkout_on_its_path_only_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import icswatch.config
    from api.enterprise.jobs import child_environment

    env = child_environment({"PYTHONPATH": "/opt/extra", "HOME": "/home/x"})
    assert env == {"PYTHONPATH": f"{REPO}{os.pathsep}/opt/extra", "HOME": "/home/x"}
    assert child_environment({})["PYTHONPATH"] == str(REPO)
    monkeypatch.setattr(icswatch.config, "source_checkout", lambda: None)  # as in an installed wheel
    assert child_environment({"HOME": "/home/x"}) == {"HOME": "/home/x"}
    assert child_environment({"PYTHONPATH": "/opt/extra"}) == {"PYTHONPATH": "/opt/extra"}


# ---------------------------------------------------------------------------------------------------
# Build the wheel, install it into a fresh venv
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", *(p.name for p in REPO.glob("LICEN[CS]E*"))):
        shutil.copy2(REPO / name, src / name)
    for root in shipped_roots():
        shutil.copytree(root, src / root.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-v", "-w", str(out)],
        check=False, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # -v shows the backend's own output: setuptools warns there, e.g. of a data folder taken for a package
    build_log = proc.stdout + proc.stderr
    assert "BuildBackendWarning" not in build_log and "SetuptoolsDeprecationWarning" not in build_log, build_log[-5000:]
    wheels = list(out.glob("icswatch-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@dataclass
class Installed:
    venv: Path
    python: Path
    script: Path  # the `icswatch` console script
    site: Path
    work: Path  # a working directory outside the repository

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["COLUMNS"] = "400"  # rich does not wrap the messages checked below
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], cwd=cwd or self.work, env=self.env(), check=False, capture_output=True, text=True,
            timeout=120, stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip())
    # The dependencies come from this interpreter's site-packages, added after the venv's own (a .pth
    # line adds the folder to sys.path without running its .pth files, so the editable install's
    # finder, which would map icswatch to the checkout, stays out).
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "icswatch-test-deps.pth").write_text("".join(f"{d}\n" for d in deps), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", str(wheel)],
        check=False, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    work = tmp_path_factory.mktemp("work")
    assert not work.is_relative_to(REPO)
    return Installed(venv=venv, python=python, script=venv / "bin" / "icswatch", site=site, work=work)


@slow
def test_the_wheel_holds_the_rules_the_lists_and_every_dashboard_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("icswatch_rules/__init__.py", "icswatch_rules/modbus.yaml", "icswatch_rules/lists/default.yaml",
                 "api/enterprise/static/index.html", "api/enterprise/static/vendor/swagger-ui/swagger-ui-bundle.js",
                 "api/province/static/index.html", "api/static/vendor/echarts.min.js", "icswatch/__main__.py"):
        assert must in names, must
    # every file of the shipped folders, code and data alike, is in the wheel under its installed name
    source = [installed_name(p) for root in shipped_roots() for p in tree_files(root)]
    missing = sorted(n for n in source if n not in names)
    assert not missing, f"not in the wheel (declare them in [tool.setuptools.package-data]): {missing}"
    # and nothing else: no tests, captures, docs, a top-level `rules` package or stray build leftovers
    tops = {n.split("/", 1)[0] for n in names}
    dist_info = f"icswatch-{PYPROJECT['project']['version']}.dist-info"
    assert tops == {*(p.partition(".")[0] for p in PACKAGES), dist_info}, tops
    shipped_rules = {Path(n).name for n in names if Path(n).parent == Path(RULES_PACKAGE) and n.endswith(".yaml")}
    assert shipped_rules == {p.name for p in (REPO / "rules").glob("*.yaml")}


@slow
def test_the_installed_icswatch_runs_from_the_venv_not_the_checkout(installed: Installed) -> None:
    probe = (
        "import json, sys, icswatch, api, icswatch.config as c\n"
        "print(json.dumps({'icswatch': icswatch.__file__, 'api': api.__file__, 'checkout': str(c.source_checkout()),\n"
        "                  'rules': str(c.default_rules_dir()), 'path': sys.path}))\n"
    )
    proc = installed.run(installed.python, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["icswatch"]).is_relative_to(installed.site) and Path(got["api"]).is_relative_to(installed.site)
    assert got["checkout"] == "None"
    assert Path(got["rules"]) == installed.site / RULES_PACKAGE
    # the checkout is nowhere on the path (the dependencies' site-packages may be the checkout's .venv)
    deps = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    entries = [Path(p).resolve() for p in got["path"] if p]
    assert not [p for p in entries if p.is_relative_to(REPO) and p not in deps], got["path"]


@slow
def test_the_installed_rules_list_and_check_load_every_default_rule_and_list(installed: Installed) -> None:
    proc = installed.run(installed.script, "rules", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""  # a rule naming a list that did not load would be reported here
    rules = json.loads(proc.stdout)
    assert len(rules) == rule_count() > 40
    assert {Path(r["file"].rsplit(":", 1)[0]).parent for r in rules} == {installed.site / RULES_PACKAGE}
    check = installed.run(installed.script, "rules", "check", "--strict")
    assert check.returncode == 0, check.stderr


@slow
def test_the_installed_replay_fires_the_default_rule_on_its_attack_capture(installed: Installed) -> None:
    capture, expected = attack_capture()
    work = installed.work / "replay"
    work.mkdir()
    proc = installed.run(installed.python, "-m", "icswatch", "replay", capture, "--alerts-out", "alerts.jsonl",
                         cwd=work)
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in (work / "alerts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a["rule"]["id"] for a in alerts].count(ATTACK_RULE) == expected
    assert (work / "var" / "icswatch.db").is_file()  # outputs are relative to the working directory


@slow
def test_the_installed_rules_self_test_finds_the_captures_only_in_a_clone(installed: Installed) -> None:
    # the console script (not `python -m`) keeps the working directory off sys.path
    proc = installed.run(installed.script, "rules", "test", "--rule", ATTACK_RULE, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 2 capture checks" in proc.stdout
    proc = installed.run(installed.script, "rules", "test", "--rule", ATTACK_RULE)
    assert proc.returncode == 1
    assert "2 capture(s) not found under" in proc.stderr and "ship with the source repository" in proc.stderr


class Serving:
    """An installed icswatch command that serves HTTP on a free loopback port, run from the work dir."""

    def __init__(self, installed: Installed, name: str, *args: str) -> None:
        from browser import free_port

        self.port = free_port()
        self.log = installed.work / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(installed.script), *args, "--port", str(self.port), "--log-level", "warning"],
            cwd=installed.work, env=installed.env(), stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("did not come up: " + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()


@slow
def test_the_installed_servers_serve_their_dashboards_and_run_a_replay_job(installed: Installed) -> None:
    issue = installed.run(installed.script, "token", "issue", "--role", "analyst", "--name", "packaging-test",
                          "--state-db", "api-state.db")
    assert issue.returncode == 0, issue.stderr
    token = issue.stdout.split()[0]
    enterprise = Serving(installed, "serve", "serve", "--state-db", "api-state.db", "--db", "alerts.db",
                         "--upload-dir", "uploads")
    province = Serving(installed, "province", "province", "serve", "--db", "province.db")
    try:
        enterprise.wait_ready()
        province.wait_ready()
        for server, path, marker in (
            (enterprise, "/", "<html"),
            (enterprise, "/static/app.js", ""),
            (enterprise, "/docs", "swagger-ui"),
            (enterprise, "/static/vendor/swagger-ui/swagger-ui-bundle.js", ""),
            (enterprise, "/vendor/echarts.min.js", "echarts"),
            (province, "/", "<html"),
            (province, "/static/app.js", ""),
            (province, "/vendor/echarts.min.js", "echarts"),
        ):
            r = httpx.get(server.url + path, timeout=30)
            assert r.status_code == 200, (server.url, path, r.status_code)
            source = "api/static/vendor/echarts.min.js" if path.startswith("/vendor/") else None
            if path.startswith("/static/"):
                source = ("api/enterprise" if server is enterprise else "api/province") + path
            if source:
                assert r.content == (REPO / source).read_bytes(), path
            assert marker.lower() in r.text.lower(), path

        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=enterprise.url, headers=headers, timeout=30) as client:
            listing = client.get("/api/v1/rules").json()
            assert listing["total"] == len(listing["items"]) == rule_count() and listing["problems"] == []
            # an installed rule file is shown by its full path (there is no repository to be relative to)
            folders = {Path(item["file"].rsplit(":", 1)[0]).parent for item in listing["items"]}
            assert folders == {installed.site / RULES_PACKAGE}

            # an uploaded capture is replayed by a child process (python -m api.enterprise.replay_job) that
            # must import the installed package: nothing puts the checkout on its path
            capture, expected = attack_capture()
            r = client.post("/api/v1/jobs", params={"label": "packaging"}, content=capture.read_bytes(),
                            headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            end = time.monotonic() + 90
            while True:
                job = client.get(f"/api/v1/jobs/{job_id}").json()
                if job["state"] in ("done", "failed", "cancelled") or time.monotonic() > end:
                    break
                time.sleep(0.2)
            log = installed.work / "uploads" / job_id / "job.log"
            assert job["state"] == "done", (job, log.read_text(errors="replace") if log.exists() else "")
            assert job["alerts"] == expected
            alerts = client.get("/api/v1/alerts", params={"dataset": job_id}).json()["items"]
            assert [a["rule_id"] for a in alerts] == [ATTACK_RULE] * expected
    finally:
        enterprise.stop()
        province.stop()
