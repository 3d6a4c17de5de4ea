"""One spelling per repository path: every path that enters through the API (claims,
findings, a planner's declared paths) is canonicalized before it is compared or
stored, so ``./shop/routes.py`` is ``shop/routes.py`` and ``.git/config`` is no path
at all. Both claim routes (the API's and the lean one) answer the same."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleet import dispatch, planning
from fleet.api.planner import TaskIn
from fleet.api.schemas import ClaimIn, FindingIn
from fleet.forms import clean_declared
from fleet.models import Agent, FileClaim, Finding, Plan, Review, Task, TransitionError, Wave

from ..conftest import make_agent, make_repository, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db

SPELLINGS = ["./shop/routes.py", "shop//routes.py", "shop/./routes.py", ".//shop/routes.py"]

# Not a path to one file in the repository, whatever the normalization.
REFUSED = [
    "",
    ".",
    "./",
    ".git",
    ".git/config",
    "./.git/config",
    "shop/.git/HEAD",
    ".GIT/config",
    ".git./config",
    "shop/routes.py\n",
    "shop/\nroutes.py",
    "shop/routes.py\r",
    "shop/\u2028routes.py",
    "shop/\x7froutes.py",
    "shop/\x85routes.py",
    "shop/\ud800.py",
    "C:\\x.py",
    "shop\\routes.py",
    " shop/routes.py",
    "shop/routes.py ",
    "shop/routes.py/",
    "shop/routes.py/.",
    "shop/../shop/routes.py",
    "/shop/routes.py",
    "x" * 501,
]


def leased(repo, name: str, key: str) -> tuple[Task, str]:
    builder = make_agent(Agent.BUILDER, name=name, repository=repo)
    task = make_task(
        wave=Wave.objects.get(status=Wave.RUNNING), repository=repo, status=Task.READY, key=key
    )
    task.assign(agent=builder)
    task.start(by=builder, epoch=task.lease_epoch)
    return task, builder.issue_token()


@pytest.fixture
def two_builders(as_agent_any):
    """ada (T-1) and bob (T-2) at work in the shop repository; ada holds shop/routes.py."""
    make_wave(status=Wave.RUNNING)
    repo = make_repository(slug="shop")
    ada_task, ada = leased(repo, "ada", "T-1")
    bob_task, bob = leased(repo, "bob", "T-2")
    first = as_agent_any(ada).post("claims", {"task": "T-1", "paths": ["shop/routes.py"]})
    assert first.status_code == 201, first.content
    return as_agent_any(ada), as_agent_any(bob)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_another_spelling_of_a_held_path_is_the_held_path(two_builders, spelling):
    _, bob = two_builders
    response = bob.post("claims", {"task": "T-2", "paths": [spelling]})
    assert response.status_code == 409, response.content
    assert response.json() == {
        "error": "claim_held",
        "detail": response.json()["detail"],
    }
    assert response.json()["detail"].startswith("shop/routes.py is claimed by ada for T-1")
    assert FileClaim.objects.filter(task__key="T-2").count() == 0


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_path_is_stored_and_answered_in_its_one_spelling(two_builders, spelling):
    ada, _ = two_builders
    response = ada.post("claims", {"task": "T-1", "paths": [spelling.replace("routes", "views")]})
    assert response.status_code == 201, response.content
    assert [c["path"] for c in response.json()] == ["shop/views.py"]
    # Claiming its own path again in another spelling extends the one claim.
    assert ada.post("claims", {"task": "T-1", "paths": [spelling]}).status_code == 201
    assert sorted(FileClaim.objects.values_list("path", flat=True)) == [
        "shop/routes.py",
        "shop/views.py",
    ]


@pytest.mark.parametrize("path", REFUSED)
def test_what_is_not_one_file_in_the_repository_is_refused(two_builders, path):
    _, bob = two_builders
    response = bob.post("claims", {"task": "T-2", "paths": ["shop/ok.py", path]})
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"] == "invalid"
    assert FileClaim.objects.filter(task__key="T-2").count() == 0


def test_the_refusal_names_the_path(two_builders):
    _, bob = two_builders
    response = bob.post("claims", {"task": "T-2", "paths": ["shop/.git/config"]})
    assert response.status_code == 422
    assert "'shop/.git/config'" in str(response.json()["detail"])


def test_an_owner_decision_holds_whatever_the_spelling(as_agent_any):
    """T-1 owns shop/models.py by a planning decision; T-2 declares it too."""
    running = make_wave(status=Wave.RUNNING)
    repo = make_repository(slug="shop")
    wave = make_wave(plan=running.plan, number=2)
    owned = ["shop/models.py"]
    t1 = make_task(wave=wave, repository=repo, key="T-1", declared_paths=owned)
    make_task(wave=wave, repository=repo, key="T-2", declared_paths=owned)
    planning.sync_shared(wave)
    shared = wave.shared_files.get(path="shop/models.py")
    planning.decide(shared, strategy="owner", task=t1, by=make_user("lea", "lead"))
    Wave.objects.filter(pk=wave.pk).update(status=Wave.RUNNING)
    bob = make_agent(Agent.BUILDER, name="bob", repository=repo)
    t2 = Task.objects.get(key="T-2")
    Task.objects.filter(pk=t2.pk).update(status=Task.READY)
    t2.refresh_from_db()
    t2.assign(agent=bob)
    t2.start(by=bob, epoch=t2.lease_epoch)
    client = as_agent_any(bob.issue_token())
    for spelling in ["shop/models.py", "./shop/models.py", "shop//models.py", "shop/./models.py"]:
        response = client.post("claims", {"task": "T-2", "paths": [spelling]})
        assert response.status_code == 409, (spelling, response.content)
        assert response.json()["error"] == "claim_owned"
    assert not FileClaim.objects.exists()


# --- findings -----------------------------------------------------------------


@pytest.fixture
def review(as_agent):
    repo = make_repository(slug="shop")
    reviewer = make_agent(Agent.REVIEWER, name="rex", repository=repo)
    task = make_task(repository=repo, status=Task.IN_REVIEW, head_sha="a" * 40)
    review = Review.objects.create(task=task, commit_sha="a" * 40, reviewer=reviewer)
    return review, as_agent(reviewer.issue_token())


def post_finding(client, review, path):
    finding = {"path": path, "severity": "minor", "title": "t"}
    return client.post(f"reviews/{review.pk}/findings", {"findings": [finding]})


def test_a_finding_is_stored_on_the_paths_one_spelling(review):
    review, client = review
    response = post_finding(client, review, ".//shop/./routes.py")
    assert response.status_code in (200, 201), response.content
    assert list(Finding.objects.values_list("path", flat=True)) == ["shop/routes.py"]


# A finding may name a directory (docs/ lacks an index): the rest is refused.
@pytest.mark.parametrize("path", [p for p in REFUSED if not p.endswith(("/", "/."))])
def test_a_finding_outside_the_repositorys_files_is_refused(review, path):
    review, client = review
    response = post_finding(client, review, path)
    assert response.status_code == 422, response.content
    review.refresh_from_db()
    assert review.status == Review.OPEN and not Finding.objects.exists()


# --- a planner's declared paths ---------------------------------------------------


@pytest.fixture
def planner(as_agent):
    repo = make_repository(slug="shop")
    orchestrator = make_agent(Agent.ORCHESTRATOR, name="olly", repository=repo)
    wave = Wave.objects.create(plan=Plan.objects.create(name="P", slug="p"), number=1)
    return wave, as_agent(orchestrator.issue_token())


def draft(planner, paths):
    wave, client = planner
    body = {"key": "T-9", "title": "New", "repository": "shop", "declared_paths": paths}
    return client.post(f"waves/{wave.pk}/tasks", body)


def test_declared_paths_are_stored_in_their_one_spelling(planner):
    paths = ["./src//*.py", "docs/./", "shop/routes.py", "shop//routes.py", "src/**/x.py"]
    response = draft(planner, paths)
    assert response.status_code == 201, response.content
    expected = ["src/*.py", "docs/", "shop/routes.py", "src/**/x.py"]
    assert response.json()["declared_paths"] == expected
    assert Task.objects.get().declared_paths == expected


@pytest.mark.parametrize(
    "path",
    [
        "C:\\x.py",
        ".",
        "./",
        ".git",
        ".git/**",
        "src/.git/config",
        "src/\u2028a.py",
        "src/\x0ba.py",
        "src/a.py\x00",
        "#src/a.py",
        " src/a.py",
        "../x.py",
        "/etc/*",
    ],
)
def test_a_declared_path_outside_the_repositorys_files_is_refused(planner, path):
    response = draft(planner, ["src/ok.py", path])
    assert response.status_code == 422, response.content
    assert response.json()["error"] == "invalid"
    assert not Task.objects.exists()


# --- what the schema says ----------------------------------------------------------


def test_the_schema_allows_no_path_the_server_refuses(client):
    """Every path the OpenAPI schema's patterns allow is accepted unchanged by the
    server's own validation (the schema may be stricter than the server, never looser)."""
    components = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    claim = components["ClaimIn"]["properties"]["paths"]["items"]
    finding = components["FindingIn"]["properties"]["path"]
    declared = components["TaskIn"]["properties"]["declared_paths"]["items"]
    for field in (claim, finding, declared):
        assert field["maxLength"] == 500 and field["minLength"] == 1

    def allowed(field):
        return st.from_regex(field["pattern"], fullmatch=True).filter(
            lambda p: field["minLength"] <= len(p) <= field["maxLength"]
        )

    @given(allowed(claim), allowed(finding), allowed(declared))
    @settings(max_examples=300, deadline=None)
    def accepted(claimed, found, declared_path):
        payload = ClaimIn.model_validate({"task": "T-1", "paths": [claimed]})
        assert payload.paths == [claimed]
        finding = {"path": found, "severity": "minor", "title": "t"}
        assert FindingIn.model_validate(finding).path == found
        # A draft's paths are checked by the planner's form, the way a lead's are.
        task = {"key": "T-1", "title": "t", "repository": "shop"}
        drafted = TaskIn.model_validate({**task, "declared_paths": [declared_path]})
        assert clean_declared(drafted.declared_paths) == [declared_path]

    accepted()


# --- the property: one holder per path, whatever the spelling -------------------------


@st.composite
def two_spellings(draw) -> tuple[str, str]:
    """Two spellings of one file path: its segments joined by ``/``, ``//``, ``/./``
    and so on, with or without ``./`` in front."""
    segment = st.text(
        st.characters(codec="utf-8", exclude_characters="/\\*?[", exclude_categories=["Cc"]),
        min_size=1,
        max_size=8,
    ).filter(lambda s: s not in (".", "..") and s.rstrip(". ").lower() != ".git")
    segments = draw(st.lists(segment, min_size=1, max_size=4))
    assume(not segments[0][0].isspace() and not segments[-1][-1].isspace())
    assume("\u2028" not in "".join(segments) and "\u2029" not in "".join(segments))

    def spelling() -> str:
        separators = st.sampled_from(["/", "//", "/./", "/.//", "//./"])
        out = draw(st.sampled_from(["", "./", ".//", "././"]))
        for i, part in enumerate(segments):
            out += (draw(separators) if i else "") + part
        return out

    return spelling(), spelling()


def test_two_spellings_of_one_path_are_never_both_held_for_writing():
    make_wave(status=Wave.RUNNING)
    repo = make_repository(slug="shop")
    ada_task, _ = leased(repo, "ada", "T-1")
    bob_task, _ = leased(repo, "bob", "T-2")

    @given(two_spellings())
    @settings(max_examples=150, deadline=None)
    def one_holder(spellings):
        first, second = spellings
        dispatch.claim(ada_task.assignee, task=ada_task, paths=[first], mode="write")
        with pytest.raises(TransitionError) as refused:
            dispatch.claim(bob_task.assignee, task=bob_task, paths=[second], mode="write")
        assert refused.value.code == "claim_held"

    one_holder()
    held = FileClaim.objects.filter(released_at__isnull=True)
    assert not held.filter(task=bob_task).exists()
    assert held.count() == len(set(held.values_list("path", flat=True)))
