"""Helpers for calling the agent API as an agent would: a bearer token and JSON."""

from __future__ import annotations

import json as jsonlib
import re

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from fleet.api.fastpath import ClaimRoute, HeartbeatRoute
from fleet.models import Agent, Task, Wave

from ..conftest import make_agent, make_repository, make_task, make_wave


class AgentClient:
    def __init__(self, client, token: str | None) -> None:
        self.client, self.token = client, token

    def call(self, method: str, path: str, json=None, *, raw: bytes | None = None, **headers):
        if self.token is not None:
            headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {self.token}")
        body = raw if raw is not None else (jsonlib.dumps(json) if json is not None else None)
        kwargs = {"content_type": "application/json", **headers}
        if body is not None:
            kwargs["data"] = body
        return getattr(self.client, method)(f"/api/v1/{path}", **kwargs)

    def get(self, path, **kw):
        return self.call("get", path, **kw)

    def post(self, path, json=None, **kw):
        return self.call("post", path, json, **kw)

    def delete(self, path, **kw):
        return self.call("delete", path, **kw)


DELEGATED = 599  # what the stand-in for Django answers, so the client can tell


async def _to_django(scope, receive, send):
    await send({"type": "http.response.start", "status": DELEGATED, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class LeanResponse:
    """What the lean route answered, shaped like the test client's response."""

    route = "lean"

    def __init__(self, answer: dict) -> None:
        self.status_code = answer["status"]
        self.content = answer["body"]
        self.headers = {k.decode().lower(): v.decode() for k, v in answer["headers"]}

    def json(self):
        return jsonlib.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]


class LeanAgentClient(AgentClient):
    """Heartbeats and claims through the lean ASGI routes (``fleet.api.fastpath``) in
    this test's thread and transaction; whatever those hand on to Django, and every
    other call, through the test client (``response.route`` says which answered).
    Claims take the one-thread way (a pool thread would not see this test's
    transaction); live-server tests on PostgreSQL run the deployed pool."""

    route = HeartbeatRoute(ClaimRoute(_to_django, threads=1))

    @staticmethod
    def lean(method: str, path: str) -> bool:
        return (method, path) in (("post", "heartbeat"), ("post", "claims")) or (
            method == "delete" and re.fullmatch(r"claims/[0-9]+", path) is not None
        )

    def call(self, method: str, path: str, json=None, *, raw: bytes | None = None, **headers):
        if not self.lean(method, path):
            return super().call(method, path, json, raw=raw, **headers)
        body = raw if raw is not None else (b"" if json is None else jsonlib.dumps(json).encode())
        host = headers.pop("HTTP_HOST", "testserver")
        sent = [(b"host", host.encode()), (b"content-type", b"application/json")]
        if self.token is not None and "HTTP_AUTHORIZATION" not in headers:
            sent.append((b"authorization", f"Bearer {self.token}".encode()))
        for name, value in headers.items():
            key = name.removeprefix("HTTP_").replace("_", "-").lower().encode()
            for one in value if isinstance(value, list) else [value]:  # a list: repeated
                sent.append((key, one.encode()))
        communicator = HttpCommunicator(self.route, method.upper(), f"/api/v1/{path}", body, sent)
        answer = async_to_sync(communicator.get_response)(timeout=10)
        if answer["status"] != DELEGATED:
            return LeanResponse(answer)
        if host != "testserver":
            headers["HTTP_HOST"] = host
        # A repeated header reaches Django joined, as a server hands it over.
        headers = {k: ",".join(v) if isinstance(v, list) else v for k, v in headers.items()}
        response = super().call(method, path, json, raw=raw, **headers)
        response.route = "django"
        return response


def make_token_agent(role: str = Agent.BUILDER, **fields) -> tuple[Agent, str]:
    agent = make_agent(role, **fields)
    return agent, agent.issue_token()


@pytest.fixture
def as_agent(client):
    """``as_agent(agent_token)`` → a client that sends that bearer token."""
    return lambda token: AgentClient(client, token)


@pytest.fixture(params=["api", "lean"])
def as_agent_any(request, client):
    """Like ``as_agent``, once through each route: the API's own and the lean ASGI
    ones (heartbeats, claims), which must answer the same."""
    cls = AgentClient if request.param == "api" else LeanAgentClient
    return lambda token: cls(client, token)


@pytest.fixture
def running_wave(db) -> Wave:
    return make_wave(status=Wave.RUNNING)


@pytest.fixture
def ready_tasks(running_wave):
    repo = make_repository()
    return [
        make_task(wave=running_wave, repository=repo, status=Task.READY, key=f"T-{100 + i}")
        for i in range(3)
    ]
