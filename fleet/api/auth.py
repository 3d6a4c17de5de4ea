"""Bearer-token authentication and the per-agent rate limit."""

from __future__ import annotations

import threading

from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle

from fleet import ratelimit
from fleet.models import Agent, hash_token

TOKEN_MAX = 200


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (django-ninja's
    parsing), or None. Shared with the lean routes, so both read a header alike."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > TOKEN_MAX:
        return None
    return token


class AgentToken(HttpBearer):
    """``Authorization: Bearer <token>``; the token's hash identifies the agent."""

    def __call__(self, request: HttpRequest) -> Agent | None:
        # Not django-ninja's own: under DEBUG it logs any header that is not
        # "Bearer ..." whole, and a token sent as "Token x", bare or Basic is still
        # a credential. Nothing here logs the header.
        token = bearer_token(request.headers.get(self.header, ""))
        return None if token is None else self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Agent | None:
        agent = (
            Agent.objects.filter(token_hash=hash_token(token))
            .select_related("repository", "current_task")
            .first()
        )
        if agent is None:
            return None
        if agent.token_revoked_at is not None:
            raise AuthenticationError(message=f"the token of {agent.name} was revoked")
        return agent


class PerAgentThrottle(BaseThrottle):
    """The per-agent limit (``fleet.ratelimit``), shared with the lean heartbeat route."""

    def __init__(self) -> None:
        self._wait = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        agent = getattr(request, "auth", None)
        if agent is None:
            return True
        self._wait.seconds = ratelimit.hit(f"t:{agent.token_hash}")
        return self._wait.seconds is None

    def wait(self) -> float | None:
        return getattr(self._wait, "seconds", None)
