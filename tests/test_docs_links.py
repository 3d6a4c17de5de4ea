"""The README and docs/ hold together: every relative link and #anchor resolves, every
docs page is reachable from the README and leads back to it, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation but - and _ dropped,
    spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a page; a repeated one gets -1, -2 ... as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", text)):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[str]:
    """Link targets outside code blocks and code spans."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return [m.group(1) for m in INLINE_LINK.finditer(prose)] + REFERENCE_LINK.findall(prose)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of a page whose file or #anchor is not there, with the reason."""
    problems = []
    for target in links(page.read_text()):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{page.name}: {target} leaves the repository")
        elif not dest.exists():
            problems.append(f"{page.name}: {target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            problems.append(f"{page.name}: {target}: no heading #{fragment} in {dest.name}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (README.parent / t.partition("#")[0]).resolve()
        for t in links(README.read_text())
        if not SCHEME.match(t)
    }
    assert [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_each_docs_page_opens_with_a_title_and_a_summary_that_links_back(page):
    lines = page.read_text().split("\n")
    assert lines[0].startswith("# ")
    summary = next(line for line in lines[1:] if line.strip())
    assert "](../README.md" in summary


def test_the_readme_is_what_a_newcomer_reads():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert "make run" in text and "make test" in text
    assert "docs/simulation-overview.png" in text


def test_slugs_follow_githubs_rules():
    assert slug("PostgreSQL + Redis") == "postgresql--redis"
    assert slug("Runners: Fleet starts and keeps the agents' CLIs") == (
        "runners-fleet-starts-and-keeps-the-agents-clis"
    )
    assert slug("Heartbeats: `fleet_bench heartbeat`") == "heartbeats-fleet_bench-heartbeat"
    assert slug("Codex CLI 0.171.0 (`@openai/codex`, linux-x64)") == (
        "codex-cli-01710-openaicodex-linux-x64"
    )
    assert anchors("# A\n\n## A\n\n```\n# not a heading\n```\n\n### A\n") == {"a", "a-1", "a-2"}


def test_a_broken_file_or_anchor_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Its part\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# R\n\n## Twice\n\n## Twice\n\n"
        "[ok](docs/page.md#its-part) [ok](#twice-1) [web](https://example.com/#x)\n"
        "`[in code](docs/nowhere.md)`\n\n"
        "[gone](docs/gone.md) [no anchor](docs/page.md#its-whole) [here](#twice-2)\n"
        "[out](../elsewhere.md)\n"
    )
    assert broken_links(readme, root=tmp_path) == [
        "README.md: docs/gone.md: no such file",
        "README.md: docs/page.md#its-whole: no heading #its-whole in page.md",
        "README.md: #twice-2: no heading #twice-2 in README.md",
        "README.md: ../elsewhere.md leaves the repository",
    ]
