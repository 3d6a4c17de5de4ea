"""A dashboard that stops reading for two minutes while the fleet is busy: the
server sends it at most a window of unacknowledged frames (and daphne drops it once it
answers no pings), so server memory stays bounded; the other dashboard is unaffected;
the slow one resyncs once it reads again (reconnecting, if it was dropped)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
import websockets
from django.conf import settings
from django.test import Client as DjangoClient

from fleet.consumers import WINDOW

from .agent.conftest import Server, free_port
from .conftest import make_agent, make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
PAUSE = 120  # seconds the slow dashboard does not read
AGENTS = 120  # a busy overview: big frames, several a second


def beat(base: str, token: str, line: str) -> None:
    request = urllib.request.Request(
        f"{base}/api/v1/heartbeat",
        data=json.dumps({"context_pct": 30, "status_line": line}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200


def test_a_dashboard_that_stops_reading(tmp_path):
    make_user("lena", "lead", password="pw")
    tokens = [make_agent(name=f"a{i:03d}").issue_token() for i in range(AGENTS)]
    server = Server(free_port(), tmp_path / "web")
    server.env["SECRET_KEY"] = settings.SECRET_KEY  # the session below holds there
    server.access_log = False
    server.start()
    browser = DjangoClient()
    browser.login(username="lena", password="pw")
    headers = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}", "Origin": server.url}
    url = f"ws://127.0.0.1:{server.port}/ws/fleet/?view=overview&ack=1"

    async def play() -> dict:
        seen = {"last": -1, "frames": 0}
        async with (
            # Like a stalled tab: the connection stays up (the library reads frames and
            # answers daphne's pings into an unbounded queue) but nothing is taken from
            # it, so nothing is acknowledged.
            websockets.connect(
                url,
                additional_headers=headers,
                max_size=None,
                ping_interval=None,
                max_queue=None,
            ) as slow,
            websockets.connect(url, additional_headers=headers, max_size=None) as fast,
        ):
            for ws in (slow, fast):
                await asyncio.wait_for(ws.recv(), timeout=30)  # the snapshots
                await ws.send("ack")

            async def read_fast() -> None:
                while True:
                    frame = await fast.recv()
                    await fast.send("ack")
                    seen["frames"] += 1
                    for part in frame.split("mark-")[1:]:
                        seen["last"] = max(seen["last"], int(part.split()[0].strip("<\"'")))

            reader = asyncio.create_task(read_fast())
            rss_before = None
            started, n = time.monotonic(), 0
            while time.monotonic() - started < PAUSE:
                n += 1
                batch = [tokens[(n * 7 + k) % AGENTS] for k in range(10)]
                await asyncio.gather(
                    *(asyncio.to_thread(beat, server.url, t, f"mark-{n} busy") for t in batch)
                )
                if rss_before is None and time.monotonic() - started > 10:
                    rss_before = server.rss_kb()
                await asyncio.sleep(0.1)
            last_sent = n
            rss_after = server.rss_kb()
            await asyncio.sleep(2)
            fast_last = seen["last"]
            reader.cancel()
            # The slow one reads again: what waited for it is at most the window. daphne
            # may have dropped it meanwhile (it answered no pings): then it reconnects,
            # as live.js does. Either way its last frame is the page as it is now.
            drained, dropped = [], False
            while True:
                try:
                    frame = await asyncio.wait_for(slow.recv(), timeout=3)
                    drained.append(frame)
                    await slow.send("ack")
                except TimeoutError:
                    break
                except websockets.ConnectionClosed:
                    dropped = True
                    break
            resynced = drained[-1] if drained and not dropped else ""
            if dropped:
                async with websockets.connect(url, additional_headers=headers) as again:
                    resynced = await asyncio.wait_for(again.recv(), timeout=30)
            return {
                "dropped": dropped,
                "resynced": resynced,
                "last_sent": last_sent,
                "fast_last": fast_last,
                "fast_frames": seen["frames"],
                "drained": drained,
                "rss_growth_kb": rss_after - rss_before,
            }

    try:
        result = asyncio.run(play())
    finally:
        server.stop()
    assert result["fast_last"] == result["last_sent"]  # the reading one kept up
    assert result["fast_frames"] > 3 * WINDOW  # (and got far more frames than the window)
    drained = result["drained"]
    assert len(drained) <= WINDOW + 1, len(drained)
    assert f"mark-{result['last_sent']} " in result["resynced"]  # resynced to now
    print(f"slow dashboard dropped by daphne: {result['dropped']}; drained {len(drained)}")
    assert result["rss_growth_kb"] < 30 * 1024, result["rss_growth_kb"]
