"""The stdlib agent client against a live daphne: the whole builder loop, hooks, wake, budget."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.models import (
    Agent,
    Budget,
    FileClaim,
    JournalEntry,
    Message,
    Review,
    Task,
    Wave,
)
from fleet.spawn import spawn

from ..conftest import make_repository, make_task, make_wave
from .conftest import run_agent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def builder(live_fleet, git_origin, settings, data_dir):
    """A builder spawned onto a ready task, with its identity in a real worktree."""
    settings.FLEET_PUBLIC_URL = live_fleet.url
    _, clone = git_origin
    repository = make_repository(path=str(clone), slug="shop")
    task = make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key="T-1",
        status=Task.READY,
        spec="Add a cart.",
    )
    spawned = spawn(repository=repository, role=Agent.BUILDER, name="ada", task=task)
    return spawned


def agent(spawned, *args, **kw):
    return run_agent(*args, cwd=spawned.directory, **kw)


def test_a_builder_boots_heartbeats_claims_journals_and_submits(builder):
    boot = agent(builder, "boot")
    assert boot.returncode == 0, boot.stderr
    assert "you are ada (builder)" in boot.stdout and "Task T-1" in boot.stdout
    assert "Add a cart." in boot.stdout

    beat = agent(
        builder,
        "--json",
        "heartbeat",
        "--context",
        "20",
        "--status",
        "coding",
        "--tokens-in",
        "100",
        "--cost",
        "0.01",
    )
    assert beat.returncode == 0, beat.stderr
    assert json.loads(beat.stdout)["epoch"] == 1
    ada = Agent.objects.get(name="ada")
    assert ada.status_line == "coding" and ada.context_pct == 20 and ada.tokens_used == 100

    claim = agent(builder, "claim", "shop/cart.py")
    assert claim.returncode == 0, claim.stderr
    assert FileClaim.objects.get().path == "shop/cart.py"

    assert agent(builder, "journal", "done", "cart model").returncode == 0
    assert JournalEntry.objects.get(agent=ada).task.key == "T-1"

    worktree = builder.directory
    (worktree / "cart.py").write_text("CART = []\n")
    subprocess.run(["git", "add", "cart.py"], cwd=worktree, check=True)
    subprocess.run(
        ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "cart"],
        cwd=worktree,
        check=True,
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=worktree, capture_output=True, text=True, check=True
    ).stdout.strip()
    submitted = agent(builder, "submit")
    assert submitted.returncode == 0, submitted.stderr
    task = Task.objects.get(key="T-1")
    assert task.status == Task.IN_REVIEW and task.head_sha == head
    assert Review.objects.get(task=task).commit_sha == head


def test_errors_are_one_clear_line_and_a_bad_token_is_not_retried(builder):
    identity = builder.directory / ".fleet/identity.json"
    data = json.loads(identity.read_text())
    data["token"] = "flt_wrong"
    identity.write_text(json.dumps(data))
    result = agent(builder, "boot")
    assert result.returncode == 1
    assert result.stderr.strip() == "fleet: unauthorized: missing or unknown bearer token"


def test_an_unreachable_fleet_is_reported_after_retries(tmp_path):
    result = run_agent(
        "--retries",
        "1",
        "inbox",
        cwd=tmp_path,
        env={"FLEET_URL": "http://127.0.0.1:9", "FLEET_TOKEN": "x"},
    )
    assert result.returncode == 1 and "unreachable" in result.stderr


def test_layer_one_stops_the_agent_when_the_budget_is_spent(builder):
    ada = Agent.objects.get(name="ada")
    Budget.objects.create(scope="agent", agent=ada, limit_usd=Decimal("1"), spent_usd=Decimal("1"))
    beat = agent(builder, "heartbeat", "--context", "5")
    assert beat.returncode == 3 and "STOP" in beat.stderr
    # The client now refuses to take or hand in work on its own, without asking.
    work = agent(builder, "work")
    assert work.returncode == 3 and "not continuing" in work.stderr


def test_watch_wakes_exactly_once_per_message(builder, tmp_path):
    ada = Agent.objects.get(name="ada")
    first = Message.objects.create(recipient=ada, subject="rebase please")
    second = Message.objects.create(recipient=ada, subject="spec v2")
    woken = tmp_path / "woken.txt"
    result = agent(
        builder,
        "watch",
        "--wake",
        f'echo "$FLEET_MESSAGE_ID" >> {woken}',
        "--interval",
        "0.1",
        "--max-polls",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert woken.read_text().split() == [str(first.pk), str(second.pk)]


HOOK_FIXTURES = Path(__file__).parent / "hooks"


def hook_payload(name: str, **changes) -> str:
    payload = json.loads((HOOK_FIXTURES / f"{name}.json").read_text())
    payload.update(changes)
    return json.dumps(payload)


def test_post_tool_use_hook_heartbeats_and_hands_the_model_its_mail(builder, tmp_path):
    ada = Agent.objects.get(name="ada")
    Message.objects.create(recipient=ada, subject="spec v2", body="Carts hold gift cards too.")
    transcript = tmp_path / "transcript.jsonl"
    transcript.write_bytes(b"x" * 4 * 130_000)  # ~130k tokens of a 200k window: 65%
    stdin = hook_payload("PostToolUse", transcript_path=str(transcript), cwd=str(builder.directory))
    result = agent(builder, "hook", "PostToolUse", stdin=stdin)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    context = output["hookSpecificOutput"]["additionalContext"]
    assert output["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    assert "spec v2" in context and "gift cards" in context and "60%" in context
    ada.refresh_from_db()
    assert ada.context_pct == 65 and ada.status_line == "Write done"


def test_session_start_and_stop_hooks(builder):
    start = agent(builder, "hook", "SessionStart", stdin=hook_payload("SessionStart"))
    assert start.returncode == 0 and "Task T-1" in start.stdout
    stop = agent(builder, "hook", "Stop", stdin=hook_payload("Stop"))
    assert stop.returncode == 0, stop.stderr
    note = JournalEntry.objects.get(agent__name="ada", kind="note")
    assert "session stopped" in note.body and "abc123" in note.body


def test_a_hook_never_breaks_the_session_when_fleet_is_down(tmp_path):
    result = run_agent(
        "--retries",
        "0",
        "hook",
        "PostToolUse",
        cwd=tmp_path,
        stdin=hook_payload("PostToolUse"),
        env={"FLEET_URL": "http://127.0.0.1:9", "FLEET_TOKEN": "x"},
    )
    assert result.returncode == 0 and "unreachable" in result.stderr and result.stdout == ""


def settings_hook(spawned, event: str) -> str:
    """The hook command exactly as Claude Code finds it in the worktree's settings."""
    settings = json.loads((spawned.directory / ".claude/settings.local.json").read_text())
    return settings["hooks"][event][0]["hooks"][0]["command"]


def test_the_short_post_tool_use_hook_answers_as_the_full_one(builder, tmp_path):
    import os

    ada = Agent.objects.get(name="ada")
    ada.stop(reason="person", by=None)
    ada.resume(by=None)
    ada.refresh_from_db()
    Message.objects.create(recipient=ada, subject="spec v3", body="Carts expire.")
    transcript = tmp_path / "transcript.jsonl"
    transcript.write_bytes(b"x" * 4 * 130_000)
    stdin = hook_payload("PostToolUse", transcript_path=str(transcript), tool_name="Edit")
    command = settings_hook(builder, "PostToolUse")
    assert "-S -m fleet.agent.quickhook" in command
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "FLEET_"))}
    settings = json.loads((builder.directory / ".claude/settings.local.json").read_text())
    env.update(settings["env"])
    quick = subprocess.run(
        command, shell=True, cwd=builder.directory, input=stdin, capture_output=True,
        text=True, env=env, timeout=30,
    )  # fmt: skip
    assert quick.returncode == 0, quick.stderr
    full = agent(builder, "hook", "PostToolUse", stdin=stdin)
    assert json.loads(quick.stdout) == json.loads(full.stdout)
    context = json.loads(quick.stdout)["hookSpecificOutput"]["additionalContext"]
    assert "spec v3" in context and "60%" in context
    ada.refresh_from_db()
    assert ada.context_pct == 65 and ada.status_line == "Edit done"
    # A stop reaches the model the same way.
    ada.stop(reason="budget", by=None)
    stopped = subprocess.run(
        command, shell=True, cwd=builder.directory, input=stdin, capture_output=True,
        text=True, env=env, timeout=30,
    )  # fmt: skip
    assert json.loads(stopped.stdout)["continue"] is False


def test_the_short_hook_never_breaks_the_session(tmp_path):
    result = subprocess.run(
        [__import__("sys").executable, "-S", "-m", "fleet.agent.quickhook"],
        cwd=tmp_path, input=hook_payload("PostToolUse"), capture_output=True, text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]),
             "FLEET_URL": "http://127.0.0.1:9", "FLEET_TOKEN": "x"},
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == ""
    assert "fleet hook" in result.stderr


def test_the_short_hook_imports_no_json_or_http_library_when_nothing_is_for_the_model(
    builder, tmp_path
):
    import os

    command = settings_hook(builder, "PostToolUse") + " -X importtime"
    command = command.replace(" -S -m", " -S -X importtime -m").removesuffix(" -X importtime")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "FLEET_"))}
    env.update(json.loads((builder.directory / ".claude/settings.local.json").read_text())["env"])
    done = subprocess.run(
        command, shell=True, cwd=builder.directory, input=hook_payload("PostToolUse"),
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == ""
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "fleet.agent" in imported  # (the hook itself runs as __main__)
    assert not imported & {"json", "socket", "urllib.request", "http.client", "ssl"}
    assert Agent.objects.get(name="ada").last_heartbeat_at is not None
