"""A failing check's log reads from its end: the assertion in view, the check's own
noise (warnings, pip, progress bars) folded, on every page that shows such a log."""

from __future__ import annotations

import pytest
from django.template import Context, Template

from fleet.logs import fold, folded_text

WARNINGS = "".join(
    f"shop/legacy.py:{n}: DeprecationWarning: datetime.utcnow() is deprecated\n"
    "  stamp = datetime.utcnow()\n"
    for n in range(200)
)
PIP = (
    "Collecting pytest==8.3.4\n"
    "  Downloading pytest-8.3.4-py3-none-any.whl (343 kB)\n"
    "     ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 343.6/343.6 kB 2.1 MB/s eta 0:00:00\n"
    "Requirement already satisfied: pluggy in ./venv (1.5.0)\n"
    "Installing collected packages: pytest\n"
    "Successfully installed pytest-8.3.4\n"
)
FAILURE = (
    "=================================== FAILURES ===================================\n"
    "_________________________________ test_total __________________________________\n"
    "    def test_total():\n"
    ">       assert total([Item(2), Item(3)]) == 6\n"
    "E       assert 5 == 6\n"
    "tests/test_cart.py:9: AssertionError\n"
)
SUMMARY = (
    "=============================== warnings summary ===============================\n"
    "shop/legacy.py:3: DeprecationWarning: datetime.utcnow() is deprecated\n"
    "  stamp = datetime.utcnow()\n"
    "-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html\n"
    "FAILED tests/test_cart.py::test_total - assert 5 == 6\n"
    "1 failed, 41 passed, 301 warnings in 0.52s\n"
)
LOG = PIP + "collected 42 items\n" + WARNINGS + FAILURE + SUMMARY


def shown(parts) -> str:
    return "\n".join(part.text for part in parts if not part.folded)


def test_the_failing_assertion_shows_and_the_noise_is_folded():
    parts = fold(LOG)
    text = shown(parts)
    assert "E       assert 5 == 6" in text
    assert "1 failed, 41 passed" in text
    assert "DeprecationWarning" not in text and "Downloading" not in text
    folds = [part for part in parts if part.folded]
    assert sum(len(part.lines) for part in folds) + len(text.splitlines()) == len(
        LOG.splitlines()
    )  # nothing lost: every line is shown or folded
    assert max(len(part.lines) for part in folds) == 400  # the 200 warnings, one fold


def test_only_the_end_of_a_long_log_is_in_view():
    log = "".join(f"step {n} ok\n" for n in range(500)) + FAILURE
    parts = fold(log, tail=20)
    assert parts[0].folded and parts[0].why == "earlier" and len(parts[0].lines) == 486
    assert shown(parts).endswith("tests/test_cart.py:9: AssertionError")


def test_a_reason_above_the_log_stays_at_the_top():
    parts = fold("the merge check failed on abc123\n\n" + LOG, head=1, tail=5)
    assert not parts[0].folded and parts[0].lines == ["the merge check failed on abc123"]


def test_short_noise_is_left_in_place_and_a_clean_log_is_untouched():
    log = "collected 2 items\nx.py:1: UserWarning: careful\nok\n"
    assert [part.folded for part in fold(log)] == [False]
    assert fold("") == []


def test_the_plain_text_for_the_builders_inbox_says_what_was_folded():
    text = folded_text(LOG)
    assert "E       assert 5 == 6" in text
    assert "lines of warnings and tool output folded]" in text
    assert "DeprecationWarning" not in text


@pytest.mark.parametrize("head", [0, 1])
def test_the_template_tag_renders_folds_as_details(head):
    html = Template("{% load fleet_tags %}{% check_log log head=head %}").render(
        Context({"log": "reason\n" + LOG, "head": head})
    )
    assert "<details" in html and "400 lines of warnings and tool output folded" in html
    assert html.index("assert 5 == 6") > html.index("400 lines")
    assert "<script>" not in Template("{% load fleet_tags %}{% check_log log %}").render(
        Context({"log": "E   <script>alert(1)</script>"})
    )  # escaped, as any text


def test_the_template_tag_keeps_the_end_of_a_huge_log():
    html = Template("{% load fleet_tags %}{% check_log log head=1 %}").render(
        Context({"log": "reason\n" + "x" * 80 + "\n" + "y\n" * 40_000 + FAILURE})
    )
    assert "reason" in html and "characters cut" in html and "assert 5 == 6" in html
    assert len(html) < 40_000


@pytest.mark.django_db
def test_a_failed_merge_shows_its_assertion_on_the_task_page_and_the_merge_queue(client):
    from django.urls import reverse

    from fleet.models import CheckRun, MergeRequest, Task

    from .conftest import make_repository, make_task, make_user

    repository = make_repository(path="/nonexistent/logs")
    task = make_task(repository=repository, status=Task.CHANGES_REQUESTED)
    reason = "the merge check failed on 1a2b3c4d5e"
    MergeRequest.objects.create(
        task=task,
        repository=repository,
        position=1,
        result=MergeRequest.FAILED,
        log=f"{reason}\n\n{LOG}",
    )
    CheckRun.objects.create(
        repository=repository,
        task=task,
        name="merge check",
        commit_sha="1a2b3c4d5e",
        status="failed",
        log=LOG,
    )
    client.force_login(make_user("lena", "lead"))
    for url, shown_logs in (
        (reverse("fleet-task", args=[task.key]), 2),
        (reverse("fleet-merges"), 1),
    ):
        html = client.get(url).content.decode()
        assert reason in html
        assert html.count("E       assert 5 == 6") == shown_logs
        # The assertion is on screen, the warnings behind one fold per log.
        assert html.count("400 lines of warnings and tool output folded") == shown_logs
        assert html.index("400 lines") < html.index("E       assert 5 == 6")
