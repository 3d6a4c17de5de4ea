"""Spawning an agent: identity, token, worktree, ports, and the identity layer on disk.

The identity is generated here and never typed by hand: the agent finds it in
``.fleet/identity.json`` (upward from its working directory), and git ignores
every file of that layer through ``info/exclude``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from fleet import planning
from fleet import runtime as runtimes
from fleet.git import repo as gitrepo
from fleet.git import worktrees
from fleet.git.errors import GitError
from fleet.models import Agent, AgentSession, Event, Repository, Task, TransitionError
from fleet.runner import harnesses

IDENTITY_PATTERNS = list(
    dict.fromkeys(
        ["/.fleet/", "/.mcp.json", "/.claude/settings.local.json", "/.env"]
        + harnesses.CONFIG_PATTERNS
    )
)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class SpawnError(Exception):
    """Spawning was refused; nothing was created."""


@dataclass
class Spawned:
    agent: Agent
    token: str
    directory: Path
    command: str


def _port_block_free(start: int, count: int) -> bool:
    for port in range(start, start + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def allocate_ports(agent: Agent) -> int:
    """Give the agent the lowest free block of TCP ports (recorded on the agent)."""
    count = settings.FLEET_PORTS_PER_AGENT
    taken = set(Agent.objects.exclude(ports_start=None).values_list("ports_start", flat=True))
    start = settings.FLEET_PORTS_FROM
    while start + count <= 65535:
        if start not in taken and _port_block_free(start, count):
            agent.ports_start, agent.ports_count = start, count
            try:
                with transaction.atomic():
                    agent.save(update_fields=["ports_start", "ports_count"])
                return start
            except IntegrityError:
                pass  # another spawn took this block meanwhile; try the next one
        start += count
    raise SpawnError("no free block of ports left")


def identity_files(
    *, agent: Agent, token: str, task: Task | None, directory: Path, harness: str = ""
) -> dict:
    """The untracked identity layer, as {relative path: text}: identity, ports, and
    the MCP server and hooks in Claude Code's format (for an agent started by hand)
    or in its harness's own."""
    python = sys.executable
    ports = list(range(agent.ports_start, agent.ports_start + agent.ports_count))
    identity = {
        "url": settings.FLEET_PUBLIC_URL,
        "token": token,
        "agent": agent.name,
        "role": agent.role,
        "capabilities": agent.capabilities,
        "repository": agent.repository.slug if agent.repository else None,
        "task": task.key if task else None,
        "branch": task.branch if task else None,
        "worktree": str(directory),
        "ports": ports,
    }
    dotenv = "".join(
        [f"FLEET_PORT_{i}={port}\n" for i, port in enumerate(ports)]
        + [f"PORT={ports[0]}\n", f"FLEET_AGENT={agent.name}\n"]
    )
    launch = harnesses.Launch(
        python=python,
        package_root=str(PACKAGE_ROOT),
        directory=str(directory),
        permissions=agent.repository.agent_permissions if agent.repository else "worktree",
    )
    # Claude Code's MCP server and hooks always (an agent started by hand runs it),
    # and the harness's own configuration when a runner starts another CLI.
    files = {
        ".fleet/identity.json": json.dumps(identity, indent=2) + "\n",
        ".env": dotenv,
        **harnesses.CLAUDE.files(launch),
    }
    if harness:
        files |= harnesses.HARNESSES[harness].files(launch)
    return files


def worktree_path(task: Task) -> Path:
    """``<data dir>/worktrees/<repo>/<task key>`` (or the repository's own root)."""
    repo = task.repository
    root = Path(repo.worktree_root or Path(settings.FLEET_DATA_DIR) / "worktrees" / repo.slug)
    return root / task.key


def prepare_worktree(task: Task) -> tuple[Path, str]:
    """The task's worktree on its own branch off freshly fetched main (kept if it exists)."""
    repo = task.repository
    worktree = worktree_path(task)
    base = worktrees.create(
        repo.path,
        worktree=worktree,
        branch=task.branch,
        remote=repo.remote_name,
        default=repo.default_branch,
    )
    return worktree, base


def spawn(
    *,
    repository: Repository,
    role: str,
    name: str,
    task: Task | None = None,
    directory: Path | None = None,
    by=None,
    harness: str = "",
    model: str = "",
    command: str = "",
) -> Spawned:
    """Spawn an agent; with a ``harness`` a runner starts its CLI (the first runner
    online, or the next one to come)."""
    if role not in dict(Agent.ROLE_CHOICES):
        raise SpawnError(f"unknown role {role!r}")
    if harness and harness not in harnesses.HARNESSES:
        raise SpawnError(f"unknown harness {harness!r} (one of {', '.join(harnesses.HARNESSES)})")
    if harness == "command" and not command.strip():
        raise SpawnError("the command harness needs a command to run")
    if Agent.objects.filter(name=name).exists():
        raise SpawnError(f"an agent named {name!r} already exists")
    if task is not None:
        if role != Agent.BUILDER:
            raise SpawnError("only a builder is spawned onto a task")
        if task.repository_id != repository.pk:
            raise SpawnError(f"{task.key} belongs to {task.repository.slug}, not {repository.slug}")
        if task.status != Task.READY:
            raise SpawnError(f"{task.key} is {task.get_status_display()}, not ready")
    if task is not None:
        # Git first: if it fails, no rows were written. A worktree left behind by
        # a later failure is kept and reused by the next spawn onto this task.
        try:
            directory, base = prepare_worktree(task)
        except (GitError, OSError) as exc:
            raise SpawnError(f"could not create the worktree for {task.key}: {exc}") from exc
    agent = Agent(name=name, role=role, repository=repository)
    try:
        agent.full_clean(exclude=["token_hash", "current_task"])
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise SpawnError(problems) from exc
    directory = Path(directory or Path(settings.FLEET_DATA_DIR) / "agents" / name)
    if (directory / ".git").exists():
        try:
            tracked = gitrepo.tracked(directory, [p.strip("/") for p in IDENTITY_PATTERNS])
        except GitError as exc:
            raise SpawnError(str(exc)) from exc
        if tracked:
            # info/exclude cannot hide a tracked file: writing ours would land in a commit.
            raise SpawnError(
                f"the repository tracks {', '.join(tracked)}; Fleet will not overwrite it"
            )
    with transaction.atomic():
        agent.save()
        token = agent.issue_token(by=by)
        AgentSession.objects.create(agent=agent)
        if task is not None:
            task.base_sha, task.worktree_path = base, str(directory)
            task.save(update_fields=["base_sha", "worktree_path"])
            try:
                task.assign(agent=agent, by=by)
                planning.dispatched(task, by=by)
                task.start(by=agent, epoch=task.lease_epoch)
                agent.start_work(task=task)
            except TransitionError as exc:
                raise SpawnError(str(exc)) from exc
        allocate_ports(agent)
        Event.objects.record(
            "agent.spawned",
            by=by,
            agent=agent,
            payload={"task": task.key if task else None, "harness": harness or None},
        )
        if harness:
            try:
                runtimes.attach(
                    agent, harness=harness, model=model, command=command, directory=directory
                )
            except runtimes.RuntimeRefused as exc:
                raise SpawnError(str(exc)) from exc
    directory.mkdir(parents=True, exist_ok=True)
    for rel, text in identity_files(
        agent=agent, token=token, task=task, directory=directory, harness=harness
    ).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel == ".fleet/identity.json":
            os.chmod(path, 0o600)
    if (directory / ".git").exists():
        gitrepo.exclude_paths(directory, IDENTITY_PATTERNS)
    command = (
        f"cd {shlex.quote(str(directory))} && PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}"
        f" {shlex.quote(sys.executable)} -m fleet.agent boot"
    )
    return Spawned(agent=agent, token=token, directory=directory, command=command)
