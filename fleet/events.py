"""Event helpers: broadcasting rendered fragments to the websocket groups.

Events themselves are appended with ``Event.objects.record`` inside the
transaction that changes state (see ``fleet.models``). The event pump that
tails the table and renders partials arrives with the live-dashboard work.
Note for it: on PostgreSQL, sequence ids can become visible out of order
(a lower id commits after a higher one), so tailing ``id > last_seen`` alone
can skip events; re-read a short window behind the last id.
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
