"""The learn-then-protect baseline (detectors/baseline, docs/baseline.md).

- the summary structures: merged address intervals with a cap, reservoir, settings;
- the YAML: deterministic (same captures, same bytes), round-trips, refuses what it cannot read;
- the crafted plant: learn on plant_normal_1, then plant_normal_2 raises nothing and plant_attack
  raises each planted deviation exactly once, each alert explaining itself (expected vs seen);
- merging learning runs; allow-listing an alert through the alert runtime, the SQLite store and the
  CLI; time going backwards (no false alert);
- the IPAL IEC 104 dataset: learn on train.pcap, test.pcap raises nothing, the manipulated files
  raise alerts at the manipulated packets (a subset here; tools/eval_baseline_ipal.py runs them all);
- learning one million events keeps bounded memory (tracemalloc peak under a fixed bound).
"""

from __future__ import annotations

import sys
import tracemalloc
from collections import Counter
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SHARED

from detectors.baseline.learn import Learner, learn_captures
from detectors.baseline.model import Baseline, BaselineFormatError, IntervalSet, PollSampler
from detectors.baseline.protect import RULES, TECHNIQUES, BaselineDetector
from detectors.baseline.yamlio import dumps, load, loads, save
from sensor.events import IcsEvent
from sensor.pipeline import Pipeline

PCAPS = REPO / "pcaps"
NORMAL_1 = PCAPS / "plant_normal_1.pcap"
NORMAL_2 = PCAPS / "plant_normal_2.pcap"
ATTACK = PCAPS / "plant_attack.pcap"
IPAL = SHARED / "datasets" / "ipal_iec104"


def replay(det: BaselineDetector, *paths: Path) -> list[Any]:
    """Alerts a detector raises over captures, with ticks, as the alerting runtime would call it."""
    alerts: list[Any] = []
    pipe = Pipeline(
        None, on_event=lambda e: alerts.extend(det.observe(e)), on_tick=lambda t: alerts.extend(det.tick(t))
    )
    for p in paths:
        pipe.replay_file(p)
    alerts.extend(det.flush())
    return alerts


@pytest.fixture(scope="module")
def plant_baseline() -> Baseline:
    b, _ = learn_captures([str(NORMAL_1)])
    return b


@pytest.fixture(scope="module")
def attack_alerts(plant_baseline: Baseline) -> list[Any]:
    return replay(BaselineDetector(plant_baseline, "plant.yaml"), ATTACK)


# --------------------------------------------------------------------------------------------------
# summary structures
# --------------------------------------------------------------------------------------------------


def test_intervals_merge_overlapping_and_adjacent() -> None:
    s = IntervalSet(8)
    for lo, hi in ((10, 19), (0, 4), (5, 5), (30, 39), (18, 25), (100, 100)):
        s.add(lo, hi)
    assert s.to_list() == [[0, 5], [10, 25], [30, 39], [100, 100]]
    assert s.contains(12, 20) and s.contains(100, 100) and not s.contains(24, 31) and not s.contains(6, 6)


def test_intervals_cap_merges_the_closest_and_never_forgets() -> None:
    s = IntervalSet(3)
    seen = [0, 10, 11, 50, 200, 205]
    for a in seen:
        s.add(a, a)
    assert len(s) == 3 and s.merged > 0
    assert all(s.contains(a, a) for a in seen)  # a superset: every address seen stays covered
    assert s.to_list() == [[0, 11], [50, 50], [200, 205]]


def test_reservoir_is_bounded_and_deterministic() -> None:
    import random

    a, b = PollSampler(), PollSampler()
    ra, rb = random.Random(5), random.Random(5)
    for i in range(10_000):
        a.add(float(i), ra)
        b.add(float(i), rb)
    assert len(a.res) == PollSampler.SIZE and list(a.res) == list(b.res)
    assert a.n == 10_000 and a.lo == 0.0 and a.hi == 9999.0
    assert max(a.res) > 5000  # later intervals get in (uniform over all, not the first 64)


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------


def test_yaml_is_deterministic_and_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    one, _ = learn_captures([str(NORMAL_1)])
    two, _ = learn_captures([str(NORMAL_1)])
    text = dumps(one)
    assert text == dumps(two)  # learning the same traffic twice: the same bytes
    assert dumps(loads(text)) == text  # load -> dump changes nothing
    head = text.splitlines()[:6]
    assert head[0].startswith("# icswatch baseline")
    assert any(
        "learned 2026-01-01T00:00:00Z from" in line and "plant_normal_1.pcap" in line and "events" in line
        for line in head
    )
    data = loads(text)
    addrs = [a for a in data.assets]
    assert "10.20.2.11" in addrs and "10.20.1.66" not in addrs
    # sorted: pairs by numeric address, functions by side then name
    pairs = [ln for ln in text.splitlines() if ln.startswith("- client: ")]
    assert pairs == sorted(pairs, key=lambda ln: tuple(int(x) for x in ln.split()[-1].split(".")))


def test_yaml_shows_what_was_learned(plant_baseline: Baseline) -> None:
    text = dumps(plant_baseline)
    p = plant_baseline.pairs[("10.20.1.10", "10.20.2.11", "modbus")]
    fe = p.functions[("client", "write_single_register")]
    assert fe.units[1].addresses.to_list() == [[100, 100]]
    assert fe.units[1].values == {100: [20.0, 30.0]}
    polls = {(e.function, e.address): e for e in p.polls.values()}
    coils = polls[("read_coils", 0)]
    assert abs(coils.median - 2.0) < 0.02 and coils.low < 2.0 < coils.high and coils.stop_after >= 3 * 1.9
    assert ("read_holding_registers", 0) in polls
    assert ("write_single_register", 100) not in polls  # irregular writes are not periodic
    assert "written:" in text and "values:" in text and "expect:" in text and "stop_after:" in text


def test_yaml_errors_say_where(tmp_path: Path) -> None:
    with pytest.raises(BaselineFormatError, match="version"):
        loads("version: 99\n", "x.yaml")
    with pytest.raises(BaselineFormatError, match=r"x.yaml: pairs\[0\]"):
        loads("version: 1\npairs:\n- client: 1.2.3.4\n", "x.yaml")
    with pytest.raises(BaselineFormatError, match="not valid YAML"):
        loads("version: [1\n", "x.yaml")
    with pytest.raises(BaselineFormatError, match="missing.yaml"):
        load(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------------
# the crafted plant
# --------------------------------------------------------------------------------------------------


def test_plant_captures_are_small() -> None:
    for p in (NORMAL_1, NORMAL_2, ATTACK):
        assert p.stat().st_size < 300_000, p


def test_second_normal_capture_raises_nothing(plant_baseline: Baseline) -> None:
    det = BaselineDetector(plant_baseline, "plant.yaml")
    assert replay(det, NORMAL_2) == []
    assert replay(BaselineDetector(plant_baseline), NORMAL_1) == []  # nor the capture it learned from


def test_attack_raises_each_planted_deviation_once(attack_alerts: list[Any]) -> None:
    from tools.pcapgen.plant import PLANTED

    assert Counter(a.rule_id for a in attack_alerts) == Counter(PLANTED)


def _one(alerts: list[Any], rule: str) -> Any:
    [a] = [a for a in alerts if a.rule_id == rule]
    return a


def test_attack_alerts_explain_themselves(attack_alerts: list[Any]) -> None:
    for a in attack_alerts:
        assert a.detector == "baseline" and a.rule_name.startswith("Baseline: ")
        assert a.description and a.extra["explanation"] == a.description
        assert {"expected", "seen", "change"} <= set(a.extra)
        assert a.techniques and all(t in TECHNIQUES for t in a.techniques)
        assert a.events and a.id and len(a.id) == 24
        a.to_ecs()  # serialisable
    a = _one(attack_alerts, "baseline-new-asset")
    assert a.extra["seen"]["address"] == "10.20.1.66" and a.asset == "10.20.1.66" and "T0846" in a.techniques
    a = _one(attack_alerts, "baseline-new-talker")
    assert (a.extra["seen"]["client"], a.extra["seen"]["server"]) == ("10.20.1.20", "10.20.3.40")
    assert "10.20.1.10 (iec104)" in a.description
    a = _one(attack_alerts, "baseline-new-protocol")
    assert a.extra["expected"]["protocols"] == ["iec104"] and a.extra["seen"]["protocol"] == "modbus"
    a = _one(attack_alerts, "baseline-new-function")
    assert a.extra["seen"]["function"] == "write_multiple_coils" and "T0855" in a.techniques
    assert "write_single_register" in a.extra["expected"]["functions"]
    a = _one(attack_alerts, "baseline-write-out-of-range")
    assert a.extra["seen"]["range"] == [150, 150] and a.extra["expected"]["ranges"] == [[100, 100]]
    assert "learned: 100" in a.description
    a = _one(attack_alerts, "baseline-value-out-of-range")
    assert a.extra["seen"] == {"address": 100, "value": 9999.0}
    assert (a.extra["expected"]["min"], a.extra["expected"]["max"]) == (20.0, 30.0) and a.techniques == ("T0836",)
    assert "[20, 30]" in a.description
    a = _one(attack_alerts, "baseline-poll-stopped")
    assert (
        a.extra["expected"]["function"] == "read_coils"
        and a.extra["seen"]["silence"] > a.extra["expected"]["stop_after"]
    )
    assert set(a.techniques) == {"T0814", "T0804"}
    a = _one(attack_alerts, "baseline-poll-faster")
    assert a.dst == "10.20.2.13" and a.extra["seen"]["interval"] < a.extra["expected"]["low"]
    a = _one(attack_alerts, "baseline-sequence-anomaly")
    assert a.extra["seen"]["anomaly"] == "iec104_seq_gap" and a.extra["seen"]["seq_gap"] == 2
    assert set(a.techniques) == {"T0830", "T0856"} and "N(S) skipped" in a.description


def test_docs_examples_are_real(monkeypatch: pytest.MonkeyPatch, attack_alerts: list[Any]) -> None:
    """docs/baseline.md: the YAML excerpt is the real learned file, line for line (``...`` skips), and
    the alert sentences quoted are the ones the attack capture raises."""
    import re

    doc = (REPO / "docs" / "baseline.md").read_text()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    monkeypatch.chdir(REPO)  # the header names the capture as given on the command line
    b, _ = learn_captures(["pcaps/plant_normal_1.pcap"])
    real = dumps(b).splitlines()
    excerpt = doc.split("```yaml\n# icswatch baseline", 1)[1].split("```", 1)[0]
    lines = ("# icswatch baseline" + excerpt).splitlines()
    pos = 0
    for line in lines:
        if line == "..." or not line:
            continue
        assert line in real[pos:], f"docs/baseline.md YAML line not in the learned file (in order): {line!r}"
        pos = real.index(line, pos) + 1
    quoted = re.findall(r"^- `(10\.20\.[^`]+)`$", doc, re.MULTILINE)
    assert len(quoted) == 3
    descriptions = {a.description for a in attack_alerts}
    for q in quoted:
        assert q in descriptions, q


def test_techniques_match_the_rule_engine_catalogue() -> None:
    from detectors.rules.attack import TECHNIQUES as CATALOGUE

    for tid, (name, tactics) in TECHNIQUES.items():
        assert CATALOGUE[tid] == (name, tactics), tid
    for rule, (_title, sev, techs) in RULES.items():
        assert sev in ("low", "medium", "high", "critical") and techs, rule


# --------------------------------------------------------------------------------------------------
# merging, allow-listing, the CLI
# --------------------------------------------------------------------------------------------------


def test_merging_runs(plant_baseline: Baseline) -> None:
    second, _ = learn_captures([str(NORMAL_2)])
    merged = loads(dumps(plant_baseline))
    merged.merge(second)
    assert len(merged.runs) == 2 and merged.events() == plant_baseline.events() + second.events()
    key = ("10.20.1.10", "10.20.2.11", "modbus")
    assert merged.pairs[key].events == plant_baseline.pairs[key].events + second.pairs[key].events
    for sig, pe in plant_baseline.pairs[key].polls.items():
        m = merged.pairs[key].polls[sig]
        assert m.samples > pe.samples and m.low <= pe.low + 1e-6 and m.high >= pe.high - 1e-6  # never narrower
    alerts = replay(BaselineDetector(merged), ATTACK)
    from tools.pcapgen.plant import PLANTED

    assert Counter(a.rule_id for a in alerts) == Counter(PLANTED)


def run_cli(*argv: str) -> int:
    from icswatch.cli import main

    return main(list(argv))


def test_cli_learn_merge_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.yaml"
    assert run_cli("learn", str(NORMAL_1), "-o", str(out), "-q") == 0
    assert run_cli("learn", str(NORMAL_2), "-o", str(tmp_path / "m.yaml"), "--merge", str(out), "-q") == 0
    merged = load(tmp_path / "m.yaml")
    assert len(merged.runs) == 2
    capsys.readouterr()
    assert run_cli("baseline", "show", str(tmp_path / "m.yaml")) == 0
    shown = capsys.readouterr().out
    assert "10.20.1.10 -> 10.20.2.11 modbus" in shown and "periodic:" in shown
    (tmp_path / "bad.yaml").write_text("version: 7\n")
    assert run_cli("baseline", "show", str(tmp_path / "bad.yaml")) == 2
    assert run_cli("learn", str(tmp_path / "nothing.pcap"), "-o", str(out)) == 1


def test_accept_through_runtime_store_and_cli(tmp_path: Path, plant_baseline: Baseline) -> None:
    """Replay the attack through the alerting runtime into SQLite, accept three alerts with the CLI,
    replay again: those three are gone, the others remain, who/why/when are in the YAML."""
    from alerts.runtime import build_alerting
    from alerts.sqlite_store import SQLiteStore
    from icswatch.config import load_config

    path = save(plant_baseline, tmp_path / "b.yaml")
    db = tmp_path / "alerts.db"
    cfg = load_config(None, ["rules.enabled=false"])
    runtime = build_alerting(cfg, [BaselineDetector.from_file(str(path))], outputs=[SQLiteStore(db)])
    Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick).replay_file(ATTACK)
    summary = runtime.close()
    by_rule = {a.rule_id: a.id for a in summary.alerts}
    assert summary.total == len(by_rule) == 9
    for rule in ("baseline-value-out-of-range", "baseline-new-function", "baseline-new-asset"):
        assert (
            run_cli(
                "baseline",
                "accept",
                by_rule[rule],
                "--baseline",
                str(path),
                "--db",
                str(db),
                "--by",
                "alice",
                "--why",
                f"reviewed {rule}",
            )
            == 0
        )
    # twice: refused; unknown id: refused; a rule alert is not a baseline one
    assert (
        run_cli(
            "baseline",
            "accept",
            by_rule["baseline-new-asset"],
            "--baseline",
            str(path),
            "--db",
            str(db),
            "--by",
            "alice",
            "--why",
            "again",
        )
        == 1
    )
    assert (
        run_cli("baseline", "accept", "0" * 24, "--baseline", str(path), "--db", str(db), "--by", "a", "--why", "b")
        == 1
    )
    b = load(path)
    assert [r["rule"] for r in b.accepted] == [
        "baseline-value-out-of-range",
        "baseline-new-function",
        "baseline-new-asset",
    ]
    rec = b.accepted[0]
    assert rec["by"] == "alice" and rec["why"] == "reviewed baseline-value-out-of-range" and rec["at"].endswith("Z")
    assert rec["change"]["kind"] == "value" and rec["change"]["value"] == 9999
    assert "accepted by analysts" in path.read_text()
    again = Counter(a.rule_id for a in replay(BaselineDetector(b), ATTACK))
    assert "baseline-value-out-of-range" not in again and "baseline-new-asset" not in again
    # accepting the new asset accepted it and the one operation seen (its connection attempt): what it
    # did next on that pair is still judged, a function at a time
    [nf] = [a for a in replay(BaselineDetector(b), ATTACK) if a.rule_id == "baseline-new-function"]
    assert nf.src == "10.20.1.66" and nf.extra["seen"]["function"] == "read_holding_registers"
    assert again["baseline-poll-stopped"] == 1 and again["baseline-sequence-anomaly"] == 1


# --------------------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------------------


def _poll(ts: float, fn: str = "read_holding_registers", src: str = "10.9.0.1") -> IcsEvent:
    return IcsEvent(ts, "modbus", src, 40001, "10.9.0.2", 502, "tcp", "request", 3, fn, "read", 1, 0, 10)


def test_time_going_backwards_raises_nothing() -> None:
    learner = Learner()
    for _restart in range(3):  # the capture clock restarts three times, as in the IPAL files
        for k in range(40):
            learner.observe(_poll(1000.0 + k * 1.0))
    b = learner.finish()
    [poll] = b.pairs[("10.9.0.1", "10.9.0.2", "modbus")].polls.values()
    assert abs(poll.median - 1.0) < 1e-9 and poll.samples == 3 * 39
    det = BaselineDetector(b)
    out = []
    for _restart in range(3):
        for k in range(40):
            ts = 1000.0 + k * 1.0
            out += det.observe(_poll(ts))
            out += det.tick(ts + 0.5)
    assert out == [] and det.epochs == 2


def test_capture_gap_is_not_a_stopped_or_slow_poll() -> None:
    learner = Learner()
    for k in range(30):
        learner.observe(_poll(k * 1.0))
    det = BaselineDetector(learner.finish())
    out = []
    for k in range(30):
        out += det.observe(_poll(k * 1.0))
    for k in range(30):  # the next file starts an hour later
        out += det.tick(3600.0 + k)
        out += det.observe(_poll(3600.0 + k))
    assert out == []
    for k in range(30, 40):  # but silence while other traffic flows is a stopped poll
        out += det.observe(_poll(3600.0 + k, fn="read_coils"))
        out += det.tick(3600.0 + k)
    assert [a.rule_id for a in out] == ["baseline-new-function", "baseline-poll-stopped"]
    det2 = BaselineDetector(det.baseline)  # and so is a poll that does not come back after a capture gap
    got = []
    for k in range(5):
        got += det2.observe(_poll(k * 1.0))
    for k in range(10):
        got += det2.observe(_poll(5000.0 + k, fn="read_coils"))
        got += det2.tick(5000.0 + k)
    assert [a.rule_id for a in got] == ["baseline-new-function", "baseline-poll-stopped"]


# --------------------------------------------------------------------------------------------------
# IPAL IEC 104
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ipal_eval() -> Any:
    if not (IPAL / "train.pcap").is_file():
        pytest.fail(f"IPAL dataset not found at {IPAL}", pytrace=False)
    sys.path.insert(0, str(REPO))
    from tools import eval_baseline_ipal as ev

    return ev


def test_ipal_normal_traffic_raises_nothing(ipal_eval: Any) -> None:
    b, _ = learn_captures([str(IPAL / "train.pcap")])
    pair = b.pairs[("10.0.104.2", "10.0.104.11", "iec104")]
    assert pair.starts["at_zero"] == 32 and not pair.sequence  # 16 connections, both directions from 0
    alerts = replay(BaselineDetector(b), IPAL / "test.pcap")
    assert alerts == []  # the clock restarts 15 times in this file: no timing alert from it


def test_ipal_manipulations_are_detected(ipal_eval: Any) -> None:
    names = ["test", "C-0.01-1", "C-0.1-1", "R-0.01-1", "R-0.1-1", "S-0.01-1", "S-0.1-1"]
    results, _ = ipal_eval.run(ipal_eval.WINDOW, names)
    by = {r.name: r for r in results}
    assert by["test"].alerts == 0
    rate = {
        k: sum(r.detected for r in results if r.kind == k) / sum(r.manipulated for r in results if r.kind == k)
        for k in "CRS"
    }
    assert rate["R"] >= 0.75  # removed frames: N(S)/N(R) and timing show them
    assert rate["S"] >= 0.30  # swapped frames: most are hidden by TCP reordering (docs/baseline.md)
    assert rate["C"] >= 0.15  # cloned frames: TCP drops exact retransmissions before any analyzer
    manip_alerts = sum(r.alerts for r in results if r.kind != "test")
    assert sum(r.off_target for r in results) <= 0.3 * manip_alerts  # most alerts are at a manipulated packet
    assert sum(r.false_alerts for r in results) <= 0.05 * manip_alerts  # and the others are its consequences


def test_ipal_ground_truth_replays(ipal_eval: Any) -> None:
    base = [f for _, f in ipal_eval.read_packets(IPAL / "test.pcap")]
    for name in ("C-0.01-2", "R-0.01-2"):
        final = [f for _, f in ipal_eval.read_packets(IPAL / f"{name}.pcap")]
        truth = ipal_eval.ground_truth(name, base, final, (IPAL / f"{name}.pcap.backtrack.txt").read_text())
        assert len(truth) == 9  # 1% of 928 packets: the backtrack file replays onto test.pcap exactly


# --------------------------------------------------------------------------------------------------
# bounded memory
# --------------------------------------------------------------------------------------------------

_FUNCS = (
    ("read_holding_registers", "read", 3),
    ("read_coils", "read", 1),
    ("write_single_register", "write", 6),
    ("write_multiple_registers", "write", 16),
)


class _Synthetic:
    """``n`` events of 50 masters x 20 PLCs (100 pairs, 4 functions, 3 units): 90% the same polls and
    set points, 10% scattered over 60 000 addresses and 100 000 values (they fill every cap). Everything the events vary by is drawn before tracing starts and
    a pool of 1000 event objects is re-filled: under tracemalloc, building a fresh object (and fresh
    random numbers) per event would mostly time the allocator. That the learner keeps no event is
    checked on the pool's reference counts instead."""

    N = 10_007  # a prime: the tables below cycle out of step with the pool

    def __init__(self, n: int) -> None:
        self.n = n
        self.pool = [
            IcsEvent(
                0.0,
                "modbus",
                f"10.0.0.{p % 50 + 1}",
                40000 + p % 50,
                f"10.0.1.{p % 20 + 1}",
                502,
                "tcp",
                "request",
                _FUNCS[p & 3][2],
                _FUNCS[p & 3][0],
                _FUNCS[p & 3][1],
                1 + p % 3,
                0,
                1,
            )
            for p in range(1000)
        ]
        x = 12345
        draws = []
        for _ in range(self.N):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            draws.append(x)
        # 90%: the pool event's own poll (a fixed range per master, PLC, function and unit) writing one
        # of a few set points; 10%: anywhere in 60 000 addresses, any value
        self.scatter = [d % 10 == 0 for d in draws]
        self.address = [d % 60000 for d in draws]
        self.values = [(d % 100000,) for d in draws]
        self.quantity = [1 + (d >> 4) % 8 for d in draws]
        self.poll = [((p % 7) * 100, 1 + p % 8, ((p % 5) * 10,)) for p in range(1000)]
        self.ts = [1.7e9 + i * 0.0005 for i in range(n)]

    def events(self) -> Any:
        # zip over cycles: no per-event integer (an int above 256 is an allocation tracemalloc traces)
        for e, poll, ts, scatter, address, values, quantity in zip(
            cycle(self.pool),
            cycle(self.poll),
            self.ts,
            cycle(self.scatter),
            cycle(self.address),
            cycle(self.values),
            cycle(self.quantity),
        ):
            e.ts = ts
            if scatter:
                e.address, e.quantity = address, quantity
                e.values = values if e.function > 4 else None
            else:
                e.address, e.quantity, v = poll
                e.values = v if e.function > 4 else None
            yield e


@pytest.mark.timeout(600)
def test_learning_a_million_events_is_bounded() -> None:
    gen = _Synthetic(1_000_000)
    refs = [sys.getrefcount(e) for e in gen.pool]
    learner = Learner()
    observe = learner.observe
    # The first 900,000 events run untraced (tracemalloc slows every allocation several times); the
    # last 100,000 are traced: a summary that stopped growing retains (almost) nothing more, and the
    # peak of that stretch stays small.
    events = gen.events()
    for _, e in zip(range(900_000), events):
        observe(e)
    tracemalloc.start()
    try:
        for e in events:
            observe(e)
        del e
        retained, peak = tracemalloc.get_traced_memory()
        b = learner.finish()
    finally:
        tracemalloc.stop()
    assert retained < 2_000_000, f"the last 100k events grew the summary by {retained / 1e6:.1f} MB"
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB while learning the last 100k events"
    assert [sys.getrefcount(e) for e in gen.pool] == refs  # no event kept
    assert len(b.pairs) == 100 and learner.events == 1_000_000
    for p in b.pairs.values():
        for f in p.functions.values():
            for ue in f.units.values():
                assert len(ue.addresses) <= 32 and len(ue.values) <= 64
    assert len(dumps(b)) < 2_000_000  # the YAML is a summary too
