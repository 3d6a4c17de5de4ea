"""The lean heartbeat route: ``POST /api/v1/heartbeat`` answered off Django's
per-request stack.

Django's request path (middleware adapted between sync and async, a thread per
request) costs ~30x a raw ASGI call, and heartbeats are most of an agent fleet's
traffic. This ASGI layer sits in front of the Django app: it takes a well-formed
heartbeat with a bearer token, queues it, and a single flusher records everything
queued while the previous batch was written, in one transaction
(``fleet.heartbeats.record``: the same rules as the normal route, including token
checks, the rate limit, epoch fencing and budgets). Each answer is sent after its
batch committed, so an accepted heartbeat is never lost.

Anything else, or anything unusual about a heartbeat (a disallowed Host, a body
that does not parse or validate, plain HTTP where HTTPS is required), goes to
Django unchanged, which answers exactly as the documented API does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connections
from django.http.request import split_domain_port, validate_host
from pydantic import ValidationError

from fleet import heartbeats
from fleet.api.schemas import HeartbeatIn
from fleet.models import TransitionError, hash_token

log = logging.getLogger("fleet.api")

PATH = "/api/v1/heartbeat"
BATCH_MAX = 500


def _record(pending: list[heartbeats.Pending]) -> list:
    try:
        return heartbeats.record(pending)
    except DatabaseError:
        # A broken connection (database restarted, network) would fail every later
        # batch on this thread: drop it so the next batch reconnects.
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()
        raise


class HeartbeatRoute:
    def __init__(self, app) -> None:
        self.app = app
        self._queue: list[tuple[heartbeats.Pending, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, complete = await _read_body(receive)
        pending = self._parse(scope, body) if complete else None
        if pending is None:
            return await self.app(scope, _replay(body, receive, complete), send)
        result = await self._submit(pending)
        await _respond(send, result)

    def _parse(self, scope, body: bytes) -> heartbeats.Pending | None:
        """A Pending beat, or None when Django should answer this request."""
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        allowed = settings.ALLOWED_HOSTS or (
            [".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else []
        )
        if not validate_host(split_domain_port(host)[0], allowed):
            return None
        if settings.SECURE_SSL_REDIRECT and not _is_secure(scope, headers):
            return None
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200:
            return None
        try:
            payload = HeartbeatIn.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            return None
        return heartbeats.Pending(
            beat=heartbeats.Beat(**payload.model_dump()), token_hash=hash_token(token)
        )

    async def _submit(self, pending: heartbeats.Pending):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((pending, future))
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        record = sync_to_async(_record, thread_sensitive=True)
        while self._queue:
            batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
            try:
                results = await record([pending for pending, _ in batch])
            except Exception:
                log.exception("recording %d heartbeats failed", len(batch))
                refusal = heartbeats.Refusal(
                    503, "unavailable", "heartbeat not recorded; retry", {"Retry-After": "1"}
                )
                results = [refusal] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


async def _read_body(receive) -> tuple[bytes, bool]:
    """The request body, up to the API's size limit; ``complete`` is False when it
    was larger (Django then answers 413 from the replayed part and the rest)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), True
        if size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return b"".join(chunks), False


def _replay(body: bytes, receive, complete: bool):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replayed


def _is_secure(scope, headers: dict[bytes, bytes]) -> bool:
    if scope.get("scheme") == "https":
        return True
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        return headers.get(name, b"").decode("latin-1").split(",")[0].strip() == proxy[1]
    return False


async def _respond(send, result: Any) -> None:
    extra: dict[str, str] = {}
    if isinstance(result, heartbeats.Refusal):
        status, extra = result.status, result.headers
        payload = {"error": result.code, "detail": result.detail}
    elif isinstance(result, TransitionError):
        status, payload = 409, {"error": result.code, "detail": result.message}
    else:
        status, payload = 200, result  # already HeartbeatOut's shape (tests compare both routes)
    body = json.dumps(payload, cls=DjangoJSONEncoder).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", (settings.SECURE_REFERRER_POLICY or "same-origin").encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
