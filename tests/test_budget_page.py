"""The manager's budget page: charts, burn-down with a projection, top spenders,
merged tasks' cost, a pinned number of queries for 10,000 spend events, and a CSV
export whose rows add up to the totals."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from fleet import live
from fleet.models import Budget, SpendEvent, Task, Wave

from .conftest import make_agent, make_repository, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db

EVENTS = 10_000


@pytest.fixture
def spend():
    repo = make_repository(slug="shop")
    wave = make_wave(status=Wave.RUNNING)
    tasks = [make_task(wave=wave, repository=repo, key=f"T-{i}") for i in range(1, 4)]
    Task.objects.filter(key="T-1").update(status=Task.MERGED)
    agents = [make_agent(name=f"agent-{i}") for i in range(12)]
    now = timezone.now()
    SpendEvent.objects.bulk_create(
        SpendEvent(
            agent=agents[i % len(agents)],
            task=tasks[i % 3] if i % 5 else None,
            tokens_in=100,
            tokens_out=10,
            cost_usd=Decimal("0.0010"),
            created_at=now - timedelta(minutes=(i * 7) % (30 * 60)),
        )
        for i in range(EVENTS)
    )
    Budget.objects.create(scope="wave", wave=wave, limit_usd=Decimal("20"), spent_usd=Decimal("8"))
    Budget.objects.create(scope="fleet", limit_usd=Decimal("100"))
    return wave


def test_the_page_shows_charts_burndown_and_tables_in_a_pinned_number_of_queries(
    client, spend, django_assert_num_queries
):
    client.force_login(make_user("mona", "manager"))
    with django_assert_num_queries(19):  # +3: the cap form's repositories, waves and agents
        page = client.get("/budget/").content.decode()
    assert page.count('<svg class="chart"') == 5  # three stacked charts, two burn-downs
    assert "Spend per hour, by agent" in page and "wave 1" in page and "shop" in page
    assert "burning $" in page and "the cap is hit around" in page
    assert 'class="projection"' in page
    assert "agent-0" in page and 'href="/tasks/T-1/"' in page
    assert "All spend: <strong>$10.00</strong>" in page


def test_the_csv_export_adds_up_to_the_totals(client, spend):
    client.force_login(make_user("mona", "manager"))
    response = client.get("/budget/spend.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("10.0000")
    assert sum(int(r["tokens_in"]) for r in rows) == 100 * EVENTS
    assert {r["repository"] for r in rows} == {"shop", ""}


def test_the_page_is_live_and_only_for_people(client, spend):
    assert live.resolve("budget", "whatever") == ""
    assert client.get("/budget/").status_code == 302  # to the login page
    client.force_login(make_user("nobody"))
    assert client.get("/budget/").status_code == 403
    client.force_login(make_user("lena", "lead"))
    snapshot = client.get("/budget/?live=1")
    assert snapshot["X-Fleet-Live"] == "1" and 'id="budget-caps"' in snapshot.content.decode()


def test_the_charts_also_go_by_day(client, spend):
    client.force_login(make_user("mona", "manager"))
    page = client.get("/budget/?by=day").content.decode()
    assert "Spend per day, last 30 days" in page and page.count('<svg class="chart"') == 5
    bars = page.split('id="chart-agent"')[1].split("</figure>")[0]
    assert bars.count("<rect") > 12  # two days of spend, twelve agents (and the legend)
    assert live.resolve("budget", "day") == "day"


def test_token_caps_far_projections_and_waves_named_with_their_plan(client, spend):
    Budget.objects.create(
        scope="repository", repository=Task.objects.get(key="T-1").repository, limit_tokens=10**15
    )  # the form's largest: at this rate, past the calendar's end
    Budget.objects.filter(scope="fleet").update(limit_usd=Decimal("99999999"))
    client.force_login(make_user("mona", "manager"))
    page = client.get("/budget/").content.decode()
    assert "of 1,000,000,000,000,000 tokens" in page  # a token cap, drawn in tokens
    assert "not hit within a year" in page  # no date past the calendar's end
    assert f"{spend.plan.name} · wave 1" in page
    axis = page.split('id="chart-agent"')[1].split("</figure>")[0]
    assert re.search(r'class="axis">\d\d:00<', axis)  # the time axis shows times
