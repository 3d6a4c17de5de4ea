"""Real repositories: a bare origin, Fleet's clone, and other people's clones that
push to origin behind Fleet's back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleet.git import repo as gitrepo

SHOP = {
    "README.md": "# shop\n",
    "shop/cart.py": "def total(items):\n    return sum(i.price for i in items)\n",
    "shop/__init__.py": "",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=_env()
    ).stdout.strip()


def _env():
    import os

    return {**os.environ, **gitrepo.AUTHOR_ENV}


def commit(worktree: Path, files: dict[str, str], message: str) -> str:
    return gitrepo.commit_files(path=worktree, files=files, message=message)


@pytest.fixture
def shop(tmp_path: Path) -> dict[str, Path]:
    """``origin`` (bare), ``clone`` (Fleet's) and ``other`` (someone else's clone)."""
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(origin=origin, clone=clone, files=SHOP, message="initial")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    return {"origin": origin, "clone": clone, "other": other, "root": tmp_path}


@pytest.fixture
def repository(shop, data_dir):
    """The shop as a Fleet repository whose check always passes."""
    from ..conftest import make_repository

    return make_repository(path=str(shop["clone"]), slug="shop", check_command="true")


@pytest.fixture
def lead(db):
    from ..conftest import make_user

    return make_user("lea", "lead")


def push_from_other(shop: dict[str, Path], files: dict[str, str], message: str) -> str:
    other = shop["other"]
    git(other, "pull", "-q", "--ff-only", "origin", "main")
    sha = commit(other, files, message)
    git(other, "push", "-q", "origin", "main")
    return sha


def near_miss(root: Path, data_dir: Path):
    """Fleet objects for the near miss: T-1 (discount codes) squash-merged through the
    queue while T-2 (free shipping) was branched before it and submitted after.
    Returns (repository, t1, t2)."""
    from fleet import merging
    from fleet.git import worktrees
    from fleet.models import Agent, Task, Wave

    from ..conftest import make_agent, make_repository, make_task, make_user, make_wave

    origin, clone = root / "origin.git", root / "clone"
    gitrepo.create_with_origin(origin=origin, clone=clone, files=SHOP, message="initial")
    repository = make_repository(path=str(clone), slug="shop", name="Shop", check_command="true")
    wave = make_wave(status=Wave.RUNNING)
    tasks = []
    for key, title in (("T-2", "Free shipping"), ("T-1", "Discount codes")):
        wt = data_dir / "worktrees" / "shop" / key
        base = worktrees.create(
            clone, worktree=wt, branch=f"feat/{key}", remote="origin", default="main"
        )
        tasks.append(
            make_task(
                wave=wave,
                repository=repository,
                key=key,
                title=title,
                status=Task.APPROVED,
                base_sha=base,
                worktree_path=str(wt),
                declared_paths=["shop/**"],
                assignee=make_agent(Agent.BUILDER, name=f"builder-{key.lower()}"),
            )
        )
    t2, t1 = tasks
    t1.head_sha = commit(Path(t1.worktree_path), {"shop/cart.py": DISCOUNT}, "discount codes")
    t1.save(update_fields=["head_sha"])
    merging.enqueue(t1, by=make_user("lea", "lead"))
    merging.process_queues()
    merging.collect_merged()
    t2.head_sha = commit(
        Path(t2.worktree_path), {"shop/shipping.py": "FREE_OVER = 50\n", "docs/x.md": "x\n"}, "ship"
    )
    t2.status = Task.IN_REVIEW
    t2.save(update_fields=["head_sha", "status"])
    return repository, t1, t2


DISCOUNT = (
    "def total(items):\n    return sum(i.price for i in items)\n\n\n"
    "def discount(total, code):\n    if code == 'TEN':\n"
    "        return total * 0.9\n    return total\n"
)
