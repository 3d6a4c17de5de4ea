"""The PostToolUse hook on a short path: ``python -S -m fleet.agent.quickhook``.

Claude Code runs PostToolUse after every tool call and waits for it, so its cost is
paid on every step an agent takes. This does what ``hooks.run("PostToolUse")`` does
(heartbeat; unread messages, a rotation notice or a stop handed to the model) with as
little as Python can start with: no site packages (``-S``), and on the common path
(nothing to hand the model) only ``_socket``: no json, re, socket, urllib or ssl
module is imported. The few fields it needs are read from JSON Fleet wrote (the
identity file, the heartbeat's answer) and from the hook's input; anything it cannot
read that simply (an escaped string, an ``https://`` Fleet, a surprise in the answer)
goes the full hook's way, with the same answer, only slower to start. A hook never
breaks the session: on failure it says so on stderr and exits 0.
"""

from __future__ import annotations

import os
import sys

BYTES_PER_TOKEN = 4
TIMEOUT = 10.0


class Slow(Exception):
    """Not for the short path: take the full hook's."""


def _string(text: str, name: str) -> str | None:
    """The value of the first ``"name": "…"`` in JSON text (None when absent or null);
    a value with escapes is for the full parser."""
    at = text.find(f'"{name}"')
    if at < 0:
        return None
    rest = text[text.find(":", at + len(name) + 2) + 1 :].lstrip()
    if rest.startswith("null"):
        return None
    end = rest.find('"', 1)
    if not rest.startswith('"') or end < 0 or "\\" in rest[1:end]:
        raise Slow(f"{name} is not a plain string")
    return rest[1:end]


def _token(text: str, name: str) -> str:
    """The raw JSON token after ``"name":`` (a number, true, false, null)."""
    at = text.find(f'"{name}"')
    if at < 0:
        raise Slow(f"no {name}")
    rest = text[text.find(":", at) + 1 :].lstrip()
    end = min((i for i in (rest.find(","), rest.find("}")) if i >= 0), default=-1)
    if end < 0:
        raise Slow(f"no end of {name}")
    return rest[:end].strip()


def _identity() -> str:
    here = os.getcwd()
    while True:
        path = here + "/.fleet/identity.json"
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            parent = os.path.dirname(here)
            if parent == here:
                raise Slow("no identity file") from None
            here = parent


def _request(url: str, token: str, method: str, path: str, body: str = "") -> str:
    import _socket

    if not url.startswith("http://"):
        raise Slow("not plain http")
    hostport, _, prefix = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    data = body.encode()
    head = (
        f"{method} /{prefix.strip('/') + '/' if prefix.strip('/') else ''}api/v1/{path} "
        f"HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect((host or "127.0.0.1", int(port or 80)))
        sock.sendall(head + data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    raw = b"".join(chunks).decode("utf-8", "replace")
    header, _, payload = raw.partition("\r\n\r\n")
    status = int(header.split(" ", 2)[1])
    if "transfer-encoding" in header.lower():
        raise Slow("chunked")
    if status >= 400:
        raise RuntimeError(f"HTTP {status}: {payload[:300]}")
    return payload


def context_pct(transcript: str | None) -> int:
    window = int(os.environ.get("FLEET_CONTEXT_TOKENS", "200000"))
    try:
        size = os.stat(transcript).st_size if transcript else 0
    except OSError:
        size = 0
    return min(100, round(100 * size / BYTES_PER_TOKEN / window))


def main() -> int:
    raw = sys.stdin.read()
    try:
        identity = _identity()
        url = os.environ.get("FLEET_URL") or _string(identity, "url") or ""
        token = os.environ.get("FLEET_TOKEN") or _string(identity, "token") or ""
        # The hook's own fields come before the tool's input and answer (which may
        # hold anything): read them there.
        head = raw.split('"tool_input"', 1)[0]
        tool = _string(head, "tool_name") or "tool"
        if not tool.replace("_", "").isalnum():
            raise Slow("unusual tool name")
        body = (
            f'{{"context_pct": {context_pct(_string(head, "transcript_path"))}, '
            f'"status_line": "{tool} done"}}'
        )
        answer = _request(url, token, "POST", "heartbeat", body)
        inbox, rotate, stop = (_token(answer, k) for k in ("inbox", "rotate", "stop"))
        if not inbox.isdigit() or {rotate, stop} - {"true", "false"}:
            raise Slow("unexpected answer")
        if inbox == "0" and rotate == stop == "false":
            return 0  # the common case: nothing for the model
        import json

        from fleet.agent.hooks import answer as hook_answer

        messages = json.loads(_request(url, token, "GET", "inbox")) if inbox != "0" else []
        beat = {"rotate": rotate == "true", "stop": stop == "true"}
        json.dump(hook_answer(beat, messages), sys.stdout)
        return 0
    except RuntimeError as exc:  # Fleet answered with an error: said, as the full hook does
        print(f"fleet hook PostToolUse: {exc}", file=sys.stderr)
        return 0
    except (Slow, OSError, ValueError, IndexError):
        return _full(raw)


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
