"""Protect mode: the ``BaselineDetector`` raises an Alert for every departure from the baseline.

Checks, in order, for each event (the first that fails raises, the rest are skipped for that event,
so one deviation gives one alert, not a cascade):

1. ``baseline-new-asset``: an endpoint never seen while learning (once per address; further events of
   that asset raise nothing more: there is no baseline to compare them with, the analyst looks at it);
2. ``baseline-new-talker``: both assets known, but they never talked (once per client/server);
3. ``baseline-new-protocol``: they talked, but not this protocol (once per pair and protocol);
4. ``baseline-new-function``: the pair never used this function (once per pair and function);
5. ``baseline-read-out-of-range`` / ``baseline-write-out-of-range``: the addresses touched are not
   inside the function's learned ranges on that unit (once per pair, function, unit and range);
6. ``baseline-value-out-of-range``: a written value outside the learned [min, max] of its address
   (once per pair, function, unit, address and value);
7. the IEC 104 sequence check: an N(S)/N(R) anomaly the pair never showed while learning
   (``baseline-sequence-anomaly``; after one, the same flow's next ``sequence_hold_events`` events
   raise no other sequence alert: one lost or injected frame upsets several numbers after it);
8. timing of learned periodic requests: ``baseline-poll-faster`` / ``baseline-poll-slower`` when one
   interval leaves [low, high] (then quiet until three intervals in a row are back inside), and
   ``baseline-poll-stopped`` from ``tick`` after ``stop_after`` seconds of silence (once, until the
   poll comes back).

Time: intervals are only measured within one timing epoch. Capture time going backwards (the IPAL IEC
104 files restart their clock for every connection), or jumping forward by more than ``capture_gap``
seconds with no event in between (a capture gap, the next file of a replay), starts a new epoch:
no interval and no silence is measured across it, so neither raises a false alert. A poll seen in an
earlier epoch counts its silence from the start of the current one (so a poll that does not come
back after a gap is still reported); a learned poll never seen in the run is not reported as stopped
(the sensor may not see that part of the network).

Every alert explains itself: ``description`` is one readable sentence, ``extra`` holds ``expected``
(the baseline entry), ``seen`` (what happened) and ``change`` (what accepting it would add; used by
``icswatch baseline accept``).
"""

from __future__ import annotations

from typing import Any

from alerts.records import Alert, alert_id
from detectors.baseline.keys import (
    START_MIDWAY,
    address_range,
    connection_start,
    endpoints,
    sequence_anomaly,
    signature,
    timed,
    written_values,
)
from detectors.baseline.model import Baseline, FunctionEntry, PairEntry, PollEntry
from sensor.assets import is_host_address, protocol_of
from sensor.events import CONTROL, MALFORMED, PROGRAM, READ, WRITE, IcsEvent

MAX_ALERT_KEYS = 100_000  # deviations remembered for once-only alerting; beyond, alerts are counted only
RECOVER_INTERVALS = 3  # in-bounds intervals in a row that re-arm a poll's timing alert

# ATT&CK for ICS (v15 names; the same catalogue as detectors/rules/attack.py).
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T0846": ("Remote System Discovery", ("Discovery",)),
    "T0848": ("Rogue Master", ("Initial Access",)),
    "T0886": ("Remote Services", ("Initial Access", "Lateral Movement")),
    "T0869": ("Standard Application Layer Protocol", ("Command and Control",)),
    "T0855": ("Unauthorized Command Message", ("Impair Process Control",)),
    "T0861": ("Point & Tag Identification", ("Collection",)),
    "T0836": ("Modify Parameter", ("Impair Process Control",)),
    "T0814": ("Denial of Service", ("Inhibit Response Function",)),
    "T0804": ("Block Reporting Message", ("Inhibit Response Function",)),
    "T0806": ("Brute Force I/O", ("Impair Process Control",)),
    "T0830": ("Adversary-in-the-Middle", ("Collection",)),
    "T0856": ("Spoof Reporting Message", ("Evasion", "Impair Process Control")),
}

# rule id -> (title, default severity, techniques)
RULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "baseline-new-asset": ("New asset on the network", "medium", ("T0846",)),
    "baseline-new-talker": ("New talker pair", "medium", ("T0846", "T0886")),
    "baseline-new-protocol": ("New protocol between known assets", "medium", ("T0869", "T0886")),
    "baseline-new-function": ("New function between known talkers", "medium", ("T0855",)),
    "baseline-read-out-of-range": ("Read outside the learned address ranges", "low", ("T0861",)),
    "baseline-write-out-of-range": ("Write outside the learned address ranges", "high", ("T0855", "T0836")),
    "baseline-value-out-of-range": ("Written value outside the learned range", "high", ("T0836",)),
    "baseline-poll-stopped": ("Periodic request stopped", "high", ("T0814", "T0804")),
    "baseline-poll-faster": ("Periodic request faster than learned", "medium", ("T0855", "T0814")),
    "baseline-poll-slower": ("Periodic request slower than learned", "medium", ("T0814", "T0804")),
    "baseline-sequence-anomaly": ("IEC 104 sequence anomaly", "high", ("T0830", "T0856")),
}

SEQUENCE_WHAT = {
    "iec104_seq_gap": "N(S) skipped numbers (I-frames missing)",
    "iec104_seq_gap_after_loss": "N(S) jumped where the capture also lost bytes (I-frames missing or dropped)",
    "iec104_seq_duplicate": "N(S) repeated (a duplicated or replayed I-frame)",
    "iec104_seq_reorder": "N(S) arrived late, after a later number (reordered I-frames)",
    "iec104_ack_unsent": "N(R) acknowledges I-frames the peer never sent",
    "iec104_ack_backward": "N(R) moved backwards",
    "iec104_k_exceeded": "more unacknowledged I-frames outstanding than k=12",
    "iec104_data_while_stopped": "I-frames sent after STOPDT was confirmed",
    START_MIDWAY: "a new connection's first I-frame does not have N(S)=0 (its first I-frames never reached the sensor)",
}
_IMPACTFUL = frozenset({WRITE, CONTROL, PROGRAM})


class _PollState:
    __slots__ = ("alerted", "entry", "epoch", "event", "good", "last", "pair_key", "stopped")

    def __init__(self, entry: PollEntry, pair_key: tuple) -> None:
        self.entry = entry
        self.pair_key = pair_key
        self.last: float | None = None
        self.epoch = -1
        self.event: IcsEvent | None = None
        self.stopped = False
        self.alerted = False
        self.good = 0


class BaselineDetector:
    """The Detector (detectors/base.py) for protect mode."""

    name = "baseline"

    def __init__(self, baseline: Baseline, source: str = "") -> None:
        self.baseline = baseline
        self.source = source
        self.pairs = baseline.pairs
        self.assets = baseline.assets
        self.talkers = baseline.talkers()
        self._polls: dict[tuple, _PollState] = {}
        for pk, p in baseline.pairs.items():
            for sig, pe in p.polls.items():
                self._polls[(pk, sig)] = _PollState(pe, pk)
        self._alerted: set[tuple] = set()
        self._new_assets: set[str] = set()
        self._seq: dict[str, int] = {}
        self._hold: dict[int, int] = {}  # flow id -> events left without sequence alerts
        self._first_flow: dict[tuple, int] = {}  # pair -> first flow seen (joined late: exempt)
        self._epoch = 0
        self._epoch_start = 0.0  # capture time the current timing epoch began
        self._epoch_event: IcsEvent | None = None  # the event that began it (None: a tick did)
        self._last: IcsEvent | None = None  # the last event seen (where a tick-time check happened)
        self._prev_ts: float | None = None
        self._gap = float(baseline.setting("capture_gap"))
        self._hold_events = int(baseline.setting("sequence_hold_events"))
        self.events = 0
        self.alerts = 0
        self.suppressed = 0  # deviations not alerted (already alerted, or about an asset already new)
        self.uncounted = 0  # deviations beyond MAX_ALERT_KEYS
        self.epochs = 0

    @classmethod
    def from_file(cls, path: str) -> BaselineDetector:
        from detectors.baseline.yamlio import load

        return cls(load(path), str(path))

    # -- the per-event hook -----------------------------------------------------------------------------
    def observe(self, event: IcsEvent) -> list[Alert]:
        self.events += 1
        ts = event.ts
        prev = self._prev_ts
        if prev is None:
            self._epoch_start = ts
            self._epoch_event = event
        elif ts < prev - 1.0 or ts - prev > self._gap:
            self._new_epoch(ts, ts > prev, event)
        self._prev_ts = ts
        self._last = event
        if event.result == MALFORMED:
            return []
        client, server, cis = endpoints(event)
        assets = self.assets
        # 1. assets (broadcast and multicast destinations are not assets)
        if (client not in assets and is_host_address(client)) or (server not in assets and is_host_address(server)):
            return self._new_asset(event, client, server, cis)
        proto = protocol_of(event)
        pk = (client, server, proto)
        pair = self.pairs.get(pk)
        # 2./3. talker pair, protocol
        if pair is None:
            return self._new_pair(event, client, server, proto)
        side = "client" if cis else "server"
        fe = pair.functions.get((side, event.function_name))
        # 4. function
        if fe is None:
            return self._new_function(event, pair, side)
        out: list[Alert] = []
        # 5./6. addresses and values
        rng = address_range(event)
        if rng is not None:
            a = self._addresses(event, pair, fe, rng, cis)
            if a:
                return a
        # 7. sequence
        if self._hold:
            left = self._hold.get(event.flow_id)
            if left is not None:
                if left <= 1:
                    del self._hold[event.flow_id]
                else:
                    self._hold[event.flow_id] = left - 1
        first_flow = self._first_flow.get(pk)
        if first_flow is None and len(self._first_flow) < MAX_ALERT_KEYS:
            self._first_flow[pk] = first_flow = event.flow_id
        seq = sequence_anomaly(event)
        if seq is None:
            start = connection_start(event)
            if start and event.flow_id != first_flow and pair.starts.get("at_zero") and not pair.starts.get("midway"):
                seq = START_MIDWAY
        if seq is not None and not pair.sequence.get(seq):
            a = self._sequence(event, pair, seq)
            if a:
                out.extend(a)
        # 8. timing
        if timed(event, cis):
            st = self._polls.get((pk, signature(event, side)))
            if st is not None:
                a = self._interval(st, event)
                if a:
                    out.extend(a)
        return out

    def _new_epoch(self, ts: float, forward: bool, event: IcsEvent | None = None) -> None:
        self._epoch += 1
        self.epochs += 1
        self._epoch_start = ts
        self._epoch_event = event
        if forward:
            self._first_flow = {}  # a capture gap: the sensor may join connections late again

    def tick(self, ts: float) -> list[Alert]:
        prev = self._prev_ts
        if prev is None or ts < prev - 1.0:
            return []  # time went back: silence cannot be measured against the old clock
        if ts - prev > self._gap:
            # The pipeline ticks before it hands over the packet that ends a capture gap: the gap is
            # seen here first. Nothing was observed during it, so nothing is judged across it.
            self._new_epoch(ts, True)
            self._prev_ts = ts
            return []
        out: list[Alert] = []
        epoch = self._epoch
        for st in self._polls.values():
            last = st.last
            if last is None or st.stopped:
                continue  # a poll never seen in this run cannot stop (the sensor may not see it at all)
            # seen in an earlier timing epoch: silence counts from the start of this one
            since_event = st.event
            if st.epoch == epoch:
                since = last
            elif last <= ts and last > self._epoch_start:
                # seen before the current epoch began but on the same clock (the epoch began with a
                # stray late packet): silence counts from the poll itself
                since = last
            else:  # seen on a clock that has since gone back, or before a capture gap: from the epoch start
                since = self._epoch_start
                since_event = self._epoch_event
            silence = ts - since
            if silence > st.entry.stop_after:
                st.stopped = True
                out.append(self._stopped(st, ts, since, since_event))
        return out

    def flush(self) -> list[Alert]:
        # The end of a capture is not a poll that stopped: nothing to raise.
        return []

    def stats(self) -> dict[str, Any]:
        return {
            "baseline": self.source,
            "events": self.events,
            "alerts": self.alerts,
            "suppressed": self.suppressed,
            "uncounted_over_cap": self.uncounted,
            "timing_epochs": self.epochs,
        }

    # -- checks -------------------------------------------------------------------------------------------
    def _once(self, key: tuple) -> bool:
        """True the first time a deviation key is seen (then remembered, bounded)."""
        if key in self._alerted:
            self.suppressed += 1
            return False
        if len(self._alerted) >= MAX_ALERT_KEYS:
            self.uncounted += 1
            return False
        self._alerted.add(key)
        return True

    def _new_asset(self, event: IcsEvent, client: str, server: str, cis: bool) -> list[Alert]:
        out = []
        for addr, role in ((client, "client"), (server, "server")):
            if addr in self.assets or not is_host_address(addr):
                continue
            if addr in self._new_assets:
                self.suppressed += 1
                continue
            if len(self._new_assets) >= MAX_ALERT_KEYS:
                self.uncounted += 1
                continue
            self._new_assets.add(addr)
            other = server if role == "client" else client
            mac = (
                (event.src_mac if cis else event.dst_mac)
                if role == "client"
                else (event.dst_mac if cis else event.src_mac)
            )
            sev = "high" if role == "client" and event.category in _IMPACTFUL else "medium"
            desc = (
                f"New asset {addr}" + (f" ({mac})" if mac else "") + f" seen as {protocol_of(event)} {role} "
                f"{'of' if role == 'client' else 'for'} {other} ({event.function_name}); "
                f"the baseline knows {len(self.assets)} assets and not this one."
            )
            out.append(
                self._alert(
                    "baseline-new-asset",
                    event,
                    desc,
                    asset=addr,
                    severity=sev,
                    expected={"assets": len(self.assets), "known": False},
                    seen={
                        "address": addr,
                        "mac": mac,
                        "role": role,
                        "peer": other,
                        "protocol": protocol_of(event),
                        "function": event.function_name,
                    },
                    change={
                        **_relation_change("asset", event, client, server, protocol_of(event)),
                        "address": addr,
                        "mac": mac,
                        "role": role,
                    },
                )
            )
        return out

    def _new_pair(self, event: IcsEvent, client: str, server: str, proto: str) -> list[Alert]:
        change = _relation_change("pair", event, client, server, proto)
        if (client, server) in self.talkers:
            if not self._once(("protocol", client, server, proto)):
                return []
            known = sorted(p for c, s, p in self.pairs if c == client and s == server)
            desc = (
                f"{client} -> {server} spoke {proto} ({event.function_name}); while learning this pair only "
                f"spoke {', '.join(known)}."
            )
            sev = "high" if event.category in _IMPACTFUL else "medium"
            return [
                self._alert(
                    "baseline-new-protocol",
                    event,
                    desc,
                    asset=server,
                    severity=sev,
                    expected={"pair": [client, server], "protocols": known},
                    seen={"protocol": proto, "function": event.function_name, "category": event.category},
                    change=change,
                )
            ]
        if not self._once(("talker", client, server)):
            return []
        peers = sorted({f"{s} ({p})" for c, s, p in self.pairs if c == client})[:20]
        clients = sorted({f"{c} ({p})" for c, s, p in self.pairs if s == server})[:20]
        desc = (
            f"{client} talked {proto} to {server} ({event.function_name}) and never did while learning; "
            f"{server}'s learned clients: {', '.join(clients) or 'none'}."
        )
        sev = "high" if event.category in _IMPACTFUL else "medium"
        return [
            self._alert(
                "baseline-new-talker",
                event,
                desc,
                asset=server,
                severity=sev,
                expected={"servers_of_client": peers, "clients_of_server": clients},
                seen={
                    "client": client,
                    "server": server,
                    "protocol": proto,
                    "function": event.function_name,
                    "category": event.category,
                },
                change=change,
            )
        ]

    def _new_function(self, event: IcsEvent, pair: PairEntry, side: str) -> list[Alert]:
        if not self._once(("function", pair.key, event.function_name)):
            return []
        learned = sorted({f.name for f in pair.functions.values()})
        rng = address_range(event)
        where = ""
        if event.unit is not None:
            where += f" unit {event.unit}"
        if rng is not None:
            where += f" @{rng[0]}" + (f"-{rng[1]}" if rng[1] != rng[0] else "")
        desc = (
            f"{pair.client} -> {pair.server} {pair.protocol}: function {event.function_name} ({event.category}){where} "
            f"was never used by this pair; learned: {', '.join(learned)}."
        )
        sev = "high" if event.category in _IMPACTFUL else "medium"
        return [
            self._alert(
                "baseline-new-function",
                event,
                desc,
                asset=pair.server,
                severity=sev,
                expected={"functions": learned},
                seen={
                    "function": event.function_name,
                    "category": event.category,
                    "from": side,
                    "unit": event.unit,
                    "range": list(rng) if rng else None,
                },
                change={
                    "kind": "function",
                    "client": pair.client,
                    "server": pair.server,
                    "protocol": pair.protocol,
                    "from": side,
                    "function": event.function_name,
                    "category": event.category,
                    "unit": event.unit,
                    "range": list(rng) if rng else None,
                    "values": _value_span(event, side == "client"),
                },
            )
        ]

    def _addresses(
        self, event: IcsEvent, pair: PairEntry, fe: FunctionEntry, rng: tuple[int, int], cis: bool
    ) -> list[Alert]:
        ue = fe.units.get(event.unit)
        if ue is None or not ue.addresses.contains(rng[0], rng[1]):
            if not len(fe.units) and fe.count:
                return []  # the function never carried addresses while learning: nothing to compare
            if not self._once(("range", pair.key, event.function_name, event.unit, rng)):
                return []
            rule = "baseline-read-out-of-range" if fe.category == READ else "baseline-write-out-of-range"
            if fe.category not in (READ, WRITE, CONTROL):
                rule = "baseline-write-out-of-range" if event.category in _IMPACTFUL else "baseline-read-out-of-range"
            learned = ue.addresses.describe() if ue is not None else f"none on unit {event.unit}"
            units = sorted(("-" if u is None else str(u)) for u in fe.units)
            span = f"{rng[0]}" if rng[0] == rng[1] else f"{rng[0]}-{rng[1]}"
            desc = (
                f"{pair.client} -> {pair.server} {pair.protocol} {event.function_name}"
                + (f" unit {event.unit}" if event.unit is not None else "")
                + f" touched addresses {span}; learned: {learned}"
                + (f" (units learned: {', '.join(units)})" if ue is None else "")
                + "."
            )
            return [
                self._alert(
                    rule,
                    event,
                    desc,
                    asset=pair.server,
                    expected={
                        "function": fe.name,
                        "unit": event.unit,
                        "ranges": ue.addresses.to_list() if ue is not None else [],
                        "units": units,
                    },
                    seen={"function": event.function_name, "unit": event.unit, "range": list(rng)},
                    change={
                        "kind": "range",
                        "client": pair.client,
                        "server": pair.server,
                        "protocol": pair.protocol,
                        "from": fe.side,
                        "function": fe.name,
                        "category": fe.category,
                        "unit": event.unit,
                        "range": list(rng),
                        "values": _value_span(event, cis),
                    },
                )
            ]
        if not ue.has_values():
            return []
        for addr, v in written_values(event, cis):
            r = ue.value_range(addr)
            if r is None or r[0] <= v <= r[1]:
                continue
            if not self._once(("value", pair.key, fe.name, event.unit, addr, v)):
                continue
            desc = (
                f"{pair.client} -> {pair.server} {pair.protocol} {event.function_name}"
                + (f" unit {event.unit}" if event.unit is not None else "")
                + f" wrote {_fmt(v)} to address {addr}; learned range there: [{_fmt(r[0])}, {_fmt(r[1])}]."
            )
            return [
                self._alert(
                    "baseline-value-out-of-range",
                    event,
                    desc,
                    asset=pair.server,
                    expected={"function": fe.name, "unit": event.unit, "address": addr, "min": r[0], "max": r[1]},
                    seen={"address": addr, "value": v},
                    change={
                        "kind": "value",
                        "client": pair.client,
                        "server": pair.server,
                        "protocol": pair.protocol,
                        "from": fe.side,
                        "function": fe.name,
                        "unit": event.unit,
                        "address": addr,
                        "value": v,
                    },
                )
            ]
        return []

    def _sequence(self, event: IcsEvent, pair: PairEntry, seq: str) -> list[Alert]:
        flow = event.flow_id
        if flow in self._hold:
            self.suppressed += 1
            return []
        if len(self._hold) < MAX_ALERT_KEYS:
            self._hold[flow] = self._hold_events
        f = event.fields or {}
        numbers = {
            k: f[k] for k in ("ns", "nr", "expected_ns", "seq_gap", "seq_jump", "ack_ahead", "outstanding") if k in f
        }
        nums = ", ".join(f"{k}={v}" for k, v in numbers.items())
        desc = (
            f"{event.src} -> {event.dst} {pair.protocol} {event.function_name}: {SEQUENCE_WHAT.get(seq, seq)}"
            + (f" ({nums})" if nums else "")
            + f"; never seen on this pair while learning (learned: {', '.join(f'{k} {v}' for k, v in sorted(pair.sequence.items())) or 'no sequence anomaly'})."
        )
        return [
            self._alert(
                "baseline-sequence-anomaly",
                event,
                desc,
                asset=pair.server,
                expected={"sequence_anomalies": dict(sorted(pair.sequence.items()))},
                seen={"anomaly": seq, **numbers},
                change={
                    "kind": "sequence",
                    "client": pair.client,
                    "server": pair.server,
                    "protocol": pair.protocol,
                    "anomaly": seq,
                },
            )
        ]

    def _interval(self, st: _PollState, event: IcsEvent) -> list[Alert]:
        ts = event.ts
        last = st.last
        same_epoch = st.epoch == self._epoch
        st.last = ts
        st.epoch = self._epoch
        st.event = event
        if st.stopped:
            st.stopped = False  # it came back (the stop was raised once)
            st.good = 0
            return []
        if last is None or not same_epoch or ts < last:
            return []
        dt = ts - last
        if dt <= 0.0:
            return []
        e = st.entry
        if e.low <= dt <= e.high:
            if st.alerted:
                st.good += 1
                if st.good >= RECOVER_INTERVALS:
                    st.alerted = False
            return []
        st.good = 0
        if st.alerted:
            self.suppressed += 1
            return []
        st.alerted = True
        faster = dt < e.low
        rule = "baseline-poll-faster" if faster else "baseline-poll-slower"
        pc, ps, proto = st.pair_key
        desc = (
            f"{pc} -> {ps} {proto} {e.describe()}: interval {dt:.3f}s is "
            + (f"below the learned low bound {e.low:.3f}s" if faster else f"above the learned high bound {e.high:.3f}s")
            + "."
        )
        techniques = None
        if e.side == "server":  # a device's periodic report: injected (spoofed) or held back reports
            techniques = ("T0856",) if faster else ("T0804", "T0814")
        return [
            self._alert(
                rule,
                event,
                desc,
                asset=ps,
                techniques=techniques,
                expected=_poll_expected(e),
                seen={"interval": round(dt, 6), "previous_ts": last, "ts": ts},
                change={
                    "kind": "poll",
                    "client": pc,
                    "server": ps,
                    "protocol": proto,
                    "signature": _sig_list(e),
                    "interval": round(dt, 6),
                },
            )
        ]

    def _stopped(self, st: _PollState, ts: float, since: float, since_event: IcsEvent | None) -> Alert:
        silence = ts - since
        e = st.entry
        pc, ps, proto = st.pair_key
        ev = st.event
        assert ev is not None
        desc = (
            f"{pc} -> {ps} {proto} {e.describe()} stopped: nothing for {silence:.1f}s "
            f"(learned: stopped after {e.stop_after:.1f}s of silence)."
        )
        techniques = ("T0804", "T0814") if e.side == "server" else ("T0814", "T0804")
        return self._alert(
            "baseline-poll-stopped",
            ev,
            desc,
            asset=ps,
            ts=ts,
            techniques=techniques,
            expected=_poll_expected(e),
            seen={
                "silence": round(silence, 3),
                "since_ts": since,
                "last_seen_ts": st.last,
                "ts": ts,
                # where the silence began and where it was noticed (the flows of those events)
                "silence_from": _where(since_event),
                "noticed_after": _where(self._last),
            },
            change={"kind": "poll_stopped", "client": pc, "server": ps, "protocol": proto, "signature": _sig_list(e)},
        )

    # -- alert building -----------------------------------------------------------------------------------
    def _alert(
        self,
        rule_id: str,
        event: IcsEvent,
        description: str,
        *,
        asset: str,
        expected: dict[str, Any],
        seen: dict[str, Any],
        change: dict[str, Any],
        severity: str | None = None,
        techniques: tuple[str, ...] | None = None,
        ts: float | None = None,
    ) -> Alert:
        title, default_sev, default_tech = RULES[rule_id]
        tech = techniques or default_tech
        tactics: list[str] = []
        for t in tech:
            for tac in TECHNIQUES[t][1]:
                if tac not in tactics:
                    tactics.append(tac)
        self.alerts += 1
        self._seq[rule_id] = n = self._seq.get(rule_id, 0) + 1
        return Alert(
            id=alert_id(rule_id, event, n),
            ts=event.ts if ts is None else ts,
            rule_id=rule_id,
            rule_name=f"Baseline: {title}",
            severity=severity or default_sev,
            techniques=tuple(tech),
            technique_names=tuple(TECHNIQUES[t][0] for t in tech),
            tactics=tuple(tactics),
            description=description,
            references=("docs/baseline.md",),
            detector="baseline",
            protocol=event.protocol,
            transport=event.transport,
            src=event.src,
            sport=event.sport,
            dst=event.dst,
            dport=event.dport,
            asset=asset,
            first_ts=event.ts,
            count=1,
            events=(event,),
            flow_id=event.flow_id,
            extra={
                "kind": rule_id.removeprefix("baseline-"),
                "explanation": description,
                "expected": expected,
                "seen": seen,
                "change": change,
                "baseline": self.source,
            },
        )


def _relation_change(kind: str, event: IcsEvent, client: str, server: str, proto: str) -> dict[str, Any]:
    """What accepting a new asset / pair / protocol adds: the relation and the one operation seen."""
    cis = event.src == client
    rng = address_range(event)
    return {
        "kind": kind,
        "client": client,
        "server": server,
        "protocol": proto,
        "port": event.dport if cis else event.sport,
        "from": "client" if cis else "server",
        "function": event.function_name,
        "category": event.category,
        "unit": event.unit,
        "range": list(rng) if rng else None,
        "values": _value_span(event, cis),
    }


def _where(e: IcsEvent | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"ts": e.ts, "src": e.src, "sport": e.sport, "dst": e.dst, "dport": e.dport, "flow_id": e.flow_id}


def _poll_expected(e: PollEntry) -> dict[str, Any]:
    return {
        "function": e.function,
        "from": e.side,
        "unit": e.unit,
        "address": e.address,
        "quantity": e.quantity,
        "median": round(e.median, 6),
        "mad": round(e.mad, 6),
        "low": round(e.low, 6),
        "high": round(e.high, 6),
        "stop_after": round(e.stop_after, 6),
    }


def _sig_list(e: PollEntry) -> list[Any]:
    return [e.side, e.function, e.unit, e.address, e.quantity]


def _value_span(event: IcsEvent, cis: bool) -> list[list[float]] | None:
    vals = list(written_values(event, cis))
    return [[a, v] for a, v in vals[:64]] or None


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"
