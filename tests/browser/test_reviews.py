"""The review queue from the keyboard, in real Chromium: j/k to move, o to overrule
with a reason, a to accept."""

from __future__ import annotations

import pytest

from fleet.models import Finding, Task

from .conftest import screenshot
from .test_pages import demo_logins, log_in  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_reviewer_adjudicates_the_queue_with_the_keyboard(page, live_server, demo_logins):  # noqa: F811
    pending = Finding.objects.get(verdict=Finding.PENDING)  # the demo's T-3 finding
    false_alarm = Finding.objects.create(
        review=pending.review,
        path="shop/models.py",
        line_start=1,
        severity="minor",
        title="Unused import",
        body="json is imported but unused.",
    )
    log_in(page, live_server, "reviewer", demo_logins["reviewer"])
    page.goto(f"{live_server.url}/reviews/")
    assert page.locator("#review-queue .finding").count() == 2
    screenshot(page, "review-queue")

    # The queue is sorted by path then line: shop/models.py:1 (the false alarm) first.
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == f"finding-{false_alarm.pk}"
    page.keyboard.press("o")
    page.keyboard.type("json is used by the exporter in T-6")
    page.keyboard.press("Enter")
    page.locator(".messages", has_text="Overruled").wait_for()
    false_alarm.refresh_from_db()
    assert false_alarm.verdict == Finding.OVERRULED
    assert false_alarm.reason == "json is used by the exporter in T-6"

    # Back at the queue, the real bug is the one left waiting: accept it.
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == f"finding-{pending.pk}"
    page.keyboard.press("a")
    page.locator(".messages", has_text="Accepted").wait_for()
    pending.refresh_from_db()
    assert pending.verdict == Finding.ACCEPTED
    assert pending.review.task.status == Task.CHANGES_REQUESTED
    assert "Nothing waits for a verdict" in page.locator("#review-queue").inner_text()
    screenshot(page, "review-queue-done")
    assert page.js_errors == []
