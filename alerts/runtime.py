"""The alerting half of a sensor run: detectors -> incidents -> batched outputs.

``build_alerting(config)`` wires it from the configuration; the CLI then passes
``runtime.on_event`` / ``runtime.on_tick`` to the sensor pipeline and calls ``runtime.close()`` at
the end, which returns the ``AlertSummary`` printed under the replay summary.

Per event the runtime does four cheap things: keep the event in a small ring (so an alert can be
stored with the flow's events just before it), feed the events that follow an alert on its flow to
that alert (while any alert is waiting for them), look the event's signature up (``sensor.events.signature_of``:
one dict lookup counts it for the asset inventory and finds the rules the signature still needs,
see ``_make_on_event``), and call the other detectors' ``observe``. Everything else happens only
when an alert fires. Alerts are written in batches: when ``outputs.batch_size``
alerts are pending, when ``outputs.flush_seconds`` of wall-clock time passed since the first pending
one (checked on every tick, about once per second of capture time), and at ``close()``.

An output that fails (disk full, locked database) is logged and counted in the summary; the other
outputs still get the batch and the sensor keeps running.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from alerts.incidents import LEVEL_NAMES_EN, IncidentGrouper
from alerts.records import Alert, Incident, Observer, iso_time
from alerts.store import AlertOutput, WriteBatch
from detectors.base import Detector
from sensor.assets import AssetEvent
from sensor.events import OK, RESPONSE, IcsEvent, signature_of

log = logging.getLogger(__name__)

MAX_KEPT_ALERTS = 10_000  # alerts kept in memory for the end summary (all are counted and written)
# Incidents kept for the end summary (its table shows the gravest 40): the first ones, like the alerts.
# Unbounded, a sensor that runs for days kept every incident it ever opened, ~3 KB each, and the soak
# mix opens about ten thousand an hour (docs/soak.md).
MAX_KEPT_INCIDENTS = 1_000
MAX_SIGNATURES = 65_536  # event signatures kept (counts and rules); past it they go to the inventory
MAX_AFTER_WATCHES = 1_000  # alerts waiting for their flow's next events at once
AFTER_SECONDS = 30.0  # an alert stops collecting its flow's next events after this much capture time
SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


@dataclass
class AlertSummary:
    """What the alerting side did during a run: for the end table and the JSON summary."""

    total: int = 0
    by_rule: Counter = field(default_factory=Counter)
    by_severity: Counter = field(default_factory=Counter)
    by_technique: Counter = field(default_factory=Counter)
    alerts: list[Alert] = field(default_factory=list)  # the first MAX_KEPT_ALERTS
    incidents: dict[str, Incident] = field(default_factory=dict)  # the first MAX_KEPT_INCIDENTS
    incidents_total: int = 0  # every incident opened, kept or not
    problems: list[str] = field(default_factory=list)  # rule load errors and warnings
    outputs: dict[str, str] = field(default_factory=dict)  # name -> where
    output_errors: Counter = field(default_factory=Counter)
    detectors: dict[str, Any] = field(default_factory=dict)  # name -> stats

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_rule": dict(self.by_rule.most_common()),
            "by_severity": {s: self.by_severity[s] for s in ("critical", "high", "medium", "low") if self.by_severity[s]},
            "by_technique": dict(self.by_technique.most_common()),
            "incidents_total": self.incidents_total,
            "incidents": [
                {
                    "id": i.id,
                    "asset": i.asset,
                    "level": i.level,
                    "level_name": i.level_name,
                    "severity": i.severity,
                    "alerts": i.alert_count,
                    "techniques": list(i.techniques),
                    "tactics": list(i.tactics),
                    "first": iso_time(i.first_ts),
                    "last": iso_time(i.last_ts),
                }
                for i in self.incidents.values()
            ],
            "rule_problems": list(self.problems),
            "outputs": dict(self.outputs),
            "output_errors": dict(self.output_errors),
            "detectors": self.detectors,
        }

    def print(self, console: Any, max_rows: int = 40) -> None:
        """The alert tables under the replay summary (rich)."""
        from rich.console import Console
        from rich.table import Table

        if self.problems:
            err = Console(stderr=True)
            for p in self.problems:
                err.print("rules: " + p, style="yellow", highlight=False, markup=False)
        if not self.total:
            console.print("[green]No alerts.[/]")
            return
        sev = ", ".join(f"{s} {self.by_severity[s]}" for s in ("critical", "high", "medium", "low") if self.by_severity[s])
        console.print(f"[bold]{self.total} alert(s)[/] ({sev}), {self.incidents_total} incident(s)")
        table = Table(title="Alerts", title_justify="left")
        for col in ("time (UTC)", "severity", "rule", "technique", "source -> destination", "evidence"):
            table.add_column(col, overflow="fold")
        for a in self.alerts[:max_rows]:
            table.add_row(
                iso_time(a.ts)[:23],
                f"[{SEVERITY_STYLE.get(a.severity, '')}]{a.severity}[/]",
                a.rule_id,
                ", ".join(a.techniques),
                f"{a.src}:{a.sport} -> {a.dst}:{a.dport}",
                describe_evidence(a),
            )
        console.print(table)
        if self.total > max_rows:
            console.print(f"[dim]... {self.total - max_rows} more; all alerts are in the configured outputs[/]")
            by_rule = Table(title="Alerts by rule", title_justify="left")
            by_rule.add_column("rule")
            by_rule.add_column("alerts", justify="right")
            for rid, n in self.by_rule.most_common():
                by_rule.add_row(rid, str(n))
            console.print(by_rule)
        if self.incidents:
            inc_table = Table(title="Incidents", title_justify="left")
            for col in ("incident", "asset", "level", "alerts", "technique chain", "tactics"):
                inc_table.add_column(col, overflow="fold")
            ordered = sorted(self.incidents.values(), key=lambda i: (i.level, -i.alert_count))
            for i in ordered[:max_rows]:
                inc_table.add_row(
                    i.id[:12],
                    i.asset,
                    f"{i.level_name} {LEVEL_NAMES_EN[i.level]}",
                    str(i.alert_count),
                    " > ".join(i.techniques),
                    ", ".join(i.tactics),
                )
            console.print(inc_table)
        if self.outputs:
            console.print("[dim]alerts written to: " + ", ".join(f"{k} {v}" for k, v in self.outputs.items()) + "[/]")
        for name, n in self.output_errors.items():
            console.print(f"[red]output {name} failed {n} time(s): see the log[/]")


def describe_evidence(alert: Alert, limit: int = 3) -> str:
    """A one-cell summary of an alert's evidence: ``write_single_register u1 @100 =[7]`` (addresses 0-based)."""
    parts = []
    for e in alert.events[:limit]:
        s = e.function_name
        if e.unit is not None:
            s += f" u{e.unit}"
        if e.address is not None:
            s += f" @{e.address}" + (f"+{e.quantity}" if e.quantity and e.quantity > 1 else "")
        if e.values:
            vals = list(e.values[:4])
            s += f" ={vals}" + ("..." if len(e.values) > 4 else "")
        if e.result != "ok":
            s += f" {e.result}" + (f":{e.code}" if e.code is not None else "")
        parts.append(s)
    if alert.count > limit:
        parts.append(f"({alert.count} events)")
    return "; ".join(parts)


_NEVER = float("inf")


def _ignore(event: IcsEvent) -> None:
    return None


class _AfterWatch:
    __slots__ = ("alert_id", "flow_id", "left", "seq", "until")

    def __init__(self, alert_id: str, flow_id: int, left: int, until: float) -> None:
        self.alert_id = alert_id
        self.flow_id = flow_id
        self.left = left
        self.seq = 0
        self.until = until


class AlertingRuntime:
    def __init__(
        self,
        detectors: Iterable[Detector],
        grouper: IncidentGrouper | None = None,
        outputs: Iterable[AlertOutput] = (),
        observer: Observer | None = None,
        *,
        batch_size: int = 200,
        flush_seconds: float = 1.0,
        context_events: int = 3,
        problems: Iterable[str] = (),
    ) -> None:
        self.detectors = list(detectors)
        self.grouper = grouper or IncidentGrouper()
        self.outputs = list(outputs)
        self.observer = observer or Observer()
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.context = context_events
        self.summary = AlertSummary(problems=list(problems))
        for out in self.outputs:
            self.summary.outputs[out.name] = str(getattr(out, "path", ""))
        # The last few events, for the "before" context of an alert. Kept short on purpose: every event
        # it holds outlives its packet, and live young objects are what the garbage collector walks.
        self._ring: deque[IcsEvent] = deque(maxlen=max(16, context_events * 4))
        self._after: dict[int, list[_AfterWatch]] = {}  # flow id -> alerts waiting for its next events
        self._after_count = 0
        self._batch = WriteBatch(observer=self.observer)
        self._dirty: dict[str, Incident] = {}
        self._pending_since: float | None = None
        self._closed = False
        if context_events <= 0:
            self._ring = deque(maxlen=1)
        # Called with every accepted alert before it is grouped and stored (live evidence capture
        # writes the alert's packets and records the file in ``alert.extra``).
        self.alert_hooks: list[Callable[[Alert], None]] = []
        self._taps: list[Callable[[IcsEvent], Any]] = []
        # The signature table (see ``_make_on_event``): ``signature_of(event)`` -> [events, first ts, last ts,
        # first event, rules for every event, refresh-only rules, when they are due, how often].
        self._sigs: dict[tuple[Any, ...], list[Any]] = {}
        # The same, for responses that only restate their request (sensor.assets.restates_request) and
        # that a rule reads: their rules, never counts (the inventory counts the operation at the request).
        self._answers: dict[tuple[Any, ...], list[Any]] = {}
        # (protocol, direction, category, function, result) -> True when no rule reads such events
        self._quiet: dict[tuple[Any, ...], bool] = {}
        self._inventory: Any = None  # sensor.assets.AssetInventory, when attached
        # One-slot lists the per-event function reads, refilled by attach_inventory / replace_detectors:
        self._direct: list[Callable[[IcsEvent], Any]] = [_ignore]  # events the inventory takes one by one
        self._others: list[Callable[[IcsEvent], None] | None] = [None]  # detectors other than the rules
        self._engine: Any = None  # the rule engine (the detector with ``signature_runner``)
        self._forgotten = 0
        self._tick_ts: float | None = None
        self._bind_observers()
        self.on_event = self._make_on_event()  # type: ignore[method-assign]

    def _bind_observers(self) -> None:
        self._quiet.clear()
        self._engine = next((d for d in self.detectors if callable(getattr(d, "signature_runner", None))), None)
        self._forgotten = self._engine.forgotten() if self._engine is not None else 0
        self._observers = tuple(d.observe for d in self.detectors if d is not self._engine)
        self._others[0] = self._observe_others if self._observers else None

    def _make_on_event(self) -> Callable[[IcsEvent], None]:
        """The pipeline's event sink: one function with everything bound (the hot path: no method
        lookups, no call per layer).

        Per event it keeps the event in the context ring, hands it to the taps and to alerts waiting
        for their flow's next events, then looks up the event's *signature* (``signature_of``: flow,
        sender, protocol, direction, category, function, unit, result). A polling plant repeats a few
        signatures millions of times, so one dict lookup does two things: it counts the event for
        the asset inventory (events, first and last time per signature), and it finds the rules to run,
        which the engine narrowed down when the signature first came (``RuleEngine.signature_runner``:
        a first-seen rule whose talker or function is known cannot fire for the signature again).
        Events without a flow, and events carrying a device's identity, also take the slow paths. A
        response its analyzer paired with the request, answered ok, restates the request for the
        inventory (``sensor.assets.restates_request``): it skips the table unless a rule reads its kind.
        The detectors and the inventory are read through one-slot lists and methods, so a pipeline
        holding this function stays valid across ``replace_detectors`` (a SIGHUP reload)."""
        ring_append = self._ring.append
        accept = self._accept
        after = self._after  # never rebound, only mutated
        watch_after = self._watch_after
        taps = self._taps
        sigs_get = self._sigs.get  # never rebound, only cleared
        first_of_signature = self._first_of_signature
        flowless = self._flowless
        direct = self._direct
        others = self._others
        refresh = self._refresh
        quiet_get = self._quiet.get  # never rebound, only cleared
        answer = self._answer
        ok = OK
        response = RESPONSE

        def on_event(event: IcsEvent) -> None:
            ring_append(event)
            if taps:
                for tap in taps:
                    tap(event)
            flow_id = event.flow_id
            if after and flow_id in after:
                watch_after(event)
            if not flow_id:
                flowless(event)
            elif (event.latency is not None and event.result == ok and event.direction == response
                  and not ((fields := event.fields) and "identity" in fields)):
                # A response paired with its request, answered ok (sensor.assets.restates_request): the
                # inventory counted the operation at the request; only a rule reading such answers needs it.
                kind = (event.protocol, response, event.category, event.function, ok)
                if quiet_get(kind) is not True:
                    answer(event, kind)
            else:
                key = (  # signature_of(event), inlined
                    flow_id, event.src, event.sport, event.protocol, event.direction, event.category,
                    event.function, event.function_name, event.unit, event.result,
                )
                sig = sigs_get(key)
                if sig is None:
                    first_of_signature(event, key)
                else:
                    ts = event.ts
                    fields = event.fields
                    if fields and "identity" in fields:
                        direct[0](event)
                    else:
                        sig[0] += 1
                        if ts > sig[2]:
                            sig[2] = ts
                        elif ts < sig[1]:
                            sig[1] = ts
                    run = sig[4]
                    if run is not None:
                        alerts = run(event)
                        if alerts:
                            accept(alerts)
                    if ts >= sig[6]:  # the signature's refresh-only rules are due (never, when it has none)
                        refresh(sig, event)
            if others[0] is not None:
                others[0](event)

        return on_event

    def on_event(self, event: IcsEvent) -> None:  # replaced per instance by _make_on_event's function
        """The pipeline's event sink (``__init__`` binds the fast version of it on the instance)."""
        self.__dict__["on_event"](event)

    def _first_of_signature(self, event: IcsEvent, key: tuple[Any, ...], counted: bool = True) -> None:
        sigs = self._sigs if counted else self._answers
        if len(sigs) >= MAX_SIGNATURES:
            self._reset_signatures()
        ts = event.ts
        fields = event.fields
        # [events, first ts, last ts, the first event for the inventory (a copy: keeping the event itself
        # costs the packet path, see AssetEvent), rules for every event, refresh-only rules, when they are
        # next due, how often]; the events are counted for the inventory unless it takes them whole
        # (identities) or they restate their request (the answers' table)
        if counted:
            entry: list[Any] = [1, ts, ts, AssetEvent.of(event), None, None, _NEVER, 0.0]
            if fields and "identity" in fields:
                self._direct[0](event)
                entry[0] = 0
        else:
            entry = [0, ts, ts, None, None, None, _NEVER, 0.0]
        sigs[key] = entry
        engine = self._engine
        if engine is not None:
            alerts, entry[4], entry[5], entry[7] = engine.signature_runner(event)
            if entry[5] is not None:
                entry[6] = ts + entry[7]
            if alerts:
                self._accept(alerts)

    def _answer(self, event: IcsEvent, kind: tuple[Any, ...]) -> None:
        """A response that restates its request (``sensor.assets.restates_request``), of a ``kind``
        (protocol, direction, category, function, result) not known to be quiet: if a rule reads it, it
        runs through the answers' table (the signature table's rules, without the counts); otherwise the
        kind is remembered as quiet."""
        quiet = self._quiet.get(kind)
        if quiet is None:
            engine = self._engine
            quiet = self._quiet[kind] = engine is None or not engine.reads(event)
        if quiet:
            return
        key = signature_of(event)
        sig = self._answers.get(key)
        if sig is None:
            self._first_of_signature(event, key, counted=False)
            return
        run = sig[4]
        if run is not None:
            alerts = run(event)
            if alerts:
                self._accept(alerts)
        if event.ts >= sig[6]:
            self._refresh(sig, event)

    def _refresh(self, sig: list[Any], event: IcsEvent) -> None:
        sig[6] = event.ts + sig[7]
        alerts = sig[5](event)
        if alerts:
            self._accept(alerts)

    def _flowless(self, event: IcsEvent) -> None:
        """An event of no flow (layer 2, a flow table refusal): its sender and receiver are not fixed by a
        signature, so the inventory and the rules take it whole."""
        self._direct[0](event)
        engine = self._engine
        if engine is not None:
            alerts = engine.observe(event)
            if alerts:
                self._accept(alerts)

    def _observe_others(self, event: IcsEvent) -> None:
        """Detectors other than the rules (baseline, ML): each one's alerts are accepted as they come."""
        for observe in self._observers:
            alerts = observe(event)
            if alerts:
                self._accept(alerts)

    def _drain_signatures(self) -> list[tuple[int, float, float, AssetEvent]]:
        """(events, first ts, last ts, what the inventory reads of its first event) of each signature with events since the last drain
        (the asset inventory's source: ``attach_inventory``). The entries stay, with their rules."""
        out = []
        for entry in self._sigs.values():
            if entry[0]:
                out.append((entry[0], entry[1], entry[2], entry[3]))
                entry[0] = 0
        return out

    def _reset_signatures(self) -> None:
        """Forget every signature (the table is full, the detectors changed, or the rules forgot values
        some signatures were settled on); their counts go to the inventory first."""
        if self._inventory is not None:
            self._inventory.flush()  # pulls the counts through _drain_signatures
        self._sigs.clear()
        self._answers.clear()

    def attach_inventory(self, inventory: Any) -> None:
        """Keep ``inventory`` (sensor.assets.AssetInventory) up to date from the signature table: it pulls
        the per-signature counts whenever it is read; events with an identity or without a flow go to
        its ``observe`` one by one. Cheaper than a tap: the signature is looked up once for both."""
        self._inventory = inventory
        self._direct[0] = inventory.observe
        inventory.add_source(self._drain_signatures)

    def tap(self, consumer: Callable[[IcsEvent], Any]) -> None:
        """Also hand every event to ``consumer`` (an event writer, the Elasticsearch event feed): called
        from ``on_event`` itself, one call less per event than chaining it next to the runtime."""
        self._taps.append(consumer)

    def add_alert_hook(self, hook: Callable[[Alert], None]) -> None:
        self.alert_hooks.append(hook)

    def replace_detectors(self, detectors: Iterable[Detector]) -> None:
        """Swap the detectors (SIGHUP reload): the old ones are flushed first, so nothing pending is lost."""
        for d in self.detectors:
            alerts = d.flush()
            if alerts:
                self._accept(alerts)
        self.detectors = list(detectors)
        self._bind_observers()
        self._reset_signatures()  # their rules were the old engine's

    def on_tick(self, ts: float) -> None:
        engine = self._engine
        if engine is not None:
            forgotten = engine.forgotten()
            if forgotten != self._forgotten:  # a settled signature may rest on a forgotten value
                self._forgotten = forgotten
                self._reset_signatures()
            elif self._tick_ts is not None and ts < self._tick_ts - 1.0:
                # The capture clock went back (merged files, a clock restart): refresh-only rules are due
                # on the new clock, not when the old one would have reached their time.
                for table in (self._sigs, self._answers):
                    for sig in table.values():
                        if sig[5] is not None:
                            sig[6] = ts
        self._tick_ts = ts
        for d in self.detectors:
            alerts = d.tick(ts)
            if alerts:
                self._accept(alerts)
        self.grouper.tick(ts)
        if self._after:
            self._expire_after(ts)
        if self._pending_since is not None and time.monotonic() - self._pending_since >= self.flush_seconds:
            self.flush()

    # -- alerts ------------------------------------------------------------------------------
    def _accept(self, alerts: list[Alert]) -> None:
        batch = self._batch
        summary = self.summary
        for a in alerts:
            for hook in self.alert_hooks:
                try:
                    hook(a)
                except Exception as exc:  # noqa: BLE001 - a hook (evidence writer) must not lose the alert
                    self.summary.problems.append(f"alert hook failed: {exc}")
            inc = self.grouper.add(a)
            self._dirty[inc.id] = inc
            if inc.alert_count == 1:  # this alert opened it
                summary.incidents_total += 1
                if len(summary.incidents) < MAX_KEPT_INCIDENTS:
                    summary.incidents[inc.id] = inc
            batch.alerts.append(a)
            summary.total += 1
            summary.by_rule[a.rule_id] += 1
            summary.by_severity[a.severity] += 1
            for t in a.techniques:
                summary.by_technique[t] += 1
            if len(summary.alerts) < MAX_KEPT_ALERTS:
                summary.alerts.append(a)
            for i, e in enumerate(a.events):
                batch.events.append((a.id, "evidence", i, e))
            if self.context > 0:
                self._context_before(a)
                if self._after_count >= MAX_AFTER_WATCHES:
                    oldest = next(iter(self._after))
                    self._after_count -= len(self._after.pop(oldest))
                self._after.setdefault(a.flow_id, []).append(_AfterWatch(a.id, a.flow_id, self.context, a.ts + AFTER_SECONDS))
                self._after_count += 1
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if len(batch.alerts) >= self.batch_size:
            self.flush()

    def _context_before(self, alert: Alert) -> None:
        evidence = {id(e) for e in alert.events}
        flow = alert.flow_id
        before = [e for e in self._ring if e.flow_id == flow and id(e) not in evidence]
        before = before[-self.context :]
        events = self._batch.events
        for i, e in enumerate(before):
            events.append((alert.id, "before", i, e))

    def _watch_after(self, event: IcsEvent) -> None:
        """The event is on a flow some alerts wait on: give it to them (their "after" context)."""
        watches = self._after[event.flow_id]
        keep = []
        events = self._batch.events
        for w in watches:
            if event.ts > w.until:
                continue
            events.append((w.alert_id, "after", w.seq, event))
            w.seq += 1
            w.left -= 1
            if w.left > 0:
                keep.append(w)
        self._after_count -= len(watches) - len(keep)
        if keep:
            self._after[event.flow_id] = keep
        else:
            del self._after[event.flow_id]

    def _expire_after(self, ts: float) -> None:
        for flow in [f for f, ws in self._after.items() if all(ts > w.until for w in ws)]:
            self._after_count -= len(self._after.pop(flow))

    def flush(self) -> None:
        """Write what is pending to every output (one batch: one transaction in SQLite)."""
        batch = self._batch
        if not batch.alerts and not batch.events and not self._dirty:
            self._pending_since = None
            return
        batch.incidents = list(self._dirty.values())
        self._batch = WriteBatch(observer=self.observer)
        self._dirty = {}
        self._pending_since = None
        for out in self.outputs:
            try:
                out.write(batch)
            except Exception:
                self.summary.output_errors[out.name] += 1
                log.exception("alert output %s failed to write a batch of %d alert(s)", out.name, len(batch.alerts))

    def close(self) -> AlertSummary:
        """End of input: flush detectors and outputs, close outputs, return the summary."""
        if self._closed:
            return self.summary
        self._closed = True
        for d in self.detectors:
            try:
                alerts = d.flush()
            except Exception:
                log.exception("detector %s failed to flush", getattr(d, "name", d))
                continue
            if alerts:
                self._accept(alerts)
        self._after.clear()
        self._after_count = 0
        self.flush()
        for out in self.outputs:
            try:
                out.close()
            except Exception:
                self.summary.output_errors[out.name] += 1
                log.exception("alert output %s failed to close", out.name)
        for d in self.detectors:
            stats = getattr(d, "stats", None)
            if callable(stats):
                self.summary.detectors[getattr(d, "name", type(d).__name__)] = stats()
        return self.summary


def build_alerting(
    config: Any,
    detectors: list[Detector] | None = None,
    *,
    alerts_out: str | None = None,
    outputs: list[AlertOutput] | None = None,
) -> AlertingRuntime:
    """The runtime a ``Config`` describes: the rule engine (unless disabled) plus ``detectors``, incident
    grouping, and the configured outputs (SQLite, EVE, ECS JSON Lines via ``alerts_out`` or
    ``outputs.alerts_out``). ``outputs`` replaces the configured outputs (tests, embedding)."""
    from alerts.ecs_jsonl import EcsJsonlWriter
    from alerts.eve import EveWriter
    from alerts.sqlite_store import SQLiteStore
    from detectors.rules import NamedLists, RuleEngine

    observer = Observer.from_config(config.sensor)
    rules_cfg = config.rules
    dets: list[Detector] = []
    problems: list[str] = []
    lists = None
    if rules_cfg.enabled:
        engine = RuleEngine.from_config(rules_cfg)
        problems.extend(str(p) for p in engine.problems)
        lists = engine.lists
        dets.append(engine)
    dets.extend(detectors or [])
    if lists is None:
        try:
            lists = NamedLists.from_config(rules_cfg.lists, rules_cfg.lists_file or None)
        except Exception as exc:  # noqa: BLE001 - reported, grading simply runs without critical assets
            problems.append(str(exc))
            lists = NamedLists(rules_cfg.lists)
    critical = None
    if "critical_assets" in lists:
        try:
            critical = lists.ip_matcher("critical_assets").__getitem__
        except Exception as exc:  # noqa: BLE001
            problems.append(str(exc))
    grouper = IncidentGrouper(rules_cfg.incident_window, critical, rules_cfg.max_open_incidents)

    outs: list[AlertOutput]
    if outputs is not None:
        outs = list(outputs)
    else:
        oc = config.outputs
        outs = []
        if oc.sqlite:
            outs.append(SQLiteStore(oc.sqlite, observer, oc.sqlite_synchronous))
        if oc.eve:
            outs.append(EveWriter(oc.eve))
        path = alerts_out or oc.alerts_out
        if path:
            outs.append(EcsJsonlWriter(path))
        if getattr(config, "elasticsearch", None) is not None:
            # bulk to Elasticsearch when a URL is set, spooled on disk while it is unreachable
            from alerts.es_sink import es_outputs

            outs.extend(es_outputs(config, observer))
        linkage = getattr(config, "linkage", None)
        if linkage is not None and linkage.enabled:
            # incidents that reach the reporting level are queued (redacted) for the provincial platform
            from alerts.outbox import OutboxWriter

            outs.append(OutboxWriter.from_config(config))
    return AlertingRuntime(
        dets,
        grouper,
        outs,
        observer,
        batch_size=config.outputs.batch_size,
        flush_seconds=config.outputs.flush_seconds,
        context_events=config.outputs.context_events,
        problems=problems,
    )
