"""Event helpers: broadcasting rendered fragments to the websocket groups.

Events themselves are appended with ``Event.objects.record`` inside the
transaction that changes state (see ``fleet.models``); the pump that tails them
and renders the live pages is ``fleet.live``. ``broadcast_fragment`` sends one
fragment to every signed-in browser of every process (the ``fleet`` group).
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

FLEET_GROUP = "fleet"


def broadcast_fragment(html: str, *, group: str = FLEET_GROUP) -> None:
    """Send one rendered fragment to every browser in ``group``."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, {"type": "fleet.fragment", "html": html})
