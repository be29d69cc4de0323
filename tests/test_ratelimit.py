"""Rate limits of both APIs (api/ratelimit.py): the token buckets and the policy on a fake clock, then the
provincial platform under ``icswatch province serve`` (real uvicorn on 127.0.0.1) with tiny limits:
429 + Retry-After in the platform's error shape, other clients untouched, spoofed key ids charged to
the sender's address, the refusals audited, and the enterprise forwarder still delivering every
report exactly once while it is being throttled. The enterprise API's 429 is tested against its real
server in test_api_routes.py (``test_rate_limit_and_cors``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from province_testutil import ProvinceServer, dumps, make_platform, sample_report, signed_request

from api.client_address import ClientAddress
from api.ratelimit import Limits, RateLimiter, TokenBuckets, address_key, credential, retry_after_seconds

pytestmark = pytest.mark.timeout(300)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- the buckets and the policy (fake clock) ---------------------------------------------------------------


def test_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    b = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a") == pytest.approx(0.5)  # one token comes back every 1/rate seconds
    clock.t += 0.5
    assert b.take("a") == 0.0 and b.take("a") > 0
    clock.t += 100  # a long pause refills to the burst, not beyond
    assert b.tokens("a") == 3.0
    assert b.take("b") == 0.0  # another key has its own bucket


def test_waiting_adds_nothing_and_debt_is_paid_back() -> None:
    clock = Clock()
    b = TokenBuckets(rate=1.0, burst=2, clock=clock)
    assert b.wait("never-seen") == 0.0 and len(b) == 0  # a check alone never fills the table
    for _ in range(10):  # ten requests in flight at once: charged after they ran
        b.charge("a")
    assert b.tokens("a") == -2.0  # debt, floored at -burst
    assert b.wait("a") == pytest.approx(3.0)  # back to one token after 3 s at 1/s
    assert retry_after_seconds(b.wait("a")) == 3 and retry_after_seconds(0.01) == 1


def test_the_bucket_table_is_bounded() -> None:
    b = TokenBuckets(rate=1.0, burst=1, max_clients=1000, clock=Clock())
    for i in range(50_000):
        b.charge(f"client-{i}")
    assert len(b) == 1000
    assert "client-49999" in b and "client-0" not in b  # the least recently seen went first


def test_only_what_authenticated_spends_a_credential_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(rate=1.0, burst=2, anonymous_rate=1.0, anonymous_burst=3), clock=clock)
    victim = credential("key", b"ik_0123456789abcdef", secret=False)
    # Someone sends the victim's (public) key id with made-up signatures: the sender's address pays.
    for _ in range(3):
        assert limiter.check(victim, "203.0.113.66") == (0.0, "")
        limiter.settle(victim, "203.0.113.66", authenticated=False)
    wait, which = limiter.check(victim, "203.0.113.66")
    assert wait > 0 and which == "address"
    # The enterprise itself, from its own address, still has its whole allowance.
    for _ in range(2):
        assert limiter.check(victim, "198.51.100.10") == (0.0, "")
        limiter.settle(victim, "198.51.100.10", authenticated=True)
    wait, which = limiter.check(victim, "198.51.100.10")
    assert wait == pytest.approx(1.0) and which == "credential"


def test_a_proven_token_is_not_locked_out_by_its_neighbours() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(rate=5.0, burst=5, anonymous_rate=1.0, anonymous_burst=2), clock=clock)
    analyst = credential("token", b"icsw_analyst", secret=True)
    limiter.settle(analyst, "10.0.0.5", authenticated=True)  # it authenticated once
    for i in range(5):  # then made-up tokens from the same NAT address empty the address's bucket
        limiter.settle(credential("token", f"icsw_guess{i}".encode(), secret=True), "10.0.0.5", authenticated=False)
    assert limiter.check(credential("token", b"icsw_guess9", secret=True), "10.0.0.5")[1] == "address"
    assert limiter.check(None, "10.0.0.5")[1] == "address"
    assert limiter.check(analyst, "10.0.0.5") == (0.0, "")  # the analyst behind the same NAT goes on
    limiter.settle(analyst, "10.0.0.5", authenticated=False)  # revoked: its standing is gone at once
    assert limiter.check(analyst, "10.0.0.5")[1] == "address"


def test_client_address_reads_forwarded_for_from_the_right() -> None:
    addr = ClientAddress(["127.0.0.1/32", "10.0.0.0/8"])
    via_proxy = {"client": ("127.0.0.1", 4000), "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9, 10.1.1.1")]}
    assert addr(via_proxy) == "203.0.113.9"  # 6.6.6.6 is what the client wrote itself
    direct = {"client": ("198.51.100.1", 4000), "headers": [(b"x-forwarded-for", b"6.6.6.6")]}
    assert addr(direct) == "198.51.100.1"  # not from a trusted proxy: the header is ignored
    garbage = {"client": ("127.0.0.1", 4000), "headers": [(b"x-forwarded-for", b"6.6.6.6, <script>")]}
    assert addr(garbage) == "127.0.0.1"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"


# -- the provincial platform, for real ---------------------------------------------------------------------------


@pytest.fixture()
def tight(tmp_path: Path) -> Iterator[tuple[Any, ProvinceServer]]:
    plat = make_platform(tmp_path / "province.db")
    server = ProvinceServer(
        plat.db, plat.master_key, rate_limit=2, rate_burst=4, anonymous_rate_limit=2, anonymous_rate_burst=4
    ).start()
    yield plat, server
    server.stop()


def test_province_answers_429_with_retry_after_and_other_clients_go_on(tight: tuple[Any, ProvinceServer]) -> None:
    plat, server = tight
    with httpx.Client(base_url=server.url, timeout=10) as c:
        codes = [signed_request(c, "GET", "/api/v1/advisories", plat.keys["acme"]).status_code for _ in range(4)]
        assert codes == [200] * 4
        r = signed_request(c, "GET", "/api/v1/advisories", plat.keys["acme"])
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "rate_limited" and err["request_id"] == r.headers["x-request-id"]
        assert 1 <= int(r.headers["retry-after"]) <= 2
        # another enterprise, and staff, from the very same address: their own buckets
        assert signed_request(c, "GET", "/api/v1/advisories", plat.keys["beta"]).status_code == 200
        staff = {"Authorization": "Bearer " + plat.analyst}
        assert c.get("/api/v1/advisories", headers=staff).status_code == 200
        assert all(c.get("/api/v1/health").status_code == 200 for _ in range(10))  # probes are never limited
        time.sleep(float(r.headers["retry-after"]))
        assert signed_request(c, "GET", "/api/v1/advisories", plat.keys["acme"]).status_code == 200


def test_spoofed_key_ids_are_charged_to_the_sender(tight: tuple[Any, ProvinceServer]) -> None:
    plat, server = tight
    acme_key_id = plat.keys["acme"][0]
    attacker = {"X-Forwarded-For": "203.0.113.66"}  # through the trusted local proxy (127.0.0.1)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        codes = [
            signed_request(c, "GET", "/api/v1/advisories", (acme_key_id, "isk_not-the-secret"), **attacker).status_code
            for _ in range(8)
        ]
        assert codes[:4] == [401] * 4 and codes[-1] == 429
        # acme's own allowance is untouched, and so is every other address
        assert [signed_request(c, "GET", "/api/v1/advisories", plat.keys["acme"]).status_code for _ in range(4)] == [200] * 4
        assert c.get("/api/v1/schema/incident", headers={"X-Forwarded-For": "198.51.100.20"}).status_code == 200
        assert c.get("/api/v1/schema/incident", headers=attacker).status_code == 429  # public routes too
        # the attacker cannot pick a fresh address by writing one in front of the proxy's
        spoof = {"X-Forwarded-For": "192.0.2.1, 203.0.113.66"}
        assert signed_request(c, "GET", "/api/v1/advisories", (acme_key_id, "isk_x"), **spoof).status_code == 429
        admin = {"Authorization": "Bearer " + plat.admin}
        deadline = time.monotonic() + 10
        while True:
            items = c.get("/api/v1/audit", params={"result": "throttled", "limit": 100}, headers=admin).json()["items"]
            if len(items) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert items and all(i["status"] == 429 and i["detail"] == "rate_limited" for i in items)
    assert {i["client"] for i in items} == {"203.0.113.66"}  # never the address the attacker wrote itself
    assert {i["actor"] for i in items} == {acme_key_id, "anonymous"}  # the claimed key id; none on the schema route


def test_forwarder_delivers_everything_exactly_once_while_throttled(tmp_path: Path) -> None:
    from alerts.forwarder import Forwarder, LinkageClient
    from alerts.outbox import Outbox

    plat = make_platform(tmp_path / "province.db")
    server = ProvinceServer(plat.db, plat.master_key, rate_limit=3, rate_burst=3).start()
    outbox = Outbox(tmp_path / "outbox.db")
    ids = [f"inc-throttle-{i:02d}" for i in range(15)]
    now = time.time()
    with outbox.transaction() as c:
        for inc in ids:
            outbox.enqueue(c, "report", inc, inc, "POST", "/api/v1/incidents", dumps(sample_report(inc, level=3)), now)
    client = LinkageClient(server.url, *plat.keys["gamma"], timeout=5)
    fwd = Forwarder(outbox, client, retry_base=0.2, retry_max=2.0, poll_seconds=0.1)
    try:
        assert fwd.drain(timeout=90), outbox.status()
        assert fwd.stats.by_status.get(429, 0) > 0, fwd.stats  # it was throttled ...
        assert fwd.stats.sent == len(ids) and fwd.stats.duplicates == 0 and fwd.stats.failed == 0  # ... and lost nothing
        with httpx.Client(base_url=server.url, timeout=10, headers={"Authorization": "Bearer " + plat.analyst}) as c:
            got = c.get("/api/v1/incidents", params={"limit": 1000, "q": "gamma"}).json()["items"]
        stored = sorted(i["incident_id"] for i in got if i["enterprise_id"] == "gamma")
        assert stored == ids  # each exactly once
        assert json.loads(outbox.body(outbox.entries("sent", limit=1)[0]["seq"]) or b"{}")["incident_id"] in ids
    finally:
        fwd.close()
        outbox.close()
        server.stop()


# -- the enterprise API, for real ----------------------------------------------------------------------------


def test_enterprise_limits_made_up_tokens_by_address_not_the_analysts_behind_it(tmp_path: Path) -> None:
    from security_testutil import lite_enterprise

    lite = lite_enterprise(tmp_path / "ent", rate_limit=50, rate_burst=50, anonymous_rate_limit=1, anonymous_rate_burst=3)
    server = lite.thread()
    try:
        with lite.client(server.url, "viewer") as analyst, httpx.Client(base_url=server.url, timeout=10) as guesser:
            assert analyst.get("/api/v1/auth/me").status_code == 200  # the analyst has authenticated once
            codes = [guesser.get("/api/v1/alerts", headers={"Authorization": f"Bearer icsw_guess{i:040d}"}).status_code
                     for i in range(6)]
            assert codes[:3] == [401] * 3 and codes[-1] == 429  # made-up tokens: the address's small bucket
            r = guesser.get("/api/v1/alerts")
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1
            # the analyst on the same address goes on, up to the token's own (larger) limit
            assert all(analyst.get("/api/v1/alerts", params={"limit": 1}).status_code == 200 for _ in range(20))
            assert guesser.get("/api/v1/health").status_code == 200
    finally:
        server.stop()
