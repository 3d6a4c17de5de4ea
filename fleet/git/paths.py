"""Path globs as tasks declare them: ``src/**/*.py``, ``docs/*``, ``README.md``."""

from __future__ import annotations

import bisect
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


_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return pattern.endswith("/") or not _GLOB_CHARS.isdisjoint(pattern)


def literal_prefix(pattern: str) -> str:
    """The directory part of a glob before its first wildcard (``src/api/`` for
    ``src/api/**/*.py``): every match starts with it."""
    pattern = pattern.strip().lstrip("/")
    head = pattern
    for i, c in enumerate(pattern):
        if c in _GLOB_CHARS:
            head = pattern[:i]
            break
    return head[: head.rfind("/") + 1]


def expand(pattern: str, files: list[str]) -> list[str]:
    """The paths of ``files`` (sorted) a pattern covers. A literal path stands for
    itself even when no file has it yet (a task may declare a file it will create);
    a glob is matched only within the sorted range sharing its literal prefix, so
    expanding many globs against a large tree stays cheap."""
    pattern = pattern.strip().lstrip("/")
    if not is_glob(pattern):
        return [pattern]
    prefix = literal_prefix(pattern)
    regex = _compile(pattern)
    start = bisect.bisect_left(files, prefix)
    out = []
    for i in range(start, len(files)):
        path = files[i]
        if not path.startswith(prefix):
            break
        if regex.match(path):
            out.append(path)
    return out
