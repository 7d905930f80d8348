"""The dashboard: login with a viewer key, what each key reaches, and the pages in a real browser."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.config import Settings
from corral.gateway import Gateway
from corral.gateway.auth import KeyStore
from corral.gateway.server import RunningGateway, serve_in_thread
from corral.monitor.rollup import RollupJob
from corral.store import Store
from corral.testing.traffic import insert_traces, synthetic_traces, trace_row

ADMIN_KEY = "sk-test-admin-key"
ARTIFACTS = (
    Path(os.environ.get("CORRAL_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "dashboard"
)
KNOWN_ID = "feedc0de" * 4


@pytest.fixture
def site(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("CORRAL_ADMIN_KEY", ADMIN_KEY)
    store = Store(sqlite_url)
    now = datetime.now(UTC)
    start = max(now.replace(hour=0, minute=0, second=0, microsecond=0), now - timedelta(hours=2))
    rows = list(synthetic_traces(240, start, (now - start) * 0.9, seed=7))
    rows.append(trace_row(KNOWN_ID, now - timedelta(seconds=5), "support", prompt="Do you ship to Zanzibar?",
                          answer="Yes, we ship to Zanzibar in five days.", version="v2"))  # fmt: skip
    insert_traces(store, rows)
    RollupJob(store).run_once(now)
    viewer, _ = KeyStore(store).create("watcher", viewer=True)
    user, _ = KeyStore(store).create("app")
    settings = Settings.model_validate({"gateway": {"deployments_poll_s": 0.2}})
    with serve_in_thread(Gateway(settings, store=store)) as gw:
        yield {"gw": gw, "rows": rows, "viewer": viewer, "user": user, "store_url": sqlite_url}
    store.dispose()


def _login(gw: RunningGateway, key: str) -> httpx.Client:
    client = httpx.Client(base_url=gw.base_url, timeout=30)
    form = client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    client.post("/dashboard/login", data={"csrf": csrf.group(1), "key": key})
    return client


def test_without_a_session_only_the_login_page_is_reachable(site):
    gw = site["gw"]
    with httpx.Client(base_url=gw.base_url, timeout=30) as anon:
        for path in ("/dashboard", "/dashboard/traces", f"/dashboard/traces/{KNOWN_ID}", "/dashboard/registry",
                     "/dashboard/static/plotly.min.js", "/dashboard/deployments/support"):  # fmt: skip
            response = anon.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/dashboard/login", path
        assert anon.get("/dashboard/login").status_code == 200
        forged = anon.post("/dashboard/login", data={"csrf": "x", "key": site["viewer"]})
        assert forged.status_code == 401 and "corral_session" not in forged.headers.get("set-cookie", "")


def test_a_viewer_key_reads_the_dashboard_and_admin_gets_but_writes_nothing(site):
    gw = site["gw"]
    client = _login(gw, site["viewer"])
    cookie = client.cookies.jar
    assert any(c.name == "corral_session" for c in cookie)
    page = client.get("/dashboard")
    assert page.status_code == 200 and "support" in page.text
    headers = {"Authorization": f"Bearer {site['viewer']}"}
    assert httpx.get(f"{gw.base_url}/admin/keys", headers=headers).status_code == 200
    assert httpx.post(f"{gw.base_url}/admin/keys", headers=headers, json={"name": "x"}).status_code == 403
    assert httpx.delete(f"{gw.base_url}/admin/keys/1", headers=headers).status_code == 403
    chat = httpx.post(f"{gw.base_url}/v1/chat/completions", headers=headers,
                      json={"model": "support", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert chat.status_code in (403, 404)
    assert client.post("/dashboard/logout", data={"csrf": "wrong"}).status_code == 400
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    assert client.post("/dashboard/logout", data={"csrf": csrf.group(1)}).status_code == 303
    assert client.get("/dashboard").status_code == 303


def test_set_cookie_is_httponly_and_samesite_strict(site):
    client = httpx.Client(base_url=site["gw"].base_url, timeout=30)
    form = client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    response = client.post("/dashboard/login", data={"csrf": csrf.group(1), "key": site["viewer"]})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_a_key_that_is_neither_admin_nor_viewer_cannot_log_in(site):
    client = _login(site["gw"], site["user"])
    assert client.get("/dashboard").status_code == 303


def test_every_page_renders_and_search_paginates_by_keyset(site):
    client = _login(site["gw"], ADMIN_KEY)
    for path in ("/dashboard", "/dashboard/deployments/support", "/dashboard/traces", "/dashboard/drift",
                 "/dashboard/alerts", "/dashboard/registry", f"/dashboard/traces/{KNOWN_ID}",
                 "/dashboard/traces?q=zanzibar&status=ok&feedback=", "/dashboard/deployments/support?hours=2&grain=m"):  # fmt: skip
        assert client.get(path).status_code == 200, path
    assert client.get("/dashboard/traces/nope").status_code == 404
    assert client.get("/dashboard/deployments/support?hours=abc").status_code == 400
    seen: list[str] = []
    url = "/dashboard/traces?deployment=search"
    while url:
        page = client.get(url).text
        seen += re.findall(r'href="/dashboard/traces/([0-9a-f]{32})"', page)
        nxt = re.search(r'id="next" href="\?([^"]+)"', page)
        url = f"/dashboard/traces?{nxt.group(1).replace('&amp;', '&')}" if nxt else ""
    assert len(seen) == len(set(seen)) == sum(r["deployment"] == "search" for r in site["rows"])


def test_a_login_on_one_replica_works_on_another_until_logout_or_revocation(site):
    """Sessions live in the store: two gateways over one store are two replicas behind a balancer."""
    first = _login(site["gw"], site["viewer"])
    token = first.cookies["corral_session"]
    other_store = Store(site["store_url"])
    settings = Settings.model_validate({"gateway": {"deployments_poll_s": 0.2}})
    with serve_in_thread(Gateway(settings, store=other_store)) as second:
        client = httpx.Client(base_url=second.base_url, timeout=30, cookies={"corral_session": token})
        page = client.get("/dashboard")
        assert page.status_code == 200 and "support" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        assert client.post("/dashboard/logout", data={"csrf": csrf.group(1)}).status_code == 303
        assert first.get("/dashboard").status_code == 303  # logged out everywhere
        again = _login(site["gw"], site["viewer"])
        assert client.get("/dashboard", cookies={"corral_session": again.cookies["corral_session"]}).status_code == 200
        KeyStore(other_store).revoke("watcher")
        assert again.get("/dashboard").status_code == 303  # a revoked key's sessions end
    other_store.dispose()


# -- in a real browser -------------------------------------------------------------------------------


def _browser() -> Any:
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install playwright)"
    if missing is None and not Path("/usr/bin/chromium").exists():
        missing = "Debian's chromium is not installed (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{missing} (CORRAL_REQUIRE_SERVICES=1 forbids skipping)", pytrace=False)
        pytest.skip(missing)
    return sync_playwright


@pytest.mark.slow
def test_browser_logs_in_as_viewer_reads_charts_finds_a_trace_and_opens_it(site):
    sync_playwright = _browser()
    gw, rows = site["gw"], site["rows"]
    per_deployment = Counter(r["deployment"] for r in rows)
    support_versions = Counter(r["model_version"] for r in rows if r["deployment"] == "support")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{gw.base_url}/dashboard")
        assert page.url.endswith("/dashboard/login")
        page.fill("#key", site["viewer"])
        page.click("#login")
        page.wait_for_selector("#overview")
        page.wait_for_function("document.querySelector('#chart-overview-volume')?.data !== undefined")
        for deployment, count in per_deployment.items():
            cell = page.locator(f'#overview tr[data-deployment="{deployment}"] td.requests')
            assert int(cell.inner_text()) == count
        bars = page.evaluate(
            "() => Object.fromEntries(document.querySelector('#chart-overview-volume').data"
            ".map(t => [t.name, t.y.reduce((a, b) => a + b, 0)]))"
        )
        assert bars == dict(per_deployment)
        assert page.locator("#chart-overview-volume .main-svg").count() > 0  # Plotly drew it
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

        page.click('a[href="/dashboard/deployments/support"]')
        page.wait_for_url("**/dashboard/deployments/support")
        page.wait_for_function("document.querySelector('#chart-volume')?.data !== undefined")
        lines = page.evaluate(
            "() => Object.fromEntries(document.querySelector('#chart-volume').data"
            ".map(t => [t.name, t.y.reduce((a, b) => a + b, 0)]))"
        )
        assert lines == dict(support_versions)
        p95 = page.evaluate("() => document.querySelector('#chart-latency').data.map(t => t.name)")
        assert p95 == ["p50", "p95", "p99"]
        page.screenshot(path=str(ARTIFACTS / "deployment.png"), full_page=True)

        page.goto(f"{gw.base_url}/dashboard/traces")
        page.fill('#search input[name="q"]', "zanzibar")
        page.click('#search button[type="submit"]')
        page.wait_for_url("**q=zanzibar**")
        page.wait_for_selector("#traces a.trace")
        assert page.locator("#traces a.trace").count() == 1
        page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
        page.click("#traces a.trace")
        page.wait_for_url(f"**/dashboard/traces/{KNOWN_ID}")
        page.wait_for_selector("#trace")
        assert KNOWN_ID in page.locator("#trace td.id").inner_text()
        assert "Zanzibar in five days" in page.locator("#answer").inner_text()
        page.screenshot(path=str(ARTIFACTS / "trace.png"), full_page=True)
        browser.close()
