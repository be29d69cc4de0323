"""The dashboard in Debian's headless Chromium, after the demo captures were replayed: it signs in with a
token, its alert table shows as many alerts as the API counts, every chart is drawn by the vendored
ECharts, the labels switch to Chinese and back, nothing breaks the CSP or throws; the screenshot in
docs/dashboard.md is taken here (docs/img/enterprise-dashboard.png)."""

from __future__ import annotations

import json

import pytest
from test_api_support import REPO, ApiEnv, Chromium, api_env, chromium_path

SCREENSHOT = REPO / "docs" / "img" / "enterprise-dashboard.png"
CHARTS = ("chart-timeline", "chart-severity", "chart-protocol", "chart-rules", "chart-techniques", "chart-graph")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> ApiEnv:
    return api_env(request)


@pytest.fixture(scope="module")
def browser() -> Chromium:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: apt-get install chromium (.ci/setup-system.sh installs it)", pytrace=False)
    b = Chromium(width=1440, height=1100)
    yield b
    b.close()


def test_dashboard_shows_the_same_alerts_as_the_api(env: ApiEnv, browser: Chromium) -> None:
    viewer = env.client("viewer")
    total = viewer.get("/api/v1/alerts", params={"limit": 1}).json()["total"]
    assets = viewer.get("/api/v1/assets", params={"limit": 1}).json()["total"]
    assert total == env.replay["alerts"] > 0

    browser.navigate(env.url + "/")
    browser.wait_for("document.readyState === 'complete' && !document.getElementById('login').hidden")
    # sign in as a person would: paste the token, submit
    browser.eval("localStorage.setItem('icswatch.lang', 'en'); true")
    browser.eval(f"document.getElementById('token').value = {json.dumps(env.tokens['analyst'])}; "
                 "document.getElementById('login-form').requestSubmit(); true")
    browser.wait_for("document.body.dataset.loaded === '1'", timeout=60)

    shown = browser.eval("document.getElementById('alerts-total').dataset.total")
    assert int(shown) == total, (shown, total)
    # pages of 100: "Load more" until every alert is in the table
    for _ in range(total // 100 + 1):
        if browser.eval("document.getElementById('alerts-more').hidden"):
            break
        n = browser.eval("document.querySelectorAll('#alerts-table tbody tr').length")
        browser.eval("document.getElementById('alerts-more').click(); true")
        browser.wait_for(f"document.querySelectorAll('#alerts-table tbody tr').length > {n}")
    rows = browser.eval("document.querySelectorAll('#alerts-table tbody tr').length")
    assert rows == total, (rows, total)
    ids = browser.eval("[...document.querySelectorAll('#alerts-table tbody tr')].map(r => r.dataset.id)")
    assert len(set(ids)) == total
    first_api = viewer.get("/api/v1/alerts", params={"limit": 1}).json()["items"][0]["id"]
    assert browser.eval("document.querySelector('#alerts-table tbody tr').dataset.id") == first_api
    assert browser.eval("document.querySelectorAll('#assets-table tbody tr').length") == assets
    assert browser.eval("document.getElementById('who').textContent").startswith("analyst-test")
    # every chart drawn by ECharts, the graph with nodes and edges
    for cid in CHARTS:
        assert browser.eval(f"!!(window.echarts && echarts.getInstanceByDom(document.getElementById('{cid}')))"), cid
        assert browser.eval(f"document.querySelectorAll('#{cid} canvas').length") >= 1, cid
    nodes, links = browser.eval(
        "(() => { const o = echarts.getInstanceByDom(document.getElementById('chart-graph')).getOption().series[0];"
        " return [o.data.length, o.links.length]; })()"
    )
    graph = viewer.get("/api/v1/assets/graph", params={"limit": 400}).json()
    assert nodes == len(graph["nodes"]) and links == len(graph["edges"]) > 0

    # a filter narrows the table to what the API says
    high = viewer.get("/api/v1/alerts", params={"severity": "high", "limit": 1}).json()["total"]
    browser.eval("document.getElementById('f-severity').value = 'high'; document.getElementById('alert-filters').requestSubmit(); true")
    browser.wait_for(f"document.getElementById('alerts-total').dataset.total === '{high}'")
    assert browser.eval("document.querySelectorAll('#alerts-table tbody tr').length") == min(high, 100)
    # the detail of an alert, with its evidence
    browser.eval("document.querySelector('#alerts-table tbody tr').click(); true")
    browser.wait_for("!document.getElementById('alert-detail').hidden && document.querySelectorAll('#alert-detail tbody tr').length > 0")
    browser.eval("document.getElementById('f-reset').click(); true")
    browser.wait_for(f"document.getElementById('alerts-total').dataset.total === '{total}'")

    # Chinese labels, and back
    browser.eval("document.getElementById('lang').click(); true")
    browser.wait_for("document.documentElement.lang === 'zh-CN' && document.body.dataset.loaded === '1'")
    assert browser.eval("document.querySelector('[data-i18n=alerts]').textContent") == "告警"
    assert browser.eval("document.querySelector('[data-i18n=col_severity]').textContent") == "级别"
    assert browser.eval("document.title") == "icswatch 安全运营中心"
    browser.eval("document.getElementById('lang').click(); true")
    browser.wait_for("document.documentElement.lang === 'en' && document.body.dataset.loaded === '1'")
    assert browser.eval("document.querySelector('[data-i18n=alerts]').textContent") == "Alerts"

    # the detail panel open for the screenshot, charts settled
    browser.eval("document.querySelector('#alerts-table tbody tr').click(); true")
    browser.wait_for("!document.getElementById('alert-detail').hidden && document.querySelectorAll('#alert-detail tbody tr').length > 0")
    browser.eval("new Promise(r => setTimeout(r, 800))")
    browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 50_000
    assert browser.errors == [], browser.errors


def test_a_bad_token_is_refused_and_no_data_is_shown(env: ApiEnv, browser: Chromium) -> None:
    browser.eval("sessionStorage.clear(); true")
    browser.navigate(env.url + "/")
    browser.wait_for("document.readyState === 'complete' && !document.getElementById('login').hidden")
    browser.eval("document.getElementById('token').value = 'icsw_not-a-token'; document.getElementById('login-form').requestSubmit(); true")
    browser.wait_for("document.getElementById('login-error').textContent.length > 0")
    assert browser.eval("document.getElementById('main').hidden") is True
    assert browser.eval("document.querySelectorAll('#alerts-table tbody tr').length") == 0
    browser.errors.clear()  # the refused request is logged by the browser as a failed load
