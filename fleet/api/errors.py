"""Every API error is JSON ``{"error": code, "detail": ...}`` with the right status."""

from __future__ import annotations

import functools
import logging

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from fleet import ratelimit
from fleet.api.planner import Invalid
from fleet.dispatch import Refused
from fleet.middleware import transient
from fleet.models import TransitionError

log = logging.getLogger("fleet.api")


def install(api: NinjaAPI) -> None:
    def respond(request: HttpRequest, status: int, code: str, detail) -> HttpResponse:
        return api.create_response(request, {"error": code, "detail": detail}, status=status)

    @api.exception_handler(TransitionError)
    def conflict(request, exc: TransitionError):
        return respond(request, 409, exc.code, exc.message)

    @api.exception_handler(Refused)
    def refused(request, exc: Refused):
        return respond(request, 403, exc.code, exc.message)

    @api.exception_handler(ValidationError)
    def invalid(request, exc: ValidationError):
        detail = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors
        ]
        return respond(request, 422, "invalid", detail)

    @api.exception_handler(Invalid)
    def invalid_draft(request, exc: Invalid):
        return respond(request, exc.status, exc.code, exc.errors)

    @api.exception_handler(AuthenticationError)
    def unauthorized(request, exc: AuthenticationError):
        detail = str(exc) if str(exc) != "Unauthorized" else "missing or unknown bearer token"
        response = respond(request, 401, "unauthorized", detail)
        response["WWW-Authenticate"] = 'Bearer realm="fleet"'
        return response

    @api.exception_handler(Throttled)
    def throttled(request, exc: Throttled):
        return respond(request, 429, "rate_limited", ratelimit.RATE_LIMITED)

    @api.exception_handler(HttpError)
    def http_error(request, exc: HttpError):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "error"
        )
        return respond(request, exc.status_code, code, str(exc))

    @api.exception_handler(RecursionError)
    def too_deep(request, exc: RecursionError):
        return respond(request, 400, "bad_request", "request body is nested too deeply")

    @api.exception_handler(RequestDataTooBig)
    def too_big(request, exc: RequestDataTooBig):
        return respond(request, 413, "too_large", "request body is larger than the API accepts")

    @api.exception_handler(Http404)
    def not_found(request, exc: Http404):
        return respond(request, 404, "not_found", str(exc) or "not found")

    @api.exception_handler(ObjectDoesNotExist)
    def missing(request, exc: ObjectDoesNotExist):
        return respond(request, 404, "not_found", str(exc) or "not found")

    @api.exception_handler(OperationalError)
    def unavailable(request, exc: OperationalError):
        # The database is out of reach for now (locked, out of connections, restarting):
        # the call's transaction did not commit; the agent retries. Anything else is a
        # bug: a 500, logged.
        if not transient(exc):
            return server_error(request, exc)
        log.warning("database unavailable on %s: %s", request.path, exc)
        response = respond(request, 503, "unavailable", "the database is busy; retry shortly")
        response["Retry-After"] = "1"
        return response

    @api.exception_handler(Exception)
    def server_error(request, exc: Exception):
        log.exception("unhandled API error on %s", request.path)
        return respond(request, 500, "server_error", "Fleet failed; the error was logged")


@csrf_exempt  # as the API's own views: agents send tokens, not cookies
def api_not_found(request: HttpRequest) -> JsonResponse:
    """A path under the API that names no route: 404 in the API's JSON shape."""
    return JsonResponse(
        {"error": "not_found", "detail": f"no API route at {request.path}"}, status=404
    )


def json_method_errors(urls: tuple) -> tuple:
    """django-ninja answers a wrong method with a bare text 405; give it the API's
    JSON error body (keeping the Allow header)."""
    patterns, app_name, namespace = urls
    for pattern in patterns:
        pattern.callback = _with_json_405(pattern.callback)
    return patterns, app_name, namespace


def _with_json_405(view):
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if response.status_code != 405:
            return response
        allowed = response.get("Allow", "")
        body = {
            "error": "method_not_allowed",
            "detail": f"{request.method} not allowed ({allowed})",
        }
        replacement = JsonResponse(body, status=405)
        replacement["Allow"] = allowed
        return replacement

    return wrapped
