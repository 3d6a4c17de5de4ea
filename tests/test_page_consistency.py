"""Pages that agree with themselves: sessions counted per agent, a resumed agent no
longer says it stopped, the add-task form on a wave offers the plan's repository."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fleet import dispatch
from fleet.models import Agent, AgentSession
from tests.conftest import make_agent, make_repository, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db


def test_sessions_are_numbered_per_agent_not_across_the_fleet(client):
    ada, bob = make_agent(name="ada"), make_agent(name="bob")
    dispatch.boot(ada)
    dispatch.boot(bob)
    dispatch.boot(bob)  # bob's second session (the first ends, crashed)
    third = dispatch.boot(ada)
    assert [s.number for s in bob.sessions.order_by("started_at", "pk")] == [1, 2]
    assert third["session_number"] == 2
    assert AgentSession.objects.get(pk=third["session_id"]).number == 2
    client.force_login(make_user("watcher", "manager"))
    page = client.get(reverse("fleet-agent", args=["ada"])).content.decode()
    rows = page.split('id="agent-sessions"')[1]
    assert "<tr><td>2</td>" in rows and "<tr><td>1</td>" in rows


def test_a_resumed_agent_no_longer_says_it_stopped_at_its_cap(client):
    agent = make_agent(name="max", status_line="stopped at budget cap")
    lead = make_user("lea", "lead")
    agent.stop(reason="budget", by=lead)
    client.force_login(lead)
    response = client.post(reverse("fleet-agent-resume", args=["max"]))
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status == Agent.IDLE and agent.stop_reason == ""
    page = client.get(reverse("fleet-agent", args=["max"])).content.decode()
    assert "stopped at budget cap" not in page


def test_the_add_task_form_defaults_to_the_plans_repository(client):
    make_repository(slug="aaa-other", name="AAA other")  # first by name: the old default
    shop = make_repository(slug="shop", name="Shop")
    wave = make_wave(status="draft")
    make_task(wave=wave, repository=shop, status="draft")
    client.force_login(make_user("lea", "lead"))
    page = client.get(reverse("fleet-wave", args=[wave.plan.slug, wave.number])).content.decode()
    form = page.split('id="add-task"')[1]
    assert '<option value="shop" selected>' in form
    assert '<option value="aaa-other" selected>' not in form


@pytest.mark.parametrize(
    ("path", "section"),
    [
        ("/agents/max/", "Agents"),
        ("/plans/{plan}/waves/1/", "Plans"),
        ("/tasks/T-77/", "Plans"),
        ("/agents/", "Agents"),
    ],
)
def test_the_navigation_marks_the_section_on_detail_pages(client, path, section):
    make_agent(name="max")
    wave = make_wave()
    make_task(wave=wave, key="T-77")
    client.force_login(make_user("lea", "lead"))
    page = client.get(path.format(plan=wave.plan.slug)).content.decode()
    nav = page.split('aria-label="Main"')[1].split("</nav>")[0]
    marked = [chunk.split(">")[1].split("<")[0] for chunk in nav.split("aria-current=")[1:]]
    assert marked == [section]


@pytest.mark.parametrize("path", ["/admin/", "/api/v1/docs"])
def test_the_admin_and_the_api_docs_have_fleets_icon(client, path):
    staff = make_user("root", "manager")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    page = client.get(path).content.decode()
    assert 'rel="icon" href="/static/fleet/favicon.svg"' in page
