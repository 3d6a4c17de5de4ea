"""Demo data: a real local git repository and a fleet caught mid-sprint.

Everything moves through the state machines, so the activity log reads like a
real morning's work. Seeding is idempotent: a second run changes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.utils import timezone

from fleet import planning
from fleet.git import repo as gitrepo
from fleet.models import (
    Agent,
    AgentSession,
    Budget,
    CheckRun,
    Event,
    Finding,
    JournalEntry,
    Learning,
    Message,
    Plan,
    Repository,
    Review,
    SpendEvent,
    Task,
    Wave,
)
from fleet.roles import ROLES

PLAN_SLUG = "demo-sprint"
REPO_SLUG = "demo-shop"

DEMO_FILES = {
    "README.md": "# Demo shop\n\nA tiny shop used to show Fleet at work.\n",
    "shop/__init__.py": "",
    "shop/models.py": (
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Product:\n"
        "    sku: str\n    name: str\n    price_cents: int\n"
    ),
    "shop/routes.py": 'ROUTES = {\n    "/": "index",\n}\n',
    "shop/config.py": 'CURRENCY = "EUR"\nTAX_RATE = 0.2\n',
    "tests/test_models.py": (
        "from shop.models import Product\n\n\ndef test_product():\n"
        '    assert Product("a", "A", 100).price_cents == 100\n'
    ),
}


@dataclass
class Login:
    username: str
    password: str
    role: str


def _logins_file() -> Path:
    return Path(settings.FLEET_DATA_DIR) / "demo-logins.json"


def ensure_users() -> list[Login]:
    """Demo people, one per role. Passwords are generated once and kept in the
    data dir (mode 0600), never written into the source or the settings."""
    path = _logins_file()
    stored = json.loads(path.read_text()) if path.exists() else {}
    logins = []
    for role in ROLES:
        group = Group.objects.get_or_create(name=role)[0]
        user, created = User.objects.get_or_create(username=role)
        if created:
            password = os.environ.get("FLEET_DEMO_PASSWORD") or secrets.token_urlsafe(9)
            user.set_password(password)
            user.is_staff = role == "lead"
            user.save()
            stored[role] = password
        user.groups.add(group)
        # An account that existed before the demo keeps its password.
        logins.append(Login(role, stored.get(role, "(existing account, unchanged)"), role))
    # Leads run the admin: give their group Fleet's model permissions.
    lead_group = Group.objects.get(name="lead")
    lead_group.permissions.add(
        *Permission.objects.filter(content_type__app_label="fleet").exclude(
            content_type__model="event", codename__regex=r"^(add|change|delete)_"
        )
    )
    path.write_text(json.dumps(stored, indent=2))
    path.chmod(0o600)
    return logins


def ensure_repository() -> Repository:
    data = Path(settings.FLEET_DATA_DIR)
    origin = data / "origins" / f"{REPO_SLUG}.git"
    clone = data / "repos" / REPO_SLUG
    gitrepo.create_with_origin(
        origin=origin, clone=clone, files=DEMO_FILES, message="Initial shop skeleton"
    )
    repository, _ = Repository.objects.get_or_create(
        slug=REPO_SLUG,
        defaults={
            "name": "Demo shop",
            "path": str(clone),
            "remote_name": "origin",
            "default_branch": "main",
            # This interpreter has pytest (it is in requirements.txt).
            "check_command": f"{shlex.quote(sys.executable)} -m pytest -q",
            "worktree_root": str(data / "worktrees" / REPO_SLUG),
            "dod_items": [
                {"auto": "changelog"},
                {"auto": "task_key"},
                {"auto": "docs", "when": ["shop/api/**"], "docs": ["README.md", "docs/**"]},
                "Tests cover the change",
            ],
            "required_checks": ["unit"],
        },
    )
    return repository


def seed(*, fleet: bool = True) -> tuple[bool, list[Login]]:
    """Create the demo fleet if it is not there yet. Returns (created, logins).
    ``fleet=False``: the demo logins only (``make run``'s living demo brings its own
    fleet; a static one beside it would go stale with nothing animating it)."""
    logins = ensure_users()
    if not fleet:
        return False, logins
    repository = ensure_repository()
    if Plan.objects.filter(slug=PLAN_SLUG).exists():
        return False, logins
    with transaction.atomic():
        _seed_fleet(repository, User.objects.get(username="lead"))
    return True, logins


T3_MODELS = (
    "from dataclasses import dataclass\nfrom decimal import ROUND_HALF_EVEN, Decimal\n\n\n"
    "@dataclass\nclass Product:\n    sku: str\n    name: str\n    price_cents: int\n\n"
    '    def gross_cents(self, tax_rate: str = "0.2") -> int:\n'
    "        gross = Decimal(self.price_cents) * (1 + Decimal(tax_rate))\n"
    '        return int(gross.quantize(Decimal("1"), rounding=ROUND_HALF_EVEN))\n'
)
T3_TEST = (
    "\n\ndef test_gross_rounds_half_even():\n"
    '    assert Product("b", "B", 5).gross_cents("0.1") == 6\n'
    '    assert Product("c", "C", 15).gross_cents("0.1") == 16\n'
)


def _stale_branch(repo: Repository, task: Task, base: str) -> str:
    """T-3's worktree and commit, on a branch from ``base`` (kept when it exists)."""
    worktree = Path(repo.worktree_root) / task.key
    task.base_sha = gitrepo.add_worktree(
        repo_path=Path(repo.path), worktree=worktree, branch=task.branch, base=base
    )
    task.worktree_path = str(worktree)
    task.save(update_fields=["base_sha", "worktree_path"])
    subject = "Round prices half-even"
    head = gitrepo.find_commit(worktree, subject=subject)
    if head is None:
        head = gitrepo.commit_files(
            path=worktree,
            files={
                "shop/models.py": T3_MODELS,
                "tests/test_models.py": DEMO_FILES["tests/test_models.py"] + T3_TEST,
            },
            message=subject,
        )
    return head


def _seed_fleet(repo: Repository, lead: User) -> None:
    now = timezone.now()
    reviewer_user = User.objects.get(username="reviewer")
    plan = Plan.objects.create(
        name="Demo sprint",
        slug=PLAN_SLUG,
        description="Cart and checkout for the demo shop.",
        created_by=lead,
    )
    wave1 = Wave.objects.create(plan=plan, number=1, name="Foundation")
    wave2 = Wave.objects.create(plan=plan, number=2, name="Features")

    def task(key, wave, kind, title, paths, spec=""):
        return Task.objects.create(
            key=key,
            wave=wave,
            repository=repo,
            kind=kind,
            title=title,
            declared_paths=paths,
            spec=spec or f"Requirements: {title}.\nAcceptance: tests pass and the README says how.",
        )

    t1 = task("T-1", wave1, "feat", "Product catalogue", ["shop/catalogue.py"])
    t2 = task("T-2", wave1, "feat", "Shopping cart", ["shop/cart.py", "tests/test_cart.py"])
    t3 = task(
        "T-3", wave1, "fix", "Round prices half-even", ["shop/models.py", "tests/test_models.py"]
    )
    t4 = task("T-4", wave1, "feat", "Checkout flow", ["shop/checkout.py"])
    task("T-5", wave2, "feat", "Discount codes", ["shop/discounts.py", "shop/routes.py"])
    task("T-6", wave2, "feat", "Order history page", ["shop/orders.py", "shop/routes.py"])
    task("T-7", wave2, "docs", "Document the API", ["docs/api.md"])
    # Wave 2's matrix finds shop/routes.py in T-5 and T-6, for the lead to resolve.
    planning.sync_shared(wave2)

    def agent(name, role, heartbeat_ago, context, status_line=""):
        a = Agent.objects.create(
            name=name,
            role=role,
            repository=repo,
            last_heartbeat_at=now - timedelta(seconds=heartbeat_ago),
            context_pct=context,
            status_line=status_line,
        )
        a.issue_token(by=lead)  # the token itself is discarded: demo agents are simulated
        AgentSession.objects.create(agent=a, started_at=now - timedelta(minutes=40))
        return a

    olly = agent("olly", Agent.ORCHESTRATOR, 5, 22, "watching wave 1")
    ada = agent("ada", Agent.BUILDER, 8, 41, "writing cart tests")
    bob = agent("bob", Agent.BUILDER, 600, 35, "running the checkout tests")
    cyd = agent("cyd", Agent.BUILDER, 3, 63, "hand-off: journal written")
    dee = agent("dee", Agent.BUILDER, 50, 12)
    rex = agent("rex", Agent.REVIEWER, 4, 18, "reviewing T-3")
    sam = agent("sam", Agent.REVIEWER, 12, 5)
    assert olly and sam

    # Wave 1 went through the preflight (budget set, nothing shared, four agents).
    wave_budget = Budget.objects.create(scope="wave", wave=wave1, limit_usd=Decimal("20"))
    planning.approve(wave1, by=lead)
    wave1.start(by=lead)

    # T-1 went all the way through and is on main.
    for t in (t1, t2, t3, t4):
        t.refresh_from_db()
    base = gitrepo.head_sha(repo.path)
    # T-3 forked before T-1 landed: its page shows the stale-base gate naming T-1.
    t3_head = _stale_branch(repo, t3, base)
    t1.assign(agent=dee)
    t1.start(by=dee)
    t1.submit(commit=base, by=dee)
    t1.approve(by=reviewer_user)
    t1.enqueue_merge(by=lead)
    # The git side may survive a database reset (a new DATABASE_URL, a deleted
    # SQLite file): reuse T-1's commit when main already has it.
    merged = gitrepo.find_commit(repo.path, subject="T-1: Product catalogue")
    if merged is None:
        merged = gitrepo.commit_files(
            path=Path(repo.path),
            files={"shop/catalogue.py": "CATALOGUE = []\n"},
            message="T-1: Product catalogue",
        )
        gitrepo.push(path=Path(repo.path), branch=repo.default_branch)
    t1.mark_merged(commit=merged)
    CheckRun.objects.create(
        repository=repo,
        task=t1,
        name="tests",
        commit_sha=merged,
        status="passed",
        finished_at=now,
    )

    # ada works on T-2 in her own worktree, off fresh main.
    worktree = Path(repo.worktree_root) / t2.key
    t2.base_sha = gitrepo.add_worktree(
        repo_path=Path(repo.path), worktree=worktree, branch=t2.branch, base=repo.default_branch
    )
    t2.worktree_path = str(worktree)
    t2.save(update_fields=["base_sha", "worktree_path"])
    t2.assign(agent=ada)
    t2.start(by=ada)
    ada.start_work(task=t2)

    # T-3 is in review: rex found three things, one already adjudicated each way.
    t3.assign(agent=dee)
    t3.start(by=dee)
    t3.submit(commit=t3_head, by=dee)
    rex.start_review(task=t3)
    review = Review.objects.create(
        task=t3,
        commit_sha=t3_head,
        reviewer=rex,
        session=rex.sessions.first(),
        provenance={"fresh_session": True, "never_held_task": True, "model": "demo-model"},
        status=Review.CLOSED,  # its findings are in, for people to adjudicate
        closed_at=now,
    )
    Finding.objects.create(
        review=review,
        path="shop/models.py",
        line_start=7,
        severity="major",
        title="Rounding uses float arithmetic",
        body="price_cents * 1.2 can land on .5 and round the wrong way.",
        suggested_fix="Use decimal.Decimal with ROUND_HALF_EVEN.",
    )
    Finding.objects.create(
        review=review,
        path="shop/models.py",
        line_start=3,
        severity="minor",
        title="Missing docstring",
        verdict=Finding.OVERRULED,
        reason="House style: dataclasses document themselves.",
        decided_by=reviewer_user,
        decided_at=now,
    )
    Finding.objects.create(
        review=review,
        path="tests/test_models.py",
        line_start=5,
        line_end=6,
        severity="critical",
        title="No test for negative prices",
        verdict=Finding.ACCEPTED,
        decided_by=reviewer_user,
        decided_at=timezone.now(),  # after T-3's submit: the builder has not fixed it yet
    )

    # bob went silent while holding T-4; cyd is rotating; one builder hit its cap.
    t4.assign(agent=bob)
    t4.start(by=bob)
    bob.start_work(task=t4)
    bob.mark_stale()
    cyd.rotate()
    max_ = agent("max", Agent.BUILDER, 900, 48, "stopped at budget cap")
    max_.stop(reason="budget", by=lead)

    # Spend, with running totals that match the raw events.
    fleet_budget = Budget.objects.create(scope="fleet", limit_usd=Decimal("50"))
    max_budget = Budget.objects.create(scope="agent", agent=max_, limit_usd=Decimal("3"))
    spend = [
        (ada, t2, 120_000, 9_000, "1.8400"),
        (bob, t4, 80_000, 6_000, "1.2100"),
        (cyd, None, 150_000, 11_000, "2.3000"),
        (dee, t1, 60_000, 4_000, "0.9000"),
        (rex, t3, 40_000, 2_000, "0.5200"),
        (max_, None, 190_000, 12_000, "3.0000"),
    ]
    for a, t, tin, tout, cost in spend:
        SpendEvent.objects.create(
            agent=a,
            session=a.sessions.first(),
            task=t,
            model_name="demo-model",
            tokens_in=tin,
            tokens_out=tout,
            cost_usd=Decimal(cost),
        )
        a.spent_usd += Decimal(cost)
        a.tokens_used += tin + tout
        a.save(update_fields=["spent_usd", "tokens_used"])
        fleet_budget.spent_usd += Decimal(cost)
        fleet_budget.spent_tokens += tin + tout
        if t is not None and t.wave_id == wave1.pk:
            wave_budget.spent_usd += Decimal(cost)
            wave_budget.spent_tokens += tin + tout
    max_budget.spent_usd, max_budget.spent_tokens = max_.spent_usd, max_.tokens_used
    for b in (fleet_budget, wave_budget, max_budget):
        b.save()

    JournalEntry.objects.create(agent=ada, task=t2, kind="done", body="Cart model and add/remove.")
    JournalEntry.objects.create(agent=ada, task=t2, kind="next", body="Totals with tax.")
    JournalEntry.objects.create(
        agent=cyd, kind="learned", body="Run tests with -p no:cacheprovider in worktrees."
    )
    Message.objects.create(
        recipient=ada,
        sender_user=lead,
        task=t2,
        subject="Spec T-2 is now v2",
        body="Carts must also hold gift cards.",
    )
    Learning.objects.create(
        repository=repo,
        agent=cyd,
        title="Tests need a clean cache",
        body="Stale .pytest_cache in a shared checkout masked a failure.",
        tags="tests",
    )
    Event.objects.record("demo.seeded", by=lead, plan=plan, payload={"repository": repo.slug})
