"""Plans, waves and shared files: the planner's rules, shared by its pages and the API.

Shared files are found at planning time: every task's declared paths (globs) are
expanded against the repository's tracked files at the base commit, and a path
declared by two tasks of a wave (or by one of them and a task still running in
another wave) becomes a ``SharedFile`` row the lead must resolve before approval.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from fleet import claimsql
from fleet.git import facts, merge, worktrees
from fleet.git import paths as globs
from fleet.git import repo as gitrepo
from fleet.git.errors import GitError
from fleet.models import (
    Budget,
    CheckRun,
    Event,
    FileClaim,
    Message,
    Plan,
    Repository,
    SharedFile,
    Task,
    TransitionError,
    Wave,
)

log = logging.getLogger("fleet.planning")

# Tasks of other waves that count as "still running" for the matrix.
RUNNING_ELSEWHERE = tuple(Task.OPEN_STATES - {Task.DRAFT})


# --- the base commit's files ------------------------------------------------


def base_ref(repository: Repository) -> str:
    return merge.tip(
        repository.path, remote=repository.remote_name, branch=repository.default_branch
    )


@functools.lru_cache(maxsize=16)
def _files_at(path: str, sha: str) -> tuple[str, ...]:
    return tuple(gitrepo.list_files(path, sha))


@functools.lru_cache(maxsize=16)
def _file_set(path: str, sha: str) -> frozenset[str]:
    return frozenset(_files_at(path, sha))


def known_base(repository: Repository) -> str:
    """The base commit as last fetched (``<remote>/<default>``, else the local default
    branch), without fetching: page views read it; dispatch and merges fetch."""
    remote, branch = repository.remote_name, repository.default_branch
    with gitrepo.open_repo(repository.path, "reading the base commit") as repo:
        for ref in ([f"refs/remotes/{remote}/{branch}"] if remote else []) + [branch]:
            try:
                return repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
            except git.GitCommandError:
                continue
    raise GitError(f"{repository.slug} has no {branch} branch")


def tracked_files(repository: Repository) -> tuple[str | None, tuple[str, ...]]:
    """(base sha, its sorted file paths); (None, ()) when the clone cannot be read,
    in which case declared paths match only literally."""
    try:
        sha = known_base(repository)
        return sha, _files_at(repository.path, sha)
    except GitError:
        return None, ()


# --- overlaps ---------------------------------------------------------------


@dataclass
class Overlap:
    repository: Repository
    path: str
    tasks: list[Task]


@functools.lru_cache(maxsize=65536)  # a matrix spells thousands of paths, again each sync
def _spelled(declared: str) -> str:
    """A stored declared path in its one spelling. Paths stored before they were
    canonicalized on the way in are compared by it too; one that names no path at
    all (none can be stored now) is compared as it was, a literal."""
    try:
        return globs.canonical(declared.strip().lstrip("/"), glob=True)
    except globs.PathRefused:
        return declared.strip().lstrip("/")


def _expansions(
    tasks: list[Task], files: tuple[str, ...], file_set: frozenset[str] | None = None
) -> dict[int, set[str]]:
    """Each task's concrete paths. The universe is the tracked files plus every
    literal any of these tasks declares, so a new file declared by one task is
    caught by another task's glob. A glob that matches nothing stands for itself
    (two tasks declaring ``new/**`` still collide)."""
    clean = {raw: _spelled(raw) for t in tasks for raw in t.declared_paths or []}
    pattern_of = {raw: p for raw, p in clean.items() if globs.is_glob(p)}
    literals = {p for raw, p in clean.items() if raw not in pattern_of}
    known = file_set if file_set is not None else frozenset(files)
    new = literals - known
    universe = sorted(known | new) if new else files
    expanded: dict[str, list[str]] = {}
    out = {}
    for task in tasks:
        mine: set[str] = set()
        for raw in task.declared_paths or []:
            pattern = pattern_of.get(raw)
            if pattern is None:
                mine.add(clean[raw])
                continue
            if pattern not in expanded:
                expanded[pattern] = globs.expand(pattern, universe) or [pattern]
            mine.update(expanded[pattern])
        out[task.pk] = mine
    return out


def overlaps(wave: Wave) -> list[Overlap]:
    """Paths declared by more than one task of the wave, or by a task of the wave and
    a task still running in another wave of any plan (per repository)."""
    own = list(
        wave.tasks.exclude(status=Task.CANCELLED)
        .exclude(read_only=True)  # a task that changes nothing collides with nobody
        .select_related("repository")
        .order_by("key")
    )
    repositories = {t.repository_id for t in own}
    others = list(
        Task.objects.filter(repository_id__in=repositories, status__in=RUNNING_ELSEWHERE)
        .exclude(wave=wave)
        .exclude(read_only=True)
        .select_related("repository", "wave")
        .order_by("key")
    )
    by_repo: dict[int, list[Task]] = defaultdict(list)
    for task in own + others:
        by_repo[task.repository_id].append(task)
    own_ids = {t.pk for t in own}
    found = []
    for tasks in by_repo.values():
        repository = tasks[0].repository
        if not any(t.pk in own_ids for t in tasks):
            continue
        sha, files = tracked_files(repository)
        holders: dict[str, list[Task]] = defaultdict(list)
        expansions = _expansions(
            tasks, files, _file_set(repository.path, sha) if sha else frozenset()
        )
        for task in tasks:
            for path in expansions[task.pk]:
                holders[path].append(task)
        for path, holding in holders.items():
            mine = [t for t in holding if t.pk in own_ids]
            if len(holding) > 1 and mine:
                found.append(Overlap(repository, path, holding))
    found.sort(key=lambda o: (o.repository.slug, o.path))
    return found


def sync_shared(wave: Wave) -> None:
    """Bring a draft wave's SharedFile rows in line with its overlaps: a newly shared
    path appears unresolved, a path whose set of tasks changed is unresolved again,
    and a path no longer shared goes away (a sequenced one stays, as the record of
    that decision). An approved wave's decisions are fixed.

    Runs under the wave's row lock (re-reading its status), so it cannot race an
    approval, a task being added or another sync."""
    through = SharedFile.tasks.through
    with transaction.atomic():
        wave = Wave.objects.select_for_update(no_key=True).get(pk=wave.pk)
        if wave.status != Wave.DRAFT:
            return
        found = {(o.repository.pk, o.path): o for o in overlaps(wave)}
        existing = {(sf.repository_id, sf.path): sf for sf in wave.shared_files.all()}
        linked: dict[int, set[int]] = defaultdict(set)
        for sf_id, task_id in through.objects.filter(sharedfile__wave=wave).values_list(
            "sharedfile_id", "task_id"
        ):
            linked[sf_id].add(task_id)
        gone = [
            sf.pk
            for key, sf in existing.items()
            if key not in found and sf.strategy != SharedFile.SEQUENCE
        ]
        changed = [
            sf
            for key, sf in existing.items()
            if key in found and linked[sf.pk] != {t.pk for t in found[key].tasks}
        ]
        fresh = [
            SharedFile(wave=wave, repository=o.repository, path=o.path)
            for key, o in found.items()
            if key not in existing
        ]
        SharedFile.objects.filter(pk__in=gone).delete()
        if changed:
            through.objects.filter(sharedfile_id__in=[sf.pk for sf in changed]).delete()
            SharedFile.objects.filter(pk__in=[sf.pk for sf in changed]).update(
                strategy="", owner_task=None, decided_by=None, decided_at=None
            )
        SharedFile.objects.bulk_create(fresh)
        through.objects.bulk_create(
            through(sharedfile_id=sf.pk, task_id=task.pk)
            for sf in [*changed, *fresh]
            for task in found[(sf.repository_id, sf.path)].tasks
        )


@dataclass
class Row:
    shared: SharedFile
    cells: list[str]  # one per column: "", "declares", "owns", "reads", "hands off", "keeps"
    members: list[Task]  # the tasks declaring the path


@dataclass
class Matrix:
    columns: list[Task]
    rows: list[Row]
    wave: Wave

    @property
    def unresolved(self) -> int:
        return sum(1 for r in self.rows if not r.shared.strategy)

    @property
    def earlier_waves(self) -> list[int]:
        """Earlier waves of this plan with tasks in the matrix: those finish before this
        wave starts (unless a lead overrides the order), so their conflicts clear then."""
        return sorted(
            {
                t.wave.number
                for t in self.columns
                if t.wave.plan_id == self.wave.plan_id and t.wave.number < self.wave.number
            }
        )


def _cell(shared: SharedFile, task: Task, members: set[int]) -> str:
    if task.pk not in members:
        return ""
    if not shared.strategy:
        return "declares"
    if shared.owner_task_id == task.pk:
        return "keeps" if shared.strategy == SharedFile.SEQUENCE else "owns"
    if shared.strategy == SharedFile.CONTRACT:
        return "reads"
    if shared.strategy == SharedFile.OWNER:
        return "hands off"
    return "moved"


def matrix(wave: Wave) -> Matrix:
    """Shared paths × tasks (the wave's own tasks first, then tasks running in other
    waves), in a fixed number of queries whatever the size."""
    shared = list(wave.shared_files.select_related("repository", "owner_task"))
    links: dict[int, list[int]] = defaultdict(list)
    for sf_id, task_id in SharedFile.tasks.through.objects.filter(
        sharedfile__wave=wave
    ).values_list("sharedfile_id", "task_id"):
        links[sf_id].append(task_id)
    tasks = {
        t.pk: t
        for t in Task.objects.filter(pk__in={i for ids in links.values() for i in ids})
        .select_related("wave")
        .order_by("key")
    }
    ordered = sorted(tasks.values(), key=lambda t: (t.wave_id != wave.pk, t.key))
    rows = []
    for sf in shared:
        ids = set(links[sf.pk])
        members = [t for t in ordered if t.pk in ids]
        rows.append(Row(sf, [_cell(sf, t, ids) for t in ordered], members))
    return Matrix(ordered, rows, wave)


# --- drafting -------------------------------------------------------------------


def add_wave(plan: Plan, *, name: str, by: Any, drafted_by: Any = None) -> Wave:
    """The next wave of a plan (numbers stay in order under concurrent adds)."""
    with transaction.atomic():
        Plan.objects.select_for_update(no_key=True).get(pk=plan.pk)
        number = (plan.waves.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        wave = Wave.objects.create(plan=plan, number=number, name=name, drafted_by=drafted_by)
        Event.objects.record("wave.create", by=by, wave=wave, plan=plan, payload={"number": number})
    return wave


def add_task(task: Task, wave: Wave, *, by: Any, drafted_by: Any = None) -> Task:
    """Save a validated, unsaved task into a draft wave (refused once it is approved)."""
    with transaction.atomic():
        wave = Wave.objects.select_for_update(no_key=True).get(pk=wave.pk)
        if wave.status != Wave.DRAFT:
            raise TransitionError(
                f"wave {wave.number} is {wave.status}; tasks are added to draft waves",
                code="wave_not_draft",
            )
        task.wave, task.drafted_by = wave, drafted_by
        try:
            with transaction.atomic():
                task.save()
        except IntegrityError as exc:  # the key was taken between validation and save
            raise TransitionError(f"a task {task.key} already exists", code="key_taken") from exc
        Event.objects.record(
            "task.create",
            by=by,
            task=task,
            wave=wave,
            plan_id=wave.plan_id,
            repository_id=task.repository_id,
            payload={"declared": len(task.declared_paths)},
        )
        sync_shared(wave)
    return task


# --- decisions and moves ------------------------------------------------------


def later_wave(wave: Wave, *, by: Any) -> Wave:
    """The first draft wave after ``wave`` in its plan, made when there is none."""
    Plan.objects.select_for_update(no_key=True).get(pk=wave.plan_id)  # numbers stay in order
    later = (
        Wave.objects.filter(plan_id=wave.plan_id, number__gt=wave.number, status=Wave.DRAFT)
        .order_by("number")
        .first()
    )
    if later is not None:
        return later
    number = (Wave.objects.filter(plan_id=wave.plan_id).aggregate(n=Max("number"))["n"] or 0) + 1
    later = Wave.objects.create(
        plan_id=wave.plan_id, number=number, name=f"Sequenced after wave {wave.number}"
    )
    Event.objects.record(
        "wave.create", by=by, wave=later, plan_id=wave.plan_id, payload={"number": number}
    )
    return later


def move_task(task: Task, to: Wave, *, by: Any, sync: bool = True) -> Event:
    """Move a draft task to another draft wave of its plan (before approval only)."""
    with transaction.atomic():
        task = Task.objects.select_for_update(no_key=True).select_related("wave").get(pk=task.pk)
        source = Wave.objects.select_for_update(no_key=True).get(pk=task.wave_id)
        to = Wave.objects.select_for_update(no_key=True).get(pk=to.pk)
        if to.pk == source.pk:
            raise TransitionError(f"{task.key} is already in wave {to.number}", code="same_wave")
        if to.plan_id != source.plan_id:
            raise TransitionError(f"wave {to} is in another plan", code="other_plan")
        for wave in (source, to):
            if wave.status != Wave.DRAFT:
                raise TransitionError(
                    f"wave {wave.number} is {wave.status}; tasks move only between draft waves",
                    code="wave_not_draft",
                )
        if task.status != Task.DRAFT:
            raise TransitionError(f"{task.key} is {task.status}, not draft", code="task_not_draft")
        task.wave = to
        task.updated_at = timezone.now()
        task.save(update_fields=["wave", "updated_at"])
        event = Event.objects.record(
            "task.moved",
            by=by,
            task=task,
            wave=to,
            plan_id=to.plan_id,
            repository_id=task.repository_id,
            payload={"from_wave": source.number, "to_wave": to.number},
        )
        if sync:
            sync_shared(source)
            sync_shared(to)
    return event


def decide(shared: SharedFile, *, strategy: str, task: Task | None, by: Any) -> list[Task]:
    """Resolve a shared path. ``owner``/``contract``: ``task`` owns it (the others
    must not edit it / may only read it). ``sequence``: ``task`` keeps it here and
    the wave's other tasks on it move to the next draft wave. Returns the moved."""
    if strategy not in (SharedFile.OWNER, SharedFile.SEQUENCE, SharedFile.CONTRACT):
        raise TransitionError(f"unknown strategy {strategy!r}", code="bad_strategy")
    with transaction.atomic():
        wave = Wave.objects.select_for_update(no_key=True).get(pk=shared.wave_id)
        if wave.status != Wave.DRAFT:
            raise TransitionError(
                f"wave {wave.number} is {wave.status}; its shared files are decided",
                code="wave_not_draft",
            )
        shared = SharedFile.objects.select_for_update(no_key=True).get(pk=shared.pk)
        members = list(shared.tasks.order_by("key"))
        if task is None or task.pk not in {m.pk for m in members}:
            named = task.key if task is not None else "no task"
            raise TransitionError(
                f"{named} does not declare {shared.path}; pick one of "
                + ", ".join(m.key for m in members),
                code="not_sharing",
            )
        moved = []
        if strategy == SharedFile.SEQUENCE:
            elsewhere = [m for m in members if m.wave_id != wave.pk and m.pk != task.pk]
            if elsewhere:
                raise TransitionError(
                    f"{task.key} would still share {shared.path} with "
                    f"{', '.join(m.key for m in elsewhere)} running in another wave: keep "
                    "that task instead, or pick owner or contract",
                    code="still_shared",
                )
            moved = [m for m in members if m.wave_id == wave.pk and m.pk != task.pk]
            if not moved:
                raise TransitionError(
                    f"no other task of wave {wave.number} declares {shared.path}",
                    code="nothing_to_move",
                )
            target = later_wave(wave, by=by)
            for mover in moved:
                move_task(mover, target, by=by, sync=False)
        shared.strategy, shared.owner_task = strategy, task
        shared.decided_by = by if getattr(by, "is_authenticated", False) else None
        shared.decided_at = timezone.now()
        shared.save(update_fields=["strategy", "owner_task", "decided_by", "decided_at"])
        Event.objects.record(
            "wave.shared_file",
            by=by,
            wave=wave,
            plan_id=wave.plan_id,
            repository_id=shared.repository_id,
            payload={
                "path": shared.path,
                "strategy": strategy,
                "task": task.key,
                "moved": [m.key for m in moved],
            },
        )
        sync_shared(wave)
        if moved:
            sync_shared(Task.objects.get(pk=moved[0].pk).wave)
    return moved


def revise(task: Task, *, by: Any, **fields: Any) -> Event | None:
    """Edit a task. Before approval anything goes; once its wave is approved only the
    title and spec change, and a changed spec bumps its version and tells the
    assigned agent in its inbox."""
    with transaction.atomic():
        current = Task.objects.select_for_update(no_key=True).select_related("wave").get(pk=task.pk)
        draft = current.status == Task.DRAFT and current.wave.status == Wave.DRAFT
        allowed = set(fields) if draft else {"title", "spec"}
        locked = {k for k, v in fields.items() if getattr(current, k) != v} - allowed
        if locked:
            raise TransitionError(
                f"{current.key} is {current.status}: only its title and spec change now"
                f" (not {', '.join(sorted(locked))})",
                code="task_not_draft",
            )
        changed = {k: v for k, v in fields.items() if getattr(current, k) != v}
        if not changed:
            return None
        bump = not draft and "spec" in changed
        for name, value in changed.items():
            setattr(current, name, value)
        if bump:
            current.spec_version += 1
        current.updated_at = timezone.now()
        current.save(update_fields=[*changed, "updated_at", *(["spec_version"] if bump else [])])
        notified = None
        if bump and current.assignee_id:
            Message.objects.create(
                recipient_id=current.assignee_id,
                sender_user=by if getattr(by, "is_authenticated", False) else None,
                task=current,
                subject=f"Spec {current.key} is now v{current.spec_version}",
                body=current.spec,
            )
            notified = current.assignee.name
        event = Event.objects.record(
            "task.revised",
            by=by,
            task=current,
            wave_id=current.wave_id,
            repository_id=current.repository_id,
            payload={
                "fields": sorted(changed),
                "spec_version": current.spec_version,
                **({"notified": notified} if notified else {}),
            },
        )
        if draft:
            sync_shared(current.wave)
    for name in [*changed, "spec_version", "updated_at"]:
        setattr(task, name, getattr(current, name))
    return event


# --- preflight and approval ---------------------------------------------------


@dataclass
class Check:
    key: str
    label: str
    ok: bool
    detail: str
    accepted: bool = False  # green only because a lead accepted it with a reason


@dataclass
class Preflight:
    checks: list[Check] = field(default_factory=list)
    announcement: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]


def _isolation_problems(tasks: list[Task]) -> list[str]:
    """Why some task would not run in its own worktree on its own branch off fresh
    main. A task without a worktree gets one at dispatch, which needs a readable
    clone; one that has a worktree must be on its branch, alone, and not behind."""
    problems = []
    tips: dict[int, str | None] = {}
    for task in tasks:
        repository = task.repository
        if repository.pk not in tips:
            try:
                tips[repository.pk] = known_base(repository)
            except GitError as exc:
                tips[repository.pk] = None
                problems.append(
                    f"{repository.slug}: Fleet's clone cannot be read ({exc}), so dispatch"
                    " cannot make worktrees"
                )
    seen: dict[str, str] = {}
    for task in tasks:
        if not task.worktree_path or not Path(task.worktree_path).exists():
            continue  # made at dispatch, off fresh main
        where = str(Path(task.worktree_path).resolve())
        if where == str(Path(task.repository.path).resolve()):
            problems.append(f"{task.key} uses the repository's own checkout, not a worktree")
            continue
        if where in seen:
            problems.append(f"{task.key} and {seen[where]} share the worktree {where}")
            continue
        seen[where] = task.key
        tip = tips.get(task.repository_id)
        try:
            branch, behind = worktrees.branch_and_behind(where, tip or "HEAD")
        except GitError as exc:
            problems.append(f"{task.key}'s worktree cannot be read: {exc}")
            continue
        if branch != task.branch:
            problems.append(
                f"{task.key}'s worktree is on {branch or 'a detached HEAD'}, not {task.branch}"
            )
        elif behind:
            problems.append(
                f"{task.key}'s branch is {behind} commit{'s' if behind != 1 else ''} behind"
                " main: rebase it from its task page first"
            )
    return problems


def announcement(tasks: list[Task]) -> str:
    n = len(tasks)
    text = (
        "Isolation: not applicable because N=1"
        if n == 1
        else f"All {n} dispatches use isolation: worktree — verified"
    )
    read_only = [t.key for t in tasks if t.read_only]
    if read_only:
        text += f" (read-only: {', '.join(read_only)})"
    return text


def preflight(wave: Wave, *, override_reason: str = "", crowd_reason: str = "") -> Preflight:
    """The approval checklist, each item with its reason."""
    tasks = list(
        wave.tasks.exclude(status=Task.CANCELLED).select_related("repository").order_by("key")
    )
    n = len(tasks)
    result = Preflight()
    add = result.checks.append
    add(
        Check(
            "tasks",
            "Tasks",
            n > 0,
            f"{n} task{'s' if n != 1 else ''}" if n else "The wave has no tasks.",
        )
    )
    problems = _isolation_problems(tasks) if tasks else ["no tasks to dispatch"]
    if not problems:
        result.announcement = announcement(tasks)
    add(Check("isolation", "Isolation", not problems, result.announcement or "; ".join(problems)))
    unresolved = list(
        wave.shared_files.filter(strategy="").prefetch_related("tasks").order_by("path")
    )
    add(
        Check(
            "shared",
            "Shared files",
            not unresolved,
            "; ".join(
                f"{sf.path} ({', '.join(t.key for t in sf.tasks.all())}) has no strategy yet"
                for sf in unresolved
            )
            or "every shared path has a strategy",
        )
    )
    previous = wave.previous()
    if previous is None:
        add(Check("previous", "Previous wave", True, "the first wave of the plan"))
    elif previous.status == Wave.VERIFIED:
        add(Check("previous", "Previous wave", True, f"wave {previous.number} is verified"))
    elif override_reason.strip():
        add(
            Check(
                "previous",
                "Previous wave",
                True,
                f"wave {previous.number} is {previous.status}; overridden: "
                f"{override_reason.strip()}",
                accepted=True,
            )
        )
    else:
        add(
            Check(
                "previous",
                "Previous wave",
                False,
                f"wave {previous.number} is {previous.status}, not verified (merged with"
                " its post-merge check green); approve after it, or override with a reason",
            )
        )
    budget = (
        Budget.objects.filter(scope="wave", wave=wave)
        .exclude(limit_usd__isnull=True, limit_tokens__isnull=True)
        .first()
    )
    if budget is None:
        add(Check("budget", "Budget", False, "no budget is set for this wave"))
    else:
        limits = [
            f"${budget.limit_usd:,.2f}" if budget.limit_usd is not None else "",
            f"{budget.limit_tokens:,} tokens" if budget.limit_tokens is not None else "",
        ]
        add(Check("budget", "Budget", True, "capped at " + " and ".join(x for x in limits if x)))
    limit = settings.FLEET_WAVE_SOFT_LIMIT
    if n <= limit:
        add(Check("crowd", "Rule of four", True, f"{n} agent{'s' if n != 1 else ''} (≤ {limit})"))
    elif crowd_reason.strip():
        add(
            Check(
                "crowd",
                "Rule of four",
                True,
                f"{n} agents, above {limit}; accepted: {crowd_reason.strip()}",
                accepted=True,
            )
        )
    else:
        add(
            Check(
                "crowd",
                "Rule of four",
                False,
                f"{n} agents in one wave, above the rule of {limit}: split the wave or"
                " accept it with a reason",
            )
        )
    return result


def approve(wave: Wave, *, by: Any, override_reason: str = "", crowd_reason: str = "") -> Event:
    """Approve a wave whose preflight is green: record what was read out and accepted,
    and make its tasks ready (on the hook for ``work/next``), in one transaction."""
    for repository in Repository.objects.filter(tasks__wave=wave).distinct():
        with contextlib.suppress(GitError):  # the isolation check below names it
            base_ref(repository)  # fetch now, outside the transaction
    with transaction.atomic():
        wave = Wave.objects.select_for_update(no_key=True).get(pk=wave.pk)
        sync_shared(wave)
        checks = preflight(wave, override_reason=override_reason, crowd_reason=crowd_reason)
        if not checks.ok:
            raise TransitionError("Preflight: " + "; ".join(checks.problems), code="preflight")
        accepted = {c.key for c in checks.checks if c.accepted}
        override = override_reason.strip() if "previous" in accepted else ""
        event = wave.approve(
            by=by,
            announcement=checks.announcement,
            override_reason=override,
            crowd_reason=crowd_reason.strip() if "crowd" in accepted else "",
        )
        if override:
            previous = wave.previous()
            Event.objects.record(
                "wave.override",
                by=by,
                wave=wave,
                plan_id=wave.plan_id,
                payload={
                    "reason": override,
                    "previous_wave": previous.number,
                    "previous_status": previous.status,
                },
            )
        for task in wave.tasks.filter(status=Task.DRAFT).order_by("key"):
            task.make_ready(by=by)
    return event


def dispatched(task: Task, *, by: Any) -> None:
    """A task of an approved wave was just assigned: the wave is running now."""
    wave = Wave.objects.select_for_update(no_key=True).get(pk=task.wave_id)
    if wave.status == Wave.APPROVED:
        wave.start(by=by)


# --- claims and ownership -------------------------------------------------------


def claim_refusals(task: Task, paths: list[str], mode: str) -> list[str]:
    """Why planning decisions forbid these claims: an owned path is another task's
    (no claim at all); a contract path may only be claimed to read."""
    decisions = _decisions(task)
    out = []
    for path in paths:
        for glob, strategy, owner in decisions:
            if not globs.matches(path, glob):
                continue
            if strategy == SharedFile.OWNER:
                out.append(
                    f"{path} belongs to {owner} (planning decision: owner); {task.key} must"
                    " not edit it"
                )
            elif mode == FileClaim.WRITE:
                out.append(
                    f"{path} is a contract file owned by {owner}; {task.key} may only read it"
                    " (claim it with mode read)"
                )
            break
    return out


def allowed_paths(task: Task) -> list[str]:
    """What a task may change: its declared paths and its write claims (none for a
    read-only task). A claim released at submit still counts; one that lapsed (and
    may have been taken over since) does not."""
    if task.read_only:
        return []
    held = Q(released_at__isnull=True, expires_at__gt=timezone.now()) | Q(
        released_at__lt=F("expires_at")  # released (at submit) while still valid
    )
    claimed = (
        task.claims.filter(held, mode=FileClaim.WRITE).values_list("path", flat=True).distinct()
    )
    return [_spelled(path) for path in [*task.declared_paths, *claimed]]


def _decisions(task: Task) -> list[tuple[str, str, str]]:
    # Rows stored before paths were canonicalized on the way in compare by their
    # one spelling too (a decision about "./x" is about "x").
    return [(_spelled(glob), strategy, owner) for glob, strategy, owner in claimsql.decisions(task)]


def owned_by_others(task: Task, changed: list[str]) -> list[dict[str, str]]:
    """The changed files a planning decision gave to another task."""
    owned = []
    decisions = _decisions(task)
    for path in changed:
        for glob, strategy, owner in decisions:
            if globs.matches(path, glob):
                owned.append({"path": path, "owner": owner, "strategy": strategy})
                break
    return owned


def ownership(task: Task, commit: str) -> dict[str, Any]:
    """The ownership gate for a submitted commit: changed files outside the task's
    declared and claimed paths, and files a planning decision gave another task."""
    repository = task.repository
    report: dict[str, Any] = {"commit": commit, "checked_at": timezone.now().isoformat()}
    try:
        main = base_ref(repository)
        changed = facts.changed_paths(repository.path, main=main, head=commit)
    except GitError as exc:
        return {**report, "ok": False, "error": f"cannot list the changed files: {exc}"}
    outside = globs.outside(changed, allowed_paths(task))
    owned = owned_by_others(task, changed)
    return {
        **report,
        "changed": len(changed),
        "outside": outside,
        "owned": owned,
        "read_only": task.read_only,
        "ok": not outside and not owned,
    }


# --- the wave lifecycle (the worker's sweep) ---------------------------------------

VERIFY_CHECK = "wave verification"


def advance_waves() -> int:
    """Running waves whose tasks all merged become merged; merged waves become
    verified once the repository's check command passes on the merged main."""
    changed = 0
    for wave in Wave.objects.filter(status__in=[Wave.APPROVED, Wave.RUNNING]):
        tasks = wave.tasks.all()
        if tasks.exists() and not tasks.exclude(status__in=[Task.MERGED, Task.CANCELLED]).exists():
            try:
                with transaction.atomic():
                    if wave.status == Wave.APPROVED:  # every task cancelled before dispatch
                        wave.start()
                    wave.mark_merged()
            except TransitionError:
                continue
            changed += 1
    for wave in Wave.objects.filter(status=Wave.MERGED):
        changed += verify(wave)
    return changed


def verify(wave: Wave) -> int:
    """Run each of the wave's repositories' check on its main tip (once per tip); the
    wave is verified when every one passed. A failed check is run again only when
    main moves (a fix merged)."""
    repositories = Repository.objects.filter(tasks__wave=wave, tasks__status=Task.MERGED).distinct()
    passed = []
    for repository in repositories:
        try:
            tip = base_ref(repository)
        except GitError as exc:
            log.warning("cannot verify wave %s in %s: %s", wave.pk, repository.slug, exc)
            return 0
        run = CheckRun.objects.filter(
            wave=wave, repository=repository, name=VERIFY_CHECK, commit_sha=tip
        ).first()
        if run is None or run.status == "running":  # "running": the worker died during it
            run = run or CheckRun.objects.create(
                repository=repository,
                wave=wave,
                name=VERIFY_CHECK,
                commit_sha=tip,
                status="running",
            )
            result = merge.run_check(
                repository.path,
                commit=tip,
                command=repository.check_command,
                workdir=Path(settings.FLEET_DATA_DIR) / "scratch" / repository.slug / "verify",
                timeout=settings.FLEET_CHECK_TIMEOUT,
            )
            run.status = "passed" if result.passed else "failed"
            run.log, run.finished_at = result.log, timezone.now()
            run.save(update_fields=["status", "log", "finished_at"])
        if run.status != "passed":
            return 0
        passed.append({"repository": repository.slug, "commit": tip})
    try:  # no repository to check: every task was cancelled, nothing merged
        wave.verify(by=None, checks=passed)
    except TransitionError:
        return 0
    return 1
