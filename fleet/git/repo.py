"""Basic repository operations: create, commit, worktrees.

Each function opens one ``git.Repo`` and closes it before returning, because
GitPython keeps ``cat-file`` helper processes alive per Repo object.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import git

from fleet.git.errors import MissingBranch, MissingRemote, NotARepository, explain

AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "Fleet",
    "GIT_AUTHOR_EMAIL": "fleet@localhost",
    "GIT_COMMITTER_NAME": "Fleet",
    "GIT_COMMITTER_EMAIL": "fleet@localhost",
}
# For the commits and rebases Fleet makes itself: a user's signing or ref-updating
# configuration must not make them fail or move other branches.
FLEET_GIT_ENV = {
    **AUTHOR_ENV,
    "GIT_CONFIG_COUNT": "3",
    "GIT_CONFIG_KEY_0": "commit.gpgSign",
    "GIT_CONFIG_VALUE_0": "false",
    "GIT_CONFIG_KEY_1": "rebase.updateRefs",
    "GIT_CONFIG_VALUE_1": "false",
    "GIT_CONFIG_KEY_2": "core.quotePath",
    "GIT_CONFIG_VALUE_2": "false",
}


@contextlib.contextmanager
def open_repo(path: str | Path, what: str = "git") -> Iterator[git.Repo]:
    """One ``git.Repo`` for one operation, always closed; git failures inside the
    block come out as ``GitError`` with a clear message."""
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise NotARepository(f"{path} is not a git repository") from None
    try:
        yield repo
    except git.GitCommandError as exc:
        raise explain(exc, what) from exc
    finally:
        repo.close()


def create_with_origin(
    *, origin: Path, clone: Path, files: dict[str, str], message: str, branch: str = "main"
) -> str:
    """A bare ``origin`` and Fleet's clone of it holding one commit of ``files``.

    Returns the commit sha. Safe to call again: existing repositories are kept.
    """
    if not origin.exists():
        origin.parent.mkdir(parents=True, exist_ok=True)
        git.Repo.init(origin, bare=True, initial_branch=branch).close()
    if not (clone / ".git").exists():
        clone.parent.mkdir(parents=True, exist_ok=True)
        git.Repo.clone_from(str(origin), str(clone)).close()
        with open_repo(clone) as repo:
            repo.git.checkout("-B", branch)
        commit_files(path=clone, files=files, message=message)
        with open_repo(clone) as repo:
            repo.git.push("origin", f"{branch}:{branch}")
    return head_sha(clone)


def commit_files(*, path: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (relative path → text) into the work tree and commit them."""
    for rel, text in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    with open_repo(path) as repo:
        repo.git.add("--", *files)
        repo.git.commit("-m", message, env=AUTHOR_ENV)
        return repo.head.commit.hexsha


def push(*, path: Path, branch: str, remote: str = "origin") -> None:
    with open_repo(path) as repo:
        repo.git.push(remote, f"{branch}:{branch}")


def head_sha(path: str | Path, ref: str = "HEAD") -> str:
    with open_repo(path) as repo:
        return repo.git.rev_parse(ref)


def log_subjects(path: str | Path, ref: str = "HEAD") -> list[str]:
    with open_repo(path) as repo:
        return repo.git.log("--format=%s", ref).splitlines()


def add_worktree(*, repo_path: Path, worktree: Path, branch: str, base: str) -> str:
    """Create ``worktree`` on a new ``branch`` from ``base`` (no upstream tracking).

    Returns the base commit sha. An existing worktree on that branch is kept.
    """
    with open_repo(repo_path) as repo:
        base_sha = repo.git.rev_parse(base)
        if not worktree.exists():
            worktree.parent.mkdir(parents=True, exist_ok=True)
            repo.git.worktree("add", "--no-track", "-b", branch, str(worktree), base_sha)
        return base_sha


def find_commit(path: str | Path, *, subject: str, ref: str = "HEAD") -> str | None:
    """The newest commit on ``ref`` whose subject is exactly ``subject``, if any."""
    with open_repo(path) as repo:
        for line in repo.git.log("--format=%H %s", ref).splitlines():
            sha, _, line_subject = line.partition(" ")
            if line_subject == subject:
                return sha
    return None


def common_dir(repo_path: str | Path) -> Path:
    """The repository's shared ``.git`` directory (also from inside a worktree)."""
    with open_repo(repo_path) as repo:
        path = Path(repo.git.rev_parse("--git-common-dir"))
    return path if path.is_absolute() else Path(repo_path) / path


@contextlib.contextmanager
def repo_flock(repo_path: str | Path, name: str, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on ``<common git dir>/<name>``; yields whether it was taken
    (always True when ``wait``). A file that stays: nothing to clean up when a process
    dies holding it, the kernel releases the lock."""
    with open(common_dir(repo_path) / name, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def worktree_lock(repo_path: str | Path) -> Iterator[None]:
    """Serialize worktree add/remove/prune per repository: parallel ``worktree add``
    races on ``.git/config.lock``."""
    with repo_flock(repo_path, "fleet-worktrees.flock"):
        yield


def fresh_base(repo_path: str | Path, *, remote: str, branch: str) -> str:
    """The sha to branch from: ``<remote>/<branch>`` freshly fetched, or the local
    ``branch`` when the repository has no remote at all."""
    with open_repo(repo_path, f"fetching {remote or 'main'}") as repo:
        names = [r.name for r in repo.remotes]
        if names:
            if remote not in names:
                raise MissingRemote(
                    f"{repo_path} has no remote {remote!r} (it has: {', '.join(names)})"
                )
            with repo_flock(repo_path, "fleet-fetch.flock"):
                # Concurrent fetches of one ref fail on its lock: one at a time.
                repo.git.fetch(remote, branch)
            ref = f"refs/remotes/{remote}/{branch}"
        else:
            ref = f"refs/heads/{branch}"
        try:
            return repo.git.rev_parse("--verify", "--quiet", ref)
        except git.GitCommandError:
            raise MissingBranch(f"{repo_path} has no branch {ref}") from None


def exclude_paths(worktree: str | Path, patterns: list[str]) -> Path:
    """Add ``patterns`` to the repository's ``info/exclude`` (shared by its
    worktrees) so the files can never be committed. Returns the exclude file."""
    with open_repo(worktree) as repo:
        exclude = Path(repo.git.rev_parse("--git-path", "info/exclude"))
    if not exclude.is_absolute():
        exclude = Path(worktree) / exclude
    exclude.parent.mkdir(parents=True, exist_ok=True)
    existing = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [p for p in patterns if p not in existing]
    if missing:
        with exclude.open("a") as handle:
            if existing and existing[-1] != "":
                handle.write("\n")
            handle.write("# Fleet's identity layer: never committed\n")
            handle.write("\n".join(missing) + "\n")
    return exclude


def tracked(path: str | Path, paths: list[str]) -> list[str]:
    """Which of ``paths`` (files or directories) git tracks in the work tree at ``path``."""
    with open_repo(path) as repo:
        return repo.git.ls_files("--", *paths).splitlines()


def list_files(path: str | Path, ref: str) -> list[str]:
    """Every file path in the tree of ``ref``, sorted (``git ls-tree -r``)."""
    with open_repo(path, f"listing the files of {ref}") as repo:
        out = repo.git.ls_tree("-r", "-z", "--name-only", "--full-tree", ref)
    return sorted(p for p in out.split("\0") if p)
