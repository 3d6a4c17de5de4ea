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
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.serializers.json import DjangoJSONEncoder
from django.db import OperationalError, connections
from django.http.request import split_domain_port, validate_host
from django.utils.csp import build_policy

from fleet import claimsql, correlation, dispatch, heartbeats, ratelimit
from fleet.api.auth import bearer_token
from fleet.api.schemas import ClaimIn, HeartbeatIn
from fleet.middleware import transient
from fleet.models import FileClaim, TransitionError, hash_token

log = logging.getLogger("fleet.api")

PATH = "/api/v1/heartbeat"
IDEMPOTENCY_KEY = b"idempotency-key"  # (ASGI header names are lower case)
BATCH_MAX = 500


QUEUE_DEADLINE = 10.0  # seconds; older beats get a 503 (the client has given up by then)
IDLE_CHECK = 30.0  # seconds a thread's connection sat idle before it is checked first
_used = threading.local()  # per thread: connections are too


def _check_connections() -> None:
    """On the thread about to use the database. No request signals run for the lean
    routes, so the thread's connection is checked after an idle spell (a database
    restart, a proxy's idle timeout)."""
    now = time.monotonic()
    if now - getattr(_used, "at", 0.0) > IDLE_CHECK:
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
                conn.close()
    _used.at = now


def _record(pending: list[heartbeats.Pending]) -> list:
    """One batch, on the sync thread."""
    _check_connections()
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
        token = _bearer(scope, headers)
        if token is None or IDEMPOTENCY_KEY in headers:
            return None  # a call that may be a retry: Django keeps and replays answers
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


def _single_headers() -> tuple[bytes, ...]:
    """Headers the lean routes read: one of each, or Django answers."""
    names = (b"host", b"authorization", b"x-request-id")
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        names += (proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode(),)
    return names


def _bearer(scope, headers: dict[bytes, bytes]) -> str | None:
    """The request's bearer token, or None when Django should answer it: a disallowed
    or repeated Host, plain HTTP where HTTPS is required, no usable token."""
    names = [name for name, _ in scope["headers"]]
    if any(names.count(name) > 1 for name in _single_headers()):
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
    return bearer_token(headers.get(b"authorization", b"").decode("latin-1"))


# --- claims ----------------------------------------------------------------------

CLAIMS = "/api/v1/claims"
_RELEASE = re.compile(r"/api/v1/claims/([0-9]{1,18})")
BUSY = heartbeats.Refusal(
    503, "unavailable", "the database is busy; retry shortly", {"Retry-After": "1"}
)
FAILED = heartbeats.Refusal(500, "server_error", "Fleet failed; the error was logged")


class ClaimRoute:
    """``POST /api/v1/claims`` and ``DELETE /api/v1/claims/<id>`` off Django's stack.

    Claims are the calls agents race on, and Django's request path cost as much as
    the claim itself. A well-formed call with a known, unrevoked token for a task
    that exists is answered here by the same ``dispatch.claim`` and
    ``dispatch.release`` under the same per-agent rate limit and correlation ids,
    with the API's answers and error bodies. Anything else goes to Django unchanged.

    ``FLEET_CLAIM_THREADS`` calls run at once, each on a thread and database
    connection of its own (on PostgreSQL they overlap their round trips); with one,
    the calls take turns on the process's sync thread, which the heartbeat batches
    use too (on SQLite more threads would only queue for its write lock).
    ``threads`` overrides the setting (the tests run calls in their own transaction).
    """

    def __init__(self, app, *, threads: int | None = None) -> None:
        self.app = app
        threads = settings.FLEET_CLAIM_THREADS if threads is None else threads
        if threads > 1:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="fleet-claims")
            self._call = sync_to_async(_claims_call, thread_sensitive=False, executor=pool)
        else:
            self._call = sync_to_async(_claims_call, thread_sensitive=True)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        release = _RELEASE.fullmatch(path) if method == "DELETE" else None
        if not (release or (method == "POST" and path == CLAIMS)):
            return await self.app(scope, receive, send)
        body, more, gone = await _read_body(receive)
        if gone:
            return
        headers = dict(scope["headers"])
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        token = (
            None
            if more or (limit is not None and len(body) > limit) or IDEMPOTENCY_KEY in headers
            else _bearer(scope, headers)
        )
        call = None
        if token is not None and release is not None:
            call = ("release", int(release[1])) if not body.strip() else None
        elif token is not None:
            try:
                call = ("claim", ClaimIn.model_validate(json.loads(body)))
            except Exception:  # not JSON, too deeply nested, invalid: Django answers it
                call = None
        answer = None
        if call is not None:
            given = headers.get(b"x-request-id", b"").decode("latin-1")
            answer = await self._call(hash_token(token), call, correlation.incoming(given))
        if answer is None:
            return await self.app(scope, _replay(body, receive, more), send)
        result, request_id = answer
        await _respond(send, result, _is_secure(scope, headers), {"X-Request-ID": request_id})


def _claims_call(token_hash: str, call: tuple[str, Any], request_id: str):
    """(the answer, the correlation id), or None for Django to answer (an unknown or
    revoked token, an unknown task: the API words those, and counts the call against
    the rate limit itself)."""
    try:
        _check_connections()
        agent = claimsql.agent_by_token(token_hash)
        if agent is None or agent.token_revoked_at is not None:
            return None
        task = None
        if call[0] == "claim":
            task = claimsql.task_by_key(call[1].task)
            if task is None:
                return None
        wait = ratelimit.hit(f"t:{token_hash}")
        if wait is not None:
            headers = {"Retry-After": str(max(1, int(wait + 0.999)))}
            return heartbeats.Refusal(
                429, "rate_limited", ratelimit.RATE_LIMITED, headers
            ), request_id
        with correlation.correlated(request_id):
            if call[0] == "release":
                return _claim_out(dispatch.release(agent, claim_id=call[1])), request_id
            payload = call[1]
            claims = dispatch.claim(agent, task=task, paths=payload.paths, mode=payload.mode)
            return (201, [_claim_out(c) for c in claims]), request_id
    except dispatch.Refused as exc:
        return heartbeats.Refusal(403, exc.code, exc.message), request_id
    except ObjectDoesNotExist as exc:  # another agent's claim; gone meanwhile
        return heartbeats.Refusal(404, "not_found", str(exc) or "not found"), request_id
    except TransitionError as exc:
        return exc, request_id
    except Exception as exc:
        # A lost connection is closed here (no request_finished runs on this route), so
        # the next call opens a new one instead of failing on the dead one.
        heartbeats.drop_broken_connections()
        if isinstance(exc, OperationalError) and transient(exc):
            log.warning("database unavailable on a claim: %s", exc)
            return BUSY, request_id
        log.exception("a claim failed")
        return FAILED, request_id


def _claim_out(claim: FileClaim) -> dict[str, Any]:
    """``ClaimOut``'s fields (the tests compare the two routes' answers)."""
    return {
        "id": claim.pk,
        "path": claim.path,
        "mode": claim.mode,
        "task": claim.task.key,
        "expires_at": claim.expires_at,
        "released_at": claim.released_at,
    }


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


async def _respond(send, result: Any, secure: bool, extra: dict[str, str] | None = None) -> None:
    extra = dict(extra or {})
    if isinstance(result, heartbeats.Refusal):
        status = result.status
        extra.update(result.headers)
        payload = {"error": result.code, "detail": result.detail}
    elif isinstance(result, TransitionError):
        status, payload = 409, {"error": result.code, "detail": result.message}
    elif isinstance(result, tuple):
        status, payload = result
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
    if settings.SECURE_CSP:  # as Django's middleware sends with every response
        headers.append((b"content-security-policy", build_policy(settings.SECURE_CSP).encode()))
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
