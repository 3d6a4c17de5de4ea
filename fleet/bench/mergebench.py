"""``fleet_bench merges``: how long a wave of approved tasks takes to reach main
through the merge queue, one at a time and in batches, with a check of known length
and some tasks that break it; and whether what landed is right (every merged task on
main exactly once, none of the failing ones)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from fleet.bench.heartbeat import _run_module, bench_env
from fleet.git import repo as gitrepo

TARGETS = {"ratio": 0.4}


def run(
    *, tasks: int = 10, check_seconds: float = 5, failing: int = 1, batch: int = 5, progress=print
) -> dict:
    runs = {}
    for size in (1, batch):
        progress(
            f"draining {tasks} tasks ({failing} failing, a {check_seconds:g} s check) "
            f"with batch size {size} …"
        )
        runs[size] = _drain(tasks=tasks, check_seconds=check_seconds, failing=failing, size=size)
    serial, batched = runs[1], runs[batch]
    ratio = batched["seconds"] / serial["seconds"]
    correct = all(r["correct"] for r in runs.values())
    return {
        "tasks": tasks,
        "check_seconds": check_seconds,
        "failing": failing,
        "failing_keys": serial["failing"],
        "batch": batch,
        "serial_s": round(serial["seconds"], 2),
        "serial_checks": serial["checks"],
        "batched_s": round(batched["seconds"], 2),
        "batched_checks": batched["checks"],
        "ratio": round(ratio, 3),
        "serial_cleanup_s": round(serial["cleanup_seconds"], 2),
        "batched_cleanup_s": round(batched["cleanup_seconds"], 2),
        "merged": {size: r["merged"] for size, r in runs.items()},
        "problems": [p for r in runs.values() for p in r["problems"]],
        "met": {"ratio": ratio <= TARGETS["ratio"], "correct": correct},
    }


def _drain(*, tasks: int, check_seconds: float, failing: int, size: int) -> dict:
    """One run in a fresh repository and database, in its own process."""
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-merges-"))
    try:
        clone = root / "clone"
        gitrepo.create_with_origin(
            origin=root / "origin.git",
            clone=clone,
            files={"README.md": "# bench\n", "src/__init__.py": ""},
            message="initial",
        )
        env = bench_env(root, f"sqlite:///{root / 'bench.sqlite3'}")
        _run_module(["manage.py", "migrate", "--no-input", "-v", "0"], env)
        args = ["--repo", str(clone), "--count", str(tasks), "--failing", str(failing)]
        args += ["--check-seconds", str(check_seconds), "--batch", str(size)]
        out = _run_module(["-m", "fleet.bench.seed", "drain", *args], env, timeout=7200)
        return json.loads(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(results: dict) -> str:
    mark = {True: "ok", False: "MISSED"}
    met = results["met"]
    return "\n".join(
        [
            f"fleet_bench merges: {results['tasks']} tasks, {results['failing']} failing "
            f"({', '.join(results['failing_keys'])}), a {results['check_seconds']:g} s check",
            f"batch size 1        {results['serial_s']} s to drain the queue, "
            f"{results['serial_checks']} checks (worktree cleanup after: "
            f"{results['serial_cleanup_s']} s)",
            f"batch size {results['batch']:<8} {results['batched_s']} s to drain the queue, "
            f"{results['batched_checks']} checks (worktree cleanup after: "
            f"{results['batched_cleanup_s']} s)",
            f"ratio               {results['ratio']}x (target <= {TARGETS['ratio']}x) "
            f"{mark[met['ratio']]}",
            f"correctness         every merged task on main exactly once, no failing one: "
            f"{mark[met['correct']]}"
            + "".join(f"\n  {problem}" for problem in results["problems"]),
        ]
    )
