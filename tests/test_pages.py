"""The pages beyond the overview (agent, repository, merge queue, activity), the
overview's filters and problems panel, correlation ids and the CSP nonce. List pages
have their query counts pinned: the count stays put as agents and tasks grow."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import pytest
from django.urls import reverse

from fleet import dispatch, live, merging
from fleet.models import (
    Agent,
    Budget,
    CheckRun,
    Event,
    Finding,
    JournalEntry,
    MergeBatch,
    MergeRequest,
    Message,
    Review,
    SpendEvent,
    Task,
    Wave,
)

from .api.conftest import AgentClient
from .conftest import make_agent, make_repository, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(client):
    client.force_login(make_user("lena", "lead"))
    return client


_positions = itertools.count(1)


def grow(n: int, repository=None) -> list[Agent]:
    """n agents, each with a task, journal, inbox, spend, a check and a merge."""
    repository = repository or make_repository(path=f"/nonexistent/{n}")
    wave = make_wave(status=Wave.RUNNING)
    agents = []
    for i in range(n):
        agent = make_agent(status_line=f"line {i}")
        task = make_task(wave=wave, repository=repository, status=Task.READY)
        task.assign(agent=agent)
        agent.start_work(task=task)
        dispatch.journal(agent, kind="done", body=f"step {i}", task=task)
        Message.objects.create(recipient=agent, task=task, subject=f"note {i}")
        SpendEvent.objects.create(agent=agent, task=task, tokens_in=10, cost_usd=Decimal("0.1"))
        CheckRun.objects.create(repository=repository, task=task, name="ci", commit_sha="a" * 40)
        review = Review.objects.create(task=task, commit_sha="a" * 40, status=Review.CLOSED)
        Finding.objects.create(review=review, path="x.py", severity="minor", title=f"f{i}")
        batch = MergeBatch.objects.create(
            repository=repository,
            base_sha="b" * 40,
            step="done",
            landed=1,
            trials=[{"tasks": [task.key], "top": "a" * 40, "passed": True}],
        )
        MergeRequest.objects.create(
            task=task,
            repository=repository,
            position=next(_positions),
            result="merged",
            batch=batch,
        )
        agents.append(agent)
    return agents


PINNED = [
    # url name, its arguments from the first agent, queries
    ("fleet-agents", None, 4),  # session, user, groups; agents
    ("fleet-activity", None, 6),  # + repositories (filter), count, page
    ("fleet-repositories", None, 8),  # + repositories, tasks, claims, queue, kept
    ("fleet-merges", None, 7),  # + queue, batches, their tasks, recent
    ("fleet-plans", None, 4),  # + plans with their wave counts
    ("fleet-reviews", None, 5),  # + findings waiting, their tasks' last submits
    ("fleet-agent", "agent", 12),  # + pk, agent, runtime, sessions, checkpoints, journal...
    ("fleet-repository", "repository", 10),  # + repo twice, open, merged, claims, queue, trees
]


@pytest.mark.parametrize(("name", "arg", "queries"), PINNED)
def test_list_pages_keep_their_query_count_as_the_fleet_grows(
    lead, name, arg, queries, django_assert_num_queries
):
    repository = make_repository(path="/nonexistent/pinned")
    first = grow(2, repository)[0]
    args = {None: [], "agent": [first.name], "repository": [repository.slug]}[arg]
    with django_assert_num_queries(queries):
        small = lead.get(reverse(name, args=args))
    grow(10, repository)
    with django_assert_num_queries(queries):
        large = lead.get(reverse(name, args=args))
    assert small.status_code == large.status_code == 200


def test_the_agent_page_shows_sessions_journal_inbox_and_spend(lead):
    agent = grow(1)[0]
    Budget.objects.create(scope="agent", agent=agent, limit_usd=Decimal("1.00"))
    dispatch.boot(agent)
    html = lead.get(reverse("fleet-agent", args=[agent.name])).content.decode()
    for region in ("agent-runtime", "agent-page-card", "agent-sessions", "agent-journal"):
        assert f'id="{region}"' in html
    assert "step 0" in html and "note 0" in html and "of a $1.00 budget" in html
    assert lead.get(reverse("fleet-agent", args=["nobody"])).status_code == 404
    polled = lead.get(reverse("fleet-agent", args=[agent.name]) + "?live=1")
    assert polled["X-Fleet-Live"] == "1" and "step 0" in polled.content.decode()


def test_the_repository_page_shows_the_board_by_state_and_the_queue(lead):
    repository = make_repository(path="/nonexistent/board")
    agent = grow(1, repository)[0]
    make_task(repository=repository, status=Task.READY, title="Waiting its turn")
    html = lead.get(reverse("fleet-repository", args=[repository.slug])).content.decode()
    board = html[html.index('id="repository-board"') : html.index('id="repository-queue"')]
    ready = board[board.index("ready <") : board.index("assigned <")]
    assert "Waiting its turn" in ready
    column = agent.current_task.get_status_display()
    held = board[board.index(f"{column} <") :]
    held = held[: held.index("</div>")]
    assert agent.current_task.key in held and "Waiting its turn" not in held
    assert lead.get(reverse("fleet-repository", args=["nope"])).status_code == 404


def test_the_merge_queue_lists_pending_entries_and_latest_results(lead):
    repository = make_repository(path="/nonexistent/mq")
    done = make_task(repository=repository, status=Task.APPROVED, title="Merged one")
    MergeRequest.objects.create(
        task=done, repository=repository, position=1, result=MergeRequest.FAILED, log="red"
    )
    waiting = make_task(repository=repository, status=Task.APPROVED, title="Queued one")
    merging.enqueue(waiting, by=None)
    html = lead.get(reverse("fleet-merges")).content.decode()
    queue = html[html.index('id="merges-queue"') : html.index('id="merges-recent"')]
    recent = html[html.index('id="merges-recent"') :]
    assert "Queued one" in queue and "Merged one" not in queue
    assert "Merged one" in recent and "failed" in recent


def test_the_activity_log_filters_and_pages(lead):
    grow(3)
    for i in range(60):
        Event.objects.record("test.noise", payload={"i": i}, correlation_id="corr-1")
    page1 = lead.get(reverse("fleet-activity")).content.decode()
    assert page1.count("<tr>") - 1 == 50 and "older →" in page1
    page2 = lead.get(reverse("fleet-activity") + "?page=2").content.decode()
    assert "← newer" in page2
    # Out-of-range and junk page numbers land on a real page, never a 500.
    assert lead.get(reverse("fleet-activity") + "?page=999").status_code == 200
    assert lead.get(reverse("fleet-activity") + "?page=x").status_code == 200
    journal = lead.get(reverse("fleet-activity") + "?kind=agent.journal").content.decode()
    assert journal.count("agent.journal</code>") == 3 and "test.noise" not in journal
    task = Task.objects.order_by("pk").first()
    by_task = lead.get(reverse("fleet-activity") + f"?task={task.key.lower()}").content.decode()
    assert "test.noise" not in by_task and "task.assign" in by_task
    by_corr = lead.get(reverse("fleet-activity") + "?correlation=corr-1&page=2").content.decode()
    assert "test.noise" in by_corr and "agent.journal" not in by_corr
    # An invalid filter is a form error and is left out; the valid ones still apply.
    bad = lead.get(reverse("fleet-activity") + "?kind=agent.journal&repository=nope")
    html = bad.content.decode()
    assert bad.status_code == 200 and "Select a valid choice" in html
    assert html.count("agent.journal</code>") == 3 and "test.noise" not in html
    # An actor with a kind is that actor exactly.
    exact = lead.get(reverse("fleet-activity") + "?actor=fleet").content.decode()
    assert "test.noise" in exact


def test_overview_filters_by_repository_and_role(lead):
    shop, docs = make_repository(path="/nonexistent/s"), make_repository(path="/nonexistent/d")
    builder = grow(1, shop)[0]
    reviewer = make_agent(role=Agent.REVIEWER, name="rev-docs", repository=docs)
    html = lead.get(reverse("fleet-overview") + f"?repository={docs.slug}").content.decode()
    assert f'id="agent-{reviewer.pk}"' in html and f'id="agent-{builder.pk}"' not in html
    html = lead.get(reverse("fleet-overview") + "?role=builder").content.decode()
    assert f'id="agent-{builder.pk}"' in html and f'id="agent-{reviewer.pk}"' not in html
    # The websocket and the polling fallback show the same filtered page.
    assert "key=role%3Dbuilder" in html and "?role=builder&amp;live=1" in html
    # Unknown values are ignored rather than an error.
    assert lead.get(reverse("fleet-overview") + "?role=pilot&repository=x").status_code == 200


def test_the_problems_panel_lists_what_needs_a_person():
    repository = make_repository(path="/nonexistent/p")
    wave = make_wave(status=Wave.RUNNING)
    make_agent(name="quiet", status=Agent.STALE)
    make_agent(name="broke", status=Agent.STOPPED, stop_reason="budget")
    spender = make_agent(name="spender", spent_usd=Decimal("0.85"))
    Budget.objects.create(
        scope="agent", agent=spender, limit_usd=Decimal("1"), spent_usd=Decimal("0.85")
    )
    red = make_task(wave=wave, repository=repository, key="R-1", status=Task.APPROVED)
    red.head_sha = "b" * 40
    red.ownership = {"ok": False, "outside": ["x.py"], "owned": []}
    red.save()
    CheckRun.objects.create(
        repository=repository, task=red, name="ci", commit_sha="b" * 40, status="failed"
    )
    bounced = make_task(wave=wave, repository=repository, key="R-2", status=Task.READY)
    MergeRequest.objects.create(
        task=bounced, repository=repository, position=1, result="failed", step="testing"
    )
    fixed = make_task(wave=wave, repository=repository, key="R-3", status=Task.APPROVED)
    CheckRun.objects.create(
        repository=repository, task=fixed, name="ci", commit_sha="c" * 40, status="failed"
    )
    text = "\n".join(f"{p.subject} {p.text}" for p in live.overview_context()["problems"])
    assert "quiet is silent" in text
    assert "broke was stopped at its budget" in text
    assert "spender has spent $0.85 of its $1.00 budget" in text
    assert "R-1 ownership gate is red" in text and "R-1 check ci failed" in text
    assert "R-2 merge failed at testing" in text
    assert "R-3" not in text  # its failed check was on an older commit


def test_a_pulse_shows_spend_against_the_budget():
    agent = make_agent(spent_usd=Decimal("5.00"))
    Budget.objects.create(scope="agent", agent=agent, limit_usd=Decimal("5"))
    html = live.pulses([agent.pk])
    assert "$5.00 of $5.00" in html and "spend-over" in html
    assert "spend-none" in live.pulses([make_agent().pk])


def test_a_freshly_spawned_agent_has_no_heartbeat_yet_not_never():
    newborn = make_agent(last_heartbeat_at=None)
    html = live.pulses([newborn.pk])
    assert "none yet" in html and "never" not in html and "hb-red" not in html
    newborn.mark_stale()  # silent past the TTL since its spawn: now it is news
    assert "hb-red" in live.pulses([newborn.pk])


def test_events_of_one_request_share_its_correlation_id(client, settings):
    settings.FLEET_TRUST_REQUEST_ID = True  # behind a proxy that sets X-Request-ID
    api = AgentClient(client, make_agent().issue_token())
    response = api.post("journal", {"kind": "note", "body": "hello"}, HTTP_X_REQUEST_ID="req-42")
    assert response.status_code == 201 and response["X-Request-ID"] == "req-42"
    assert Event.objects.get(kind="agent.journal").correlation_id == "req-42"
    # A malformed id is replaced by a fresh one (never stored as sent).
    response = api.post(
        "journal", {"kind": "note", "body": "again"}, HTTP_X_REQUEST_ID="bad id\twith spaces"
    )
    fresh = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{16}", fresh)
    assert JournalEntry.objects.count() == 2
    assert Event.objects.filter(kind="agent.journal").first().correlation_id == fresh
    # Without a trusted proxy, nobody names their own id (say, to pass as a merge's).
    settings.FLEET_TRUST_REQUEST_ID = False
    response = api.post("journal", {"kind": "note", "body": "spoof"}, HTTP_X_REQUEST_ID="merge-1")
    assert response["X-Request-ID"] != "merge-1"
    assert not Event.objects.filter(correlation_id="merge-1").exists()


def test_every_script_carries_the_csp_nonce(lead):
    response = lead.get(reverse("fleet-overview"))
    policy = response["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    scripts = re.findall(r"<script[^>]*>", response.content.decode())
    assert scripts and all(f'nonce="{nonce}"' in tag for tag in scripts)
    assert "'unsafe-inline'" not in policy


def test_htmx_requests_carry_the_csrf_token(lead):
    html = lead.get(reverse("fleet-overview")).content.decode()
    token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)
    assert len(token) >= 32


def test_htmx_posts_without_the_csrf_token_are_refused():
    """People's writes need the CSRF token htmx sends (hx-headers): without it 403 and
    nothing changes; with it the same POST goes through."""
    from django.test import Client

    from fleet.models import Plan

    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("lena", "lead"))
    wave = Wave.objects.create(plan=Plan.objects.create(name="P", slug="p"), number=1)
    url = reverse("fleet-wave-budget", args=["p", 1])
    before = Event.objects.count()
    refused = client.post(url, {"limit_usd": "5"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 403
    assert not Budget.objects.filter(wave=wave).exists() and Event.objects.count() == before
    html = client.get(reverse("fleet-overview")).content.decode()
    token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)
    allowed = client.post(url, {"limit_usd": "5"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code in (200, 302)
    assert Budget.objects.get(wave=wave).limit_usd == 5
