"""The runner's HTTP client: ``POST /api/v1/runner/sync`` with the runner token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class FleetUnreachable(Exception):
    """Fleet did not answer (down, restarting, the network): try again next tick."""


class RunnerRefused(Exception):
    """Fleet refused this runner (401: token unknown or revoked; 4xx: a bug here)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class Fleet:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def sync(self, report: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/v1/runner/sync",
            data=json.dumps(report).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
                detail = body.get("detail", body)
            except ValueError:
                detail = exc.reason
            if exc.code >= 500 or exc.code == 429:
                raise FleetUnreachable(f"HTTP {exc.code}: {detail}") from exc
            raise RunnerRefused(exc.code, str(detail)) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FleetUnreachable(str(getattr(exc, "reason", exc))) from exc
