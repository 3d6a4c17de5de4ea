"""``fleet_bench git``: worktrees, the stale-base report and the merge queue on a
generated repository of realistic size (default 20,000 files, 10,000 commits,
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
from fleet.git import facts, worktrees
from fleet.git.repo import AUTHOR_ENV

TARGETS = {"worktree_ratio": 1.3, "stale_report_s": 1.0, "merge_p95_s": 3.0}


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


def generate(origin: Path, *, files: int, commits: int) -> None:
    """A bare repository: one commit adding ``files`` files over nested directories,
    then ``commits - 1`` commits each rewriting one of them (streamed to fast-import)."""
    _git(origin.parent, "init", "-q", "--bare", "-b", "main", str(origin))
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet"], cwd=origin, stdin=subprocess.PIPE, env={"PATH": _path()}
    )
    out = proc.stdin
    when = 1_700_000_000

    def data(text: str) -> bytes:
        raw = text.encode()
        return b"data %d\n" % len(raw) + raw + b"\n"

    out.write(b"commit refs/heads/main\nmark :1\n")
    out.write(b"committer Fleet <fleet@localhost> %d +0000\n" % when)
    out.write(data("initial import"))
    for n in range(files):
        out.write(b"M 100644 inline %s\n" % file_path(n).encode())
        out.write(data(f"# file {n}\nVALUE = {n}\n\n\ndef f{n}():\n    return VALUE\n"))
    for c in range(2, commits + 1):
        n = (c * 7919) % files
        out.write(b"commit refs/heads/main\nmark :%d\n" % c)
        out.write(b"committer Fleet <fleet@localhost> %d +0000\n" % (when + c))
        out.write(data(f"T-{c}: change {file_path(n)}"))
        out.write(b"from :%d\n" % (c - 1))
        out.write(b"M 100644 inline %s\n" % file_path(n).encode())
        body = f"# file {n}\nVALUE = {n}\n\n\ndef f{n}():\n    return VALUE + {c}\n# rev {c}\n"
        out.write(data(body))
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

        progress("stale-base report on a branch forked 200 commits ago …")
        stale = root / "wt" / "stale"
        _git(clone, "worktree", "add", "-q", "-b", "feat/STALE-1", str(stale), "origin/main~200")
        (stale / "NEW.md").write_text("a new file\n")
        _git(stale, "add", "NEW.md")
        _git(stale, "commit", "-q", "-m", "stale work")
        report_times, lost = [], []
        for _ in range(5):
            seconds, lost = _timed(
                lambda: facts.stale_base_report(clone, main="origin/main", head="feat/STALE-1")
            )
            report_times.append(seconds)

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
        "stale_report_s": round(max(report_times), 3),
        "stale_report_hunks": len(lost),
        "merges": len(queue["seconds"]),
        "merged": queue["merged"],
        "merge_median_s": round(statistics.median(queue["seconds"]), 3),
        "merge_p95_s": round(merge_p95, 3),
        "cleanup_median_s": round(statistics.median(queue["cleanup"] or [0]), 3),
        "targets": TARGETS,
        "met": {
            "worktree_ratio": ratio <= TARGETS["worktree_ratio"],
            "stale_report_s": max(report_times) <= TARGETS["stale_report_s"],
            "merge_p95_s": merge_p95 <= TARGETS["merge_p95_s"],
            "all_merged": queue["merged"] == merges,
        },
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
            f"stale-base report   {results['stale_report_s']} s, {results['stale_report_hunks']} "
            f"hunks (target <= {TARGETS['stale_report_s']} s) {mark[met['stale_report_s']]}",
            f"merge queue         {results['merged']}/{results['merges']} merged, median "
            f"{results['merge_median_s']} s, p95 {results['merge_p95_s']} s without the check "
            f"command (target <= {TARGETS['merge_p95_s']} s) {mark[met['merge_p95_s']]}; "
            f"worktree cleanup afterwards {results['cleanup_median_s']} s each",
        ]
    )


if __name__ == "__main__":  # pragma: no cover - a debugging aid
    print(table(run(files=int(sys.argv[1]), commits=int(sys.argv[2]), worktree_count=5, merges=3)))
