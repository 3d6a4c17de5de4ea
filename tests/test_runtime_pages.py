"""The pages of the agent runtime: runners (registered by leads, token shown once),
an agent's runtime panel and people's controls, spawning with a harness, and a
repository's agent permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet import live
from fleet.models import Agent, Event, Message, Runner, Runtime
from fleet.models.agents import hash_token

from .conftest import make_agent, make_repository, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(client):
    client.force_login(make_user("lena", "lead"))
    return client


@pytest.fixture(params=["manager", "reviewer"])
def onlooker(client, request):
    client.force_login(make_user(f"olga-{request.param}", request.param))
    return client


def make_runner(name: str = "box", *, seen: float | None = 1.0, **fields) -> Runner:
    last_seen = None if seen is None else timezone.now() - timedelta(seconds=seen)
    return Runner.objects.create(name=name, last_seen_at=last_seen, **fields)


def make_runtime(agent: Agent, runner: Runner | None = None, **fields) -> Runtime:
    fields.setdefault("state", Runtime.READY)
    return Runtime.objects.create(
        agent=agent,
        harness=fields.pop("harness", "claude"),
        directory="/tmp/x",
        runner=runner,
        **fields,
    )


# --- the Runners page -------------------------------------------------------


def test_the_runners_page_shows_each_runners_state_and_agents(lead):
    online = make_runner("box", host="box.lan", pid=4242, version="0.3", tmux="tmux 3.4")
    make_runner("old", seen=600)
    make_runner("new", seen=None)
    make_runner("gone", token_revoked_at=timezone.now())
    make_runner("broken", error="tmux is not installed")
    make_runtime(make_agent(name="ada"), online)
    page = lead.get(reverse("fleet-runners")).content.decode()
    assert 'href="/runners/"' in page  # in the nav
    row = page.split('id="runner-box"')[1].split("</tr>")[0]
    assert all(fact in row for fact in ("online", "box.lan", "4242", "0.3", "tmux 3.4", "ada"))
    assert "silent" in page.split('id="runner-old"')[1].split("</tr>")[0]
    assert "never connected" in page.split('id="runner-new"')[1].split("</tr>")[0]
    assert "revoked" in page.split('id="runner-gone"')[1].split("</tr>")[0]
    assert "tmux is not installed" in page.split('id="runner-broken"')[1].split("</tr>")[0]
    assert "Register a runner" in page


def test_a_lead_registers_a_runner_and_sees_its_token_once(lead):
    response = lead.post(reverse("fleet-runner-register"), {"name": "laptop"})
    assert response.status_code == 201
    page = response.content.decode()
    token = page.split('id="runner-token">')[1].split("<")[0]
    runner = Runner.objects.get(name="laptop")
    assert token.startswith("flr_") and runner.token_hash == hash_token(token)
    assert token not in runner.token_hash
    assert "python -m fleet.runner --url http://testserver --token-file" in page
    assert "chmod 600" in page
    assert Event.objects.filter(kind="runner.registered", actor="user:lena").exists()
    assert token not in lead.get(reverse("fleet-runners")).content.decode()


def test_the_start_command_uses_fleets_public_url_when_set(lead, monkeypatch, settings):
    monkeypatch.setenv("FLEET_PUBLIC_URL", "https://fleet.example.org")
    settings.FLEET_PUBLIC_URL = "https://fleet.example.org"
    page = lead.post(reverse("fleet-runner-register"), {"name": "far"}).content.decode()
    assert "python -m fleet.runner --url https://fleet.example.org --token-file" in page


@pytest.mark.parametrize(
    "name, error",
    [("", "This field is required"), ("Bad Name", "Use lowercase letters"), ("box", "already")],
)
def test_bad_runner_names_are_form_errors_and_change_nothing(lead, name, error):
    box = make_runner("box")
    before = box.token_hash
    response = lead.post(reverse("fleet-runner-register"), {"name": name})
    assert response.status_code == 400 and error in response.content.decode()
    assert list(Runner.objects.values_list("name", flat=True)) == ["box"]
    box.refresh_from_db()
    assert box.token_hash == before
    assert not Event.objects.filter(kind__startswith="runner.").exists()


def test_a_lead_revokes_a_runner_once_confirmed(lead):
    runner = make_runner("box")
    runner.issue_token()
    lead.post(reverse("fleet-runner-revoke", args=["box"]))  # not confirmed
    runner.refresh_from_db()
    assert runner.token_revoked_at is None
    response = lead.post(reverse("fleet-runner-revoke", args=["box"]), {"confirm": "yes"})
    assert response.status_code == 302
    runner.refresh_from_db()
    assert runner.state() == "revoked"
    assert Event.objects.filter(kind="runner.token_revoked", actor="user:lena").exists()


def test_others_see_runners_read_only_and_cannot_change_them(onlooker):
    make_runner("box").issue_token()
    page = onlooker.get(reverse("fleet-runners")).content.decode()
    assert "box" in page and "Register a runner" not in page and "Revoke" not in page
    assert onlooker.post(reverse("fleet-runner-register"), {"name": "x"}).status_code == 403
    revoke = onlooker.post(reverse("fleet-runner-revoke", args=["box"]), {"confirm": "yes"})
    assert revoke.status_code == 403
    assert Runner.objects.get().token_revoked_at is None
    assert not Runner.objects.filter(name="x").exists()


# --- the agent page's runtime panel -----------------------------------------


def test_the_runtime_panel_shows_the_cli_its_terminal_and_how_to_attach(lead):
    agent = make_agent(name="ada")
    make_runtime(
        agent,
        make_runner("box", host="box.lan"),
        model="opus",
        restarts=1,
        screen="$ claude\n<b>hello</b> ready >",
        screen_at=timezone.now(),
    )
    page = lead.get(reverse("fleet-agent", args=["ada"])).content.decode()
    panel = page.split('id="agent-runtime"')[1].split("</section>")[0]
    assert "Claude Code" in panel and "opus" in panel and "box" in panel and "ready" in panel
    assert "&lt;b&gt;hello&lt;/b&gt; ready &gt;" in panel and "<b>hello" not in panel
    assert "tmux attach -t fleet-ada" in panel
    assert "Exit code" not in panel  # only once it exited or failed


def test_a_failed_cli_shows_its_exit_code_and_error(lead):
    agent = make_agent(name="ada")
    make_runtime(
        agent, make_runner(), state=Runtime.FAILED, exit_code=127, error="claude: not found"
    )
    panel = lead.get(reverse("fleet-agent", args=["ada"])).content.decode()
    panel = panel.split('id="agent-runtime"')[1].split("</section>")[0]
    assert "failed" in panel and "127" in panel and "claude: not found" in panel


def test_a_silent_runners_agent_is_shown_as_unknown(lead):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner("box", seen=600), state=Runtime.BUSY)
    panel = lead.get(reverse("fleet-agent", args=["ada"])).content.decode()
    panel = panel.split('id="agent-runtime"')[1].split("</section>")[0]
    assert (
        "unknown" in panel and "box</strong> is silent" in panel and "may still be running" in panel
    )


def test_an_agent_started_by_hand_says_so_and_shows_no_controls(lead):
    make_agent(name="ada")
    page = lead.get(reverse("fleet-agent", args=["ada"])).content.decode()
    assert "Started by hand" in page
    assert 'id="agent-controls"' not in page and "attach -t" not in page


def test_the_runtime_panel_is_a_live_region(lead):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner(), screen="line one")
    assert "line one" in live.snapshot("agent", str(agent.pk))


def test_the_pump_renders_an_agent_page_again_when_its_screen_changes():
    agent = make_agent(name="ada")
    runtime = make_runtime(agent, make_runner(), screen="before")
    pump, page = live.Pump(), ("agent", str(agent.pk))
    pump.watched[page] = 1
    pump._collect()  # the first tick sends everything
    assert pump._collect()[1] == []
    Runtime.objects.filter(pk=runtime.pk).update(screen="after", screen_at=timezone.now())
    pump.opened.clear()  # the page's window is over (a frame may go at once)
    frames = pump._collect()[1]
    assert [p for p, _ in frames] == [page] and "after" in frames[0][1]


# --- people's controls -------------------------------------------------------


def test_a_lead_stops_an_agent_and_it_is_audited(lead):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner())
    page = lead.get(reverse("fleet-agent", args=["ada"])).content.decode()
    assert 'id="agent-controls"' in page
    response = lead.post(reverse("fleet-agent-stop", args=["ada"]), follow=True)
    agent.refresh_from_db()
    assert agent.status == Agent.STOPPED and not agent.runtime.kill
    assert Event.objects.filter(kind="agent.stopped", agent=agent, actor="user:lena").exists()
    assert "is stopped" in response.content.decode()


def test_kill_needs_confirming_then_ends_the_cli_at_once(lead):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner())
    lead.post(reverse("fleet-agent-kill", args=["ada"]))
    agent.refresh_from_db()
    assert agent.status != Agent.STOPPED and not Event.objects.filter(kind="agent.killed").exists()
    lead.post(reverse("fleet-agent-kill", args=["ada"]), {"confirm": "yes"})
    agent.refresh_from_db()
    assert agent.status == Agent.STOPPED and agent.runtime.kill
    assert Event.objects.filter(kind="agent.killed", agent=agent, actor="user:lena").exists()


def test_a_lead_restarts_a_failed_cli_in_a_fresh_session(lead):
    agent = make_agent(name="ada")
    runtime = make_runtime(agent, make_runner(), state=Runtime.FAILED, restarts=4, error="boom")
    lead.post(reverse("fleet-agent-restart", args=["ada"]))
    runtime.refresh_from_db()
    assert runtime.generation == 2 and runtime.restarts == 0 and runtime.error == ""
    assert runtime.state == Runtime.STARTING
    assert Event.objects.filter(
        kind="agent.runtime_generation", agent=agent, actor="user:lena"
    ).exists()


def test_a_lead_messages_an_agent_into_its_inbox(lead):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner())
    lead.post(reverse("fleet-agent-message", args=["ada"]), {"subject": "Hi", "body": "Look."})
    sent = Message.objects.get(recipient=agent)
    assert (sent.subject, sent.body, sent.sender_user.username) == ("Hi", "Look.", "lena")
    assert Event.objects.filter(kind="agent.message", agent=agent, actor="user:lena").exists()


def test_a_message_without_a_subject_sends_nothing(lead):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner())
    response = lead.post(reverse("fleet-agent-message", args=["ada"]), {"body": "x"}, follow=True)
    assert "needs a subject" in response.content.decode()
    assert not Message.objects.exists()


def test_a_refused_control_is_a_message_on_the_page_and_changes_nothing(lead):
    agent = make_agent(name="ada")  # started by hand: no runtime
    for control in ("fleet-agent-stop", "fleet-agent-restart"):
        response = lead.post(reverse(control, args=["ada"]), follow=True)
        assert response.status_code == 200
        assert "not started by a runner" in response.content.decode()
    response = lead.post(reverse("fleet-agent-message", args=["ada"]), {"subject": "Hi"})
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status != Agent.STOPPED and not Message.objects.exists()
    assert not Event.objects.filter(kind__in=["agent.stopped", "agent.message"]).exists()


def test_others_see_the_state_but_no_controls_and_their_posts_are_refused(onlooker):
    agent = make_agent(name="ada")
    make_runtime(agent, make_runner(), screen="working")
    page = onlooker.get(reverse("fleet-agent", args=["ada"])).content.decode()
    assert "working" in page and 'id="agent-controls"' not in page
    for control in ("stop", "kill", "restart"):
        url = reverse(f"fleet-agent-{control}", args=["ada"])
        assert onlooker.post(url, {"confirm": "yes"}).status_code == 403
    url = reverse("fleet-agent-message", args=["ada"])
    assert onlooker.post(url, {"subject": "Hi"}).status_code == 403
    agent.refresh_from_db()
    assert agent.status != Agent.STOPPED and not Message.objects.exists()


# --- spawning with a harness -------------------------------------------------


def spawn_form(repository, **fields):
    return {"repository": repository.pk, "role": "reviewer", "name": "rex", **fields}


def test_spawn_offers_the_harnesses_with_claude_first(lead):
    page = lead.get(reverse("fleet-agent-spawn")).content.decode()
    assert '<option value="claude" selected>' in page and 'value="codex"' in page


def test_a_spawn_with_a_runner_online_says_it_starts_now(lead, data_dir):
    make_runner("box")
    response = lead.post(
        reverse("fleet-agent-spawn"), spawn_form(make_repository(), harness="codex", model="o3")
    )
    assert response.status_code == 201
    runtime = Runtime.objects.get(agent__name="rex")
    assert (runtime.harness, runtime.model, runtime.runner.name) == ("codex", "o3", "box")
    assert "box</strong> is online" in response.content.decode()


def test_a_spawn_without_a_runner_online_says_how_to_start_one(lead, data_dir):
    make_runner("old", seen=600)
    form = spawn_form(make_repository(), harness="claude")
    response = lead.post(reverse("fleet-agent-spawn"), form)
    page = response.content.decode()
    assert response.status_code == 201 and "No runner is online" in page
    assert "python -m fleet.runner" in page and Runtime.objects.get().harness == "claude"


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"harness": "command"}, "needs a command"),
        ({"harness": "claude", "command": "make agent"}, "only for the"),
        ({"harness": "vim"}, "Select a valid choice"),
        ({"harness": "command", "command": "echo 'unbalanced"}, "cannot be read"),
    ],
)
def test_bad_harness_input_is_a_form_error_and_spawns_nothing(lead, data_dir, fields, error):
    response = lead.post(reverse("fleet-agent-spawn"), spawn_form(make_repository(), **fields))
    assert response.status_code == 200 and error in response.content.decode()
    assert not Agent.objects.exists() and not Runtime.objects.exists()


def test_the_command_harness_runs_its_command(lead, data_dir):
    form = spawn_form(make_repository(), harness="command", command="python -m my.agent")
    assert lead.post(reverse("fleet-agent-spawn"), form).status_code == 201
    assert Runtime.objects.get().command == "python -m my.agent"


# --- a repository's agent permissions ---------------------------------------


def test_a_lead_sets_a_repositorys_agent_permissions(lead):
    repository = make_repository(slug="shop")
    page = lead.get(reverse("fleet-repository", args=["shop"])).content.decode()
    assert "Agent permissions" in page and "dangerously-skip-permissions" in page
    url = reverse("fleet-repository-agent-permissions", args=["shop"])
    assert lead.post(url, {"agent_permissions": "full"}).status_code == 302
    repository.refresh_from_db()
    assert repository.agent_permissions == "full"
    event = Event.objects.get(kind="repository.agent_permissions")
    assert event.payload == {"from": "worktree", "to": "full"} and event.actor == "user:lena"
    lead.post(url, {"agent_permissions": "root"})
    repository.refresh_from_db()
    assert repository.agent_permissions == "full"


def test_others_cannot_set_agent_permissions(onlooker):
    repository = make_repository(slug="shop")
    page = onlooker.get(reverse("fleet-repository", args=["shop"])).content.decode()
    assert "Agent permissions" in page and "Set agent permissions" not in page
    url = reverse("fleet-repository-agent-permissions", args=["shop"])
    assert onlooker.post(url, {"agent_permissions": "full"}).status_code == 403
    repository.refresh_from_db()
    assert repository.agent_permissions == "worktree"


def test_the_runners_page_keeps_its_query_count_as_runners_grow(lead, django_assert_num_queries):
    for n in range(8):
        make_runtime(make_agent(name=f"a{n}"), make_runner(f"r{n}"))
    make_runtime(make_agent(name="waiting"))
    # session, user, roles, runners, their agents' runtimes, the agents waiting
    with django_assert_num_queries(6):
        page = lead.get(reverse("fleet-runners")).content.decode()
    assert "a7" in page and "1 agent waits for a runner" in page
