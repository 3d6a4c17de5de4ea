"""Random sequences of transitions never reach an invalid state.

The reference model below is written from DESIGN.md's state diagrams, not from
the code's tables, so a wrong edge in either shows up as a disagreement.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fleet.models import Agent, Event, Task, TransitionError, Wave

from .conftest import make_agent, make_plan, make_repository, make_task

pytestmark = pytest.mark.django_db(transaction=False)

OPEN = [
    "draft",
    "ready",
    "assigned",
    "working",
    "in_review",
    "changes_requested",
    "approved",
    "merging",
]
TASK_EDGES = {
    "make_ready": {"draft": "ready"},
    "assign": {"ready": "assigned"},
    "start": {"assigned": "working"},
    "submit": {"working": "in_review"},
    # A lead takes an approved task back too (a late accepted finding: README, Reviews).
    "request_changes": {
        "in_review": "changes_requested",
        "approved": "changes_requested",
        "merging": "changes_requested",
    },
    "resume": {"changes_requested": "working"},
    "approve": {"in_review": "approved"},
    "enqueue_merge": {"approved": "merging"},
    "mark_merged": {"merging": "merged"},
    "expire_lease": {"assigned": "ready", "working": "ready"},
    "fail": dict.fromkeys(OPEN, "failed"),
    "retry": {"failed": "ready"},
    "cancel": dict.fromkeys([*OPEN, "failed"], "cancelled"),
}
TERMINAL = {"fail", "cancel", "stop"}
RELEASING = {"expire_lease", "fail", "cancel", "mark_merged"}
AGENT_ACTIVE = ["idle", "working", "reviewing", "rotating"]
AGENT_EDGES = {
    "start_work": {"idle": "working"},
    "finish": {"working": "idle", "reviewing": "idle"},
    "rotate": {"idle": "rotating", "working": "rotating", "reviewing": "rotating"},
    "complete_rotation": {"rotating": None},  # back to working with a task, else idle
    "mark_stale": dict.fromkeys(AGENT_ACTIVE, "stale"),
    "revive": {"stale": None},
    "stop": dict.fromkeys([*AGENT_ACTIVE, "stale"], "stopped"),
    "resume": {"stopped": None},
}
WAVE_EDGES = {
    "approve": {"draft": "approved"},
    "start": {"approved": "running"},
    "block": {"running": "blocked"},
    "unblock": {"blocked": "running"},
    "mark_merged": {"running": "merged"},
    "verify": {"merged": "verified"},
}


class FleetMachine(RuleBasedStateMachine):
    """Two waves of one plan, two tasks in the first wave, and one builder."""

    @initialize()
    def setup(self):
        plan = make_plan()
        repo = make_repository()
        self.waves = [
            Wave.objects.create(plan=plan, number=1),
            Wave.objects.create(plan=plan, number=2),
        ]
        self.tasks = [make_task(wave=self.waves[0], repository=repo) for _ in range(2)]
        make_task(wave=self.waves[1], repository=repo)
        self.agent = make_agent()
        self.expected_tasks = ["draft", "draft"]
        self.assigned = [False, False]
        self.expected_waves = ["draft", "draft"]
        self.expected_agent = "idle"
        self.agent_task = None
        self.events = Event.objects.count()

    def _apply(self, obj, action, expected_next, kwargs):
        before = Event.objects.count()
        if expected_next is None:
            with pytest.raises(TransitionError):
                getattr(obj, action)(**kwargs)
            assert Event.objects.count() == before
        else:
            getattr(obj, action)(**kwargs)
            assert Event.objects.count() == before + 1
            self.events += 1
            return True
        return False

    def _pick(self, data, edges, state):
        """Mostly moves the reference model allows; otherwise one it forbids."""
        legal = sorted(a for a, moves in edges.items() if state in moves)
        # Terminal moves are legal almost everywhere; keep them rare so the
        # walk reaches the deep states (review, merge queue) often.
        if data.draw(st.integers(0, 29), label="allow_terminal") > 0:
            legal = [a for a in legal if a not in TERMINAL] or legal
        illegal = sorted(a for a, moves in edges.items() if state not in moves)
        if legal and (not illegal or data.draw(st.integers(0, 3), label="legal") > 0):
            return data.draw(st.sampled_from(legal), label="action")
        return data.draw(st.sampled_from(illegal), label="action")

    @rule(i=st.integers(0, 1), data=st.data())
    def task_action(self, i, data):
        task, state = self.tasks[i], self.expected_tasks[i]
        action = self._pick(data, TASK_EDGES, state)
        nxt = TASK_EDGES[action].get(state)
        kwargs = {
            "make_ready": {"by": None},
            "assign": {"agent": self.agent, "ttl": 600},
            "start": {"by": None},
            "submit": {"commit": "f" * 40, "by": None},
            "request_changes": {"by": None},
            "resume": {"by": None},
            "approve": {"by": None},
            "enqueue_merge": {"by": None},
            "mark_merged": {},
            # Leases in this test are long; expiry is tested from the far future.
            "expire_lease": {"now": timezone.now() + timedelta(hours=1)},
            "fail": {"by": None, "reason": "r"},
            "retry": {"by": None},
            "cancel": {"by": None},
        }[action]
        if action == "assign" and (
            self.expected_waves[0] not in ("approved", "running")
            or self.expected_agent in ("stopped", "stale")
        ):
            nxt = None  # work is handed out only in an approved or running wave, to an
            # available agent
        if action == "resume" and not self.assigned[i]:
            nxt = None  # nobody to resume it
        if self._apply(task, action, nxt, kwargs):
            self.expected_tasks[i] = nxt
            if action == "assign":
                self.assigned[i] = True
            elif action in ("expire_lease", "retry"):
                self.assigned[i] = False
            if action in RELEASING and self.agent_task == task.pk:
                # The agent lets go of a task that left its hands.
                self.agent_task = None
                if self.expected_agent in ("working", "reviewing"):
                    self.expected_agent = "idle"

    @rule(i=st.integers(0, 1), data=st.data())
    def wave_action(self, i, data):
        wave, state = self.waves[i], self.expected_waves[i]
        action = self._pick(data, WAVE_EDGES, state)
        nxt = WAVE_EDGES[action].get(state)
        if action == "start" and i == 1 and self.expected_waves[0] != "verified":
            nxt = None
        open_tasks = any(s not in ("merged", "cancelled") for s in self.expected_tasks)
        if action == "mark_merged" and i == 0 and open_tasks:
            nxt = None
        kwargs = {"block": {}, "mark_merged": {}, "start": {}}.get(action, {"by": None})
        if self._apply(wave, action, nxt, kwargs):
            self.expected_waves[i] = nxt

    @rule(i=st.integers(0, 1), data=st.data())
    def agent_action(self, i, data):
        action = self._pick(data, AGENT_EDGES, self.expected_agent)
        nxt = AGENT_EDGES[action].get(self.expected_agent)
        if nxt is None and self.expected_agent in AGENT_EDGES[action]:
            nxt = "working" if self.agent_task is not None else "idle"
        if action == "start_work" and self.expected_tasks[i] not in ("assigned", "working"):
            nxt = None  # an agent works only on a task leased to it
        kwargs = {"start_work": {"task": self.tasks[i]}, "stop": {"reason": "person"}}.get(
            action, {"by": None} if action == "resume" else {}
        )
        if self._apply(self.agent, action, nxt, kwargs):
            self.expected_agent = nxt
            if action == "start_work":
                self.agent_task = self.tasks[i].pk
            elif action == "finish":
                self.agent_task = None

    @invariant()
    def database_matches_the_reference_model(self):
        if not hasattr(self, "tasks"):
            return
        for i, (task, expected) in enumerate(zip(self.tasks, self.expected_tasks, strict=True)):
            row = Task.objects.get(pk=task.pk)
            assert row.status == expected == task.status
            leased = row.status in ("assigned", "working")
            assert (row.lease_expires_at is not None) == leased
            if leased:
                assert row.assignee_id == self.agent.pk
            assert (row.assignee_id is not None) == self.assigned[i]
        for wave, expected in zip(self.waves, self.expected_waves, strict=True):
            assert Wave.objects.get(pk=wave.pk).status == expected
        agent = Agent.objects.get(pk=self.agent.pk)
        assert agent.status == self.expected_agent
        assert agent.current_task_id == self.agent_task
        assert (agent.stop_reason != "") == (agent.status == "stopped")
        if agent.status in ("working", "reviewing"):
            assert agent.current_task_id is not None
        assert Event.objects.count() == self.events


def test_random_transition_sequences_stay_valid():
    # Each example runs inside the test's transaction; savepoints keep failed
    # transitions from poisoning it on PostgreSQL.
    assert connection.in_atomic_block
    run_state_machine_as_test(
        FleetMachine,
        settings=settings(
            max_examples=80,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
