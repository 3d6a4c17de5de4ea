"""Git failures as one clear line each, never a traceback in the UI."""

from __future__ import annotations

import git


class GitError(Exception):
    """A git operation failed; ``str(error)`` is a sentence a person can act on."""


class NotARepository(GitError):
    pass


class MissingRemote(GitError):
    pass


class MissingBranch(GitError):
    pass


class DirtyWorktree(GitError):
    pass


class LockedIndex(GitError):
    pass


def explain(exc: git.GitCommandError, what: str) -> GitError:
    """Turn GitPython's exception into the matching GitError."""
    stderr = (exc.stderr or "").strip().strip("'").strip()
    detail = next((line.strip() for line in stderr.splitlines() if line.strip()), str(exc))
    detail = detail.removeprefix("stderr: ").strip().strip("'")
    if ".lock" in stderr and ("File exists" in stderr or "Unable to create" in stderr):
        return LockedIndex(
            f"{what}: another git process holds a lock ({detail}); retry, or remove a stale "
            "lock file if no git process is running"
        )
    if "does not appear to be a git repository" in stderr or "No such remote" in stderr:
        return MissingRemote(f"{what}: {detail}")
    if "unknown revision" in stderr or "couldn't find remote ref" in stderr:
        return MissingBranch(f"{what}: {detail}")
    return GitError(f"{what}: {detail}")
