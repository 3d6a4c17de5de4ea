"""People's pages: login, role checks, and the overview with a pinned query count."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fleet.models import Agent, Task, Wave
from fleet.roles import ROLES

from .conftest import make_agent, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db


def test_anonymous_people_are_sent_to_login(client):
    response = client.get(reverse("fleet-overview"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("fleet-login"))


def test_login_page_renders_and_rejects_a_wrong_password(client):
    make_user("lena", "lead")
    response = client.post(reverse("fleet-login"), {"username": "lena", "password": "nope"})
    assert response.status_code == 200
    assert "do not match" in response.content.decode()
    response = client.post(reverse("fleet-login"), {"username": "lena", "password": "pw-for-tests"})
    assert response.status_code == 302 and response["Location"] == reverse("fleet-overview")


def test_a_person_without_a_role_is_refused(client):
    client.force_login(make_user("nobody"))
    response = client.get(reverse("fleet-overview"))
    assert response.status_code == 403
    assert "lead" in response.content.decode()


def populate(n_agents: int) -> None:
    wave = make_wave(status=Wave.RUNNING)
    for i in range(n_agents):
        task = make_task(wave=wave, status=Task.READY)
        agent = make_agent(status_line=f"line {i}")
        if i % 2:
            task.assign(agent=agent)
            agent.start_work(task=task)


@pytest.mark.parametrize("role", ROLES)
def test_overview_renders_for_each_role_with_a_constant_query_count(
    client, role, django_assert_num_queries
):
    client.force_login(make_user(f"{role}-x", role))
    populate(2)
    # session, user, groups; agents; waves; tasks; budgets, checks, findings and
    # merges (problems); repositories (filters)
    with django_assert_num_queries(11):
        small = client.get(reverse("fleet-overview"))
    populate(12)
    with django_assert_num_queries(11):
        large = client.get(reverse("fleet-overview"))
    assert small.status_code == large.status_code == 200
    page = large.content.decode()
    assert page.count('class="card agent') == Agent.objects.count() == 14
    assert f'role-{role}">{role}' in page
    assert "Fleet overview" in page


def test_overview_shows_agent_state_and_problems(client):
    client.force_login(make_user("lead-y", "lead"))
    task = make_task(status=Task.READY, key="T-77")
    agent = make_agent(name="zed", context_pct=64)
    task.assign(agent=agent)
    agent.start_work(task=task)
    agent.mark_stale()
    stopped = make_agent(name="quiet")
    stopped.stop(reason="budget")
    page = client.get(reverse("fleet-overview")).content.decode()
    assert "feat/T-77" in page
    assert "rotate due" in page
    assert "<strong>zed</strong>" in page and "while holding T-77" in page
    assert "last heartbeat never" in page
    assert "stopped: budget" in page
    assert 'value="64"' in page


def test_activity_lists_events(client):
    client.force_login(make_user("mgr", "manager"))
    task = make_task(key="T-5")
    task.make_ready(by=None)
    page = client.get(reverse("fleet-activity")).content.decode()
    assert "task.make_ready" in page and "T-5" in page


def test_logout_is_a_post(client):
    client.force_login(make_user("rev", "reviewer"))
    assert client.get(reverse("fleet-logout")).status_code == 405
    assert client.post(reverse("fleet-logout")).status_code == 302
    assert client.get(reverse("fleet-overview")).status_code == 302


def test_healthz(client):
    assert client.get(reverse("fleet-healthz")).json() == {"ok": True}


@pytest.mark.parametrize(
    "seconds,text",
    [(None, "never"), (-3, "0s ago"), (59, "59s ago"), (61, "1m ago"), (7300, "2h ago")],
)
def test_heartbeat_age_is_short_and_human(seconds, text):
    from fleet.templatetags.fleet_tags import age

    assert age(seconds) == text
