"""The developer portal in a real browser: Debian's headless Chromium driven by Playwright (the
driver from the PyPI wheel; no browser is downloaded), in front of mlgate in Envoy with
azureml-sim and Azurite. The guide's flow: AzureML Demo API -> RRS Execute -> Try it, Send,
status 200 and the hashed features; a wrong key shows APIM's 401; My subscription shows the call.
Screenshots of every step go to target/artifacts/portal/."""
import json
import shutil

import pytest
from playwright.sync_api import expect

from harness import Envoy
from mlgate_harness import ROOT
from test_portal import ALICE, HOSTILE, PORTAL, RRS_BODY, portal_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "target" / "artifacts" / "portal"
# The portal as both forms of mlgate serve it (the .wasm and the native module).
pytestmark = pytest.mark.forms("wasm", "native")

INVALID = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."


@pytest.fixture(scope="module")
def env(azurite, azureml_sim, form):
    e = Envoy(portal_config(azureml_sim.port), azureml_sim.port, concurrency=2)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        # As root, Chromium needs --no-sandbox; executable_path: the system Chromium, never a download.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, form):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    problems = []
    # Any script error or CSP violation (an inline script or style would be one) fails the test.
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("response", lambda r: problems.append(f"{r.status} for {r.url}") if r.status == 404 else None)
    pg.problems = problems
    pg.form = form
    yield pg
    ctx.close()


def shot(pg, name: str):
    form = "" if pg.form == "wasm" else f"{pg.form}-"
    pg.screenshot(path=str(ARTIFACTS / f"{form}{name}.png"), full_page=True)


def test_try_it_and_my_subscription_in_chromium(env, page):
    url = f"http://127.0.0.1:{env.port}{PORTAL}/"
    page.goto(url)
    page.get_by_role("link", name="AzureML Demo API").wait_for()
    assert page.title() == "Contoso AzureML developer portal"
    shot(page, "01-apis")

    page.get_by_role("link", name="AzureML Demo API").click()
    page.locator("#operations").wait_for()
    assert page.locator("#openapi-link").get_attribute("href") == f"{PORTAL}/apis/azureml-demo/openapi.json"
    shot(page, "02-api")

    page.get_by_role("link", name="RRS Execute").click()
    page.locator("#parameters").wait_for()
    assert page.locator("#operation-name").inner_text() == "RRS Execute"
    assert page.locator("#request-url").inner_text() == (
        f"http://127.0.0.1:{env.port}/azureml-demo/workspaces/{{workspace}}/services/{{service}}/execute"
        "?api-version={apiversion}&details={details}")
    params = page.locator("#parameters tbody tr td:first-child").all_inner_texts()
    assert params == ["workspace", "service", "api-version", "details"]
    # mlgate's own answers are documented on the page, word for word.
    assert INVALID in page.locator(".response[data-status='401']").inner_text()
    assert "curl -X POST" in page.locator("#sample-code").inner_text()
    shot(page, "03-operation")

    page.locator("#try-it").click()
    page.locator("#try-panel").wait_for()
    assert "never the AzureML API key" in page.locator("#try-note").inner_text()
    # api-version is fixed and details defaults to true: the developer fills in the rest.
    assert page.locator("#try-param-api-version").input_value() == "2.0"
    assert page.locator("#try-param-api-version").get_attribute("readonly") is not None
    assert page.locator("#try-param-details").input_value() == "true"
    page.locator("#try-param-workspace").fill("ws1")
    page.locator("#try-param-service").fill("svc1")
    page.locator("#try-key").fill(ALICE)
    assert page.locator("#try-key").get_attribute("type") == "password"
    page.locator("#try-key-toggle").click()
    assert page.locator("#try-key").get_attribute("type") == "text"
    page.locator("#try-key-toggle").click()
    assert page.locator("#try-key").get_attribute("type") == "password"
    page.locator("#try-body").fill(json.dumps(RRS_BODY))
    shot(page, "04-try-it-filled")

    page.locator("#try-send").click()
    page.locator("#try-status").wait_for()
    assert page.locator("#try-status").inner_text() == "200"
    assert page.locator("#try-url").inner_text() == (
        f"http://127.0.0.1:{env.port}/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true")
    # The key is masked in what the page shows of the request.
    sent = page.locator("#try-request-headers").inner_text()
    assert "Ocp-Apim-Subscription-Key: \u2022" in sent and ALICE not in sent
    assert "ratelimit-remaining: 4" in page.locator("#try-response-headers").inner_text()
    assert page.locator("#try-time").inner_text().endswith(" ms")
    cells = page.locator("table.results tbody tr").first.locator("td").all_inner_texts()
    assert cells == ["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]
    assert '"Col2_HashingFeature.7"' in page.locator("#try-response-body").inner_text()
    page.locator("#try-result").scroll_into_view_if_needed()
    shot(page, "05-try-it-200")

    page.locator("#try-key").fill("not-alices-key")
    page.locator("#try-send").click()
    # (Not wait_for_function: the portal's CSP forbids the eval it needs, as it should.)
    expect(page.locator("#try-status")).to_have_text("401")
    body = json.loads(page.locator("#try-response-body").inner_text())
    assert body == {"statusCode": 401, "message": INVALID}
    page.locator("#try-result").scroll_into_view_if_needed()
    shot(page, "06-try-it-401")

    page.locator("#nav-subscription").click()
    page.locator("#sub-key").wait_for()
    page.locator("#sub-key").fill(ALICE)
    page.locator("#sub-show").click()
    page.locator("#sub-limits").wait_for()
    assert page.locator("#sub-id").inner_text() == "alice"
    assert page.locator("#sub-product").inner_text().startswith("Starter")
    assert page.locator("#sub-state").inner_text() == "active"
    rows = page.locator("#sub-limits tbody tr")
    assert rows.count() == 2
    by_limit = {}
    for i in range(rows.count()):
        tds = rows.nth(i).locator("td").all_inner_texts()
        by_limit[tds[1]] = tds
    rate = by_limit["rate limit: 5 calls per minute"]
    quota = by_limit["quota: 100 calls per week"]
    # The one call made in Try it (the 401 counted nowhere): used 1, left 4 and 99.
    assert (rate[2], rate[3]) == ("1", "4")
    assert (quota[2], quota[3]) == ("1", "99")
    shot(page, "07-my-subscription")

    page.locator("#sub-key").fill("not-alices-key")
    page.locator("#sub-show").click()
    page.locator("#sub-status").wait_for()
    assert page.locator("#sub-status").inner_text() == "401"
    assert page.locator("#sub-message").inner_text() == INVALID
    shot(page, "08-my-subscription-401")
    # fetch() of a 401 logs a console error in Chromium; nothing else may.
    others = [p for p in page.problems if "401" not in p]
    assert others == [], others


def test_hostile_names_stay_text_in_chromium(env, page):
    page.goto(f"http://127.0.0.1:{env.port}{PORTAL}/#/apis/azureml-demo")
    page.locator("#operations").wait_for()
    # The product named `<img src=x onerror=...>` shows as that text; no element, no script.
    assert HOSTILE in page.locator("main").inner_text()
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "09-hostile-name-as-text")
    assert page.problems == []
