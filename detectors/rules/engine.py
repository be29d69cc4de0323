"""RuleEngine: the Detector that runs the YAML rules over IcsEvents.

Per event the cost is one dict lookup that finds the rules which can match an event of that
(protocol, direction, category, function code, result), then one generated function running them all
(compiler.build_bucket). Everything stateful (new, threshold, suppression) runs only after a rule's
condition matched. Under the alerting runtime, ``signature_runner`` narrows that further per event
signature: the rules an earlier event of the same signature settled are left out.

A rule that raises at run time (a protocol put something unexpected in ``fields``) is counted in
``errors`` and skipped for that event; it never stops the other rules or the sensor.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from alerts.records import Alert, alert_id
from detectors.rules.attack import tactic_order, technique_name, technique_tactics
from detectors.rules.compiler import (
    INDEXED_FIELDS,
    Compiled,
    CompileError,
    bucket_block,
    build_bucket,
    build_step,
    compile_rule,
)
from detectors.rules.fields import event_value
from detectors.rules.lists import IpMatcher, ListError, NamedLists
from detectors.rules.loader import RuleSet, load_rules
from detectors.rules.schema import Problem, Rule
from detectors.rules.state import FirstSeenState, SuppressState, ThresholdState
from sensor.events import IcsEvent

log = logging.getLogger(__name__)

SWEEP_EVERY = 60.0  # seconds of capture time between sweeps of stale threshold/suppression state
MAX_INDEX_KEYS = 65536  # (protocol, direction, category, function) keys cached; far above what protocols produce
# At most this many seconds of capture time between two runs of a signature's refresh-only rules (distinct
# thresholds whose value the signature fixes): see RuleEngine.signature_runner.
REFRESH_SECONDS = 1.0


class SignatureRules(NamedTuple):
    """What ``RuleEngine.signature_runner`` returns for the first event of a signature."""

    alerts: list[Alert] | None  # what that first event raised
    run: Callable[[IcsEvent], list[Alert] | None] | None  # rules for every later event (None: none)
    refresh: Callable[[IcsEvent], list[Alert] | None] | None  # rules for one event per ``refresh_seconds``
    refresh_seconds: float


@dataclass
class EngineSettings:
    """The knobs the engine reads (``RulesConfig`` has the same names)."""

    default_suppress: float = 60.0
    learn_seconds: float = 300.0
    max_state: int = 10_000
    max_new_values: int = 4096
    max_evidence: int = 10

    @classmethod
    def from_config(cls, cfg: Any) -> EngineSettings:
        if cfg is None:
            return cls()
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if hasattr(cfg, k)})


class CompiledRule:
    """A rule ready to run: its match function, its state, and how it builds alerts."""

    __slots__ = (
        "alerts",
        "asset",
        "block",
        "compiled",
        "drop",
        "errors",
        "match",
        "max_evidence",
        "new",
        "rule",
        "seq",
        "step",
        "suppress",
        "tactics",
        "technique_names",
        "threshold",
    )

    def __init__(
        self,
        rule: Rule,
        compiled: Compiled,
        settings: EngineSettings,
        drop: Callable[[Alert], bool] | None = None,
    ) -> None:
        self.rule = rule
        self.compiled = compiled
        self.match = compiled.match
        th = rule.threshold
        self.threshold = (
            ThresholdState(th.count, th.within, compiled.group_key, compiled.distinct_key, settings.max_state)  # type: ignore[arg-type]
            if th is not None
            else None
        )
        nw = rule.new
        self.new = (
            FirstSeenState(
                compiled.new_value,  # type: ignore[arg-type]
                compiled.new_per,  # type: ignore[arg-type]
                compiled.new_known,
                nw.learn if nw.learn is not None else settings.learn_seconds,
                settings.max_state,
                settings.max_new_values,
            )
            if nw is not None
            else None
        )
        seconds = rule.suppress.seconds if rule.suppress is not None else settings.default_suppress
        self.suppress = SuppressState(seconds, compiled.suppress_key, settings.max_state)  # type: ignore[arg-type]
        self.asset = compiled.asset
        self.drop = drop  # the engine's standing (config) suppressions
        self.step = build_step(compiled, rule, self.threshold, self.new, self.finish)
        self.block = bucket_block(compiled, rule, self.threshold, self.new, self.finish)  # for build_bucket
        self.seq = 0
        self.alerts = 0
        self.errors = 0
        self.technique_names = tuple(technique_name(t) for t in rule.techniques)
        tactics: list[str] = []
        for t in rule.techniques:
            for tac in technique_tactics(t):
                if tac not in tactics:
                    tactics.append(tac)
        self.tactics = tuple(sorted(tactics, key=tactic_order))
        self.max_evidence = settings.max_evidence

    @property
    def id(self) -> str:
        return self.rule.id

    def fire(self, event: IcsEvent) -> Alert | None:
        """Run the rule on one event (condition, new, threshold, suppression): the alert or None.

        The engine calls ``step`` (the same thing, generated) only for events of the rule's index
        bucket; ``fire`` checks the whole condition first, so it accepts any event.
        """
        full = self.compiled.full_match
        if full is not None and not full(event):
            return None
        if self.new is not None:
            self.new.start(event.ts)
        return self.step(event)

    @property
    def refresh_only(self) -> bool:
        """A distinct threshold whose condition, group and value are fixed by an event's signature: a
        signature's later events can only refresh the time of the value its first event brought."""
        return self.compiled.signature_distinct

    def settled(self, event: IcsEvent) -> bool:
        """True when the rule can do nothing for a later event of ``event``'s signature (the same flow,
        sender, protocol, direction, category, function, unit and result), now that it has run on ``event``.

        That holds when everything the rule reads is fixed by the signature (``Compiled.signature_match``)
        and either its condition is false, or it is a first-seen rule whose value is now remembered for
        its key (or is None, or on a ``known`` list): an event of the signature would find it known. Rules
        that count (thresholds) or that read what varies per event (address, values, fields.*) never are.
        """
        compiled = self.compiled
        if not compiled.signature_match:
            return False
        full = compiled.full_match
        if full is not None and not full(event):
            return True
        new = self.new
        if new is None or self.threshold is not None or not compiled.signature_new:
            return False
        value = new.value_key(event)
        if value is None or (new.known is not None and new.known(value)):
            return True
        seen = new.seen.get(new.per_key(event))
        return seen is not None and value in seen

    def finish(self, event: IcsEvent, evidence: tuple[IcsEvent, ...]) -> Alert | None:
        """The rule fired on ``event``: apply suppression, then build the alert."""
        if self.suppress.check(event):
            return None
        alert = self.build(event, evidence)
        if self.drop is not None and self.drop(alert):
            return None
        return alert

    def build(self, event: IcsEvent, evidence: tuple[IcsEvent, ...]) -> Alert:
        rule = self.rule
        extra: dict[str, Any] = {}
        if rule.new is not None:
            extra["new"] = {name: event_value(event, name) for name in rule.new.value}
        self.seq += 1
        self.alerts += 1
        first = evidence[0]
        first_ts = first.ts
        count = len(evidence)
        keep = self.max_evidence
        if count > keep:  # the first and the last events tell the story; the count says how many
            head = keep // 2
            evidence = evidence[:head] + evidence[count - (keep - head) :]
        group = None
        th = rule.threshold
        if th is not None:
            group = {name: event_value(event, name) for name in th.group_by}
            extra["threshold"] = {"count": th.count, "within": th.within}
            count = th.count  # events counted (the evidence keeps the last ones)
            first_ts = self.threshold.fired_start  # type: ignore[union-attr]
            if th.distinct:
                extra["threshold"]["distinct"] = th.distinct
                extra["threshold"]["distinct_values"] = list(self.threshold.fired_values)  # type: ignore[union-attr]
                count = len(extra["threshold"]["distinct_values"])  # values counted, not events kept
        if rule.new is not None:
            group = dict(group or {}, **{name: event_value(event, name) for name in rule.new.per})
        return Alert(
            id=alert_id(rule.id, first, self.seq),
            ts=event.ts,
            rule_id=rule.id,
            rule_name=rule.title,
            severity=rule.severity,
            techniques=rule.techniques,
            technique_names=self.technique_names,
            tactics=self.tactics,
            description=rule.description,
            references=rule.references,
            detector="rules",
            protocol=event.protocol,
            transport=event.transport,
            src=event.src,
            sport=event.sport,
            dst=event.dst,
            dport=event.dport,
            asset=str(self.asset(event)) if self.asset is not None else event.dst,
            first_ts=first_ts,
            count=count,
            events=tuple(evidence),
            group=group,
            flow_id=event.flow_id,
            extra=extra,
        )

    def sweep(self, now: float) -> None:
        if self.threshold is not None:
            self.threshold.sweep(now)
        self.suppress.sweep(now)

    def stats(self) -> dict[str, int]:
        out = {"alerts": self.alerts, "errors": self.errors, "suppressed": self.suppress.suppressed}
        evicted = self.suppress.evicted
        if self.threshold is not None:
            evicted += self.threshold.evicted
        if self.new is not None:
            evicted += self.new.evicted
            out["new_capped"] = self.new.capped
        out["evicted"] = evicted
        return out


class _StandingSuppression:
    """A ``rules.suppress`` entry from the config, compiled."""

    def __init__(self, entry: Any, lists: NamedLists) -> None:
        self.rule = entry.rule
        self.src = self._matcher(entry.src, lists)
        self.dst = self._matcher(entry.dst, lists)
        self.until = entry.expires()
        self.hits = 0

    @staticmethod
    def _matcher(value: str | None, lists: NamedLists) -> IpMatcher | None:
        if not value:
            return None
        if value.startswith("@"):
            name = value[1:]
            if name not in lists:
                raise ListError(f"rules.suppress: unknown list {name!r}")
            return lists.ip_matcher(name)
        from detectors.rules.lists import parse_network

        try:
            return IpMatcher([parse_network(value)])
        except ValueError:
            raise ListError(f"rules.suppress: {value!r} is not an IP address, CIDR network or @list") from None

    def drops(self, alert: Alert) -> bool:
        if self.until is not None and alert.ts >= self.until:
            return False
        if not fnmatch.fnmatchcase(alert.rule_id, self.rule):
            return False
        if self.src is not None and not self.src[alert.src]:
            return False
        if self.dst is not None and not self.dst[alert.dst]:
            return False
        self.hits += 1
        return True


def _no_rules(event: IcsEvent) -> None:
    return None


_no_rules.rules = ()  # type: ignore[attr-defined]


class RuleEngine:
    """Runs compiled rules; implements the Detector interface (observe / tick / flush)."""

    name = "rules"

    def __init__(
        self,
        rules: Iterable[Rule],
        lists: NamedLists | None = None,
        settings: EngineSettings | None = None,
        *,
        problems: Iterable[Problem] = (),
        disabled: Iterable[str] = (),
        suppressions: Iterable[Any] = (),
    ) -> None:
        self.lists = lists or NamedLists()
        self.settings = settings or EngineSettings()
        self.problems: list[Problem] = list(problems)
        self.standing: list[_StandingSuppression] = []  # filled below; rules call _standing_drop
        self.rules: list[CompiledRule] = []  # every rule that compiled, enabled or not
        self.disabled_ids: set[str] = set()
        patterns = list(disabled)
        for rule in rules:
            try:
                compiled = compile_rule(rule, self.lists)
            except CompileError as exc:
                self.problems.append(Problem(rule.path, exc.line or rule.line, rule.id, exc.message))
                continue
            except Exception as exc:  # a compiler bug must not take the other rules down
                log.exception("rule %s failed to compile", rule.id)
                self.problems.append(Problem(rule.path, rule.line, rule.id, f"internal error while compiling: {exc}"))
                continue
            try:
                cr = CompiledRule(rule, compiled, self.settings, self._standing_drop)
            except Exception as exc:  # a generator bug must not take the other rules down
                log.exception("rule %s failed to build", rule.id)
                self.problems.append(Problem(rule.path, rule.line, rule.id, f"internal error while compiling: {exc}"))
                continue
            self.rules.append(cr)
            if not rule.enabled or any(fnmatch.fnmatchcase(rule.id, p) for p in patterns):
                self.disabled_ids.add(rule.id)
        self.active: list[CompiledRule] = [r for r in self.rules if r.id not in self.disabled_ids]
        for entry in suppressions:
            try:
                self.standing.append(_StandingSuppression(entry, self.lists))
            except ListError as exc:
                self.problems.append(Problem("config", 0, None, str(exc)))
        self._index: dict[tuple[str, str, str, int, str], Callable[[IcsEvent], list[Alert] | None]] = {}
        # rules of a bucket -> their fused function (compiler.build_bucket): many keys share a rule set
        self._fused: dict[tuple[CompiledRule, ...], Callable[[IcsEvent], list[Alert] | None]] = {}
        # (bucket function, its rules a signature settled) -> signature_runner's plan for such signatures
        self._plans: dict[tuple[Any, tuple[CompiledRule, ...]], tuple[Any, Any, float]] = {}
        self.observe = self._make_observe()  # type: ignore[method-assign]
        self._started = False
        self._next_sweep: float | None = None
        self.suppressed_by_config = 0
        self.files: list[str] = []

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_ruleset(cls, ruleset: RuleSet, lists: NamedLists | None = None, settings: EngineSettings | None = None, **kw: Any) -> RuleEngine:
        return cls(ruleset.rules, lists, settings, problems=ruleset.problems, **kw)

    @classmethod
    def from_config(cls, rules_config: Any) -> RuleEngine:
        """Load lists and rule files as ``rules_config`` (icswatch.config.RulesConfig) says."""
        problems: list[Problem] = []
        try:
            lists = NamedLists.from_config(rules_config.lists, rules_config.lists_file or None)
        except ListError as exc:
            problems.append(Problem(str(rules_config.lists_file), 0, None, str(exc)))
            lists = NamedLists.from_config(rules_config.lists, None)
        ruleset = load_rules(rules_config.paths, lists)
        engine = cls(
            ruleset.rules,
            lists,
            EngineSettings.from_config(rules_config),
            problems=problems + ruleset.problems,
            disabled=rules_config.disabled,
            suppressions=rules_config.suppress,
        )
        engine.files = ruleset.files
        return engine

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    def rule(self, rule_id: str) -> CompiledRule | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None

    # -- the hot path -------------------------------------------------------------------------
    def _bucket(self, event: IcsEvent) -> Callable[[IcsEvent], list[Alert] | None]:
        """The function running the rules an event of this (protocol, direction, category, function,
        result) can match (cached per key; one fused function per distinct set of rules)."""
        if not self._started:  # the first event: learning periods start now
            self._started = True
            for r in self.active:
                if r.new is not None:
                    r.new.start(event.ts)
        key = (event.protocol, event.direction, event.category, event.function, event.result)
        rules = tuple(
            r for r in self.active
            if all(r.compiled.index[f] is None or v in r.compiled.index[f] for f, v in zip(INDEXED_FIELDS, key))  # type: ignore[operator]
        )
        run = self._fused.get(rules)
        if run is None:
            run = build_bucket(rules, self._failed) if rules else _no_rules
            self._fused[rules] = run
        if len(self._index) >= MAX_INDEX_KEYS:
            self._index.clear()
            self._fused.clear()
            self._plans.clear()
        self._index[key] = run
        return run

    def observe(self, event: IcsEvent) -> list[Alert]:  # replaced per instance by _make_observe's function
        """The alerts ``event`` raises (usually none)."""
        return self.__dict__["observe"](event)

    def _make_observe(self) -> Callable[[IcsEvent], list[Alert]]:
        """``observe`` as one function with the index bound: no method lookup or attribute load per
        event. ``_index`` is only ever cleared, never rebound."""
        index_get = self._index.get
        bucket = self._bucket

        def observe(event: IcsEvent) -> list[Alert]:
            run = index_get((event.protocol, event.direction, event.category, event.function, event.result))
            if run is None:
                run = bucket(event)
            return run(event) or []

        return observe

    def _run_of(self, event: IcsEvent) -> Callable[[IcsEvent], list[Alert] | None]:
        """The bucket function for ``event``'s index key, built on first use (``observe`` inlines this)."""
        run = self._index.get((event.protocol, event.direction, event.category, event.function, event.result))
        return self._bucket(event) if run is None else run

    def reads(self, event: IcsEvent) -> bool:
        """Whether any active rule can match an event of ``event``'s protocol, direction, category,
        function and result (its index bucket holds rules)."""
        return bool(self._run_of(event).rules)  # type: ignore[attr-defined]

    def signature_runner(self, event: IcsEvent) -> SignatureRules:
        """Run the rules on the first event of a signature (alerts.runtime's signature table) and say
        what the signature's later events need (``SignatureRules``): the bucket's rules minus the ones
        this event settled (``CompiledRule.settled``), with the distinct thresholds whose group and
        value the signature fixes set apart (``CompiledRule.refresh_only``).

        In a polling plant nearly every event repeats a signature. Once a talker or a function is known,
        the first-seen rules of its bucket cannot fire for the signature again; and a scan rule (so many
        distinct functions from one host within a minute) can learn nothing from a value it already
        holds except that the value is still in use: refreshing that once a second
        (``REFRESH_SECONDS``) instead of on every poll moves the value's time by at most a second."""
        run = self._run_of(event)
        alerts = run(event)
        rules: tuple[CompiledRule, ...] = run.rules  # type: ignore[attr-defined]
        if not rules:
            return SignatureRules(alerts, None, None, 0.0)
        try:
            settled = tuple(r for r in rules if r.settled(event))
        except Exception:  # noqa: BLE001 - a rule that raises here raises in the bucket too: keep them all
            return SignatureRules(alerts, run, None, 0.0)
        # Signatures of a bucket fall into a few plans (which of its rules are settled): each plan is
        # worked out once (a new signature comes with every connection, and a port scan is all new ones).
        plan = self._plans.get((run, settled))
        if plan is None:
            if len(self._plans) >= MAX_INDEX_KEYS:
                self._plans.clear()
            plan = self._plans[(run, settled)] = self._plan(run, settled)
        return SignatureRules(alerts, *plan)

    def _plan(
        self, run: Callable[[IcsEvent], list[Alert] | None], settled: tuple[CompiledRule, ...]
    ) -> tuple[Callable[[IcsEvent], list[Alert] | None] | None, Callable[[IcsEvent], list[Alert] | None] | None, float]:
        """(rules for every later event, refresh-only rules, how often) for a signature of the bucket
        ``run`` on which its ``settled`` rules can do nothing more."""
        rules: tuple[CompiledRule, ...] = run.rules  # type: ignore[attr-defined]
        left = tuple(r for r in rules if r not in settled)
        every = tuple(r for r in left if not r.refresh_only)
        refresh = tuple(r for r in left if r.refresh_only)
        if not every:
            every_run = None
        elif len(every) == len(rules):
            every_run = run  # nothing settled, nothing refresh-only: the bucket as it is
        else:
            every_run = self._fused_run(every)
        if not refresh:
            return every_run, None, 0.0
        seconds = min(REFRESH_SECONDS, *(r.rule.threshold.within / 10 for r in refresh))  # type: ignore[union-attr]
        return every_run, self._fused_run(refresh), seconds

    def _fused_run(self, rules: tuple[CompiledRule, ...]) -> Callable[[IcsEvent], list[Alert] | None]:
        fused = self._fused.get(rules)
        if fused is None:
            fused = self._fused[rules] = build_bucket(rules, self._failed)
        return fused

    def forgotten(self) -> int:
        """Values the first-seen rules have forgotten so far (assets evicted over ``max_state``). When it
        grows, signatures settled on a forgotten value must run their full bucket again."""
        return sum(r.new.evicted for r in self.active if r.new is not None)

    def _failed(self, step: Any, event: IcsEvent) -> None:
        for r in self.active:
            if r.step is step:
                r.errors += 1
                if r.errors == 1:
                    log.exception("rule %s failed on event %s", r.id, event.id)
                return

    def _standing_drop(self, alert: Alert) -> bool:
        if not self.standing:
            return False
        for s in self.standing:
            if s.drops(alert):
                self.suppressed_by_config += 1
                return True
        return False

    def tick(self, ts: float) -> list[Alert]:
        nxt = self._next_sweep
        if nxt is None or ts >= nxt or ts < nxt - 2 * SWEEP_EVERY:
            self._next_sweep = ts + SWEEP_EVERY
            if nxt is not None:
                for r in self.active:
                    r.sweep(ts)
        return []

    def flush(self) -> list[Alert]:
        """End of input. Partly filled threshold windows do not fire: a threshold is a threshold."""
        return []

    def stats(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "active": len(self.active),
            "load_errors": len(self.errors),
            "suppressed_by_config": self.suppressed_by_config,
            "per_rule": {r.id: r.stats() for r in self.rules},
        }
