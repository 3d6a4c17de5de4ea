"""What every scripted model server shares: a threaded HTTP server on 127.0.0.1, the
requests it was sent (main conversation and side calls apart), the script's own failures,
JSON answers and server-sent events. A vendor's API is a subclass: which requests are
side calls and what they get, and what a POST to a path answers."""

from __future__ import annotations

import itertools
import json
import threading
import traceback
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model: ScriptedServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.json(200, self.model.listing)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        model = self.model
        with model.lock:
            model.headers.append({k.lower(): v for k, v in self.headers.items()})
        if self.headers.get("Content-Encoding"):
            model.errors.append(f"a compressed body: {self.headers['Content-Encoding']}")
            return self.json(415, {"error": {"message": "compressed body"}})
        model.post(self, self.path.split("?")[0], json.loads(raw or b"{}"))

    def json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events: Iterable[dict]) -> None:
        """Server-sent events, each named by its ``type`` (both vendors' convention)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for data in events:
            self.wfile.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


class ScriptedServer:
    listing: dict = {"data": []}  # what a GET (a models list) answers

    def __init__(self, script: Callable[[Any], list[dict]]) -> None:
        self.script = script
        self.requests: list[dict] = []  # every main-conversation request, in order
        self.side: list[dict] = []  # the rest (titles, summaries)
        self.headers: list[dict] = []  # each request's headers (lowercase names), in order
        self.errors: list[str] = []  # the script's own failures, with tracebacks
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        handler = type("BoundHandler", (Handler,), {"model": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- a vendor's API --------------------------------------------------------

    def is_side(self, body: dict) -> bool:
        raise NotImplementedError

    def side_answer(self, body: dict) -> list[dict]:
        raise NotImplementedError

    def conversation(self, body: dict) -> Any:
        raise NotImplementedError

    def last_input(self, body: dict) -> Any:
        """The request's last message or item (quoted when the script fails)."""
        raise NotImplementedError

    def post(self, handler: Handler, path: str, body: dict) -> None:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------

    def answer(self, body: dict) -> list[dict]:
        if self.is_side(body):
            with self.lock:
                self.side.append(body)
            return self.side_answer(body)
        with self.lock:
            self.requests.append(body)
        try:
            return self.script(self.conversation(body))
        except Exception as exc:  # a broken script says so in the CLI, not in a hang
            last = json.dumps(self.last_input(body))[:2000]
            self.errors.append(f"{traceback.format_exc()}\nthe last input: {last}")
            return [{"type": "text", "text": f"(scripted model error: {exc!r})"}]
