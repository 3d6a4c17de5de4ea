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
BUILDER = "builder"


def _role(client: Client) -> str:
    return client.identity.role or client.identity.read_state().get("role", "")


def _remember(client: Client, task: dict | None) -> None:
    """A builder's leased task, its lease epoch and its worktree (where its commits are)."""
    if task:
        client.identity.write_state(
            task=task["key"], epoch=task["lease_epoch"], worktree=task.get("worktree_path") or None
        )


def _forget_task(client: Client) -> None:
    client.identity.write_state(task=None, epoch=None, worktree=None)


def _guard(client: Client) -> None:
    state = client.identity.read_state()
    if state.get("stopped"):
        raise FleetError(0, "stopped", GUARDED)


def boot(client: Client) -> dict:
    result = client.get("boot")
    role = result["agent"]["role"]
    if role == BUILDER:
        _remember(client, result.get("task"))
    else:
        # A reviewer's task is the one under review: not its to journal, claim or submit on.
        _forget_task(client)
    left = result.get("budget_left_usd")
    client.identity.write_state(
        role=role,
        stopped=result["agent"]["status"] == "stopped" or (left is not None and left <= 0),
    )
    return result


def heartbeat(
    client: Client,
    *,
    context_pct: int | None = None,
    tool_calls: int | None = None,
    files_read: int | None = None,
    status_line: str = "",
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float = 0.0,
    model: str = "",
) -> dict:
    """Without ``context_pct`` Fleet estimates context use from ``tool_calls`` and
    ``files_read`` (this session so far) and the session's age."""
    state = client.identity.read_state()
    body = {
        "status_line": status_line[:200],
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost_usd,
        "model": model,
    }
    for name, value in (
        ("context_pct", context_pct),
        ("tool_calls", tool_calls),
        ("files_read", files_read),
    ):
        if value is not None:
            body[name] = int(value)
    if state.get("epoch") is not None:
        body["epoch"] = state["epoch"]
    try:
        result = client.post("heartbeat", body)
    except FleetError as exc:
        if exc.code == "stale_lease":
            # The lease was lost (expired and handed on): forget it, report once.
            _forget_task(client)
        raise
    client.identity.write_state(stopped=bool(result["stop"]), epoch=result.get("epoch"))
    return result


def work(client: Client) -> dict:
    _guard(client)
    result = client.post("work/next")
    if result["kind"] == "task":
        _remember(client, result.get("task"))
    elif result["kind"] == "review":
        client.identity.write_state(review=result["review_id"])
    return result


def journal(client: Client, *, kind: str, body: str, task: str | None = None) -> dict:
    payload = {"kind": kind, "body": body}
    # Only the builder holding a task journals on it; others write their own journal.
    if task is None and _role(client) == BUILDER:
        task = client.identity.read_state().get("task")
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


def worktree_head(client: Client, task: str | None = None) -> str:
    """HEAD of the task's worktree, as boot or work named it. Never the directory of
    the identity: that may be another checkout entirely (Fleet's own, for a builder
    spawned without a task); nor the worktree of another task than the one named."""
    state = client.identity.read_state()
    if task is not None and task != state.get("task"):
        raise FleetError(
            0,
            "no_worktree",
            f"the worktree of {task} is not known here (this session holds"
            f" {state.get('task') or 'no task'}): name the commit (--commit)",
        )
    worktree = state.get("worktree")
    if not worktree or not Path(worktree).is_dir():
        where = f" ({worktree} does not exist)" if worktree else ""
        raise FleetError(
            0,
            "no_worktree",
            f"no worktree of your task is known here{where}: run boot or work first,"
            " or name the commit (--commit)",
        )
    return head_commit(Path(worktree))


def submit(client: Client, *, commit: str | None = None, task: str | None = None) -> dict:
    _guard(client)
    state = client.identity.read_state()
    task = task or state.get("task") or client.identity.task
    if not task or state.get("epoch") is None:
        raise FleetError(0, "no_task", "no leased task known here: run boot or work first")
    commit = commit or worktree_head(client, task)
    result = client.post(f"tasks/{task}/submit", {"commit": commit, "epoch": state["epoch"]})
    _forget_task(client)
    return result


def report_check(
    client: Client,
    *,
    name: str,
    status: str,
    commit: str | None = None,
    task: str | None = None,
    url: str = "",
    log: str = "",
) -> dict:
    """A check run (tests, lint) on a commit, by default the HEAD of the task's worktree."""
    task = task or (client.identity.read_state().get("task") if _role(client) == BUILDER else None)
    body = {
        "name": name,
        "commit": commit or worktree_head(client, task),
        "status": status,
        "url": url,
        "log": log,
    }
    if task:
        body["task"] = task
    return client.post("checks", body)


def _review_id(client: Client, review_id: int | None) -> int:
    review_id = review_id or client.identity.read_state().get("review")
    if not review_id:
        raise FleetError(0, "no_review", "no review taken here: run work first or name the review")
    return int(review_id)


def review(client: Client, *, review_id: int | None = None) -> dict:
    """The review's spec, its diff against the merge base and the changed files."""
    return client.get(f"reviews/{_review_id(client, review_id)}")


def post_findings(client: Client, *, findings: list[dict], review_id: int | None = None) -> dict:
    """Post every finding at once and close the review (an empty list: no findings)."""
    review_id = _review_id(client, review_id)
    result = client.post(f"reviews/{review_id}/findings", {"findings": findings})
    if client.identity.read_state().get("review") == review_id:
        client.identity.write_state(review=None)
    return result


def draft_plan(client: Client, *, name: str, slug: str, description: str = "") -> dict:
    return client.post("plans", {"name": name, "slug": slug, "description": description})


def add_wave(client: Client, *, plan_id: int, name: str = "") -> dict:
    return client.post(f"plans/{int(plan_id)}/waves", {"name": name})


def add_task(
    client: Client,
    *,
    wave_id: int,
    key: str,
    title: str,
    repository: str,
    spec: str = "",
    kind: str = "feat",
    declared_paths: list[str] | None = None,
    read_only: bool = False,
) -> dict:
    body = {
        "key": key,
        "title": title,
        "repository": repository,
        "spec": spec,
        "kind": kind,
        "declared_paths": list(declared_paths or []),
        "read_only": read_only,
    }
    return client.post(f"waves/{int(wave_id)}/tasks", body)


def read_plan(client: Client, *, plan_id: int) -> dict:
    """The plan, its waves with their tasks, and each wave's shared-file matrix."""
    return client.get(f"plans/{int(plan_id)}")


def inbox(client: Client, *, everything: bool = False) -> list:
    return client.get("inbox?all=true" if everything else "inbox")


def ack(client: Client, *, message_id: int) -> dict:
    return client.post(f"inbox/{int(message_id)}/ack")


def learn(client: Client, *, title: str, body: str, tags: str = "") -> dict:
    return client.post("learnings", {"title": title, "body": body, "tags": tags})


# Tools by their MCP names; the CLI twin (``python -m fleet.agent CMD``) in brackets
# where its name differs.
ROLE_LOOPS = {
    "builder": (
        "How you work: `work_next` [work] pulls a task (its branch and worktree are made"
        " for you); `claim` each file before editing it; edit and commit in the task's"
        " worktree; `report_check` [check] reports a test run; `submit` hands in the"
        " worktree's HEAD to a fresh reviewer. `heartbeat` after each step, `journal`"
        " done/learned/next before you stop."
    ),
    "reviewer": (
        "How you work: `work_next` [work] takes an open review; `review` gives its spec,"
        " the diff against the merge base and the changed files; `post_findings` [findings]"
        " posts all your findings (path, line or range, severity, title, body, suggested"
        " fix; an empty list = no findings) and closes the review. Read only: never edit"
        " code."
    ),
    "orchestrator": (
        "How you work: `draft_plan` [draft-plan], then `add_wave` [add-wave] for each wave"
        " in order, then `add_task` [add-task] to a draft wave (spec with acceptance"
        " criteria, the paths it will change); `read_plan` [read-plan] shows each wave's"
        " shared-file matrix: split tasks that collide. People approve waves; you only draft."
    ),
}
TWINS = "Each tool has a CLI twin: `python -m fleet.agent --help`."


def summary(result: dict) -> str:
    """A short human reading of a boot result (also what a SessionStart hook prints),
    with the loop of the agent's role."""
    agent = result["agent"]
    role = agent["role"]
    lines = [f"Fleet: you are {agent['name']} ({role}), status {agent['status']}."]
    if role in ROLE_LOOPS:
        lines.append(f"{ROLE_LOOPS[role]} {TWINS}")
    task = result.get("task")
    if task and role == BUILDER:
        lines.append(
            f"Task {task['key']} v{task['spec_version']}: {task['title']}"
            f" — branch {task['branch']},"
            f" worktree {task['worktree_path'] or '(none)'}, lease epoch {task['lease_epoch']}."
        )
    elif task:
        lines.append(f"Reviewing {task['key']} v{task['spec_version']}: {task['title']}.")
    if task and task.get("spec"):
        lines.append("Spec:\n" + task["spec"])
    if not task and role == BUILDER:
        lines.append("No task yet: run `python -m fleet.agent work` to pull one.")
    digest = result.get("digest") or {}
    for kind, heading in (
        ("review", "Review comments to address"),
        ("done", "Done"),
        ("learned", "Learned"),
        ("next", "Next"),
    ):
        if digest.get(kind):
            lines.append(f"{heading}:\n" + "\n".join(f"- {body}" for body in digest[kind]))
    for entry in result.get("journal", [])[:10]:
        lines.append(f"journal [{entry['kind']}] {entry['body']}")
    for message in result.get("inbox", []):
        lines.append(f"inbox #{message['id']}: {message['subject']} — {message['body']}")
    if result.get("budget_left_usd") is not None:
        lines.append(f"Budget left: ${result['budget_left_usd']:.2f}")
    return "\n".join(lines)
