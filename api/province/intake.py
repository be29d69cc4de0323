"""The report intake (``POST /api/v1/incidents``), the platform's hot path, with group commit.

Per request, on the event loop: the signature checks (``check_signature``: an HMAC, one indexed read
on the store's per-thread read connection), the report's validation and its record (deadline,
lateness), then the request joins the current *batch* and waits. A batch is the reports whose
handlers ran in the same turn of the event loop (with one batch in flight, the next one fills while it
commits): the store writes their nonces and incidents in one transaction (``intake_batch``), and only
then does any of them get its answer. So an acknowledged report is committed, its nonce with it, and
a replay of the same nonce, in the same batch or any later one, is refused.

Where the batch runs depends on the store (``intake_in_loop``). SQLite with ``synchronous=NORMAL``
commits without waiting for the disk: the batch runs on the event loop itself, because handing a
few hundred microseconds of work to a thread costs more than the work (a thread hop, and the
worker thread then waits for the GIL behind the loop). Elasticsearch (a network round trip) and
SQLite with ``FULL`` (a flush) run it in one writer thread, one batch at a time, while the loop goes
on parsing the next requests.

The path before this one ran authentication and the write in the thread pool, with one transaction
for the nonce and another for the report, each writing the same index pages to the WAL again: it cost
about twice the CPU per report (bench/province_load.py; docs/linkage.md, "Throughput").
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Request

from api.province.auth import check_request, replayed_nonce
from api.province.errors import ApiError
from api.province.service import ProvinceService
from api.province.store import IntakeItem, IntakeOutcome, ProvinceStore

log = logging.getLogger(__name__)

MAX_BATCH = 512  # reports per commit; beyond it the rest waits for the next batch


@dataclass
class IntakeStats:
    batches: int = 0
    reports: int = 0
    largest: int = 0
    failed_batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "reports": self.reports,
            "largest_batch": self.largest,
            "mean_batch": round(self.reports / self.batches, 2) if self.batches else 0.0,
            "failed_batches": self.failed_batches,
        }


@dataclass
class _Lane:
    """The batch being filled on one event loop, and whether one is being committed."""

    loop: asyncio.AbstractEventLoop | None = None
    pending: list[tuple[IntakeItem, asyncio.Future[IntakeOutcome]]] = field(default_factory=list)
    scheduled: bool = False
    busy: bool = False


class GroupCommit:
    """Commits the intake items of concurrent requests together; each waiter gets its own outcome."""

    def __init__(
        self,
        store: ProvinceStore,
        window: float,
        clock: Callable[[], float] = time.time,
        *,
        in_loop: bool | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.store = store
        self.window = window
        self.clock = clock
        self.in_loop = bool(getattr(store, "intake_in_loop", False)) if in_loop is None else in_loop
        self.max_batch = max_batch
        self.stats = IntakeStats()
        self._lane = _Lane()
        self._writer: ThreadPoolExecutor | None = None
        if not self.in_loop:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="province-intake")

    async def commit(self, item: IntakeItem) -> IntakeOutcome:
        loop = asyncio.get_running_loop()
        lane = self._lane
        if lane.loop is not loop:
            if lane.pending or lane.scheduled or lane.busy:
                # The app served by two event loops at once (not how uvicorn runs it): no batching for
                # this one, but the same write and the same answer.
                result = self._write_or_error([item])
                if isinstance(result, BaseException):
                    raise store_unavailable()
                return result[0]
            lane.loop = loop
        fut: asyncio.Future[IntakeOutcome] = loop.create_future()
        lane.pending.append((item, fut))
        if not lane.scheduled and not lane.busy:
            lane.scheduled = True
            # After the handlers already ready to run in this turn of the loop: they join this batch.
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        lane = self._lane
        lane.scheduled = False
        if not lane.pending or lane.busy:
            return
        batch, lane.pending = lane.pending[: self.max_batch], lane.pending[self.max_batch :]
        items = [item for item, _ in batch]
        if self._writer is None:
            self._settle(batch, self._write_or_error(items))
            self._next()
            return
        lane.busy = True
        done: ThreadFuture[list[IntakeOutcome] | BaseException] = self._writer.submit(self._write_or_error, items)
        loop = lane.loop
        assert loop is not None
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._written, batch, f))

    def _written(
        self,
        batch: list[tuple[IntakeItem, asyncio.Future[IntakeOutcome]]],
        done: ThreadFuture[list[IntakeOutcome] | BaseException],
    ) -> None:
        self._lane.busy = False
        self._settle(batch, done.result())
        self._next()

    def _next(self) -> None:
        lane = self._lane
        if lane.pending and not lane.scheduled and lane.loop is not None:
            lane.scheduled = True
            lane.loop.call_soon(self._flush)

    def _write(self, items: list[IntakeItem]) -> list[IntakeOutcome]:
        outcomes = self.store.intake_batch(items, self.clock(), self.window)
        if len(outcomes) != len(items):  # a store bug; never answer a report with another's outcome
            raise RuntimeError(f"intake_batch answered {len(outcomes)} outcomes for {len(items)} items")
        return outcomes

    def _write_or_error(self, items: list[IntakeItem]) -> list[IntakeOutcome] | BaseException:
        try:
            outcomes = self._write(items)
        except Exception as exc:  # noqa: BLE001 - every waiter gets a 503, the platform keeps going
            log.exception("intake: could not commit a batch of %d reports", len(items))
            self.stats.failed_batches += 1
            return exc
        self.stats.batches += 1
        self.stats.reports += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        return outcomes

    @staticmethod
    def _settle(
        batch: list[tuple[IntakeItem, asyncio.Future[IntakeOutcome]]], result: list[IntakeOutcome] | BaseException
    ) -> None:
        for i, (_, fut) in enumerate(batch):
            if fut.done():  # the client went away: its report is committed all the same
                continue
            if isinstance(result, BaseException):
                fut.set_exception(store_unavailable())
            else:
                fut.set_result(result[i])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)


def store_unavailable() -> ApiError:
    return ApiError(
        503,
        "store_unavailable",
        "the platform could not store the report: nothing was acknowledged, retry later",
        headers={"Retry-After": "1"},
    )


class ReportIntake:
    """``POST /api/v1/incidents`` from the body to the receipt (the router only adds the response)."""

    def __init__(self, service: ProvinceService, committer: GroupCommit) -> None:
        self.service = service
        self.committer = committer

    async def report(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = await request.body()  # bounded by the body limit middleware
        principal, claim = check_request(request, body, "enterprise")
        assert claim is not None  # the enterprise role comes only from a signature
        refusal: ApiError | None = None
        try:
            record = self.service.prepare_intake(principal, body)
        except ApiError as exc:
            # Refused, but only once its nonce is spent: a replay of it must say "replayed", and the
            # same request resent must not be checked again.
            record, refusal = None, exc
        outcome = await self.committer.commit(IntakeItem(claim.key_id, claim.nonce, claim.ts, record))
        if not outcome.fresh:
            raise replayed_nonce()
        request.state.principal = principal
        if refusal is not None:
            raise refusal
        if outcome.error or outcome.stored is None:
            assert record is not None
            log.error("intake: the store refused %s/%s: %s", record.enterprise_id, record.incident_id, outcome.error)
            raise store_unavailable()
        return self.service.intake_reply(outcome.created, outcome.stored)
