"""The operator console in a real Chromium (Playwright) against the running stack:
login, a test order completing live, cancel, retry a parked compensation, replay a
dead letter, read-only keys, CSRF, bad input. Screenshots of each page go to
``SAGAFLOW_TEST_ARTIFACTS`` (default ``.test-artifacts/console``)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import principal_of
from bench.schemathesis_run import seed_dead_letter
from sagaflow.stack import Stack
from tests.e2e.conftest import KEY, READER, eventually, key_whose_order
from tests.e2e.test_api import place, product, saga_status
from tests.e2e.test_sagas_api import _outage_file, _parked_orders, _row

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("SAGAFLOW_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SAGAFLOW_TEST_ARTIFACTS", ".test-artifacts/console"))
LIVE_TIMEOUT_MS = 30_000

EXECUTABLE = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
if EXECUTABLE is None:
    pytest.skip(
        f"chromium not installed ({CHROMIUM} missing; apt-get install -y chromium)",
        allow_module_level=True,
    )

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright not installed")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module (the system's: Playwright downloads nothing)."""
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=EXECUTABLE,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _page(browser: Any, stack: Stack, key: str | None = KEY) -> Any:
    context = await browser.new_context(base_url=stack.api_url)
    page = await context.new_page()
    if key is not None:
        await page.goto("/console/login")
        await page.fill("#api_key", key)
        await page.click("button[type=submit]")
        await page.wait_for_url(re.compile(r".*/console$"))
    return page


async def _shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_a_wrong_key_shows_the_login_page_with_a_message_and_a_good_one_a_cookie(
    browser: Any, stack: Stack
) -> None:
    page = await _page(browser, stack, key=None)
    await page.goto("/console/inbox")
    assert "/console/login" in page.url
    await page.fill("#api_key", "not-a-key")
    async with page.expect_response(re.compile(r".*/console/login$")) as answer:
        await page.click("button[type=submit]")
    response = await answer.value
    assert response.status == 401
    assert "text/html" in response.headers["content-type"]
    assert "unknown API key" in await page.inner_text("#login-message")
    await _shot(page, "login-refused")
    await page.fill("#api_key", KEY)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r".*/console/inbox$"))
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "sagaflow_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert KEY not in cookie["value"]
    await page.context.close()


async def test_the_overview_shows_figures_and_charts(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    page = await _page(browser, stack)
    assert int(await page.inner_text("[data-figure=completed]")) >= 1
    assert await page.locator("svg.chart").count() >= 4
    assert "p50" in await page.inner_text("[data-figure=latency]")
    await _shot(page, "overview")
    await page.context.close()


async def test_a_test_order_placed_in_the_console_completes_live_on_its_page(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    sku = await product(http, stock=20)
    page = await _page(browser, stack)
    row = f"tr[data-sku='{sku}'] [data-col=available]"

    async def listed() -> bool:
        # The page reads the read model, which follows the store moments later.
        await page.goto("/console/products")
        return await page.locator(row).count() == 1

    await eventually(listed)
    assert await page.inner_text(row) == "20"
    await _shot(page, "products")
    customer = f"cust-{uuid.uuid4().hex[:6]}"
    await page.fill("input[name=customer_id]", customer)
    await page.fill("input[name=sku]", sku)
    await page.fill("input[name=quantity]", "3")
    # The stack declines half the payments: pick the form's key so this one is paid.
    await page.eval_on_selector(
        "input[name=idempotency_key]", "(e, v) => e.value = v", key_whose_order(declines=False)
    )
    await page.click("[data-action=place-order]")
    await page.wait_for_url(re.compile(r".*/console/sagas/[0-9a-f-]{36}$"))
    # A marker that a full reload would lose: the status must arrive live (SSE).
    await page.evaluate("window.__noReload = true")
    await page.wait_for_selector(
        "#saga-status[data-status=awaiting_shipment]", timeout=LIVE_TIMEOUT_MS
    )
    assert await page.evaluate("window.__noReload") is True
    assert "SagaCompleted" in await page.inner_text("#timeline")
    assert await page.get_attribute("#temporal-link", "href")
    await _shot(page, "saga-completed")
    await page.goto(f"/console/sagas?customer={customer}")
    assert await page.locator("tr[data-saga]").count() == 1
    await _shot(page, "sagas")
    await page.context.close()


async def test_invalid_order_input_is_shown_beside_the_field_and_writes_nothing(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    page = await _page(browser, stack)
    await page.goto("/console/products")
    customer = f"cust-{uuid.uuid4().hex[:6]}"
    await page.fill("input[name=customer_id]", customer)
    await page.fill("input[name=sku]", "NO-SUCH-SKU")
    await page.fill("input[name=quantity]", "many")
    await page.click("[data-action=place-order]")
    assert "whole number" in await page.inner_text("[data-error=quantity]")
    await page.fill("input[name=quantity]", "2")
    await page.click("[data-action=place-order]")
    assert "NO-SUCH-SKU" in await page.inner_text("[data-error=sku]")
    await _shot(page, "order-form-errors")
    listed = await http.get("/sagas", params={"key": f"CustomerId:{customer}"})
    assert listed.json()["items"] == []
    await page.goto("/console/sagas?customer=bad%20id")
    assert "letters, digits" in await page.inner_text("[data-error=customer]")
    await page.context.close()


async def test_cancel_from_the_console_compensates_and_logs_it(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    page = await _page(browser, stack)
    await page.goto(f"/console/sagas/{order_id}")
    await page.fill("input[name=reason]", "customer called")
    await page.click("[data-action=cancel]")
    await page.wait_for_selector("#saga-status[data-status=compensated]", timeout=LIVE_TIMEOUT_MS)
    log = await page.inner_text("#compensation-log")
    assert "SagaCompensated" in log and "customer called" in log
    await _shot(page, "saga-cancelled")
    await page.context.close()


async def test_a_parked_compensation_is_retried_from_the_inbox_and_the_action_recorded(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    try:
        [order_id] = await _parked_orders(http, stack, 1)
        await _row(http, order_id, "compensation_parked")
    finally:
        _outage_file(stack).unlink(missing_ok=True)
    page = await _page(browser, stack)
    await page.goto("/console/inbox")
    row = page.locator(f"tr[data-parked-saga='{order_id}']")
    await row.wait_for()
    await _shot(page, "inbox-parked")
    await row.locator("input[name=note]").fill("refunds are back")
    await row.locator("[data-action=retry]").click()
    assert "retry charge" in await page.inner_text(".flash.ok")
    await page.locator(f"tr[data-parked-saga='{order_id}']").wait_for(
        state="detached", timeout=LIVE_TIMEOUT_MS
    )
    actions = await page.inner_text("#actions")
    assert f"{order_id}/charge" in actions and principal_of(KEY) in actions
    assert "refunds are back" in actions
    assert (await _row(http, order_id, "compensated"))["status"] == "compensated"
    await page.context.close()


async def _dead_letter(stack: Stack, http: httpx.AsyncClient) -> int:
    """A dead letter of a real, already projected event (as a poison message leaves one)."""
    return await seed_dead_letter(
        http,
        stack.env["SAGAFLOW_DATABASE_URL"],
        stack.env["SAGAFLOW_PROJECTOR_GROUP"],
        idempotency_key=lambda: key_whose_order(False),
    )


async def test_a_dead_letter_is_replayed_from_the_inbox_and_the_action_recorded(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    dead_letter_id = await _dead_letter(stack, http)
    page = await _page(browser, stack)
    await page.goto("/console/inbox")
    row = page.locator(f"tr[data-dead-letter='{dead_letter_id}']")
    assert "seeded: poison" in await row.inner_text()
    await _shot(page, "inbox-dead-letter")
    await row.locator("[data-action=replay]").click()
    assert f"replay dead-letter {dead_letter_id}: replayed" in await page.inner_text(".flash.ok")
    assert await page.locator(f"tr[data-dead-letter='{dead_letter_id}']").count() == 0
    trail = await page.inner_text("#actions")
    assert f"dead-letter {dead_letter_id}" in trail and principal_of(KEY) in trail
    replayed = (await http.get("/dead-letters", params={"status": "replayed"})).json()
    assert dead_letter_id in {r["id"] for r in replayed}
    await page.context.close()


async def test_a_read_only_key_sees_no_action_buttons_and_gets_403_when_posting_anyway(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    page = await _page(browser, stack, key=READER)
    for path in ("/console/inbox", "/console/products", f"/console/sagas/{order_id}"):
        await page.goto(path)
        assert await page.locator("[data-action]").count() == 0, path
    await _shot(page, "read-only-saga")
    csrf = await page.get_attribute("input[name=csrf]", "value")  # the logout form's
    refused = await page.request.post(
        f"/console/sagas/{order_id}/cancel", form={"csrf": csrf, "reason": "sneaky"}
    )
    assert refused.status == 403 and "lacks the &#39;write&#39; scope" in await refused.text()
    ordered = await page.request.post(
        "/console/orders", form={"csrf": csrf, "customer_id": "c", "sku": sku, "quantity": "1"}
    )
    assert ordered.status == 403
    assert (await http.get(f"/orders/{order_id}/saga")).json()["status"] == "awaiting_shipment"
    await page.context.close()


async def test_a_forged_post_without_the_csrf_token_is_403_and_does_nothing(
    browser: Any, stack: Stack, http: httpx.AsyncClient
) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    page = await _page(browser, stack)
    for form in ({"reason": "forged"}, {"reason": "forged", "csrf": "guessed"}):
        forged = await page.request.post(f"/console/sagas/{order_id}/cancel", form=form)
        assert forged.status == 403 and "CSRF" in await forged.text()
    assert (await http.get(f"/orders/{order_id}/saga")).json()["status"] == "awaiting_shipment"
    await page.context.close()


async def test_an_expired_or_missing_session_leads_to_the_login_page_not_json(
    browser: Any, stack: Stack
) -> None:
    page = await _page(browser, stack, key=None)
    await page.context.add_cookies(
        [{"name": "sagaflow_console", "value": "stale", "url": stack.api_url + "/console"}]
    )
    response = await page.goto("/console/sagas")
    assert "/console/login" in page.url and "text/html" in response.headers["content-type"]
    await page.context.close()
