"""Claude Code hooks: ``python -m fleet.agent hook EVENT`` with the hook JSON on stdin.

- SessionStart: boot, and print the session summary with the loop of the agent's role
  (Claude Code adds it to context).
- PostToolUse: heartbeat (context use estimated from the transcript's size) and hand
  the model unread messages, a rotation notice at 60%, or a stop when the budget is spent.
- Stop: write a journal note so the next session knows where this one ended.

A hook never breaks the agent's session: when Fleet is unreachable it says so on
stderr and exits 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from fleet.agent import ops
from fleet.agent.client import Client, FleetError

BYTES_PER_TOKEN = 4


def context_pct(payload: dict) -> int:
    """A proxy for context use: the transcript's size against the context window."""
    window = int(os.environ.get("FLEET_CONTEXT_TOKENS", "200000"))
    path = payload.get("transcript_path") or ""
    try:
        size = Path(path).stat().st_size if path else 0
    except OSError:
        size = 0
    return min(100, round(100 * size / BYTES_PER_TOKEN / window))


def run(event: str, client: Client, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    raw = stdin.read()
    try:
        payload: dict[str, Any] = json.loads(raw) if raw.strip() else {}
    except ValueError:
        print(f"fleet hook {event}: stdin is not JSON; ignored", file=stderr)
        return 0
    try:
        if event == "SessionStart":
            print(ops.summary(ops.boot(client)), file=stdout)
        elif event == "PostToolUse":
            _post_tool_use(client, payload, stdout)
        elif event == "Stop":
            note = "session stopped" + (
                " (stop hook re-entry)" if payload.get("stop_hook_active") else ""
            )
            ops.journal(
                client, kind="note", body=f"{note}; session {payload.get('session_id', '?')}"
            )
        else:
            print(f"fleet hook: nothing to do for {event}", file=stderr)
    except FleetError as exc:
        print(f"fleet hook {event}: {exc}", file=stderr)
    return 0


def _post_tool_use(client: Client, payload: dict, stdout: TextIO) -> None:
    beat = ops.heartbeat(
        client,
        context_pct=context_pct(payload),
        status_line=f"{payload.get('tool_name', 'tool')} done",
    )
    output = answer(beat, ops.inbox(client) if beat["inbox"] else [])
    if output:
        json.dump(output, stdout)


def answer(beat: dict, messages: list[dict]) -> dict[str, Any]:
    """Claude Code's PostToolUse output for a heartbeat's directives: unread messages,
    the rotation notice, a stop. Empty when there is nothing to say."""
    notes = [f"Message #{m['id']} from Fleet: {m['subject']}\n{m['body']}" for m in messages]
    if messages:
        notes.append("Acknowledge each with `python -m fleet.agent ack ID` once handled.")
    if beat.get("rotate"):
        notes.append(
            "Your context is past 60%. Write the journal now (done / learned / next) with "
            "`python -m fleet.agent journal`, then end this session; the next one boots from it."
        )
    output: dict[str, Any] = {}
    if beat.get("stop"):
        output.update(
            {"continue": False, "stopReason": "Fleet: budget spent or stopped by a person."}
        )
    if notes:
        output["hookSpecificOutput"] = {
            "hookEventName": "PostToolUse",
            "additionalContext": "\n\n".join(notes),
        }
    return output
