"""The agent's operations, shared by the CLI and the MCP bridge.

Each takes a ``Client`` and returns plain data. The client also keeps a small
local state (task and lease epoch, and whether the server said stop) beside
the identity file: layer 1 of budget enforcement refuses to take or hand in
work once the server has said the budget is spent.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fleet.agent.client import Client, FleetError

GUARDED = "the server said stop (budget spent or stopped by a person); not continuing"


def _remember(client: Client, task: dict | None) -> None:
    if task:
        client.identity.write_state(task=task["key"], epoch=task["lease_epoch"])


def _guard(client: Client) -> None:
    state = client.identity.read_state()
    if state.get("stopped"):
        raise FleetError(0, "stopped", GUARDED)


def boot(client: Client) -> dict:
    result = client.get("boot")
    _remember(client, result.get("task"))
    left = result.get("budget_left_usd")
    client.identity.write_state(
        stopped=result["agent"]["status"] == "stopped" or (left is not None and left <= 0)
    )
    return result


def heartbeat(
    client: Client,
    *,
    context_pct: int,
    status_line: str = "",
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float = 0.0,
    model: str = "",
) -> dict:
    state = client.identity.read_state()
    body = {
        "context_pct": int(context_pct),
        "status_line": status_line[:200],
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost_usd,
        "model": model,
    }
    if state.get("epoch") is not None:
        body["epoch"] = state["epoch"]
    try:
        result = client.post("heartbeat", body)
    except FleetError as exc:
        if exc.code == "stale_lease":
            # The lease was lost (expired and handed on): forget it, report once.
            client.identity.write_state(task=None, epoch=None)
        raise
    client.identity.write_state(stopped=bool(result["stop"]), epoch=result.get("epoch"))
    return result


def work(client: Client) -> dict:
    _guard(client)
    result = client.post("work/next")
    _remember(client, result.get("task") if result["kind"] == "task" else None)
    return result


def journal(client: Client, *, kind: str, body: str, task: str | None = None) -> dict:
    payload = {"kind": kind, "body": body}
    task = task or client.identity.read_state().get("task")
    if task:
        payload["task"] = task
    return client.post("journal", payload)


def claim(
    client: Client,
    *,
    paths: list[str],
    task: str | None = None,
    mode: str = "write",
) -> list:
    _guard(client)
    task = task or client.identity.read_state().get("task") or client.identity.task
    if not task:
        raise FleetError(0, "no_task", "no current task: pull work first or pass --task")
    return client.post("claims", {"task": task, "paths": paths, "mode": mode})


def release(client: Client, *, claim_id: int) -> dict:
    return client.delete(f"claims/{int(claim_id)}")


def head_commit(directory: Path | None = None) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise FleetError(0, "no_commit", result.stderr.strip() or "not a git work tree")
    return result.stdout.strip()


def submit(client: Client, *, commit: str | None = None, task: str | None = None) -> dict:
    _guard(client)
    state = client.identity.read_state()
    task = task or state.get("task") or client.identity.task
    if not task or state.get("epoch") is None:
        raise FleetError(0, "no_task", "no leased task known here: run boot or work first")
    commit = commit or head_commit(client.identity.root)
    result = client.post(f"tasks/{task}/submit", {"commit": commit, "epoch": state["epoch"]})
    client.identity.write_state(task=None, epoch=None)
    return result


def inbox(client: Client, *, everything: bool = False) -> list:
    return client.get("inbox?all=true" if everything else "inbox")


def ack(client: Client, *, message_id: int) -> dict:
    return client.post(f"inbox/{int(message_id)}/ack")


def learn(client: Client, *, title: str, body: str, tags: str = "") -> dict:
    return client.post("learnings", {"title": title, "body": body, "tags": tags})


def summary(result: dict) -> str:
    """A short human reading of a boot result (also what a SessionStart hook prints)."""
    agent = result["agent"]
    lines = [f"Fleet: you are {agent['name']} ({agent['role']}), status {agent['status']}."]
    task = result.get("task")
    if task:
        lines.append(
            f"Task {task['key']} v{task['spec_version']}: {task['title']}"
            f" — branch {task['branch']},"
            f" worktree {task['worktree_path'] or '(none)'}, lease epoch {task['lease_epoch']}."
        )
        if task.get("spec"):
            lines.append("Spec:\n" + task["spec"])
    else:
        lines.append("No task yet: run `python -m fleet.agent work` to pull one.")
    digest = result.get("digest") or {}
    for kind, heading in (("done", "Done"), ("learned", "Learned"), ("next", "Next")):
        if digest.get(kind):
            lines.append(f"{heading}:\n" + "\n".join(f"- {body}" for body in digest[kind]))
    for entry in result.get("journal", [])[:10]:
        lines.append(f"journal [{entry['kind']}] {entry['body']}")
    for message in result.get("inbox", []):
        lines.append(f"inbox #{message['id']}: {message['subject']} — {message['body']}")
    if result.get("budget_left_usd") is not None:
        lines.append(f"Budget left: ${result['budget_left_usd']:.2f}")
    return "\n".join(lines)
