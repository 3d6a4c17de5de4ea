"""``fleet_bench review``: the review workspace on a large change: the server time of a
task page whose diff changes N lines over many files (the first screen: the first
files rendered, the rest and the large ones loaded when opened), and of one file
loaded on demand."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fleet.bench.gitbench import _git
from fleet.bench.heartbeat import INHERIT, _run_module, bench_site

TARGETS = {"page_ms": 1000}  # "a 5,000-line diff opens in under a second"


def make_change(clone: Path, *, lines: int, files: int) -> str:
    """A repository whose branch ``feat/R-1`` changes ``lines`` lines over ``files``
    Python files (half of them edited, half new); returns the branch head."""
    _git(clone.parent, "init", "-q", "-b", "main", str(clone))
    per_file = max(lines // files, 1)
    for n in range(files // 2):
        body = "".join(f"def f_{n}_{i}(x):\n    return x + {i}\n" for i in range(per_file))
        (clone / "pkg").mkdir(exist_ok=True)
        (clone / "pkg" / f"mod_{n}.py").write_text(body)
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "base")
    _git(clone, "checkout", "-q", "-b", "feat/R-1")
    for n in range(files // 2):  # every other function edited: a removed and an added line
        path = clone / "pkg" / f"mod_{n}.py"
        text = path.read_text().splitlines(keepends=True)
        for i in range(1, len(text), 4):
            text[i] = text[i].replace("return x +", "return x * 2 +")
        path.write_text("".join(text))
    for n in range(files - files // 2):
        body = "".join(
            f'def g_{n}_{i}(items):\n    """Sum {i}."""\n    return sum(items) + {i}\n'
            for i in range(per_file // 3)
        )
        (clone / "pkg" / f"new_{n}.py").write_text(body)
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "R-1: a large change")
    return _git(clone, "rev-parse", "HEAD")


def run(
    *,
    lines: int = 5000,
    files: int = 40,
    database_url: str | None = None,
    progress=print,
    redis_url: str | None = INHERIT,
) -> dict:
    results: dict = {"cpus": os.cpu_count()}
    with bench_site("fleet-bench-review-", database_url, results, progress, redis_url) as (
        workdir,
        env,
    ):
        clone = workdir / "clone"
        progress(f"a change of about {lines:,} lines over {files} files …")
        head = make_change(clone, lines=lines, files=files)
        progress("rendering the task page …")
        results["page"] = json.loads(
            _run_module(
                ["-m", "fleet.bench.seed", "review", "--repo", str(clone), "--head", head],
                env,
            )
        )
    results["targets"] = TARGETS
    results["met"] = {"page_ms": results["page"]["page_ms"] <= TARGETS["page_ms"]}
    return results


def table(results: dict) -> str:
    p = results["page"]
    ok = "met" if results["met"]["page_ms"] else "MISSED"
    return "\n".join(
        [
            f"fleet_bench review: {results['database']}, {results['cpus']} CPUs",
            f"a task whose diff changes {p['changed_lines']:,} lines in {p['files']} files, "
            f"{p['findings']} findings, {p['comments']} comments",
            f"  task page, first screen (server time)  {p['page_ms']:>8.1f} ms  "
            f"target ≤ {TARGETS['page_ms']} ms: {ok}  ({p['page_bytes'] / 1024:.0f} KiB, "
            f"{p['rendered_files']} files rendered, the rest on demand)",
            f"  one file loaded on demand              {p['file_ms']:>8.1f} ms",
            f"  the whole diff rendered at once        {p['all_ms']:>8.1f} ms  (for comparison)",
        ]
    )
