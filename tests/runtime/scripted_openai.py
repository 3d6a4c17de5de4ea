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

import json
import re
from collections.abc import Callable
from typing import Any

from .server import Handler, ScriptedServer

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


class ScriptedModel(ScriptedServer):
    """A custom Codex provider's ``base_url = model.url + "/v1"``: answers
    ``POST /v1/responses`` from ``script``."""

    listing = {"object": "list", "data": [], "models": []}

    def is_side(self, body: dict) -> bool:
        return bool((body.get("text") or {}).get("format"))  # a title, with a JSON schema

    def side_answer(self, body: dict) -> list[Item]:
        return [text(json.dumps({"title": "Fleet task"}))]

    def conversation(self, body: dict) -> Conversation:
        return Conversation(body)

    def last_input(self, body: dict) -> Any:
        return body.get("input", [])[-1:]

    def post(self, handler: Handler, path: str, body: dict) -> None:
        if not path.endswith("/responses"):
            return handler.json(404, {"error": {"message": f"no {path}"}})
        handler.stream(self.events(body, self.answer(body)))

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
