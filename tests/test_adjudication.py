"""People's verdicts on a fresh reviewer's findings: accept sends the finding to the
builder and returns the task; overrule needs a reason; verdicts change until merge and
each is audited; accepted findings are resolved once the builder resubmits. Reviewers
and leads adjudicate; managers read; nobody but a lead merges."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fleet import adjudication
from fleet.models import Event, Finding, Message, Review, Task

from .conftest import make_agent, make_task, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed():
    """A task in review (submitted at commit a…) with a closed review of three findings."""
    builder = make_agent(name="ada")
    task = make_task(status=Task.READY, title="Cart")
    task.assign(agent=builder)
    task.start(by=builder)
    task.submit(commit="a" * 40, by=builder)
    review = Review.objects.create(task=task, commit_sha="a" * 40, status=Review.CLOSED)
    bug = Finding.objects.create(
        review=review,
        path="shop/cart.py",
        line_start=3,
        severity="major",
        title="Off by one",
        body="range(n - 1) skips the last item.",
        suggested_fix="range(n)",
    )
    fp1 = Finding.objects.create(review=review, path="a.py", severity="minor", title="Style")
    fp2 = Finding.objects.create(review=review, path="b.py", severity="info", title="Old API")
    return task, builder, bug, fp1, fp2


def test_accept_sends_the_finding_to_the_builder_and_returns_the_task(reviewed):
    task, builder, bug, _, _ = reviewed
    lead = make_user("lena", "lead")
    adjudication.decide(bug.pk, verdict="accepted", by=lead)
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED
    message = Message.objects.get(recipient=builder)
    assert "Off by one" in message.subject and "range(n)" in message.body
    event = Event.objects.get(kind="finding.accept")
    assert event.actor == "user:lena" and event.payload["previous"] == "pending"


def test_overrule_needs_a_reason_and_changes_nothing_without_one(reviewed):
    task, _, _, fp1, _ = reviewed
    reviewer = make_user("rita", "reviewer")
    with pytest.raises(adjudication.Refusal, match="needs a reason"):
        adjudication.decide(fp1.pk, verdict="overruled", reason="  ", by=reviewer)
    fp1.refresh_from_db()
    assert fp1.verdict == Finding.PENDING and not Event.objects.filter(kind__startswith="finding")
    adjudication.decide(fp1.pk, verdict="overruled", reason="valid for Django 6", by=reviewer)
    fp1.refresh_from_db()
    assert fp1.verdict == Finding.OVERRULED and fp1.decided_by == reviewer
    task.refresh_from_db()
    assert task.status == Task.IN_REVIEW  # a false alarm does not send the task back


def test_verdicts_change_until_merge_and_every_change_is_audited(reviewed):
    task, _, _, fp1, _ = reviewed
    lead = make_user("lena", "lead")
    adjudication.decide(fp1.pk, verdict="overruled", reason="house style", by=lead)
    adjudication.decide(fp1.pk, verdict="accepted", by=lead)
    kinds = list(Event.objects.filter(kind__startswith="finding.").values_list("kind", flat=True))
    assert sorted(kinds) == ["finding.accept", "finding.overrule"]
    Task.objects.filter(pk=task.pk).update(status=Task.MERGED, lease_expires_at=None)
    with pytest.raises(adjudication.Refusal, match="final"):
        adjudication.decide(fp1.pk, verdict="overruled", reason="changed my mind", by=lead)


def test_an_accepted_finding_is_resolved_only_after_a_resubmit(reviewed):
    task, builder, bug, _, _ = reviewed
    lead = make_user("lena", "lead")
    adjudication.decide(bug.pk, verdict="accepted", by=lead)
    with pytest.raises(adjudication.Refusal, match="not been resubmitted"):
        adjudication.resolve(bug.pk, by=lead)
    with pytest.raises(adjudication.Refusal, match="Only an accepted"):
        adjudication.resolve(reviewed[3].pk, by=lead)
    # Nothing to check until the builder resubmits (the two pending ones still wait).
    assert bug.pk not in [f.pk for f in adjudication.queue()]
    task.refresh_from_db()
    task.resume(by=builder)
    task.submit(commit="b" * 40, by=builder)
    assert bug.pk in [f.pk for f in adjudication.queue()]
    adjudication.resolve(bug.pk, by=lead)
    bug.refresh_from_db()
    assert bug.resolved_in_commit == "b" * 40
    assert Event.objects.filter(kind="finding.resolve").count() == 1


def test_the_queue_lists_pending_findings_and_only_adjudicators_decide(client, reviewed):
    task, _, bug, fp1, _ = reviewed
    client.force_login(make_user("mona", "manager"))
    page = client.get(reverse("fleet-reviews")).content.decode()
    # Read only: the queue is rendered once for every viewer (it is live), so the
    # verdict forms are there but hidden from a manager by the role's class, and the
    # server refuses them.
    assert "Off by one" in page and "role-manager" in page
    assert page.count('class="verdicts adjudicate-only"') == 3
    url = reverse("fleet-finding-verdict", args=[fp1.pk])
    assert client.post(url, {"verdict": "overruled", "reason": "x"}).status_code == 403
    client.force_login(make_user("rita", "reviewer"))
    page = client.get(reverse("fleet-reviews")).content.decode()
    assert page.count('class="finding ') == 3 and "Accept</button>" in page
    response = client.post(url, {"verdict": "overruled", "reason": ""})
    assert response.status_code == 302
    follow = client.get(response["Location"]).content.decode()
    assert "Overruling needs a reason" in follow
    response = client.post(url, {"verdict": "overruled", "reason": "fine", "next": "https://evil/"})
    assert response["Location"] == reverse("fleet-reviews")  # never off-site
    fp1.refresh_from_db()
    assert fp1.verdict == Finding.OVERRULED
    # A reviewer adjudicates but does not merge.
    assert client.post(reverse("fleet-task-merge", args=[task.key])).status_code == 403
    assert client.post(reverse("fleet-finding-verdict", args=[999999]), {}).status_code == 302


def test_waiting_findings_are_a_problem_for_the_lead(reviewed):
    from fleet import live

    task = reviewed[0]
    texts = [f"{p.subject} {p.text}" for p in live.overview_context()["problems"]]
    assert f"{task.key} has 3 review findings waiting for a person." in texts


def test_the_task_page_shows_each_review_and_its_findings(client, reviewed):
    task, _, _, _, _ = reviewed
    client.force_login(make_user("rita", "reviewer"))
    html = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    # each finding is a thread (moved under its line in the browser)
    section = html[html.index('id="task-threads"') :]
    assert "Off by one" in section and "Old API" in section and "Overrule</button>" in section


def test_a_finding_accepted_after_a_resubmit_waits_for_the_next_one(reviewed):
    task, builder, bug, fp1, _ = reviewed
    lead = make_user("lena", "lead")
    adjudication.decide(bug.pk, verdict="accepted", by=lead)
    task.refresh_from_db()
    task.resume(by=builder)
    task.submit(commit="b" * 40, by=builder)
    # Accepted only now: the commit b was made before anyone told the builder.
    adjudication.decide(fp1.pk, verdict="accepted", by=lead)
    with pytest.raises(adjudication.Refusal, match="not been resubmitted"):
        adjudication.resolve(fp1.pk, by=lead)
    assert fp1.pk not in [f.pk for f in adjudication.queue()]


def test_overruling_an_accepted_finding_tells_the_builder_and_unresolves(reviewed):
    task, builder, bug, _, _ = reviewed
    lead = make_user("lena", "lead")
    adjudication.decide(bug.pk, verdict="accepted", by=lead)
    done = adjudication.decide(bug.pk, verdict="overruled", reason="the range is right", by=lead)
    assert "told not to fix" in done
    subjects = list(Message.objects.filter(recipient=builder).values_list("subject", flat=True))
    assert any(s.startswith("Withdrawn finding") for s in subjects) and len(subjects) == 2
    # The same verdict again changes nothing and sends nothing.
    again = adjudication.decide(bug.pk, verdict="overruled", reason="the range is right", by=lead)
    assert "nothing changed" in again and Message.objects.filter(recipient=builder).count() == 2
    # A resolved finding accepted anew must be resolved anew.
    Finding.objects.filter(pk=bug.pk).update(resolved_in_commit="c" * 40)
    adjudication.decide(bug.pk, verdict="accepted", by=lead)
    bug.refresh_from_db()
    assert bug.resolved_in_commit == ""


@pytest.mark.parametrize("queued", [False, True])
def test_a_late_accept_takes_an_approved_or_queued_task_back(reviewed, queued):
    from fleet import merging

    task, _, _, fp1, _ = reviewed
    lead = make_user("lena", "lead")
    task.approve(by=lead)
    if queued:
        merging.enqueue(task, by=lead)
    adjudication.decide(fp1.pk, verdict="accepted", by=lead)
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED  # the queue drops a task not merging
