"""Sign-in with throttling: failed attempts are counted per username and address and
per address (in the cache, shared by every web process when Redis is set); past the
limit the form refuses, with a 429 and Retry-After, until the window ends — the
right password included, so guessing cannot go on. The admin's sign-in too."""

from __future__ import annotations

import functools
import hashlib
import logging
import math

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

from fleet import ratelimit

log = logging.getLogger("fleet.auth")


def _digest(text: str) -> str:
    # Hashed: what strangers type does not go into cache keys as it is.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _keys(request: HttpRequest) -> list[tuple[str, str]]:
    address = request.META.get("REMOTE_ADDR", "")
    username = request.POST.get("username", "").strip().lower()[:150]
    return [
        (f"login:{_digest(f'{address}|{username}')}", settings.FLEET_LOGIN_RATE),
        (f"login-ip:{_digest(address)}", settings.FLEET_LOGIN_IP_RATE),
    ]


def _wait(request: HttpRequest) -> int | None:
    """Seconds until this sign-in may be tried again (None: it may now)."""
    waits = [w for w in (ratelimit.spent(key, rate) for key, rate in _keys(request)) if w]
    if not waits:
        return None
    log.warning("sign-in refused: too many failures from %s", request.META.get("REMOTE_ADDR"))
    return math.ceil(max(waits))


def _count_failure(request: HttpRequest) -> None:
    if not request.user.is_authenticated:
        for key, rate in _keys(request):
            ratelimit.hit(key, rate)


def _message(wait: int) -> str:
    minutes = math.ceil(wait / 60)
    return f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."


def throttled(view):
    """The same throttle around another sign-in view (the admin's): a plain 429."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            wait = _wait(request)
            if wait:
                response = HttpResponse(_message(wait), status=429, content_type="text/plain")
                response["Retry-After"] = str(wait)
                return response
        response = view(request, *args, **kwargs)
        if request.method == "POST":
            _count_failure(request)
        return response

    return wrapper


class LoginView(auth_views.LoginView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        wait = _wait(request)
        if wait:
            # The password is not even checked: an unbound form and the reason.
            form = self.get_form_class()(
                request, initial={"username": request.POST.get("username", "")[:150]}
            )
            response = self.render_to_response(
                self.get_context_data(form=form, throttled=_message(wait)), status=429
            )
            response["Retry-After"] = str(wait)
            return response
        response = super().post(request, *args, **kwargs)
        _count_failure(request)
        return response
