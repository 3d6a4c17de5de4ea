"""People's own review comments on a task's diff (who may write them, what bad input
does, one message to the builder, the boot digest, the review gate), duplicate
findings, what a merged task shows, and the task page's query count."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet import dispatch, gates, merging, workspace
from fleet.git import diffs
from fleet.models import FileViewed, Finding, Message, Review, ReviewComment, Task

from ..api.conftest import AgentClient
from ..conftest import make_user
from .conftest import commit
from .test_gates import green_task, red_reasons

pytestmark = pytest.mark.django_db


def comment(client, task, **fields):
    data = {"path": "shop/tax.py", "line_start": "1", "side": "new", "body": "Round it."}
    return client.post(reverse("fleet-task-comment", args=[task.key]), {**data, **fields})


def resubmit(task: Task, files: dict[str, str]) -> str:
    """The builder takes the task back, fixes it and submits again."""
    builder = task.assignee
    task.resume(by=builder)
    task.refresh_from_db()
    sha = commit(Path(task.worktree_path), files, f"{task.key}: fix")
    dispatch.submit(builder, task=task, commit=sha, epoch=task.lease_epoch)
    task.refresh_from_db()
    return sha


def test_only_leads_and_reviewers_comment(client, repository, shop):
    task = green_task(repository, shop)
    client.force_login(make_user("max", "manager"))
    assert comment(client, task).status_code == 403
    client.force_login(make_user("rita", "reviewer"))
    assert comment(client, task).status_code == 302
    assert ReviewComment.objects.get().author.username == "rita"


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"body": "   "}, "Write the comment first"),
        ({"path": "shop/elsewhere.py"}, "is not a file of this change"),
        ({"line_start": "3", "line_end": "2"}, "not a range"),
        ({"line_start": "zero"}, "which line"),
        ({"line_start": "0"}, "not a range"),
        ({"side": "left"}, "old or the new side"),
        ({"body": "x" * 4001}, "under 4000"),
    ],
)
def test_bad_input_is_a_message_and_nothing_changes(client, repository, shop, lead, bad, says):
    task = green_task(repository, shop)
    client.force_login(lead)
    response = comment(client, task, **bad)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Comment not added" in page and says in page
    assert not ReviewComment.objects.exists()


def test_request_changes_sends_the_drafts_in_one_message_and_returns_the_task(
    client, repository, shop, lead
):
    task = green_task(repository, shop)
    client.force_login(lead)
    comment(client, task, line_start="1", body="Use a Decimal.")
    comment(client, task, path="CHANGELOG.md", body="Say what changed for users.")
    other = make_user("rita", "reviewer")
    workspace.add_comment(
        task,
        by=other,
        path="shop/tax.py",
        line_start=1,
        line_end=1,
        side="new",
        body="A draft of someone else",
        paths=["shop/tax.py"],
    )

    client.post(reverse("fleet-task-request-changes", args=[task.key]))
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED
    (message,) = Message.objects.filter(recipient=task.assignee)
    assert "2 comments" in message.subject
    assert "shop/tax.py:1 (new)\nUse a Decimal." in message.body
    assert "CHANGELOG.md:1 (new)\nSay what changed for users." in message.body
    assert "someone else" not in message.body  # another person's draft stays theirs
    assert ReviewComment.objects.filter(state=ReviewComment.SENT).count() == 2

    # The builder's next session starts with them.
    review = dispatch.digest(task.assignee, task)["review"]
    assert review == [
        "CHANGELOG.md:1: Say what changed for users. (from lea)",
        "shop/tax.py:1: Use a Decimal. (from lea)",
    ]

    # Nothing left to send: a clear refusal, nothing changes.
    response = client.post(reverse("fleet-task-request-changes", args=[task.key]))
    page = client.get(response["Location"]).content.decode()
    assert "You have no draft comments to send" in page
    assert Message.objects.count() == 1


def test_a_builder_booting_after_its_submit_learns_the_comments_then_gets_them_again(
    client, repository, shop, lead
):
    """The usual order: the builder submitted (it holds no task), a person requests
    changes, the builder's next session boots and then pulls work."""
    task = green_task(repository, shop)
    builder = task.assignee
    builder.current_task = None
    builder.save(update_fields=["current_task"])
    client.force_login(lead)
    comment(client, task, line_start="1", body="Use a Decimal.")
    client.post(reverse("fleet-task-request-changes", args=[task.key]))
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED

    boot = dispatch.boot(builder)
    assert boot["task"] is None
    assert boot["digest"]["review"] == ["T-1: shop/tax.py:1: Use a Decimal. (from lea)"]
    client.logout()
    response = AgentClient(client, builder.issue_token()).call("post", "work/next")
    assert response.status_code == 200, response.content
    work = response.json()
    assert work["task"]["key"] == "T-1" and work["task"]["status"] == Task.WORKING
    assert work["review_comments"] == ["shop/tax.py:1: Use a Decimal. (from lea)"]
    # holding it now, the digest names its comments as before
    builder.refresh_from_db()
    assert dispatch.boot(builder)["digest"]["review"] == [
        "shop/tax.py:1: Use a Decimal. (from lea)"
    ]


def test_sent_comments_block_the_review_gate_until_resolved_after_a_resubmit(
    client, repository, shop, lead
):
    task = green_task(repository, shop)
    client.force_login(lead)
    comment(client, task, body="Regions differ.")
    client.post(reverse("fleet-task-request-changes", args=[task.key]))
    sent = ReviewComment.objects.get()
    assert "1 review comment(s) not resolved yet" in red_reasons(task)["review"]

    # Not before the builder resubmitted.
    client.post(reverse("fleet-task-comment-resolve", args=[task.key, sent.pk]))
    sent.refresh_from_db()
    assert sent.state == ReviewComment.SENT

    resubmit(task, {"shop/tax.py": "RATE = {'eu': 0.2}\n"})
    assert task.status == Task.IN_REVIEW
    assert Review.objects.filter(task=task).count() == 1  # people check it, no new AI review
    assert "review" in red_reasons(task)

    # The comment's line changed: the page shows it outdated, against the old code.
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    thread = page[page.index(f'id="thread-comment-{sent.pk}"') - 80 :]
    assert "outdated" in thread[:200] and "RATE = 0.2" in thread[: thread.index("</pre>")]

    client.post(reverse("fleet-task-comment-resolve", args=[task.key, sent.pk]))
    sent.refresh_from_db()
    assert sent.state == ReviewComment.RESOLVED and sent.resolved_by == lead
    assert "review" not in red_reasons(task)


def test_only_the_author_deletes_a_draft_and_never_a_sent_comment(client, repository, shop, lead):
    task = green_task(repository, shop)
    client.force_login(lead)
    comment(client, task)
    draft = ReviewComment.objects.get()
    client.force_login(make_user("rita", "reviewer"))
    client.post(reverse("fleet-task-comment-delete", args=[task.key, draft.pk]))
    assert ReviewComment.objects.filter(pk=draft.pk).exists()
    client.force_login(lead)
    client.post(reverse("fleet-task-request-changes", args=[task.key]))
    client.post(reverse("fleet-task-comment-delete", args=[task.key, draft.pk]))
    assert ReviewComment.objects.filter(pk=draft.pk, state=ReviewComment.SENT).exists()


def test_a_finding_raised_again_on_a_resubmit_is_shown_once_with_its_history(
    client, repository, shop, lead
):
    task = green_task(repository, shop)
    first = task.reviews.get()
    old = Finding.objects.create(
        review=first,
        path="shop/tax.py",
        line_start=1,
        severity="major",
        title="Flat rate",
        verdict=Finding.OVERRULED,
        reason="one region",
    )
    second = Review.objects.create(task=task, commit_sha=task.head_sha, status=Review.CLOSED)
    again = Finding.objects.create(
        review=second, path="shop/tax.py", line_start=1, severity="major", title="Flat rate "
    )
    client.force_login(lead)
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert f'id="thread-finding-{again.pk}"' in page
    assert f'id="thread-finding-{old.pk}"' not in page
    assert "Raised before: on" in page and "“one region”" in page


def test_a_merged_task_shows_its_squash_commit_on_main(client, repository, shop, lead):
    task = green_task(repository, shop)
    gates.queue_merge(task, by=lead)
    assert merging.process_queues() == 1
    task.refresh_from_db()
    landed = task.merge_requests.get().candidate_sha
    client.force_login(lead)
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert f"What landed: <code>{landed[:10]}</code> on main" in page
    assert f"head={landed}" in page or 'data-path="shop/tax.py"' in page
    parent, text = diffs.commit_diff(repository.path, landed)
    assert [f.path for f in diffs.parse(text)] == ["CHANGELOG.md", "shop/tax.py"]


def test_the_task_page_query_count_is_pinned_whatever_the_threads(
    client, repository, shop, lead, django_assert_max_num_queries
):
    task = green_task(repository, shop)
    review = task.reviews.get()
    client.force_login(lead)
    url = reverse("fleet-task", args=[task.key])

    def add(n: int) -> None:
        for i in range(n):
            Finding.objects.create(
                review=review, path="shop/tax.py", line_start=1, severity="minor", title=f"F{i}"
            )
            comment(client, task, body=f"c{i}")
        client.post(reverse("fleet-task-request-changes", args=[task.key]))
        Task.objects.filter(pk=task.pk).update(status=Task.IN_REVIEW)
        comment(client, task, body="a draft")

    add(3)
    client.get(url)  # warm caches (roles, sessions)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    add(12)
    # 23 today; none per finding, comment or draft
    with django_assert_max_num_queries(25):
        response = client.get(url)
    assert response.status_code == 200
    with CaptureQueriesContext(connection) as many:
        client.get(url)
    assert len(many) == len(few)


def test_a_file_loaded_on_demand_and_its_bad_requests(client, repository, shop, lead):
    task = green_task(repository, shop)
    client.force_login(lead)
    url = reverse("fleet-task-file", args=[task.key])
    base = diffs.commit_diff(repository.path, task.head_sha)[0]
    good = {"path": "shop/tax.py", "base": base, "head": task.head_sha}
    response = client.get(url, good)
    assert response.status_code == 200 and 'data-line="1"' in response.content.decode()
    assert client.get(url, {**good, "head": "HEAD"}).status_code == 400
    assert client.get(url, {**good, "path": ""}).status_code == 400
    assert client.get(url, {**good, "path": "no/such.py"}).status_code == 404
    assert client.get(url, {**good, "base": "0" * 40}).status_code == 400  # no such commit


def test_viewed_marks_need_a_file_and_its_patch(client, repository, shop, lead):
    task = green_task(repository, shop)
    client.force_login(lead)
    url = reverse("fleet-task-viewed", args=[task.key])
    for bad in ({"path": "", "hash": "ab"}, {"path": "x", "hash": "zz"}, {"path": "x" * 501}):
        response = client.post(url, bad)
        assert response.status_code == 302
        assert "Not marked" in client.get(response["Location"]).content.decode()
    assert not FileViewed.objects.exists()
    client.post(url, {"path": "shop/tax.py", "hash": "abc", "viewed": "1"})
    assert FileViewed.objects.get().patch_hash == "abc"
    client.post(url, {"path": "shop/tax.py", "hash": "abc", "viewed": "0"})
    assert not FileViewed.objects.exists()


TEN = "".join(f"line {n}\n" for n in range(1, 11))


def test_a_thread_moves_with_its_lines_when_a_resubmit_shifts_them(repository, shop, lead):
    """Raised on line 8 of one commit; the next adds 3 lines at the top and one after
    line 4 (not touching line 8): the thread is at new line 12, not outdated."""
    task = green_task(repository, shop)
    worktree = Path(task.worktree_path)
    first = commit(worktree, {"shop/ten.py": TEN}, "ten")
    lines = TEN.splitlines(keepends=True)
    shifted = "".join(["a\n", "b\n", "c\n", *lines[:4], "inserted\n", *lines[4:]])
    second = commit(worktree, {"shop/ten.py": shifted}, "shift")
    review = Review.objects.create(task=task, commit_sha=first, status=Review.CLOSED)
    finding = Finding.objects.create(
        review=review, path="shop/ten.py", line_start=8, severity="minor", title="Eight"
    )
    on_new = ReviewComment.objects.create(
        task=task, author=lead, path="shop/ten.py", line_start=7, line_end=8,
        side=ReviewComment.NEW, body="Here.", commit_sha=first, state=ReviewComment.SENT,
    )  # fmt: skip
    on_range = ReviewComment.objects.create(
        task=task, author=lead, path="shop/ten.py", line_start=3, line_end=6,
        side=ReviewComment.NEW, body="Around.", commit_sha=first, state=ReviewComment.SENT,
    )  # fmt: skip
    fid = workspace.file_id("shop/ten.py")
    got = {
        t.anchor: (t.slot, t.outdated)
        for t in workspace.threads(
            task, [finding], [on_new, on_range], head=second, repo_path=repository.path
        )
    }
    assert got[f"finding-{finding.pk}"] == (f"{fid}-n12", False)
    assert got[f"comment-{on_new.pk}"] == (f"{fid}-n12", False)
    # the insertion after line 4 is inside lines 3-6: that comment is outdated
    assert got[f"comment-{on_range.pk}"] == (f"{fid}-top", True)
    # on the commit it was raised on, the thread stays where it was
    (same,) = workspace.threads(task, [finding], [], head=first, repo_path=repository.path)
    assert same.slot == f"{fid}-n8"


def test_an_outdated_threads_code_is_read_once_per_commit(repository, shop, lead):
    task = green_task(repository, shop)
    worktree = Path(task.worktree_path)
    first = commit(worktree, {"shop/ten.py": TEN}, "ten")
    second = commit(worktree, {"shop/ten.py": TEN.replace("line 8", "eight")}, "eight")
    review = Review.objects.create(task=task, commit_sha=first, status=Review.CLOSED)
    finding = Finding.objects.create(
        review=review, path="shop/ten.py", line_start=8, severity="minor", title="Eight"
    )
    workspace._file_lines.cache_clear()
    for _ in range(3):  # three live renders
        (thread,) = workspace.threads(task, [finding], [], head=second, repo_path=repository.path)
        assert thread.outdated and (8, "line 8") in thread.snippet
    assert workspace._file_lines.cache_info().misses == 1


def test_split_rows_take_old_side_comments_on_context_lines():
    (file,) = diffs.parse("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,4 @@\n a\n+X\n b\n c\n")
    fid = workspace.file_id("x")
    for split in (False, True):
        rows = str(workspace.render_file(file, split=split)[0]["rows"])
        assert f'data-slots="{fid}-n3 {fid}-o2"' in rows  # "b": old line 2, new line 3


def test_a_lone_carriage_return_keeps_code_and_numbers_in_step():
    html = workspace.highlighted_lines("x.py", ["a = 1\rb = 2", "c = 3", "d = 4"])
    assert len(html) == 3
    assert "\u240d" in html[0] and "c" in html[1] and "d" in html[2]
