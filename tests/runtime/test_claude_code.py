"""The real Claude Code, started and kept by a real runner process: a builder pulls its
task through MCP, claims, edits, commits and submits; a reviewer in a fresh session posts
a finding; messages are typed in only at an idle prompt; the runner killed with -9 is
replaced and adopts the session; a rotation starts a fresh session that boots from the
journal; a CLI that dies is restarted; a budget stop ends it. Only the model is ours."""

from __future__ import annotations

import json
import os
import subprocess
import time
from decimal import Decimal

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from fleet import runtime
from fleet.models import Agent, Budget, Event, Finding, Review, Runtime, Task, Wave
from fleet.spawn import spawn

from ..conftest import make_repository, make_task, make_user, make_wave
from .conftest import API_KEY, RunnerProcess, claude_config, cli, wait_for, wait_until_ended
from .scripted import Conversation, ScriptedModel, text, tool

pytestmark = [pytest.mark.slow, pytest.mark.cli, pytest.mark.django_db(transaction=True)]

MARKER = "carry on from the discount rounding"  # the journal entry the rotation boots from
FILE = "shop/discount.py"


def fleet(name: str, **arguments) -> dict:
    return tool(f"mcp__fleet__{name}", **arguments)


class Story:
    """The model's side: what a builder and a reviewer answer, turn by turn."""

    def __init__(self) -> None:
        self.served: list[tuple[float, str, str]] = []  # (time, agent, what it answered)

    def __call__(self, c: Conversation) -> list[dict]:
        whole = json.dumps(c.body)
        who = "rex" if "you are rex (reviewer)" in whole else "ada"
        if "still connecting" in c.last:  # the CLI's prompt came before its MCP server
            blocks = [tool("WaitForMcpServers")]
        elif c.answered == "WaitForMcpServers":
            blocks = [self.retry(c)]
        else:
            blocks = self.reviewer(c) if who == "rex" else self.builder(c, whole)
        self.served.append((time.time(), who, json.dumps(blocks)[:200]))
        return blocks

    @staticmethod
    def retry(c: Conversation) -> dict:
        """The call that found the MCP server still connecting, again (a session's
        opening work_next, or what a nudge asked for: a CLI restarted under a busy
        machine may take a while to connect)."""
        calls = [
            block
            for message in c.messages
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_use"
        ]
        waited = max(i for i, call in enumerate(calls) if call["name"] == "WaitForMcpServers")
        before = calls[waited - 1] if waited else None
        if before is None or not before["name"].startswith("mcp__fleet__"):
            return fleet("work_next")
        return tool(before["name"], **before.get("input", {}))

    def builder(self, c: Conversation, whole: str) -> list[dict]:
        last = c.last
        if c.turns == 0 and MARKER in whole:
            return [text("Resumed from my journal: nothing left to do until review.")]
        if "new Fleet message" in last or "new Fleet messages" in last:
            return [fleet("inbox")]
        inbox = c.result("mcp__fleet__inbox")
        if c.turns == 0:
            return [fleet("work_next")]
        name = c.answered
        if name == "mcp__fleet__work_next":
            return [fleet("claim", paths=[FILE])]
        if name == "mcp__fleet__claim":
            worktree = c.result("mcp__fleet__work_next")["task"]["worktree_path"]
            code = "def discount(total):\\n    return round(total * 0.9, 2)\\n"
            script = (
                f"cd {worktree} && mkdir -p shop && printf '{code}' > {FILE}"
                f" && git add {FILE} && git commit -qm 'T-1: discount' && git rev-parse HEAD"
            )
            return [tool("Bash", command=script, description="write, commit")]
        if name == "Bash" and "T-1: discount" in json.dumps(c.messages[-2:]):
            return [fleet("submit")]
        if name == "mcp__fleet__submit":
            return [text("Submitted T-1 for review.")]
        if name == "mcp__fleet__inbox":
            subjects = " ".join(m["subject"] for m in inbox.get("messages", []))
            ack = [fleet("ack", message_id=m["id"]) for m in inbox.get("messages", [])]
            if "take a while" in subjects:
                return [*ack, tool("Bash", command="sleep 4", description="think")]
            if "rotate" in subjects:
                return [*ack, fleet("journal", kind="next", body=MARKER)]
            if "spend" in subjects:
                return [*ack, fleet("heartbeat", cost_usd=5.0, tokens_in=1000)]
            return [*ack, text(f"Read: {subjects}")]
        if name == "Bash":
            return [text("Thought it over.")]
        if name == "mcp__fleet__journal":
            return [fleet("heartbeat", context_pct=95)]
        if name == "mcp__fleet__heartbeat":
            return [text("Fleet said: " + c.last[:100])]
        return [text("Done.")]

    def reviewer(self, c: Conversation) -> list[dict]:
        name = c.answered
        if not name:  # the opening instruction, or a nudge typed at its prompt
            return [fleet("work_next")]
        if name == "mcp__fleet__work_next":
            work = c.result("mcp__fleet__work_next")
            if not isinstance(work, dict) or work.get("kind") != "review":
                return [text("Nothing to review yet.")]
            return [fleet("review", review_id=work["review_id"])]
        if name == "mcp__fleet__review":
            review = c.result("mcp__fleet__work_next")["review_id"]
            finding = {
                "severity": "major",
                "path": FILE,
                "line_start": 2,
                "line_end": 2,
                "title": "rounding",
                "body": "round() is banker's rounding: 0.125 becomes 0.12.",
                "suggested_fix": "use Decimal.quantize with ROUND_HALF_UP",
            }
            return [fleet("post_findings", review_id=review, findings=[finding])]
        return [text("Review posted.")]


@pytest.fixture
def world(live_fleet, git_origin, settings, data_dir, tmp_path, tmux):
    claude = cli("claude")
    settings.FLEET_PUBLIC_URL = live_fleet.url
    _, clone = git_origin
    repository = make_repository(path=str(clone), slug="shop")
    task = make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key="T-1",
        status=Task.READY,
        title="Discounts",
        spec="Add shop/discount.py with discount(total).",
    )
    story = Story()
    with ScriptedModel(story) as model:
        ada = spawn(
            repository=repository, role=Agent.BUILDER, name="ada", task=task, harness="claude"
        )
        rex = spawn(repository=repository, role=Agent.REVIEWER, name="rex", harness="claude")
        config = claude_config(
            tmp_path / "claude-config", trusted=[str(ada.directory), str(rex.directory)]
        )
        env = {
            **os.environ,
            "CLAUDE_CONFIG_DIR": str(config),
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        runner = RunnerProcess(live_fleet.url, tmux, tmp_path, env).start()
        yield {
            "model": model,
            "story": story,
            "runner": runner,
            "tmux": tmux,
            "ada": ada.agent,
            "rex": rex.agent,
            "task": task,
            "claude": claude,
        }
        runner.stop()
        assert not model.errors, model.errors[0]


def pane_pid(tmux, agent: str) -> str:
    return tmux._run("display-message", "-p", "-t", f"fleet-{agent}", "#{pane_pid}").strip()


def test_claude_code_does_a_task_end_to_end_under_the_runner(world):
    model, story, runner, tmux = world["model"], world["story"], world["runner"], world["tmux"]
    ada, task = world["ada"], world["task"]
    log = runner.log
    lead = make_user("lee", "lead", password="pw")

    # The builder boots (SessionStart hook), pulls, claims, edits, commits and submits.
    def submitted():
        task.refresh_from_db()
        return task.status == Task.IN_REVIEW and task.head_sha

    wait_for(submitted, timeout=120, what="T-1 submitted by Claude Code", log=log)
    worktree = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=task.worktree_path, capture_output=True, text=True
    ).stdout.strip()
    assert task.head_sha == worktree
    # Its first request (the session in its worktree) carries the SessionStart digest.
    first = next(r for r in model.requests if str(task.worktree_path) in json.dumps(r))
    assert Conversation(first).turns == 0
    assert "you are ada (builder)" in json.dumps(first) and "Add shop/discount.py" in json.dumps(
        first
    )
    assert (
        task.claims.filter(path=FILE).exists()
        or Event.objects.filter(kind="claim.granted", payload__path=FILE).exists()
    )
    browser = DjangoClient()
    browser.login(username="lee", password="pw")
    page = browser.get(f"/tasks/{task.key}/").content.decode()
    assert task.head_sha[:7] in page

    # A fresh reviewer session reads the review and posts a finding.
    review = Review.objects.get(task=task)
    wait_for(
        lambda: Finding.objects.filter(review=review).exists(),
        timeout=120,
        what="rex's finding",
        log=log,
    )
    finding = Finding.objects.get(review=review)
    assert finding.path == FILE and "banker" in finding.body
    wait_for(
        lambda: Event.objects.filter(
            kind="agent.runtime_generation", agent__name="rex", payload__reason="review done"
        ).exists(),
        timeout=60,
        what="rex's fresh session after its review",
        log=log,
    )

    # A message while ada idles is typed in once, and read with the inbox tool.
    def idle():
        return Runtime.objects.get(agent=ada).state == Runtime.READY

    wait_for(idle, timeout=60, what="ada idle", log=log)
    runtime.message(ada, by=lead, subject="take a while", body="think about it")
    wait_for(lambda: any("sleep 4" in s[2] for s in story.served), timeout=60, what="busy")
    # Busy now (sleep 4): a second message waits for the prompt.
    runtime.message(ada, by=lead, subject="rounding", body="see rex's finding")
    wait_for(
        lambda: any("Read: rounding" in s[2] for s in story.served),
        timeout=60,
        what="the second message read",
        log=log,
    )
    turn_done = next(t for t, who, what in story.served if "Thought it over" in what)
    nudged = [r for r in model.requests if "new Fleet message" in Conversation(r).last]
    assert len(nudged) == 2, [Conversation(r).last for r in nudged]
    wait_for(
        lambda: Event.objects.filter(kind="agent.woken", agent=ada).count() == 2,
        timeout=10,
        what="the second nudge reported",
        log=log,
    )
    # The second nudge was typed once the busy turn had ended, not during it.
    second = Event.objects.filter(kind="agent.woken", agent=ada).order_by("pk").last()
    sent = Event.objects.get(kind="agent.message", payload__subject="rounding").created_at
    assert sent.timestamp() < turn_done < second.created_at.timestamp()

    # The runner killed with -9 and started again adopts the session: same process.
    wait_for(idle, timeout=60, what="ada idle again", log=log)
    before = pane_pid(tmux, "ada")
    generation = Runtime.objects.get(agent=ada).generation
    runner.kill()
    runner.start()
    seen = Runtime.objects.get(agent=ada).reported_at
    wait_for(
        lambda: Runtime.objects.get(agent=ada).reported_at > seen,
        timeout=30,
        what="the new runner's report",
        log=log,
    )
    assert pane_pid(tmux, "ada") == before
    assert Runtime.objects.get(agent=ada).generation == generation
    assert [p.session for p in tmux.panes().values()].count("fleet-ada") == 1

    # A rotation: the journal, a heartbeat at 95% → the CLI ends, a fresh session boots
    # from the journal (its first request carries the digest).
    requests_before = len(model.requests)
    runtime.message(ada, by=lead, subject="rotate now", body="your context is full")
    wait_for(
        lambda: Runtime.objects.get(agent=ada).generation > generation,
        timeout=90,
        what="a rotation",
        log=log,
    )
    wait_for(
        lambda: any(
            Conversation(r).turns == 0 and MARKER in json.dumps(r)
            for r in model.requests[requests_before:]
        ),
        timeout=90,
        what="the fresh session's first request with the journal digest",
        log=log,
    )
    assert pane_pid(tmux, "ada") != before

    # A CLI that dies is reported and restarted.
    wait_for(idle, timeout=60, what="ada idle after rotation", log=log)
    generation = Runtime.objects.get(agent=ada).generation
    # The CLI itself (launch.sh, the pane's process, waits for it and records its code).
    subprocess.run(["pkill", "-9", "-P", pane_pid(tmux, "ada")], check=True)
    wait_for(
        lambda: Event.objects.filter(kind="agent.crashed", agent=ada).exists(),
        timeout=30,
        what="the crash reported",
        log=log,
    )
    wait_for(
        lambda: Runtime.objects.get(agent=ada).observed_generation > generation and idle(),
        timeout=90,
        what="a restarted CLI at its prompt",
        log=log,
    )

    # A budget stop ends the process that spends.
    Budget.objects.create(scope="agent", agent=ada, limit_usd=Decimal("1"))
    stop_at = timezone.now()
    runtime.message(ada, by=lead, subject="spend", body="report your spend")
    wait_for(
        lambda: Agent.objects.get(pk=ada.pk).status == Agent.STOPPED,
        timeout=60,
        what="ada stopped at its cap",
        log=log,
    )
    wait_until_ended(tmux, "ada", log=log)
    assert not Event.objects.filter(kind="agent.crashed", agent=ada, created_at__gt=stop_at)
