"""A database briefly out of reach (SQLite locked past its busy timeout, PostgreSQL out
of connections, restarting, or the connection lost) is a 503 with ``Retry-After``, for
people too, never a 500: trying again is what helps. Other database errors (a missing
table, a bad query) stay 500s, logged with their traceback. The API answers the same
in JSON (``fleet.api.errors``)."""

from __future__ import annotations

import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib import messages
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin
from django.utils.http import url_has_allowed_host_and_scheme
from whitenoise.middleware import WhiteNoiseMiddleware

from fleet.models import TransitionError

log = logging.getLogger("fleet.unavailable")

RETRY_AFTER = "2"
# SQLSTATE classes of a database that is away for now: connection exceptions (08),
# too many connections (53300), an operator or crash shutdown (57P01-57P03).
TRANSIENT_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def transient(exc: BaseException) -> bool:
    """Whether a database error means "away for now, retry" (and not a bug)."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate:
        return sqlstate.startswith(TRANSIENT_SQLSTATES)
    text = str(exc).lower()
    return any(m in text for m in TRANSIENT_MESSAGES) or "connection" in text


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    # MiddlewareMixin runs sync or async, whichever the chain is: a sync-only
    # middleware makes every request under ASGI cross sync -> async -> sync, and a
    # request the browser abandons mid-crossing broke asgiref's executor (see
    # tests/test_aborted_requests.py).
    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not transient(exc):
            return None
        log.warning("database unavailable on %s: %s", request.path, exc, exc_info=exc)
        response = HttpResponse(
            render_to_string("503.html", {"retry_after": RETRY_AFTER}), status=503
        )
        response["Retry-After"] = RETRY_AFTER
        return response


class RefusedTransitionMiddleware(MiddlewareMixin):
    """The net under every page's form: a transition refused where no view catches it
    (a stale page's button) goes back to the page it came from with the reason as a
    message, never a bare error page. Views that know their subject say more (who
    changed it and when: ``fleet.views.refusals``). The API answers 409 itself."""

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, TransitionError) or request.path.startswith("/api/"):
            return None
        messages.error(request, f"Refused: {exc.message}. Nothing changed.")
        back = request.META.get("HTTP_REFERER", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = "/"
        return redirect(back)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, able to run in an async chain (WhiteNoise's own middleware is sync
    only, which put every request under ASGI across the sync/async bridge): a static
    file is served from a worker thread, anything else goes on without a hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh and not request.path_info.startswith(self.static_prefix):
            return await self.get_response(request)  # a page: no file lookup, no thread
        static_file = (
            await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
            if self.autorefresh
            else self.files.get(request.path_info)
        )
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)
