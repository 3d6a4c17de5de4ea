"""The task page's stale-base gate and the repositories page, in real Chromium."""

from __future__ import annotations

import pytest

from ..conftest import make_user
from ..git.conftest import near_miss
from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lead_sees_the_stale_base_report_rebases_and_sees_worktrees(
    page, live_server, tmp_path, data_dir
):
    near_miss(tmp_path, data_dir)
    make_user("lena", "lead", password="pw-lena-123")
    page.goto(f"{live_server.url}/tasks/T-2/")
    page.fill("#id_username", "lena")
    page.fill("#id_password", "pw-lena-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/tasks/T-2/")

    gate = page.locator("#stale-base")
    assert "failing" in gate.inner_text() and "def discount(total, code):" in gate.inner_text()
    assert gate.locator("a", has_text="T-1").count() == 1
    assert page.locator("#changed-files .badge.warn").inner_text() == "outside"
    screenshot(page, "task-stale-base")

    page.click("text=Rebase onto fresh main now")
    page.wait_for_url(f"{live_server.url}/tasks/T-2/")
    assert "Rebased feat/T-2" in page.locator(".messages").inner_text()
    assert "passing" in page.locator("#stale-base").inner_text()
    screenshot(page, "task-rebased")

    page.click("nav >> text=Repositories")
    page.wait_for_url(f"{live_server.url}/repositories/")
    assert page.locator("#repository-shop tbody tr").count() == 1
    assert page.js_errors == []
    screenshot(page, "repositories")
