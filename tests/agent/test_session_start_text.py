"""What a session is told at start (``ops.summary``, printed by the SessionStart hook)
is written for its role: each learns its own loop and the commands that run it."""

from __future__ import annotations

from fleet.agent import ops

TASK = {
    "key": "T-1",
    "spec_version": 2,
    "title": "Add a cart",
    "branch": "fleet/T-1",
    "worktree_path": "/w/T-1",
    "lease_epoch": 3,
    "spec": "Carts hold items.",
}


def boot(role: str, task: dict | None = None) -> dict:
    return {
        "agent": {"name": "ada", "role": role, "status": "idle"},
        "task": task,
        "journal": [],
        "inbox": [],
        "budget_left_usd": None,
    }


def test_a_builder_is_told_to_pull_claim_commit_in_the_worktree_and_submit():
    text = ops.summary(boot("builder", TASK))
    assert "you are ada (builder)" in text and "Carts hold items." in text
    for step in ("work", "claim", "commit", "/w/T-1", "check", "submit"):
        assert step in text, step


def test_a_builder_without_a_task_is_told_to_pull_one():
    text = ops.summary(boot("builder"))
    assert "python -m fleet.agent work" in text and "submit" in text


def test_a_reviewer_is_told_how_to_take_and_close_a_review_and_never_to_edit_code():
    text = ops.summary(boot("reviewer"))
    for step in ("work_next", "review", "post_findings", "empty list", "never edit"):
        assert step in text, step
    assert "claim" not in text and "submit" not in text


def test_a_reviewer_mid_review_sees_the_task_under_review_not_a_builders_lease():
    text = ops.summary(boot("reviewer", TASK))
    assert "Reviewing T-1" in text and "lease epoch" not in text


def test_an_orchestrator_is_told_to_draft_and_that_people_approve():
    text = ops.summary(boot("orchestrator"))
    for step in ("draft_plan", "add_wave", "add_task", "read_plan", "shared-file", "approve"):
        assert step in text, step
    assert "work_next" not in text and "submit" not in text


def test_a_commit_is_never_taken_from_another_tasks_worktree(tmp_path):
    """submit --task T-2 (or check --task T-2) without a commit, in a session holding
    T-1: T-1's worktree HEAD would be sent as T-2's commit. Refused instead."""
    from fleet.agent import ops
    from fleet.agent.client import Client, FleetError, Identity

    (tmp_path / ".fleet").mkdir()
    identity = Identity(url="http://127.0.0.1:9", token="t", role="builder", root=tmp_path)
    identity.write_state(task="T-1", epoch=1, worktree=str(tmp_path), role="builder")
    client = Client(identity, retries=0)
    for call in (
        lambda: ops.submit(client, task="T-2"),
        lambda: ops.report_check(client, name="unit", status="passed", task="T-2"),
    ):
        try:
            call()
        except FleetError as exc:
            assert exc.code == "no_worktree" and "T-2" in str(exc)
        else:
            raise AssertionError("a commit from T-1's worktree was sent for T-2")
