"""Repository paths: the one spelling of each (``canonical``) and the globs tasks
declare (``src/**/*.py``, ``docs/*``, ``README.md``)."""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable

MAX_LENGTH = 500

# What no repository path holds: control characters (C0, DEL, C1), the Unicode line
# and paragraph separators (a planner's textarea splits lines on them, as on \n),
# lone surrogates (no UTF-8 for them: the database refuses them) and the backslash
# (a Windows separator: git's paths use /). As regex class contents, shared by the
# check below and the patterns the API's schema publishes.
_NEVER = r"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\\"
# The same, as the schema states it: without the surrogates. A JSON Schema string is
# Unicode code points, where a lone surrogate is no character at all (a valid JSON
# text cannot carry one), and the regex engines schema tools validate with (Rust's)
# cannot name them: a pattern that does is dropped by those tools, unenforced.
_NEVER_STATED = _NEVER.replace(r"\ud800-\udfff", "")
# The whitespace str.isspace() knows that _NEVER leaves in: none at either end.
_SPACES = r" \xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
_FORBIDDEN = re.compile(f"[{_NEVER}]")
_GLOB_CHARS = frozenset("*?[")


class PathRefused(ValueError):
    """Not a path to something in the repository; the message names the path."""


def _shown(path: str) -> str:
    return repr(path) if len(path) <= 80 else repr(path[:80]) + "…"


def canonical(path: str, *, glob: bool = False) -> str:
    """The one spelling of a repository path, the form Fleet stores and compares
    (claims, findings, declared paths), or ``PathRefused`` saying why it is none.

    POSIX normalization without touching the disk: empty and ``.`` segments go
    (``./a//b/./c`` is ``a/b/c``). Refused: an empty path or the root itself (``.``),
    an absolute path, any ``..`` segment (even one that would stay inside: there is
    one spelling), a ``.git`` segment at any depth in any case (also ``.git.`` and
    ``.git ``, which Windows file systems take for ``.git``: git itself never tracks
    such a path), control characters, line separators, lone surrogates, backslashes,
    whitespace at either end, and more than ``MAX_LENGTH`` characters.

    ``glob``: the path may be a glob (``*``, ``?``, ``[`` kept as they are) or a
    directory (a trailing ``/``, kept; ``src/.`` is ``src/``), as declared paths are.
    Without it the path names one file, and a glob character or a trailing ``/`` or
    ``/.`` is refused: a claim of a pattern would slip past the exact-path conflict
    check. Whatever matches ``FILE_PATTERN`` (``GLOB_PATTERN`` with ``glob``) comes
    back unchanged, and nothing else does.
    """
    if not isinstance(path, str):
        raise PathRefused("a path is a string")
    shown = _shown(path)
    if not path:
        raise PathRefused("a path cannot be empty")
    if len(path) > MAX_LENGTH:
        raise PathRefused(f"{shown} is longer than {MAX_LENGTH} characters")
    bad = _FORBIDDEN.search(path)
    if bad and bad[0] == "\\":
        raise PathRefused(f"{shown} has a backslash: separate directories with /")
    if bad:
        raise PathRefused(f"{shown} has a control character, a line separator or a lone surrogate")
    if path[0].isspace() or path[-1].isspace():
        raise PathRefused(f"{shown} begins or ends with whitespace")
    if path.startswith("/"):
        raise PathRefused(
            f"{shown} reaches outside the repository: use a path relative to its root"
        )
    parts = path.split("/")
    directory = len(parts) > 1 and parts[-1] in ("", ".")
    segments = [part for part in parts if part not in ("", ".")]
    if ".." in segments:
        raise PathRefused(
            f"{shown} reaches outside the repository (..): use a path relative to its root"
        )
    if any(part.rstrip(". ").lower() == ".git" for part in segments):
        raise PathRefused(f"{shown} is inside .git, git's own directory, not the repository's")
    if not segments:
        raise PathRefused(f"{shown} is the repository's root, not a path in it")
    if not glob and (directory or not _GLOB_CHARS.isdisjoint(path)):
        raise PathRefused(f"name files one by one, not a glob or directory: {shown}")
    return "/".join(segments) + ("/" if directory else "")


def _pattern(*, glob: bool) -> str:
    # An ECMA-262 regex (as JSON Schema and OpenAPI take it; Python's re reads it the
    # same): exactly the strings ``canonical`` returns unchanged. Only escapes and
    # explicit classes, no \s or \w, whose sets differ between the two engines. An
    # ECMA-262 engine reads code points with the u flag; without it, a character past
    # U+FFFF is two surrogates, which the class lets through as one character would.
    char = f"[^/{_NEVER_STATED}" + ("]" if glob else r"*?\[]")
    return (
        "^"
        f"(?!.{{{MAX_LENGTH + 1}}})"  # no more than MAX_LENGTH characters
        f"(?![{_SPACES}])(?!.*[{_SPACES}]$)"  # no whitespace at either end
        r"(?!(?:.*/)?\.\.?(?:/|$))"  # no . or .. segment
        r"(?!(?:.*/)?\.[Gg][Ii][Tt][. ]*(?:/|$))"  # nothing in .git
        f"{char}+(?:/{char}+)*" + ("/?" if glob else "") + "$"
    )


FILE_PATTERN = _pattern(glob=False)
GLOB_PATTERN = _pattern(glob=True)


# Glob tokens: a literal character, ? (one character in a segment), * (any run within a
# segment), ** (any run), **/ (nothing, or any run ending at a /).
_ONE, _STAR, _ANY, _DIRS = "?", "*", "**", "**/"


@functools.lru_cache(maxsize=1024)
def _tokens(pattern: str) -> tuple[str, ...]:
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"  # a directory means everything under it
    out, i = [], 0
    while i < len(pattern):
        for token in (_DIRS, _ANY, _STAR, _ONE):
            if pattern.startswith(token, i):
                break
        else:
            token = pattern[i]
        out.append(token)
        i += len(token)
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _matcher(pattern: str) -> Callable[[str], bool]:
    """A glob as a function of a path. Up to two wildcards: a regex (fast over the
    many files a matrix expands against, and with at most two unbounded runs its
    backtracking stays quadratic). More: a walk of the glob's positions along the path
    at once, as an NFA does, whose cost grows with the lengths of path and glob and
    never exponentially (a regex of ten ``**/*`` took minutes on one path: an agent's
    glob could stall the server)."""
    tokens = _tokens(pattern)
    if sum(token in (_STAR, _ANY, _DIRS) for token in tokens) > 2:
        return functools.partial(_walk, tokens)
    regex = "".join(
        {_DIRS: "(?:.*/)?", _ANY: ".*", _STAR: "[^/]*", _ONE: "[^/]"}.get(t) or re.escape(t)
        for t in tokens
    )
    return re.compile(regex + r"\Z", re.DOTALL).match


def _walk(tokens: tuple[str, ...], path: str) -> bool:
    # States: i, at token i; ~i (negative), inside the run of a ``**/`` at token i
    # (it may end only with a ``/``, never with nothing more).
    end = len(tokens)

    def closure(states: set[int]) -> set[int]:
        todo, seen = list(states), set(states)
        while todo:
            i = todo.pop()
            if 0 <= i < end and tokens[i] in (_STAR, _ANY, _DIRS) and i + 1 not in seen:
                seen.add(i + 1)  # a wildcard may match nothing
                todo.append(i + 1)
        return seen

    states = closure({0})
    for char in path:
        moved: set[int] = set()
        for i in states:
            if i < 0 or (i < end and tokens[i] == _DIRS):
                at = ~i if i < 0 else i
                moved.add(~at)
                if char == "/":
                    moved.add(at + 1)
                continue
            if i == end:
                continue
            token = tokens[i]
            if token == _ANY or (token == _STAR and char != "/"):
                moved.add(i)
            elif (token == _ONE and char != "/") or token == char:
                moved.add(i + 1)
        if not moved:
            return False
        states = closure(moved)
    return end in states


def matches(path: str, pattern: str) -> bool:
    """Whether a repository path matches a glob (``**`` spans directories, ``*`` and
    ``?`` stay within one; a trailing ``/`` means the whole directory)."""
    return bool(_matcher(pattern)(path.lstrip("/")))


def outside(paths: list[str], patterns: list[str]) -> list[str]:
    """The paths no pattern covers (all of them when there are no patterns)."""
    return [p for p in paths if not any(matches(p, g) for g in patterns)]


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
    match = _matcher(pattern)
    start = bisect.bisect_left(files, prefix)
    out = []
    for i in range(start, len(files)):
        path = files[i]
        if not path.startswith(prefix):
            break
        if match(path):
            out.append(path)
    return out
