"""The websocket route: session-authenticated, origin-checked, delivers fragments."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from fleet.asgi import application
from fleet.events import broadcast_fragment

from .conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie_for(user) -> bytes:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode()


def communicator(cookie: bytes | None = None, origin: bytes = b"http://127.0.0.1"):
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/fleet/", headers=headers)


async def test_anonymous_connections_are_refused():
    comm = communicator()
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_people_without_a_role_are_refused():
    user = await sync_to_async(make_user)("norole")
    cookie = await sync_to_async(session_cookie_for)(user)
    comm = communicator(cookie)
    connected, code = await comm.connect()
    assert not connected and code == 4403
    await comm.disconnect()


async def test_foreign_origins_are_refused():
    user = await sync_to_async(make_user)("wsx", "lead")
    cookie = await sync_to_async(session_cookie_for)(user)
    comm = communicator(cookie, origin=b"http://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_a_signed_in_person_receives_broadcast_fragments():
    user = await sync_to_async(make_user)("wsy", "lead")
    cookie = await sync_to_async(session_cookie_for)(user)
    comm = communicator(cookie)
    connected, _ = await comm.connect()
    assert connected
    await sync_to_async(broadcast_fragment)('<div id="fleet-summary">3 working</div>')
    assert await comm.receive_from(timeout=5) == '<div id="fleet-summary">3 working</div>'
    await comm.disconnect()
