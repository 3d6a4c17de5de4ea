"""The real Codex CLI, launched, woken and stopped by a real runner process: an
orchestrator boots through Fleet's MCP server, a message is typed in only at its idle
prompt and read with the inbox tool, and a stop ends the process. Only the model (a
scripted Responses API server) is ours."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleet import runtime
from fleet.models import Agent, Event, Runtime
from fleet.spawn import spawn

from ..conftest import make_repository, make_user
from .conftest import RunnerProcess, cli, wait_for, wait_until_ended
from .scripted_openai import Conversation, ScriptedModel, call, pause, text

pytestmark = [pytest.mark.slow, pytest.mark.cli, pytest.mark.django_db(transaction=True)]

API_KEY = "sk-scripted-openai-0123456789abcdef"


def fleet(name: str, **arguments) -> dict:
    return call(f"mcp__fleet__{name}", **arguments)


class Story:
    """The model's side: what the orchestrator answers, turn by turn."""

    def __init__(self) -> None:
        self.served: list[tuple[float, str]] = []  # (time, what it answered)

    def __call__(self, c: Conversation) -> list[dict]:
        import time

        items = self.answer(c)
        self.served.append((time.time(), json.dumps(items)[:300]))
        return items

    def answer(self, c: Conversation) -> list[dict]:
        last, name = c.last, c.answered
        if "is not a function" in last and name:  # the MCP server was not up yet
            again = fleet(name.removeprefix("mcp__fleet__"))
            return [
                {
                    **again,
                    "input": pause(1)["input"].replace("text('paused');", "") + again["input"],
                }
            ]
        if "new Fleet message" in last:
            return [fleet("inbox")]
        if c.turns == 0:
            return [fleet("boot")]
        if name == "mcp__fleet__boot":
            return [text("Booted: waiting for messages.")]
        if name == "mcp__fleet__inbox":
            messages = c.result("mcp__fleet__inbox").get("messages", [])
            newest = max(messages, key=lambda m: m["id"])["subject"] if messages else ""
            if "take a while" in newest:
                return [pause(4)]
            return [text(f"Read: {newest}")]
        if last.startswith("Script completed") and "paused" in last:
            return [text("Thought it over.")]
        return [text("Done.")]


def codex_processes(directory: Path) -> list[str]:
    """Command lines of live processes that run from this agent's CODEX_HOME or name it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        if str(directory / ".fleet" / "codex") in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def world(live_fleet, settings, data_dir, tmp_path, tmux):
    cli("codex")
    settings.FLEET_PUBLIC_URL = live_fleet.url
    repository = make_repository(path=str(tmp_path), slug="shop")
    story = Story()
    with ScriptedModel(story) as model:
        olga = spawn(repository=repository, role=Agent.ORCHESTRATOR, name="olga", harness="codex")
        env = {
            **os.environ,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": f"{model.url}/v1",
        }
        env.pop("CODEX_HOME", None)
        runner = RunnerProcess(live_fleet.url, tmux, tmp_path, env).start()
        yield {
            "model": model,
            "story": story,
            "runner": runner,
            "tmux": tmux,
            "olga": olga,
        }
        runner.stop()
        assert not model.errors, model.errors[0]


def test_codex_is_launched_woken_and_stopped_by_the_runner(world):
    model, story, runner, tmux = world["model"], world["story"], world["runner"], world["tmux"]
    olga, log = world["olga"].agent, runner.log
    directory = world["olga"].directory
    lead = make_user("lee", "lead", password="pw")

    # Launched: its opening prompt (on the command line) has it call `boot` through
    # Codex's MCP client; then it idles at its own prompt.
    def booted():
        return any(
            isinstance(Conversation(r).result("mcp__fleet__boot"), dict)
            and "error" not in Conversation(r).result("mcp__fleet__boot")
            for r in model.requests
        )

    wait_for(booted, timeout=90, what="olga's boot through MCP", log=log)

    def idle():
        return Runtime.objects.get(agent=olga).state == Runtime.READY

    wait_for(idle, timeout=60, what="olga idle at Codex's prompt", log=log)
    first = model.requests[0]
    assert "Call the fleet MCP tool `boot` first" in json.dumps(first)
    # The fleet MCP tools are offered (as a deferred namespace, called from `exec`); the
    # opening prompt can go out before the MCP server is up (then the call is retried).
    assert any("mcp__fleet: Fleet coordinates" in json.dumps(r) for r in model.requests)
    results = [Conversation(r).result("mcp__fleet__boot") for r in model.requests]
    boot = next(b for b in results if isinstance(b, dict))
    assert "olga" in json.dumps(boot)
    # The key came from the runner's environment, to the runner's base URL.
    assert all(h.get("authorization") == f"Bearer {API_KEY}" for h in model.headers)
    script = (directory / ".fleet" / "launch.sh").read_text()
    command = next(line for line in script.splitlines() if "codex" in line and "--" in line)
    assert API_KEY not in command  # not on the command line (an export, 0700)
    assert "--no-daemon" in script

    # Woken: a message while it idles is typed in as a nudge and read with `inbox`.
    runtime.message(olga, by=lead, subject="take a while", body="think about it")
    wait_for(
        lambda: any("done, 4000" in s for _, s in story.served),
        timeout=60,
        what="busy on the first message",
        log=log,
    )
    # Busy now (a 4 s pause): a second message waits for the prompt.
    runtime.message(olga, by=lead, subject="the plan", body="draft it")
    wait_for(
        lambda: any("Read: the plan" in s for _, s in story.served),
        timeout=60,
        what="the second message read",
        log=log,
    )
    nudged = [r for r in model.requests if "new Fleet message" in Conversation(r).last]
    assert len(nudged) == 2, [Conversation(r).last for r in nudged]
    assert "read them with the fleet inbox tool" in Conversation(nudged[0]).last
    read = next(r for r in model.requests if Conversation(r).answered == "mcp__fleet__inbox")
    subjects = [m["subject"] for m in Conversation(read).result("mcp__fleet__inbox")["messages"]]
    assert "take a while" in subjects
    wait_for(
        lambda: Event.objects.filter(kind="agent.woken", agent=olga).count() == 2,
        timeout=10,
        what="the second nudge reported",
        log=log,
    )
    # The second nudge was typed once the busy turn had ended, not during it.
    turn_done = next(t for t, s in story.served if "Thought it over" in s)
    second = Event.objects.filter(kind="agent.woken", agent=olga).order_by("pk").last()
    sent = Event.objects.get(kind="agent.message", payload__subject="the plan").created_at
    assert sent.timestamp() < turn_done < second.created_at.timestamp()

    # Stopped while it works: the runner interrupts the turn (Escape), types /quit, and
    # the process and its session end (cleanly: no kill, and "/quit" never reached the
    # model as a message).
    wait_for(idle, timeout=60, what="olga idle again", log=log)
    runtime.message(olga, by=lead, subject="take a while again", body="and again")
    wait_for(
        lambda: sum("done, 4000" in s for _, s in story.served) == 2,
        timeout=60,
        what="busy on the third message",
        log=log,
    )
    runtime.stop(olga, by=lead)
    wait_until_ended(tmux, "olga", log=log)
    assert not Event.objects.filter(kind="agent.crashed", agent=olga).exists()
    assert "ending it (/quit Enter)" in log.read_text()
    assert "did not exit within" not in log.read_text()  # it quit, it was not killed
    assert not any("quit" in Conversation(r).last for r in model.requests)
    wait_for(
        lambda: not codex_processes(directory),
        timeout=10,
        what="no Codex process left (no daemon)",
        log=log,
    )
