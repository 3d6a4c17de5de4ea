"""``manage.py fleet_bench``: a tiny run proves the harness works end to end (the
figures themselves are the benchmark's business, never asserted on)."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.slow


def test_heartbeat_bench_runs_servers_and_reports_what_it_measured(tmp_path, capsys):
    out = tmp_path / "hb.json"
    call_command(
        "fleet_bench",
        "heartbeat",
        "--agents",
        "3",
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--json",
        str(out),
    )
    printed = capsys.readouterr().out
    assert "heartbeat" in printed and "baseline" in printed and "targets:" in printed
    figures = json.loads(out.read_text())
    daphne = figures["servers"]["daphne"]
    for run in ("raw", "baseline", "heartbeat"):
        assert daphne[run]["requests"] > 0 and daphne[run]["errors"] == 0, daphne[run][
            "error_samples"
        ]
    # Every heartbeat the server accepted was stored: one SpendEvent each.
    assert daphne["accepted"] == daphne["stored_spend_events"] > 0
    assert set(daphne["met"]) == {
        "per_second",
        "p99_ms",
        "errors",
        "baseline_ratio",
        "nothing_lost",
    }


def test_bench_refuses_silly_bounds():
    with pytest.raises(CommandError, match="--agents"):
        call_command("fleet_bench", "heartbeat", "--agents", "0")
    with pytest.raises(CommandError, match="--quiet-seconds"):
        call_command("fleet_bench", "live", "--quiet-seconds", "-1")


def test_git_bench_runs_on_a_small_generated_repository(tmp_path, capsys):
    out = tmp_path / "git.json"
    call_command(
        "fleet_bench",
        "git",
        "--files",
        "300",
        "--commits",
        "250",
        "--worktrees",
        "5",
        "--merges",
        "2",
        "--json",
        str(out),
    )
    assert "stale-base report" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["merged"] == figures["merges"] == 2
    assert figures["stale_report_hunks"] > 0  # the branch forked 248 commits back
    assert figures["stale_resurrected_hunks"] > 0 and figures["met"]["stale_named_after_fork"]
    assert figures["stale_ratio"] > 0 and figures["stale_cached_shas_ms"] < 50
    assert figures["worktree_ratio"] > 0 and set(figures["met"]) >= {"worktree_ratio"}


def test_merges_bench_drains_serial_and_batched_and_checks_what_landed(tmp_path, capsys):
    out = tmp_path / "merges.json"
    call_command(
        "fleet_bench",
        "merges",
        "--tasks",
        "4",
        "--check-seconds",
        "0",
        "--failing",
        "1",
        "--batch",
        "3",
        "--json",
        str(out),
    )
    assert "ratio" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["met"]["correct"] and figures["problems"] == []
    assert figures["merged"] == {"1": 3, "3": 3} and figures["failing_keys"] == ["M-2"]
    # Serial: one check per task. Batched: [M-1..M-3] red, [M-1, M-2] red, [M-1] green
    # (M-2 found), then M-3 and M-4 together.
    assert figures["serial_checks"] == 4 and figures["batched_checks"] == 4
    with pytest.raises(CommandError, match="--failing"):
        call_command("fleet_bench", "merges", "--tasks", "2", "--failing", "2")


def test_plan_bench_measures_the_matrix_and_a_claim_race(tmp_path, capsys):
    out = tmp_path / "plan.json"
    call_command(
        "fleet_bench",
        "plan",
        "--tasks",
        "4",
        "--paths",
        "20",
        "--files",
        "1500",
        "--claimers",
        "6",
        "--seconds",
        "1",
        "--json",
        str(out),
    )
    assert "double claims" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    # Tasks 0-2 each declare five of the next task's files: three overlaps of five.
    assert figures["matrix"]["shared_paths"] == 15
    for race, paths in (("claims", 20), ("claims_open", 6 * 20)):
        assert figures[race]["paths"] == paths
        assert figures[race]["granted"] > 0 and figures[race]["double_claims"] == 0
        assert figures[race]["errors"] == 0
    # Among many paths most claims are granted; fighting over 20, far fewer are.
    open_rate = figures["claims_open"]["granted"] / figures["claims_open"]["attempts"]
    assert open_rate > figures["claims"]["granted"] / figures["claims"]["attempts"]


def test_live_bench_sees_heartbeats_arrive_at_dashboards(tmp_path, capsys):
    out = tmp_path / "live.json"
    call_command(
        "fleet_bench",
        "live",
        "--agents",
        "5",
        "--dashboards",
        "2",
        "--seconds",
        "2",
        "--quiet-seconds",
        "3",
        "--json",
        str(out),
    )
    assert "heartbeat → dashboard" in capsys.readouterr().out
    figures = json.loads(out.read_text())["layers"]["memory"]
    assert figures["channel_layer"] == "in-memory"
    assert figures["errors"] == 0 and figures["heartbeats_sent"] > 0
    assert figures["seen"] > 0 and figures["p50_ms"] > 0
    assert 0 < figures["frames_per_client_s"] <= figures["frames_per_client_s_max"]
    # The quiet phase: five agents beat every 10 s; in 3 s some did, and were seen.
    quiet = figures["quiet"]
    assert quiet["agents"] == 5 and quiet["seen"] > 0 and quiet["p50_ms"] > 0


def test_sim_bench_uses_the_simulator_as_its_load(tmp_path, capsys):
    out = tmp_path / "sim.json"
    call_command("fleet_bench", "sim", "--speed", "30", "--duration", "200", "--json", str(out))
    assert "agent API calls" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    # (The scenario itself is tests/sim's; here: the load was the simulator's calls.)
    assert figures["steps"] == 10 and figures["api"]["calls"] > 0
    assert figures["api"]["routes"]["POST heartbeat"]["calls"] > 0
    assert figures["web_rss_mb"] and figures["worker_rss_mb"]


def test_sim_bench_refuses_silly_bounds():
    for args in (["--builders", "0"], ["--speed", "0"], ["--duration", "5"]):
        with pytest.raises(CommandError):
            call_command("fleet_bench", "sim", *args)


def test_review_bench_renders_a_task_page_on_a_generated_change(tmp_path, capsys):
    out = tmp_path / "review.json"
    call_command("fleet_bench", "review", "--lines", "60", "--files", "4", "--json", str(out))
    assert "task page, first screen" in capsys.readouterr().out
    page = json.loads(out.read_text())["page"]
    assert page["files"] == 4 and page["rendered_files"] >= 1 and page["comments"] == 4
