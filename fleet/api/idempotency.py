"""``Idempotency-Key``: a retried POST whose first answer was lost gets that answer
again, and changes nothing.

An agent that sent a journal entry, a finding or a submit and lost the response
cannot tell whether it landed; retrying would add it twice, or answer 409 for a
submit that did go through. With a key (the agent client sends a fresh one per
logical call and the same one on each retry of it), the first call reserves the key,
runs as any call does, and keeps its answer; a retry finds the answer and gets it
again. The call itself runs outside the reservation's transaction, so a key never
holds a lock across the call's git work (SQLite has one write lock for the fleet).
A retry that arrives while the first call still runs is told to come back (503,
``Retry-After``). A reservation whose process died before answering (killed, the host
rebooted) is run again by the next retry: at once when that process was on this host
(the reservation names it), else once the reservation is ``ABANDONED`` seconds old.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import socket
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, OperationalError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from fleet import ratelimit
from fleet.api.auth import bearer_token
from fleet.middleware import transient
from fleet.models import Agent, Replay, hash_token

log = logging.getLogger("fleet.api")

HEADER = "Idempotency-Key"
PATTERN = r"^[!-~]{1,200}$"  # visible ASCII (as the OpenAPI schema states it)
KEY = re.compile(PATTERN)
# Answers that say the call did not happen (and may on a retry): not kept.
NOT_KEPT = {401, 408, 429}
ABANDONED = 120  # seconds
IN_FLIGHT = 0  # the status of a reservation whose call has not answered yet


def replayable(urls: tuple) -> tuple:
    """Give every POST route of the API ``Idempotency-Key`` semantics."""
    patterns, app_name, namespace = urls
    for pattern in patterns:
        pattern.callback = _idempotent(pattern.callback)
    return patterns, app_name, namespace


def _error(status: int, code: str, detail: str, *, retry_after: str = "") -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status)
    if retry_after:
        response["Retry-After"] = retry_after
    return response


def _idempotent(view):
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return view(request, *args, **kwargs)
        if not KEY.fullmatch(key):
            return _error(400, "bad_request", f"{HEADER} is 1 to 200 visible ASCII characters")
        try:
            reserved = _reserve(request, key)
        except OperationalError as exc:
            if not transient(exc):
                raise
            log.warning("database unavailable reserving an idempotency key: %s", exc)
            return _error(
                503, "unavailable", "the database is busy; retry shortly", retry_after="1"
            )
        if isinstance(reserved, HttpResponse):
            return reserved
        if reserved is None:
            return view(request, *args, **kwargs)  # no agent: the view answers 401 (or 413)
        try:
            response = view(request, *args, **kwargs)
        except BaseException:
            _forget(reserved)
            raise
        if response.status_code >= 500 or response.status_code in NOT_KEPT:
            _forget(reserved)  # nothing happened, or we cannot tell: the retry runs again
        else:
            _keep(reserved, response)
        return response

    return wrapped


def _reserve(request: HttpRequest, key: str) -> Replay | HttpResponse | None:
    """The new reservation of ``key`` for this call; or the answer to give instead (a
    replay, a call still running, a key used for another call); or None when the call
    has no agent to keep answers for."""
    agent = _caller(request)
    if agent is None:
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return None
    fingerprint = hashlib.sha256(
        b"\0".join([request.method.encode(), request.path.encode(), body])
    ).hexdigest()
    for _ in range(2):
        found = Replay.objects.filter(agent=agent, key=key).first()
        if found is not None:
            return _answer(agent, found, fingerprint)
        try:
            with transaction.atomic():
                return Replay.objects.create(
                    agent=agent, key=key, fingerprint=fingerprint, status=IN_FLIGHT, owner=owner()
                )
        except IntegrityError:
            continue  # a call with the same key reserved it meanwhile: answer as it says
    raise AssertionError("a reservation neither found nor made")  # pragma: no cover


def _answer(agent: Agent, found: Replay, fingerprint: str) -> HttpResponse | Replay:
    if found.fingerprint != fingerprint:
        return _error(
            409,
            "idempotency_key_reused",
            f"{HEADER} {found.key!r} was used for a different call; use a new key per call",
        )
    # A replay is a call too: it counts against the agent's rate limit.
    wait = ratelimit.hit(f"t:{agent.token_hash}")
    if wait is not None:
        retry = str(max(1, int(wait + 0.999)))
        return _error(429, "rate_limited", ratelimit.RATE_LIMITED, retry_after=retry)
    if found.status != IN_FLIGHT:
        response = HttpResponse(
            found.body, status=found.status, content_type="application/json; charset=utf-8"
        )
        response["Idempotent-Replayed"] = "true"
        return response
    now = timezone.now()
    if _dead(found.owner) or found.created_at < now - timedelta(seconds=ABANDONED):
        # Its call never answered (its process died): this one runs it, if no other
        # retry took it over first.
        taken = Replay.objects.filter(
            pk=found.pk, status=IN_FLIGHT, owner=found.owner, created_at=found.created_at
        ).update(owner=owner(), created_at=now)
        if taken:
            return found
    return _error(
        503,
        "in_progress",
        f"the first call with {HEADER} {found.key!r} is still running; retry shortly",
        retry_after="1",
    )


def _keep(replay: Replay, response: HttpResponse) -> None:
    try:
        Replay.objects.filter(pk=replay.pk).update(
            status=response.status_code, body=response.content.decode()
        )
    except OperationalError:
        # The call is done; a retry within ABANDONED seconds is told to wait, a later
        # one runs the call again.
        log.warning("could not keep the answer for %s %r", HEADER, replay.key, exc_info=True)


def _forget(replay: Replay) -> None:
    try:
        Replay.objects.filter(pk=replay.pk).delete()
    except OperationalError:
        log.warning("could not drop the reservation for %s %r", HEADER, replay.key)


def owner() -> str:
    """This process, as a reservation names it: host, pid and the pid's start time (a
    pid the system gave to a new process is not the old one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def _started(pid: int) -> str:
    try:  # Linux: field 22 of /proc/PID/stat, counted after the command's ")"
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _dead(name: str) -> bool:
    """Whether the process a reservation names is gone: known only on its own host."""
    host, _, rest = name.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return bool(started) and _started(int(pid)) not in ("", started)


def _caller(request: HttpRequest) -> Agent | None:
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        return None
    return Agent.objects.filter(token_hash=hash_token(token), token_revoked_at=None).first()
