"""The console in a real headless Chromium against a real deployment (issue 8's browser tests).

One browser and one logged-in browser context serve the whole module; the deployment is the
session's SQLite one (gunicorn, a Celery worker, beat, the fake tracker, the app receiver).
Each test drives the pages as an operator would — links, buttons, forms — and checks the
effect both on the page and through the JSON API. A screenshot of every page goes to
``var/screenshots/<page>.png`` (a test artefact; ``docs/console-endpoints.png`` is a copy of
the Endpoints one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
import yaml

from tests.support.browser import chromium, expect, screenshot
from tests.support.deployment import Deployment
from tests.support.notifications import notified
from tests.support.paths import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = [
    pytest.mark.e2e,
    # The console reads the database only through the owners' listing functions, which the
    # integration tier runs on both databases; one real browser run is enough here.
    pytest.mark.parametrize("deployment", ["sqlite"], indirect=True),
]

#: How long the page may take to show what a worker did (a run, a delivery).
SHOWN_WITHIN = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def console(browser: Browser, connected: Deployment) -> Iterator[Page]:
    """One page, logged in with the API key, for every test of the module."""
    context = browser.new_context(base_url=connected.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/ui/login")
    page.fill("#api_key", connected.api_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/**")
    assert "/ui/login" not in page.url
    yield page
    context.close()


def reload_until(page: Page, check: Callable[[], bool], what: str) -> None:
    """Reload ``page`` until ``check()`` holds; fail naming ``what`` after SHOWN_WITHIN."""
    deadline = time.monotonic() + SHOWN_WITHIN
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not shown within {SHOWN_WITHIN:.0f}s ({page.url})")
        time.sleep(0.3)
        page.reload()


def sync_status(deployment: Deployment) -> str:
    response = requests.get(
        f"{deployment.url}/sync/status",
        params={"provider_config_key": "tasktracker", "syncs": "tasks", "connection_id": "acme"},
        headers=deployment.auth(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    (status,) = response.json()["syncs"]
    return str(status["status"])


def events(deployment: Deployment, **params: Any) -> list[dict[str, Any]]:
    """``GET /webhooks/events``: the received events, newest first."""
    response = requests.get(
        f"{deployment.url}/webhooks/events", params=params, headers=deployment.auth(), timeout=10
    )
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def failed_notification_id(deployment: Deployment, webhook_id: str) -> int:
    """The id of the notification ``webhook_id`` once ``GET /notifications`` shows it failed."""
    deadline = time.monotonic() + SHOWN_WITHIN
    while True:
        response = requests.get(
            f"{deployment.url}/notifications",
            params={"state": "failed", "connection_id": "acme"},
            headers=deployment.auth(),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        found = [
            item["id"]
            for item in response.json()["notifications"]
            if item["webhook_id"] == webhook_id
        ]
        if found:
            return int(found[0])
        assert time.monotonic() < deadline, f"{webhook_id} not failed within {SHOWN_WITHIN}s"
        time.sleep(0.2)


def webhook_subscriptions() -> list[str]:
    """The example integration's webhook subscriptions, as its nango.yaml declares them."""
    config = yaml.safe_load((REPO / "integrations" / "nango.yaml").read_text())
    syncs: dict[str, Any] = config["integrations"]["tasktracker"]["syncs"]
    names = [name for sync in syncs.values() for name in sync.get("webhook-subscriptions", [])]
    assert names, "the example integration declares no webhook subscription"
    return names


def text_of(locator: Locator) -> str:
    return " ".join(locator.inner_text().split())


# --- log in ---------------------------------------------------------------------------------


def test_log_in_refuses_a_wrong_key_and_the_right_key_opens_the_console(
    browser: Browser, connected: Deployment
) -> None:
    context = browser.new_context(base_url=connected.url)
    try:
        page = context.new_page()
        page.goto("/ui/webhooks")
        assert "/ui/login" in page.url  # the console needs a session

        page.fill("#api_key", "not-the-key")
        with page.expect_response(lambda r: r.request.method == "POST") as refused:
            page.click("button[type=submit]")
        assert refused.value.status == 401
        expect(page.locator("main")).to_contain_text("Wrong API key")
        assert page.locator("header nav").count() == 0
        screenshot(page, "login")

        page.fill("#api_key", connected.api_key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/webhooks")  # back where the operator was going
        assert page.locator("header nav a", has_text="Webhooks").count() == 1
        assert connected.api_key not in page.content()
    finally:
        context.close()


# --- Integrations › tasktracker › Endpoints ---------------------------------------------------


def test_endpoints_tab_shows_the_webhook_subscriptions(console: Page) -> None:
    console.goto("/ui/integrations")
    screenshot(console, "integrations")
    console.locator("main").get_by_role("link", name="tasktracker", exact=True).first.click()
    screenshot(console, "integration")
    console.locator("nav.tabs").get_by_role("link", name="Endpoints").click()
    assert console.locator("nav.tabs a.current").inner_text() == "Endpoints"

    sync = console.locator("section#sync-tasks")
    assert "Task" in text_of(sync.locator("dl.facts"))
    shown = [text_of(item) for item in sync.locator("dd.subscriptions code").all()]
    assert shown == webhook_subscriptions()
    assert "polling only" not in text_of(sync)
    screenshot(console, "integration-endpoints")


# --- Connections: pause and start -------------------------------------------------------------


def test_pause_and_start_a_sync_from_the_connections_page(
    console: Page, connected: Deployment
) -> None:
    console.goto("/ui/connections")
    row = console.locator("main tr").filter(
        has=console.get_by_role("link", name="acme", exact=True)
    )
    assert "tasks" in text_of(row)
    screenshot(console, "connections")
    row.get_by_role("link", name="acme", exact=True).click()
    sync = console.locator("tr#sync-tasks")
    state = sync.locator(".badge.state")
    assert state.inner_text() != "paused"
    assert sync_status(connected) != "PAUSED"

    sync.get_by_role("button", name="Pause").click()
    expect(console.locator(".flashes")).to_contain_text("Paused tasks")
    expect(state).to_have_text("paused")
    assert sync_status(connected) == "PAUSED"
    screenshot(console, "connection-paused")

    sync.get_by_role("button", name="Start").click()
    expect(console.locator(".flashes")).to_contain_text("Started tasks")
    expect(state).not_to_have_text("paused")
    assert sync_status(connected) != "PAUSED"
    screenshot(console, "connection")


# --- Webhooks: a signed webhook, its outcome, a replay ----------------------------------------


def test_a_signed_webhook_shows_its_outcome_and_is_replayed_from_the_page(
    console: Page, connected: Deployment
) -> None:
    mark = connected.receiver.mark()
    connected.tracker.update_task("T-2", status="review", notify=False)
    sent = connected.tracker.send_webhook("task.updated", "T-2")
    assert sent.status == 202
    connected.receiver.wait_for(notified("WEBHOOK", updated=1), after=mark)

    console.goto("/ui/webhooks?integration=tasktracker&since=1h")
    row = console.locator(f'tr[data-delivery-id="{sent.delivery_id}"]')
    reload_until(console, lambda: "processed" in text_of(row), "the event processed")
    outcome = text_of(row.locator("td.outcome"))
    assert "acme › tasks" in outcome and "success" in outcome and "Task +0 ~1 -0" in outcome
    assert console.locator("section.charts figure svg").count() == 2
    screenshot(console, "webhooks")

    row.get_by_role("link").first.click()
    assert sent.delivery_id in text_of(console.locator("dl.facts"))
    assert '"task_id": "T-2"' in console.locator("pre.body").inner_text()
    assert console.locator("tr[data-run-id]").count() == 1
    screenshot(console, "webhook-event")

    console.get_by_role("button", name="Replay").click()
    expect(console.locator(".flashes")).to_contain_text("Replayed: 1 run queued")
    runs = console.locator("tr[data-run-id]")
    reload_until(
        console,
        lambda: runs.count() == 2 and runs.nth(1).locator(".badge.success").count() == 1,
        "the replay's run succeeded",
    )
    (event,) = [item for item in events(connected) if item["delivery_id"] == sent.delivery_id]
    assert event["runs_count"] == 2


# --- Notifications: a failed delivery, retried -----------------------------------------------


def test_a_failed_notification_is_retried_from_the_page_and_delivered(
    console: Page, connected: Deployment
) -> None:
    receiver = connected.receiver
    mark = receiver.mark()
    receiver.status = 400  # a 4xx other than 408/429 fails a delivery at once (no retry)
    try:
        connected.tracker.update_task("T-3", status="blocked", notify=False)
        assert connected.tracker.send_webhook("task.updated", "T-3").status == 202
        refused = receiver.wait_for(notified("WEBHOOK", updated=1), after=mark)
        webhook_id = refused.headers["webhook-id"]
        # Answer 400 until hooksync has recorded it: the answer is read after the receiver
        # queued the request, so restoring 200 at once could race with it.
        notification_id = failed_notification_id(connected, webhook_id)
    finally:
        receiver.status = 200

    console.goto("/ui/notifications?state=failed&connection=acme&since=1h")
    row = console.locator(f'tr[data-notification-id="{notification_id}"]')
    assert "failed" in text_of(row) and "HTTP 400" in text_of(row)
    screenshot(console, "notifications")

    row.get_by_role("link").first.click()
    assert webhook_id in text_of(console.locator("dl.facts"))
    attempts = console.locator("table.attempts tbody tr")
    assert attempts.count() == 1 and "400" in text_of(attempts.first)

    again = receiver.mark()
    console.get_by_role("button", name="Retry").click()
    expect(console.locator(".flashes")).to_contain_text("queued for delivery again")
    delivered = receiver.wait_for(notified("WEBHOOK", updated=1), after=again)
    assert delivered.headers["webhook-id"] == webhook_id  # the same message, sent again
    reload_until(console, lambda: console.locator("h1 .badge.delivered").count() == 1, "delivered")
    assert "200" in text_of(attempts.last)
    screenshot(console, "notification")


# --- CSRF ----------------------------------------------------------------------------------


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(
    console: Page, connected: Deployment
) -> None:
    console.goto("/ui/connections")
    console.locator("main").get_by_role("link", name="acme", exact=True).click()
    pause = console.locator("tr#sync-tasks form", has=console.get_by_role("button", name="Pause"))
    pause.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    with console.expect_response(lambda response: response.request.method == "POST") as answer:
        pause.get_by_role("button", name="Pause").click()
    assert answer.value.status == 403
    expect(console.locator("main h1")).to_have_text("Form expired or forged")
    assert sync_status(connected) != "PAUSED"

    # A replay posted by a script without the token, as a forged cross-site form would be.
    (event,) = events(connected, limit=1)
    console.goto(f"/ui/webhooks/{event['id']}")
    status = console.evaluate(
        "async (url) => (await fetch(url, {method: 'POST', body: new URLSearchParams()})).status",
        f"/ui/webhooks/{event['id']}/replay",
    )
    assert status == 403
    (after,) = events(connected, limit=1)
    assert after["id"] == event["id"] and after["runs_count"] == event["runs_count"]


# --- Settings --------------------------------------------------------------------------------


def test_settings_show_the_signing_secret_to_copy(console: Page, connected: Deployment) -> None:
    response = requests.get(
        f"{connected.url}/webhooks/signing-secret", headers=connected.auth(), timeout=10
    )
    assert response.status_code == 200, response.text
    secret = response.json()["standard_webhooks_secret"]
    assert secret.startswith("whsec_")

    console.goto("/ui/settings")
    assert console.locator("code#whsec-1").inner_text() == secret
    assert "/hooks/hooksync" in text_of(console.locator("ul.app-urls"))
    screenshot(console, "settings")
