"""``python -m fleet.agent COMMAND``: the agent's command line (stdlib only)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from fleet.agent import ops
from fleet.agent.client import Client, FleetError, Identity

EXIT_ERROR, EXIT_STOP = 1, 3


def make_client(args: argparse.Namespace) -> Client:
    if args.command == "hook":
        # A hook runs on every tool call: fail fast rather than stall the session.
        return Client(Identity.load(), retries=0, timeout=3)
    return Client(Identity.load(), retries=args.retries)


def _print(args: argparse.Namespace, value: Any, human: str) -> None:
    print(json.dumps(value, indent=2, default=str) if args.json else human)


def cmd_boot(args, client):
    result = ops.boot(client)
    _print(args, result, ops.summary(result))


def cmd_heartbeat(args, client):
    beat = ops.heartbeat(
        client,
        context_pct=args.context,
        status_line=args.status,
        tokens_in=args.tokens_in,
        tokens_out=args.tokens_out,
        cost_usd=args.cost,
        model=args.model,
    )
    flags = [k for k in ("rotate", "stop") if beat[k]]
    _print(args, beat, f"ok; inbox {beat['inbox']}; " + (", ".join(flags) or "carry on"))
    if beat["stop"]:
        print(
            "fleet: STOP — the server says the budget is spent or a person stopped you.",
            file=sys.stderr,
        )
        return EXIT_STOP
    return 0


def cmd_work(args, client):
    result = ops.work(client)
    task = result.get("task")
    if result["kind"] == "none":
        human = "no work right now"
    elif result["kind"] == "task":
        human = (
            f"task {task['key']}: {task['title']}"
            f" (branch {task['branch']}, epoch {task['lease_epoch']})"
        )
    else:
        human = f"review #{result['review_id']} of {task['key']}: {task['title']}"
    _print(args, result, human)


def cmd_journal(args, client):
    result = ops.journal(client, kind=args.kind, body=args.body, task=args.task)
    _print(args, result, f"journal entry #{result['id']}")


def cmd_claim(args, client):
    claims = ops.claim(client, paths=args.paths, task=args.task, mode=args.mode)
    _print(
        args,
        claims,
        "\n".join(f"claim #{c['id']} {c['path']} until {c['expires_at']}" for c in claims),
    )


def cmd_release(args, client):
    result = ops.release(client, claim_id=args.id)
    _print(args, result, f"released {result['path']}")


def cmd_submit(args, client):
    result = ops.submit(client, commit=args.commit, task=args.task)
    _print(args, result, f"{result['task']} submitted; review #{result['review_id']}")


def cmd_inbox(args, client):
    messages = ops.inbox(client, everything=args.all)
    human = "\n".join(f"#{m['id']} {m['subject']}: {m['body']}" for m in messages) or "inbox empty"
    _print(args, messages, human)


def cmd_ack(args, client):
    result = ops.ack(client, message_id=args.id)
    _print(args, result, f"acknowledged #{result['id']}")


def cmd_learn(args, client):
    result = ops.learn(client, title=args.title, body=args.body, tags=args.tags)
    _print(args, result, f"learning #{result['id']} shared")


def cmd_watch(args, client):
    """Poll the inbox; run the wake command once per new message."""
    seen = {m["id"] for m in ops.inbox(client)} if args.skip_existing else set()
    polls = 0
    while args.max_polls is None or polls < args.max_polls:
        polls += 1
        try:
            messages = ops.inbox(client)
        except FleetError as exc:
            print(f"fleet watch: {exc}", file=sys.stderr)
            messages = []
        for message in messages:
            if message["id"] in seen:
                continue
            seen.add(message["id"])
            env = {
                "FLEET_MESSAGE_ID": str(message["id"]),
                "FLEET_MESSAGE_SUBJECT": message["subject"],
            }
            subprocess.run(args.wake, shell=True, env={**os.environ, **env}, check=False)
            if not args.json:
                print(f"woke for #{message['id']}: {message['subject']}", flush=True)
        if args.max_polls is not None and polls >= args.max_polls:
            break
        time.sleep(args.interval)


def cmd_hook(args, client):
    from fleet.agent import hooks

    return hooks.run(args.event, client, sys.stdin, sys.stdout, sys.stderr)


def cmd_mcp(args, client):
    from fleet.agent import mcp_bridge

    mcp_bridge.serve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fleet.agent", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--retries", type=int, default=5, help="retries on network errors")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("boot", help="start a session: identity, task, journal, inbox")
    p = sub.add_parser("heartbeat", help="report liveness, context and spend; read directives")
    p.add_argument("--context", type=int, required=True, help="context used, percent")
    p.add_argument("--status", default="", help="one-line status")
    p.add_argument("--tokens-in", type=int, default=0)
    p.add_argument("--tokens-out", type=int, default=0)
    p.add_argument("--cost", type=float, default=0.0, help="USD spent since the last report")
    p.add_argument("--model", default="")
    sub.add_parser("work", help="pull the next task (builder) or review (reviewer)")
    p = sub.add_parser("journal", help="write the shadow journal")
    p.add_argument("kind", choices=["done", "learned", "next", "note"])
    p.add_argument("body")
    p.add_argument("--task")
    p = sub.add_parser("claim", help="claim file paths for your task")
    p.add_argument("paths", nargs="+")
    p.add_argument("--task")
    p.add_argument("--mode", choices=["write", "read"], default="write")
    p = sub.add_parser("release", help="release a claim")
    p.add_argument("id", type=int)
    p = sub.add_parser("submit", help="hand in your task's commit (default: HEAD)")
    p.add_argument("--commit")
    p.add_argument("--task")
    p = sub.add_parser("inbox", help="unread messages")
    p.add_argument("--all", action="store_true")
    p = sub.add_parser("ack", help="acknowledge a message")
    p.add_argument("id", type=int)
    p = sub.add_parser("learn", help="share a learning")
    p.add_argument("title")
    p.add_argument("body")
    p.add_argument("--tags", default="")
    p = sub.add_parser("watch", help="run a command once per new inbox message")
    p.add_argument("--wake", required=True, help="shell command, e.g. 'tmux send-keys -t 1 Enter'")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--max-polls", type=int, default=None)
    p.add_argument(
        "--skip-existing", action="store_true", help="do not wake for messages already there"
    )
    p = sub.add_parser("hook", help="Claude Code hook: reads the hook JSON on stdin")
    p.add_argument("event", help="SessionStart, PostToolUse or Stop")
    sub.add_parser("mcp", help="serve the same operations as an MCP server on stdio")
    return parser


COMMANDS = {
    "boot": cmd_boot,
    "heartbeat": cmd_heartbeat,
    "work": cmd_work,
    "journal": cmd_journal,
    "claim": cmd_claim,
    "release": cmd_release,
    "submit": cmd_submit,
    "inbox": cmd_inbox,
    "ack": cmd_ack,
    "learn": cmd_learn,
    "watch": cmd_watch,
    "hook": cmd_hook,
    "mcp": cmd_mcp,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = make_client(args)
        return COMMANDS[args.command](args, client) or 0
    except FleetError as exc:
        if args.command == "hook":  # a hook never breaks the agent's session
            print(f"fleet hook: {exc}", file=sys.stderr)
            return 0
        print(f"fleet: {exc}", file=sys.stderr)
        return EXIT_STOP if exc.code == "stopped" else EXIT_ERROR
    except KeyboardInterrupt:
        return 130
