"""Correlation ids: every Event written while handling one request, one merge or one
sweep carries the same id, so the activity log can show everything one action did.

A request gets a new id, or, behind a trusted proxy (``FLEET_TRUST_REQUEST_ID``), the
proxy's well-formed ``X-Request-ID``; the response says which. The merge queue uses
``merge-<id>`` for every step of one merge, across worker ticks and restarts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings

CURRENT: ContextVar[str] = ContextVar("fleet_correlation_id", default="")
HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new() -> str:
    return uuid.uuid4().hex[:16]


@contextmanager
def correlated(correlation_id: str | None = None) -> Iterator[str]:
    """Everything recorded inside shares ``correlation_id`` (a new one if None)."""
    value = correlation_id or new()
    token = CURRENT.set(value)
    try:
        yield value
    finally:
        CURRENT.reset(token)


def incoming(given: str) -> str:
    """The id for a request that sent ``given`` as its X-Request-ID."""
    if not settings.FLEET_TRUST_REQUEST_ID:
        return new()
    return given if _VALID.fullmatch(given) else new()


def _incoming(request) -> str:
    return incoming(request.headers.get(HEADER, ""))


class CorrelationMiddleware:
    """Sets the request's correlation id for the Events it writes."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        with correlated(_incoming(request)) as value:
            response = self.get_response(request)
        response[HEADER] = value
        return response

    async def __acall__(self, request):
        with correlated(_incoming(request)) as value:
            response = await self.get_response(request)
        response[HEADER] = value
        return response
