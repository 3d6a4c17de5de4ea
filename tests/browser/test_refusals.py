"""A stale page's button in real Chromium: the change someone else made meanwhile is
said on the page (who and when, the state now), never a bare error page."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fleet import planning
from fleet.git import repo as gitrepo
from fleet.models import Agent, Budget, Event, Wave

from ..conftest import make_agent, make_repository, make_task, make_user, make_wave
from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, url, username, password):
    page.goto(url)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(url)


def test_approve_on_a_stale_wave_page_says_who_approved_it_and_when(
    page, live_server, tmp_path, data_dir
):
    clone = tmp_path / "clone"
    gitrepo.create_with_origin(
        origin=tmp_path / "origin.git", clone=clone, files={"a.py": ""}, message="initial"
    )
    repository = make_repository(path=str(clone), slug="web", name="Web")
    wave = make_wave(status=Wave.DRAFT)
    make_task(wave=wave, repository=repository, status="draft", declared_paths=["a.py"])
    Budget.objects.create(scope="wave", wave=wave, limit_usd=Decimal("5"))
    make_user("lena", "lead", password="pw-lena-123")
    otto = make_user("otto", "lead")
    url = f"{live_server.url}/plans/{wave.plan.slug}/waves/1/"
    sign_in(page, url, "lena", "pw-lena-123")
    assert page.locator("#wave-status").inner_text() == "draft"

    planning.approve(wave, by=otto)  # in another tab, by another lead
    event = Event.objects.get(kind="wave.approve")

    response = None
    with page.expect_navigation() as navigation:
        page.click("#approve")
    response = navigation.value
    assert response.status == 200 and response.url == url
    message = page.locator(".messages .error").inner_text()
    assert message.startswith("Not approved:")
    assert "Wave 1 is approved now" in message
    assert "by otto at" in message and f"event #{event.id}" in message
    assert page.locator("#wave-status").inner_text() == "approved"
    assert page.locator("#approve").count() == 0
    assert Event.objects.filter(kind="wave.approve").count() == 1
    screenshot(page, "refused-approve")
    assert not page.js_errors


def test_resume_on_a_stale_agent_page_says_it_was_resumed_and_by_whom(page, live_server):
    lead = make_user("lena", "lead", password="pw-lena-123")
    agent = make_agent(name="max")
    agent.stop(reason="budget", by=lead)
    manager = make_user("mia", "manager")
    url = f"{live_server.url}/agents/max/"
    sign_in(page, url, "lena", "pw-lena-123")
    resume = page.locator("button", has_text="Resume max")
    assert resume.count() == 1

    agent.resume(by=manager)

    resume.click()
    page.wait_for_url(url)
    message = page.locator(".messages .error").inner_text()
    assert "Not resumed: max is not stopped" in message
    assert "max is idle now (agent.resume by mia at" in message
    assert Agent.objects.get(name="max").status == Agent.IDLE
    assert page.locator("button", has_text="Resume max").count() == 0
    screenshot(page, "refused-resume")
