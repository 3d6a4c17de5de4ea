"""Seed (and for the merge queue, drive) a throwaway benchmark database; run as
``python -m fleet.bench.seed``.

It runs in its own process (with the bench's DATABASE_URL) so that the benchmark
never touches the user's own database. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def seed_heartbeat(agents: int) -> dict:
    """N builder agents, each working on its own leased task in a running wave,
    each with a USD budget far above what the run can spend."""
    from fleet.models import Agent, AgentSession, Budget, Plan, Repository, Task, Wave

    repo = Repository.objects.create(name="Bench", slug="bench", path="/nonexistent")
    plan = Plan.objects.create(name="Bench", slug="bench")
    wave = Wave.objects.create(plan=plan, number=1, status=Wave.RUNNING)
    out = []
    for n in range(agents):
        agent = Agent.objects.create(name=f"bench-{n}", role=Agent.BUILDER, repository=repo)
        token = agent.issue_token()
        AgentSession.objects.create(agent=agent)
        Budget.objects.create(scope="agent", agent=agent, limit_usd=1_000_000)
        task = Task.objects.create(
            key=f"B-{n}", wave=wave, repository=repo, title=f"Bench {n}", status=Task.READY
        )
        task.assign(agent=agent)
        task.start(by=agent, epoch=task.lease_epoch)
        agent.start_work(task=task)
        task.refresh_from_db()
        out.append(
            {"name": agent.name, "token": token, "epoch": task.lease_epoch, "task": task.key}
        )
    return {"agents": out}


def seed_and_merge(repo: str, count: int) -> dict:
    """``count`` approved tasks, each with one commit in its own worktree, merged one by
    one through the real merge queue; the seconds each merge took."""
    import time
    from pathlib import Path

    from fleet import merging
    from fleet.git import repo as gitrepo
    from fleet.git import worktrees
    from fleet.models import Agent, MergeRequest, Plan, Repository, Task, Wave

    repository = Repository.objects.create(
        name="Bench", slug="bench", path=repo, check_command="true"
    )
    plan = Plan.objects.create(name="Bench", slug="bench")
    wave = Wave.objects.create(plan=plan, number=1, status=Wave.RUNNING)
    builder = Agent.objects.create(name="bench-builder", role=Agent.BUILDER)
    root = Path(repo).parent / "queue"
    for n in range(count):
        key = f"M-{n}"
        wt = root / key
        worktrees.create(repo, worktree=wt, branch=f"feat/{key}", remote="origin", default="main")
        head = gitrepo.commit_files(
            path=wt, files={f"src/new/m{n}.py": f"M = {n}\n"}, message=f"work on {key}"
        )
        task = Task.objects.create(
            key=key,
            wave=wave,
            repository=repository,
            title=f"Merge {n}",
            status=Task.APPROVED,
            head_sha=head,
            worktree_path=str(wt),
            assignee=builder,
        )
        merging.enqueue(task, by=None)
    seconds, cleanup = [], []
    while MergeRequest.objects.filter(result=MergeRequest.PENDING).exists():
        started = time.perf_counter()
        head = merging.process(repository)
        seconds.append(time.perf_counter() - started)
        if head is None or head.result == MergeRequest.PENDING:
            break
        started = time.perf_counter()
        merging.collect_merged()
        cleanup.append(time.perf_counter() - started)
    merged = MergeRequest.objects.filter(result=MergeRequest.MERGED).count()
    return {"seconds": seconds, "cleanup": cleanup, "merged": merged}


def seed_and_drain(repo: str, count: int, check_seconds: float, failing: int, batch: int) -> dict:
    """``count`` approved tasks (``failing`` of them, spread over the queue, break the
    check) drained through the real merge queue with batch size ``batch``: the
    seconds it took, the checks run, and whether main holds exactly what it should."""
    import time
    from pathlib import Path

    from fleet import merging
    from fleet.git import merge, worktrees
    from fleet.git import repo as gitrepo
    from fleet.models import Agent, CheckRun, MergeRequest, Plan, Repository, Task, Wave

    repository = Repository.objects.create(
        name="Bench",
        slug="bench",
        path=repo,
        check_command=f"sleep {check_seconds:g}; test ! -e src/broken.py",
        merge_batch_size=batch,
    )
    plan = Plan.objects.create(name="Bench", slug="bench")
    wave = Wave.objects.create(plan=plan, number=1, status=Wave.RUNNING)
    builder = Agent.objects.create(name="bench-builder", role=Agent.BUILDER)
    # Spread over the queue: one failing task of ten is the fifth.
    breaking = {round((j + 1) * count / (failing + 1)) - 1 for j in range(failing)}
    root = Path(repo).parent / "queue"
    tasks = []
    for n in range(count):
        key = f"M-{n + 1}"
        wt = root / key
        worktrees.create(repo, worktree=wt, branch=f"feat/{key}", remote="origin", default="main")
        files = {f"src/m{n}.py": f"M = {n}\n"}
        if n in breaking:
            files["src/broken.py"] = "raise SystemExit(1)\n"
        head = gitrepo.commit_files(path=wt, files=files, message=f"work on {key}")
        task = Task.objects.create(
            key=key,
            wave=wave,
            repository=repository,
            title=f"Merge {n + 1}",
            status=Task.APPROVED,
            head_sha=head,
            worktree_path=str(wt),
            assignee=builder,
        )
        merging.enqueue(task, by=None)
        tasks.append(task)
    # The queue is drained when no task waits: removing merged tasks' worktrees is the
    # worker's next sweep (it never holds up the queue), timed on its own.
    seconds = cleanup = 0.0
    for _ in range(3 * count):
        if not MergeRequest.objects.filter(result=MergeRequest.PENDING).exists():
            break
        started = time.perf_counter()
        merging.process(repository)
        seconds += time.perf_counter() - started
        started = time.perf_counter()
        merging.collect_merged()
        cleanup += time.perf_counter() - started

    merge.tip(repo, remote="origin", branch="main")  # fetched: what origin holds
    subjects = gitrepo.log_subjects(repo, "origin/main")
    problems = []
    merged = 0
    for n, task in enumerate(tasks):
        task.refresh_from_db()
        on_main = subjects.count(f"{task.key}: {task.title}")
        if n in breaking:
            if on_main or task.status != Task.CHANGES_REQUESTED:
                problems.append(f"{task.key} breaks the check but is {task.status}, {on_main}x")
            continue
        if task.status != Task.MERGED or on_main != 1:
            problems.append(f"{task.key} is {task.status}, {on_main}x on main")
            continue
        merged += 1
        landed = MergeRequest.objects.get(task=task, result=MergeRequest.MERGED).candidate_sha
        tops = CheckRun.objects.filter(task=task, status="passed").values_list(
            "commit_sha", flat=True
        )
        if not any(merge.is_ancestor(repo, landed, top) for top in tops):
            problems.append(f"{task.key} merged without a passed check that included it")
    checks = CheckRun.objects.filter(name="merge check").values("commit_sha").distinct().count()
    return {
        "seconds": seconds,
        "cleanup_seconds": cleanup,
        "checks": checks,
        "merged": merged,
        "failing": [tasks[n].key for n in sorted(breaking)],
        "problems": [f"batch size {batch}: {p}" for p in problems],
        "correct": not problems,
    }


def declared(t: int, per_task: int) -> list[str]:
    """Task ``t``'s declared paths in the plan benchmark: its own files, five of its
    neighbour's (the overlaps), and globs over ten more files each."""
    from fleet.bench.gitbench import file_path

    own = t * 300
    # .../file01230.py -> .../file0123?.py: ten files each
    globs = [file_path(own + 190 + 10 * k)[:-4] + "?.py" for k in range(5)]
    neighbour = [file_path(own + 300 + i) for i in range(5)]
    literals = [file_path(own + i) for i in range(max(0, per_task - 10))]
    return literals + neighbour + globs


def seed_matrix(repo: str, tasks: int, per_task: int, repeat: int = 5) -> dict:
    """A draft wave of ``tasks`` tasks × ``per_task`` declared paths; the server time
    of finding its shared files and building the matrix, and of the whole wave page."""
    import statistics
    import time

    from django.contrib.auth.models import Group, User
    from django.test import Client

    from fleet import planning
    from fleet.models import Plan, Repository, Task, Wave

    repository = Repository.objects.create(name="Bench plan", slug="bench-plan", path=repo)
    plan = Plan.objects.create(name="Bench plan", slug="bench-plan")
    wave = Wave.objects.create(plan=plan, number=1)
    Task.objects.bulk_create(
        Task(
            key=f"P-{t + 1}",
            wave=wave,
            repository=repository,
            title=f"Plan bench {t}",
            declared_paths=declared(t, per_task),
        )
        for t in range(tasks)
    )

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1000

    first = timed(lambda: planning.sync_shared(wave))  # cold: lists the tree, makes the rows
    warm = [
        timed(lambda: (planning.sync_shared(wave), planning.matrix(wave))) for _ in range(repeat)
    ]
    matrix = planning.matrix(wave)
    lead = User.objects.create_user("bench-lead")
    lead.groups.add(Group.objects.get_or_create(name="lead")[0])
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(lead)
    url = f"/plans/{plan.slug}/waves/1/"
    pages = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        pages.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"wave page answered {response.status_code}")
    return {
        "tasks": tasks,
        "declared_per_task": per_task,
        "shared_paths": len(matrix.rows),
        "matrix_columns": len(matrix.columns),
        "first_sync_ms": round(first, 1),
        "matrix_ms": round(statistics.median(warm), 1),
        "page_ms": round(statistics.median(pages), 1),
        "page_bytes": len(response.content),
    }


def seed_review(repo: str, head: str, repeat: int = 5) -> dict:
    """A task in review whose branch is ``head``, with findings and sent comments; the
    server time of its page (first screen), of one file loaded on demand, and of the
    whole diff rendered at once."""
    import statistics
    import time
    from urllib.parse import urlencode

    from django.contrib.auth.models import Group, User
    from django.test import Client

    from fleet import workspace
    from fleet.git import diffs
    from fleet.models import Finding, Plan, Repository, Review, ReviewComment, Task, Wave

    repository = Repository.objects.create(
        name="Bench review", slug="bench-review", path=repo, remote_name=""
    )
    wave = Wave.objects.create(
        plan=Plan.objects.create(name="Bench review", slug="bench-review"),
        number=1,
        status=Wave.RUNNING,
    )
    base = diffs.commit_diff(repo, head)[0]
    task = Task.objects.create(
        key="R-1",
        wave=wave,
        repository=repository,
        title="A large change",
        status=Task.IN_REVIEW,
        kind="feat",
        base_sha=base,
        head_sha=head,
        declared_paths=["pkg/**"],
    )
    text = diffs.commit_diff(repo, head)[1]
    parsed = diffs.parse(text)
    review = Review.objects.create(task=task, commit_sha=head, status=Review.CLOSED)
    lead = User.objects.create_user("bench-lead")
    lead.groups.add(Group.objects.get_or_create(name="lead")[0])
    for n, file in enumerate(parsed[:20]):
        Finding.objects.create(
            review=review, path=file.path, line_start=2, severity="minor", title=f"Finding {n}"
        )
        ReviewComment.objects.create(
            task=task,
            author=lead,
            path=file.path,
            line_start=1,
            line_end=2,
            body=f"Comment {n}",
            state=ReviewComment.SENT,
            commit_sha=head,
        )
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(lead)

    def timed(url: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        return (time.perf_counter() - started) * 1000, response.content

    pages = [timed("/tasks/R-1/") for _ in range(repeat)]
    last = parsed[-1].path
    query = urlencode({"path": last, "base": base, "head": head})
    file_ms = [timed(f"/tasks/R-1/file/?{query}")[0] for _ in range(repeat)]
    started = time.perf_counter()
    for file in parsed:
        workspace.render_file(file, split=False)
    all_ms = (time.perf_counter() - started) * 1000
    content = pages[-1][1].decode()
    return {
        "changed_lines": sum(f.changed for f in parsed),
        "files": len(parsed),
        "findings": review.findings.count(),
        "comments": task.comments.count(),
        "page_ms": round(statistics.median(ms for ms, _ in pages), 1),
        "page_bytes": len(pages[-1][1]),
        "rendered_files": content.count('<table class="diff-table'),
        "file_ms": round(statistics.median(file_ms), 1),
        "all_ms": round(all_ms, 1),
    }


def seed_session() -> dict:
    """A lead's logged-in session, for benchmark dashboards."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore

    user = User.objects.create_user("bench-watcher")
    user.groups.add(Group.objects.get_or_create(name="lead")[0])
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {"cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}"}


def counts() -> dict:
    from fleet.models import Agent, SpendEvent

    return {
        "spend_events": SpendEvent.objects.count(),
        "agents_seen": Agent.objects.filter(last_heartbeat_at__isnull=False).count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.bench.seed")
    parser.add_argument(
        "what", choices=["heartbeat", "counts", "merges", "drain", "matrix", "session", "review"]
    )
    parser.add_argument("--paths", type=int, default=200)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--repo", default="")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--check-seconds", type=float, default=5)
    parser.add_argument("--failing", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--head", default="")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    if args.what == "heartbeat":
        result = seed_heartbeat(args.agents)
    elif args.what == "merges":
        result = seed_and_merge(args.repo, args.count)
    elif args.what == "drain":
        result = seed_and_drain(args.repo, args.count, args.check_seconds, args.failing, args.batch)
    elif args.what == "session":
        result = seed_session()
    elif args.what == "review":
        result = seed_review(args.repo, args.head)
    elif args.what == "matrix":
        result = seed_matrix(args.repo, args.count, args.paths)
    else:
        result = counts()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
