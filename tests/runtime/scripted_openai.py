"""A scripted model server speaking OpenAI's Responses API (server-sent events), for
running the real Codex CLI against Fleet without reaching a model.

Codex 0.171 (its default model, in "code mode") gives the model one tool, ``exec``, a
freeform tool that takes JavaScript; every other tool, MCP tools included, is called from
that script as ``await tools.mcp__fleet__inbox({...})``. So a script's ``call(name,
**arguments)`` becomes one ``exec`` call of that tool, and the conversation reads the
result back from the ``custom_tool_call_output`` that follows.

A script is a function from the conversation so far (the request's own ``input``, so a
retried request gets the same answer) to the next output: a list of ``text(...)`` and
``call(...)`` items. Side requests (the thread title Codex asks for with a JSON schema)
get a short answer of that shape.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Item = dict[str, Any]
Script = Callable[["Conversation"], list[Item]]

CALLED = re.compile(r"tools\.(\w+)\(")


def text(value: str) -> Item:
    return {"type": "text", "text": value}


def call(name: str, **arguments: Any) -> Item:
    """Call tool ``name`` (e.g. ``mcp__fleet__inbox``) through Codex's ``exec``."""
    code = f"const r = await tools.{name}({json.dumps(arguments)});\ntext(JSON.stringify(r));"
    return {"type": "exec", "name": name, "input": code}


def pause(seconds: float) -> Item:
    """An ``exec`` that only waits (the CLI is busy meanwhile)."""
    code = f"await new Promise((done) => setTimeout(done, {int(seconds * 1000)}));\ntext('paused');"
    return {"type": "exec", "name": "pause", "input": code}


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [
        part.get("text", "")
        for part in content or []
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
    ]


def _called(item: Item) -> str:
    """The tool an ``exec`` (or a plain function call) called."""
    if item.get("type") == "function_call":
        return item.get("name", "")
    found = CALLED.search(item.get("input", ""))
    return found.group(1) if found else item.get("name", "")


def _parse(output: Any) -> Any:
    """A tool's result as the script printed it: after Codex's "Output:" header, the
    MCP ``CallToolResult`` (its structured content, else its text as JSON when it is)."""
    parts = _texts(output) if not isinstance(output, str) else [output]
    body = "\n".join(parts[1:]) if len(parts) > 1 else parts[0] if parts else ""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict) and "content" in value:
        if value.get("structuredContent") is not None and not value.get("isError"):
            return value["structuredContent"]
        joined = "\n".join(_texts(value["content"]))
        if value.get("isError"):
            return {"error": joined}
        try:
            return json.loads(joined)
        except ValueError:
            return joined
    return value


class Conversation:
    """One main-conversation request, read the way a script needs it."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.items: list[Item] = [i for i in body.get("input", []) if isinstance(i, dict)]

    @property
    def calls(self) -> dict[str, Item]:
        return {
            i["call_id"]: i
            for i in self.items
            if i.get("type") in ("custom_tool_call", "function_call") and i.get("call_id")
        }

    @property
    def turns(self) -> int:
        """Model outputs so far (0 for the first request of a session)."""
        return sum(
            1
            for i in self.items
            if i.get("type") in ("custom_tool_call", "function_call")
            or (i.get("type") == "message" and i.get("role") == "assistant")
        )

    def texts(self, role: str = "user") -> list[str]:
        """Every text of messages from ``role``, oldest first."""
        found = []
        for item in self.items:
            if item.get("type") == "message" and item.get("role") == role:
                found.extend(_texts(item.get("content")))
        return found

    @property
    def last(self) -> str:
        """The text of the last user message or tool output."""
        for item in reversed(self.items):
            if item.get("type") in ("custom_tool_call_output", "function_call_output"):
                return "\n".join(_texts(item.get("output")))
            if item.get("type") == "message" and item.get("role") == "user":
                return "\n".join(_texts(item.get("content")))
        return ""

    @property
    def answered(self) -> str:
        """The tool whose result is the last thing in the conversation ("" for a typed
        prompt)."""
        for item in reversed(self.items):
            if item.get("type") in ("custom_tool_call_output", "function_call_output"):
                made = self.calls.get(item.get("call_id"))
                return _called(made) if made else ""
            if item.get("type") == "message" and item.get("role") == "user":
                return ""
        return ""

    def result(self, name: str) -> Any:
        """The last result of tool ``name`` (parsed as JSON when it is)."""
        calls = self.calls
        found = None
        for item in self.items:
            if item.get("type") in ("custom_tool_call_output", "function_call_output"):
                made = calls.get(item.get("call_id"))
                if made and _called(made) == name:
                    found = _parse(item.get("output"))
        return found


class ScriptedModel:
    """A custom Codex provider's ``base_url = model.url + "/v1"``: answers
    ``POST /v1/responses`` from ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict] = []  # every main-conversation request, in order
        self.side: list[dict] = []  # the rest (thread titles)
        self.headers: list[dict] = []  # each request's headers (lowercase names), in order
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

    def answer(self, body: dict) -> list[Item]:
        if (body.get("text") or {}).get("format"):  # a side request with a JSON schema
            with self.lock:
                self.side.append(body)
            return [text(json.dumps({"title": "Fleet task"}))]
        with self.lock:
            self.requests.append(body)
        try:
            return self.script(Conversation(body))
        except Exception as exc:  # a broken script says so in the CLI, not in a hang
            import traceback

            last = json.dumps(body.get("input", [])[-1:])[:2000]
            self.errors.append(f"{traceback.format_exc()}\nthe last item: {last}")
            return [text(f"(scripted model error: {exc!r})")]

    def _handler(self):
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [], "models": []})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with model.lock:
                    model.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.headers.get("Content-Encoding"):
                    model.errors.append(f"a compressed body: {self.headers['Content-Encoding']}")
                    return self._json(415, {"error": {"message": "compressed body"}})
                body = json.loads(raw or b"{}")
                if not self.path.split("?")[0].endswith("/responses"):
                    return self._json(404, {"error": {"message": f"no {self.path}"}})
                self._stream(model.events(body, model.answer(body)))

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, events) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for data in events:
                    self.wfile.write(
                        f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()
                    )
                self.wfile.flush()
                self.close_connection = True

        return Handler

    def output(self, items: list[Item]) -> list[Item]:
        """The Responses API output items for a script's answer."""
        out = []
        for item in items:
            n = next(self._ids)
            if item["type"] == "text":
                out.append(
                    {
                        "type": "message",
                        "id": f"msg_{n:06d}",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": item["text"]}],
                    }
                )
            else:
                out.append(
                    {
                        "type": "custom_tool_call",
                        "id": f"ctc_{n:06d}",
                        "call_id": f"call_{n:06d}",
                        "name": "exec",
                        "input": item["input"],
                        "status": "completed",
                    }
                )
        return out

    def events(self, body: dict, items: list[Item]):
        response = f"resp_{next(self._ids):06d}"
        yield {"type": "response.created", "response": {"id": response}}
        for index, item in enumerate(self.output(items)):
            if item["type"] == "message":
                empty = {**item, "content": [], "status": "in_progress"}
                yield {"type": "response.output_item.added", "output_index": index, "item": empty}
                yield {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "delta": item["content"][0]["text"],
                }
            yield {"type": "response.output_item.done", "output_index": index, "item": item}
        usage = {
            "input_tokens": 1000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1020,
        }
        yield {"type": "response.completed", "response": {"id": response, "usage": usage}}
