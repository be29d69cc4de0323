"""Live capture (sensor/live.py, ``icswatch sniff``), the evidence ring (sensor/evidence.py) and the
service files (deploy/).

Two kinds of tests:

- Without privileges: the bounded queue counts what it drops when the consumer is slow; the evidence
  ring stays inside its bounds, writes the alert's flow to a pcap, shares a file between alerts on the
  same flows and deletes the oldest files beyond its cap; ``enable_evidence`` gives a replay evidence
  files; deploy/sensor.yaml is a valid configuration and the unit file passes ``systemd-analyze``.
- In a network namespace of the test's own (root, iproute2, tcpreplay): a veth pair ``va``/``vb``,
  tcpreplay sends the project's crafted captures into ``va`` and ``icswatch sniff`` listens on ``vb``.
  The captures carry private addresses, but they only travel on that veth inside that namespace: the
  namespace has no other interface and no route, nothing leaves the machine. The namespace (and any
  process the test started) is removed even when a test fails. The tests skip, saying why, only when
  the machine does not permit ``ip netns``; a missing tcpreplay fails (CI installs it:
  .ci/setup-system.sh).

Sniff is started as ``python -m icswatch.commands.sniff`` (the command alone, as the systemd unit runs
it): the full CLI imports scikit-learn for the ML commands, seconds of start-up per run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from sensor.capture import CaptureReader
from sensor.evidence import EvidenceOptions, EvidenceRecorder, packet_flow
from sensor.live import CaptureOptions, LiveCapture, LiveError, PacketQueue

PCAPS = REPO / "pcaps"
NORMAL = PCAPS / "modbus_normal.pcap"
UNAUTHORIZED = PCAPS / "rule_modbus-write-unauthorized-master.pcap"
NONSTANDARD = PCAPS / "rule_ics-protocol-nonstandard-port.pcap"
PORT_SCAN = PCAPS / "rule_ics-port-scan-ports.pcap"
# Replaying modbus_normal's 11 minutes at 2,000 pkt/s makes its periodic writes 20 a second, which
# modbus-brute-force-io rightly calls brute force; replay sees the original timing. Timing-dependent
# rules are off in both runs of the comparison; every other rule runs.
TIMING_RULES = "rules.disabled=[modbus-brute-force-io]"


# -- without privileges ---------------------------------------------------------------------------
def _packets(path: Path) -> list[tuple[float, int, bytes, int]]:
    with CaptureReader(path) as reader:
        return list(reader)


def test_queue_counts_drops_with_a_slow_consumer() -> None:
    """The capture side never waits: when the pipeline is slow, whole batches are dropped and counted,
    and every packet is either delivered or counted as dropped."""
    q = PacketQueue(max_packets=100, max_bytes=1 << 20)
    produced = 0
    batch = [(float(i), 1, b"x" * 60, 60) for i in range(10)]

    def producer() -> None:
        nonlocal produced
        for _ in range(200):
            q.put(list(batch), 10 * 60)
            produced += len(batch)
        q.close()

    t = threading.Thread(target=producer)
    t.start()
    delivered = 0
    while True:
        got = q.get(0.05)
        if got is None:
            if q.drained:
                break
            continue
        delivered += len(got)
        time.sleep(0.002)  # the slow consumer
    t.join()
    assert produced == 2000
    assert q.dropped > 0
    assert delivered + q.dropped == produced
    assert q.peak <= 100
    stats = q.stats()
    assert stats["queue_dropped"] == q.dropped and stats["enqueued"] == delivered


def test_queue_bounds_bytes_too() -> None:
    q = PacketQueue(max_packets=1000, max_bytes=1000)
    assert q.put([(0.0, 1, b"x" * 600, 600)], 600)
    assert not q.put([(0.0, 1, b"x" * 600, 600)], 600)
    assert (q.dropped, q.dropped_bytes) == (1, 600)


def test_live_capture_generator_drains_after_stop_and_honours_limit() -> None:
    """The pipeline's generator hands over what is queued after a stop, and stops at --count."""
    cap = LiveCapture(CaptureOptions(("lo",)))  # never opened: the queue is fed by hand
    for i in range(5):
        cap.queue.put([(float(i), 1, b"p%d" % i, 2)] * 3, 6)
    cap.queue.close()
    seen = []
    calls = []
    assert [p[0] for p in cap.packets(lambda idle: calls.append(idle), limit=7, tap=seen.append)] == [0, 0, 0, 1, 1, 1, 2]
    assert len(seen) == 7 and cap.delivered == 7 and calls and not any(calls)


def test_capture_errors_are_usage_errors_when_the_user_is_at_fault() -> None:
    with pytest.raises(LiveError) as exc:
        LiveCapture(CaptureOptions(("no-such-if0",))).open()
    assert exc.value.usage and "no such network interface" in str(exc.value)
    with pytest.raises(LiveError):
        LiveCapture(CaptureOptions(()))


def _alert(events: list[Any], rule: str = "test-rule", ident: str = "a1") -> Any:
    from alerts.records import Alert

    last = events[-1]
    return Alert(
        id=ident, ts=last.ts, rule_id=rule, rule_name=rule, severity="high", techniques=("T0855",),
        protocol=last.protocol, transport=last.transport, src=last.src, sport=last.sport, dst=last.dst,
        dport=last.dport, first_ts=events[0].ts, events=tuple(events), flow_id=last.flow_id,
    )


def _replay_with_recorder(path: Path, recorder: EvidenceRecorder) -> list[Any]:
    from sensor.pipeline import Pipeline

    events: list[Any] = []
    pipeline = Pipeline(on_event=events.append)
    pipeline.start(str(path))
    pipeline.run(recorder.tap(_packets(path)))
    pipeline.end()
    return events


def test_evidence_file_holds_the_alerts_flow(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceOptions(str(tmp_path / "ev")))
    events = _replay_with_recorder(UNAUTHORIZED, rec)
    write = [e for e in events if e.function == 6 and e.direction == "request"]
    alert = _alert(write)
    path = rec.on_alert(alert)
    rec.close()
    assert path is not None and alert.extra["evidence_pcap"] == path
    written = _packets(Path(path))
    assert [p[2] for p in written] == [p[2] for p in _packets(UNAUTHORIZED)]  # the whole short flow
    assert written[0][1] == 1
    assert rec.stats()["alerts_with_evidence"] == 1


def test_evidence_keeps_only_the_alerts_flows_and_later_packets(tmp_path: Path) -> None:
    """Two captures interleaved: the file holds the alert's flow only, and packets of that flow that
    arrive after the alert are appended until ``after_seconds``."""
    rec = EvidenceRecorder(EvidenceOptions(str(tmp_path / "ev"), after_seconds=1000))
    a = _packets(UNAUTHORIZED)
    b = [(ts + 0.001, lt, data, n) for ts, lt, data, n in _packets(NONSTANDARD)]
    merged = sorted(a[:6] + b, key=lambda p: p[0])
    from sensor.pipeline import Pipeline

    events: list[Any] = []
    pipeline = Pipeline(on_event=lambda e: (events.append(e), rec.on_event(e)))
    pipeline.start("x")
    pipeline.run(rec.tap(merged))
    write = [e for e in events if e.function == 6 and e.direction == "request"]
    path = rec.on_alert(_alert(write))
    pipeline.run(rec.tap(a[6:]))  # the rest of the flow arrives after the alert
    pipeline.end()
    rec.close()
    written = _packets(Path(path))  # type: ignore[arg-type]
    assert [p[2] for p in written] == [p[2] for p in a]
    flows = {packet_flow(p[1], p[2])[2] for p in written}  # type: ignore[index]
    assert flows == {49153, 502}
    # the non-standard-port flow was learnt from its events: its packets are in the main ring
    assert rec.stats()["learned_flows"] == 1


def test_evidence_shares_a_file_and_respects_caps(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    old = ev / "20000101T000000_old_x.pcap"
    old.write_bytes(b"\0" * 4000)
    os.utime(old, (946684800, 946684800))
    rec = EvidenceRecorder(EvidenceOptions(str(ev), max_total_mb=0.004, max_file_mb=0.0007, max_age_days=1))
    events = _replay_with_recorder(UNAUTHORIZED, rec)
    write = [e for e in events if e.function == 6 and e.direction == "request"]
    first = rec.on_alert(_alert(write, ident="a1"))
    second = rec.on_alert(_alert(write, rule="other", ident="a2"))
    assert first == second  # same flows, file still collecting: one file
    assert not old.exists()  # older than max_age_days (and over the directory cap): deleted
    rec.close()
    stats = rec.stats()
    assert stats["alerts_sharing_a_file"] == 1 and stats["files_truncated"] == 1
    assert Path(first).stat().st_size <= 0.0007 * (1 << 20)  # type: ignore[arg-type]
    assert _packets(Path(first))  # type: ignore[arg-type]  # truncated at a record boundary: still readable


def test_evidence_ring_is_bounded(tmp_path: Path) -> None:
    rec = EvidenceRecorder(EvidenceOptions(str(tmp_path), ring_mb=0.01, ring_seconds=1e9))
    for pkt in _packets(NORMAL):
        rec.add(pkt)
    stats = rec.stats()
    assert stats["ring_bytes"] <= 0.01 * (1 << 20)
    assert stats["ring_evicted"] > 0 and stats["ring_packets"] + stats["ring_evicted"] == 882
    rec2 = EvidenceRecorder(EvidenceOptions(str(tmp_path), ring_seconds=5.0))
    for pkt in _packets(NORMAL):
        rec2.add(pkt)
    oldest = rec2.ring.order[0][0][0]
    newest = rec2.ring.order[-1][0][0]
    assert newest - oldest <= 5.0


def test_replay_gets_evidence_with_enable_evidence(tmp_path: Path) -> None:
    """What ``replay --evidence-dir`` needs: one call after building the pipeline and the alerting."""
    from alerts.runtime import build_alerting
    from icswatch.commands.sniff import enable_evidence
    from icswatch.config import load_config
    from sensor.pipeline import Pipeline

    cfg = load_config(None, ["outputs.sqlite="])
    alerting = build_alerting(cfg, alerts_out=str(tmp_path / "alerts.jsonl"))
    pipeline = Pipeline(cfg.sensor, on_event=alerting.on_event, on_tick=alerting.on_tick)
    recorder = enable_evidence(pipeline, alerting, EvidenceOptions(str(tmp_path / "ev")))
    pipeline.replay_file(NORMAL)
    pipeline.replay_file(UNAUTHORIZED)  # flows never span files: neither does evidence
    summary = alerting.close()
    recorder.close()
    assert summary.by_rule["modbus-write-unauthorized-master"] == 1
    docs = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    doc = next(d for d in docs if d["rule"]["id"] == "modbus-write-unauthorized-master")
    path = Path(doc["icswatch"]["details"]["evidence_pcap"])
    assert [p[2] for p in _packets(path)] == [p[2] for p in _packets(UNAUTHORIZED)]


def test_sensor_yaml_is_a_valid_configuration() -> None:
    from icswatch.config import load_config

    cfg = load_config(REPO / "deploy" / "sensor.yaml")
    assert cfg.outputs.flush_seconds > 0 and cfg.rules.lists["allowed_masters"]


def test_unit_file_is_hardened_and_valid(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "icswatch-sensor.service").read_text()
    for line in (
        "User=icswatch",
        "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/icswatch",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines(), line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the directives above are checked; the syntax check needs systemd
    unit = tmp_path / "icswatch-sensor.service"
    unit.write_text(text.replace("/opt/icswatch/.venv/bin/python", sys.executable))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "icswatch-sensor.service" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


# -- in a network namespace --------------------------------------------------------------------------
class Netns:
    """A network namespace with a veth pair va <-> vb and nothing else; processes started in it are
    tracked so the test can end them (by pid) whatever happens."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen] = []

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise AssertionError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
        return r

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)
        self.procs.append(p)
        return p

    def replay(self, *files: Path, pps: int = 2000, iface: str = "va") -> int:
        """tcpreplay into va (received on vb); returns the packets sent."""
        r = self.run("tcpreplay", "-q", "-K", "-i", iface, f"--pps={pps}", *map(str, files), timeout=120)
        for line in r.stdout.splitlines():
            if line.strip().startswith("Actual:"):
                return int(line.split()[1])
        raise AssertionError(f"tcpreplay said: {r.stdout}{r.stderr}")


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None:
        pytest.fail("iproute2 is not installed (apt-get install iproute2)", pytrace=False)
    name = f"icsw-test-{os.getpid()}-{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"this machine does not permit network namespaces (`ip netns add`: {r.stderr.strip()})")
    ns = Netns(name)
    try:
        if shutil.which("tcpreplay") is None:
            pytest.fail("tcpreplay is not installed (apt-get install tcpreplay; .ci/setup-system.sh does it)", pytrace=False)
        # no IPv6 inside: otherwise vb sends router solicitations, extra packets the comparison would see
        ns.run("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
        for a, b in (("va", "vb"), ("vc", "vd")):  # a second pair for the several-interfaces test
            ns.run("ip", "link", "add", "name", a, "type", "veth", "peer", "name", b)
            ns.run("ip", "link", "set", a, "up")
            ns.run("ip", "link", "set", b, "up")
        yield ns
    finally:
        for p in ns.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Sniff:
    """``icswatch sniff -i vb`` running in the namespace, its stderr in a file."""

    def __init__(self, ns: Netns, workdir: Path, *args: str, prefix: tuple[str, ...] = (), ifaces: tuple[str, ...] = ("vb",)) -> None:
        self.dir = workdir
        self.err = workdir / "sniff.err"
        self.stats = workdir / "stats.json"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        cmd = (*prefix, sys.executable, "-m", "icswatch.commands.sniff", *(f"-i{i}" for i in ifaces), "--stats-interval", "0.3",
               "--stats-json", str(self.stats), "--json-summary", str(workdir / "summary.json"), *args)
        self.proc = ns.popen(*cmd, cwd=workdir, env=env, stdout=open(workdir / "sniff.out", "w"), stderr=open(self.err, "w"))

    def text(self) -> str:
        return self.err.read_text() if self.err.exists() else ""

    def wait_for(self, needle: str, timeout: float = 60, count: int = 1) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.text().count(needle) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"sniff exited ({self.proc.returncode}) before {needle!r}:\n{self.text()}")
            time.sleep(0.1)
        raise AssertionError(f"no {needle!r} within {timeout} s:\n{self.text()}")

    def wait_processed(self, n: int, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < end:
            try:
                seen = json.loads(self.stats.read_text())["pipeline"]["processed"]
            except (OSError, ValueError, KeyError):
                pass
            if seen >= n:
                return
            time.sleep(0.1)
        raise AssertionError(f"sniff processed {seen} of {n} packets:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> dict[str, Any]:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        assert rc == 0, f"sniff exited {rc}:\n{self.text()}"
        return json.loads((self.dir / "summary.json").read_text())


def _events(path: Path) -> Counter:
    """ICS operations, without what depends on when and in which order they were seen."""
    out: Counter = Counter()
    for line in path.read_text().splitlines():
        e = json.loads(line)
        for k in ("id", "ts", "flow_id", "latency"):
            e.pop(k, None)
        out[json.dumps(e, sort_keys=True)] += 1
    return out


def _alerts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _alert_key(doc: dict[str, Any]) -> tuple:
    ev = tuple((e["function_name"], e["src"], e["dst"], e.get("address"), tuple(e.get("values", ()))) for e in doc["ics"]["evidence"])
    return (doc["rule"]["id"], doc["source"]["ip"], doc["destination"]["ip"], doc["destination"]["port"], ev)


def _replay(tmp: Path, *files: Path, extra: tuple[str, ...] = ()) -> tuple[Counter, list[dict[str, Any]]]:
    from icswatch.cli import main

    out = tmp / "replay"
    out.mkdir()
    rc = main(["replay", *map(str, files), "--no-db", "-q", "--events", str(out / "events.jsonl"),
               "--alerts-out", str(out / "alerts.jsonl"), *extra])
    assert rc == 0
    return _events(out / "events.jsonl"), _alerts(out / "alerts.jsonl")


def _tshark_count(tshark: str, pcap: str, port: int, display: str) -> int:
    r = subprocess.run(
        [tshark, "-n", "-r", pcap, "-d", f"tcp.port=={port},mbtcp", "-Y", display, "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr  # opens, and is not cut short
    return len(r.stdout.split())


def test_sniff_sees_the_same_pdus_and_alerts_as_replay(netns: Netns, tmp_path: Path, tshark: str) -> None:
    """tcpreplay -> veth -> sniff gives the events and alerts replay gives for the same files; each
    alert has an evidence pcap that tshark opens and that holds its triggering PDU; SIGTERM flushes
    every output (SQLite, JSON Lines, evidence) and the counters add up with nothing dropped."""
    files = (UNAUTHORIZED, NONSTANDARD, PORT_SCAN, NORMAL)  # distinct 5-tuples: one live flow table is fine
    work = tmp_path / "sniff"
    work.mkdir()
    sniff = Sniff(netns, work, "--set", TIMING_RULES, "--db", "alerts.db", "--events", "events.jsonl",
                  "--alerts-out", "alerts.jsonl", "--evidence-dir", "evidence")
    sniff.wait_for("listening on vb (ring")
    sent = netns.replay(*files)
    sniff.wait_processed(sent)
    summary = sniff.stop()

    want_events, want_alerts = _replay(tmp_path, *files, extra=("--set", TIMING_RULES))
    assert sum(want_events.values()) > 800
    assert _events(work / "events.jsonl") == want_events
    alerts = _alerts(work / "alerts.jsonl")
    assert sorted(map(_alert_key, alerts)) == sorted(map(_alert_key, want_alerts))
    assert {a["rule"]["id"] for a in alerts} >= {"modbus-write-unauthorized-master", "ics-protocol-nonstandard-port", "ics-port-scan-ports"}

    totals = summary["capture"]["totals"]
    assert totals["kernel_received"] == totals["captured"] == totals["processed"] == summary["packets"] == sent
    assert totals["kernel_dropped"] == totals["queue_dropped"] == 0
    assert summary["alerts"]["total"] == len(alerts)
    with sqlite3.connect(work / "alerts.db") as db:  # the store was flushed at SIGTERM
        assert db.execute("select count(*) from alerts").fetchone()[0] == len(alerts)

    for doc in alerts:
        pcap = doc["icswatch"]["details"]["evidence_pcap"]
        last = doc["ics"]["evidence"][-1]
        flow = f"ip.src=={last['src']} && tcp.srcport=={last['sport']} && ip.dst=={last['dst']} && tcp.dstport=={last['dport']}"
        if last["function"] >= 0:  # a Modbus PDU: that function, on that flow
            flow += f" && modbus.func_code=={last['function']}"
        server = last["dport"] if last["direction"] == "request" else last["sport"]
        assert _tshark_count(tshark, pcap, server, flow) >= 1, (doc["rule"]["id"], pcap)
    assert "stopping (SIGTERM)" in sniff.text()


def test_socket_method_with_a_kernel_filter(netns: Netns, tmp_path: Path) -> None:
    """The per-packet socket reader and the BPF filter: the kernel only passes port 502, so the flow on
    port 5020 is never seen, and what is seen equals a replay of the port-502 capture."""
    sniff = Sniff(netns, tmp_path, "--capture-method", "socket", "--bpf", "tcp port 502", "--no-rules", "--no-db",
                  "--events", "events.jsonl")
    sniff.wait_for("listening on vb (socket")
    netns.replay(NONSTANDARD, NORMAL, pps=3000)
    sniff.wait_processed(882)
    time.sleep(0.3)
    summary = sniff.stop(signal.SIGINT)
    totals = summary["capture"]["totals"]
    assert totals["kernel_received"] == totals["processed"] == 882  # modbus_normal only
    want, _ = _replay(tmp_path, NORMAL, extra=("--no-rules",))
    assert _events(tmp_path / "events.jsonl") == want


def test_several_interfaces_promiscuous(netns: Netns, tmp_path: Path) -> None:
    """One capture thread per interface into one pipeline; each interface in promiscuous mode while
    sniff runs (the kernel's promiscuity count), and out of it after."""
    sniff = Sniff(netns, tmp_path, "--no-db", "--alerts-out", "alerts.jsonl", ifaces=("vb", "vd"))
    sniff.wait_for("listening on vb (ring")
    for dev in ("vb", "vd"):
        assert "promiscuity 1" in netns.run("ip", "-d", "link", "show", dev).stdout
    sent_b = netns.replay(UNAUTHORIZED, iface="va")
    sent_d = netns.replay(NONSTANDARD, iface="vc")
    sniff.wait_processed(sent_b + sent_d)
    summary = sniff.stop()
    per = {i["interface"]: i for i in summary["capture"]["interfaces"]}
    assert per["vb"]["kernel_received"] == per["vb"]["captured"] == sent_b
    assert per["vd"]["kernel_received"] == per["vd"]["captured"] == sent_d
    rules = {a["rule"]["id"] for a in _alerts(tmp_path / "alerts.jsonl")}
    assert rules == {"modbus-write-unauthorized-master", "ics-protocol-nonstandard-port"}
    for dev in ("vb", "vd"):
        assert "promiscuity 0" in netns.run("ip", "-d", "link", "show", dev).stdout


def test_sighup_reloads_rules_without_losing_packets(netns: Netns, tmp_path: Path) -> None:
    """SIGHUP in the middle of traffic: every packet still goes through, and a rule switched on in the
    configuration file fires after the reload (and not before)."""
    config = tmp_path / "sensor.yaml"
    config.write_text("rules:\n  disabled: [modbus-write-unauthorized-master, modbus-brute-force-io]\n")
    sniff = Sniff(netns, tmp_path, "-c", str(config), "--no-db", "--alerts-out", "alerts.jsonl")
    sniff.wait_for("listening on vb")
    sent = netns.replay(UNAUTHORIZED)
    sniff.wait_processed(sent)
    config.write_text("rules:\n  disabled: [modbus-brute-force-io]\n")
    background = netns.popen("tcpreplay", "-q", "-i", "va", "--pps=1000", str(NORMAL), stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    sniff.proc.send_signal(signal.SIGHUP)
    sniff.wait_for("icswatch sniff: reloaded")
    assert background.wait(timeout=60) == 0
    sent += 882
    sent += netns.replay(UNAUTHORIZED)  # the same connection again: now the rule is on
    sniff.wait_processed(sent)
    summary = sniff.stop()
    totals = summary["capture"]["totals"]
    assert totals["processed"] == totals["kernel_received"] == sent
    assert totals["queue_dropped"] == totals["kernel_dropped"] == 0
    rules = Counter(a["rule"]["id"] for a in _alerts(tmp_path / "alerts.jsonl"))
    assert rules["modbus-write-unauthorized-master"] == 1  # the second run only
    assert "unchanged rule(s) kept their state" in sniff.text()


def _setpriv(*caps: str, user: str | None = None) -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    want = ",".join(["-all", *(f"+{c}" for c in caps)])
    cmd = [setpriv, "--bounding-set", want, "--inh-caps", want]
    if user:
        cmd += ["--reuid", user, "--regid", user, "--clear-groups", "--ambient-caps", want]
    return (*cmd, "--")


def test_capabilities_suffice_and_are_needed(netns: Netns, tmp_path: Path) -> None:
    """What the systemd unit grants is enough: CAP_NET_RAW and CAP_NET_ADMIN and nothing else; without
    them sniff refuses to start with a message naming the capability (exit 1)."""
    sniff = Sniff(netns, tmp_path, "--no-rules", "--no-db", prefix=_setpriv("net_raw", "net_admin"))
    sniff.wait_for("listening on vb (ring")
    sent = netns.replay(UNAUTHORIZED)
    sniff.wait_processed(sent)
    assert sniff.stop()["capture"]["totals"]["processed"] == sent
    denied = netns.run(*_setpriv(), sys.executable, "-m", "icswatch.commands.sniff", "-i", "vb", "--no-db", check=False)
    assert denied.returncode == 1 and "CAP_NET_RAW" in denied.stderr
