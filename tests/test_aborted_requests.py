"""A page the browser gives up on (a person navigating quickly) ends quietly.

Django answers an aborted request by sending ``request_finished`` from its handler.
With a sync-only middleware in the chain, the request crossed sync -> async -> sync,
and asgiref, cancelling that bridge while the view's thread was still busy, left the
thread's CurrentThreadExecutor in the handler's context: ``request_finished`` then
failed with "CurrentThreadExecutor already quit or is broken" (daphne logged it as an
exception inside the application). Every middleware of Fleet's chain is async-capable
now, so no request crosses that bridge."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path
from django.utils.module_loading import import_string

entered, release = threading.Event(), threading.Event()


def slow(request):
    entered.set()
    release.wait(5)
    return HttpResponse("too late")


urlpatterns = [path("slow/", slow)]


def test_every_middleware_runs_async_under_asgi():
    sync_only = [
        name
        for name in settings.MIDDLEWARE
        if not getattr(import_string(name), "async_capable", False)
    ]
    assert sync_only == []


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF=__name__)
async def test_a_request_the_browser_gave_up_on_ends_without_an_error():
    entered.clear()
    release.clear()
    app = ASGIHandler()
    inbox: asyncio.Queue = asyncio.Queue()
    await inbox.put({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/slow/",
        "raw_path": b"/slow/",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    request = asyncio.create_task(app(scope, inbox.get, send))
    try:
        assert await asyncio.to_thread(entered.wait, 5)
        await inbox.put({"type": "http.disconnect"})  # the browser went elsewhere
        await asyncio.sleep(0.2)  # Django cancels the request; the view still runs
    finally:
        release.set()
    await asyncio.wait_for(request, 5)  # was: RuntimeError (CurrentThreadExecutor ...)
    assert sent == []  # nobody to answer
