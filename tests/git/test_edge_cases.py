"""Edge cases a fresh reviewer found: nothing unreviewed slips into main, nothing of a
builder's is lost, and odd paths or contents never hide a deletion."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fleet import merging
from fleet.git import facts, merge, worktrees
from fleet.git import repo as gitrepo
from fleet.models import CheckRun, MergeRequest, Task

from ..conftest import make_repository, make_user
from .conftest import commit, git, push_from_other
from .test_facts import make_worktree, squash_merge
from .test_merge_queue import approved_task, origin_main

pytestmark = pytest.mark.django_db


def stale_report_after(shop, files: dict[str, bytes | str]):
    """Main gains ``files`` through T-1 after T-2 forked; T-2's stale-base report."""
    b = make_worktree(shop, "T-2")
    a = make_worktree(shop, "T-1")
    for rel, content in files.items():
        target = a / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    git(a, "add", "-A")
    git(a, "commit", "-q", "-m", "main gains files")
    squash_merge(shop, a, "T-1", "Gains")
    commit(b, {"shop/other.py": "O = 1\n"}, "other")
    tip = merge.tip(shop["clone"], remote="origin", branch="main")
    return facts.stale_base_report(shop["clone"], main=tip, head="feat/T-2")


@pytest.mark.parametrize(
    "name, content",
    [
        ("docs/release notes.md", "line one\nline two\n"),
        ("shop/café.py", "CAFE = 1\n"),
        ("img/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00binary"),
        ("shop/empty.py", ""),
        ("shop/latin.txt", b"caf\xe9 au lait\n"),
        ("shop/ff.txt", "a\x0cb\nsecond\n"),
    ],
)
def test_odd_paths_and_contents_never_hide_a_deletion(shop, name, content):
    lost = stale_report_after(shop, {name: content})
    assert [h.path for h in lost] == [name]
    assert [c.task_key for c in lost[0].commits] == ["T-1"]


def test_a_diff_noprefix_config_does_not_blind_the_report(shop):
    git(shop["clone"], "config", "diff.noprefix", "true")
    lost = stale_report_after(shop, {"shop/new.py": "N = 1\n"})
    assert [h.path for h in lost] == ["shop/new.py"]


def test_the_queue_merges_the_approved_commit_not_later_work(repository, shop, lead):
    stale = approved_task(repository, shop, "T-21", {"shop/ship.py": "FREE = 50\n"}, "Ship")
    feature = approved_task(repository, shop, "T-20", {"shop/gift.py": "G = 1\n"}, "Gifts")
    merging.enqueue(feature, by=lead)
    merging.process_queues()
    commit(Path(stale.worktree_path), {"shop/evil.py": "EVIL = 1\n"}, "after approval")
    merging.enqueue(stale, by=lead)
    merging.process_queues()
    stale.refresh_from_db()
    assert stale.status == Task.CHANGES_REQUESTED
    assert "approved commit" in MergeRequest.objects.get(task=stale).log
    with pytest.raises(subprocess.CalledProcessError):
        git(shop["origin"], "show", "main:shop/evil.py")


def test_a_rebase_never_touches_the_builders_own_rebase_or_merge_commits(shop):
    wt = make_worktree(shop, "T-30")
    commit(wt, {"shop/x.py": "X = 1\n"}, "x")
    git(wt, "checkout", "-q", "-b", "side")
    commit(wt, {"shop/y.py": "Y = 1\n"}, "y")
    git(wt, "checkout", "-q", "feat/T-30")
    git(wt, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    tip = push_from_other(shop, {"shop/z.py": "Z = 1\n"}, "z")
    merge.tip(shop["clone"], remote="origin", branch="main")
    head = gitrepo.head_sha(wt)
    assert "merge commits" in worktrees.rebase(wt, onto=tip, branch="feat/T-30")[0]
    assert gitrepo.head_sha(wt) == head
    # A rebase of the builder's own, stopped at an edit: left alone.
    other = make_worktree(shop, "T-31")
    commit(other, {"shop/w.py": "W = 1\n"}, "w")
    env = {**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i 's/^pick/edit/'", **gitrepo.AUTHOR_ENV}
    subprocess.run(
        ["git", "rebase", "-i", "HEAD~1"], cwd=other, env=env, check=True, capture_output=True
    )
    assert "in progress" in worktrees.rebase(other, onto=tip, branch="feat/T-31")[0]
    git_dir = Path(git(other, "rev-parse", "--absolute-git-dir"))
    assert (git_dir / "rebase-merge").exists()  # still the builder's


def test_a_detached_worktree_with_commits_is_kept(shop):
    clone, wt = shop["clone"], shop["root"] / "wt" / "T-40"
    worktrees.create(clone, worktree=wt, branch="feat/T-40", remote="origin", default="main")
    merged = commit(wt, {"shop/a.py": "A = 1\n"}, "a")
    git(wt, "checkout", "-q", "--detach")
    commit(wt, {"shop/b.py": "B = 1\n"}, "detached work")
    kept = worktrees.remove(clone, worktree=wt, branch="feat/T-40", merged_head=merged)
    assert not kept.removed_worktree and "detached" in kept.reason and wt.exists()


def test_a_push_refused_by_a_hook_sends_the_task_back_once(repository, shop, lead):
    hook = shop["origin"] / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    task = approved_task(repository, shop, "T-50", {"shop/p.py": "P = 1\n"})
    old = origin_main(shop)
    merging.enqueue(task, by=lead)
    merging.process_queues()
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED and origin_main(shop) == old
    assert "refused" in MergeRequest.objects.get(task=task).log
    assert CheckRun.objects.filter(task=task).count() == 1


def test_without_a_remote_fleets_clone_stays_consistent(tmp_path, data_dir, lead):
    solo = tmp_path / "solo"
    git(tmp_path, "init", "-q", "-b", "main", str(solo))
    commit(solo, {"a.txt": "a\n"}, "one")
    repository = make_repository(path=str(solo), slug="solo", check_command="true")
    shop = {"root": tmp_path}
    task = approved_task(repository, shop, "T-60", {"b.txt": "b\n"})
    merging.enqueue(task, by=lead)
    merging.process_queues()
    task.refresh_from_db()
    assert task.status == Task.MERGED
    assert git(solo, "log", "--format=%s", "-1", "main") == f"T-60: {task.title}"
    assert git(solo, "status", "--porcelain") == ""  # no index that reverts the merge


def test_a_cancel_during_the_check_keeps_main(repository, shop, lead, monkeypatch):
    task = approved_task(repository, shop, "T-70", {"shop/c.py": "C = 1\n"})
    old = origin_main(shop)
    real = merge.run_check

    def check_while_a_lead_cancels(*args, **kwargs):
        Task.objects.get(pk=task.pk).cancel(by=lead, reason="changed our mind")
        return real(*args, **kwargs)

    monkeypatch.setattr(merge, "run_check", check_while_a_lead_cancels)
    merging.enqueue(task, by=lead)
    merging.process_queues()
    assert origin_main(shop) == old
    assert MergeRequest.objects.get(task=task).result == "failed"


def test_an_abbreviated_head_is_merged_and_its_branch_removed(repository, shop, lead):
    task = approved_task(repository, shop, "T-80", {"shop/e.py": "E = 1\n"})
    task.head_sha = task.head_sha[:8]
    task.save(update_fields=["head_sha"])
    merging.enqueue(task, by=lead)
    merging.process_queues()
    merging.collect_merged()
    assert not git(repository.path, "branch", "--list", "feat/T-80")


def test_queueing_again_after_a_failed_round_is_no_error(repository, shop, lead):
    task = approved_task(repository, shop, "T-90", {"shop/f.py": "F = 1\n"})
    merging.enqueue(task, by=lead)
    task.refresh_from_db()
    task.fail(by=lead, reason="flaky infra")
    task.retry(by=lead)
    Task.objects.filter(pk=task.pk).update(status=Task.APPROVED)
    task.refresh_from_db()
    again = merging.enqueue(task, by=lead)
    assert MergeRequest.objects.filter(task=task, result="pending").get() == again


def test_the_task_page_survives_non_utf8_content(client, shop, data_dir):
    from .conftest import near_miss  # noqa: F401 - the page needs a real task

    repository = make_repository(path=str(shop["clone"]), slug="shop")
    wt = make_worktree(shop, "T-95")
    (wt / "latin.txt").write_bytes(b"caf\xe9\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "latin-1")
    from ..conftest import make_task

    make_task(repository=repository, key="T-95", worktree_path=str(wt))
    client.force_login(make_user("rita", "reviewer"))
    assert client.get("/tasks/T-95/").status_code == 200
