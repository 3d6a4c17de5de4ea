"""The merge queue's git steps. None of them touches an agent's worktree: the
candidate is built from objects (``merge-tree --write-tree`` + ``commit-tree``),
checked in a scratch worktree, and main moves only by compare-and-swap."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import git

from fleet.git.errors import GitError
from fleet.git.repo import FLEET_GIT_ENV, fresh_base, open_repo
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
        sha = repo.git.commit_tree(tree, "-p", main, "-m", message, env=FLEET_GIT_ENV)
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
    pgid_file = workdir.with_name(workdir.name + ".pgid")
    _kill_leftover(pgid_file)  # a check from a worker that died must not run on
    path = scratch(repo_path, path=workdir, commit=commit)
    marker = uuid.uuid4().hex  # in the check's environment: how its processes are known
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO"))}
    env["FLEET_CHECK_RUN"] = marker
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so all of it can be killed
        preexec_fn=_die_with_parent,
        env=env,
    )
    pgid_file.write_text(f"{proc.pid} {marker}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        log = out.decode(errors="replace") + f"\n[fleet] check timed out after {timeout:g} s\n"
        return CheckResult(False, log[-100_000:], timed_out=True)
    finally:
        _kill_leftover(pgid_file)  # whatever the command left running in its group
    log = out.decode(errors="replace")
    log += f"\n[fleet] `{command}` exited with {proc.returncode}\n"
    return CheckResult(proc.returncode == 0, log[-100_000:])


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the worker dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _kill_leftover(pgid_file: Path) -> None:
    """Kill what is left of a recorded check: only processes that carry its marker, so
    a process group id reused by something else is never touched."""
    try:
        pgid_text, marker = pgid_file.read_text().split()
        pgid = int(pgid_text)
    except (OSError, ValueError):
        return
    needle = f"FLEET_CHECK_RUN={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    pgid_file.unlink(missing_ok=True)


def update_ref(repo_path: str | Path, *, branch: str, new: str, old: str) -> bool:
    """Compare-and-swap ``refs/heads/<branch>`` from ``old`` to ``new``; False when the
    branch no longer points at ``old``. If Fleet's own clone has ``branch`` checked out,
    its HEAD is detached at ``old`` first, so index and files stay consistent with HEAD
    (never a clone whose index would revert the merge)."""
    with open_repo(repo_path, f"updating {branch}") as repo:
        checked_out = not repo.bare and repo.head.is_valid() and not repo.head.is_detached
        if checked_out and repo.head.ref.name == branch:
            repo.git.checkout("--detach", "--quiet")
        try:
            repo.git.update_ref(f"refs/heads/{branch}", new, old)
        except git.GitCommandError:
            current = repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
            if current != old:
                return False
            raise
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
            if "stale info" in text:  # the lease: main moved on the remote meanwhile
                return False
            # A hook, branch protection, permissions: not something a rebuild fixes.
            raise GitError(f"pushing to {remote} was refused: {text.strip()[:500]}") from exc
    return True


def tip(repo_path: str | Path, *, remote: str, branch: str) -> str:
    """Main's current tip: ``<remote>/<branch>`` freshly fetched when there is a remote,
    else the local branch (``fresh_base`` under the merge queue's name)."""
    return fresh_base(repo_path, remote=remote, branch=branch)


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
