"""fleet_spawn: identity, token, worktree off fresh main, ports, and files git never sees."""

from __future__ import annotations

import json
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from fleet.git import repo as gitrepo
from fleet.models import Agent, Task, Wave

from .conftest import make_repository, make_task, make_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo_with_task(git_origin, data_dir, tmp_path):
    origin, clone = git_origin
    repository = make_repository(path=str(clone), slug="shop", remote_name="origin")
    task = make_task(
        wave=make_wave(status=Wave.RUNNING), repository=repository, key="T-1", status=Task.READY
    )
    # main moves on in origin after Fleet's clone was made: the worktree must start there.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(origin), str(other)], check=True)
    newer = gitrepo.commit_files(path=other, files={"NEW.md": "x\n"}, message="newer")
    gitrepo.push(path=other, branch="main")
    return repository, task, newer


def spawn(*args: str) -> str:
    out = StringIO()
    call_command("fleet_spawn", *args, stdout=out)
    return out.getvalue()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def test_spawning_a_builder_onto_a_task(repo_with_task):
    repository, task, newer = repo_with_task
    out = spawn("--repo", "shop", "--role", "builder", "--name", "ada", "--task", "T-1")

    task.refresh_from_db()
    agent = Agent.objects.get(name="ada")
    worktree = Path(task.worktree_path)
    assert task.status == Task.WORKING and task.assignee == agent and task.base_sha == newer
    assert agent.status == Agent.WORKING and agent.sessions.count() == 1
    assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feat/T-1"
    assert git(worktree, "rev-parse", "HEAD").strip() == newer
    # --no-track: the task branch has no upstream.
    assert "branch.feat/T-1.remote" not in git(worktree, "config", "--list")

    identity = json.loads((worktree / ".fleet/identity.json").read_text())
    token = identity["token"]
    assert f"token (shown once): {token}" in out
    assert Agent.objects.by_token(token).get() == agent
    assert (
        identity["agent"] == "ada" and identity["task"] == "T-1" and identity["role"] == "builder"
    )
    assert len(identity["ports"]) == agent.ports_count > 0
    assert (worktree / ".fleet/identity.json").stat().st_mode & 0o077 == 0
    mcp = json.loads((worktree / ".mcp.json").read_text())
    assert mcp["mcpServers"]["fleet"]["args"][-1] == "mcp"
    hooks = json.loads((worktree / ".claude/settings.local.json").read_text())["hooks"]
    assert "-m fleet.agent.quickhook" in hooks["PostToolUse"][0]["hooks"][0]["command"]
    assert "hook SessionStart" in hooks["SessionStart"][0]["hooks"][0]["command"]
    assert f"PORT={identity['ports'][0]}" in (worktree / ".env").read_text()
    assert f"cd {worktree}" in out and "-m fleet.agent boot" in out

    # Git never sees the identity layer, even after `git add -A`.
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    (worktree / "feature.py").write_text("x = 1\n")
    git(worktree, "add", "-A")
    git(worktree, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "work")
    committed = git(worktree, "show", "--name-only", "--format=", "HEAD").split()
    assert committed == ["feature.py"]


def test_two_agents_get_different_port_blocks(repo_with_task, tmp_path):
    spawn("--repo", "shop", "--role", "reviewer", "--name", "rex", "--dir", str(tmp_path / "r"))
    spawn(
        "--repo", "shop", "--role", "orchestrator", "--name", "olly", "--dir", str(tmp_path / "o")
    )
    rex, olly = Agent.objects.get(name="rex"), Agent.objects.get(name="olly")
    assert rex.ports_start != olly.ports_start
    assert abs(rex.ports_start - olly.ports_start) >= rex.ports_count
    assert json.loads((tmp_path / "r/.fleet/identity.json").read_text())["role"] == "reviewer"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--repo", "nope", "--role", "builder", "--name", "x"], "no repository"),
        (["--repo", "shop", "--role", "builder", "--name", "x", "--task", "T-9"], "no task"),
        (
            ["--repo", "shop", "--role", "reviewer", "--name", "x", "--task", "T-1"],
            "only a builder",
        ),
        (["--repo", "shop", "--role", "builder", "--name", "Bad Name"], "name"),
    ],
)
def test_refused_spawns_create_nothing(repo_with_task, args, message):
    with pytest.raises(CommandError, match=message):
        spawn(*args)
    assert not Agent.objects.exists()
    assert Task.objects.get(key="T-1").status == Task.READY


def test_a_task_that_is_not_ready_or_a_taken_name_is_refused(repo_with_task):
    spawn("--repo", "shop", "--role", "builder", "--name", "ada", "--task", "T-1")
    with pytest.raises(CommandError, match="not ready"):
        spawn("--repo", "shop", "--role", "builder", "--name", "bob", "--task", "T-1")
    with pytest.raises(CommandError, match="already exists"):
        spawn("--repo", "shop", "--role", "reviewer", "--name", "ada")
    assert Agent.objects.count() == 1


def test_spawn_refuses_to_overwrite_a_tracked_identity_file(repo_with_task, tmp_path):
    _, clone = repo_with_task[0].path, repo_with_task[0].path
    target = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", clone, str(target)], check=True)
    (target / ".mcp.json").write_text("{}")
    git(target, "add", ".mcp.json")
    git(target, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "mcp")
    with pytest.raises(CommandError, match="tracks .mcp.json"):
        spawn("--repo", "shop", "--role", "reviewer", "--name", "rex", "--dir", str(target))
    assert not Agent.objects.exists()
    assert (target / ".mcp.json").read_text() == "{}"
