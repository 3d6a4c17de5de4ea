"""``python -m fleet.agent mcp``: Fleet's agent operations as a stdio MCP server.

It keeps no state of its own: every tool call loads the identity and makes one
REST call, so restarting Fleet never produces "session not found". If the MCP
transport itself fails, every tool has a CLI twin: ``python -m fleet.agent
<command>`` (named in each tool's description).
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from fleet.agent import ops
from fleet.agent.client import Client, FleetError, Identity

FALLBACK = " If this tool is unavailable, run `python -m fleet.agent {cli}` instead."

server = MCPServer(
    name="fleet",
    instructions=(
        "Fleet coordinates the agents working on this repository. Call `boot` first in every "
        "new session, `heartbeat` after each step (obey `rotate` and `stop`), `journal` before "
        "you stop. Every tool has a CLI twin: `python -m fleet.agent <command>`."
    ),
)


def _call(operation, **kwargs: Any) -> Any:
    try:
        return operation(Client(Identity.load()), **kwargs)
    except FleetError as exc:
        raise ToolError(str(exc)) from None


@server.tool(
    description="Start a session: your identity, task (spec, branch, worktree), "
    "journal digest, unread inbox, learnings and budget." + FALLBACK.format(cli="boot")
)
def boot() -> dict:
    return _call(ops.boot)


@server.tool(
    description="Report liveness, context use (percent) and spend. Answers directives: "
    "rotate (journal and restart), stop (budget spent), inbox (unread count)."
    + FALLBACK.format(cli="heartbeat --context N")
)
def heartbeat(
    context_pct: int,
    status_line: str = "",
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float = 0.0,
    model: str = "",
) -> dict:
    return _call(
        ops.heartbeat,
        context_pct=context_pct,
        status_line=status_line,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost_usd,
        model=model,
    )


@server.tool(
    description="Pull your next work item: a task for a builder, a review for a "
    "reviewer." + FALLBACK.format(cli="work")
)
def work_next() -> dict:
    return _call(ops.work)


@server.tool(
    description="Write the shadow journal that your next session boots from: "
    "kind is done, learned, next or note." + FALLBACK.format(cli="journal KIND BODY")
)
def journal(kind: Literal["done", "learned", "next", "note"], body: str) -> dict:
    return _call(ops.journal, kind=kind, body=body)


@server.tool(
    description="Claim repository paths for your task before editing them; fails "
    "naming the holder if another agent has them." + FALLBACK.format(cli="claim PATH...")
)
def claim(paths: list[str], mode: Literal["write", "read"] = "write") -> dict:
    return {"claims": _call(ops.claim, paths=paths, mode=mode)}


@server.tool(description="Release a file claim by id." + FALLBACK.format(cli="release ID"))
def release(claim_id: int) -> dict:
    return _call(ops.release, claim_id=claim_id)


@server.tool(
    description="Hand in your task: the commit (default: HEAD of your worktree) goes "
    "to a fresh reviewer." + FALLBACK.format(cli="submit")
)
def submit(commit: str = "") -> dict:
    return _call(ops.submit, commit=commit or None)


@server.tool(description="Your unread messages." + FALLBACK.format(cli="inbox"))
def inbox() -> dict:
    return {"messages": _call(ops.inbox)}


@server.tool(description="Acknowledge a message once handled." + FALLBACK.format(cli="ack ID"))
def ack(message_id: int) -> dict:
    return _call(ops.ack, message_id=message_id)


@server.tool(
    description="Share a learning with agents on other tasks and repositories."
    + FALLBACK.format(cli="learn TITLE BODY")
)
def learn(title: str, body: str, tags: str = "") -> dict:
    return _call(ops.learn, title=title, body=body, tags=tags)


def serve() -> None:
    server.run("stdio")
