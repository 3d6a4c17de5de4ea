"""A scripted model server speaking Anthropic's Messages API (server-sent events), for
running the real Claude Code against Fleet without reaching a model.

A script is a function from the conversation so far to the next assistant turn: a list of
blocks, each ``text(...)`` or ``tool(name, **input)``. The conversation is the request's
own ``messages``, so a retried request gets the same answer. Requests that carry no tools
(titles, summaries and other side calls the CLI makes) get a short text.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Block = dict[str, Any]
Script = Callable[["Conversation"], list[Block]]


def text(value: str) -> Block:
    return {"type": "text", "text": value}


def tool(name: str, **arguments: Any) -> Block:
    return {"type": "tool_use", "name": name, "input": arguments}


class Conversation:
    """One main-conversation request, read the way a script needs it."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.messages: list[dict] = body.get("messages", [])

    @property
    def turns(self) -> int:
        """Assistant turns so far (0 for the first request of a session)."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    def texts(self, role: str = "user") -> list[str]:
        """Every text the ``role`` sent, tool results included, oldest first."""
        found = []
        for message in self.messages:
            if message.get("role") != role:
                continue
            content = message.get("content")
            found.extend(_texts(content))
        return found

    @property
    def last(self) -> str:
        """The text of the last user message (a typed prompt or a tool's result)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return "\n".join(_texts(message.get("content")))
        return ""

    @property
    def answered(self) -> str:
        """The tool whose result the last user message carries ("" for a typed prompt)."""
        names = {
            block.get("id"): block.get("name", "")
            for message in self.messages
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_use"
        }
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list):
                results = [b for b in content if b.get("type") == "tool_result"]
                if results:
                    return names.get(results[-1].get("tool_use_id"), "")
            return ""
        return ""

    def result(self, name: str) -> Any:
        """The last result of tool ``name`` (parsed as JSON when it is)."""
        ids = {
            block["id"]
            for message in self.messages
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_use" and block.get("name") == name
        }
        found = None
        for message in self.messages:
            if message.get("role") == "user" and isinstance(message.get("content"), list):
                for block in message["content"]:
                    if block.get("type") == "tool_result" and block.get("tool_use_id") in ids:
                        found = "\n".join(_texts(block.get("content")))
        if found is None:
            return None
        try:
            return json.loads(found)
        except ValueError:
            return found


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    found = []
    for block in content or []:
        if block.get("type") == "text":
            found.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            found.extend(_texts(block.get("content")))
    return found


class ScriptedModel:
    """``ANTHROPIC_BASE_URL=model.url``: answers ``POST /v1/messages`` from ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict] = []  # every main-conversation request, in order
        self.side: list[dict] = []  # the rest (no tools)
        self.errors: list[str] = []  # the script's own failures, with tracebacks
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedModel:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, body: dict) -> list[Block]:
        if not body.get("tools"):
            with self.lock:
                self.side.append(body)
            return [text("Fleet task")]
        with self.lock:
            self.requests.append(body)
        try:
            return self.script(Conversation(body))
        except Exception as exc:  # a broken script says so in the CLI, not in a hang
            import traceback

            last = json.dumps(body.get("messages", [])[-1:])[:2000]
            self.errors.append(f"{traceback.format_exc()}\nthe last message: {last}")
            return [text(f"(scripted model error: {exc!r})")]

    def _handler(self):
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._json(200, {"data": [], "has_more": False})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?")[0]
                if path.endswith("/count_tokens"):
                    return self._json(200, {"input_tokens": 1000})
                if not path.endswith("/v1/messages"):
                    return self._json(404, {"type": "error", "error": {"type": "not_found"}})
                blocks = model.answer(body)
                if body.get("stream"):
                    self._stream(body, blocks)
                else:
                    self._json(200, model.message(body, blocks))

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict, blocks: list[Block]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for event, data in model.events(body, blocks):
                    self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        return Handler

    def _blocks(self, blocks: list[Block]) -> list[Block]:
        return [
            {**b, "id": f"toolu_{next(self._ids):06d}"} if b["type"] == "tool_use" else b
            for b in blocks
        ]

    def message(self, body: dict, blocks: list[Block]) -> dict:
        blocks = self._blocks(blocks)
        return {
            "id": f"msg_{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "scripted"),
            "content": blocks,
            "stop_reason": _stop(blocks),
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 20},
        }

    def events(self, body: dict, blocks: list[Block]):
        message = self.message(body, blocks)
        content = message.pop("content")
        yield "message_start", {"type": "message_start", "message": {**message, "content": []}}
        for index, block in enumerate(content):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                start = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": start,
                },
            )
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": 20},
            },
        )
        yield "message_stop", {"type": "message_stop"}


def _stop(blocks: list[Block]) -> str:
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
