"""The baseline for ``fleet_bench``: the cheapest async JSON view Django can serve,
through the same middleware as the API. Mounted only when FLEET_BENCH is on."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
async def ping(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    return JsonResponse({"ok": True, "fields": len(body)})


class RawHello:
    """The server's own ceiling: a raw ASGI answer at /_bench/raw, no Django at all."""

    BODY = b'{"ok":true}'

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/_bench/raw":
            return await self.app(scope, receive, send)
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.BODY})
