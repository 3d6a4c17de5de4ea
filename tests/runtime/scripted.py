"""A scripted model server speaking Anthropic's Messages API (server-sent events), for
running the real Claude Code against Fleet without reaching a model.

A script is a function from the conversation so far to the next assistant turn: a list of
blocks, each ``text(...)`` or ``tool(name, **input)``. The conversation is the request's
own ``messages``, so a retried request gets the same answer. Requests that carry no tools
(titles, summaries and other side calls the CLI makes) get a short text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .server import Handler, ScriptedServer

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


class ScriptedModel(ScriptedServer):
    """``ANTHROPIC_BASE_URL=model.url``: answers ``POST /v1/messages`` from ``script``."""

    listing = {"data": [], "has_more": False}

    def is_side(self, body: dict) -> bool:
        return not body.get("tools")  # titles and other calls the CLI makes on its own

    def side_answer(self, body: dict) -> list[Block]:
        return [text("Fleet task")]

    def conversation(self, body: dict) -> Conversation:
        return Conversation(body)

    def last_input(self, body: dict) -> Any:
        return body.get("messages", [])[-1:]

    def post(self, handler: Handler, path: str, body: dict) -> None:
        if path.endswith("/count_tokens"):
            return handler.json(200, {"input_tokens": 1000})
        if not path.endswith("/v1/messages"):
            return handler.json(404, {"type": "error", "error": {"type": "not_found"}})
        blocks = self.answer(body)
        if body.get("stream"):
            handler.stream(self.events(body, blocks))
        else:
            handler.json(200, self.message(body, blocks))

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
        yield {"type": "message_start", "message": {**message, "content": []}}
        for index, block in enumerate(content):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                start = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield {"type": "content_block_start", "index": index, "content_block": start}
            yield {"type": "content_block_delta", "index": index, "delta": delta}
            yield {"type": "content_block_stop", "index": index}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": 20},
        }
        yield {"type": "message_stop"}


def _stop(blocks: list[Block]) -> str:
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
