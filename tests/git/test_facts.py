"""Branch facts and the stale-base report: the near miss where merging a branch's
tree would quietly delete a feature another agent just shipped."""

from __future__ import annotations

from fleet.git import facts, merge, worktrees
from fleet.git import repo as gitrepo

from .conftest import commit, git

FEATURE_A = (
    "def total(items):\n    return sum(i.price for i in items)\n\n\n"
    "def discount(total, code):\n    if code == 'TEN':\n"
    "        return total * 0.9\n    return total\n"
)


def squash_merge(shop, worktree, key: str, title: str) -> str:
    """How the merge queue lands a task: one squashed ``KEY: title`` commit on main."""
    clone = shop["clone"]
    tip = merge.tip(clone, remote="origin", branch="main")
    candidate = merge.build_candidate(
        clone, main=tip, head=gitrepo.head_sha(worktree), message=f"{key}: {title}"
    )
    assert merge.push(clone, remote="origin", branch="main", new=candidate.sha, old=tip)
    return candidate.sha


def make_worktree(shop, key: str):
    wt = shop["root"] / "wt" / key
    worktrees.create(
        shop["clone"], worktree=wt, branch=f"feat/{key}", remote="origin", default="main"
    )
    return wt


def test_branch_facts(shop):
    wt = make_worktree(shop, "T-10")
    commit(wt, {"shop/tax.py": "RATE = 0.2\n", "README.md": "# shop\n\nTaxes.\n"}, "tax")
    facts_one = facts.branch_facts(
        shop["clone"], main="origin/main", head="feat/T-10", allowed=["shop/**"]
    )
    assert (facts_one.ahead, facts_one.behind) == (1, 0) and facts_one.single_commit
    changed = {f.path: (f.added, f.removed) for f in facts_one.files}
    assert changed == {"shop/tax.py": (1, 0), "README.md": (2, 0)}
    assert facts_one.outside == ["README.md"]
    assert "+RATE = 0.2" in facts_one.diff and not facts_one.main_moved
    commit(wt, {"shop/tax.py": "RATE = 0.25\n"}, "tax again")
    assert not facts.branch_facts(shop["clone"], main="origin/main", head="feat/T-10").single_commit


def test_the_near_miss_is_reported_and_cleared_by_a_rebase_and_merging_keeps_a(shop):
    clone = shop["clone"]
    b = make_worktree(shop, "T-2")  # B forks first ...
    a = make_worktree(shop, "T-1")
    commit(a, {"shop/cart.py": FEATURE_A}, "discount codes")
    merged_a = squash_merge(shop, a, "T-1", "Discount codes")  # ... A ships meanwhile
    commit(b, {"shop/shipping.py": "FREE_OVER = 50\n"}, "free shipping")

    tip = merge.tip(clone, remote="origin", branch="main")
    assert tip == merged_a
    lost = facts.stale_base_report(clone, main=tip, head="feat/T-2")
    assert [(h.path, h.start) for h in lost] == [("shop/cart.py", 3)]
    assert "def discount(total, code):" in lost[0].lines
    assert [(c.task_key, c.sha) for c in lost[0].commits] == [("T-1", merged_a)]
    # The tree diff alone would delete A's function: that is the danger reported.
    assert "-def discount(total, code):" in git(clone, "diff", tip, "feat/T-2")

    assert worktrees.rebase(b, onto=tip, branch="feat/T-2") == []
    assert facts.stale_base_report(clone, main=tip, head="feat/T-2") == []
    merged_b = squash_merge(shop, b, "T-2", "Free shipping")
    cart = git(clone, "show", f"{merged_b}:shop/cart.py")
    assert "def discount" in cart and git(clone, "show", f"{merged_b}:shop/shipping.py")
    assert git(clone, "log", "--format=%s", "-2", merged_b).splitlines() == [
        "T-2: Free shipping",
        "T-1: Discount codes",
    ]


def test_a_whole_file_main_gained_is_reported_and_common_lines_are_not(shop):
    clone = shop["clone"]
    b = make_worktree(shop, "T-21")
    a = make_worktree(shop, "T-20")
    commit(a, {"shop/gift.py": "}\n\nGIFT = True\n"}, "gift cards")
    squash_merge(shop, a, "T-20", "Gift cards")
    # B's own edit adds a "}" line too; only main's lines are reported, by position.
    commit(b, {"shop/cart.py": "}\n" + FEATURE_A}, "brace")
    tip = merge.tip(clone, remote="origin", branch="main")
    lost = facts.stale_base_report(clone, main=tip, head="feat/T-21")
    assert [(h.path, h.start, h.lines) for h in lost] == [
        ("shop/gift.py", 1, ["}", "", "GIFT = True"])
    ]
    assert lost[0].commits[0].task_key == "T-20"


def test_no_report_when_main_has_not_moved(shop):
    wt = make_worktree(shop, "T-30")
    commit(wt, {"shop/cart.py": "x = 1\n"}, "rewrite")
    assert facts.stale_base_report(shop["clone"], main="origin/main", head="feat/T-30") == []


def test_removed_lines_that_look_like_headers_are_still_lines(shop):
    clone = shop["clone"]
    b = make_worktree(shop, "T-41")
    a = make_worktree(shop, "T-40")
    commit(a, {"db/schema.sql": "--- a/b\n-- comment\nCREATE TABLE t (id int);\n"}, "schema")
    squash_merge(shop, a, "T-40", "Schema")
    commit(b, {"shop/x.py": "X = 1\n"}, "x")
    tip = merge.tip(clone, remote="origin", branch="main")
    lost = facts.stale_base_report(clone, main=tip, head="feat/T-41")
    assert [(h.path, h.lines) for h in lost] == [
        ("db/schema.sql", ["--- a/b", "-- comment", "CREATE TABLE t (id int);"])
    ]


def test_lines_from_several_main_commits_are_each_attributed(shop):
    clone = shop["clone"]
    stale = make_worktree(shop, "T-52")
    first = make_worktree(shop, "T-50")
    commit(first, {"shop/cart.py": FEATURE_A}, "discount")
    squash_merge(shop, first, "T-50", "Discount")
    second = make_worktree(shop, "T-51")  # forks after T-50 landed
    commit(second, {"shop/cart.py": FEATURE_A + "\n\nVAT = 0.2\n"}, "vat")
    squash_merge(shop, second, "T-51", "VAT")
    commit(stale, {"shop/other.py": "O = 1\n"}, "other")
    tip = merge.tip(clone, remote="origin", branch="main")
    lost = facts.stale_base_report(clone, main=tip, head="feat/T-52")
    assert {c.task_key for h in lost for c in h.commits} == {"T-50", "T-51"}
