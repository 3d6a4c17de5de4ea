"""Check and merge logs as a person reads them: the end, where the failing assertion
is, with the check's own noise (runs of warnings, pip and progress output) folded.

No Django here: the template tag that shows a folded log is ``fleet_tags.check_log``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAIL = 60  # lines that are not noise, shown from the end of a log
RUN = 3  # noise lines in a row worth folding (fewer read faster than a fold)

# Lines a check prints about itself rather than about the failure.
NOISE = re.compile(
    "|".join(
        [
            r"\b(?:Deprecation|PendingDeprecation|Future|User|Runtime|Resource|Import|Bytes)"
            r"Warning\b",
            r"^\s*warnings\.warn\(",
            r"^\s*-- Docs: https://docs\.pytest\.org/\S*warnings",
            r"^=+ warnings summary =+$",
            r"^\s*(?:Requirement already satisfied|Collecting|Downloading|Using cached|Obtaining"
            r"|Installing collected packages|Successfully (?:installed|built)|Building wheels?"
            r"|Created wheel|Stored in directory|Preparing metadata|Installing build dependencies"
            r"|Getting requirements to build|Attempting uninstall|Found existing installation"
            r"|Uninstalling|Looking in indexes)\b",
            r"^\s*(?:npm (?:WARN|notice)|warning \S+@\S+:)",
            r"^\s*WARNING: (?:You are using pip|Running pip as|Retrying)",
            # progress bars: a long bar, then figures
            r"[━█▉▊▋▌▍▎▏░▒▓#=>-]{10,}.*\d+(?:\.\d+)?\s*(?:%|[kMG]?B/s|MB|kB)",
            r"^\s*\d{1,3}%\s*\|",
        ]
    )
)
# The source line Python's warnings module prints under each warning: indented code
# right after a warning line.
SOURCE = re.compile(r"^\s{2,}\S")


@dataclass
class Part:
    """A run of a log's lines: shown, or folded behind a summary."""

    lines: list[str]
    folded: bool = False
    why: str = ""  # what a fold holds: "noise" or "earlier"

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def noise_flags(lines: list[str]) -> list[bool]:
    """Which lines are noise: warning, pip and progress lines, and the source line the
    warnings module prints under a warning."""
    flags = [bool(NOISE.search(line)) for line in lines]
    for i in range(1, len(lines)):
        if flags[i - 1] and not flags[i] and SOURCE.match(lines[i]) and "Warning" in lines[i - 1]:
            flags[i] = True
    return flags


def fold(log: str, *, head: int = 0, tail: int = TAIL, run: int = RUN) -> list[Part]:
    """A log as parts: its first ``head`` lines (a reason written above it), an
    "earlier" fold of what comes before the last ``tail`` lines that are not noise,
    then those last lines with every run of ``run`` or more noise lines folded."""
    lines = log.rstrip("\n").splitlines()
    if not lines:
        return []
    top, lines = lines[:head], lines[head:]
    flags = noise_flags(lines)
    # Where the shown end begins: ``tail`` lines that are not noise back from the end.
    start, kept = len(lines), 0
    while start > 0 and kept < tail:
        start -= 1
        kept += not flags[start]
    parts = [Part(top)] if top else []
    if start > 0:
        parts.append(Part(lines[:start], folded=True, why="earlier"))
    i = start
    while i < len(lines):
        j = i
        while j < len(lines) and flags[j] == flags[i]:
            j += 1
        chunk = lines[i:j]
        if flags[i] and len(chunk) >= run:
            parts.append(Part(chunk, folded=True, why="noise"))
        elif parts and not parts[-1].folded and parts[-1].lines is not top:
            parts[-1].lines.extend(chunk)
        else:
            parts.append(Part(list(chunk)))
        i = j
    # Blank lines at the edges of a shown part (the gap under a reason) show as
    # nothing but an empty box.
    for part in parts:
        if not part.folded:
            while part.lines and not part.lines[-1].strip():
                part.lines.pop()
            while part.lines and not part.lines[0].strip():
                part.lines.pop(0)
    return [part for part in parts if part.lines]


def folded_text(log: str, *, head: int = 0, tail: int = TAIL) -> str:
    """The same as plain text (an inbox message): folds become one bracketed line."""
    out = []
    for part in fold(log, head=head, tail=tail):
        if not part.folded:
            out.append(part.text)
        elif part.why == "earlier":
            out.append(f"[… {len(part.lines)} earlier lines]")
        else:
            out.append(f"[… {len(part.lines)} lines of warnings and tool output folded]")
    return "\n".join(out)
