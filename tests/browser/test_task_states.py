"""A task page's states agree, in real Chromium: the definition-of-done Tick button
is legible, a failed merge shows its failing assertion with the noise folded, and a
merged task shows the commit it landed as rather than a stale base."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fleet import merging
from fleet.models import CheckRun, MergeRequest, Task

from ..conftest import make_repository, make_user
from ..git.conftest import git, push_from_other, shop  # noqa: F401 (a fixture)
from ..git.test_gates import green_task
from ..test_logs import LOG
from .conftest import screenshot
from .test_live import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONTRAST = """(el) => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => {
    const [r, g, b] = rgb(c).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const style = getComputedStyle(el);
  const [a, b] = [lum(style.color), lum(style.backgroundColor)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


def test_the_tick_button_is_legible_and_a_failed_merge_shows_its_assertion(
    page,
    live_server,
    shop,  # noqa: F811
):
    make_user("lena", "lead", password="pw-lena-123")
    repository = make_repository(path=str(shop["clone"]), slug="shop", check_command="true")
    task = green_task(repository, shop)
    repository.dod_items = ["Tests cover the change"]
    repository.save()
    reason = f"the merge check failed on {task.head_sha[:10]}"
    MergeRequest.objects.create(
        task=task,
        repository=repository,
        position=1,
        result=MergeRequest.FAILED,
        step="done",
        log=f"{reason}\n\n{LOG}",
    )
    CheckRun.objects.create(
        repository=repository,
        task=task,
        name="merge check",
        commit_sha=task.head_sha,
        status="failed",
        log=LOG,
    )
    login(page, live_server.url)
    page.goto(live_server.url + reverse("fleet-task", args=[task.key]))
    tick = page.locator("#dod button", has_text="Tick for")
    assert tick.is_visible()
    assert tick.evaluate(CONTRAST) >= 4.5  # WCAG AA for its small text
    merges = page.locator("#task-merges")
    assert merges.get_by_text(reason).is_visible()
    assert merges.get_by_text("E       assert 5 == 6").is_visible()
    fold = merges.locator("details.log-fold-noise", has_text="400 lines of warnings")
    assert fold.locator("summary").is_visible()
    assert not fold.locator("pre").is_visible()  # folded until someone opens it
    assert page.locator("#task-checks").get_by_text("E       assert 5 == 6").is_visible()
    screenshot(page, "task-failed-merge-log")


def test_a_merged_task_shows_what_landed(page, live_server, shop):  # noqa: F811
    make_user("lena", "lead", password="pw-lena-123")
    repository = make_repository(path=str(shop["clone"]), slug="shop", check_command="true")
    task = green_task(repository, shop)
    login(page, live_server.url)
    page.goto(live_server.url + reverse("fleet-task", args=[task.key]))
    page.click("#merge-form button")
    assert merging.process_queues() == 1
    assert Task.objects.get(pk=task.pk).status == Task.MERGED
    landed = git(shop["origin"], "rev-parse", "main")
    for n in range(6):
        push_from_other(shop, {"README.md": f"# shop {n}\n"}, f"docs {n}")
    page.goto(live_server.url + reverse("fleet-task", args=[task.key]))
    header = page.locator("#task-landed")
    assert header.is_visible() and landed[:10] in header.inner_text()
    body = page.locator("main").inner_text()
    assert "behind main" not in body and "Stale-base gate" not in body
    assert page.locator(".gate-red").count() == 0
    assert page.locator("#files-h").get_by_text("What landed").is_visible()
    screenshot(page, "task-merged-landed")
