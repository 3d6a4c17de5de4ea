"""No API input reaches outside the repository: paths in claims, findings and a
planner's tasks are relative to the repository root, never absolute or climbing out,
and a task key (which names its worktree directory) cannot carry a path."""

from __future__ import annotations

import pytest

from fleet.models import Agent, FileClaim, Finding, Plan, Review, Task, Wave

from ..conftest import make_agent, make_repository, make_task, make_wave

pytestmark = pytest.mark.django_db

ESCAPES = [
    "../outside.py",
    "src/../../outside.py",
    "/etc/passwd",
    "..",
    "src\\..\\..\\outside.py",
    "src/a.py\x00.txt",
]


@pytest.fixture
def leased(as_agent):
    repo = make_repository(slug="shop")
    builder = make_agent(Agent.BUILDER, name="ada", repository=repo)
    task = make_task(wave=make_wave(status=Wave.RUNNING), repository=repo, status=Task.READY)
    task.assign(agent=builder)
    task.start(by=builder, epoch=task.lease_epoch)
    return task, as_agent(builder.issue_token())


@pytest.mark.parametrize("path", ESCAPES)
def test_claims_stay_inside_the_repository(leased, path):
    task, client = leased
    response = client.post("claims", {"task": task.key, "paths": ["src/ok.py", path]})
    assert response.status_code == 422, response.content
    assert response.json()["error"] and not FileClaim.objects.exists()


@pytest.mark.parametrize("path", ESCAPES)
def test_findings_stay_inside_the_repository(as_agent, path):
    repo = make_repository(slug="shop")
    reviewer = make_agent(Agent.REVIEWER, name="rex", repository=repo)
    task = make_task(repository=repo, status=Task.IN_REVIEW, head_sha="a" * 40)
    review = Review.objects.create(task=task, commit_sha="a" * 40, reviewer=reviewer)
    client = as_agent(reviewer.issue_token())
    finding = {"path": path, "severity": "minor", "title": "t"}
    response = client.post(f"reviews/{review.pk}/findings", {"findings": [finding]})
    assert response.status_code == 422, response.content
    review.refresh_from_db()
    assert review.status == Review.OPEN and not Finding.objects.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"key": "../../evil"},
        {"key": "T-1/../../x"},
        {"declared_paths": ["../outside.py"]},
        {"declared_paths": ["/etc/*"]},
        {"declared_paths": ["src/../../x"]},
        {"repository": "../shop"},
    ],
)
def test_a_planners_task_stays_inside_the_repository(as_agent, changes, data_dir):
    repo = make_repository(slug="shop", worktree_root=str(data_dir / "worktrees" / "shop"))
    orchestrator = make_agent(Agent.ORCHESTRATOR, name="olly", repository=repo)
    wave = Wave.objects.create(plan=Plan.objects.create(name="P", slug="p"), number=1)
    client = as_agent(orchestrator.issue_token())
    body = {"key": "T-9", "title": "New", "repository": "shop", "declared_paths": ["src/*.py"]}
    response = client.post(f"waves/{wave.pk}/tasks", {**body, **changes})
    assert response.status_code in (404, 422), response.content
    assert not Task.objects.exists()
    assert not (data_dir.parent / "evil").exists()
