"""The stale-base report: what merging a branch's *tree* over main would undo.

Two kinds, both about work the task never touched:

- **lost**: what main gained after the fork (lines, a binary or empty file main added
  or changed, a file mode main changed) that the tree lacks, so merging deletes it;
- **resurrected**: lines (or a binary or empty file) main removed after the fork that
  the tree still has, so merging brings them back.

Every named commit is in ``base..main``: the one that gave main the line as main has
it (for a lost line) or that removed it (for a resurrected one). Names come from
replaying ``git log -p --no-renames --first-parent base..main`` over the lines
(a rename is a delete plus an add, as in the diffs the report is built from), never
from ``git blame``, which follows renames into history older than the fork.

Cost: five git processes at most (rev-parse, merge-base, three ``diff -U0``) and one
path-limited ``git log -p`` when there is something to name; reports are cached on
(repository, main tip, branch tip), which never change meaning.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from fleet.git.repo import FLEET_GIT_ENV, open_repo

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
TASK_KEY = re.compile(r"^([A-Z][A-Z0-9]*-\d+): ")
SHA = re.compile(r"^[0-9a-f]{40}$")
# Explicit prefixes, no renames, no external or text-converting diff drivers, whole
# repository paths: whatever the user's configuration says.
DIFF = [
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-U0",
]
EVERYWHERE = 10**12  # the length of the unknown rest of a file as it was at the fork
CACHE_SIZE = 256
MAX_PATHSPEC = 16


def _text(value: str) -> str:
    """Git output as text a page can show: undecodable bytes become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class Introduced:
    """A main commit after the fork (it introduced a lost line or removed a
    resurrected one)."""

    sha: str
    subject: str
    task_key: str | None


@dataclass
class LostHunk:
    """Lines main has (gained after the branch forked) that the branch's tree lacks.

    ``kind`` is ``lines``, or for what has no lines to show ``binary``, ``empty``
    (a whole file) or ``mode`` (main changed the file's mode; the tree has the old)."""

    path: str
    start: int  # first line number in main
    lines: list[str]
    commits: list[Introduced] = field(default_factory=list)
    whole_file: bool = False
    kind: str = "lines"

    @property
    def end(self) -> int:
        return self.start + len(self.lines) - 1


@dataclass
class ResurrectedHunk(LostHunk):
    """Lines main removed after the fork that the branch's tree still has (the task
    never touched them); ``start`` is a line number in the branch's tree and
    ``commits`` are the main commits that removed them."""


@dataclass
class StaleBase:
    main: str
    head: str
    base: str
    lost: list[LostHunk]
    resurrected: list[ResurrectedHunk]

    @property
    def red(self) -> bool:
        return bool(self.lost or self.resurrected)

    @property
    def lost_keys(self) -> list[str]:
        return sorted({c.task_key for h in self.lost for c in h.commits if c.task_key})

    @property
    def resurrected_keys(self) -> list[str]:
        return sorted({c.task_key for h in self.resurrected for c in h.commits if c.task_key})

    @property
    def resurrected_lines(self) -> int:
        return sum(len(h.lines) for h in self.resurrected if h.kind == "lines")

    def reason(self) -> str:
        """One line a lead reads: what merging the tree as it is would do."""
        parts = []
        if self.lost:
            where = ", ".join(f"{h.path}:{h.start}" for h in self.lost[:3])
            keys = f" from {', '.join(self.lost_keys)}" if self.lost_keys else ""
            parts.append(
                f"merging would delete {len(self.lost)} hunk(s) main gained ({where}){keys}"
            )
        if self.resurrected:
            files = len([h for h in self.resurrected if h.kind != "lines"])
            lines = self.resurrected_lines
            what = f"{lines} line{'s' if lines != 1 else ''}" if lines else ""
            if files:
                what += f"{' and ' if what else ''}{files} file{'s' if files != 1 else ''}"
            keys = f" in {', '.join(self.resurrected_keys)}" if self.resurrected_keys else ""
            parts.append(f"merging would bring back {what} main removed{keys}")
        return "; ".join(parts)


# --- parsing ``git diff`` / ``git log -p`` output -------------------------------


@dataclass
class _FileDiff:
    path: str
    new_file: bool = False
    deleted: bool = False
    binary: bool = False
    old_mode: str = ""
    new_mode: str = ""
    # (old_start, old_count, new_start, new_count, removed lines, added lines)
    hunks: list[tuple[int, int, int, int, list[str], list[str]]] = field(default_factory=list)


def _unquote(quoted: str) -> str:
    """A C-quoted git path (``"a/x\\ty"``) without its quotes and escapes."""
    raw, i, body = bytearray(), 0, quoted[1:-1]
    escapes = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567":
                raw.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            raw.append(escapes.get(nxt, ord(nxt)))
            i += 2
            continue
        raw.extend(char.encode("utf-8", "surrogateescape"))
        i += 1
    return _text(raw.decode("utf-8", "surrogateescape"))


def _diff_path(line: str) -> str:
    """The path of ``diff --git a/P b/P`` (the same on both sides: no renames)."""
    rest = line[len("diff --git ") :]
    if rest.startswith('"'):
        end = rest.index('" ', 1) if '" ' in rest else len(rest)
        return _unquote(rest[: end + 1])[2:]
    return rest[2 : 2 + (len(rest) - 5) // 2]


def _parse(diff: str) -> list[_FileDiff]:
    """Files and ``-U0`` hunks of a diff; in a ``git log`` the commits are separated
    by lines starting with NUL, which end the current file."""
    files: list[_FileDiff] = []
    current: _FileDiff | None = None
    removed: list[str] = []
    added: list[str] = []
    header = False  # between "diff --git" and the first "@@"
    for line in diff.split("\n"):  # not splitlines(): \x0c or \u2028 are inside lines
        first = line[:1]
        if not header and current is not None:
            if first == "-":
                removed.append(line[1:])
                continue
            if first == "+":
                added.append(line[1:])
                continue
        if line.startswith("@@") and current is not None:
            header = False
            match = HUNK.match(line)
            if match:
                removed, added = [], []
                a, b, c, d = match.groups()
                current.hunks.append(
                    (int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d))
                    + (removed, added)
                )
        elif line.startswith("diff --git "):
            current = _FileDiff(_diff_path(line))
            files.append(current)
            header = True
        elif first == "\0":
            current, header = None, False
        elif header and current is not None:
            if line.startswith("new file mode "):
                current.new_file, current.new_mode = True, line[14:]
            elif line.startswith("deleted file mode "):
                current.deleted, current.old_mode = True, line[18:]
            elif line.startswith("old mode "):
                current.old_mode = line[9:]
            elif line.startswith("new mode "):
                current.new_mode = line[9:]
            elif line.startswith("Binary files ") or line == "GIT binary patch":
                current.binary = True
            elif line.startswith("index ") and " " in line[6:]:
                mode = line.rsplit(" ", 1)[1]
                current.old_mode = current.old_mode or mode
                current.new_mode = current.new_mode or mode
    return files


def _by_path(diff: str) -> dict[str, _FileDiff]:
    return {f.path: f for f in _parse(diff)}


def _removed_lines(f: _FileDiff) -> dict[int, str]:
    """Old-side line number → text of every line the diff removes."""
    return {a + i: text for a, _, _, _, rem, _ in f.hunks for i, text in enumerate(rem)}


def _added_numbers(f: _FileDiff) -> set[int]:
    return {n for _, _, c, d, _, _ in f.hunks for n in range(c, c + d)}


def _added_lines(f: _FileDiff) -> dict[int, str]:
    return {c + i: text for _, _, c, _, _, add in f.hunks for i, text in enumerate(add)}


def _old_number(f: _FileDiff | None, new: int) -> int | None:
    """The old-side line a new-side line is unchanged from, or None if the diff added
    it (``f`` None: the file is unchanged)."""
    if f is None:
        return new
    if f.new_file:
        return None
    delta = 0
    for a, b, c, d, _, _ in f.hunks:
        if d and c <= new < c + d:
            return None
        # Where the hunk ends on each side (a count of 0 means "after line a / c").
        old_end, new_end = (a + b if b else a + 1), (c + d if d else c + 1)
        if new < new_end:
            break
        delta = old_end - new_end
    return new + delta


# --- replaying base..main over the lines -----------------------------------------


class _Replay:
    """Who gave main each of its lines, and who removed each line of the fork, for
    some paths: ``git log -p`` of base..main applied commit by commit to runs of
    lines (origin commit, or None with the line number at the fork)."""

    def __init__(
        self,
        log: str,
        commits: dict[str, Introduced],
        wanted: dict[str, set[str]],
        files: set[str],
    ):
        self.runs: dict[str, list[list]] = {}
        self.removals: dict[str, list[tuple[int, int, Introduced]]] = {}
        self.last: dict[str, Introduced] = {}  # the last commit to touch each path
        self.last_mode: dict[str, Introduced] = {}
        # For lines the diffs and the replay pair up differently (repeated lines): the
        # last commit that added, or removed, a line of that text.
        self.added_text: dict[tuple[str, str], Introduced] = {}
        self.removed_text: dict[tuple[str, str], Introduced] = {}
        self._starts: dict[str, list[int]] = {}
        self._removal_starts: dict[str, list[int]] = {}
        paths = set(wanted) | files
        for chunk in log.split("\0")[1:]:
            commit = commits[chunk[:40]]
            # Only the wanted files' sections are parsed: the log holds every file.
            for section in chunk.split("\ndiff --git ")[1:]:
                path = _diff_path("diff --git " + section[: section.find("\n")])
                if path in paths:
                    for f in _parse("diff --git " + section):
                        self._apply(f, commit, wanted.get(f.path, set()))

    def _apply(self, f: _FileDiff, commit: Introduced, wanted: set[str]) -> None:
        path = f.path
        self.last[path] = commit
        if f.old_mode and f.new_mode and f.old_mode != f.new_mode:
            self.last_mode[path] = commit
        runs = self.runs.get(path)
        if f.new_file or runs is None:
            runs = [] if f.new_file else [[None, 1, EVERYWHERE]]
            self.runs[path] = runs
        for a, b, _, d, rem, add in reversed(f.hunks):
            for run in _splice(runs, a if b == 0 else a - 1, b, [commit, 0, d] if d else None):
                if run[0] is None:
                    self.removals.setdefault(path, []).append((run[1], run[2], commit))
            for text in add:
                if text in wanted:
                    self.added_text[path, text] = commit
            for text in rem:
                if text in wanted:
                    self.removed_text[path, text] = commit

    def introduced(self, path: str, number: int, text: str) -> Introduced | None:
        """The commit that gave main's line ``number`` of ``path``."""
        if path not in self._starts:
            starts, at = [], 1
            for run in self.runs.get(path, []):
                starts.append(at)
                at += run[2]
            self._starts[path] = starts
            self.runs.setdefault(path, [])
        i = bisect_right(self._starts[path], number) - 1
        origin = self.runs[path][i][0] if i >= 0 else None  # no runs: the path is unseen
        return origin or self.added_text.get((path, text)) or self.last.get(path)

    def removed(self, path: str, number: int, text: str) -> Introduced | None:
        """The commit that removed line ``number`` (at the fork) of ``path``."""
        if path not in self._removal_starts:
            self.removals.setdefault(path, []).sort(key=lambda r: r[0])
            self._removal_starts[path] = [r[0] for r in self.removals[path]]
        ranges = self.removals[path]
        i = bisect_right(self._removal_starts[path], number) - 1
        if i >= 0 and number < ranges[i][0] + ranges[i][1]:
            return ranges[i][2]
        return self.removed_text.get((path, text)) or self.last.get(path)


def _splice(runs: list[list], pos: int, count: int, insert: list | None) -> list[list]:
    """Replace ``count`` lines from index ``pos`` with ``insert``; the removed runs."""
    i, offset = 0, 0
    while i < len(runs) and offset + runs[i][2] <= pos:
        offset += runs[i][2]
        i += 1
    if i < len(runs) and pos > offset:
        origin, first, length = runs[i]
        cut = pos - offset
        runs[i : i + 1] = [[origin, first, cut], [origin, first + cut, length - cut]]
        i += 1
    removed, j, left = [], i, count
    while left > 0 and j < len(runs):
        origin, first, length = runs[j]
        if length <= left:
            removed.append(runs[j])
            left -= length
            j += 1
        else:
            removed.append([origin, first, left])
            runs[j] = [origin, first + left, length - left]
            left = 0
    del runs[i:j]
    if insert:
        runs.insert(i, insert)
    return removed


# --- the report --------------------------------------------------------------------

_cache: OrderedDict[tuple[str, str, str], StaleBase] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _cached(key: tuple[str, str, str]) -> StaleBase | None:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    return None


def stale_base(repo_path: str | Path, *, main: str, head: str) -> StaleBase:
    """What merging ``head``'s tree over ``main`` would undo of main's work since the
    fork (see the module). Both kinds are empty when main has not moved. The hunks
    of a cached report are shared: read them, do not change them."""
    where = str(Path(repo_path).resolve())
    if SHA.match(main) and SHA.match(head):  # commits: a cached report needs no git
        cached = _cached((where, main, head))
        if cached is not None:
            return cached
    with open_repo(repo_path, "building the stale-base report") as repo:
        git = repo.git
        main_sha, head_sha = git.rev_parse(main, head).split()
        key = (where, main_sha, head_sha)
        cached = _cached(key)
        if cached is not None:
            return cached
        report = _build(git, main_sha, head_sha)
    with _cache_lock:
        _cache[key] = report
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return report


def _build(git, main: str, head: str) -> StaleBase:
    base = git.merge_base(main, head)
    report = StaleBase(main=main, head=head, base=base, lost=[], resurrected=[])
    if base == main:
        return report

    def diff(a: str, b: str) -> dict[str, _FileDiff]:
        return _by_path(_text(git.diff(*DIFF, a, b, env=FLEET_GIT_ENV)))

    gained = diff(base, main)  # what main did since the fork
    if not gained:
        return report
    tree = diff(main, head)  # what merging the tree does to main
    candidates = [p for p in tree if p in gained]
    if not candidates:
        return report
    own = diff(base, head)  # what the task did

    lost: list[tuple[str, int, str]] = []  # (path, line in main, text)
    back: list[tuple[str, int, int, str]] = []  # (path, line in tree, line at fork, text)
    files: list[tuple[str, str, str]] = []  # (path, kind, label) of lost files and modes
    back_files: list[tuple[str, str]] = []  # (path, kind) of resurrected files
    for path in candidates:
        ours, theirs, mine = gained[path], tree[path], own.get(path)
        untouched = mine is None
        if ours.binary or (not ours.hunks and (ours.new_file or ours.deleted)):
            kind = "binary" if ours.binary else "empty"
            if not untouched:
                pass
            elif ours.deleted and theirs.new_file:
                back_files.append((path, kind))
            elif not ours.deleted and (theirs.binary or (ours.new_file and theirs.deleted)):
                files.append((path, kind, f"({kind} file)"))
        if (
            (untouched or mine.old_mode == mine.new_mode)
            and not ours.new_file
            and not ours.deleted
            and ours.old_mode != ours.new_mode
            and theirs.old_mode == ours.new_mode
            and theirs.new_mode == ours.old_mode
        ):
            files.append((path, "mode", f"(mode {theirs.old_mode} → {theirs.new_mode})"))
        main_added = _added_numbers(ours)
        for number, text in _removed_lines(theirs).items():
            if number in main_added:
                lost.append((path, number, text))
        main_removed = _removed_lines(ours)
        if main_removed:
            for number, text in _added_lines(theirs).items():
                at_fork = _old_number(mine, number)
                if at_fork is not None and at_fork in main_removed:
                    back.append((path, number, at_fork, text))

    if not (lost or back or files or back_files):
        return report
    replay = _replay(git, base, main, lost, back, {p for p, *_ in files + back_files})
    for path, number, text in lost:
        commit = replay.introduced(path, number, text)
        _extend(report.lost, LostHunk, path, number, text, commit)
    for path, number, at_fork, text in back:
        commit = replay.removed(path, at_fork, text)
        _extend(report.resurrected, ResurrectedHunk, path, number, text, commit)
    for path, kind, label in files:
        commit = (replay.last_mode if kind == "mode" else replay.last).get(path)
        report.lost.append(
            LostHunk(path, 1, [label], [commit] if commit else [], whole_file=True, kind=kind)
        )
    for path, kind in back_files:
        commit = replay.last.get(path)
        report.resurrected.append(
            ResurrectedHunk(
                path, 1, [f"({kind} file)"], [commit] if commit else [], True, kind=kind
            )
        )
    order = {"lines": 0, "binary": 1, "empty": 1, "mode": 2}
    report.lost.sort(key=lambda h: (h.path, order[h.kind], h.start))
    report.resurrected.sort(key=lambda h: (h.path, order[h.kind], h.start))
    return report


def _extend(hunks: list, kind: type, path: str, number: int, text: str, commit) -> None:
    """Add a line, to the previous hunk when it is the next line of the same file."""
    last = hunks[-1] if hunks else None
    if last is not None and last.path == path and last.end == number - 1:
        last.lines.append(text)
    else:
        last = kind(path, number, [text])
        hunks.append(last)
    if commit is not None and all(c.sha != commit.sha for c in last.commits):
        last.commits.append(commit)


def _replay(git, base: str, main: str, lost, back, file_paths: set[str]) -> _Replay:
    """One path-limited ``git log -p`` of base..main (first parents: main's own
    history; a merge counts as its diff against main before it)."""
    wanted: dict[str, set[str]] = {}
    for path, _, text in lost:
        wanted.setdefault(path, set()).add(text)
    for path, _, _, text in back:
        wanted.setdefault(path, set()).add(text)
    paths = sorted(set(wanted) | file_paths)
    # git matches every pathspec against every changed path of every commit: past a
    # few paths, reading the whole log and skipping other files is faster (tenfold at
    # 500 paths).
    pathspec = [f":(literal){p}" for p in paths] if len(paths) <= MAX_PATHSPEC else []
    out = _text(
        git.log(
            "--format=%x00%H %s",
            "-p",
            *DIFF,
            "--first-parent",
            "--diff-merges=first-parent",
            "--full-history",
            "--reverse",
            f"{base}..{main}",
            "--",
            *pathspec,
            env=FLEET_GIT_ENV,
        )
    )
    commits: dict[str, Introduced] = {}
    for chunk in out.split("\0")[1:]:
        first = chunk.split("\n", 1)[0]
        sha, _, subject = first.partition(" ")
        match = TASK_KEY.match(subject)
        commits[sha] = Introduced(sha, subject, match.group(1) if match else None)
    return _Replay(out, commits, wanted, file_paths)
