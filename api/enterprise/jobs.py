"""Pcap upload and replay jobs for testers.

Upload (``POST /api/v1/jobs``, the raw capture as the body, ``application/octet-stream``): the body is
streamed to ``upload_dir/<job id>/capture`` (a name the server chooses, mode 0600, never a
client-supplied name or path), hashed on the way (SHA-256), and refused:

- 413 as soon as it passes ``api.upload_max_bytes`` (from Content-Length before anything is read,
  or while a chunked body streams in);
- 415 when its first bytes are not a pcap, pcapng or gzip magic (checked on the first chunk, so a
  large non-capture is refused early) or a gzip that does not hold a capture: the type is decided by
  the magic (``sensor.capture.sniff_format`` / ``is_capture_file``), never by a file name;
- 400 when it is empty; 429 when ``api.max_jobs`` jobs are already queued or running.

A scheduler thread in each API process claims queued jobs one at a time (atomically, in the state
file, so several worker processes share the queue) and runs each in a child process
(replay_job.py) with a timeout. Progress, the end state, and the counts are in the state file;
the alerts, incidents and assets in the job's own dataset (``dataset=<job id>`` on the read routes);
the summary in ``summary.json``. Finished jobs beyond ``api.keep_jobs`` are deleted with their files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from api.enterprise.adapters import JOB_ID_RE
from api.enterprise.errors import ApiError
from api.enterprise.settings import EnterpriseSettings
from api.enterprise.state import StateStore

log = logging.getLogger(__name__)
MAX_RESULT_ALERTS = 50_000
LABEL_MAX = 200


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a replay child (``python -m api.enterprise.replay_job``).

    Run from a source checkout, the API's code may be importable only because the checkout is the
    current directory or on PYTHONPATH: the child gets the checkout first on PYTHONPATH, so it runs
    the same code from any directory. An installed icswatch needs nothing (the same interpreter finds
    its own packages), and putting site-packages on PYTHONPATH would move it ahead of the stdlib.
    """
    from icswatch.config import source_checkout

    env = dict(environ)
    root = source_checkout()
    if root is not None:
        env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def capture_format(head: bytes, path: Path) -> str | None:
    """pcap / pcapng / gzip+pcap / gzip+pcapng from the magic, None for anything else."""
    from sensor.capture import is_capture_file, sniff_format

    kind = sniff_format(head)
    if kind in ("pcap", "pcapng"):
        return kind
    if kind == "gzip" and is_capture_file(path):
        try:
            with gzip.open(path, "rb") as fh:
                inner = sniff_format(fh.read(4))
        except (OSError, EOFError):
            return None
        return f"gzip+{inner}" if inner else None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobManager:
    def __init__(self, settings: EnterpriseSettings, state: StateStore, on_delete: Any = None) -> None:
        self.settings = settings
        self.api = settings.api
        self.state = state
        self.root = settings.upload_dir
        self.on_delete = on_delete
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._current: str | None = None
        self._settings_file: Path | None = None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.root, 0o700)
        except OSError:
            pass
        for job_id in self.state.orphaned_jobs(_alive):
            log.warning("replay job %s was interrupted by a restart", job_id)
        self._thread = threading.Thread(target=self._loop, name="icswatch-replay-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(15)

    # -- upload --------------------------------------------------------------------------------
    async def receive(self, request: Request, by: str, label: str) -> dict[str, Any]:
        if self.state.active_jobs() >= self.api.max_jobs:
            raise ApiError(429, "too_many_jobs", f"{self.api.max_jobs} replay jobs are queued or running; wait for one to finish",
                           headers={"Retry-After": "10"})
        ctype = (request.headers.get("content-type") or "application/octet-stream").split(";")[0].strip().lower()
        if ctype != "application/octet-stream":
            raise ApiError(415, "unsupported_media_type",
                           "send the capture as the raw request body with Content-Type: application/octet-stream")
        limit = self.api.upload_max_bytes
        job_id = "job_" + secrets.token_hex(8)
        d = self.root / job_id
        d.mkdir(mode=0o700, parents=True)
        path = d / "capture"
        sha = hashlib.sha256()
        size = 0
        head = b""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
                async for chunk in request.stream():
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > limit:
                        request.scope.setdefault("state", {})["audit_detail"] = "body_too_large"
                        raise ApiError(413, "body_too_large", f"the capture is over the {limit:,}-byte upload limit (api.upload_max_bytes)",
                                       headers={"Connection": "close"})
                    if len(head) < 4:
                        head += chunk[: 4 - len(head)]
                        if len(head) == 4:
                            self._check_magic(head)
                    sha.update(chunk)
                    fh.write(chunk)
            if size == 0:
                raise ApiError(400, "empty_upload", "the body is empty: send the capture file's bytes")
            if len(head) < 4:
                raise ApiError(415, "not_a_capture", f"{size} byte(s) are not a pcap or pcapng capture")
            fmt = capture_format(head, path)
            if fmt is None:
                raise ApiError(415, "not_a_capture", "a gzip file that does not hold a pcap or pcapng capture")
        except ClientDisconnect:
            shutil.rmtree(d, ignore_errors=True)
            raise ApiError(400, "upload_interrupted", "the client stopped sending before the end of the body") from None
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        clean = "".join(ch for ch in label if ch.isprintable())[:LABEL_MAX] or "upload"
        self.state.create_job(job_id, clean, by, size, sha.hexdigest(), fmt, str(d))
        self._wake.set()
        job = self.state.job(job_id)
        assert job is not None
        return job

    @staticmethod
    def _check_magic(head: bytes) -> None:
        from sensor.capture import sniff_format

        if sniff_format(head) is None:
            raise ApiError(
                415, "not_a_capture",
                f"not a pcap, pcapng or gzip capture (the file starts with {head.hex()}); the type is read from the content, not the name",
            )

    # -- running ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.state.claim_job(os.getpid())
            except Exception:
                log.exception("replay jobs: cannot read the queue")
                job = None
            if job is None:
                self._wake.wait(2.0)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception:
                log.exception("replay job %s failed to run", job["id"])
                self.state.finish_job(job["id"], "failed", error="the job could not be started; see the API log")
            self._prune()

    def _settings_path(self) -> Path:
        if self._settings_file is None or not self._settings_file.exists():
            p = self.root / f".settings-{os.getpid()}.json"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.settings.to_json())
            self._settings_file = p
        return self._settings_file

    def _run(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        d = Path(job["dir"])
        env = child_environment(os.environ)
        with open(d / "job.log", "ab") as logf:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "api.enterprise.replay_job", "--job", job_id, "--settings", str(self._settings_path())],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, close_fds=True,
            )
            self._current = job_id
            deadline = time.monotonic() + self.api.job_timeout
            reason = None
            try:
                while True:
                    try:
                        code = self._proc.wait(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if self._stop.is_set():
                        reason = "stopped: the API shut down while the job ran"
                    elif time.monotonic() > deadline:
                        reason = f"stopped after {self.api.job_timeout:g} s (api.job_timeout)"
                    else:
                        cur = self.state.job(job_id)
                        if cur is None or cur["state"] != "running":
                            reason = "cancelled"
                    if reason:
                        self._proc.terminate()
                        try:
                            code = self._proc.wait(10)
                        except subprocess.TimeoutExpired:
                            self._proc.kill()
                            code = self._proc.wait(10)
                        break
            finally:
                self._current = None
                self._proc = None
        cur = self.state.job(job_id)
        if cur is not None and cur["state"] == "running":
            tail = ""
            try:
                tail = (d / "job.log").read_text(errors="replace").strip().splitlines()[-1][:300]
            except (OSError, IndexError):
                pass
            self.state.finish_job(job_id, "failed", error=reason or f"the replay process exited with code {code}" + (f": {tail}" if tail else ""))
        (d / "capture").unlink(missing_ok=True)

    def _prune(self) -> None:
        for job in self.state.old_jobs(self.api.keep_jobs):
            self.delete(job["id"])

    # -- managing ---------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        job = self.state.job(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no replay job {job_id!r}")
        return self.state.finish_job(job_id, "cancelled", error="cancelled by an analyst")

    def job_dir(self, job_id: str) -> Path:
        """``upload_dir/<job id>``, for a well-formed id only: the id is the one name a client supplies,
        and it never becomes a path outside the upload directory (the routes check the pattern too)."""
        if not JOB_ID_RE.match(job_id):
            raise ApiError(422, "invalid_job_id", "a job id is job_ and 16 hex digits")
        d = self.root / job_id
        if d.resolve().parent != self.root.resolve():
            raise ApiError(404, "not_found", f"no replay job {job_id!r}")  # a link planted in the upload dir
        return d

    def delete(self, job_id: str) -> bool:
        d = self.job_dir(job_id)
        job = self.state.job(job_id)
        if job is None:
            return False
        if job["state"] in ("queued", "running"):
            self.state.finish_job(job_id, "cancelled", error="deleted")
            if job["state"] == "running":
                # the runner notices within a second; its files go with the directory below
                for _ in range(50):
                    if self._current != job_id:
                        break
                    time.sleep(0.1)
        if self.on_delete is not None:
            self.on_delete(job_id)
        self.state.forget_dataset(job_id)
        shutil.rmtree(d, ignore_errors=True)
        return self.state.delete_job(job_id)

    def summary(self, job_id: str) -> dict[str, Any] | None:
        p = self.job_dir(job_id) / "summary.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def public(job: dict[str, Any]) -> dict[str, Any]:
    """A job row as the API shows it (no server paths, no process ids)."""
    return {
        "id": job["id"],
        "state": job["state"],
        "label": job["label"],
        "created_at": job["created_at"],
        "created_by": job["created_by"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        "size": job["size"],
        "sha256": job["sha256"],
        "format": job["format"],
        "packets": job["packets"],
        "bytes": job["bytes"],
        "percent": job["percent"],
        "events": job["events"],
        "alerts": job["alerts"],
        "error": job["error"],
        "warning": job["warning"],
        "dataset": job["id"],
    }
