"""Path globs as tasks declare them: ``src/**/*.py``, ``docs/*``, ``README.md``."""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"  # a directory means everything under it
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(path: str, pattern: str) -> bool:
    """Whether a repository path matches a glob (``**`` spans directories, ``*`` and
    ``?`` stay within one; a trailing ``/`` means the whole directory)."""
    return bool(_compile(pattern).match(path.lstrip("/")))


def outside(paths: list[str], patterns: list[str]) -> list[str]:
    """The paths no pattern covers (all of them when there are no patterns)."""
    return [p for p in paths if not any(matches(p, g) for g in patterns)]
