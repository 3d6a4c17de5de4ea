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
        tool_calls=args.tool_calls,
        files_read=args.files_read,
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


def cmd_check(args, client):
    log = _read(args.log_file) if args.log_file else ""
    result = ops.report_check(
        client,
        name=args.name,
        status=args.status,
        commit=args.commit,
        task=args.task,
        url=args.url,
        log=log,
    )
    _print(args, result, f"check run #{result['id']} recorded")


def cmd_review(args, client):
    result = ops.review(client, review_id=args.id)
    human = (
        f"review #{result['id']} of {result['task']['key']} at {result['commit_sha'][:10]}"
        f"\nSpec (v{result['task']['spec_version']}):\n{result['task']['spec']}"
        f"\nChanged files:\n" + "\n".join(f"- {path}" for path in result["changed_files"])
    )
    for finding in result.get("accepted_findings", []):
        human += f"\nStill open from {finding['commit_sha'][:10]}: {finding['title']}"
    _print(args, result, human + "\n\n" + result["diff"])


def cmd_findings(args, client):
    try:
        data = json.loads(_read(args.file))
    except ValueError as exc:
        raise FleetError(0, "bad_findings", f"{args.file} is not JSON: {exc}") from None
    findings = data.get("findings") if isinstance(data, dict) else data
    if not isinstance(findings, list):
        raise FleetError(0, "bad_findings", 'a JSON list of findings (or {"findings": [...]})')
    result = ops.post_findings(client, review_id=args.review, findings=findings)
    _print(args, result, f"review #{result['id']} closed with {len(findings)} finding(s)")


def cmd_draft_plan(args, client):
    plan = ops.draft_plan(client, name=args.name, slug=args.slug, description=args.description)
    _print(args, plan, f"plan #{plan['id']} {plan['slug']} drafted")


def cmd_add_wave(args, client):
    wave = ops.add_wave(client, plan_id=args.plan, name=args.name)
    _print(args, wave, f"wave #{wave['id']} (number {wave['number']} of {wave['plan']}) drafted")


def cmd_add_task(args, client):
    task = ops.add_task(
        client,
        wave_id=args.wave,
        key=args.key,
        title=args.title,
        repository=args.repository,
        spec=_read(args.spec_file) if args.spec_file else args.spec,
        kind=args.kind,
        declared_paths=args.path,
        read_only=args.read_only,
    )
    _print(args, task, f"task {task['key']} drafted ({task['status']})")


def cmd_read_plan(args, client):
    plan = ops.read_plan(client, plan_id=args.id)
    lines = [f"plan #{plan['id']} {plan['name']} ({plan['slug']})"]
    for wave in plan["waves"]:
        lines.append(f"wave {wave['number']} {wave['name']} [{wave['status']}] #{wave['id']}")
        lines.extend(f"  {t['key']} {t['title']} [{t['status']}]" for t in wave["tasks"])
        for row in wave["matrix"]["rows"]:
            lines.append(
                f"  shared {row['path']}: {', '.join(row['tasks'])}"
                f" ({row['strategy'] or 'unresolved'})"
            )
    _print(args, plan, "\n".join(lines))


def _read(path: str) -> str:
    """A file's text, or standard input for ``-``."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise FleetError(0, "unreadable", f"{path}: {exc.strerror}") from None


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


def _bounded(low: int, high: int | None):
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is not in {low}..{high}" if high is not None else f"{value} < {low}"
            )
        return value

    parse.__name__ = "integer"  # what argparse calls a value it cannot parse
    return parse


percent, count = _bounded(0, 100), _bounded(0, None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fleet.agent", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--retries", type=int, default=5, help="retries on network errors")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("boot", help="start a session: identity, task, journal, inbox")
    p = sub.add_parser("heartbeat", help="report liveness, context and spend; read directives")
    p.add_argument(
        "--context", type=percent, help="context used, percent (else estimated from the proxies)"
    )
    p.add_argument("--tool-calls", type=count, help="tool calls this session so far")
    p.add_argument("--files-read", type=count, help="files read this session so far")
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
    p = sub.add_parser("check", help="report a check run (default commit: your worktree's HEAD)")
    p.add_argument("name", help="e.g. unit, lint")
    p.add_argument("status", choices=["pending", "running", "passed", "failed", "error"])
    p.add_argument("--commit")
    p.add_argument("--task")
    p.add_argument("--url", default="")
    p.add_argument("--log-file", help="the run's log (- for stdin)")
    p = sub.add_parser("review", help="a review's spec, merge-base diff and changed files")
    p.add_argument("id", type=int, nargs="?", help="default: the review you took last")
    p = sub.add_parser("findings", help="post findings and close the review")
    p.add_argument("file", help="JSON list of findings (- for stdin; [] for none)")
    p.add_argument("--review", type=int, help="default: the review you took last")
    p = sub.add_parser("draft-plan", help="draft a plan (orchestrator)")
    p.add_argument("name")
    p.add_argument("slug")
    p.add_argument("--description", default="")
    p = sub.add_parser("add-wave", help="add the next wave to a plan (orchestrator)")
    p.add_argument("plan", type=int, help="the plan's id")
    p.add_argument("--name", default="")
    p = sub.add_parser("add-task", help="add a task to a draft wave (orchestrator)")
    p.add_argument("wave", type=int, help="the wave's id")
    p.add_argument("key", help="e.g. T-12")
    p.add_argument("title")
    p.add_argument("--repository", required=True, help="the repository's slug")
    p.add_argument("--spec", default="", help="requirements and acceptance criteria")
    p.add_argument("--spec-file", help="the spec from a file (- for stdin)")
    p.add_argument("--kind", default="feat")
    p.add_argument("--path", action="append", default=[], help="a path it changes (repeat)")
    p.add_argument("--read-only", action="store_true")
    p = sub.add_parser("read-plan", help="a plan, its waves, tasks and shared-file matrix")
    p.add_argument("id", type=int)
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
    "check": cmd_check,
    "review": cmd_review,
    "findings": cmd_findings,
    "draft-plan": cmd_draft_plan,
    "add-wave": cmd_add_wave,
    "add-task": cmd_add_task,
    "read-plan": cmd_read_plan,
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
