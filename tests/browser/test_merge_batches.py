"""Merge batches in real Chromium: a lead sets the batch size on the repository page
(and a bad one is refused on the page), and the merge queue page shows a batch's
tasks, step and bisection."""

from __future__ import annotations

import pytest

from fleet.models import Repository

from ..conftest import make_user
from ..test_merge_batch_pages import make_bisected_batch
from .conftest import screenshot
from .test_live import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lead_sets_the_batch_size_and_sees_the_bisection(page, live_server):
    make_user("lena", "lead", password="pw-lena-123")
    batch = make_bisected_batch()
    base = live_server.url
    login(page, base)

    page.goto(f"{base}/repositories/shop/")
    page.fill("input[name=merge_batch_size]", "25")
    # The browser's own range check would stop this; the server must refuse it too.
    page.eval_on_selector("input[name=merge_batch_size]", "e => e.removeAttribute('max')")
    page.click("text=Set batch size")
    page.wait_for_selector("text=Batch size not changed")
    assert Repository.objects.get(slug="shop").merge_batch_size == 3
    page.fill("input[name=merge_batch_size]", "8")
    page.click("text=Set batch size")
    page.wait_for_selector("text=up to 8 queued tasks together")
    assert Repository.objects.get(slug="shop").merge_batch_size == 8
    screenshot(page, "repository-merge-batch")

    page.goto(f"{base}/merges/")
    card = page.locator(f"#batch-{batch.pk}")
    assert "bisecting" in card.inner_text()
    rows = card.locator("table.trials tbody tr")
    assert rows.count() == 3
    assert "failed" in rows.nth(0).inner_text() and "passed" in rows.nth(1).inner_text()
    assert "running" in rows.nth(2).inner_text()
    page.click(f"#merges-queue a[href$='#batch-{batch.pk}'] >> nth=0")
    assert page.url.endswith(f"#batch-{batch.pk}")
    screenshot(page, "merges-batches")
    page.set_viewport_size({"width": 1920, "height": 1000})
    screenshot(page, "merges-batches-1920")
    assert page.js_errors == []
