"""The one websocket consumer: thin, joins groups and forwards rendered fragments."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer

from fleet.events import FLEET_GROUP


class FleetConsumer(AsyncWebsocketConsumer):
    groups: list[str] = []

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.joined = [FLEET_GROUP]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def fleet_fragment(self, message: dict) -> None:
        """A server-rendered HTML fragment, already rendered once for all clients."""
        await self.send(text_data=message["html"])
