"""The Codex CLI harness against screens captured from the real Codex 0.171 in tmux
(trimmed), and the command line and configuration the runner gives it."""

from __future__ import annotations

import tomllib

from fleet.runner.harnesses import CODEX, FULL, Launch

SPLASH = """
  >_ OpenAI Codex (v0.171.0)
     /srv/agents/olga

› Ask Codex to do anything

  ? for shortcuts
"""

IDLE = """
› hello nudge one

• Hello from the scripted model.

  Worked for <1s • 14:22

› Ask Codex to do anything

  GPT-6.2-Sol default · /srv/agents/olga · hello nudge one
  ← for agents · ? for shortcuts                                  ⚠ 1 warning · f2 to view
"""

BUSY = """
› please call inbox

◦ Calling fleet.inbox
    + Show details

◦ Working (5s • esc to interrupt)

› Ask Codex to do anything

  GPT-6.2-Sol default · /srv/agents/olga · please call inbox
  ← for agents · ? for shortcuts                                  ⚠ 1 warning · f2 to view
"""

TYPED = """
     /srv/agents/olga

› hello nudge one

  GPT-6.2-Sol default · /srv/agents/olga
                                                                  ⚠ 1 warning · f2 to view
"""


def test_ready_only_at_a_configured_idle_prompt():
    assert CODEX.ready_at(IDLE)
    assert not CODEX.ready_at(SPLASH)  # the session is not configured yet
    assert CODEX.busy_at(BUSY) and not CODEX.ready_at(BUSY)
    assert not CODEX.ready_at(TYPED)  # text waits in the input line
    assert CODEX.unsent(TYPED, "hello nudge one")
    assert not CODEX.unsent(IDLE, "hello nudge one")  # sent: only in the history


def launch(**kwargs) -> Launch:
    return Launch(python="/py", package_root="/pkg", directory="/srv/agents/olga", **kwargs)


def test_argv_keeps_the_key_in_the_environment_and_no_daemon():
    environ = {"OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://models:8000/v1"}
    argv = CODEX.argv(launch(environ=environ, prompt="Boot.", model="gpt-x"))
    assert argv[:2] == ["codex", "--no-daemon"]
    assert 'model_providers.fleet.base_url="http://models:8000/v1"' in argv
    assert not any("sk-secret" in a for a in argv)
    assert argv[-1] == "Boot." and "gpt-x" in argv
    assert argv[argv.index("--ask-for-approval") :][:2] == ["--ask-for-approval", "never"]
    plain = CODEX.argv(launch(permissions=FULL))
    assert "--dangerously-bypass-approvals-and-sandbox" in plain
    assert not any("base_url" in a for a in plain)  # the provider's own default


def test_config_is_valid_toml_with_our_provider_and_the_fleet_mcp_server():
    config = tomllib.loads(CODEX.files(launch())[".fleet/codex/config.toml"])
    assert config["model_provider"] == "fleet"
    provider = config["model_providers"]["fleet"]
    assert provider["env_key"] == "OPENAI_API_KEY" and provider["wire_api"] == "responses"
    assert provider["requires_openai_auth"] is False
    assert config["projects"]["/srv/agents/olga"]["trust_level"] == "trusted"
    server = config["mcp_servers"]["fleet"]
    assert server["command"] == "/py" and server["args"] == ["-m", "fleet.agent", "mcp"]
    assert server["env"] == {"PYTHONPATH": "/pkg"}
    assert server["default_tools_approval_mode"] == "approve"
    assert CODEX.env_set(launch()) == {"CODEX_HOME": "/srv/agents/olga/.fleet/codex"}
