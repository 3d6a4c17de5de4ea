"""ASGI entry point: HTTP through Django (heartbeats and claims through the lean routes
in front of it), websockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from fleet import daphne_speedups  # noqa: E402
from fleet.api.fastpath import ClaimRoute, HeartbeatRoute  # noqa: E402
from fleet.origin import SameOriginValidator  # noqa: E402
from fleet.routing import websocket_urlpatterns  # noqa: E402

daphne_speedups.install()
http_app = django_asgi_app
if settings.FLEET_HEARTBEAT_FASTPATH:
    http_app = HeartbeatRoute(ClaimRoute(http_app))
if settings.FLEET_BENCH:
    from fleet.bench.views import RawHello

    http_app = RawHello(http_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
