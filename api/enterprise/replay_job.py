"""One replay job, in its own process: ``python -m api.enterprise.replay_job --job ID --settings FILE``.

The API starts this for each uploaded capture (jobs.py). A process of its own because a replay is
CPU-bound Python: in a thread it would hold the GIL the API needs to answer; apart, a capture that
trips a parser bug, or a job that is cancelled or runs past ``api.job_timeout``, ends this process
only. The capture is data handed to the project's own readers (sensor/capture.py); it is never
executed, and it is deleted when the replay ends.

What it does is ``icswatch replay`` into a separate dataset: the same sensor pipeline, the rule set
as the API has it (configured files + the API's switches and suppressions, api/enterprise/rules.py),
incident grouping, and a SQLite store of its own (``<job dir>/dataset.db``, with the asset inventory
built from the same events). Progress (packets, bytes, an estimated percentage) is written to the
API's state file at most twice a second; the end summary (the same JSON as ``icswatch replay
--json-summary``) goes to ``<job dir>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PROGRESS_SECONDS = 0.5


class Cancelled(Exception):
    pass


def estimate_percent(fmt: str, size: int, packets: int, nbytes: int) -> float | None:
    """Share of the file read, from what the reader reported (records are headers + data)."""
    if size <= 0:
        return None
    if fmt == "pcap":
        done = 24 + nbytes + 16 * packets
    elif fmt == "pcapng":
        done = nbytes + 34 * packets  # EPB: 28 bytes of header + 4 of trailer + padding (2 on average)
    else:
        return None  # gzip: the decompressed position says nothing about the file's
    return round(min(99.0, 100.0 * done / size), 1)


def run_job(settings: Any, job_id: str) -> int:
    from alerts.asset_store import AssetStore
    from alerts.records import Observer
    from alerts.runtime import build_alerting
    from alerts.sqlite_store import SQLiteStore
    from api.enterprise.rules import build_engine
    from api.enterprise.state import StateStore
    from icswatch.summary import summary_dict
    from sensor.assets import AssetInventory
    from sensor.capture import CaptureError
    from sensor.pipeline import Pipeline

    state = StateStore(settings.state_db)
    job = state.job(job_id)
    if job is None or job["state"] != "running":
        return 2
    d = Path(job["dir"])
    capture = d / "capture"
    fmt, size = job["format"], int(job["size"])
    cfg = settings.config.model_copy(deep=True)
    engine = build_engine(cfg, state)  # the API's view of the rules: switches and suppressions included
    cfg.rules.enabled = False  # ... handed in below instead of the plain configured engine
    inventory = AssetInventory()
    store = SQLiteStore(d / "dataset.db", Observer.from_config(cfg.sensor))
    runtime = build_alerting(cfg, detectors=[engine], outputs=[store])
    runtime.attach_inventory(inventory)  # as `icswatch replay` does
    pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
    last = [0.0]

    def progress(packets: int, nbytes: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_SECONDS:
            return
        last[0] = now
        current = state.job(job_id)
        if current is None or current["state"] != "running":
            raise Cancelled()
        kind = "gzip" if fmt.startswith("gzip") else fmt
        state.job_progress(job_id, packets, nbytes, estimate_percent(kind, size, packets, nbytes))

    started = time.perf_counter()
    result = None
    try:
        try:
            result = pipeline.replay_file(capture, progress=progress)
        finally:
            summary_alerts = runtime.close()
    except Cancelled:
        capture.unlink(missing_ok=True)
        return 0
    except CaptureError as exc:
        state.finish_job(job_id, "failed", error=str(exc).replace(str(capture), "the upload"))
        capture.unlink(missing_ok=True)
        return 0
    elapsed = time.perf_counter() - started
    with AssetStore(d / "dataset.db") as assets:
        assets.save(inventory)
    summary = summary_dict(pipeline, [result], elapsed, summary_alerts)
    # No server paths in what testers download: the capture is "upload", the store is the job's dataset.
    damaged = list(summary.get("damaged_files", {}).values())
    summary["damaged_files"] = {"upload": damaged[0]} if damaged else {}
    if isinstance(summary.get("alerts"), dict):
        summary["alerts"]["outputs"] = {"sqlite": "dataset " + job_id}
    summary["assets"] = inventory.stats()
    tmp = d / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, d / "summary.json")
    warning = None
    if result.error:
        warning = f"the capture is damaged: {result.error} ({result.packets:,} packets before it were processed)"
    state.finish_job(
        job_id, "done", warning=warning, packets=pipeline.packets, nbytes=pipeline.bytes, events=pipeline.events,
        alerts=summary_alerts.total,
    )
    capture.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.enterprise.replay_job")
    p.add_argument("--job", required=True)
    p.add_argument("--settings", required=True, help="JSON file of the API's configuration")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from alerts import logsafe

    logsafe.install()
    from api.enterprise.settings import EnterpriseSettings

    settings = EnterpriseSettings.from_json(Path(args.settings).read_text(encoding="utf-8"))
    try:
        return run_job(settings, args.job)
    except Exception as exc:  # noqa: BLE001 - recorded on the job; the traceback goes to the job's log
        traceback.print_exc()
        try:
            from api.enterprise.state import StateStore

            StateStore(settings.state_db).finish_job(args.job, "failed", error=f"replay failed: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
