"""The planner in real Chromium: a shared file found at planning time, sequenced into
the next wave, and wave 1 approved with the isolation announcement read out."""

from __future__ import annotations

import pytest

from fleet.git import repo as gitrepo
from fleet.models import Event, Task, Wave

from ..conftest import make_repository, make_user
from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def add_task(page, key, title, paths):
    form = page.locator("#add-task")
    form.locator("#id_key").fill(key)
    form.locator("#id_title").fill(title)
    form.locator("#id_repository").select_option("web")
    form.locator("#id_spec").fill("Requirements: ...\nAcceptance: ...")
    form.locator("#id_declared_paths").fill("\n".join(paths))
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert f"{key} added to wave 1" in page.locator(".messages").inner_text()


def test_a_lead_sequences_a_shared_file_and_approves_wave_1(page, live_server, tmp_path, data_dir):
    clone = tmp_path / "clone"
    gitrepo.create_with_origin(
        origin=tmp_path / "origin.git",
        clone=clone,
        files={"config/settings.py": "DEBUG = False\n", "web/views.py": "", "docs/a.md": ""},
        message="initial",
    )
    make_repository(path=str(clone), slug="web", name="Web")
    make_user("lena", "lead", password="pw-lena-123")
    page.goto(f"{live_server.url}/plans/")
    page.fill("#id_username", "lena")
    page.fill("#id_password", "pw-lena-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/plans/")

    page.fill("#id_name", "Launch")
    page.fill("#id_slug", "launch")
    page.click("#new-plan button[type=submit]")
    page.wait_for_url(f"{live_server.url}/plans/launch/")
    page.click("text=Wave 1: Foundation")
    page.wait_for_url(f"{live_server.url}/plans/launch/waves/1/")

    add_task(page, "T-1", "Settings for payments", ["config/settings.py", "web/payments.py"])
    add_task(page, "T-2", "Feature flags", ["config/*.py"])
    add_task(page, "T-3", "Docs", ["docs/**"])

    row = page.locator("table.matrix tbody tr")
    assert row.count() == 1
    assert "config/settings.py" in row.inner_text() and "unresolved" in row.inner_text()
    assert "has no strategy yet" in page.locator("#check-shared").inner_text()
    assert page.locator("#announcement").count() == 1
    screenshot(page, "wave-conflict")

    row.locator("button", has_text="Sequence: keep T-1").click()
    page.wait_for_load_state()
    assert "moved T-2 to wave 2" in page.locator(".messages").inner_text()
    assert Task.objects.get(key="T-2").wave.number == 2

    page.fill("#id_limit_usd", "30")
    page.click("#budget button[type=submit]")
    page.wait_for_load_state()
    checks = page.locator("#preflight .check-red")
    assert checks.count() == 0, checks.all_inner_texts()
    announcement = "All 2 dispatches use isolation: worktree — verified"
    assert page.locator("#announcement").inner_text() == announcement
    screenshot(page, "wave-preflight")

    page.click("#approve")
    page.wait_for_load_state()
    assert page.locator("#wave-status").inner_text() == "approved"
    assert announcement in page.locator("#approval").inner_text()
    assert "approved by lena" in page.locator("#approval").inner_text().lower()
    wave = Wave.objects.get(number=1)
    assert wave.status == Wave.APPROVED
    assert Event.objects.get(kind="wave.approve").payload["announcement"] == announcement
    assert set(wave.tasks.values_list("status", flat=True)) == {"ready"}
    screenshot(page, "wave-approved")

    # Wave 2 holds the sequenced task and waits for wave 1.
    page.goto(f"{live_server.url}/plans/launch/waves/2/")
    assert "T-2" in page.locator("#tasks").inner_text()
    assert "wave 1 is approved, not verified" in page.locator("#check-previous").inner_text()
    # T-1 (wave 1, ready) still declares the file: shown, with why it clears by itself.
    assert "clear by themselves" in page.locator("#earlier-note").inner_text()
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "wave-2-phone")
    assert page.js_errors == []
