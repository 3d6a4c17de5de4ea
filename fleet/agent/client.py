"""HTTP client for Fleet's agent API, standard library only.

Network errors, 5xx and 429 are retried with exponential backoff (429 and 503
honour Retry-After); anything else raises ``FleetError`` with Fleet's error code.
Every call that changes something carries an ``Idempotency-Key``, one per logical
call and the same on each of its retries: a retry after a lost response is then
replayed by Fleet (the first answer, nothing done twice).
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IDENTITY = Path(".fleet") / "identity.json"
# POSTs sent without an Idempotency-Key: a keyed call skips the lean heartbeat and claim
# routes (and would store an answer per heartbeat), and a pull hands the same task or
# review back to a retry anyway. (DELETE claims/ID, the one DELETE, is retry-safe: a
# released claim is answered again as released.)
UNKEYED = frozenset({"heartbeat", "claims", "work/next"})
STATE = Path(".fleet") / "state.json"


class FleetError(Exception):
    def __init__(self, status: int, code: str, detail: Any) -> None:
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


def find_identity(start: Path | None = None) -> Path | None:
    """``.fleet/identity.json`` in ``start`` or the nearest parent that has one."""
    here = (start or Path.cwd()).resolve()
    for directory in [here, *here.parents]:
        if (directory / IDENTITY).is_file():
            return directory / IDENTITY
    return None


@dataclass
class Identity:
    url: str
    token: str
    agent: str = ""
    role: str = ""
    task: str | None = None
    root: Path | None = None  # the directory holding .fleet/
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, start: Path | None = None) -> Identity:
        """FLEET_URL + FLEET_TOKEN from the environment win; else the identity file."""
        path = find_identity(start)
        data: dict = json.loads(path.read_text()) if path else {}
        url = os.environ.get("FLEET_URL") or data.get("url")
        token = os.environ.get("FLEET_TOKEN") or data.get("token")
        if not url or not token:
            raise FleetError(
                0,
                "no_identity",
                "no .fleet/identity.json here or above, and FLEET_URL/FLEET_TOKEN are not set",
            )
        return cls(
            url=url.rstrip("/"),
            token=token,
            agent=data.get("agent", ""),
            role=data.get("role", ""),
            task=data.get("task"),
            root=path.parent.parent if path else None,
            extra=data,
        )

    # Local, untracked state beside the identity: the task and lease epoch last seen.
    def state_path(self) -> Path | None:
        return self.root / STATE if self.root else None

    def read_state(self) -> dict:
        path = self.state_path()
        if path and path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                return {}
        return {}

    def write_state(self, **changes: Any) -> dict:
        state = {**self.read_state(), **changes}
        path = self.state_path()
        if path:
            path.write_text(json.dumps(state, indent=2))
        return state


class Client:
    def __init__(
        self, identity: Identity, *, retries: int = 5, backoff: float = 0.5, timeout: float = 15
    ) -> None:
        self.identity, self.retries, self.backoff, self.timeout = (
            identity,
            retries,
            backoff,
            timeout,
        )

    def call(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> Any:
        """One logical call, retried as the module says. A POST that changes something
        sends ``idempotency_key`` (a fresh one when not given) on every try, so Fleet
        replays a retry whose first answer was lost instead of doing it twice."""
        url = f"{self.identity.url}/api/v1/{path.lstrip('/')}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.identity.token}", "Accept": "application/json"}
        if method == "POST" and path.lstrip("/") not in UNKEYED:
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                payload = _json_or_text(exc.read())
                retryable = exc.code == 429 or exc.code >= 500
                if not retryable or attempt == self.retries:
                    code = payload.get("error", "http_error") if isinstance(payload, dict) else ""
                    detail = (
                        payload.get("detail", payload) if isinstance(payload, dict) else payload
                    )
                    raise FleetError(exc.code, code or "http_error", detail) from None
                wait = exc.headers.get("Retry-After") if exc.code in (429, 503) else None
                # At least what the server asked, at least the backoff, and jittered, so
                # agents turned away together do not all come back at one instant.
                told = float(wait) if wait and wait.isdigit() else 0.0
                time.sleep(max(told, delay) * random.uniform(1.0, 1.5))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt == self.retries:
                    reason = getattr(exc, "reason", exc)
                    tries = self.retries + 1
                    raise FleetError(
                        0, "unreachable", f"{url}: {reason} (after {tries} tries)"
                    ) from None
                time.sleep(delay)
            delay = min(delay * 2, 10)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, *, idempotency_key: str | None = None) -> Any:
        return self.call(
            "POST", path, body if body is not None else {}, idempotency_key=idempotency_key
        )

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]
