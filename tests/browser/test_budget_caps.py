"""The budget page's cap controls in real Chromium: an agent stopped at its cap links
there; a manager raises that cap (bad input said on the form), then resumes it; a
lead may cap waves only."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fleet.models import Agent, Budget, Event, SpendEvent

from ..conftest import make_agent, make_user, make_wave
from .conftest import screenshot
from .test_refusals import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_manager_raises_a_stopped_agents_cap_from_its_page_and_resumes_it(page, live_server):
    make_user("mona", "manager", password="pw-mona-123")
    agent = make_agent(name="max", status_line="stopped at budget cap")
    SpendEvent.objects.create(agent=agent, cost_usd=Decimal("3"), tokens_in=10, tokens_out=5)
    Budget.objects.create(
        scope="agent", agent=agent, limit_usd=Decimal("3"), spent_usd=Decimal("3")
    )
    agent.stop(reason="budget")
    sign_in(page, f"{live_server.url}/agents/max/", "mona", "pw-mona-123")

    page.click("#raise-cap")
    page.wait_for_url(f"{live_server.url}/budget/?cap=agent:max#set-cap")
    form = page.locator("#set-cap")
    assert form.locator("#id_target").input_value() == "agent:max"
    groups = form.locator("#id_target optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert groups == ["Repositories", "Waves", "Agents"]

    form.locator("#id_limit_usd").fill("-2")  # refused on the form, nothing changed
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert "greater than or equal to 0.01" in page.locator("#set-cap").inner_text()
    assert Budget.objects.get(agent=agent).limit_usd == Decimal("3")
    screenshot(page, "budget-cap-error")

    form.locator("#id_limit_usd").fill("8")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert "The cap of agent max is set: $8.00" in page.locator(".messages").inner_text()
    assert Budget.objects.get(agent=agent).limit_usd == Decimal("8")
    event = Event.objects.filter(kind="budget.set").get()
    assert event.actor == "user:mona" and event.agent == agent
    screenshot(page, "budget-cap-set")

    page.goto(f"{live_server.url}/agents/max/")
    page.click("button:has-text('Resume max')")
    page.wait_for_load_state()
    assert "max is resumed" in page.locator(".messages").inner_text()
    assert Agent.objects.get(name="max").status == Agent.IDLE
    assert "stopped at budget cap" not in page.locator("main").inner_text()
    # The one console line: Chromium noting the refused form's 400.
    assert [e for e in page.js_errors if "status of 400" not in e] == []


def test_a_lead_caps_waves_only_and_the_fleet_option_is_not_theirs(page, live_server):
    make_user("lena", "lead", password="pw-lena-123")
    make_agent(name="ada")
    wave = make_wave(status="running")
    sign_in(page, f"{live_server.url}/budget/", "lena", "pw-lena-123")
    options = page.locator("#id_target option").evaluate_all("os => os.map(o => o.value)")
    assert options == [f"wave:{wave.pk}"]

    page.locator("#id_limit_tokens").fill("50000")
    page.click("#set-cap button[type=submit]")
    page.wait_for_load_state()
    assert f"The cap of wave 1 of {wave.plan.name} is set" in page.locator(".messages").inner_text()
    assert Budget.objects.get(wave=wave).limit_tokens == 50000
    # A forged post for a scope a lead may not cap: a form error, not a 500.
    response = page.request.post(
        f"{live_server.url}/budget/caps/",
        form={
            "target": "fleet:",
            "limit_usd": "1",
            "csrfmiddlewaretoken": page.locator("[name=csrfmiddlewaretoken]").first.input_value(),
        },
        headers={"Referer": f"{live_server.url}/budget/"},
    )
    assert response.status == 400
    assert "not one of the available choices" in response.text()
    assert not Budget.objects.filter(scope="fleet").exists()
