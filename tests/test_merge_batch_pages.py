"""A lead sets a repository's merge batch size; the merge queue page shows batches."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fleet.models import Event, MergeBatch, MergeRequest, Task

from .conftest import make_repository, make_task, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(client):
    client.force_login(make_user("lena", "lead"))
    return client


@pytest.fixture(params=["manager", "reviewer"])
def onlooker(client, request):
    client.force_login(make_user(f"olga-{request.param}", request.param))
    return client


def test_a_lead_sets_the_batch_size_on_the_repository_page(lead):
    repository = make_repository(slug="shop")
    page = lead.get(reverse("fleet-repository", args=["shop"])).content.decode()
    assert "Batch size <strong>1</strong>" in page and "Set batch size" in page
    url = reverse("fleet-repository-merge-batch", args=["shop"])
    assert lead.post(url, {"merge_batch_size": "5"}).status_code == 302
    repository.refresh_from_db()
    assert repository.merge_batch_size == 5
    event = Event.objects.get(kind="repository.merge_batch_size")
    assert event.payload == {"from": 1, "to": 5} and event.actor == "user:lena"
    page = lead.get(reverse("fleet-repository", args=["shop"])).content.decode()
    assert "up to 5 queued tasks together" in page


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("0", "greater than or equal to 1"),
        ("21", "less than or equal to 20"),
        ("two", "whole number"),
        ("", "required"),
        ("2.5", "whole number"),
    ],
)
def test_a_batch_size_out_of_range_is_refused_and_changes_nothing(lead, value, error):
    repository = make_repository(slug="shop", merge_batch_size=3)
    url = reverse("fleet-repository-merge-batch", args=["shop"])
    response = lead.post(url, {"merge_batch_size": value}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Batch size not changed" in page and error in page
    repository.refresh_from_db()
    assert repository.merge_batch_size == 3
    assert not Event.objects.filter(kind="repository.merge_batch_size").exists()


def test_others_cannot_set_the_batch_size(onlooker):
    repository = make_repository(slug="shop")
    page = onlooker.get(reverse("fleet-repository", args=["shop"])).content.decode()
    assert "Batch size <strong>1</strong>" in page and "Set batch size" not in page
    url = reverse("fleet-repository-merge-batch", args=["shop"])
    assert onlooker.post(url, {"merge_batch_size": "5"}).status_code == 403
    repository.refresh_from_db()
    assert repository.merge_batch_size == 1


def make_bisected_batch() -> MergeBatch:
    """A batch of three whose whole chain failed, whose first task landed, whose
    second is being checked on top of it."""
    repository = make_repository(slug="shop", merge_batch_size=3)
    batch = MergeBatch.objects.create(
        repository=repository,
        base_sha="0" * 40,
        step="bisecting",
        landed=1,
        trials=[
            {"tasks": ["T-1", "T-2", "T-3"], "top": "3" * 40, "passed": False},
            {"tasks": ["T-1"], "top": "1" * 40, "passed": True},
            {"tasks": ["T-1", "T-2"], "top": "2" * 40, "passed": None},
        ],
    )
    for n, (status, result, step) in enumerate(
        [
            (Task.MERGED, "merged", "cleanup"),
            (Task.MERGING, "pending", "testing"),
            (Task.MERGING, "pending", "candidate"),
        ],
        start=1,
    ):
        task = make_task(repository=repository, key=f"T-{n}", status=status, title=f"Work {n}")
        MergeRequest.objects.create(
            task=task,
            repository=repository,
            position=n,
            result=result,
            step=step,
            batch=batch,
            candidate_sha=str(n) * 40,
        )
    return batch


def test_the_merge_queue_page_shows_a_batch_its_tasks_step_and_bisection(lead):
    batch = make_bisected_batch()
    html = lead.get(reverse("fleet-merges")).content.decode()
    section = html[html.index('id="merges-batches"') : html.index('id="merges-recent"')]
    assert f"Batch {batch.pk}" in section and "bisecting" in section
    assert section.count("<tr>") == 1 + 3  # the header and three checks
    assert "whole chain" in section and "bisect 1" in section and "bisect 2" in section
    for key in ("T-1", "T-2", "T-3"):
        assert key in section
    rows = section[section.index("<tbody>") :]
    assert rows.index("failed") < rows.index("passed") < rows.index("running")
    queue = html[html.index('id="merges-queue"') : html.index('id="merges-batches"')]
    assert f"batch {batch.pk}" in queue  # the waiting tasks link to their batch
