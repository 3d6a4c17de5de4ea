"""The websocket handshake's origin check: Django's CSRF origin check, on a websocket.

A browser lets any page open a websocket to any site, cookies included; only the
Origin header tells our pages from someone else's. Channels' ``AllowedHostsOriginValidator``
compares the origin's host name alone, so a page on another port of the same host (any
local dev server) or plain HTTP beside HTTPS passed. Here the origin must be the
request's own scheme, host and port, as ``CsrfViewMiddleware`` requires of a form post
(``request.get_host()``, so ``ALLOWED_HOSTS`` applies, and ``request.is_secure()``, so a
trusted proxy's header counts), or be in ``CSRF_TRUSTED_ORIGINS``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.http import is_same_domain


class _Handshake(HttpRequest):
    """Just enough of a request, from a websocket scope, for ``get_host()`` and
    ``is_secure()``."""

    def __init__(self, scope) -> None:
        super().__init__()
        self._scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        server = scope.get("server") or ("", "")
        self.META["SERVER_NAME"] = server[0] or "unknown"
        self.META["SERVER_PORT"] = str(server[1] or (443 if self._scheme == "https" else 80))
        for name, value in scope.get("headers", []):
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            value = value.decode("latin-1")
            # Repeated headers joined, as Django's ASGI handler does.
            self.META[key] = f"{self.META[key]},{value}" if key in self.META else value

    def _get_scheme(self) -> str:
        return self._scheme


def origin_allowed(scope) -> bool:
    """Whether the handshake's Origin is the request's own origin or a trusted one."""
    request = _Handshake(scope)
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        # As Channels did: browsers always send one; refused unless every host is allowed.
        return "*" in settings.ALLOWED_HOSTS
    try:
        host = request.get_host()  # raises for a Host outside ALLOWED_HOSTS
    except DisallowedHost:
        return False
    if origin == f"{'https' if request.is_secure() else 'http'}://{host}":
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in (t for t in trusted if "*" not in t):
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, wildcard.netloc.removeprefix("*"))
        for wildcard in (urlsplit(t) for t in trusted if "*" in t)
        if wildcard.scheme == parsed.scheme
    )


class SameOriginValidator:
    """ASGI middleware for websockets: a refused origin's handshake is closed."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator guards websockets only")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
