"""The one websocket consumer: thin, joins groups and forwards rendered fragments."""

from __future__ import annotations

import contextlib
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from fleet import attention, live
from fleet.events import FLEET_GROUP
from fleet.roles import user_roles

try:  # what daphne raises on a send to a browser that already went away
    from autobahn.exception import Disconnected
except ImportError:  # another ASGI server: the spec's error for it is an OSError
    Disconnected = OSError
GONE = (OSError, Disconnected)

RECHECK = 30.0  # seconds between re-checks that the person may still watch
# Frames a page may hold unacknowledged (live.js acks each once swapped in, and says so
# with ``ack=1``: a page of an older live.js is not held to it). A page that stops
# reading gets nothing more until it has caught up, then a fresh snapshot; one that
# sends no ack for STALL seconds meanwhile is closed (1013: it reconnects when it can,
# and the new connection starts from a snapshot). What the server buffers for a page
# stays bounded, and the others are unaffected.
WINDOW = 20
STALL = 30.0


def _may_watch(user_id, session) -> bool:
    """Still signed in (the session exists) as an active person with a role."""
    key = getattr(session, "session_key", None)
    if not key or not session.exists(key):
        return False
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return user is not None and bool(user_roles(user))


# Messages whose handlers touch no database on the event loop's behalf (what they
# read runs in database_sync_to_async or the snapshot pool, which close their own).
NO_DATABASE = frozenset({"fleet.fragment", "websocket.receive"})


class FleetConsumer(AsyncWebsocketConsumer):
    groups: list[str] = []

    async def dispatch(self, message: dict) -> None:
        """Channels closes stale database connections before every handler, on the
        shared sync thread, which records heartbeats: once per browser per frame, so
        a frame's fan-out to fifty dashboards queued behind the heartbeat batches.
        Frames and acks go straight to their handlers."""
        if message.get("type") in NO_DATABASE:
            handler = self.fleet_fragment if message["type"] == "fleet.fragment" else None
            await (handler or self.websocket_receive)(message)
            return
        await super().dispatch(message)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        # The same rule as the pages: a person without a role sees nothing live.
        # (Off the shared sync thread, which records heartbeats: a reconnect storm of
        # dashboards must not delay them.)
        roles = await database_sync_to_async(user_roles, thread_sensitive=False)(user)
        if not roles:
            await self.close(code=4403)
            return
        self.user_id, self.checked_at = user.pk, time.monotonic()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        view = (query.get("view") or [""])[0]
        raw_key = (query.get("key") or [""])[0]
        self.joined = [FLEET_GROUP]
        self.snapshot_at, self.page = 0.0, None
        self.acks = (query.get("ack") or [""])[0] == "1"
        self.unacked, self.behind, self.acked_at = 0, False, time.monotonic()
        if view:
            try:
                key = await database_sync_to_async(live.resolve, thread_sensitive=False)(
                    view, raw_key
                )
            except live.NoSuchPage:
                await self.close(code=4404)
                return
            self.page = (view, key)
            self.joined.append(live.group(view, key))
            # What newly needs a person in their roles (the pump runs while they watch).
            self.joined += [live.group(attention.VIEW, role) for role in sorted(roles)]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        # Accept before rendering: a storm of reconnecting dashboards must not run
        # past the server's handshake timeout while their snapshots render.
        await self.accept()
        if self.page is not None:
            # Watch first, so the pump runs for the page; then the page's live regions
            # as they are now, so a (re)connected browser converges. Frames rendered
            # before the snapshot began are older than it: dropped.
            live.PUMP.watch(*self.page, +1)
            self.watching = True
            try:
                self.snapshot_at, html = await live.render_snapshot(*self.page)
            except BaseException as exc:
                # No snapshot, no watching: Channels calls no disconnect() when
                # connect() fails, so the watch and the groups are given back here.
                await self.disconnect(1011)
                if isinstance(exc, live.NoSuchPage):  # deleted meanwhile
                    await self.close(code=4404)
                    return
                raise
            await self._send(html)

    async def _send(self, html: str) -> None:
        self.unacked += 1
        # The browser may have left while its frame was on the way (a person navigating
        # quickly): nothing to tell it; the disconnect that follows cleans up.
        with contextlib.suppress(GONE):
            await self.send(text_data=html)

    async def receive(self, text_data: str | None = None, bytes_data=None) -> None:
        """A page acknowledges the frames it swapped in (``ack``, or ``ack:N`` for N at
        once); one that fell behind gets the page as it is now once it has caught up."""
        if not text_data or not text_data.startswith("ack"):
            return
        count = text_data.partition(":")[2]
        if not (text_data == "ack" or (count.isdigit() and 0 < int(count) <= 10 * WINDOW)):
            return
        self.acked_at = time.monotonic()
        self.unacked = max(0, self.unacked - (int(count) if count else 1))
        if self.behind and self.unacked == 0 and self.page is not None:
            self.behind = False
            self.snapshot_at, html = await live.render_snapshot(*self.page)
            await self._send(html)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "watching", False):
            live.PUMP.watch(*self.page, -1)
            self.watching = False
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def fleet_fragment(self, message: dict) -> None:
        """A server-rendered HTML fragment, already rendered once for all clients. A
        refresh's frame has a ``tail`` (the fresh pulses after its regions) read later
        than its regions: a browser whose snapshot began between the two takes the
        tail only."""
        html = message["html"] + message.get("tail", "")
        if message.get("at", time.monotonic()) < self.snapshot_at:
            if not message.get("tail") or message.get("tail_at", 0.0) < self.snapshot_at:
                return
            html = message["tail"]
        if time.monotonic() - self.checked_at > RECHECK:
            self.checked_at = time.monotonic()
            allowed = await database_sync_to_async(_may_watch, thread_sensitive=False)(
                self.user_id, self.scope.get("session")
            )
            if not allowed:  # signed out, deactivated or no longer in a role
                await self.close(code=4401)
                return
        if self.acks and (self.behind or self.unacked >= WINDOW):
            # Not reading: skip (and resync once it has caught up), or give up on it.
            self.behind = True
            if time.monotonic() - self.acked_at > STALL:
                await self.close(code=1013)
            return
        await self._send(html)
