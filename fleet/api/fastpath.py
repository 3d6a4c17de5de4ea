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
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.http.request import split_domain_port, validate_host

from fleet import heartbeats
from fleet.api.schemas import HeartbeatIn
from fleet.models import TransitionError, hash_token

log = logging.getLogger("fleet.api")

PATH = "/api/v1/heartbeat"
BATCH_MAX = 500


QUEUE_DEADLINE = 10.0  # seconds; older beats get a 503 (the client has given up by then)
IDLE_CHECK = 30.0  # seconds without a batch before the connection is checked first
_last_batch = 0.0


def _record(pending: list[heartbeats.Pending]) -> list:
    """One batch, on the sync thread. No request signals run here, so the connection's
    health is checked after an idle spell (a database restart, a proxy's idle timeout)."""
    global _last_batch
    now = time.monotonic()
    if now - _last_batch > IDLE_CHECK:
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
                conn.close()
    _last_batch = now
    return heartbeats.record_isolated(pending)


class HeartbeatRoute:
    def __init__(self, app) -> None:
        self.app = app
        self._queue: list[tuple[heartbeats.Pending, asyncio.Future, float]] = []
        self._flusher: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, more, gone = await _read_body(receive)
        if gone:
            return  # the client left before sending its body: nobody to answer
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        too_big = more or (limit is not None and len(body) > limit)
        headers = dict(scope["headers"])
        pending = None if too_big else self._parse(scope, headers, body)
        if pending is None:
            return await self.app(scope, _replay(body, receive, more), send)
        result = await self._submit(pending)
        await _respond(send, result, _is_secure(scope, headers))

    def _parse(self, scope, headers: dict[bytes, bytes], body: bytes) -> heartbeats.Pending | None:
        """A Pending beat, or None when Django should answer this request."""
        names = [name for name, _ in scope["headers"]]
        if names.count(b"host") > 1 or names.count(b"authorization") > 1:
            return None  # Django decides what a repeated header means
        host = headers.get(b"host", b"").decode("latin-1")
        allowed = settings.ALLOWED_HOSTS or (
            [".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else []
        )
        domain = split_domain_port(host)[0]
        if not (domain and validate_host(domain, allowed)):
            return None
        if settings.SECURE_SSL_REDIRECT and not _is_secure(scope, headers):
            return None
        # The same parsing as django-ninja's HttpBearer.
        parts = headers.get(b"authorization", b"").decode("latin-1").split(" ")
        token = " ".join(parts[1:])
        if parts[0].lower() != "bearer" or not token or len(token) > 200:
            return None
        try:
            payload = HeartbeatIn.model_validate(json.loads(body))
        except Exception:  # not JSON, too deeply nested, invalid: Django answers it
            return None
        return heartbeats.Pending(
            beat=heartbeats.Beat(**payload.model_dump()), token_hash=hash_token(token)
        )

    async def _submit(self, pending: heartbeats.Pending):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((pending, future, time.monotonic()))
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        record = sync_to_async(_record, thread_sensitive=True)
        while self._queue:
            batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
            # A beat whose client gave up, or that waited past the deadline, is not
            # recorded (its client retries it): no beat is stored twice that way.
            oldest = time.monotonic() - QUEUE_DEADLINE
            for _, future, queued in batch:
                if queued < oldest and not future.done():
                    future.set_result(heartbeats.UNAVAILABLE)
            batch = [item for item in batch if not item[1].done()]
            if not batch:
                continue
            try:
                results = await record([pending for pending, _, _ in batch])
            except Exception:
                log.exception("recording %d heartbeats failed", len(batch))
                results = [heartbeats.UNAVAILABLE] * len(batch)
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


async def _read_body(receive) -> tuple[bytes, bool, bool]:
    """(body, more, gone): reading stops past the API's size limit with ``more`` True
    when the client has more to send (Django then answers 413 from the replayed part
    and the rest); ``gone``: the client left."""
    chunks, size = [], 0
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False, True
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), False, False
        if limit is not None and size > limit:
            return b"".join(chunks), True, False


def _replay(body: bytes, receive, more: bool):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed


def _is_secure(scope, headers: dict[bytes, bytes]) -> bool:
    """As Django's ``request.is_secure()``: a configured proxy header decides when present."""
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        if name in headers:
            return headers[name].decode("latin-1").split(",")[0].strip() == proxy[1]
    return scope.get("scheme") == "https"


async def _respond(send, result: Any, secure: bool) -> None:
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
        (b"x-frame-options", settings.X_FRAME_OPTIONS.encode()),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append((b"strict-transport-security", hsts.encode()))
    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
