"""The task page's review workspace in real Chromium: a lead comments on a range and
requests changes, the builder gets them (inbox and boot), the resubmit shows the
comment outdated live, the lead resolves it and merges; a reviewer works a task from
the keyboard; split view and viewed marks persist across reloads."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from fleet.agent import ops
from fleet.models import CheckRun, Event, Finding, MergeRequest, ReviewComment, Task

from ..agent.conftest import Server, free_port
from ..conftest import make_repository, make_user
from ..git.conftest import commit, shop  # noqa: F401 (a fixture)
from ..git.test_gates import green_task
from .conftest import screenshot
from .test_live import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TAX = "RATE = 0.2\n\n\ndef tax(total):\n    return total * RATE\n"


def call(base: str, token: str, path: str, body: dict | None = None) -> dict:
    """The agent API as the builder calls it (GET, or POST with a JSON body)."""
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def task_with_code(shop, key="T-1") -> Task:  # noqa: F811
    """A green task in review whose shop/tax.py has a few lines to comment on."""
    repository = make_repository(path=str(shop["clone"]), slug="shop", check_command="true")
    task = green_task(repository, shop, key=key)
    head = commit(Path(task.worktree_path), {"shop/tax.py": TAX}, f"{key}: tax function")
    Task.objects.filter(pk=task.pk).update(head_sha=head)
    task.reviews.update(commit_sha=head)
    task.checks.update(commit_sha=head)
    task.refresh_from_db()
    return task


def line_number(page, path: str, n: int, side: str = "new"):
    return page.locator(f'table[data-path="{path}"] td.num[data-side="{side}"][data-line="{n}"]')


def test_a_lead_comments_on_a_range_requests_changes_resolves_and_merges(
    page,
    tmp_path,
    shop,  # noqa: F811
):
    make_user("lena", "lead", password="pw-lena-123")
    task = task_with_code(shop)
    builder = task.assignee
    token = builder.issue_token()
    server = Server(free_port(), tmp_path / "live").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        login(page, base)
        page.goto(f"{base}/tasks/{task.key}/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        # Lines carry their numbers and are highlighted by the file's language.
        assert page.locator(
            'table[data-path="shop/tax.py"] .kd, table[data-path="shop/tax.py"] .k'
        ).count()

        # Click line 4, shift-click line 5: a comment on the range.
        line_number(page, "shop/tax.py", 4).click()
        line_number(page, "shop/tax.py", 5).click(modifiers=["Shift"])
        form = page.locator("tr.comment-row form")
        assert "shop/tax.py:4–5" in form.inner_text()
        form.locator("textarea").fill("Round to cents: money is not a float.")
        screenshot(page, "workspace-comment-form")
        form.locator("button[type=submit]").click()
        page.locator(".messages", has_text="Draft comment on shop/tax.py:4-5").wait_for()
        assert page.locator("#your-review .draft").count() == 1
        assert page.locator("#request-changes-head button").inner_text() == "Request changes (1)"
        screenshot(page, "workspace-draft")

        page.click("#request-changes button")
        page.locator(".messages", has_text="went back to its builder").wait_for()
        task.refresh_from_db()
        assert task.status == Task.CHANGES_REQUESTED
        sent = ReviewComment.objects.get()
        assert (sent.line_start, sent.line_end, sent.state) == (4, 5, ReviewComment.SENT)

        # The builder's inbox has it; it takes the task back, and its next boot has it.
        (message,) = call(base, token, "/api/v1/inbox")
        assert "shop/tax.py:4-5 (new)\nRound to cents" in message["body"]
        work = call(base, token, "/api/v1/work/next", {})
        assert work["task"]["key"] == task.key
        summary = ops.summary(call(base, token, "/api/v1/boot"))
        assert "Review comments to address:\n- shop/tax.py:4-5: Round to cents" in summary
        # The thread sits under line 5, and the review gate waits for it.
        page.locator(f"tr.thread-row #comment-{sent.pk}").wait_for()
        assert page.locator('[data-gate="review"].gate-red', has_text="review comment").count()

        # The builder fixes it and resubmits: the comment turns outdated, live.
        fixed = commit(
            Path(task.worktree_path),
            {"shop/tax.py": TAX.replace("total * RATE", "round(total * RATE, 2)")},
            "T-1: round",
        )
        epoch = work["task"]["lease_epoch"]
        call(base, token, f"/api/v1/tasks/{task.key}/submit", {"commit": fixed, "epoch": epoch})
        thread = page.locator(f"#thread-comment-{sent.pk}.outdated")
        thread.wait_for(timeout=10_000)
        assert "return total * RATE" in thread.locator("pre.snippet").inner_text()
        assert page.locator("#files .stale-diff").is_visible()  # the diff is of the old one
        screenshot(page, "workspace-outdated")

        CheckRun.objects.create(  # CI passes on the new commit
            repository=task.repository, task=task, name="unit", commit_sha=fixed, status="passed"
        )
        thread.locator("button", has_text="Resolve").click()
        page.locator(".messages", has_text="is resolved in").wait_for()
        page.locator('[data-gate="review"].gate-green').wait_for(timeout=10_000)
        page.set_viewport_size({"width": 1920, "height": 1080})
        screenshot(page, "workspace-1920")
        page.set_viewport_size({"width": 1280, "height": 900})
        screenshot(page, "workspace-1280")
        page.click("#merge-form button")
        page.locator(".messages", has_text="queued for merging").wait_for()
        assert MergeRequest.objects.filter(task=task).exists()
        assert page.js_errors == []
    finally:
        server.stop()


def test_a_reviewer_works_a_whole_task_from_the_keyboard(page, live_server, shop):  # noqa: F811
    make_user("rita", "reviewer", password="pw-rita-123")
    task = task_with_code(shop)
    review = task.reviews.get()
    real = Finding.objects.create(
        review=review, path="shop/tax.py", line_start=5, severity="major", title="Float money"
    )
    noise = Finding.objects.create(
        review=review, path="CHANGELOG.md", line_start=1, severity="info", title="Capitalise"
    )
    login(page, live_server.url, "rita", "pw-rita-123")
    page.goto(f"{live_server.url}/tasks/{task.key}/")

    page.keyboard.press("j")  # first file
    assert page.evaluate("document.activeElement.dataset.path") == "CHANGELOG.md"
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.path") == "shop/tax.py"
    page.keyboard.press("k")
    assert page.evaluate("document.activeElement.dataset.path") == "CHANGELOG.md"

    page.keyboard.press("n")  # threads in the diff's order: the changelog's first
    assert page.evaluate("document.activeElement.id") == f"finding-{noise.pk}"
    page.keyboard.press("o")
    page.keyboard.type("style, not a bug")
    page.keyboard.press("Enter")
    page.locator(".messages", has_text="Overruled").wait_for()
    # Back at the finding just decided: n goes on to the next one.
    assert page.evaluate("document.activeElement.id") == f"finding-{noise.pk}"
    page.keyboard.press("n")
    assert page.evaluate("document.activeElement.id") == f"finding-{real.pk}"
    page.keyboard.press("a")
    page.locator(".messages", has_text="Accepted").wait_for()
    real.refresh_from_db()
    noise.refresh_from_db()
    assert (real.verdict, noise.verdict) == (Finding.ACCEPTED, Finding.OVERRULED)
    assert noise.reason == "style, not a bug"
    assert page.js_errors == []


def test_split_view_and_viewed_marks_persist_and_a_changed_file_resets(
    page,
    live_server,
    shop,  # noqa: F811
):
    make_user("lena", "lead", password="pw-lena-123")
    task = task_with_code(shop)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/tasks/{task.key}/")
    page.click("#toggle-split")
    page.wait_for_selector("table.diff-table.split")
    page.reload()
    assert page.locator("table.diff-table.split").count() == 2
    # old and new side by side: line 1 of the new file sits in the right half
    assert line_number(page, "shop/tax.py", 1).count() == 1

    tax = page.locator('.diff-file[data-path="shop/tax.py"]')
    tax.locator(".viewed-toggle").click()
    page.wait_for_selector('.diff-file.viewed[data-path="shop/tax.py"]')
    assert page.locator("#viewed-count").inner_text() == "1"
    page.reload()
    assert tax.get_attribute("class").split() == ["diff-file", "viewed"]
    assert tax.locator("details").get_attribute("open") is None
    screenshot(page, "workspace-split-viewed")

    # The builder changes the file: the mark no longer holds.
    head = commit(Path(task.worktree_path), {"shop/tax.py": TAX + "# more\n"}, "T-1: more")
    Task.objects.filter(pk=task.pk).update(head_sha=head)
    page.reload()
    assert "viewed" not in tax.get_attribute("class").split()
    assert page.js_errors == []


def test_a_large_file_loads_when_opened(page, live_server, shop):  # noqa: F811
    make_user("lena", "lead", password="pw-lena-123")
    task = task_with_code(shop)
    big = "".join(f"line_{n} = {n}\n" for n in range(600))
    head = commit(Path(task.worktree_path), {"shop/big.py": big}, "T-1: big")
    Task.objects.filter(pk=task.pk).update(head_sha=head)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/tasks/{task.key}/")
    file = page.locator('.diff-file[data-path="shop/big.py"]')
    assert file.locator("tr.ln").count() == 0
    file.locator(".deferred a").click()
    file.locator("tr.ln").nth(599).wait_for()
    assert line_number(page, "shop/big.py", 600).count() == 1
    assert page.js_errors == []


def test_a_live_update_keeps_a_reason_being_typed_in_a_placed_thread(
    page,
    tmp_path,
    shop,  # noqa: F811
):
    """Threads in the diff sit outside the live region: a live frame replaces them with
    fresh copies, and the reason typed so far and the focus move across."""
    make_user("lena", "lead", password="pw-lena-123")
    task = task_with_code(shop)
    review = task.reviews.get()
    finding = Finding.objects.create(
        review=review, path="shop/tax.py", line_start=5, severity="major", title="Float money"
    )
    server = Server(free_port(), tmp_path / "live").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        login(page, base)
        page.goto(f"{base}/tasks/{task.key}/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        placed = page.locator(f"#files tr.thread-row #thread-finding-{finding.pk}")
        placed.wait_for()
        placed.evaluate("el => { el.dataset.before = '1'; }")  # the copy the page loaded
        reason = page.locator(f"#reason-{finding.pk}")
        reason.click()
        reason.type("one region, flat rate")

        # Something happens on the task: a second finding, and the threads go live.
        other = Finding.objects.create(
            review=review, path="CHANGELOG.md", line_start=1, severity="info", title="Tense"
        )
        Event.objects.record(
            "review.findings", task_id=task.pk, payload={"review": review.pk, "findings": 2}
        )
        page.locator(f"#thread-finding-{other.pk}").wait_for(timeout=10_000)
        fresh = page.locator(f"#files tr.thread-row #thread-finding-{finding.pk}")
        fresh.wait_for()
        assert fresh.get_attribute("data-before") is None  # a fresh copy, placed again
        assert page.locator(f"#thread-finding-{finding.pk}").count() == 1
        assert reason.input_value() == "one region, flat rate"
        assert page.evaluate("document.activeElement.id") == f"reason-{finding.pk}"
        page.keyboard.type(" (EU only)")  # typing goes on where it was
        assert reason.input_value() == "one region, flat rate (EU only)"
        screenshot(page, "workspace-live-keeps-reason")
        assert page.js_errors == []
    finally:
        server.stop()
