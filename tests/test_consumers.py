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


async def _watching(ack: bool):
    user = await sync_to_async(make_user)("wsw", "lead")
    cookie = await sync_to_async(session_cookie_for)(user)
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie)]
    path = "/ws/fleet/?view=overview" + ("&ack=1" if ack else "")
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect()
    assert connected
    snapshot = await comm.receive_from(timeout=10)
    return comm, snapshot


async def _drain(comm) -> list[str]:
    frames = []
    while not await comm.receive_nothing(timeout=0.5):
        frames.append(await comm.receive_from(timeout=5))
    return frames


async def test_a_page_that_stops_acknowledging_gets_a_window_then_a_snapshot():
    from fleet.consumers import WINDOW

    comm, snapshot = await _watching(ack=True)
    for i in range(WINDOW + 10):
        await sync_to_async(broadcast_fragment)(f'<div id="fleet-summary">frame {i}</div>')
    frames = await _drain(comm)
    # The snapshot and WINDOW - 1 frames (ours, and the pump's first render of the
    # page) are in flight, unacknowledged: no more came.
    ours = [f for f in frames if "frame " in f]
    assert len(frames) == WINDOW - 1 and len(ours) >= WINDOW - 2
    assert ours == [f'<div id="fleet-summary">frame {i}</div>' for i in range(len(ours))]
    for _ in range(WINDOW - 1):
        await comm.send_to(text_data="ack")
    assert await comm.receive_nothing(timeout=0.5)  # one still unacknowledged: wait
    await comm.send_to(text_data="ack")
    resync = await comm.receive_from(timeout=10)  # caught up: the page as it is now
    assert "frame" not in resync and resync.count("id=") >= 2
    await comm.send_to(text_data="ack")
    await sync_to_async(broadcast_fragment)('<div id="fleet-summary">live again</div>')
    assert await comm.receive_from(timeout=5) == '<div id="fleet-summary">live again</div>'
    await comm.disconnect()


async def test_a_page_that_does_not_acknowledge_at_all_is_not_held_to_the_window():
    """A page of an older live.js (no ack=1) keeps getting every frame."""
    from fleet.consumers import WINDOW

    comm, _ = await _watching(ack=False)
    for i in range(WINDOW + 10):
        await sync_to_async(broadcast_fragment)(f'<div id="fleet-summary">frame {i}</div>')
    ours = [f for f in await _drain(comm) if "frame " in f]
    assert len(ours) == WINDOW + 10
    await comm.disconnect()


async def test_acknowledgements_may_come_several_at_once():
    from fleet.consumers import WINDOW

    comm, _ = await _watching(ack=True)
    for i in range(WINDOW - 1):
        await sync_to_async(broadcast_fragment)(f'<div id="fleet-summary">frame {i}</div>')
    await _drain(comm)
    await comm.send_to(text_data=f"ack:{WINDOW}")  # everything so far, in one message
    for junk in ("ack:0", "ack:-3", "ack:x", "hello"):  # ignored
        await comm.send_to(text_data=junk)
    resync = await _drain(comm)  # (a snapshot, had the pump's frames filled the window)
    if resync:
        await comm.send_to(text_data=f"ack:{len(resync)}")
    await sync_to_async(broadcast_fragment)('<div id="fleet-summary">still live</div>')
    assert '<div id="fleet-summary">still live</div>' in await _drain(comm)
    await comm.disconnect()
