"""The enterprise side of the linkage: which incidents are queued, redaction, the durable outbox, and
the delivery worker's retries (exponential backoff with jitter, Retry-After, permanent refusals,
per-incident order). The platform is faked with httpx.MockTransport here; test_province_e2e.py runs
the real one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.forwarder import (
    Forwarder,
    LinkageClient,
    RedactionPolicy,
    Redactor,
    backoff_delay,
    canonical_query,
    canonical_string,
    parse_retry_after,
    sign,
)
from alerts.outbox import Outbox, OutboxWriter
from province_testutil import REPO, BatchRecorder, replay

DOC = REPO / "docs" / "linkage.md"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def writer(tmp_path: Path, clock: Clock | None = None, **kw: Any) -> OutboxWriter:
    box = Outbox(tmp_path / "outbox.db")
    return OutboxWriter(
        box,
        Redactor(RedactionPolicy(), box.salt()),
        enterprise_id="acme",
        site="Plant 1",
        sensor="sensor-1.plant.local",
        clock=clock or Clock(),
        **kw,
    )


def batches(*pcaps: str) -> list[Any]:
    rec = BatchRecorder()
    replay([REPO / "pcaps" / p for p in pcaps], [rec], ["outputs.batch_size=1"])
    return rec.batches


# -- signing: the documented example is the implementation's ------------------------------------------


def test_canonical_form_example_in_the_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- signing-example -->\s*```text\n(.*?)```", text, re.S)
    assert block, "docs/linkage.md lost its signing example"
    fields = dict(line.split(": ", 1) for line in block.group(1).strip().splitlines())
    body = fields["body"].encode()
    canonical = canonical_string(
        fields["method"],
        fields["path"],
        fields["query"],
        fields["timestamp"],
        fields["nonce"],
        __import__("hashlib").sha256(body).hexdigest(),
    )
    canon_block = re.search(r"<!-- canonical-example -->\s*```text\n(.*?)```", text, re.S)
    assert canon_block and canonical == canon_block.group(1).rstrip("\n")
    assert sign(fields["secret"], canonical) == fields["signature"]


def test_canonical_query_sorts_and_encodes() -> None:
    assert canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
    assert canonical_query("q=a b&x=") == canonical_query("x=&q=a%20b") == "q=a%20b&x="
    assert canonical_query("city=%E7%A6%8F%E5%B7%9E") == "city=%E7%A6%8F%E5%B7%9E"


# -- redaction ------------------------------------------------------------------------------------------


def test_redaction_policy() -> None:
    red = Redactor(RedactionPolicy(internal_domains=("plant.local",)), b"k" * 32)
    report = {
        "title": "incident on 10.10.2.11 seen by hmi-3.plant.local",
        "sensor": "sensor-1.plant.local",
        "affected_assets": [{"address": "10.10.2.11"}, {"address": "fd00::5"}],
        "evidence": {"sources": ["10.10.9.66", "203.0.113.7"], "samples": [{"values": [1, 2, 3], "address": 40001}]},
    }
    out = red.apply(report)
    pseudo = out["affected_assets"][0]["address"]
    assert re.fullmatch(r"int-[0-9a-f]{12}", pseudo) and pseudo in out["title"]
    assert "hmi-3" not in out["title"] and "[host]" in out["title"]
    assert "sensor" not in out
    assert out["affected_assets"][1]["address"].startswith("int-")  # IPv6 internal
    assert out["evidence"]["sources"][1] == "203.0.113.7"  # public: an indicator, kept
    assert out["evidence"]["samples"][0] == {"values_redacted": 3, "address": 40001}
    assert red.apply(report) == out  # stable pseudonyms
    assert Redactor(RedactionPolicy(), b"j" * 32).address("10.10.2.11") != pseudo  # keyed by the plant's salt
    prefix = Redactor(RedactionPolicy(addresses="prefix", prefix_v4=16, values=False, hostnames=False), b"k")
    out2 = prefix.apply(report)
    assert out2["affected_assets"][0]["address"] == "10.10.0.0/16" and out2["evidence"]["samples"][0]["values"] == [
        1,
        2,
        3,
    ]
    assert out2["sensor"] == "sensor-1.plant.local"


# -- what gets queued ----------------------------------------------------------------------------------


def test_reportable_levels_updates_and_marks(tmp_path: Path) -> None:
    w = writer(tmp_path)
    for b in batches("rule_modbus-function-code-scan.pcap"):  # grows to 重大 over 5 alerts, one per batch
        w.write(b)
    st = w.outbox.status()
    entries = w.outbox.entries()
    reports = [e for e in entries if e["kind"] == "report"]
    updates = [e for e in entries if e["kind"] == "update"]
    assert len(reports) == 1 and st["incidents_reported"] == 1
    # Growth after the first report became updates; never-tried updates absorb later states.
    assert 1 <= len(updates) <= 4
    last = json.loads(w.outbox.body(updates[0]["seq"]) or b"{}")
    assert last["level"] == 2 and last["update_id"].startswith(reports[0]["incident_id"])
    body = json.loads(w.outbox.body(reports[0]["seq"]) or b"{}")
    assert body["enterprise_id"] == "acme" and body["schema_version"] == "1" and "sensor" not in body
    assert "10.10.2.12" not in json.dumps(body)  # the PLC's address was pseudonymised
    # a level-4 incident is not reported automatically ...
    w2 = writer(tmp_path / "b")
    rec = batches("rule_modbus-illegal-function-probe.pcap")
    for b in rec:
        w2.write(b)
    assert w2.outbox.status()["incidents_seen"] == 1 and w2.outbox.pending_count() == 0
    # ... until an analyst marks it
    inc = rec[-1].incidents[0]
    assert w2.mark(inc.to_ecs(), [rec[-1].doc(a) for a in rec[-1].alerts]) == 1
    assert w2.mark(inc.to_ecs()) == 0  # nothing new to say
    assert w2.outbox.status()["incidents_reported"] == 1


# -- delivery -------------------------------------------------------------------------------------------


def fake_platform(script: list[Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers from ``script`` in order (status or (status, headers)), then 201s."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0) if script else 201
        if isinstance(step, Exception):
            raise step
        status, headers = (step, {}) if isinstance(step, int) else step
        body = {"duplicate": False} if status < 300 else {"error": {"code": "x", "message": "no"}}
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handler)


def queued(tmp_path: Path, clock: Clock) -> OutboxWriter:
    w = writer(tmp_path, clock)
    for b in batches("rule_modbus-function-code-scan.pcap", "rule_modbus-umas-plc-stop.pcap"):
        w.write(b)
    return w


def test_retries_backoff_retry_after_and_order(tmp_path: Path) -> None:
    clock = Clock()
    w = queued(tmp_path, clock)
    total = w.outbox.pending_count()
    seen: list[httpx.Request] = []
    script: list[Any] = [httpx.ConnectError("refused"), (503, {"Retry-After": "30"}), (429, {"Retry-After": "7"})]
    client = LinkageClient(
        "http://province.test/base", "ik_0123456789abcdef", "isk_secret", transport=fake_platform(script, seen)
    )
    fwd = Forwarder(w.outbox, client, retry_base=1.0, retry_max=60.0, rng=lambda: 0.5, clock=clock)
    assert fwd.run_once() == 0 and fwd.stats.retried == 1  # no answer: the pass stops, the worker pauses
    assert fwd.stats.paused_until > clock.t
    clock.t = fwd.stats.paused_until + 0.01
    fwd.run_once()  # 503 + Retry-After 30
    tried = [e for e in w.outbox.entries("pending") if e["attempts"] == 2]
    assert len(tried) == 1 and tried[0]["next_at"] >= clock.t + 30 - 0.1 and tried[0]["last_status"] == 503
    clock.t += 31
    fwd.run_once()  # 429 + Retry-After 7
    clock.t += 8
    while w.outbox.pending_count():
        clock.t += 0.01
        fwd.run_once()
    assert fwd.stats.sent == total and w.outbox.status()["entries"]["sent"] == total
    sent = [r for r in seen if r.method in ("POST", "PATCH")]
    # every request was signed over the prefixed path, and no update overtook its report
    assert all(r.url.path.startswith("/base/api/v1/") and r.headers["x-icswatch-signature"] for r in sent)
    first_post: dict[str, int] = {}
    for i, r in enumerate(sent):
        inc = json.loads(r.content).get("incident_id") if r.method == "POST" else r.url.path.rsplit("/", 1)[1]
        if r.method == "POST":
            first_post.setdefault(inc, i)
        else:
            assert inc in first_post and first_post[inc] < i
    fwd.close()


def test_permanent_refusal_parks_the_entry_and_blocks_its_incident(tmp_path: Path) -> None:
    clock = Clock()
    w = queued(tmp_path, clock)
    seen: list[httpx.Request] = []
    client = LinkageClient(
        "http://province.test", "ik_0123456789abcdef", "isk_secret", transport=fake_platform([422], seen)
    )
    fwd = Forwarder(w.outbox, client, rng=lambda: 0.5, clock=clock)
    fwd.run_once()
    st = w.outbox.status()
    assert st["entries"]["failed"] == 1 and st["last_error"]["last_status"] == 422
    failed = w.outbox.entries("failed")[0]
    same = [e for e in w.outbox.entries() if e["incident_id"] == failed["incident_id"] and e["seq"] != failed["seq"]]
    assert same and all(e["state"] == "pending" for e in same)  # its updates wait behind it
    others = [e for e in w.outbox.entries() if e["incident_id"] != failed["incident_id"]]
    assert others and all(e["state"] == "sent" for e in others)  # other incidents are not held up
    assert w.outbox.retry_failed() == 1
    fwd.run_once()  # the report ...
    fwd.run_once()  # ... then the updates that waited behind it
    assert w.outbox.pending_count() == 0
    fwd.close()


def test_backoff_and_retry_after_parsing() -> None:
    delays = [backoff_delay(n, 1.0, 60.0, rng=lambda: 1.0) for n in range(1, 10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and max(delays) == 60.0
    assert backoff_delay(3, 1.0, 60.0, rng=lambda: 0.0) == 2.0  # equal jitter: never below half the step
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_client_never_shows_its_secret() -> None:
    c = LinkageClient("http://province.test", "ik_0123456789abcdef", "isk_topsecret")
    assert "isk_topsecret" not in repr(c)
    c.close()


@pytest.mark.parametrize("line", ["linkage.enabled=true", "linkage.redact_networks=[10.0.0.0/33]"])
def test_linkage_config_is_validated(line: str) -> None:
    from icswatch.config import ConfigError, load_config

    with pytest.raises(ConfigError):
        load_config(None, [line])
