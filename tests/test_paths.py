"""The one spelling of a repository path (``fleet.git.paths.canonical``): what it
normalizes, what it refuses, and that the patterns the API's schema publishes match
exactly the paths it returns unchanged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.forms import TaskForm
from fleet.git import paths
from fleet.git.paths import FILE_PATTERN, GLOB_PATTERN, MAX_LENGTH, PathRefused, canonical
from fleet.models import Task

from .conftest import make_repository, make_user

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("shop/routes.py", "shop/routes.py"),
        ("./shop/routes.py", "shop/routes.py"),
        ("shop//routes.py", "shop/routes.py"),
        ("shop/./routes.py", "shop/routes.py"),
        (".//shop/routes.py", "shop/routes.py"),
        ("././a", "a"),
        (".gitignore", ".gitignore"),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
        ("a/.git.bak/x", "a/.git.bak/x"),
        ("a/...", "a/..."),
        ("#notes.md", "#notes.md"),
        ("~/x", "~/x"),
        ("a b/c d.py", "a b/c d.py"),
        ("café/ü.py", "café/ü.py"),
    ],
)
def test_a_file_has_one_spelling(path, expected):
    assert canonical(path) == expected
    assert re.fullmatch(FILE_PATTERN, expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("./src//*.py", "src/*.py"),
        ("src/**/x.py", "src/**/x.py"),
        ("docs/", "docs/"),
        ("docs//", "docs/"),
        ("docs/.", "docs/"),
        ("docs/./", "docs/"),
        ("[ab].py", "[ab].py"),
    ],
)
def test_a_glob_or_directory_has_one_spelling(path, expected):
    assert canonical(path, glob=True) == expected
    assert re.fullmatch(GLOB_PATTERN, expected)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "empty"),
        (".", "root"),
        ("./", "root"),
        (".//.", "root"),
        ("/etc/passwd", "outside"),
        ("//x", "outside"),
        ("..", "outside"),
        ("a/../b", "outside"),
        (".git", ".git"),
        (".git/config", ".git"),
        ("a/.git/HEAD", ".git"),
        (".Git/config", ".git"),
        (".git./config", ".git"),
        (".git /config", ".git"),
        ("a\nb", "control"),
        ("a\x00b", "control"),
        ("a\x1fb", "control"),
        ("a\x7fb", "control"),
        ("a\x9fb", "control"),
        ("a\u2028b", "line separator"),
        ("a\u2029b", "line separator"),
        ("a\ud800b", "surrogate"),
        ("C:\\x.py", "backslash"),
        (" a", "whitespace"),
        ("a\u3000", "whitespace"),
        ("x" * (MAX_LENGTH + 1), "longer"),
    ],
)
def test_what_names_no_path_in_the_repository_is_refused(path, why):
    for glob in (False, True):
        with pytest.raises(PathRefused, match=re.escape(why)):
            canonical(path, glob=glob)
        if why != "surrogate":  # no character in a JSON Schema string: the schema is silent
            assert not re.fullmatch(GLOB_PATTERN if glob else FILE_PATTERN, path)


@pytest.mark.parametrize("path", ["src/", "src/.", "*.py", "a?.py", "[ab].py", "src/**"])
def test_a_file_is_not_a_glob_or_directory(path):
    with pytest.raises(PathRefused, match="one by one"):
        canonical(path)
    assert not re.fullmatch(FILE_PATTERN, path)


def test_no_whitespace_python_knows_begins_or_ends_a_path():
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    for space in spaces:
        for path in (f"{space}a", f"a{space}"):
            with pytest.raises(PathRefused):
                canonical(path, glob=True)
            assert not re.fullmatch(GLOB_PATTERN, path)


def test_a_non_string_is_refused():
    with pytest.raises(PathRefused):
        canonical(["a.py"])  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------

files = st.from_regex(FILE_PATTERN, fullmatch=True).filter(lambda p: len(p) <= 200)
globs = st.from_regex(GLOB_PATTERN, fullmatch=True).filter(lambda p: len(p) <= 200)


@st.composite
def spellings(draw, path: str) -> str:
    """Another spelling of ``path``: ``./`` in front, ``.`` segments and doubled
    slashes between its segments (a trailing ``/`` of a directory kept)."""
    directory = path.endswith("/")
    segments = path.removesuffix("/").split("/")
    separators = st.sampled_from(["/", "//", "/./", "/.//", "//./", "/././"])
    out = draw(st.sampled_from(["", "./", ".//", "././", "./././/"]))
    for i, segment in enumerate(segments):
        out += (draw(separators) if i else "") + segment
    if directory:
        out += draw(st.sampled_from(["/", "//", "/.", "/./", "/.//"]))
    return out


@given(st.data(), files)
def test_every_spelling_of_a_file_is_the_file(data, path):
    spelling = data.draw(spellings(path))
    assert canonical(spelling) == path


@given(st.data(), globs)
def test_every_spelling_of_a_glob_is_the_glob(data, path):
    spelling = data.draw(spellings(path))
    assert canonical(spelling, glob=True) == path


@given(files)
def test_the_published_file_pattern_matches_only_what_is_kept_as_it_is(path):
    assert canonical(path) == path


@given(globs)
def test_the_published_glob_pattern_matches_only_what_is_kept_as_it_is(path):
    assert canonical(path, glob=True) == path


PIECES = ["a", ".", "/", " ", "\\", "\n", "*", "[", "#", "git", "GIT", "é", "\u2028", "\x85"]
MESSY = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)


@given(MESSY, st.booleans())
def test_what_comes_back_matches_the_pattern_and_stays(path, glob):
    try:
        out = canonical(path, glob=glob)
    except PathRefused:
        return
    assert re.fullmatch(GLOB_PATTERN if glob else FILE_PATTERN, out)
    assert canonical(out, glob=glob) == out


# --- the planner's form ---------------------------------------------------------------


def task_form(declared: str) -> TaskForm:
    data = {"key": "T-1", "kind": "feat", "title": "t", "repository": "app"}
    return TaskForm(data={**data, "declared_paths": declared})


@pytest.mark.django_db
def test_the_form_keeps_declared_paths_in_their_one_spelling():
    make_repository(slug="app")
    form = task_form("./src//*.py\n# a comment\n\n  docs/./  \nsrc/*.py\nshop/./routes.py")
    assert form.is_valid(), form.errors
    assert form.cleaned_data["declared_paths"] == ["src/*.py", "docs/", "shop/routes.py"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "message"),
    [
        (".git/config", "inside .git"),
        (".", "root"),
        ("C:\\x.py", "backslash"),
        ("../x.py", "reaches outside the repository"),
        ("./#x.py", "comment"),
    ],
)
def test_the_form_refuses_what_names_no_path_and_says_which(line, message):
    make_repository(slug="app")
    form = task_form(f"src/ok.py\n{line}")
    assert not form.is_valid()
    assert message in " ".join(form.errors["declared_paths"])


@pytest.mark.django_db
def test_the_planner_page_shows_which_declared_path_is_refused(client):
    make_repository(slug="app")
    client.force_login(make_user("lea", "lead"))
    assert client.post("/plans/", {"name": "Sprint", "slug": "sprint"}).status_code == 302
    data = {"key": "T-1", "kind": "feat", "title": "t", "repository": "app", "spec": "s"}
    response = client.post(
        "/plans/sprint/waves/1/tasks/", {**data, "declared_paths": "src/*.py\n.git/config"}
    )
    assert response.status_code == 400
    assert "&#x27;.git/config&#x27; is inside .git" in response.content.decode()
    assert not Task.objects.exists()
    response = client.post(
        "/plans/sprint/waves/1/tasks/", {**data, "declared_paths": "./src//*.py\n.//docs/"}
    )
    assert response.status_code == 302
    assert Task.objects.get().declared_paths == ["src/*.py", "docs/"]


_GLOB_PARTS = st.sampled_from(["a", "b", "/", ".", "*", "**", "**/", "?", "ab", "x.py"])
_PATH_PARTS = st.sampled_from(["a", "b", "/", ".", "ab", "x.py", "bb/", "a/b"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_GLOB_PARTS, max_size=8).map("".join), st.lists(_PATH_PARTS, max_size=8).map("".join)
)
def test_the_walk_matches_exactly_what_the_regex_does(glob, path):
    """Globs with many wildcards are matched by walking the glob's positions along the
    path (no backtracking); it must agree with the regex used for simple ones."""
    tokens = paths._tokens(glob)
    regex = "".join(
        {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(t) or re.escape(t)
        for t in tokens
    )
    expected = re.compile(regex + r"\Z", re.DOTALL).match(path) is not None
    assert paths._walk(tokens, path) == expected


def test_a_glob_of_many_wildcards_cannot_stall_the_server():
    """``**/*`` ten times then a letter, against a deep path: a backtracking regex took
    minutes on this (an orchestrator agent could stall the planner with it). Run in a
    process of its own so a regression fails here instead of hanging the suite."""
    code = (
        "from fleet.git import paths\n"
        "deep = '/'.join(['d'] * 13) + '/x.py'\n"
        "glob = '**/*' * 10 + 'Q'\n"
        "print(paths.matches(deep, glob), paths.expand(glob, [deep, 'a/' * 9 + 'Q', 'x/Q']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    # ("**/***/*…": every "***/" after the first is "**", "*", "/", so nine slashes.)
    assert done.stdout.split() == ["False", "['a/a/a/a/a/a/a/a/a/Q']"], done.stderr
