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


def push_from_other(shop: dict[str, Path], files: dict[str, str], message: str) -> str:
    other = shop["other"]
    git(other, "pull", "-q", "--ff-only", "origin", "main")
    sha = commit(other, files, message)
    git(other, "push", "-q", "origin", "main")
    return sha
