"""Pages people wait on, live in real Chromium against daphne: the review queue
fills when a fresh reviewer posts findings, the agents page follows heartbeats and
stops, and a person who opted in gets a browser notification when something newly
needs them in their role (the Notification API is spied on; the server is real)."""

from __future__ import annotations

import time

import pytest

from fleet.models import Agent, Finding, Review, Task

from ..agent.conftest import Server, free_port
from ..conftest import make_agent, make_task, make_user
from .conftest import screenshot
from .test_live import login, post_heartbeat, post_json

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Records every notification the page shows (and still shows it, as the real one).
SPY = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  function Spy(title, options) {
    window.__notes.push({ title, body: (options || {}).body, tag: (options || {}).tag });
    try { return new Real(title, options); } catch (err) { return {}; }
  }
  Spy.requestPermission = (...args) => Real.requestPermission(...args);
  Object.defineProperty(Spy, "permission", { get: () => Real.permission });
  window.Notification = Spy;
})();
"""


@pytest.fixture
def server(tmp_path):
    running = Server(free_port(), tmp_path / "live").start()
    yield running
    running.stop()


def open_page(browser, base: str, spy: bool = False):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    if spy:
        context.grant_permissions(["notifications"], origin=base)
        context.add_init_script(SPY)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    return context, page


def wait_js(page, expression: str, timeout: float = 10) -> None:
    """Until the expression is true in the page. (Page.wait_for_function evaluates a
    string inside the page, which Fleet's Content-Security-Policy refuses: no eval.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {expression}"
        page.wait_for_timeout(100)


def a_review_for(reviewer: Agent) -> Review:
    builder = make_agent(name="bea")
    task = make_task(key="T-31", title="Add tax", status=Task.IN_REVIEW, assignee=builder)
    task.head_sha = "ab" * 20
    task.save(update_fields=["head_sha"])
    return Review.objects.create(
        task=task, commit_sha=task.head_sha, reviewer=reviewer, status=Review.OPEN
    )


def test_the_review_queue_fills_live_and_a_reviewer_who_opted_in_is_notified(browser, server):
    make_user("rita", "reviewer", password="pw-rita-123")
    rex = make_agent(Agent.REVIEWER, name="rex")
    token = rex.issue_token()
    review = a_review_for(rex)
    base = f"http://127.0.0.1:{server.port}"
    context, page = open_page(browser, base, spy=True)
    try:
        login(page, base, "rita", "pw-rita-123")
        page.goto(f"{base}/reviews/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        assert "Nothing waits for a verdict" in page.inner_text("#review-queue")
        optin = page.locator("#attention-optin")
        assert optin.inner_text() == "Notify me"
        optin.click()
        page.locator("#attention-optin", has_text="Notifications on").wait_for(timeout=5_000)
        finding = {
            "path": "shop/tax.py",
            "line_start": 3,
            "severity": "major",
            "title": "Tax rounds the wrong way",
            "body": "0.5 cents round down.",
        }
        post_json(base, token, f"/api/v1/reviews/{review.pk}/findings", {"findings": [finding]})
        page.locator("#review-queue", has_text="Tax rounds the wrong way").wait_for(timeout=10_000)
        # The verdict buttons are there for a reviewer, and the keyboard still works.
        assert page.locator("#review-queue form.accept button").is_visible()
        page.keyboard.press("j")
        assert page.evaluate("document.activeElement.classList.contains('finding')")
        wait_js(page, "window.__notes.length > 0")
        notes = page.evaluate("window.__notes")
        assert notes == [
            {
                "title": "T-31: 1 finding waits for a verdict",
                "body": "Add tax (from rex)",
                "tag": notes[0]["tag"],
            }
        ]
        screenshot(page, "reviews-live")
        # The choice is remembered in this browser.
        page.reload()
        assert page.locator("#attention-optin").inner_text() == "Notifications on"
        assert page.js_errors == []
    finally:
        context.close()


def test_a_person_who_did_not_opt_in_gets_no_notification(browser, server):
    make_user("rita", "reviewer", password="pw-rita-123")
    rex = make_agent(Agent.REVIEWER, name="rex")
    token = rex.issue_token()
    review = a_review_for(rex)
    base = f"http://127.0.0.1:{server.port}"
    context, page = open_page(browser, base, spy=True)
    try:
        login(page, base, "rita", "pw-rita-123")
        page.goto(f"{base}/reviews/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        finding = {"path": "shop/tax.py", "severity": "minor", "title": "Name the rate"}
        post_json(base, token, f"/api/v1/reviews/{review.pk}/findings", {"findings": [finding]})
        page.locator("#review-queue", has_text="Name the rate").wait_for(timeout=10_000)
        page.wait_for_timeout(500)  # the attention frame comes in the same tick
        assert page.evaluate("window.__notes") == []
    finally:
        context.close()


def test_the_agents_page_follows_heartbeats_and_stops_live(browser, server):
    make_user("mia", "manager", password="pw-mia-123")
    ada = make_agent(name="ada", status_line="booting")
    token = ada.issue_token()
    base = f"http://127.0.0.1:{server.port}"
    context, page = open_page(browser, base, spy=True)
    try:
        login(page, base, "mia", "pw-mia-123")
        page.goto(f"{base}/agents/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        page.click("#attention-optin")
        page.locator("#attention-optin", has_text="Notifications on").wait_for(timeout=5_000)
        row = page.locator(f"#agent-row-{ada.pk}")
        assert "booting" in row.inner_text()
        assert not row.locator("form.lead-only").is_visible()  # a manager does not revoke
        post_heartbeat(base, token, "writing the cart tests")
        row.locator(".status-line", has_text="writing the cart tests").wait_for(timeout=10_000)
        # A change of state: the agent is stopped at its budget.
        ada.stop(reason="budget")
        row.locator(".badge", has_text="stopped").wait_for(timeout=10_000)
        assert "budget" in row.inner_text()
        wait_js(page, "window.__notes.length > 0")
        assert page.evaluate("window.__notes[0].title") == "ada was stopped at its budget"
        screenshot(page, "agents-live")
        assert page.js_errors == []
    finally:
        context.close()


def test_a_reason_being_typed_survives_a_live_update_of_the_queue(browser, server):
    make_user("rita", "reviewer", password="pw-rita-123")
    rex = make_agent(Agent.REVIEWER, name="rex")
    review = a_review_for(rex)
    first = Finding.objects.create(
        review=review, path="shop/tax.py", severity="major", title="Rounds the wrong way"
    )
    Review.objects.filter(pk=review.pk).update(status=Review.CLOSED)
    # A second task's review, still open: its findings arrive while rita types.
    sam = make_agent(Agent.REVIEWER, name="sam")
    token = sam.issue_token()
    other = make_task(key="T-32", title="Cart totals", status=Task.IN_REVIEW)
    later = Review.objects.create(task=other, commit_sha="cd" * 20, reviewer=sam)
    base = f"http://127.0.0.1:{server.port}"
    context, page = open_page(browser, base)
    try:
        login(page, base, "rita", "pw-rita-123")
        page.goto(f"{base}/reviews/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        reason = page.locator(f"#reason-{first.pk}")
        reason.click()
        reason.type("rounding is half-even on")
        finding = {"path": "shop/cart.py", "severity": "minor", "title": "Totals skip discounts"}
        post_json(base, token, f"/api/v1/reviews/{later.pk}/findings", {"findings": [finding]})
        page.locator("#review-queue", has_text="Totals skip discounts").wait_for(timeout=10_000)
        assert reason.input_value() == "rounding is half-even on"
        assert page.evaluate("document.activeElement.id") == f"reason-{first.pk}"
        reason.type(" purpose")
        assert reason.input_value() == "rounding is half-even on purpose"
    finally:
        context.close()
