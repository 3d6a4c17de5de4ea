from __future__ import annotations

from django.urls import path

from fleet import consumers

websocket_urlpatterns = [
    path("ws/fleet/", consumers.FleetConsumer.as_asgi()),
]
