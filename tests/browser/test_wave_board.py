"""A wave's page in real Chromium: its tasks as a board, one column per stage side by
side (not one narrow column), and a destructive control that looks it."""

from __future__ import annotations

import pytest

from fleet.models import Task, Wave

from ..conftest import make_agent, make_repository, make_task, make_user, make_wave
from .conftest import screenshot
from .test_refusals import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_wave_page_is_a_board_by_state(page, live_server):
    make_user("lena", "lead", password="pw-lena-123")
    wave = make_wave(status=Wave.RUNNING, name="Checkout")
    repository = make_repository(slug="shop")
    for key, status in [
        ("T-1", Task.READY),
        ("T-2", Task.READY),
        ("T-3", Task.READY),
        ("T-4", Task.APPROVED),
        ("T-5", Task.MERGED),
    ]:
        make_task(wave=wave, repository=repository, key=key, status=status, title=f"Work {key}")
    Task.objects.get(key="T-3").assign(agent=make_agent(name="ada"))
    sign_in(page, f"{live_server.url}/plans/{wave.plan.slug}/waves/1/", "lena", "pw-lena-123")

    columns = page.locator("#tasks .column")
    labels = [c.split("\n")[0] for c in columns.all_inner_texts()]
    assert labels == ["To do (2)", "In progress (1)", "In review (0)", "Approved (1)", "Merged (1)"]
    boxes = [columns.nth(i).bounding_box() for i in range(columns.count())]
    assert len({round(b["y"]) for b in boxes}) == 1  # side by side, one row at 1280 px
    assert all(b["width"] > 180 for b in boxes)
    assert "T-3" in columns.nth(1).inner_text() and "ada" in columns.nth(1).inner_text()
    screenshot(page, "wave-board")
    page.set_viewport_size({"width": 1920, "height": 1000})
    screenshot(page, "wave-board-1920")
    assert not page.js_errors


def test_revoke_looks_destructive(page, live_server):
    make_user("lena", "lead", password="pw-lena-123")
    agent = make_agent(name="ada")
    agent.issue_token()
    sign_in(page, f"{live_server.url}/agents/", "lena", "pw-lena-123")
    revoke = page.locator("button", has_text="Revoke")
    approve_like = page.locator("header button, main button:not(.danger)").first
    red = "rgb(197, 48, 48)"
    assert revoke.evaluate("b => getComputedStyle(b).backgroundColor") == red
    assert approve_like.evaluate("b => getComputedStyle(b).backgroundColor") != red
    screenshot(page, "agents-revoke")
