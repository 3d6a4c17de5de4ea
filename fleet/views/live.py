"""The polling fallback shared by every live page."""

from __future__ import annotations

from django.http import Http404, HttpResponse

from fleet import live


def live_snapshot(view: str, key: str = "") -> HttpResponse:
    """A page's live regions (``?live=1``), for browsers without a websocket."""
    try:
        response = HttpResponse(live.snapshot(view, live.resolve(view, key)))
    except live.NoSuchPage as exc:
        raise Http404(str(exc)) from exc
    response["X-Fleet-Live"] = "1"  # what live.js checks (a login page is not this)
    return response
