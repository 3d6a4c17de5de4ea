"""The PostToolUse hook on a short path: ``python -S -m fleet.agent.quickhook``.

Claude Code runs PostToolUse after every tool call and waits for it, so its cost is
paid on every step an agent takes. This does what ``hooks.run("PostToolUse")`` does
(heartbeat; unread messages, a rotation notice or a stop handed to the model) with
as little as Python can start with: no site packages (``-S``), no argparse, urllib
or ssl; one keep-alive HTTP/1.1 connection on a plain socket. An ``https://`` Fleet,
or anything unexpected, falls back to the full hook (same answer, slower start).
A hook never breaks the session: on failure it says so on stderr and exits 0.
"""

from __future__ import annotations

import json
import os
import socket
import sys

BYTES_PER_TOKEN = 4
TIMEOUT = 10.0


def _identity() -> dict:
    here = os.getcwd()
    while True:
        path = os.path.join(here, ".fleet", "identity.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        parent = os.path.dirname(here)
        if parent == here:
            return {}
        here = parent


class _Http:
    """HTTP/1.1 over one socket: JSON requests, Content-Length responses."""

    def __init__(self, url: str, token: str) -> None:
        rest = url[len("http://") :]
        hostport, _, prefix = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.prefix, self.token = hostport, "/" + prefix.rstrip("/"), token
        self.sock = socket.create_connection((host, int(port or 80)), timeout=TIMEOUT)
        self.buf = b""

    def call(self, method: str, path: str, body: dict | None = None) -> dict | list:
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {self.prefix.rstrip('/')}/api/v1/{path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise OSError("chunked answer")  # the full client handles it
        if length is None:
            raise OSError("answer without a length")
        while len(self.buf) < length:
            self._more()
        payload, self.buf = self.buf[:length], self.buf[length:]
        answer = json.loads(payload or b"null")
        if status >= 400:
            detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
            raise RuntimeError(f"HTTP {status}: {detail}")
        return answer

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        self.buf += chunk


def context_pct(payload: dict) -> int:
    window = int(os.environ.get("FLEET_CONTEXT_TOKENS", "200000"))
    path = payload.get("transcript_path") or ""
    try:
        size = os.stat(path).st_size if path else 0
    except OSError:
        size = 0
    return min(100, round(100 * size / BYTES_PER_TOKEN / window))


def answer(beat: dict, messages: list) -> dict:
    """Claude Code's hook output for a heartbeat's directives (as ``fleet.agent.hooks``)."""
    notes = [f"Message #{m['id']} from Fleet: {m['subject']}\n{m['body']}" for m in messages]
    if messages:
        notes.append("Acknowledge each with `python -m fleet.agent ack ID` once handled.")
    if beat.get("rotate"):
        notes.append(
            "Your context is past 60%. Write the journal now (done / learned / next) with "
            "`python -m fleet.agent journal`, then end this session; the next one boots from it."
        )
    output: dict = {}
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


def main() -> int:
    raw = sys.stdin.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
        identity = _identity()
        url = os.environ.get("FLEET_URL") or identity.get("url") or ""
        token = os.environ.get("FLEET_TOKEN") or identity.get("token") or ""
    except (ValueError, OSError) as exc:
        print(f"fleet hook PostToolUse: {exc}", file=sys.stderr)
        return 0
    if not url.startswith("http://") or not token:
        return _full(raw)
    try:
        http = _Http(url, token)
        beat = http.call(
            "POST",
            "heartbeat",
            {
                "context_pct": context_pct(payload),
                "status_line": f"{payload.get('tool_name', 'tool')} done",
            },
        )
        messages = http.call("GET", "inbox") if beat.get("inbox") else []
        http.sock.close()
    except RuntimeError as exc:  # Fleet answered with an error: say so, as the full hook does
        print(f"fleet hook PostToolUse: {exc}", file=sys.stderr)
        return 0
    except (OSError, ValueError, KeyError, IndexError):
        return _full(raw)
    output = answer(beat, messages)
    if output:
        json.dump(output, sys.stdout)
    return 0


def _full(raw: str) -> int:
    import io

    from fleet.agent import hooks
    from fleet.agent.client import Client, FleetError, Identity

    try:
        client = Client(Identity.load(), retries=0, timeout=3)
    except FleetError as exc:
        print(f"fleet hook PostToolUse: {exc}", file=sys.stderr)
        return 0
    return hooks.run("PostToolUse", client, io.StringIO(raw), sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
