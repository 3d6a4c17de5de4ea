"""The review workspace of a task page: its diff as files, hunks and numbered lines
(highlighted by each file's language), the review findings and people's own comments
as threads at the lines they name, and the comments' way back to the builder."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.db import transaction
from django.utils import timezone
from django.utils.safestring import mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

from fleet.adjudication import RETURNABLE, SETTLED, Refusal, _submitted_since, _tell_builder
from fleet.git import diffs
from fleet.git.errors import GitError
from fleet.models import (
    Event,
    FileViewed,
    Finding,
    ReviewComment,
    ReviewPrefs,
    Task,
    TransitionError,
)

# The first screen renders files until EAGER_LINES changed lines (at most EAGER_FILES
# files); the rest load as they scroll into view, and any file changing more than
# LARGE_FILE lines when opened (one request per file): a 5,000-line diff stays
# responsive.
EAGER_FILES = 25
EAGER_LINES = 1000
LARGE_FILE = 400
SNIPPET_CONTEXT = 2  # lines around an outdated thread's code


def file_id(path: str) -> str:
    """A stable element id for a file of the diff (paths hold characters ids cannot)."""
    return "f-" + hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest()[:10]


@functools.lru_cache(maxsize=256)
def _lexer_for(name: str):
    # Finding a lexer by file name walks every lexer Pygments has: once per kind of name.
    try:
        return get_lexer_for_filename(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def _lexer(path: str):
    name = path.rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1] if "." in name else name
    return _lexer_for(f"x.{suffix}" if "." in name else name)


FORMATTER = HtmlFormatter(nowrap=True)


def highlighted_lines(path: str, texts: list[str]) -> list[str]:
    """Each text line as HTML highlighted by the file's language. Lines are lexed
    together so a string or comment spanning lines stays one; Pygments closes its
    spans at each line end, so the output splits back into the same lines."""
    if not texts:
        return []
    # A lone carriage return would end a line for the lexer (and split the output one
    # line more than the numbers have): show it as a sign instead.
    text = "\n".join(t.replace("\r", "\u240d") for t in texts) + "\n"
    html = highlight(text, _lexer(path), FORMATTER)
    lines = html.split("\n")[: len(texts)]
    lines += [""] * (len(texts) - len(lines))
    return [mark_safe(line) for line in lines]  # Pygments escapes the text it is given


KINDS = {diffs.CONTEXT: "ctx", diffs.ADDED: "add", diffs.REMOVED: "del"}


def _slot(fid: str, line: diffs.Line) -> str:
    return f"{fid}-n{line.new}" if line.new is not None else f"{fid}-o{line.old}"


def _num(side: str, number: int | None) -> str:
    if number is None:
        return '<td class="num"></td>'
    return f'<td class="num" data-side="{side}" data-line="{number}">{number}</td>'


def _unified_row(fid: str, line: diffs.Line, html: str) -> str:
    kind = KINDS[line.kind]
    slots = _slot(fid, line)
    if line.kind == diffs.CONTEXT:  # a comment on either side of it lands here
        slots += f" {fid}-o{line.old}"
    return (
        f'<tr class="ln {kind}" data-slots="{slots}">'
        f"{_num('old', line.old)}{_num('new', line.new)}"
        f'<td class="code {kind}"><code>{html}</code></td></tr>'
    )


def _split_row(fid: str, left: diffs.Line | None, right: diffs.Line | None, html) -> str:
    names = [_slot(fid, line) for line in (left, right) if line]
    if left is not None and left.kind == diffs.CONTEXT:  # a comment on either side of it
        names.append(f"{fid}-o{left.old}")
    slots = " ".join(dict.fromkeys(names))
    cells = []
    for line, side in ((left, "old"), (right, "new")):
        if line is None:
            cells.append('<td class="num empty"></td><td class="code empty"></td>')
        else:
            number = line.old if side == "old" else line.new
            cells.append(
                f'{_num(side, number)}<td class="code {KINDS[line.kind]}">'
                f"<code>{html[id(line)]}</code></td>"
            )
    return f'<tr class="ln" data-slots="{slots}">{"".join(cells)}</tr>'


def render_file(file: diffs.DiffFile, *, split: bool) -> list[dict[str, Any]]:
    """A file's hunks, each with its rows as HTML: unified (one line a row) or split
    (old and new side by side). Each row names its slots (``f-…-n12``: new line 12),
    where threads attach. Rows are built here, not by a template loop: a large diff
    has thousands (the numbers and ids are ours, the code is escaped by Pygments)."""
    fid = file_id(file.path)
    # Each side of the whole file lexed in one go: the old lines (context included) and
    # the added ones, so each reads as the code it is.
    old_lines = [line for hunk in file.hunks for line in hunk.lines if line.old is not None]
    new_lines = [line for hunk in file.hunks for line in hunk.lines if line.kind == diffs.ADDED]
    html: dict[int, str] = {}
    for group in (old_lines, new_lines):
        texts = highlighted_lines(file.path, [line.text for line in group])
        html.update((id(line), text) for line, text in zip(group, texts, strict=True))
    hunks = []
    for hunk in file.hunks:
        if split:
            rows = [_split_row(fid, a, b, html) for a, b in diffs.split_rows(hunk)]
        else:
            rows = [_unified_row(fid, line, html[id(line)]) for line in hunk.lines]
        hunks.append({"header": hunk.header, "rows": mark_safe("\n".join(rows))})
    return hunks


# --- threads -----------------------------------------------------------------


@dataclass
class Thread:
    """A finding or a comment where it belongs: its slot in the diff (or the top of
    its file), and, raised on an earlier commit whose lines changed since, the code
    it was raised on."""

    kind: str  # "finding" or "comment"
    item: Any
    slot: str
    outdated: bool = False
    snippet: list[tuple[int, str]] = field(default_factory=list)
    history: list[Finding] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"{self.kind}-{self.item.pk}"


def _deduplicated(findings: list[Finding]) -> tuple[list[Finding], dict[int, list[Finding]]]:
    """A finding raised again on a resubmit (same file and title) is shown once, the
    newest, with the earlier ones as its history; an earlier one still waiting for a
    verdict is shown on its own (it still needs one)."""
    newest: dict[tuple[str, str], Finding] = {}
    for finding in sorted(findings, key=lambda f: (f.review.created_at, f.pk), reverse=True):
        newest.setdefault((finding.path, finding.title.strip().lower()), finding)
    shown, history = [], {}
    for finding in findings:
        head = newest[(finding.path, finding.title.strip().lower())]
        if head is finding or finding.verdict == Finding.PENDING:
            shown.append(finding)
        else:
            history.setdefault(head.pk, []).append(finding)
    return shown, history


def threads(
    task: Task,
    findings: list[Finding],
    comments: list[ReviewComment],
    *,
    head: str,
    repo_path: str,
) -> list[Thread]:
    """Every finding and sent or resolved comment as a thread with its slot."""
    shown, history = _deduplicated(findings)
    changed: dict[str, dict[str, diffs.DiffFile] | None] = {}

    def change(raised_on: str, path: str) -> diffs.DiffFile | None:
        if not raised_on or not head or raised_on == head:
            return None
        if raised_on not in changed:
            try:
                changed[raised_on] = diffs.changes_between(repo_path, old=raised_on, new=head)
            except GitError:
                changed[raised_on] = None  # that commit is gone: show it where it lands
        return (changed[raised_on] or {}).get(path)

    def place(thread: Thread, raised_on: str, side: str) -> None:
        """The thread's slot on ``head``: outdated when the lines it names changed since
        the commit it was raised on, else moved to where those lines are now."""
        item = thread.item
        start, end = item.line_start, item.line_end or item.line_start
        fid = file_id(item.path)
        if not start:
            thread.slot = f"{fid}-top"
            return
        moved = change(raised_on, item.path) if side == "n" else None
        if moved and moved.touches(start, end, side="old"):
            thread.outdated = True
            return
        thread.slot = f"{fid}-{side}{moved.new_number(end) if moved else end}"

    result = []
    for finding in shown:
        thread = Thread("finding", finding, "")
        thread.history = sorted(history.get(finding.pk, []), key=lambda f: f.pk)
        place(thread, finding.review.commit_sha, "n")
        result.append(thread)
    for comment in comments:
        thread = Thread("comment", comment, "")
        place(thread, comment.commit_sha, "n" if comment.side == ReviewComment.NEW else "o")
        result.append(thread)
    for thread in result:
        if thread.outdated:
            thread.slot = f"{file_id(thread.item.path)}-top"
            thread.snippet = _snippet(repo_path, thread)
    return result


@functools.lru_cache(maxsize=128)
def _file_lines(repo_path: str, sha: str, path: str) -> tuple[str, ...]:
    # A file at a commit never changes: read once, not on every live render.
    return tuple(diffs.file_lines(repo_path, sha=sha, path=path))


def _snippet(repo_path: str, thread: Thread) -> list[tuple[int, str]]:
    item = thread.item
    sha = item.review.commit_sha if thread.kind == "finding" else item.commit_sha
    try:
        lines = _file_lines(str(repo_path), sha, item.path)
    except GitError:
        return []
    start = max(item.line_start - SNIPPET_CONTEXT, 1)
    end = min((item.line_end or item.line_start) + SNIPPET_CONTEXT, len(lines))
    return [(n, lines[n - 1]) for n in range(start, end + 1)]


# --- the workspace ------------------------------------------------------------


def prefs(user: Any) -> ReviewPrefs:
    return ReviewPrefs.objects.filter(user=user).first() or ReviewPrefs(user=user)


def files(
    diff: str, *, base: str, head: str, split: bool, viewed: dict[str, str]
) -> list[dict[str, Any]]:
    """The diff's files for the template; the first few small ones rendered, the rest
    loaded on demand."""
    out = []
    budget = EAGER_LINES
    for n, file in enumerate(diffs.parse(diff)):
        deferred = n >= EAGER_FILES or file.changed > LARGE_FILE or file.changed > budget
        budget = budget - file.changed if not deferred else 0
        out.append(
            {
                "id": file_id(file.path),
                "path": file.path,
                "status": file.status,
                "added": file.added,
                "removed": file.removed,
                "patch_hash": file.patch_hash,
                "viewed": viewed.get(file.path) == file.patch_hash,
                "deferred": deferred,
                "large": file.changed > LARGE_FILE,
                "query": urlencode({"path": file.path, "base": base, "head": head}),
                "hunks": [] if deferred else render_file(file, split=split),
            }
        )
    return out


def viewed_marks(user: Any, task: Task) -> dict[str, str]:
    return dict(FileViewed.objects.filter(user=user, task=task).values_list("path", "patch_hash"))


def mark_viewed(*, user: Any, task: Task, path: str, patch_hash: str, viewed: bool) -> None:
    if viewed:
        FileViewed.objects.update_or_create(
            user=user, task=task, path=path, defaults={"patch_hash": patch_hash}
        )
    else:
        FileViewed.objects.filter(user=user, task=task, path=path).delete()


# --- people's comments -----------------------------------------------------


def add_comment(
    task: Task,
    *,
    by: Any,
    path: str,
    line_start: int,
    line_end: int,
    side: str,
    body: str,
    paths: list[str],
) -> ReviewComment:
    """A draft comment on lines of the task's current diff (``paths``: its files)."""
    body = body.strip()
    if not body:
        raise Refusal("Write the comment first.")
    if len(body) > ReviewComment.BODY_MAX:
        raise Refusal(f"Keep a comment under {ReviewComment.BODY_MAX} characters.")
    if path not in paths:
        raise Refusal(f"{path[:200]!r} is not a file of this change.")
    if side not in (ReviewComment.OLD, ReviewComment.NEW):
        raise Refusal("A comment is on the old or the new side of the diff.")
    if line_start < 1 or line_end < line_start or line_end > 10_000_000:
        raise Refusal("Those lines are not a range of the file.")
    if task.status in SETTLED:
        raise Refusal(f"{task.key} is {task.get_status_display()}: its review is over.")
    if not task.head_sha:
        raise Refusal(f"{task.key} has not been submitted: nothing to comment on yet.")
    return ReviewComment.objects.create(
        task=task,
        author=by,
        path=path,
        line_start=line_start,
        line_end=line_end,
        side=side,
        body=body,
        commit_sha=task.head_sha,
    )


def request_changes(task: Task, *, by: Any) -> str:
    """Send the person's draft comments to the builder in one inbox message (they are
    in its next boot digest too); a task in review returns to its builder, the
    transition an accepted finding makes."""
    with transaction.atomic():
        task = Task.objects.select_for_update(no_key=True, of=("self",)).get(pk=task.pk)
        if task.status in SETTLED:
            raise Refusal(f"{task.key} is {task.get_status_display()}: its review is over.")
        drafts = list(
            ReviewComment.objects.select_for_update(no_key=True)
            .filter(task=task, author=by, state=ReviewComment.DRAFT)
            .order_by("path", "line_start", "pk")
        )
        if not drafts:
            raise Refusal("You have no draft comments to send; with nothing to change, Merge.")
        now = timezone.now()
        ReviewComment.objects.filter(pk__in=[c.pk for c in drafts]).update(
            state=ReviewComment.SENT, sent_at=now
        )
        body = "\n\n".join(f"{c.path}:{c.lines} ({c.side})\n{c.body}" for c in drafts)
        told = _tell_builder(
            task,
            by,
            f"Changes requested on {task.key} by {by.get_username()}: "
            f"{len(drafts)} comment{'s' if len(drafts) != 1 else ''}",
            body,
        )
        Event.objects.record(
            "review.changes_requested",
            by=by,
            **task._event_subjects(),
            payload={"comments": [c.pk for c in drafts], "told": told},
        )
        if task.status in RETURNABLE:
            try:
                task.request_changes(by=by, reason=f"{len(drafts)} review comment(s)")
            except TransitionError as exc:
                raise Refusal(exc.message) from exc
            return f"{len(drafts)} comment(s) sent: {task.key} went back to its builder."
    return f"{len(drafts)} comment(s) sent to {task.key}'s builder."


def delete_draft(comment_id: int, *, by: Any) -> None:
    deleted, _ = ReviewComment.objects.filter(
        pk=comment_id, author=by, state=ReviewComment.DRAFT
    ).delete()
    if not deleted:
        raise Refusal("That is not a draft of yours (sent comments are resolved, not deleted).")


def resolve_comment(comment_id: int, *, by: Any) -> str:
    """A person resolves a sent comment once the builder resubmitted after it."""
    with transaction.atomic():
        comment = (
            ReviewComment.objects.select_for_update(no_key=True)
            .select_related("task")
            .filter(pk=comment_id)
            .first()
        )
        if comment is None or comment.state == ReviewComment.DRAFT:
            raise Refusal("There is no such sent comment.")
        task = comment.task
        if comment.state == ReviewComment.RESOLVED:
            return "That comment was already resolved."
        last = _submitted_since([task.pk]).get(task.pk)
        if last is None or comment.sent_at is None or last <= comment.sent_at:
            raise Refusal(
                f"{task.key} has not been resubmitted since the comment was sent: "
                "nothing to check yet."
            )
        comment.state, comment.resolved_at, comment.resolved_by = (
            ReviewComment.RESOLVED,
            timezone.now(),
            by,
        )
        comment.save(update_fields=["state", "resolved_at", "resolved_by"])
        Event.objects.record(
            "review.comment_resolved",
            by=by,
            **task._event_subjects(),
            payload={"comment": comment.pk, "path": comment.path, "commit": task.head_sha},
        )
    return f"The comment on {comment.path}:{comment.lines} is resolved in {task.head_sha[:10]}."


def open_comments(task: Task) -> list[str]:
    """Sent comments not resolved yet, as lines for the builder's boot digest."""
    return [
        f"{c.path}:{c.lines}: {c.body} (from {c.author.get_username()})"
        for c in task.comments.filter(state=ReviewComment.SENT)
        .select_related("author")
        .order_by("path", "line_start", "pk")
    ]
