"""The living demo's director: it sets the stage, plays the lead, and keeps score.

The stage (a repository with a bare origin, a plan of two waves, budgets, agents with
their own tokens) is made through Fleet's models, as a person would through the
pages. The agents themselves (``fleet.sim.agents``) then work only through the HTTP
API and git. The lead is a patient person: whatever a real person did meanwhile (a
verdict, a tick, a rebase, a raised cap) it leaves alone.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Q

from fleet import adjudication, budgets, gates, planning
from fleet.git import repo as gitrepo
from fleet.models import (
    Agent,
    AgentSession,
    Budget,
    Event,
    Finding,
    MergeRequest,
    Plan,
    Repository,
    SharedFile,
    Task,
    TransitionError,
    Wave,
)
from fleet.sim import script
from fleet.sim.agents import Persona

BUILDERS = ("ivy", "jon", "kai", "liz", "mo", "nia", "oz", "pat")
REVIEWERS = ("una", "vic", "wes", "xan")
DOD_TEXT = "Tests cover the change"
WAVE1_CAP = Decimal("25")
# Tight on purpose: the warning, then the stop. Each working heartbeat costs the same
# (``Persona.cost_per_beat``, $0.03), so the sixth in the wave crosses 80% and the
# seventh reaches the cap whatever else a person moves into or out of the wave: its
# docs task alone beats eight times, and its review three.
WAVE2_CAP = Decimal("0.20")
LATER_CAP = Decimal("10")  # a wave a person adds (a task sequenced into a new wave)
RAISED_CAP = Decimal("5")
RUN_ALLOWANCE = Decimal("5")  # added to a capped fleet budget for each run's spend
LEAD = "sim-lead"  # the simulated person: its own account, so the log tells it apart

STEPS = {
    "shared_file": "a shared file found at planning and sequenced into the next wave",
    "approved": "a wave approved, with the isolation announcement",
    "findings": "findings adjudicated: a real one accepted, a false alarm overruled",
    "stale_base": "a stale base caught by the gate (merging would delete lines main gained)",
    "rotation": "an agent rotated at its context line; its next session booted from the journal",
    "silent": "an agent went silent; its task was resumed by another",
    "budget_warning": "a wave's budget warning at 80%",
    "budget_stop": "agents stopped at the wave's cap",
    "merge_failed": "a failing merge check sent a task back, fixed and merged",
    "merged": "merges through the queue, every merged commit on main",
}


@dataclass
class Stage:
    run: int
    repository: Repository
    plan: Plan
    lead: User
    personas: list[Persona]
    agent_ids: list[int]


def _run_number(data: Path) -> int:
    """One past the highest run so far, and past any repository left on disk (a run
    never starts on another run's history)."""
    numbers = [
        int(slug.rsplit("-", 1)[1])
        for slug in Plan.objects.filter(slug__regex=r"^live-sprint-[0-9]+$").values_list(
            "slug", flat=True
        )
    ]
    run = max(numbers, default=0) + 1
    while (data / "origins" / f"live-shop-{run}.git").exists() or (
        data / "repos" / f"live-shop-{run}"
    ).exists():
        run += 1
    return run


def _repository(run: int, data: Path) -> Repository:
    slug = f"live-shop-{run}"
    origin, clone = data / "origins" / f"{slug}.git", data / "repos" / slug
    gitrepo.create_with_origin(
        origin=origin, clone=clone, files=script.START_FILES, message="Live shop skeleton"
    )
    return Repository.objects.create(
        slug=slug,
        name=f"Live shop (run {run})",
        path=str(clone),
        remote_name="origin",
        default_branch="main",
        check_command=f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider",
        worktree_root=str(data / "worktrees" / slug),
        dod_items=[{"auto": "changelog"}, {"auto": "task_key"}, DOD_TEXT],
        required_checks=[],
    )


def _lead(username: str) -> User:
    person, created = User.objects.get_or_create(username=username)
    if created:
        person.set_unusable_password()  # nobody signs in as the simulation
        person.save()
    person.groups.add(Group.objects.get_or_create(name="lead")[0])
    return person


def setup(*, builders: int = 4, reviewers: int = 2, lead: str = LEAD) -> Stage:
    """A fresh repository, plan, budgets and agents for one run (runs never share)."""
    data = Path(settings.FLEET_DATA_DIR)
    person = _lead(lead)
    with transaction.atomic():
        run = _run_number(data)
        repository = _repository(run, data)
        prefix = "L" if run == 1 else f"L{run}"
        plan = Plan.objects.create(
            name=f"Live sprint {run}",
            slug=f"live-sprint-{run}",
            description="Played by fleet_simulate: agents at work through the API and git.",
            created_by=person,
        )
        n = 0
        for number, works in enumerate(script.WAVES, start=1):
            wave = Wave.objects.create(
                plan=plan, number=number, name=("Shop basics", "Polish")[number - 1]
            )
            wave.auto_merge = True
            wave.save(update_fields=["auto_merge"])
            cap = WAVE1_CAP if number == 1 else WAVE2_CAP
            Budget.objects.create(scope="wave", wave=wave, limit_usd=cap)
            for work in works:
                n += 1
                key = f"{prefix}-{n}"
                Task.objects.create(
                    key=key,
                    wave=wave,
                    repository=repository,
                    kind=work.kind,
                    title=work.title,
                    declared_paths=[*work.paths, script.changelog_path(key)],
                    spec=f"{work.title}.\nAcceptance: tests pass; a changelog fragment says it.",
                )
            planning.sync_shared(wave)
        Event.objects.record("sim.start", by=person, plan=plan, payload={"run": run})
        # Room for this run's spend under a capped fleet budget (the demo's has one).
        for fleet in Budget.objects.filter(scope="fleet", limit_usd__isnull=False):
            fleet.limit_usd += RUN_ALLOWANCE
            fleet.save(update_fields=["limit_usd"])
            Event.objects.record(
                "budget.set",
                by=person,
                payload={"scope": "fleet", "limit_usd": str(fleet.limit_usd), "why": plan.slug},
            )
        suffix = "" if run == 1 else f"-{run}"
        personas, ids = [], []
        for i in range(builders):
            name = BUILDERS[i % len(BUILDERS)] + (str(i // len(BUILDERS)) if i >= 8 else "")
            agent = Agent.objects.create(
                name=name + suffix, role=Agent.BUILDER, repository=repository
            )
            personas.append(
                Persona(
                    agent.name,
                    "builder",
                    agent.issue_token(by=person),
                    context_step=13 if i == 1 else 4,  # the second rotates on any task
                    silent_after=2 if i == 2 else None,  # the third goes silent
                )
            )
            ids.append(agent.pk)
        for i in range(reviewers):
            name = REVIEWERS[i % len(REVIEWERS)] + (str(i // len(REVIEWERS)) if i >= 4 else "")
            agent = Agent.objects.create(
                name=name + suffix, role=Agent.REVIEWER, repository=repository
            )
            personas.append(Persona(agent.name, "reviewer", agent.issue_token(by=person)))
            ids.append(agent.pk)
    return Stage(run, repository, plan, person, personas, ids)


@dataclass
class Lead:
    """A patient person: acts on what has waited ``patience`` real seconds, and not
    while people are at work (``patience`` after their latest action)."""

    stage: Stage
    patience: float
    say: Any = print
    seen: dict[tuple, float] = field(default_factory=dict)
    failed: set[tuple] = field(default_factory=set)  # what did not work: not retried
    said: set[str] = field(default_factory=set)
    # The latest thing a person did in Fleet (event id, and when the lead saw it): the
    # lead leaves every decision to them until they have been quiet for ``patience``.
    person_event: int | None = None  # None: not looked yet
    person_at: float = 0.0

    def once(self, line: str) -> None:
        if line not in self.said:
            self.said.add(line)
            self.say(line)

    def by_a_person(self, events) -> bool:
        """The latest of these events was someone else's doing: leave it to them."""
        last = events.order_by("-pk").first()
        return last is not None and last.actor not in ("fleet", f"user:{self.stage.lead.username}")

    def waited(self, *key: Any) -> bool:
        now = time.monotonic()
        first = self.seen.setdefault(key, now)
        return now - max(first, self.person_at) >= self.patience

    def watch_people(self) -> None:
        """A person at work on this run's stage (its plan, waves, tasks, agents or
        repository) holds the lead back; what people do elsewhere in Fleet does not."""
        stage = self.stage
        on_stage = (
            Q(plan=stage.plan)
            | Q(wave__plan=stage.plan)
            | Q(task__wave__plan=stage.plan)
            | Q(agent_id__in=stage.agent_ids)
            | Q(repository=stage.repository)
        )
        latest = (
            Event.objects.filter(on_stage, actor__startswith="user:")
            .exclude(actor=f"user:{self.stage.lead.username}")
            .order_by("-pk")
            .values_list("pk", flat=True)
            .first()
            or 0
        )
        if self.person_event is not None and latest != self.person_event:
            self.person_at = time.monotonic()  # a person acted since the last look
        self.person_event = latest

    def tick(self) -> None:
        self.watch_people()
        for action in (
            self.budget_waves,
            self.plan_waves,
            self.adjudicate,
            self.resolve,
            self.tick_checklists,
            self.rebase_stale,
            self.merge_green,
            self.raise_caps,
        ):
            try:
                action()
            except Exception as exc:  # one failed step must not stop the others
                self.say(f"[lead] {action.__name__}: {exc}")

    def budget_waves(self) -> None:
        """A wave with no cap (one a person added, or a task sequenced into a new wave)
        gets one: approval needs it. A cap a person set or removed is theirs."""
        for wave in self.stage.plan.waves.filter(status=Wave.DRAFT).order_by("number"):
            if Budget.objects.filter(scope="wave", wave=wave).filter(budgets.CAPPED).exists():
                continue
            if self.by_a_person(Event.objects.filter(kind="budget.set", wave=wave)):
                continue
            if not self.waited("budget", wave.pk):
                continue
            with transaction.atomic():
                budget, _ = Budget.objects.get_or_create(scope="wave", wave=wave)
                budget.limit_usd = LATER_CAP
                budget.save(update_fields=["limit_usd"])
                Event.objects.record(
                    "budget.set",
                    by=self.stage.lead,
                    wave=wave,
                    plan_id=self.stage.plan.pk,
                    payload={"scope": "wave", "limit_usd": str(LATER_CAP)},
                )
            self.say(f"[lead] wave {wave.number} had no budget: capped at ${LATER_CAP}")

    def plan_waves(self) -> None:
        for wave in self.stage.plan.waves.filter(status=Wave.DRAFT).order_by("number"):
            if not self.waited("wave", wave.pk):
                return
            for shared in SharedFile.objects.filter(wave=wave, strategy=""):
                members = list(shared.tasks.select_related("wave").order_by("key"))
                here = [t for t in members if t.wave_id == wave.pk]
                before = [t for t in members if t.wave.number < wave.number]
                if here and before:
                    # Its other holder runs in an earlier wave, so this wave's task
                    # already comes after it: it owns the path here. (Sequencing would
                    # move it on from wave to wave, each new one without a budget.)
                    planning.decide(
                        shared, strategy=SharedFile.OWNER, task=here[0], by=self.stage.lead
                    )
                    self.say(
                        f"[lead] {shared.path}: {here[0].key} owns it here "
                        f"({before[0].key} has it in wave {before[0].wave.number})"
                    )
                    continue
                keeper = next((t for t in here if t.title == script.SEQUENCED[0]), None)
                if keeper is None:
                    return  # not one the script knows: a person decides
                moved = planning.decide(
                    shared, strategy=SharedFile.SEQUENCE, task=keeper, by=self.stage.lead
                )
                self.say(
                    f"[lead] {shared.path}: {keeper.key} keeps it; "
                    f"{', '.join(t.key for t in moved)} moves to the next wave"
                )
            previous = wave.previous()
            override = ""
            if previous is not None and previous.status != Wave.VERIFIED:
                if previous.status != Wave.MERGED or not self.waited("override", wave.pk):
                    return
                override = (
                    f"wave {previous.number} merged; its verification run can finish meanwhile"
                )
            try:
                planning.approve(
                    wave,
                    by=self.stage.lead,
                    override_reason=override,
                    # Only read when a person moved tasks in past the rule of four.
                    crowd_reason="the demo's sprint: its agents share no file",
                )
            except TransitionError as exc:
                self.once(f"[lead] wave {wave.number} not approved: {exc.message}")
                return
            self.say(f"[lead] approved wave {wave.number}")

    def _plan_tasks(self):
        return Task.objects.filter(wave__plan=self.stage.plan)

    def adjudicate(self) -> None:
        pending = Finding.objects.filter(
            verdict=Finding.PENDING, review__task__in=self._plan_tasks()
        ).select_related("review__task")
        for finding in pending:
            known = script.finding_by_title(finding.title)
            if known is None or not self.waited("finding", finding.pk):
                continue
            verdict = Finding.ACCEPTED if known.real else Finding.OVERRULED
            adjudication.decide(
                finding.pk, verdict=verdict, reason=known.reason, by=self.stage.lead
            )
            self.say(f"[lead] {finding.review.task.key}: {verdict} “{finding.title}”")

    def resolve(self) -> None:
        accepted = Finding.objects.filter(
            verdict=Finding.ACCEPTED,
            resolved_in_commit="",
            review__task__in=self._plan_tasks().filter(status__in=gates.WAITING),
        ).select_related("review__task")
        for finding in accepted:
            task = finding.review.task
            if not self.waited("resolve", finding.pk, task.head_sha):
                continue
            try:
                adjudication.resolve(finding.pk, by=self.stage.lead)
            except adjudication.Refusal:
                continue  # not fixed by a later submit yet
            self.say(f"[lead] {task.key}: resolved “{finding.title}”")

    def tick_checklists(self) -> None:
        for task in self._plan_tasks().filter(status__in=gates.WAITING).exclude(head_sha=""):
            tick = (task.dod_ticks or {}).get(DOD_TEXT)
            if tick and tick.get("commit") == task.head_sha:
                continue
            last = Event.objects.filter(kind="task.dod_tick", task=task).order_by("-pk").first()
            if (
                last is not None
                and self.by_a_person(Event.objects.filter(pk=last.pk))
                and (not last.payload.get("ticked") or last.payload.get("commit") == task.head_sha)
            ):
                # A person's untick is theirs to undo; their tick holds for the commit
                # they ticked, and a new commit (a fix, a rebase) needs ticking again.
                continue
            if not self.waited("tick", task.pk, task.head_sha):
                continue
            adjudication.tick(task, item=DOD_TEXT, ticked=True, by=self.stage.lead)
            self.say(f"[lead] {task.key}: ticked “{DOD_TEXT}”")

    def rebase_stale(self) -> None:
        queued = MergeRequest.objects.filter(result=MergeRequest.PENDING).values("task_id")
        waiting = (
            self._plan_tasks()
            .filter(status__in=gates.WAITING)
            .exclude(pk__in=queued)
            .select_related("repository")
        )
        for task in waiting:
            red = [g for g in task.gates or [] if g["key"] == "stale_base" and not g["ok"]]
            attempt = ("rebase", task.pk, task.head_sha)
            if not red or attempt in self.failed or not self.waited(*attempt):
                continue
            stale = gates.branch_state(task, fetch=True).get("stale")
            if stale is None or not stale.red:
                continue  # rebased meanwhile (by a person, or by us): the sweep will see it
            ok, message = gates.rebase(task, by=self.stage.lead)
            if not ok:
                self.failed.add(attempt)  # tried once for this head: the builder's now
            self.say(f"[lead] {task.key}: {message}")

    def merge_green(self) -> None:
        """Press Merge on a task whose gates are all green in a wave that does not
        merge by itself (one a person added: new waves start without auto-merge)."""
        queued = MergeRequest.objects.filter(result=MergeRequest.PENDING).values("task_id")
        waiting = (
            self._plan_tasks()
            .filter(status__in=gates.WAITING, wave__auto_merge=False)
            .exclude(pk__in=queued)
            .exclude(head_sha="")
            .select_related("repository", "wave")
        )
        for task in waiting:
            if not task.gates or not all(g["ok"] for g in task.gates):
                continue
            if self.by_a_person(Event.objects.filter(kind="wave.auto_merge", wave=task.wave)):
                continue  # a person turned auto-merge off: they merge this wave
            if not self.waited("merge", task.pk, task.head_sha):
                continue
            try:
                gates.queue_merge(task, by=self.stage.lead)
            except TransitionError as exc:
                self.once(f"[lead] {task.key} not queued: {exc.message}")
                continue
            self.say(f"[lead] {task.key}: all gates green, queued for merging")

    def raise_caps(self) -> None:
        spent = Budget.objects.filter(scope="wave", wave__plan=self.stage.plan).filter(
            budgets.CAPPED
        )
        for budget in spent:
            if not budget.cap_reached or not self.waited("cap", budget.pk):
                continue
            if self.by_a_person(Event.objects.filter(kind="budget.set", wave_id=budget.wave_id)):
                continue  # a person set this cap: theirs to raise
            with transaction.atomic():
                budget = Budget.objects.select_for_update(no_key=True).get(pk=budget.pk)
                budget.limit_usd = max(budget.limit_usd or 0, budget.spent_usd) + RAISED_CAP
                budget.save(update_fields=["limit_usd"])
                Event.objects.record(
                    "budget.set",
                    by=self.stage.lead,
                    wave_id=budget.wave_id,
                    plan_id=self.stage.plan.pk,
                    payload={"scope": "wave", "limit_usd": str(budget.limit_usd)},
                )
            self.say(f"[lead] raised wave budget to ${budget.limit_usd}")
        stopped = Agent.objects.filter(
            pk__in=self.stage.agent_ids, status=Agent.STOPPED, stop_reason="budget"
        )
        for agent in stopped:
            stop = Event.objects.filter(kind="agent.stop", agent=agent).order_by("-pk").first()
            if not self.waited("resume", agent.pk, stop.pk if stop else 0):
                continue
            task = Task.objects.select_related("wave").filter(pk=agent.current_task_id).first()
            if budgets.spent_budgets(agent, task):
                continue
            agent.resume(by=self.stage.lead)
            self.say(f"[lead] resumed {agent.name}")


def someone_signed_in() -> bool:
    """A person signed in within a session's lifetime: since the demo started, or
    still signed in from before a restart (the simulated lead never signs in). Read
    from ``last_login``, which every sign-in sets, not from the sessions: they are
    signed with the web server's key, not necessarily this process's."""
    from datetime import timedelta

    from django.utils import timezone

    since = timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE)
    return User.objects.filter(last_login__gte=since).exclude(username=LEAD).exists()


def finished(stage: Stage) -> bool:
    """Every task merged (or cancelled) and the merge queue idle."""
    tasks = Task.objects.filter(wave__plan=stage.plan)
    return (
        tasks.exists()
        and not tasks.exclude(status__in=[Task.MERGED, Task.CANCELLED]).exists()
        and not MergeRequest.objects.filter(
            repository=stage.repository, result=MergeRequest.PENDING
        ).exists()
    )


def report(stage: Stage) -> dict[str, dict[str, Any]]:
    """Which scenario steps happened, read from what Fleet recorded (not from what the
    simulated agents say they did)."""
    plan, repository = stage.plan, stage.repository
    tasks = Task.objects.filter(wave__plan=plan)
    events = Event.objects.filter(Q(plan=plan) | Q(task__wave__plan=plan) | Q(wave__plan=plan))
    found: dict[str, dict[str, Any]] = {}

    def step(name: str, ok: bool, detail: str) -> None:
        found[name] = {"ok": bool(ok), "what": STEPS[name], "detail": detail}

    moved = [e.payload for e in events.filter(kind="wave.shared_file") if e.payload.get("moved")]
    step("shared_file", moved, "; ".join(f"{m['path']}: {m['moved']}" for m in moved))
    approved = events.filter(kind="wave.approve").exclude(wave__announcement="")
    step("approved", approved.exists(), f"{approved.count()} wave(s)")
    findings = Finding.objects.filter(review__task__in=tasks)
    accepted = findings.filter(verdict=Finding.ACCEPTED).exclude(resolved_in_commit="")
    overruled = findings.filter(verdict=Finding.OVERRULED)
    step(
        "findings",
        accepted.exists() and overruled.exists(),
        f"{accepted.count()} accepted and resolved, {overruled.count()} overruled",
    )
    stale = [e for e in events.filter(kind="task.gates") if "stale_base" in e.payload["red"]]
    step("stale_base", stale, ", ".join(sorted({e.task.key for e in stale})))
    agents = Agent.objects.filter(pk__in=stage.agent_ids)
    rotated = AgentSession.objects.filter(agent__in=agents, end_reason="rotated")
    step("rotation", rotated.exists(), ", ".join(sorted({s.agent.name for s in rotated})))
    resumed = []
    for lapsed in events.filter(kind="task.expire_lease").select_related("task"):
        assigns = events.filter(kind="task.assign", task=lapsed.task)
        before = assigns.filter(pk__lt=lapsed.pk).order_by("-pk").first()
        after = assigns.filter(pk__gt=lapsed.pk).order_by("pk").first()
        if before and after and after.payload.get("agent") != before.payload.get("agent"):
            resumed.append(lapsed.task.key)  # taken up by another agent
    step("silent", resumed, ", ".join(sorted(set(resumed))))
    warned = Event.objects.filter(kind="budget.warning", wave__plan=plan)
    step("budget_warning", warned.exists(), f"{warned.count()} warning(s)")
    stops = Event.objects.filter(
        kind="agent.stop", agent__in=agents, payload__reason="budget"
    ).count()
    step("budget_stop", stops, f"{stops} agent(s) stopped")
    merges = MergeRequest.objects.filter(repository=repository)
    failed = merges.filter(result=MergeRequest.FAILED, log__contains="merge check failed")
    fixed = [mr.task.key for mr in failed if mr.task.status == Task.MERGED]
    step("merge_failed", fixed, ", ".join(sorted(set(fixed))))
    merged = tasks.filter(status=Task.MERGED)
    commits = dict(
        merges.filter(result=MergeRequest.MERGED).values_list("task_id", "candidate_sha")
    )
    on_main = [t for t in merged if _on_main(repository, commits.get(t.pk, ""))]
    step(
        "merged",
        merged.exists() and len(on_main) == merged.count(),
        f"{len(on_main)} of {merged.count()} merged task(s) on main",
    )
    return found


def _on_main(repository: Repository, sha: str) -> bool:
    from fleet.git import merge

    if not sha:
        return False
    tip = planning.base_ref(repository)
    return sha == tip or merge.is_ancestor(repository.path, sha, tip)
