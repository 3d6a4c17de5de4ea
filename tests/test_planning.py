"""The planner's rules: overlaps, the matrix, strategies, preflight, approval and the
wave lifecycle, on real git repositories."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import planning
from fleet.git import repo as gitrepo
from fleet.models import (
    Agent,
    Budget,
    CheckRun,
    Event,
    Message,
    SharedFile,
    Task,
    TransitionError,
    Wave,
)

from .conftest import make_agent, make_plan, make_repository, make_task, make_user, make_wave

FILES = {
    "README.md": "# app\n",
    "config/settings.py": "DEBUG = False\n",
    "src/api/routes.py": "ROUTES = []\n",
    "src/api/models.py": "MODELS = []\n",
    "src/core/engine.py": "def run():\n    pass\n",
    "docs/guide.md": "# guide\n",
    "docs/notes.txt": "notes\n",
}

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(tmp_path: Path, data_dir):
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(origin=origin, clone=clone, files=FILES, message="initial")
    return make_repository(path=str(clone), slug="app", check_command="true")


@pytest.fixture
def lead():
    return make_user("lea", "lead")


def draft(wave, app, key, paths, **fields):
    return make_task(wave=wave, repository=app, key=key, declared_paths=paths, **fields)


def shared_paths(wave) -> dict[str, list[str]]:
    return {o.path: sorted(t.key for t in o.tasks) for o in planning.overlaps(wave)}


# --- overlaps ------------------------------------------------------------------


def test_a_glob_and_a_file_it_covers_overlap(app):
    wave = make_wave()
    draft(wave, app, "T-1", ["src/**/*.py"])
    draft(wave, app, "T-2", ["src/api/routes.py"])
    assert shared_paths(wave) == {"src/api/routes.py": ["T-1", "T-2"]}


def test_the_same_file_in_two_tasks_overlaps_and_disjoint_globs_do_not(app):
    wave = make_wave()
    draft(wave, app, "T-1", ["config/settings.py", "src/api/*", "docs/*.md"])
    draft(wave, app, "T-2", ["config/settings.py", "src/core/*", "docs/*.txt"])
    assert shared_paths(wave) == {"config/settings.py": ["T-1", "T-2"]}


def test_a_new_file_one_task_declares_is_caught_by_anothers_glob(app):
    wave = make_wave()
    draft(wave, app, "T-1", ["src/api/new_endpoint.py"])
    draft(wave, app, "T-2", ["src/api/"])
    draft(wave, app, "T-3", ["brand/new/**"])
    draft(wave, app, "T-4", ["brand/new/**"])
    assert shared_paths(wave) == {
        "src/api/new_endpoint.py": ["T-1", "T-2"],
        "brand/new/**": ["T-3", "T-4"],
    }


def test_a_task_running_in_another_wave_counts_and_a_finished_one_does_not(app):
    plan = make_plan()
    first = make_wave(plan=plan, status=Wave.RUNNING)
    second = make_wave(plan=plan, number=2)
    draft(
        first,
        app,
        "T-1",
        ["docs/guide.md"],
        status=Task.WORKING,
        assignee=make_agent(),
        lease_expires_at="2099-01-01T00:00Z",
    )
    draft(first, app, "T-2", ["README.md"], status=Task.MERGED)
    draft(second, app, "T-3", ["docs/**", "README.md"])
    assert shared_paths(second) == {"docs/guide.md": ["T-1", "T-3"]}


def test_paths_are_per_repository(app, tmp_path):
    other_clone = tmp_path / "other-clone"
    gitrepo.create_with_origin(
        origin=tmp_path / "other.git", clone=other_clone, files=FILES, message="initial"
    )
    other = make_repository(path=str(other_clone), slug="other")
    wave = make_wave()
    draft(wave, app, "T-1", ["README.md"])
    draft(wave, other, "T-2", ["README.md"])
    assert shared_paths(wave) == {}


def test_sync_keeps_decisions_and_reopens_a_path_whose_tasks_changed(app, lead):
    wave = make_wave()
    t1 = draft(wave, app, "T-1", ["config/settings.py"])
    draft(wave, app, "T-2", ["config/settings.py"])
    planning.sync_shared(wave)
    shared = SharedFile.objects.get(wave=wave)
    planning.decide(shared, strategy=SharedFile.OWNER, task=t1, by=lead)
    planning.sync_shared(wave)
    assert SharedFile.objects.get(wave=wave).strategy == SharedFile.OWNER
    draft(wave, app, "T-3", ["config/*.py"])
    planning.sync_shared(wave)
    shared = SharedFile.objects.get(wave=wave)
    assert shared.strategy == "" and shared.owner_task is None
    assert sorted(shared.tasks.values_list("key", flat=True)) == ["T-1", "T-2", "T-3"]
    Task.objects.filter(key__in=["T-2", "T-3"]).update(declared_paths=["docs/guide.md"])
    planning.sync_shared(wave)
    assert not SharedFile.objects.filter(wave=wave, path="config/settings.py").exists()


def test_the_matrix_takes_the_same_queries_whatever_its_size(app):
    def build(n):
        wave = make_wave()
        for i in range(n):
            draft(wave, app, f"M{n}-{i}", ["config/settings.py", "src/**/*.py", f"docs/{i}.md"])
        planning.sync_shared(wave)
        with CaptureQueriesContext(connection) as queries:
            result = planning.matrix(wave)
        return result, len(queries)

    small, small_queries = build(2)
    large, large_queries = build(12)
    assert len(small.rows) == 4 and len(small.columns) == 2
    assert len(large.rows) == 4 and len(large.columns) == 12
    assert small_queries == large_queries == 3
    assert all(cell == "declares" for row in large.rows for cell in row.cells)


# --- strategies ------------------------------------------------------------------


def test_sequence_moves_the_other_tasks_to_a_later_wave_and_clears_the_conflict(app, lead):
    wave = make_wave()
    t1 = draft(wave, app, "T-1", ["config/settings.py"])
    t2 = draft(wave, app, "T-2", ["config/settings.py", "src/api/models.py"])
    t3 = draft(wave, app, "T-3", ["src/api/models.py"])
    planning.sync_shared(wave)
    shared = SharedFile.objects.get(wave=wave, path="config/settings.py")
    moved = planning.decide(shared, strategy=SharedFile.SEQUENCE, task=t1, by=lead)
    assert [t.key for t in moved] == ["T-2"]
    t2.refresh_from_db()
    assert t2.wave.number == 2 and t2.wave.plan_id == wave.plan_id
    # Both of T-2's conflicts in wave 1 are gone; the sequenced row stays as the record.
    assert not SharedFile.objects.filter(wave=wave, strategy="").exists()
    assert SharedFile.objects.get(wave=wave).strategy == SharedFile.SEQUENCE
    assert planning.preflight(wave).checks[2].ok
    event = Event.objects.get(kind="wave.shared_file")
    assert event.payload["moved"] == ["T-2"] and event.actor_user == lead
    assert Event.objects.filter(kind="task.moved", task=t2).exists()
    assert t3.wave_id == wave.pk


def test_sequence_reuses_a_later_draft_wave(app, lead):
    plan = make_plan()
    wave = make_wave(plan=plan)
    later = make_wave(plan=plan, number=2)
    t1 = draft(wave, app, "T-1", ["README.md"])
    draft(wave, app, "T-2", ["README.md"])
    planning.sync_shared(wave)
    planning.decide(wave.shared_files.get(), strategy=SharedFile.SEQUENCE, task=t1, by=lead)
    assert Task.objects.get(key="T-2").wave_id == later.pk
    assert plan.waves.count() == 2


def owned_wave(app, lead, strategy):
    wave = make_wave(status=Wave.DRAFT)
    t1 = draft(wave, app, "T-1", ["src/api/routes.py"])
    t2 = draft(wave, app, "T-2", ["src/api/routes.py"])
    planning.sync_shared(wave)
    planning.decide(wave.shared_files.get(), strategy=strategy, task=t1, by=lead)
    wave.status = Wave.RUNNING
    wave.save()
    return t1, t2


def test_owner_leaves_the_path_to_its_owner(app, lead):
    t1, t2 = owned_wave(app, lead, SharedFile.OWNER)
    refusals = planning.claim_refusals(t2, ["src/api/routes.py", "README.md"], "write")
    assert len(refusals) == 1 and "belongs to T-1" in refusals[0]
    assert planning.claim_refusals(t2, ["src/api/routes.py"], "read")
    assert planning.claim_refusals(t1, ["src/api/routes.py"], "write") == []


def test_contract_lets_the_others_read_only(app, lead):
    t1, t2 = owned_wave(app, lead, SharedFile.CONTRACT)
    refusals = planning.claim_refusals(t2, ["src/api/routes.py"], "write")
    assert "contract file owned by T-1" in refusals[0]
    assert planning.claim_refusals(t2, ["src/api/routes.py"], "read") == []


def test_decisions_are_checked(app, lead):
    wave = make_wave()
    draft(wave, app, "T-1", ["README.md"])
    draft(wave, app, "T-2", ["README.md"])
    outsider = draft(wave, app, "T-3", ["docs/guide.md"])
    planning.sync_shared(wave)
    shared = wave.shared_files.get()
    with pytest.raises(TransitionError, match="T-3 does not declare README.md"):
        planning.decide(shared, strategy=SharedFile.OWNER, task=outsider, by=lead)
    with pytest.raises(TransitionError, match="unknown strategy"):
        planning.decide(shared, strategy="vote", task=outsider, by=lead)
    shared.refresh_from_db()
    assert shared.strategy == "" and not Event.objects.filter(kind="wave.shared_file").exists()


# --- preflight and approval --------------------------------------------------------


def budget(wave, usd="20"):
    return Budget.objects.create(scope="wave", wave=wave, limit_usd=Decimal(usd))


def red(preflight) -> dict[str, str]:
    return {c.key: c.detail for c in preflight.checks if not c.ok}


def test_each_red_item_names_its_reason_and_blocks_approval(app, lead):
    plan = make_plan()
    first = make_wave(plan=plan, status=Wave.RUNNING)
    wave = make_wave(plan=plan, number=2)
    assert set(red(planning.preflight(wave))) == {"tasks", "isolation", "previous", "budget"}
    for i in range(5):
        draft(wave, app, f"T-{i + 1}", ["config/settings.py"] if i < 2 else [f"docs/{i}.md"])
    planning.sync_shared(wave)
    problems = red(planning.preflight(wave))
    assert set(problems) == {"shared", "previous", "budget", "crowd"}
    assert "config/settings.py (T-1, T-2) has no strategy yet" in problems["shared"]
    assert "wave 1 is running, not verified" in problems["previous"]
    assert "no budget" in problems["budget"]
    assert "5 agents in one wave, above the rule of 4" in problems["crowd"]
    with pytest.raises(TransitionError) as exc:
        planning.approve(wave, by=lead)
    assert exc.value.code == "preflight" and "no strategy yet" in exc.value.message
    wave.refresh_from_db()
    assert wave.status == Wave.DRAFT
    assert set(Task.objects.filter(wave=wave).values_list("status", flat=True)) == {"draft"}
    assert not Event.objects.filter(kind="wave.approve").exists()
    assert first.status == Wave.RUNNING


def test_the_announcement_appears_only_when_isolation_holds_with_the_right_n(app, lead):
    wave = make_wave()
    draft(wave, app, "T-1", ["README.md"])
    assert planning.preflight(wave).announcement == "Isolation: not applicable because N=1"
    draft(wave, app, "T-2", ["docs/guide.md"], read_only=True)
    draft(wave, app, "T-3", ["src/core/engine.py"])
    assert (
        planning.preflight(wave).announcement
        == "All 3 dispatches use isolation: worktree — verified (read-only: T-2)"
    )
    # A worktree shared by two tasks breaks isolation: no announcement, a red reason.
    from fleet.git import worktrees

    shared_tree = Path(app.path).parent / "shared-tree"
    worktrees.create(
        app.path, worktree=shared_tree, branch="feat/T-1", remote="origin", default="main"
    )
    Task.objects.filter(key__in=["T-1", "T-3"]).update(worktree_path=str(shared_tree))
    result = planning.preflight(wave)
    assert result.announcement == ""
    assert "T-3 and T-1 share the worktree" in red(result)["isolation"]


def test_a_worktree_behind_main_or_on_another_branch_is_red(app):
    from fleet.git import worktrees

    from .git.conftest import git

    wave = make_wave()
    t1 = draft(wave, app, "T-1", ["README.md"])
    tree = Path(app.path).parent / "t1"
    worktrees.create(app.path, worktree=tree, branch="feat/T-1", remote="origin", default="main")
    t1.worktree_path = str(tree)
    t1.save()
    assert planning.preflight(wave).announcement
    gitrepo.commit_files(path=Path(app.path), files={"x.py": "x\n"}, message="main moves")
    git(Path(app.path), "push", "-q", "origin", "main")
    assert "1 commit behind main" in red(planning.preflight(wave))["isolation"]
    git(tree, "checkout", "-q", "-b", "elsewhere")
    assert "on elsewhere, not feat/T-1" in red(planning.preflight(wave))["isolation"]


def test_approval_records_the_announcement_and_makes_tasks_ready(app, lead):
    wave = make_wave()
    draft(wave, app, "T-1", ["README.md"])
    draft(wave, app, "T-2", ["docs/guide.md"])
    budget(wave)
    event = planning.approve(wave, by=lead)
    wave.refresh_from_db()
    assert wave.status == Wave.APPROVED and wave.approved_by == lead
    text = "All 2 dispatches use isolation: worktree — verified"
    assert wave.announcement == text
    assert event.kind == "wave.approve" and event.payload["announcement"] == text
    assert event.actor_user == lead and event.created_at
    assert set(wave.tasks.values_list("status", flat=True)) == {Task.READY}


def test_the_rule_of_four_may_be_accepted_with_a_reason(app, lead):
    wave = make_wave()
    for i in range(5):
        draft(wave, app, f"T-{i + 1}", [f"docs/{i}.md"])
    budget(wave)
    with pytest.raises(TransitionError, match="rule of 4"):
        planning.approve(wave, by=lead)
    event = planning.approve(wave, by=lead, crowd_reason="independent doc pages")
    assert event.payload["crowd_reason"] == "independent doc pages"
    wave.refresh_from_db()
    assert wave.crowd_reason == "independent doc pages"


def test_wave_order_holds_unless_a_lead_overrides_with_a_reason(app, lead):
    plan = make_plan()
    first = make_wave(plan=plan, status=Wave.RUNNING)
    second = make_wave(plan=plan, number=2)
    draft(second, app, "T-9", ["README.md"])
    budget(second)
    with pytest.raises(TransitionError, match="wave 1 is running"):
        planning.approve(second, by=lead)
    planning.approve(second, by=lead, override_reason="hotfix cannot wait")
    override = Event.objects.get(kind="wave.override")
    assert override.payload == {
        "reason": "hotfix cannot wait",
        "previous_wave": 1,
        "previous_status": "running",
    }
    assert override.actor_user == lead and override.wave_id == second.pk
    # The override carries through to the first assignment.
    planning.dispatched(Task.objects.get(key="T-9"), by=lead)
    second.refresh_from_db()
    assert second.status == Wave.RUNNING and first.status == Wave.RUNNING


def test_an_override_reason_is_ignored_when_not_needed(app, lead):
    wave = make_wave()
    draft(wave, app, "T-1", ["README.md"])
    budget(wave)
    planning.approve(wave, by=lead, override_reason="just because")
    wave.refresh_from_db()
    assert wave.override_reason == "" and not Event.objects.filter(kind="wave.override").exists()


def test_agents_cannot_approve(app):
    wave = make_wave()
    draft(wave, app, "T-1", ["README.md"])
    budget(wave)
    with pytest.raises(TransitionError) as exc:
        planning.approve(wave, by=make_agent(Agent.ORCHESTRATOR))
    assert exc.value.code == "role"
    assert Wave.objects.get(pk=wave.pk).status == Wave.DRAFT


# --- edits and moves ------------------------------------------------------------------


def test_a_spec_edit_after_approval_bumps_the_version_and_tells_the_agent(app, lead):
    wave = make_wave(status=Wave.RUNNING)
    agent = make_agent(name="ada")
    task = draft(wave, app, "T-1", ["README.md"], status=Task.READY, spec="v1 text")
    task.assign(agent=agent)
    planning.revise(task, by=lead, spec="v2 text: also gift cards")
    task.refresh_from_db()
    assert task.spec_version == 2
    message = Message.objects.get(recipient=agent)
    assert message.subject == "Spec T-1 is now v2" and "gift cards" in message.body
    with pytest.raises(TransitionError, match="only its title and spec"):
        planning.revise(task, by=lead, declared_paths=["src/**"])
    assert Task.objects.get(pk=task.pk).declared_paths == ["README.md"]


def test_a_draft_edit_does_not_bump_the_version(app, lead):
    wave = make_wave()
    task = draft(wave, app, "T-1", ["README.md"])
    planning.revise(task, by=lead, spec="new", declared_paths=["docs/**"])
    task.refresh_from_db()
    assert task.spec_version == 1 and task.declared_paths == ["docs/**"]
    assert not Message.objects.exists()


def test_tasks_move_only_between_draft_waves(app, lead):
    plan = make_plan()
    first = make_wave(plan=plan)
    second = make_wave(plan=plan, number=2, status=Wave.APPROVED)
    third = make_wave(plan=plan, number=3)
    task = draft(first, app, "T-1", ["README.md"])
    with pytest.raises(TransitionError, match="wave 2 is approved"):
        planning.move_task(task, second, by=lead)
    planning.move_task(task, third, by=lead)
    assert Task.objects.get(pk=task.pk).wave_id == third.pk
    with pytest.raises(TransitionError, match="another plan"):
        planning.move_task(task, make_wave(), by=lead)


# --- the wave lifecycle -------------------------------------------------------------


def test_a_wave_runs_at_first_assignment_merges_then_verifies_on_main(app, lead):
    wave = make_wave()
    task = draft(wave, app, "T-1", ["README.md"])
    budget(wave)
    planning.approve(wave, by=lead)
    agent = make_agent(repository=app)
    from fleet import dispatch

    kind, item = dispatch.next_work(agent)
    assert item.key == "T-1" and Path(item.worktree_path).is_dir()
    wave.refresh_from_db()
    assert wave.status == Wave.RUNNING
    assert planning.advance_waves() == 0  # a task is still open
    Task.objects.filter(pk=task.pk).update(status=Task.MERGED, lease_expires_at=None)
    app.check_command = "test -f README.md"
    app.save()
    assert planning.advance_waves() == 2  # merged, then verified
    wave.refresh_from_db()
    assert wave.status == Wave.VERIFIED
    run = CheckRun.objects.get(wave=wave)
    assert run.status == "passed" and run.commit_sha == gitrepo.head_sha(app.path)
    assert Event.objects.get(kind="wave.verify").payload["checks"][0]["repository"] == "app"


def test_a_failed_verification_waits_for_main_to_move(app):
    wave = make_wave(status=Wave.MERGED)
    draft(wave, app, "T-1", ["README.md"], status=Task.MERGED)
    app.check_command = "test -f FIXED"
    app.save()
    assert planning.advance_waves() == 0
    assert planning.advance_waves() == 0
    assert CheckRun.objects.filter(wave=wave).count() == 1  # not re-run on the same tip
    from .git.conftest import git

    gitrepo.commit_files(path=Path(app.path), files={"FIXED": "1\n"}, message="fix")
    git(Path(app.path), "push", "-q", "origin", "main")
    assert planning.advance_waves() == 1
    assert Wave.objects.get(pk=wave.pk).status == Wave.VERIFIED
    assert list(CheckRun.objects.filter(wave=wave).values_list("status", flat=True)) == [
        "passed",
        "failed",
    ]


def test_read_only_tasks_collide_with_nobody(app):
    wave = make_wave()
    draft(wave, app, "T-1", ["config/settings.py"])
    draft(wave, app, "T-2", ["config/settings.py"], read_only=True)
    assert shared_paths(wave) == {}


def test_sequence_cannot_keep_a_conflict_with_a_running_task(app, lead):
    plan = make_plan()
    first = make_wave(plan=plan, status=Wave.RUNNING)
    second = make_wave(plan=plan, number=2)
    draft(first, app, "T-1", ["README.md"], status=Task.READY)
    t2 = draft(second, app, "T-2", ["README.md"])
    draft(second, app, "T-3", ["README.md"])
    planning.sync_shared(second)
    shared = second.shared_files.get()
    with pytest.raises(TransitionError) as exc:
        planning.decide(shared, strategy=SharedFile.SEQUENCE, task=t2, by=lead)
    assert exc.value.code == "still_shared" and "T-1" in exc.value.message
    assert Task.objects.get(key="T-3").wave_id == second.pk
    moved = planning.decide(
        shared, strategy=SharedFile.SEQUENCE, task=Task.objects.get(key="T-1"), by=lead
    )
    assert sorted(t.key for t in moved) == ["T-2", "T-3"]
    assert not second.shared_files.filter(strategy="").exists()


def test_a_wave_whose_tasks_were_all_cancelled_still_completes(app):
    wave = make_wave(status=Wave.APPROVED)
    draft(wave, app, "T-1", ["README.md"], status=Task.CANCELLED)
    assert planning.advance_waves() == 2
    wave.refresh_from_db()
    assert wave.status == Wave.VERIFIED and not CheckRun.objects.filter(wave=wave).exists()
