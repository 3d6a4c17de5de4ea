"""Every role's whole loop through the MCP SDK's own client, against a live Fleet (daphne):
a builder pulls, claims, journals, reports a check and submits; a reviewer takes a review,
reads it and posts findings; an orchestrator drafts a plan a lead then sees."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import Client as PageClient
from mcp import ClientSession
from mcp.client.stdio import stdio_client

from fleet.agent import cli
from fleet.models import Agent, CheckRun, Finding, JournalEntry, Review, Task, Wave
from fleet.spawn import spawn

from ..conftest import make_repository, make_task, make_user, make_wave
from .conftest import run_agent
from .test_cli import builder  # noqa: F401 - the shared fixture
from .test_mcp import bridge, payload

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GIT_USER = ["-c", "user.name=a", "-c", "user.email=a@b"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *GIT_USER, *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit_file(cwd: Path, name: str, text: str) -> str:
    (cwd / name).write_text(text)
    git(cwd, "add", name)
    git(cwd, "commit", "-qm", name)
    return git(cwd, "rev-parse", "HEAD")


@pytest.fixture
def pulling_builder(live_fleet, git_origin, settings, data_dir, tmp_path):
    """A builder spawned without a task: its identity sits in the data directory, which
    (like Fleet's default ``./data``) is inside another git checkout."""
    settings.FLEET_PUBLIC_URL = live_fleet.url
    git(data_dir, "init", "-q")
    outer_head = commit_file(data_dir, "fleet.txt", "Fleet's own checkout\n")
    _, clone = git_origin
    # This test's own worktrees: the live server's data directory outlives the test.
    repository = make_repository(
        path=str(clone), slug="shop", worktree_root=str(tmp_path / "worktrees")
    )
    make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key="T-1",
        status=Task.READY,
        spec="Add a cart.",
    )
    spawned = spawn(repository=repository, role=Agent.BUILDER, name="ada")
    assert spawned.directory.is_relative_to(data_dir)
    return spawned, outer_head


async def call(session: ClientSession, tool: str, **arguments) -> dict:
    return payload(await session.call_tool(tool, arguments))


async def test_a_builder_pulls_claims_journals_reports_a_check_and_submits(pulling_builder):
    spawned, outer_head = pulling_builder
    async with (
        stdio_client(bridge(spawned.directory)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        booted = await call(session, "boot")
        assert booted["agent"]["role"] == "builder" and booted["task"] is None
        work = await call(session, "work_next")
        assert work["kind"] == "task" and work["task"]["key"] == "T-1"
        worktree = Path(work["task"]["worktree_path"])
        assert worktree.is_dir() and not worktree.is_relative_to(spawned.directory)

        beat = await call(session, "heartbeat", tool_calls=100, files_read=20)
        assert beat["context_pct"] >= 70 and beat["epoch"] == work["task"]["lease_epoch"]
        claims = await call(session, "claim", paths=["cart.py"])
        assert [c["path"] for c in claims["claims"]] == ["cart.py"]
        await call(session, "journal", kind="done", body="cart model")

        head = await sync_to_async(commit_file)(worktree, "cart.py", "CART = []\n")
        assert head != outer_head
        check = await call(session, "report_check", name="unit", status="passed")
        submitted = await call(session, "submit")
        assert submitted["task"] == "T-1" and submitted["review_id"]

    task = await sync_to_async(Task.objects.get)(key="T-1")
    assert task.status == Task.IN_REVIEW and task.head_sha == head
    run = await sync_to_async(CheckRun.objects.select_related("task").get)(pk=check["id"])
    assert (run.task.key, run.name, run.commit_sha, run.status) == ("T-1", "unit", head, "passed")
    entry = await sync_to_async(JournalEntry.objects.select_related("task").get)(kind="done")
    assert entry.task.key == "T-1"


def test_a_builder_without_a_task_submits_its_worktrees_head_from_the_cli(pulling_builder):
    """Hole 10: without ``--commit`` the CLI sent the HEAD of the directory holding the
    identity (here, like Fleet's own checkout), not the task's worktree."""
    spawned, outer_head = pulling_builder
    pulled = run_agent("--json", "work", cwd=spawned.directory)
    assert pulled.returncode == 0, pulled.stderr
    worktree = Path(json.loads(pulled.stdout)["task"]["worktree_path"])
    state = json.loads((spawned.directory / ".fleet/state.json").read_text())
    assert state["worktree"] == str(worktree)
    head = commit_file(worktree, "cart.py", "CART = []\n")
    submitted = run_agent("submit", cwd=spawned.directory)
    assert submitted.returncode == 0, submitted.stderr
    task = Task.objects.get(key="T-1")
    assert task.head_sha == head != outer_head
    assert Review.objects.get(task=task).commit_sha == head


def test_submit_refuses_clearly_when_no_worktree_is_known(pulling_builder):
    spawned, _ = pulling_builder
    pulled = run_agent("--json", "work", cwd=spawned.directory)
    assert pulled.returncode == 0, pulled.stderr
    worktree = Path(json.loads(pulled.stdout)["task"]["worktree_path"])
    commit_file(worktree, "cart.py", "CART = []\n")
    state_file = spawned.directory / ".fleet/state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "worktree": str(worktree / "gone")}))
    refused = run_agent("submit", cwd=spawned.directory)
    assert refused.returncode == 1 and "no_worktree" in refused.stderr
    assert Task.objects.get(key="T-1").status == Task.WORKING  # nothing was sent
    # With the commit named, submitting does not need the worktree.
    named = run_agent(
        "submit", "--commit", git(worktree, "rev-parse", "HEAD"), cwd=spawned.directory
    )
    assert named.returncode == 0, named.stderr


@pytest.fixture
def in_review(builder, data_dir):  # noqa: F811
    """T-1 built and submitted by ada, and a fresh reviewer spawned for it."""
    head = commit_file(builder.directory, "cart.py", "CART = []\nTOTAL = 0\n")
    assert run_agent("boot", cwd=builder.directory).returncode == 0
    submitted = run_agent("submit", cwd=builder.directory)
    assert submitted.returncode == 0, submitted.stderr
    repository = Task.objects.get(key="T-1").repository
    reviewer = spawn(repository=repository, role=Agent.REVIEWER, name="rex")
    return reviewer, head


async def test_a_reviewer_takes_reads_and_closes_a_review(in_review):
    reviewer, head = in_review
    async with (
        stdio_client(bridge(reviewer.directory)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await call(session, "boot")
        work = await call(session, "work_next")
        assert work["kind"] == "review" and work["task"]["key"] == "T-1"
        # A rotated session boots onto the task under review: it is not the reviewer's
        # to journal on (only its builder may).
        rebooted = await call(session, "boot")
        assert rebooted["task"]["key"] == "T-1"
        review = await call(session, "review", review_id=work["review_id"])
        assert review["commit_sha"] == head and review["task"]["spec"] == "Add a cart."
        assert review["changed_files"] == ["cart.py"] and "+TOTAL = 0" in review["diff"]
        await call(session, "journal", kind="note", body="reading the cart")
        finding = {
            "path": "cart.py",
            "line_start": 1,
            "line_end": 2,
            "severity": "minor",
            "title": "A module-level cart",
            "body": "Shared by every request.",
            "suggested_fix": "Keep the cart on the session.",
        }
        closed = await call(
            session, "post_findings", review_id=work["review_id"], findings=[finding]
        )
        assert closed["id"] == work["review_id"]
        again = await session.call_tool(
            "post_findings", {"review_id": work["review_id"], "findings": []}
        )
        assert again.is_error and "review_closed" in again.content[0].text

    review = await sync_to_async(Review.objects.get)(pk=work["review_id"])
    assert review.status == Review.CLOSED
    found = await sync_to_async(Finding.objects.get)(review=review)
    assert (found.path, found.line_start, found.line_end, found.severity) == (
        "cart.py",
        1,
        2,
        "minor",
    )
    assert found.suggested_fix == "Keep the cart on the session."
    note = await sync_to_async(JournalEntry.objects.get)(agent__name="rex", kind="note")
    assert note.task_id is None


@pytest.fixture
def orchestrator(live_fleet, settings, data_dir):
    settings.FLEET_PUBLIC_URL = live_fleet.url
    repository = make_repository(slug="shop")
    return spawn(repository=repository, role=Agent.ORCHESTRATOR, name="olly")


async def test_an_orchestrator_drafts_a_plan_a_lead_sees_on_the_wave_page(orchestrator):
    async with (
        stdio_client(bridge(orchestrator.directory)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await call(session, "boot")
        plan = await call(session, "draft_plan", name="Sprint 9", slug="sprint-9")
        wave = await call(session, "add_wave", plan_id=plan["id"], name="Foundation")
        for key in ("T-1", "T-2"):
            task = await call(
                session,
                "add_task",
                wave_id=wave["id"],
                key=key,
                title=f"Cart part {key}",
                repository="shop",
                spec="Requirements: carts. Acceptance: tests pass.",
                declared_paths=["config/settings.py", f"src/{key}.py"],
            )
            assert task["status"] == "draft"
        read_back = await call(session, "read_plan", plan_id=plan["id"])
        (drafted,) = read_back["waves"]
        assert [t["key"] for t in drafted["tasks"]] == ["T-1", "T-2"]
        assert [r["path"] for r in drafted["matrix"]["rows"]] == ["config/settings.py"]
        refused = await session.call_tool("work_next", {})
        assert refused.is_error and "role" in refused.content[0].text

    lead = PageClient()
    await sync_to_async(lead.force_login)(await sync_to_async(make_user)("lea", "lead"))
    page = await sync_to_async(lead.get)("/plans/sprint-9/waves/1/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Cart part T-1" in html and "Cart part T-2" in html
    assert "drafted by agent olly" in html and "config/settings.py" in html


async def test_every_tool_names_its_cli_twin_and_every_command_has_a_tool(tmp_path):
    (tmp_path / ".fleet").mkdir()
    identity = {"url": "http://127.0.0.1:9", "token": "unused: tools are only listed"}
    (tmp_path / ".fleet/identity.json").write_text(json.dumps(identity))
    async with (
        stdio_client(bridge(tmp_path)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    twins = {}
    for name, tool in tools.items():
        named = re.findall(r"`python -m fleet\.agent ([a-z-]+)", tool.description or "")
        assert named, f"{name} names no CLI twin"
        assert named[0] in cli.COMMANDS, (name, named[0])
        twins[named[0]] = name
    assert set(cli.COMMANDS) - {"mcp", "hook", "watch"} == set(twins)

    def bounds(schema: dict) -> tuple:
        options = schema.get("anyOf", [schema])
        found = [o for o in options if o.get("type") == "integer"]
        return found[0].get("minimum"), found[0].get("maximum")

    beat = tools["heartbeat"].input_schema
    assert bounds(beat["properties"]["context_pct"]) == (0, 100)
    assert bounds(beat["properties"]["tool_calls"])[0] == 0
    assert bounds(beat["properties"]["files_read"])[0] == 0
    assert "context_pct" not in beat.get("required", [])


def test_a_reviewer_and_a_builders_check_through_the_cli(in_review):
    reviewer, head = in_review
    pulled = run_agent("--json", "work", cwd=reviewer.directory)
    assert pulled.returncode == 0, pulled.stderr
    review_id = json.loads(pulled.stdout)["review_id"]
    shown = run_agent("review", cwd=reviewer.directory)  # the review it took last
    assert shown.returncode == 0, shown.stderr
    assert "Add a cart." in shown.stdout and "- cart.py" in shown.stdout
    assert "+TOTAL = 0" in shown.stdout
    bad = run_agent("findings", "-", cwd=reviewer.directory, stdin="not json")
    assert bad.returncode == 1 and "bad_findings" in bad.stderr
    assert Review.objects.get(pk=review_id).status == Review.OPEN
    closed = run_agent("findings", "-", cwd=reviewer.directory, stdin="[]")
    assert closed.returncode == 0, closed.stderr
    assert Review.objects.get(pk=review_id).status == Review.CLOSED
    assert not Finding.objects.exists()


def test_a_builders_check_from_the_cli_is_on_its_worktrees_head(builder):  # noqa: F811
    head = commit_file(builder.directory, "cart.py", "CART = []\n")
    assert run_agent("boot", cwd=builder.directory).returncode == 0
    reported = run_agent("check", "unit", "failed", cwd=builder.directory)
    assert reported.returncode == 0, reported.stderr
    run = CheckRun.objects.select_related("task").get()
    assert (run.task.key, run.commit_sha, run.status) == ("T-1", head, "failed")


def test_an_orchestrator_drafts_and_reads_a_plan_through_the_cli(orchestrator):
    def olly(*args, **kw):
        done = run_agent("--json", *args, cwd=orchestrator.directory, **kw)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    plan = olly("draft-plan", "Sprint 9", "sprint-9")
    wave = olly("add-wave", str(plan["id"]), "--name", "Foundation")
    for key in ("T-1", "T-2"):
        olly(
            "add-task",
            str(wave["id"]),
            key,
            f"Cart part {key}",
            "--repository",
            "shop",
            "--spec-file",
            "-",
            "--path",
            "config/settings.py",
            stdin="Requirements: carts.",
        )
    read_back = olly("read-plan", str(plan["id"]))
    (drafted,) = read_back["waves"]
    assert [t["spec"] for t in drafted["tasks"]] == ["Requirements: carts."] * 2
    assert drafted["matrix"]["rows"][0]["tasks"] == ["T-1", "T-2"]
    human = run_agent("read-plan", str(plan["id"]), cwd=orchestrator.directory)
    assert "shared config/settings.py: T-1, T-2 (unresolved)" in human.stdout
