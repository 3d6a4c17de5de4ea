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
        "merging would bring back 3 lines and 2 files main removed in T-2, T-4"
    )
    base = history.git("merge-base", "main", "agent")
    fork_commits = set(history.git("rev-list", f"{base}..main").split())
    named = {c.sha for h in report.lost + report.resurrected for c in h.commits}
    assert named <= fork_commits


def fork(history: History, files: dict[str, str | bytes], *, before: list[tuple] = ()) -> str:
    """Commits ``before`` (pre-fork history) and T-1 with ``files``; the agent branch
    forks there and commits its own file."""
    for message, changes in before:
        history.commit(message, changes)
    base = history.commit("T-1: the fork", files)
    history.git("checkout", "-q", "-b", "agent")
    history.commit("T-99: own work", {"own.txt": "mine\n"})
    history.git("checkout", "-q", "main")
    return base


def test_a_renamed_file_names_the_rename_not_the_history_before_the_fork(history):
    old = "A=1\nB=2\nC=3\n"
    fork(
        history,
        {},
        before=[
            ("T-0: env", {"cfg/.env.example": "A=1\nB=1\nC=3\n"}),
            ("T-01: B", {"cfg/.env.example": old}),
        ],
    )
    history.git("mv", "cfg/.env.example", ".env.example")
    history.commit("T-3: env example at the root, with D", {".env.example": old + "D=4\n"})
    history.commit("T-4: E", {".env.example": old + "D=4\nE=5\n"})
    report = history.report()
    assert summary(report.lost) == [
        (".env.example", 1, ["A=1", "B=2", "C=3", "D=4", "E=5"], ["T-3", "T-4"])
    ]
    assert summary(report.resurrected) == [("cfg/.env.example", 1, ["A=1", "B=2", "C=3"], ["T-3"])]


def test_binary_and_empty_files_main_added_or_changed_are_lost(history):
    fork(history, {"logo.png": PNG})
    history.commit("T-2: assets", {"img/icon.png": PNG + b"icon", "img/.keep": ""})
    history.commit("T-3: a new logo", {"logo.png": PNG + b"v2"})
    report = history.report()
    assert summary(report.lost) == [
        ("img/.keep", 1, ["(empty file)"], ["T-2"]),
        ("img/icon.png", 1, ["(binary file)"], ["T-2"]),
        ("logo.png", 1, ["(binary file)"], ["T-3"]),
    ]
    assert [h.kind for h in report.lost] == ["empty", "binary", "binary"]
    assert report.resurrected == []


def test_a_mode_only_change_is_a_mode_change(history):
    fork(history, {"tool.sh": "echo hi\n"})
    os.chmod(history.path / "tool.sh", 0o755)
    history.commit("T-2: tool.sh is executable")
    report = history.report()
    assert summary(report.lost) == [("tool.sh", 1, ["(mode 100755 → 100644)"], ["T-2"])]
    assert report.resurrected == []


def test_a_mode_the_task_changed_itself_is_not_reported(history):
    fork(history, {"tool.sh": "echo hi\n"})
    history.git("checkout", "-q", "agent")
    os.chmod(history.path / "tool.sh", 0o700)  # git records 100755 either way
    history.commit("T-99: executable here too")
    history.git("checkout", "-q", "main")
    os.chmod(history.path / "tool.sh", 0o755)
    history.commit("T-2: tool.sh is executable")
    assert history.report().red is False


BLOCK = "def helper():\n    return 42\n"


def test_moved_code_is_lost_where_main_put_it_and_brought_back_where_it_was(history):
    fork(history, {"a.py": "A = 1\n\n" + BLOCK, "b.py": "B = 1\n"})
    history.commit("T-2: move helper to b.py", {"a.py": "A = 1\n", "b.py": "B = 1\n\n" + BLOCK})
    report = history.report()
    assert summary(report.lost) == [("b.py", 2, ["", "def helper():", "    return 42"], ["T-2"])]
    assert summary(report.resurrected) == [
        ("a.py", 2, ["", "def helper():", "    return 42"], ["T-2"])
    ]


def test_lines_main_removed_are_brought_back_and_named(history):
    app = "def load(data):\n    check(data)\n    return eval(data)\n"
    fork(history, {"app.py": app, "flags.py": "NEW_UI = False\nFAST = True\n"})
    history.commit("T-9: no eval", {"app.py": "def load(data):\n    check(data)\n"})
    history.commit("T-10: retire the NEW_UI flag", {"flags.py": "FAST = True\n"})
    report = history.report()
    assert report.lost == []
    assert summary(report.resurrected) == [
        ("app.py", 3, ["    return eval(data)"], ["T-9"]),
        ("flags.py", 1, ["NEW_UI = False"], ["T-10"]),
    ]
    assert report.reason() == "merging would bring back 2 lines main removed in T-10, T-9"


def test_lines_the_task_changed_itself_are_not_resurrections(history):
    app = "def load(data):\n    check(data)\n    return eval(data)\n"
    fork(history, {"app.py": app})
    history.git("checkout", "-q", "agent")
    history.commit("T-99: safer", {"app.py": app.replace("eval(data)", "parse(data)")})
    history.git("checkout", "-q", "main")
    history.commit("T-9: no eval", {"app.py": "def load(data):\n    check(data)\n"})
    report = history.report()
    # Merging the tree re-adds the task's own line, not the removed one.
    assert report.resurrected == [] and report.lost == []


def test_repeated_blank_lines_are_named_by_a_commit_that_added_them(history):
    """Blame pairs repeated lines up its own way (a blank line named by a commit from
    before the fork); the report names, for each line of each hunk, a commit after the
    fork that added that very text to the file."""
    head = "# Changelog\n\n"
    entries = [f"## 0.{n}\n\n- change {n}\n\n" for n in range(1, 4)]
    fork(history, {"CHANGELOG.md": head + "".join(reversed(entries))})
    for n in range(4, 8):
        entries.append(f"## 0.{n}\n\n- change {n}\n\n")
        history.commit(f"T-{n}: release 0.{n}", {"CHANGELOG.md": head + "".join(reversed(entries))})
    report = history.report()
    assert summary(report.lost) == [
        (
            "CHANGELOG.md",
            3,
            [line for n in (7, 6, 5, 4) for line in (f"## 0.{n}", "", f"- change {n}", "")],
            ["T-7", "T-6", "T-5", "T-4"],
        )
    ]
    fork_commits = set(history.git("rev-list", f"{report.base}..main").split())
    assert {c.sha for c in report.lost[0].commits} <= fork_commits


def test_a_merge_commit_on_main_is_named_for_what_it_brought(history):
    fork(history, {"a.txt": "a\n"})
    history.git("checkout", "-q", "-b", "side")
    history.commit("side work", {"side.txt": "s1\ns2\n"})
    history.git("checkout", "-q", "main")
    history.commit("T-2: main work", {"m.txt": "m\n"})
    history.git("merge", "-q", "--no-ff", "-m", "T-3: merge side", "side")
    report = history.report()
    assert summary(report.lost) == [
        ("m.txt", 1, ["m"], ["T-2"]),
        ("side.txt", 1, ["s1", "s2"], ["T-3"]),
    ]


def test_nothing_is_reported_when_main_has_not_moved_or_the_branch_is_rebased(history):
    fork(history, {"a.txt": "a\n"})
    assert history.report().red is False
    history.commit("T-2: more", {"a.txt": "a\nb\n"})
    assert history.report().red is True
    history.git("checkout", "-q", "agent")
    history.git("rebase", "-q", "main")
    history.git("checkout", "-q", "main")
    history.git("push", "-q", "-f", "origin", "agent")
    assert history.report().red is False


def test_a_repeat_is_served_from_the_cache_without_git(history, tmp_path):
    fork(history, {"a.txt": "a\n"})
    history.commit("T-2: more", {"a.txt": "a\nb\n"})
    main, head = history.git("rev-parse", "main"), history.git("rev-parse", "agent")
    first = facts.stale_base(history.path, main=main, head=head)
    moved = tmp_path / "elsewhere"
    history.path.rename(moved)
    history.path.mkdir()  # the same path, no repository: only the cache can answer
    assert facts.stale_base(history.path, main=main, head=head) is first
    # The hunks name the main tip's commit, and a new tip is a new report.
    assert [c.task_key for c in first.lost[0].commits] == ["T-2"]
