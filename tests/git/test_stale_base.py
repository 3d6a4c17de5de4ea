"""The stale-base report on generated histories, asserted exactly: what merging a
stale branch's tree would delete that main gained after the fork (and only that), and
what it would bring back that main removed; every name a commit of base..main."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fleet.git import facts
from fleet.git import repo as gitrepo

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR binary"


class History:
    """A real repository (a bare origin and a clone) written commit by commit."""

    def __init__(self, root: Path):
        self.origin, self.path = root / "origin.git", root / "clone"
        self.run(root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        self.run(root, "clone", "-q", str(self.origin), str(self.path))
        self.run(self.path, "checkout", "-q", "-B", "main")

    def run(self, cwd: Path, *args: str) -> str:
        env = {**os.environ, **gitrepo.AUTHOR_ENV}
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)
        return done.stdout.decode().strip()

    def git(self, *args: str) -> str:
        return self.run(self.path, *args)

    def write(self, files: dict[str, str | bytes]) -> None:
        for rel, content in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode())

    def commit(self, message: str, files: dict[str, str | bytes] | None = None) -> str:
        self.write(files or {})
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def report(self, main: str = "main", head: str = "agent") -> facts.StaleBase:
        self.git("push", "-q", "origin", "main", "agent")
        return facts.stale_base(self.path, main=main, head=head)


def summary(hunks) -> list[tuple]:
    return [(h.path, h.start, h.lines, [c.task_key for c in h.commits]) for h in hunks]


@pytest.fixture
def history(tmp_path) -> History:
    facts.clear_cache()
    return History(tmp_path)


def test_the_issue_reproduction_reports_exactly_what_main_gained(history):
    """Issue 21: deleted files, a mode change and a rename were misreported."""
    history.write({"logo.png": PNG, "empty.txt": "", "run.sh": "x = 1\n", "a.txt": "a1\na2\na3\n"})
    os.chmod(history.path / "run.sh", 0o755)
    history.commit("T-1: initial")
    history.git("branch", "agent")
    history.git("rm", "-q", "logo.png", "empty.txt")
    history.commit("T-2: remove the logo and an empty file")
    os.chmod(history.path / "run.sh", 0o644)
    history.commit("T-3: run.sh is not executable")
    history.git("mv", "a.txt", "b.txt")
    history.commit("T-4: rename a.txt to b.txt")
    history.commit("T-5: append to b.txt", {"b.txt": "a1\na2\na3\nb4\n"})
    history.git("checkout", "-q", "agent")
    history.commit("T-6: own work", {"own.txt": "mine\n"})
    history.git("checkout", "-q", "main")

    report = history.report()
    assert summary(report.lost) == [
        ("b.txt", 1, ["a1", "a2", "a3", "b4"], ["T-4", "T-5"]),
        ("run.sh", 1, ["(mode 100644 → 100755)"], ["T-3"]),
    ]
    assert [h.kind for h in report.lost] == ["lines", "mode"]
    # Merging the tree brings back what main removed: the old name and two files.
    assert summary(report.resurrected) == [
        ("a.txt", 1, ["a1", "a2", "a3"], ["T-4"]),
        ("empty.txt", 1, ["(empty file)"], ["T-2"]),
        ("logo.png", 1, ["(binary file)"], ["T-2"]),
    ]
    assert report.reason() == (
        "merging would delete 2 hunk(s) main gained (b.txt:1, run.sh:1) from T-3, T-4, T-5; "
        "merging would bring back 3 line(s) and 2 file(s) main removed in T-2, T-4"
    )
    base = history.git("merge-base", "main", "agent")
    fork_commits = set(history.git("rev-list", f"{base}..main").split())
    named = {c.sha for h in report.lost + report.resurrected for c in h.commits}
    assert named <= fork_commits
