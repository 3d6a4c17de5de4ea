"""The runner against a live Fleet and real tmux, with a stand-in CLI (the command
harness): start, wake, busy, crash and restart, stop, kill, adopt, reboot, orphans,
and the faults a person must be told about."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet import runtime
from fleet.models import Agent, Event, Runtime
from fleet.runner.supervisor import Supervisor
from fleet.runner.tmux import Tmux

from ..conftest import make_user
from .conftest import make_runner, received, runtime_of, spawn_fake, until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def lead(db):
    return make_user("lee", "lead")


def ready(name: str) -> bool:
    return runtime_of(name).state == Runtime.READY


def test_starts_types_the_opening_then_wakes_only_an_idle_prompt(live_fleet, tmux, data_dir, lead):
    runner = make_runner(live_fleet.url, tmux)
    agent = spawn_fake("ada")
    assert runtime_of("ada").state == Runtime.PENDING
    until(runner, lambda: ready("ada"), what="ada at its prompt")
    found = runtime_of("ada")
    assert found.runner.name == "local" and found.observed_generation == 1
    assert "fleet>" in found.screen
    # The opening instruction is typed once, at the first idle prompt.
    until(runner, lambda: received(agent), what="the opening instruction")
    assert received(agent) == [runtime.opening(Agent.ORCHESTRATOR, hooks=False)]

    # Busy: a message waits until the prompt is back, then is typed once.
    tmux.type("fleet-ada", "work 3")
    until(runner, lambda: runtime_of("ada").state == Runtime.BUSY, what="busy")
    runtime.message(agent, by=lead, subject="rebase on main", body="main moved")
    runner.tick()
    assert not any("Fleet message" in line for line in received(agent))
    until(runner, lambda: any("1 new Fleet message" in x for x in received(agent)), what="nudge")
    for _ in range(3):
        runner.tick()
    nudges = [line for line in received(agent) if "Fleet message" in line]
    assert len(nudges) == 1
    assert runtime_of("ada").nudged_through > 0
    assert Event.objects.filter(kind="agent.woken", agent=agent).count() == 1


def test_a_crash_is_reported_with_its_screen_and_restarted_up_to_the_limit(
    live_fleet, tmux, data_dir, settings
):
    runner = make_runner(live_fleet.url, tmux)
    agent = spawn_fake("bo")
    until(runner, lambda: received(agent), what="the opening typed (nothing types over it)")
    tmux.type("fleet-bo", "crash 7")
    until(runner, lambda: runtime_of("bo").generation == 2, what="a restart")
    crash = Event.objects.get(kind="agent.crashed", agent__name="bo")
    assert crash.payload["exit_code"] == 7 and "crash 7" in crash.payload["screen"]
    until(runner, lambda: ready("bo") and runtime_of("bo").observed_generation == 2)
    assert runtime_of("bo").restarts == 1


def test_crashing_past_the_limit_fails_until_a_person_restarts(
    live_fleet, tmux, data_dir, settings, lead
):
    runner = make_runner(live_fleet.url, tmux)
    agent = spawn_fake("cy", command="sh -c 'echo cannot start; exit 5'")
    until(runner, lambda: runtime_of("cy").state == Runtime.FAILED, what="failed", timeout=40)
    found = runtime_of("cy")
    assert "exited 4 times in a row" in found.error and found.exit_code == 5
    generation = found.generation
    for _ in range(3):  # nothing starts it again by itself
        runner.tick()
    assert runtime_of("cy").generation == generation
    runtime.restart(agent, by=lead)
    assert runtime_of("cy").generation == generation + 1 and runtime_of("cy").restarts == 0


def test_stop_ends_the_cli_cleanly_and_resume_starts_it(live_fleet, tmux, data_dir, lead):
    runner = make_runner(live_fleet.url, tmux)
    agent = spawn_fake("di")
    until(runner, lambda: ready("di"), what="di ready")
    runtime.stop(agent, by=lead)
    until(runner, lambda: "fleet-di" not in tmux.panes(), what="session gone")
    runner.tick()
    assert runtime_of("di").state == Runtime.ENDED
    agent.refresh_from_db()
    assert agent.status == Agent.STOPPED
    agent.resume(by=lead)
    until(runner, lambda: ready("di"), what="started again")


def test_kill_ends_it_at_once(live_fleet, tmux, data_dir, lead):
    runner = make_runner(live_fleet.url, tmux)
    agent = spawn_fake("ed")
    until(runner, lambda: received(agent), what="the opening typed (nothing types over it)")
    tmux.type("fleet-ed", "work 30")  # busy: a clean exit would wait
    runtime.stop(agent, by=lead, kill=True)
    runner.tick()
    assert "fleet-ed" not in tmux.panes()
    assert Event.objects.filter(kind="agent.killed", agent=agent).exists()


def test_a_restarted_runner_adopts_and_a_reboot_relaunches(live_fleet, tmux, data_dir):
    runner = make_runner(live_fleet.url, tmux)
    spawn_fake("fa")
    until(runner, lambda: ready("fa"), what="fa ready")
    before = tmux.panes()["fleet-fa"]
    # A new runner process (the old one killed): it adopts, never duplicates.
    again = Supervisor(runner.fleet, tmux, name="local", grace=2.0)
    for _ in range(3):
        again.tick()
    after = tmux.panes()["fleet-fa"]
    assert (after.pid, after.created) == (before.pid, before.created)
    assert runtime_of("fa").state == Runtime.READY
    # A reboot: no tmux server at all. It starts again, in the same directory.
    tmux._run("kill-server", check=False)
    until(again, lambda: ready("fa"), what="relaunched")
    assert tmux.panes()["fleet-fa"].pid != before.pid
    assert Path(runtime_of("fa").directory).name == "fa"


def test_a_session_no_agent_wants_is_ended_and_reported(live_fleet, tmux, data_dir):
    runner = make_runner(live_fleet.url, tmux)
    agent = spawn_fake("gu")
    until(runner, lambda: ready("gu"), what="gu ready")
    Runtime.objects.filter(agent=agent).delete()
    runner.tick()
    assert "fleet-gu" not in tmux.panes()
    runner.tick()
    ended = Event.objects.get(kind="runner.session_ended")
    assert ended.payload["session"] == "fleet-gu"


def test_faults_are_said_on_the_agent_and_nothing_starts(live_fleet, tmux, data_dir):
    runner = make_runner(live_fleet.url, tmux)
    spawn_fake("ha", command="/nonexistent/agent-cli --go")
    gone = spawn_fake("io")
    Path(gone.runtime.directory).rename(Path(gone.runtime.directory).with_name("io-moved"))
    until(runner, lambda: runtime_of("ha").state == Runtime.FAILED, what="ha failed")
    until(runner, lambda: runtime_of("io").state == Runtime.FAILED, what="io failed")
    assert "/nonexistent/agent-cli is not installed" in runtime_of("ha").error
    assert "is gone" in runtime_of("io").error
    assert tmux.panes() == {}


def test_no_tmux_is_said_and_the_agent_waits(live_fleet, data_dir):
    runner = make_runner(live_fleet.url, Tmux(binary="/nonexistent/tmux"))
    spawn_fake("jo")
    runner.tick()
    runner.tick()
    found = runtime_of("jo")
    assert "tmux is not installed" in found.error and found.state == Runtime.PENDING
    assert "tmux is not installed" in found.runner.error


def test_a_silent_runner_shows_its_agents_as_unknown(live_fleet, tmux, data_dir, settings):
    runner = make_runner(live_fleet.url, tmux)
    spawn_fake("ka")
    until(runner, lambda: ready("ka"), what="ka ready")
    settings.FLEET_RUNNER_SILENT = 1
    time.sleep(1.5)
    assert runtime_of("ka").shown_state() == "unknown"


def test_sessions_a_runner_did_not_start_are_never_touched(live_fleet, tmux, data_dir):
    """A person's own ``fleet-…`` session, and another runner's, on the same tmux server:
    a runner that does not know its name yet (its first tick) ends neither."""
    from fleet.models import Runner
    from fleet.runner.client import Fleet
    from fleet.runner.supervisor import Supervisor

    tmux._run("new-session", "-d", "-s", "fleet-notes", "sleep 60")
    tmux._run("new-session", "-d", "-s", "fleet-WIP", "sleep 60")  # not an agent's name
    tmux._run("new-session", "-d", "-s", "fleet-other", "sleep 60")
    tmux._run("set-option", "-t", "fleet-other", "@fleet_runner", "elsewhere")
    token = Runner.objects.create(name="here").issue_token()
    runner = Supervisor(Fleet(live_fleet.url, token), tmux)  # as python -m fleet.runner
    for _ in range(3):
        runner.tick()
    assert runner.name == "here"
    sessions = set(tmux._run("list-sessions", "-F", "#{session_name}").split())
    assert {"fleet-notes", "fleet-WIP", "fleet-other"} <= sessions
    assert not Event.objects.filter(kind="runner.session_ended").exists()


def test_one_agent_that_cannot_start_never_stops_the_others(live_fleet, tmux, data_dir):
    runner = make_runner(live_fleet.url, tmux)
    spawn_fake("ma")
    bad = spawn_fake("mo")
    Runtime.objects.filter(agent=bad).update(command="echo 'unbalanced")  # from before
    until(runner, lambda: ready("ma"), what="ma started though mo cannot be")
    until(runner, lambda: "quotation" in runtime_of("mo").error, what="mo's reason shown")


def start_runner(url: str, token: str, socket: str, log: Path):
    import subprocess
    import sys

    from .test_standalone import ROOT, clean_env

    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet.runner", "--url", url, "--socket", socket],
            env=clean_env(FLEET_RUNNER_TOKEN=token),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


def wait_for(check, timeout: float = 20, what: str = ""):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_runner_process_killed_with_9_is_adopted_and_a_revoked_token_stops_it(
    live_fleet, tmux, data_dir, tmp_path
):
    from fleet.models import Runner

    runner = Runner.objects.create(name="proc")
    token = runner.issue_token()
    agent = spawn_fake("la")
    log = tmp_path / "runner.log"
    first = start_runner(live_fleet.url, token, tmux.socket, log)
    try:
        wait_for(lambda: runtime_of("la").state == Runtime.READY, what="la ready")
        pane = tmux.panes()["fleet-la"]
        wait_for(lambda: received(agent), what="the opening typed")
        # The runner's token is not passed on to the agents' CLIs (the tmux server
        # inherits the environment of the runner that started it).
        assert token not in Path(f"/proc/{pane.pid}/environ").read_bytes().decode(
            "utf-8", "replace"
        )
        first.kill()  # -9: no cleanup at all
        first.wait(10)
        second = start_runner(live_fleet.url, token, tmux.socket, log)
        try:
            time.sleep(3)
            assert tmux.panes()["fleet-la"].pid == pane.pid  # adopted, not restarted
            assert list(tmux.panes()) == ["fleet-la"]
            # Adopted: its opening is not typed a second time.
            assert received(agent) == [runtime.opening(Agent.ORCHESTRATOR, hooks=False)]
            runner.revoke_token(by=None)
            assert second.wait(15) == 3
        finally:
            if second.poll() is None:
                second.kill()
        text = log.read_text()
        assert "refused this runner" in text and "revoked" in text
        assert token not in text
        assert "fleet-la" in tmux.panes()  # its agent keeps running
    finally:
        if first.poll() is None:
            first.kill()
