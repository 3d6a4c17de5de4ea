"""The "worktree" permissions let each CLI edit, run the usual tools and commit in its
own worktree without asking, and nothing more: checked on what Fleet writes."""

from __future__ import annotations

import json
import subprocess

import pytest

from fleet import runtime
from fleet.models import Runtime
from fleet.runner.harnesses import (
    ALLOWED_COMMANDS,
    CODEX,
    FULL,
    GEMINI,
    OPENCODE,
    WORKTREE,
    Launch,
    git_common_dir,
)

from ..conftest import make_agent


def launch(directory, permissions=WORKTREE) -> Launch:
    return Launch(
        python="python3", package_root="/fleet", directory=str(directory), permissions=permissions
    )


def test_codex_may_write_the_repositorys_git_dir_of_a_linked_worktree(git_origin, tmp_path):
    _, clone = git_origin
    worktree = tmp_path / "wt"
    subprocess.run(
        ["git", "worktree", "add", "-q", "-b", "feat/T-1", str(worktree)], cwd=clone, check=True
    )
    common = git_common_dir(str(worktree))
    assert common == str((clone / ".git").resolve()) or common == str(clone / ".git")
    argv = CODEX.argv(launch(worktree))
    assert f"sandbox_workspace_write.writable_roots={json.dumps([common])}" in argv
    assert "workspace-write" in argv
    assert git_common_dir(str(clone)) == ""  # a plain clone: its .git is its own
    assert not any("writable_roots" in a for a in CODEX.argv(launch(clone)))
    assert "--dangerously-bypass-approvals-and-sandbox" in CODEX.argv(launch(worktree, FULL))


def test_opencode_and_gemini_run_the_usual_tools_and_ask_for_the_rest(tmp_path):
    config = json.loads(OPENCODE.files(launch(tmp_path))["opencode.json"])
    bash = config["permission"]["bash"]
    assert bash["git *"] == "allow" and bash["pytest *"] == "allow" and bash["*"] == "ask"
    full = json.loads(OPENCODE.files(launch(tmp_path, FULL))["opencode.json"])
    assert full["permission"]["bash"] == "allow"
    settings = json.loads(GEMINI.files(launch(tmp_path))[".gemini/settings.json"])
    assert settings["tools"]["allowed"] == [f"run_shell_command({c})" for c in ALLOWED_COMMANDS]
    assert "tools" not in json.loads(GEMINI.files(launch(tmp_path, FULL))[".gemini/settings.json"])


@pytest.mark.django_db
def test_a_command_that_cannot_be_read_is_refused_at_spawn(tmp_path):
    agent = make_agent(name="qa")
    with pytest.raises(runtime.RuntimeRefused, match="cannot be read"):
        runtime.attach(agent, harness="command", command="echo 'unbalanced", directory=tmp_path)
    assert not Runtime.objects.filter(agent=agent).exists()
