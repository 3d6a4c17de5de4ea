"""``fleet_bench git``: worktrees, the stale-base report and the merge queue on a
generated repository of realistic size and history (default 20,000 files, 10,000
commits of renames, binary, empty and mode changes, moved code and a changelog;
100 live worktrees)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet.bench.heartbeat import _run_module, bench_env
from fleet.git import facts, stale, worktrees
from fleet.git.repo import AUTHOR_ENV

TARGETS = {"worktree_ratio": 1.3, "stale_report_s": 1.0, "stale_ratio": 3.0, "merge_p95_s": 3.0}


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**AUTHOR_ENV, "PATH": _path()}
    )
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()[:500]}")
    return done.stdout.strip()


def _path() -> str:
    import os

    return os.environ.get("PATH", "/usr/bin:/bin")


def file_path(n: int) -> str:
    """The generated repository's n-th file (nested two directories deep)."""
    return f"src/pkg{n // 1000:02d}/mod{(n // 50) % 20:02d}/file{n:05d}.py"


def _initial(n: int) -> str:
    return f"# file {n}\nVALUE = {n}\n\n\ndef f{n}():\n    return VALUE\n"


def generate(origin: Path, *, files: int, commits: int) -> None:
    """A bare repository: one commit adding ``files`` files over nested directories and
    a changelog, then ``commits - 1`` commits of the kinds a real history has, in
    turn: a changelog entry (repeated blank lines), a rename (every other one with an
    edit), a binary file added or changed, a binary file deleted, an empty file added
    or deleted, a mode change, code moved between files, lines removed, and plain
    edits; a third of them on 20 hot files, edited again and again. Streamed to
    ``git fast-import``."""
    _git(origin.parent, "init", "-q", "--bare", "-b", "main", str(origin))
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet"], cwd=origin, stdin=subprocess.PIPE, env={"PATH": _path()}
    )
    out = proc.stdin
    when = 1_700_000_000
    names = [file_path(n) for n in range(files)]
    texts: dict[int, str] = {}
    modes: dict[int, str] = {}
    binaries: list[str] = []
    empties: list[str] = []
    entries: list[str] = []

    def data(content: str | bytes) -> bytes:
        raw = content.encode() if isinstance(content, str) else content
        return b"data %d\n" % len(raw) + raw + b"\n"

    def put(path: str, content: str | bytes, mode: str = "100644") -> None:
        out.write(b"M %s inline %s\n" % (mode.encode(), path.encode()))
        out.write(data(content))

    def text(n: int) -> str:
        return texts.get(n) or _initial(n)

    def changelog() -> str:
        return "# Changelog\n\n" + "".join(reversed(entries[-200:]))

    out.write(b"commit refs/heads/main\nmark :1\n")
    out.write(b"committer Fleet <fleet@localhost> %d +0000\n" % when)
    out.write(data("initial import"))
    for n in range(files):
        put(names[n], _initial(n))
    put("CHANGELOG.md", changelog())
    for c in range(2, commits + 1):
        n, m = (c * 7919) % files, (c * 104729 + 1) % files
        if c % 3 == 0:  # a third of the work lands on a few hot files, as in real projects
            n = (c * 7919) % min(files, 20)
        changes: list[tuple[str, str | bytes | None, str]] = []  # (path, content, mode)
        kind = c % 10
        if kind == 0:
            entries.append(f"## 1.{c}\n\n- change {c}\n\n")
            changes.append(("CHANGELOG.md", changelog(), "100644"))
            what = "changelog"
        elif kind == 1:
            old = names[n]
            names[n] = f"{file_path(n).rsplit('/', 1)[0]}/renamed/file{n:05d}_{c}.py"
            if c % 20 == 11:
                texts[n] = text(n) + f"# renamed in {c}\n"
            changes += [(old, None, ""), (names[n], text(n), modes.get(n, "100644"))]
            what = f"rename {old}"
        elif kind == 2:
            if binaries and c % 4 == 0:
                path = binaries[c % len(binaries)]
            else:
                path = f"assets/a{c}.bin"
                binaries.append(path)
            changes.append((path, b"\x89BIN\x00" + c.to_bytes(4, "big") * 64, "100644"))
            what = f"binary {path}"
        elif kind == 3 and len(binaries) > 2:
            path = binaries.pop(0)
            changes.append((path, None, ""))
            what = f"delete {path}"
        elif kind == 4:
            if len(empties) > 2 and c % 3 == 0:
                path = empties.pop(0)
                changes.append((path, None, ""))
            else:
                path = f"empty/e{c}/.keep"
                empties.append(path)
                changes.append((path, "", "100644"))
            what = f"empty {path}"
        elif kind == 5:
            modes[n] = "100644" if modes.get(n) == "100755" else "100755"
            changes.append((names[n], text(n), modes[n]))
            what = f"mode {names[n]}"
        elif kind == 6 and n != m and f"def f{n}()" in text(n):
            block = f"\n\ndef f{n}():\n    return VALUE\n"
            texts[n] = text(n).replace(block, "\n")
            texts[m] = text(m) + block
            changes += [
                (names[n], texts[n], modes.get(n, "100644")),
                (names[m], texts[m], modes.get(m, "100644")),
            ]
            what = f"move f{n} to {names[m]}"
        elif kind == 7 and f"VALUE = {n}\n" in text(n):
            texts[n] = text(n).replace(f"VALUE = {n}\n", "")
            changes.append((names[n], texts[n], modes.get(n, "100644")))
            what = f"remove VALUE from {names[n]}"
        else:
            texts[n] = text(n).replace("return VALUE", f"return VALUE + {c}", 1) + f"# rev {c}\n"
            changes.append((names[n], texts[n], modes.get(n, "100644")))
            what = f"change {names[n]}"
        out.write(b"commit refs/heads/main\nmark :%d\n" % c)
        out.write(b"committer Fleet <fleet@localhost> %d +0000\n" % (when + c))
        out.write(data(f"T-{c}: {what}"))
        out.write(b"from :%d\n" % (c - 1))
        for path, content, mode in changes:
            if content is None:
                out.write(b"D %s\n" % path.encode())
            else:
                put(path, content, mode)
    out.close()
    if proc.wait():
        raise RuntimeError("git fast-import failed")


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def run(
    *,
    files: int = 20_000,
    commits: int = 10_000,
    worktree_count: int = 100,
    merges: int = 20,
    behind: int = 400,
    progress=print,
) -> dict:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-git-"))
    try:
        origin, clone = root / "origin.git", root / "clone"
        progress(f"generating a repository: {files} files, {commits} commits …")
        gen_s, _ = _timed(lambda: generate(origin, files=files, commits=commits))
        _git(root, "clone", "-q", str(origin), str(clone))

        progress(f"creating {worktree_count} worktrees (Fleet's) and raw `git worktree add`s …")
        ours, raw = [], []
        for i in range(worktree_count):
            seconds, _ = _timed(
                lambda i=i: worktrees.create(
                    clone,
                    worktree=root / "wt" / f"T-{i}",
                    branch=f"feat/T-{i}",
                    remote="origin",
                    default="main",
                )
            )
            ours.append(seconds)
            if i % 5 == 0:
                seconds, _ = _timed(
                    lambda i=i: _git(
                        clone,
                        "worktree",
                        "add",
                        "-q",
                        "--no-track",
                        "-b",
                        f"raw/{i}",
                        str(root / "raw" / str(i)),
                        "origin/main",
                    )
                )
                raw.append(seconds)

        figures = _stale_report(root, clone, behind=min(behind, commits - 2), progress=progress)

        progress(f"merging {merges} tasks through the queue (check command `true`) …")
        queue = _merge_queue(root, clone, merges)
    finally:
        # Millions of small files: rm -rf is several times faster than shutil.rmtree.
        if subprocess.run(["rm", "-rf", str(root)], check=False).returncode:
            shutil.rmtree(root, ignore_errors=True)

    ratio = statistics.median(ours) / statistics.median(raw)
    merge_p95 = _p95(queue["seconds"])
    return {
        "files": files,
        "commits": commits,
        "generate_s": round(gen_s, 2),
        "worktrees": worktree_count,
        "worktree_median_s": round(statistics.median(ours), 3),
        "worktree_raw_median_s": round(statistics.median(raw), 3),
        "worktree_ratio": round(ratio, 3),
        **figures,
        "merges": len(queue["seconds"]),
        "merged": queue["merged"],
        "merge_median_s": round(statistics.median(queue["seconds"]), 3),
        "merge_p95_s": round(merge_p95, 3),
        "cleanup_median_s": round(statistics.median(queue["cleanup"] or [0]), 3),
        "targets": TARGETS,
        "met": {
            "worktree_ratio": ratio <= TARGETS["worktree_ratio"],
            "stale_report_s": figures["stale_report_s"] <= TARGETS["stale_report_s"],
            "stale_ratio": figures["stale_ratio"] <= TARGETS["stale_ratio"],
            "stale_named_after_fork": figures["stale_named_after_fork"],
            "merge_p95_s": merge_p95 <= TARGETS["merge_p95_s"],
            "all_merged": queue["merged"] == merges,
        },
    }


def _stale_report(root: Path, clone: Path, *, behind: int, progress) -> dict:
    """The stale-base report on a branch forked ``behind`` commits ago, cold (cache
    cleared) against the raw git work it cannot avoid, timed in the same run, and
    repeated (cached)."""
    progress(f"stale-base report on a branch forked {behind} commits ago …")
    wt = root / "wt" / "stale"
    _git(clone, "worktree", "add", "-q", "-b", "feat/STALE-1", str(wt), f"origin/main~{behind}")
    (wt / "NEW.md").write_text("a new file\n")
    (wt / "CHANGELOG.md").write_text((wt / "CHANGELOG.md").read_text() + "\nthe task's note\n")
    _git(wt, "add", "-A")
    _git(wt, "commit", "-q", "-m", "stale work")
    main, head = _git(clone, "rev-parse", "origin/main", "feat/STALE-1").split()
    base = _git(clone, "merge-base", main, head)

    def raw() -> None:
        for args in (["log", "-p", f"{base}..{main}"], ["diff", main, head]):
            subprocess.run(["git", *args], cwd=clone, capture_output=True, check=True)

    cold, raws, report = [], [], None
    for _ in range(5):
        raws.append(_timed(raw)[0])
        stale.clear_cache()
        seconds, report = _timed(
            lambda: facts.stale_base(clone, main="origin/main", head="feat/STALE-1")
        )
        cold.append(seconds)
    cached = [
        _timed(lambda: facts.stale_base(clone, main="origin/main", head="feat/STALE-1"))[0]
        for _ in range(20)
    ]
    # Given commits rather than names, a repeat runs no git at all.
    cached_shas = [
        _timed(lambda: facts.stale_base(clone, main=main, head=head))[0] for _ in range(20)
    ]
    ratio = statistics.median(cold) / statistics.median(raws)
    after_fork = set(_git(clone, "rev-list", f"{base}..{main}").split())
    named = {c.sha for h in report.lost + report.resurrected for c in h.commits}
    return {
        "stale_behind": behind,
        "stale_report_s": round(statistics.median(cold), 3),
        "stale_report_max_s": round(max(cold), 3),
        "stale_raw_git_s": round(statistics.median(raws), 3),
        "stale_ratio": round(ratio, 2),
        "stale_cached_ms": round(statistics.median(cached) * 1000, 2),
        "stale_cached_shas_ms": round(statistics.median(cached_shas) * 1000, 3),
        "stale_named_after_fork": named <= after_fork,
        "stale_report_hunks": len(report.lost),
        "stale_report_lines": sum(len(h.lines) for h in report.lost),
        "stale_resurrected_hunks": len(report.resurrected),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def _merge_queue(root: Path, clone: Path, merges: int) -> dict:
    """The real worker code over a throwaway SQLite database, in its own process."""
    env = bench_env(root, f"sqlite:///{root / 'bench.sqlite3'}")
    _run_module(["manage.py", "migrate", "--no-input", "-v", "0"], env)
    out = _run_module(
        ["-m", "fleet.bench.seed", "merges", "--repo", str(clone), "--count", str(merges)],
        env,
        timeout=3600,
    )
    return json.loads(out)


def table(results: dict) -> str:
    met = results["met"]
    mark = {True: "ok", False: "MISSED"}
    return "\n".join(
        [
            f"fleet_bench git: {results['files']} files, {results['commits']} commits, "
            f"{results['worktrees']} worktrees (generated in {results['generate_s']} s)",
            f"worktree creation   median {results['worktree_median_s']} s vs raw "
            f"`git worktree add` {results['worktree_raw_median_s']} s: "
            f"{results['worktree_ratio']}x (target <= {TARGETS['worktree_ratio']}x) "
            f"{mark[met['worktree_ratio']]}",
            f"stale-base report   {results['stale_report_s']} s (median of 5 cold, max "
            f"{results['stale_report_max_s']} s) on a fork {results['stale_behind']} commits "
            f"back: {results['stale_report_hunks']} lost hunks ({results['stale_report_lines']} "
            f"lines), {results['stale_resurrected_hunks']} resurrected (target <= "
            f"{TARGETS['stale_report_s']} s) {mark[met['stale_report_s']]}",
            f"  vs raw git        `git log -p base..main` + `git diff main head` "
            f"{results['stale_raw_git_s']} s: {results['stale_ratio']}x (target <= "
            f"{TARGETS['stale_ratio']}x) {mark[met['stale_ratio']]}; cached repeat "
            f"{results['stale_cached_ms']} ms by name ({results['stale_cached_shas_ms']} ms by "
            f"commit); every named commit after the fork: "
            f"{mark[met['stale_named_after_fork']]}",
            f"merge queue         {results['merged']}/{results['merges']} merged, median "
            f"{results['merge_median_s']} s, p95 {results['merge_p95_s']} s without the check "
            f"command (target <= {TARGETS['merge_p95_s']} s) {mark[met['merge_p95_s']]}; "
            f"worktree cleanup afterwards {results['cleanup_median_s']} s each",
        ]
    )


if __name__ == "__main__":  # pragma: no cover - a debugging aid
    print(table(run(files=int(sys.argv[1]), commits=int(sys.argv[2]), worktree_count=5, merges=3)))
