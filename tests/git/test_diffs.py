"""The review workspace's diff parser: files, hunks and lines with their old and new
numbers, from real ``git diff`` output."""

from __future__ import annotations

from pathlib import Path

from fleet.git import diffs
from fleet.git.repo import commit_files

from .conftest import git

OLD = "one\ntwo\nthree\nfour\nfive\nsix\nseven\n"
NEW = "one\nTWO\nthree\nfour\nfive\nsix and a half\nseven\neight\n"


def two_commits(tmp_path: Path, before: dict[str, str], after: dict[str, str]) -> tuple[str, str]:
    git(tmp_path, "init", "-q", "-b", "main", str(tmp_path / "r"))
    repo = tmp_path / "r"
    first = commit_files(path=repo, files=before, message="before")
    second = commit_files(path=repo, files=after, message="after")
    return first, second


def test_lines_carry_their_old_and_new_numbers(tmp_path):
    first, second = two_commits(tmp_path, {"a.txt": OLD}, {"a.txt": NEW})
    text = git(tmp_path / "r", "diff", *diffs.DIFF_ARGS, first, second)
    (file,) = diffs.parse(text)
    assert (file.path, file.status, file.added, file.removed) == ("a.txt", "modified", 3, 2)
    rows = [(line.kind, line.old, line.new, line.text) for h in file.hunks for line in h.lines]
    assert ("-", 2, None, "two") in rows
    assert ("+", None, 2, "TWO") in rows
    assert (" ", 3, 3, "three") in rows
    assert ("-", 6, None, "six") in rows
    assert ("+", None, 6, "six and a half") in rows
    assert ("+", None, 8, "eight") in rows
    # what a comment raised on the old commit's line 6 asks: did that line change?
    assert file.touches(6, 6) and file.touches(2, 2)
    assert not file.touches(4, 5)


def test_added_deleted_and_binary_files_and_odd_paths(tmp_path):
    first, second = two_commits(
        tmp_path,
        {"gone.py": "x = 1\n", "same.txt": "s\n"},
        {"new dir/ünï code.py": "def f():\n    return 1\n", "same.txt": "s\n"},
    )
    repo = tmp_path / "r"
    git(repo, "rm", "-q", "gone.py")
    (repo / "img.bin").write_bytes(b"\x00\x01\x02")
    git(repo, "add", "img.bin")
    git(repo, "commit", "-qm", "binary")
    text = git(repo, "diff", *diffs.DIFF_ARGS, first, "HEAD")
    files = {f.path: f for f in diffs.parse(text)}
    assert files["gone.py"].status == "deleted" and files["gone.py"].removed == 1
    assert files["img.bin"].status == "binary" and files["img.bin"].hunks == []
    added = files["new dir/ünï code.py"]
    assert added.status == "added" and [line.new for line in added.hunks[0].lines] == [1, 2]


def test_split_rows_pair_removed_with_added_lines():
    (file,) = diffs.parse(
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,4 @@\n a\n-b\n-c\n+B\n+C\n+D\n"
    )
    rows = [
        (left.text if left else None, right.text if right else None)
        for left, right in diffs.split_rows(file.hunks[0])
    ]
    assert rows == [("a", "a"), ("b", "B"), ("c", "C"), (None, "D")]


def test_the_patch_hash_changes_with_the_change_only():
    patch = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    other = patch.replace("+b", "+c")
    assert diffs.parse(patch)[0].patch_hash == diffs.parse(patch)[0].patch_hash
    assert diffs.parse(patch)[0].patch_hash != diffs.parse(other)[0].patch_hash


def test_a_no_newline_marker_and_garbage_are_skipped():
    text = (
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n"
    )
    (file,) = diffs.parse(text)
    assert [(line.kind, line.text) for line in file.hunks[0].lines] == [("-", "a"), ("+", "b")]
    assert diffs.parse("not a diff at all") == []


TEN = "".join(f"line {n}\n" for n in range(1, 11))


def test_an_insertion_inside_a_range_touches_it_and_shifts_the_lines_below(tmp_path):
    """Under -U0 a pure insertion (``@@ -4,0 +8 @@``) has no old line: it sits after
    the line its header names."""
    lines = TEN.splitlines(keepends=True)
    after = "".join(["new a\n", "new b\n", "new c\n", *lines[:4], "inserted\n", *lines[4:]])
    first, second = two_commits(tmp_path, {"a.txt": TEN}, {"a.txt": after})
    change = diffs.changes_between(tmp_path / "r", old=first, new=second)["a.txt"]
    assert [(h.old_start, h.old_count, h.new_count) for h in change.hunks] == [(0, 0, 3), (4, 0, 1)]
    assert change.touches(3, 6)  # a comment on lines 3-6: the insertion is inside it
    assert change.touches(4, 4)  # right after its last line
    assert not change.touches(5, 9) and not change.touches(1, 3)
    # lines the change leaves alone are where they were, shifted by what came before
    assert [change.new_number(n) for n in (1, 4, 5, 8, 10)] == [4, 7, 9, 12, 14]


def test_new_numbers_past_removed_and_replaced_lines(tmp_path):
    lines = TEN.splitlines(keepends=True)
    after = "".join([lines[0], *lines[3:6], "six\n", "six b\n", *lines[7:]])  # 2-3 gone, 7 x2
    first, second = two_commits(tmp_path, {"a.txt": TEN}, {"a.txt": after})
    change = diffs.changes_between(tmp_path / "r", old=first, new=second)["a.txt"]
    assert not change.touches(4, 6) and change.touches(7, 7) and change.touches(2, 2)
    assert [change.new_number(n) for n in (1, 4, 6, 8, 10)] == [1, 2, 4, 7, 9]
