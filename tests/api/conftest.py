"""Helpers for calling the agent API as an agent would: a bearer token and JSON."""

from __future__ import annotations

import json as jsonlib

import pytest

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


def make_token_agent(role: str = Agent.BUILDER, **fields) -> tuple[Agent, str]:
    agent = make_agent(role, **fields)
    return agent, agent.issue_token()


@pytest.fixture
def as_agent(client):
    """``as_agent(agent_token)`` → a client that sends that bearer token."""
    return lambda token: AgentClient(client, token)


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
