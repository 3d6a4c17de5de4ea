"""The websocket origin check is Django's CSRF origin check: the page's scheme, host and
port must be the request's own (or in ``CSRF_TRUSTED_ORIGINS``), and ``ALLOWED_HOSTS``
still applies. A handshake without an Origin header is refused, as before."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from fleet.asgi import application

from .conftest import make_user
from .test_consumers import session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


async def connects(
    origin: str | None, *, host: str = "127.0.0.1", scheme: str = "ws", **headers: str
) -> bool:
    user = await sync_to_async(make_user)(None, "lead")
    cookie = await sync_to_async(session_cookie_for)(user)
    sent = [(b"host", host.encode()), (b"cookie", cookie)]
    if origin is not None:
        sent.append((b"origin", origin.encode()))
    sent += [(name.encode(), value.encode()) for name, value in headers.items()]
    comm = WebsocketCommunicator(application, "/ws/fleet/", headers=sent)
    comm.scope["scheme"] = scheme  # the server's own: ws, or wss behind TLS
    connected, _ = await comm.connect()
    await comm.disconnect()
    return connected


@pytest.mark.parametrize(
    "origin, host, scheme",
    [
        ("http://127.0.0.1", "127.0.0.1", "ws"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
        ("http://localhost:8000", "localhost:8000", "ws"),
        ("https://127.0.0.1", "127.0.0.1", "wss"),
    ],
)
async def test_the_pages_own_origin_is_accepted(origin, host, scheme):
    assert await connects(origin, host=host, scheme=scheme)


@pytest.mark.parametrize(
    "origin, host, scheme",
    [
        ("http://127.0.0.1:1234", "127.0.0.1", "ws"),  # another port
        ("http://localhost:9999", "127.0.0.1", "ws"),  # another host and port
        ("https://127.0.0.1", "127.0.0.1", "ws"),  # another scheme
        ("http://127.0.0.1", "127.0.0.1", "wss"),  # a plain-HTTP page on a TLS socket
        ("http://127.0.0.1", "127.0.0.1:8000", "ws"),  # the default port is not 8000
        ("http://127.0.0.1:1234", "127.0.0.1:8000", "ws"),
        ("http://evil.example", "127.0.0.1", "ws"),
        ("http://evil.example", "evil.example", "ws"),  # not in ALLOWED_HOSTS
        ("http://127.0.0.1", "evil.example", "ws"),
        ("null", "127.0.0.1", "ws"),
        ("http://127.0.0.1.evil.example", "127.0.0.1", "ws"),
        (None, "127.0.0.1", "ws"),  # no Origin header: refused, as before
    ],
)
async def test_any_other_origin_is_refused(origin, host, scheme):
    assert not await connects(origin, host=host, scheme=scheme)


async def test_trusted_origins_are_accepted_like_djangos_csrf_check(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://fleet.example.com", "https://*.example.org"]
    assert await connects("https://fleet.example.com")
    assert await connects("https://dash.example.org")
    assert not await connects("http://fleet.example.com")  # another scheme
    assert not await connects("https://fleet.example.com:8443")  # another port
    assert not await connects("https://example.com")


async def test_behind_a_tls_proxy_the_forwarded_scheme_counts(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await connects("https://127.0.0.1", x_forwarded_proto="https")
    assert not await connects("http://127.0.0.1", x_forwarded_proto="https")
    assert not await connects("https://127.0.0.1", x_forwarded_proto="http")


async def test_allowed_hosts_are_read_when_connecting(settings):
    settings.ALLOWED_HOSTS = ["fleet.example.com"]
    assert await connects("http://fleet.example.com", host="fleet.example.com")
    assert not await connects("http://127.0.0.1", host="127.0.0.1")
