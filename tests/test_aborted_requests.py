"""A page the browser gives up on (a person navigating quickly) ends quietly.

Django answers an aborted request by sending ``request_finished`` from its handler.
With a sync-only middleware in the chain, the request crossed sync -> async -> sync,
and asgiref, cancelling that bridge while the view's thread was still busy, left the
thread's CurrentThreadExecutor in the handler's context: ``request_finished`` then
failed with "CurrentThreadExecutor already quit or is broken" (daphne logged it as an
exception inside the application). Every middleware of Fleet's chain is async-capable
now, so no request crosses that bridge. (The race itself, against real daphne, is
tests/test_quick_navigation.py.)"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string


def test_every_middleware_runs_async_under_asgi():
    sync_only = [
        name
        for name in settings.MIDDLEWARE
        if not getattr(import_string(name), "async_capable", False)
    ]
    assert sync_only == []


def test_a_page_request_skips_the_static_file_lookup(settings):
    """Under DEBUG (autorefresh) only paths under STATIC_URL look for a file (in a
    thread); a page goes straight on."""
    import asyncio

    from django.http import HttpResponse
    from django.test import RequestFactory

    from fleet.middleware import StaticFilesMiddleware

    looked: list[str] = []

    async def page(request):
        return HttpResponse("the page")

    middleware = StaticFilesMiddleware(page)
    middleware.autorefresh = True
    middleware.find_file = lambda url: looked.append(url)
    response = asyncio.run(middleware(RequestFactory().get("/plans/")))
    assert response.content == b"the page" and looked == []
    asyncio.run(middleware(RequestFactory().get(settings.STATIC_URL + "fleet/nope.css")))
    assert looked == [settings.STATIC_URL + "fleet/nope.css"]
