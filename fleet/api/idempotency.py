"""``Idempotency-Key``: a retried POST whose first answer was lost gets that answer
again, and changes nothing.

An agent that sent a journal entry, a finding or a submit and lost the response
cannot tell whether it landed; retrying would add it twice, or answer 409 for a
submit that did go through. With a key (the agent client sends a fresh one per
logical call and the same one on each retry of it), the first call and the stored
answer commit in one transaction, so a retry either finds the answer or finds
nothing happened. Two calls with one key at once: the second waits for the first
(the unique constraint) and replays it.
"""

from __future__ import annotations

import functools
import hashlib
import re

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from fleet.api.auth import bearer_token
from fleet.models import Agent, Replay, hash_token

HEADER = "Idempotency-Key"
KEY = re.compile(r"[\x21-\x7e]{1,200}")
# Answers that say the call did not happen (and may on a retry): not kept.
NOT_KEPT = {401, 408, 429}


def replayable(urls: tuple) -> tuple:
    """Give every POST route of the API ``Idempotency-Key`` semantics."""
    patterns, app_name, namespace = urls
    for pattern in patterns:
        pattern.callback = _idempotent(pattern.callback)
    return patterns, app_name, namespace


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _idempotent(view):
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return view(request, *args, **kwargs)
        if not KEY.fullmatch(key):
            return _error(400, "bad_request", f"{HEADER} is 1 to 200 visible ASCII characters")
        agent = _caller(request)
        try:
            body = request.body
        except RequestDataTooBig:
            agent = None  # the view answers 413
        if agent is None:
            return view(request, *args, **kwargs)  # no agent: the view answers 401
        fingerprint = hashlib.sha256(
            b"\0".join([request.method.encode(), request.path.encode(), body])
        ).hexdigest()
        with transaction.atomic():
            try:
                with transaction.atomic():
                    replay = Replay.objects.create(agent=agent, key=key, fingerprint=fingerprint)
            except IntegrityError:
                return _replay(Replay.objects.get(agent=agent, key=key), fingerprint)
            response = view(request, *args, **kwargs)
            if response.status_code >= 500 or response.status_code in NOT_KEPT:
                # Nothing happened (or we cannot tell what did): the retry runs again.
                transaction.set_rollback(True)
                return response
            replay.status = response.status_code
            replay.body = response.content.decode()
            replay.save(update_fields=["status", "body"])
        return response

    return wrapped


def _caller(request: HttpRequest) -> Agent | None:
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        return None
    return Agent.objects.filter(token_hash=hash_token(token), token_revoked_at=None).first()


def _replay(replay: Replay, fingerprint: str) -> HttpResponse:
    if replay.fingerprint != fingerprint:
        return _error(
            422,
            "idempotency_key_reused",
            f"{HEADER} {replay.key!r} was used for a different call; use a new key per call",
        )
    response = HttpResponse(
        replay.body, status=replay.status, content_type="application/json; charset=utf-8"
    )
    response["Idempotent-Replayed"] = "true"
    return response
