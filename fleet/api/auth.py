"""Bearer-token authentication and the per-agent rate limit."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer
from ninja.throttling import SimpleRateThrottle

from fleet.models import Agent, hash_token


class AgentToken(HttpBearer):
    """``Authorization: Bearer <token>``; the token's hash identifies the agent."""

    def authenticate(self, request: HttpRequest, token: str) -> Agent | None:
        if not token or len(token) > 200:
            return None
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


class PerAgentThrottle(SimpleRateThrottle):
    """A fixed-window limit per agent; the rate is read from settings on every call
    (FLEET_API_RATE, e.g. "600/m") so it can be tuned without a restart of the code."""

    scope = "agent"

    def __init__(self) -> None:
        super().__init__(rate=settings.FLEET_API_RATE)

    def allow_request(self, request: HttpRequest) -> bool:
        if self.rate != settings.FLEET_API_RATE:
            self.rate = settings.FLEET_API_RATE
            self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request)

    def get_cache_key(self, request: HttpRequest) -> str | None:
        agent = getattr(request, "auth", None)
        if agent is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": agent.pk}
