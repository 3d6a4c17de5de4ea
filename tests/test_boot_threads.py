"""Two boots of one agent at once (their own database connections): each starts a
session of its own, one after the other; neither fails."""

from __future__ import annotations

import pytest

from fleet import dispatch
from fleet.models import Agent, AgentSession

from .conftest import make_agent
from .test_leases_threads import together

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_boots_at_once_each_start_a_session():
    agent = make_agent(name="twice")
    dispatch.boot(agent)

    def boot():
        return dispatch.boot(Agent.objects.get(pk=agent.pk))["session_number"]

    for _ in range(3):
        results = together(boot, boot)
        assert all(isinstance(n, int) for n in results), results
    sessions = AgentSession.objects.filter(agent=agent).order_by("number")
    assert [s.number for s in sessions] == [1, 2, 3, 4, 5, 6, 7]
    assert [s.ended_at is None for s in sessions] == [False] * 6 + [True]
    assert {s.end_reason for s in sessions[:6]} == {"crashed"}
