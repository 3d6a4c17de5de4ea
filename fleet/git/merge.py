"""The merge queue's git steps. None of them touches an agent's worktree: the
candidate is built from objects (``merge-tree --write-tree`` + ``commit-tree``),
checked in a scratch worktree, and main moves only by compare-and-swap."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import git

from fleet.git.errors import GitError
from fleet.git.repo import AUTHOR_ENV, open_repo
from fleet.git.worktrees import scratch


@dataclass
class Candidate:
    sha: str | None  # the squashed commit on main's tip; None on conflict
    conflicts: list[str]


def build_candidate(repo_path: str | Path, *, main: str, head: str, message: str) -> Candidate:
    """One squashed commit ``message`` with ``head``'s changes on top of ``main``."""
    with open_repo(repo_path, "building the merge candidate") as repo:
        try:
            out = repo.git.merge_tree("--write-tree", "--name-only", "--no-messages", main, head)
        except git.GitCommandError as exc:
            if exc.status != 1:  # 1 means conflicts; anything else is a real failure
                raise
            lines = (exc.stdout or "").strip().strip("'").splitlines()
            conflicts = sorted({line.strip() for line in lines[1:] if line.strip()})
            return Candidate(None, conflicts or ["(unknown)"])
        tree = out.splitlines()[0].strip()
        sha = repo.git.commit_tree(tree, "-p", main, "-m", message, env=AUTHOR_ENV)
    return Candidate(sha, [])


@dataclass
class CheckResult:
    passed: bool
    log: str
    timed_out: bool = False


def run_check(
    repo_path: str | Path, *, commit: str, command: str, workdir: Path, timeout: float
) -> CheckResult:
    """Run ``command`` (a shell line) in the scratch worktree ``workdir`` at ``commit``."""
    if not command.strip():
        return CheckResult(True, "no check command configured for this repository\n")
    path = scratch(repo_path, path=workdir, commit=commit)
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a timeout can kill the whole process group
        env={k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO"))},
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        log = out.decode(errors="replace") + f"\n[fleet] check timed out after {timeout:g} s\n"
        return CheckResult(False, log[-100_000:], timed_out=True)
    log = out.decode(errors="replace")
    log += f"\n[fleet] `{command}` exited with {proc.returncode}\n"
    return CheckResult(proc.returncode == 0, log[-100_000:])


def update_ref(repo_path: str | Path, *, branch: str, new: str, old: str) -> bool:
    """Compare-and-swap ``refs/heads/<branch>`` from ``old`` to ``new``; False when the
    branch no longer points at ``old``. A checked-out ``branch`` in Fleet's own clone has
    its files moved along, so the clone does not appear to hold reverse changes."""
    with open_repo(repo_path, f"updating {branch}") as repo:
        try:
            repo.git.update_ref(f"refs/heads/{branch}", new, old)
        except git.GitCommandError:
            current = repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
            if current != old:
                return False
            raise
        checked_out = not repo.bare and repo.head.is_valid() and not repo.head.is_detached
        if checked_out and repo.head.ref.name == branch:
            # The clone's own files are cosmetic (refs are what count): best effort.
            with contextlib.suppress(git.GitCommandError):
                repo.git.read_tree("-m", "-u", old, new)
    return True


def push(repo_path: str | Path, *, remote: str, branch: str, new: str, old: str) -> bool:
    """Push ``new`` to ``<remote>/<branch>`` only if it is still ``old`` there
    (``--force-with-lease``): False when someone moved it meanwhile."""
    with open_repo(repo_path, f"pushing to {remote}") as repo:
        try:
            repo.git.push(
                "--porcelain",
                f"--force-with-lease=refs/heads/{branch}:{old}",
                remote,
                f"{new}:refs/heads/{branch}",
            )
        except git.GitCommandError as exc:
            text = f"{exc.stdout}\n{exc.stderr}"
            if "stale info" in text or "rejected" in text or "non-fast-forward" in text:
                return False
            raise GitError(f"pushing to {remote} failed: {text.strip()[:300]}") from exc
    return True


def tip(repo_path: str | Path, *, remote: str, branch: str, fetch: bool = True) -> str:
    """Main's current tip: ``<remote>/<branch>`` (fetched) when there is a remote,
    else the local branch."""
    from fleet.git.repo import fresh_base

    if fetch:
        return fresh_base(repo_path, remote=remote, branch=branch)
    with open_repo(repo_path) as repo:
        return repo.git.rev_parse(f"refs/heads/{branch}")


def has_remote(repo_path: str | Path) -> bool:
    with open_repo(repo_path) as repo:
        return bool(repo.remotes)


def is_ancestor(repo_path: str | Path, ancestor: str, descendant: str) -> bool:
    with open_repo(repo_path) as repo:
        try:
            repo.git.merge_base("--is-ancestor", ancestor, descendant)
        except git.GitCommandError:
            return False
    return True
