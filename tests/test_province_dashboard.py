"""The province dashboard in headless Chromium (Debian's chromium, driven over the DevTools protocol):
it loads, shows the incident count the API reports, switches between Chinese and English, and saves
the screenshot that docs/province-dashboard.md shows."""

from __future__ import annotations

import base64
from typing import Iterator

import httpx
import pytest

from province_testutil import (
    REPO,
    Chromium,
    ThreadServer,
    chromium_path,
    dumps,
    make_platform,
    sample_report,
    signed_request,
)

SCREENSHOT = REPO / "docs" / "img" / "province-dashboard.png"

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (.ci/setup-system.sh installs it)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from datetime import datetime, timedelta, timezone

    from api.province import ProvinceSettings, create_app

    db = tmp_path_factory.mktemp("dash") / "province.db"
    plat = make_platform(db)
    app = create_app(ProvinceSettings(db=str(db)), master_key=base64.urlsafe_b64decode(plat.master_key))
    server = ThreadServer(app).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    now = datetime.now(timezone.utc)
    demo = [  # a small region: three plants, all four levels, two late reports
        ("acme", "demo-1", 1, ["modbus"], ["T0816", "T0881"], "plc", 30),
        ("acme", "demo-2", 2, ["modbus"], ["T0846", "T0855"], "plc", 20),
        ("acme", "demo-3", 3, ["s7comm"], ["T0843"], "engineering_station", 2900),
        ("beta", "demo-4", 2, ["iec104"], ["T0855"], "rtu", 90),
        ("beta", "demo-5", 4, ["modbus"], ["T0846"], "plc", 10),
        ("gamma", "demo-6", 3, ["dnp3"], ["T0836", "T0855"], "rtu", 1500),
        ("gamma", "demo-7", 1, ["dnp3"], ["T0816"], "rtu", 5),
    ]
    for ent, iid, level, protos, techs, kind, minutes in demo:
        report = sample_report(
            iid,
            level=level,
            protocols=protos,
            techniques=techs,
            discovered_at=(now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            affected_assets=[{"address": f"int-{iid}", "asset_type": kind, "protocols": protos}],
            title=f"{protos[0]} attack on a {kind}",
        )
        assert signed_request(client, "POST", "/api/v1/incidents", plat.keys[ent], dumps(report)).status_code == 201
    client.post(
        "/api/v1/advisories",
        headers={"Authorization": "Bearer " + plat.analyst},
        json={
            "title": "Modbus 写操作攻击预警 / Modbus write campaign",
            "body": "Block TCP/502.",
            "targets": {"all": True},
        },
    )
    yield {"url": server.url, "plat": plat, "client": client}
    client.close()
    server.stop()


def test_dashboard_loads_counts_switches_language_and_screenshots(site: dict) -> None:
    api_total = (
        site["client"]
        .get(
            "/api/v1/situation",
            params={"since": "2000-01-01T00:00:00Z"},
            headers={"Authorization": "Bearer " + site["plat"].analyst},
        )
        .json()["totals"]["incidents"]
    )
    assert api_total == 7
    browser = Chromium()
    try:
        browser.navigate(f"{site['url']}/?lang=zh#token={site['plat'].analyst}")
        browser.wait_for("document.body && document.body.dataset.ready === '1'")
        assert browser.eval("location.hash") == ""  # the token left the address bar at once
        shown = browser.eval("document.getElementById('kpi-incidents').textContent")
        assert int(shown) == api_total
        assert browser.eval("document.querySelector('[data-i18n=title]').textContent") == "省级工业互联网安全态势"
        assert browser.eval("document.querySelectorAll('#chart-timeline canvas').length") >= 1  # ECharts drew
        assert "特别重大" in browser.eval("document.getElementById('open-table').innerText")
        browser.wait_for("new Promise(r => setTimeout(() => r(true), 700))")  # let the chart animations finish
        browser.screenshot(SCREENSHOT)
        browser.eval("document.getElementById('lang').click()")
        assert browser.eval("document.querySelector('[data-i18n=title]').textContent") == (
            "Provincial industrial internet security situation"
        )
        assert browser.eval("document.documentElement.lang") == "en"
        assert "Especially major" in browser.eval("document.getElementById('open-table').innerText")
        assert int(browser.eval("document.getElementById('kpi-incidents').textContent")) == api_total
        browser.eval("document.getElementById('lang').click()")
        assert browser.eval("document.body.dataset.lang") == "zh"
        assert not browser.exceptions, browser.exceptions
    finally:
        browser.close()
    assert SCREENSHOT.stat().st_size > 20_000


def test_dashboard_without_a_token_asks_for_one(site: dict) -> None:
    browser = Chromium(1000, 700)
    try:
        browser.navigate(site["url"] + "/?lang=en")
        browser.wait_for("document.getElementById('login') && !document.getElementById('login').hidden")
        assert browser.eval("document.getElementById('main').hidden") is True
        browser.eval(
            "document.getElementById('token').value = 'ipt_wrong';"
            "document.getElementById('login-form').requestSubmit()"
        )
        browser.wait_for("document.getElementById('login-error').textContent.length > 0")
        assert "Invalid" in browser.eval("document.getElementById('login-error').textContent")
    finally:
        browser.close()
