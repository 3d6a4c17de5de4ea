"""The one websocket consumer: thin, joins groups and forwards rendered fragments."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from fleet import live
from fleet.events import FLEET_GROUP
from fleet.roles import user_roles


class FleetConsumer(AsyncWebsocketConsumer):
    groups: list[str] = []

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        # The same rule as the pages: a person without a role sees nothing live.
        if not await database_sync_to_async(user_roles)(user):
            await self.close(code=4403)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        view = (query.get("view") or [""])[0]
        self.joined = [FLEET_GROUP]
        if view in live.VIEWS:
            self.joined.append(live.group(view))
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        if view in live.VIEWS:
            # The page's live regions as they are now: a (re)connected browser converges.
            html = await database_sync_to_async(live.snapshot)(view)
            await self.send(text_data=html)
            live.PUMP.ensure_running()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def fleet_fragment(self, message: dict) -> None:
        """A server-rendered HTML fragment, already rendered once for all clients."""
        await self.send(text_data=message["html"])
