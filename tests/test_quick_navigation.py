"""A person navigating quickly, against real daphne: page requests abandoned mid-way
(some on a kept-alive connection), live pages' websockets closed while their snapshot
is on the way. Before, daphne logged "CurrentThreadExecutor already quit or is broken"
(a sync-only middleware: see test_aborted_requests.py) and "Attempt to send on a
closed protocol" (a snapshot sent to a browser that had left) a few times in a few
hundred such requests; now nothing but the access log and one-line refusals."""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import random
import re
import urllib.parse
import urllib.request

import pytest
import websockets

from .agent.conftest import Server, free_port
from .conftest import make_agent, make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PAGES = ["/", "/plans/", "/agents/", "/budget/", "/reviews/", "/merges/", "/agents/ada/"]


async def abandoned_get(port: int, cookie: str, rng: random.Random) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(rng.choice((1, 2))):  # a second request on the kept-alive connection
        path = rng.choice(PAGES)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(rng.random() * 0.05)
        with contextlib.suppress(TimeoutError):  # left before the answer, or during it
            await asyncio.wait_for(reader.read(100), rng.random() * 0.1)
    writer.close()


async def abandoned_live_page(port: int, cookie: str, rng: random.Random) -> None:
    view = rng.choice(["overview", "budget", "merges"])
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/fleet/?view={view}&key=",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
    ):
        await asyncio.sleep(rng.random() * 0.2)


async def navigate_quickly(port: int, cookie: str, rounds: int) -> None:
    rng = random.Random(24)
    for _ in range(rounds):
        await asyncio.gather(
            *[abandoned_get(port, cookie, rng) for _ in range(8)],
            *[abandoned_live_page(port, cookie, rng) for _ in range(4)],
            return_exceptions=True,
        )


def sign_in(base: str, username: str, password: str) -> str:
    """The session cookie of a person signed in through the login form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(f"{base}/accounts/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token}
    ).encode()
    request = urllib.request.Request(
        f"{base}/accounts/login/", data=data, headers={"Referer": f"{base}/accounts/login/"}
    )
    opener.open(request).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def test_quick_navigation_logs_no_error(tmp_path):
    make_user("lena", "lead", password="pw-lena-123")
    make_agent(name="ada")
    server = Server(free_port(), tmp_path / "quick").start()
    try:
        cookie = sign_in(f"http://127.0.0.1:{server.port}", "lena", "pw-lena-123")
        assert "sessionid=" in cookie
        asyncio.run(navigate_quickly(server.port, cookie, rounds=60))
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Exception inside application" not in log, log[-3000:]
    assert "Traceback" not in log
