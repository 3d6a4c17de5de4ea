"""Harnesses as data: how each agent CLI is launched in a worktree, where its MCP
configuration and hooks go (in that CLI's own format), what its idle prompt and busy
screen look like, how a message is typed into it and how it is ended.

Fleet (spawn) writes the configuration files into the agent's directory; the runner
reads the rest. Nothing here holds a token: hooks and the MCP bridge read it from
the 0600 ``.fleet/identity.json``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# What an agent may do without asking, per repository setting.
WORKTREE, FULL = "worktree", "full"
PERMISSIONS = [(WORKTREE, "edit, test and commit in its own worktree"), (FULL, "everything")]

# Shell commands an agent may run unattended in its worktree ("worktree" permissions):
# git, the usual test runners and build tools, and Fleet's own agent CLI.
ALLOWED_COMMANDS = (
    "git",
    "python",
    "python3",
    "pytest",
    "make",
    "npm",
    "npx",
    "node",
    "ruff",
    "ls",
    "cat",
    "grep",
    "find",
    "head",
    "tail",
    "wc",
    "diff",
    "mkdir",
    "touch",
)


@dataclass(frozen=True)
class Launch:
    """What the runner needs to start one agent's CLI."""

    python: str  # the interpreter that runs fleet.agent (hooks, MCP bridge)
    package_root: str  # on PYTHONPATH so ``-m fleet.agent`` imports
    directory: str  # the agent's worktree (or its own directory)
    model: str = ""
    permissions: str = WORKTREE
    prompt: str = ""  # the opening instruction, passed on the command line
    command: str = ""  # the plain-command harness's command line
    # The runner's environment passed through to the CLI (the harness's ``env``).
    environ: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Harness:
    name: str
    title: str
    binary: str  # looked up on the runner's PATH (or FLEET_RUNNER_PATH)
    ready: str  # regex: the CLI idles at its own prompt (searched in the screen's tail)
    busy: str  # regex: the CLI is working (a nudge waits)
    exit_keys: tuple[str, ...]  # typed to end it cleanly ("" = Enter)
    argv: Callable[[Launch], list[str]]
    files: Callable[[Launch], dict[str, str]] = lambda launch: {}
    env: tuple[str, ...] = ()  # passed through from the runner's environment
    env_set: Callable[[Launch], dict[str, str]] = lambda launch: {}
    hooks: bool = False  # SessionStart hook boots it (else the opening prompt says how)
    dialogs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (screen regex, keys) answered
    interrupt: tuple[str, ...] = ("C-c",)
    busy_lines: int = 8  # how far up from the bottom the busy marker is looked for
    typed_prompt: bool = False  # the opening prompt is typed at the first ready prompt
    input_line: str = r"^\s*(?:[❯>›▌]|fleet>)"  # regex: a line where typed text is echoed

    def ready_at(self, screen: str) -> bool:
        return bool(re.search(self.ready, _tail(screen), re.M)) and not self.busy_at(screen)

    def unsent(self, screen: str, text: str) -> bool:
        """``text`` still sits in the input line (typed, its Enter not taken): the last
        line that starts like the CLI's prompt holds it."""
        lines = [row for row in screen.splitlines() if re.search(self.input_line, row)]
        return bool(lines) and text[:24].strip() in lines[-1]

    def busy_at(self, screen: str) -> bool:
        return bool(self.busy) and bool(re.search(self.busy, _tail(screen, self.busy_lines), re.M))


def _tail(screen: str, lines: int = 12) -> str:
    rows = [row for row in screen.splitlines() if row.strip()]
    return "\n".join(rows[-lines:])


def agent_command(launch: Launch, *args: str) -> list[str]:
    return [launch.python, "-m", "fleet.agent", *args]


def _agent_env(launch: Launch) -> dict[str, str]:
    return {"PYTHONPATH": launch.package_root}


def _hook(launch: Launch, event: str) -> str:
    if event == "PostToolUse":  # on every tool call: the short path (fleet.agent.quickhook)
        argv = [launch.python, "-S", "-m", "fleet.agent.quickhook"]
    else:
        argv = agent_command(launch, "hook", event)
    return " ".join(shlex.quote(p) for p in argv)


def _mcp_server(launch: Launch) -> dict:
    return {
        "command": launch.python,
        "args": ["-m", "fleet.agent", "mcp"],
        "env": _agent_env(launch),
    }


# --- Claude Code ------------------------------------------------------------


def _claude_files(launch: Launch) -> dict[str, str]:
    allow = [f"Bash({cmd}:*)" for cmd in ALLOWED_COMMANDS] + [
        "Edit",
        "Write",
        "MultiEdit",
        "Read",
        "Glob",
        "Grep",
        "mcp__fleet",
    ]
    settings = {
        "env": _agent_env(launch),
        "enableAllProjectMcpServers": True,
        "enabledMcpjsonServers": ["fleet"],
        "permissions": {"allow": allow, "deny": ["Read(./.fleet/**)"]},
        "hooks": {
            event: [{"hooks": [{"type": "command", "command": _hook(launch, event)}]}]
            for event in ("SessionStart", "PostToolUse", "Stop")
        },
    }
    mcp = {"mcpServers": {"fleet": _mcp_server(launch)}}
    return {
        ".mcp.json": json.dumps(mcp, indent=2) + "\n",
        ".claude/settings.local.json": json.dumps(settings, indent=2) + "\n",
    }


def _claude_argv(launch: Launch) -> list[str]:
    argv = ["claude"]
    if launch.model:
        argv += ["--model", launch.model]
    if launch.permissions == FULL:
        argv += ["--dangerously-skip-permissions"]
    else:
        argv += ["--permission-mode", "acceptEdits"]
    if launch.prompt:
        argv.append(launch.prompt)
    return argv


CLAUDE = Harness(
    name="claude",
    title="Claude Code",
    binary="claude",
    ready=r"^\s*[❯>]\s*$",
    busy=r"esc to interrupt",
    exit_keys=("/exit", ""),
    argv=_claude_argv,
    files=_claude_files,
    env=(
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
        "CLAUDE_CODE_USE_BEDROCK",
        "CLAUDE_CODE_USE_VERTEX",
        "DISABLE_TELEMETRY",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "CLAUDE_CONFIG_DIR",
    ),
    hooks=True,
    dialogs=(
        (r"Do you trust the files in this folder|trust this folder", ("Enter",)),
        (r"Yes, I trust this folder", ("Enter",)),
    ),
    interrupt=("Escape",),
)

# --- Codex CLI --------------------------------------------------------------


def _toml(value) -> str:
    return json.dumps(value)  # TOML basic strings and arrays of them are JSON-compatible


OPENAI_URL = "https://api.openai.com/v1"


def _codex_files(launch: Launch) -> dict[str, str]:
    """``CODEX_HOME/config.toml``: a provider of our own (the built-in ``openai`` one
    opens a login onboarding that stores the key in ``auth.json``; this one reads
    ``OPENAI_API_KEY`` from the environment and asks nothing), the worktree trusted, and
    the fleet MCP server with its tools approved (``--ask-for-approval never`` refuses
    any MCP call that would need asking)."""
    server = _mcp_server(launch)
    env = ", ".join(f"{k} = {_toml(v)}" for k, v in server["env"].items())
    lines = [
        "# Written by Fleet: this agent's Codex configuration (CODEX_HOME).",
        'model_provider = "fleet"',
        "",
        "[model_providers.fleet]",
        'name = "OpenAI"',
        f"base_url = {_toml(OPENAI_URL)}  # the runner's OPENAI_BASE_URL overrides it",
        'env_key = "OPENAI_API_KEY"',
        'wire_api = "responses"',
        "requires_openai_auth = false",
        "",
        f"[projects.{_toml(launch.directory)}]",
        'trust_level = "trusted"',
        "",
        "[mcp_servers.fleet]",
        f"command = {_toml(server['command'])}",
        f"args = {_toml(server['args'])}",
        f"env = {{ {env} }}",
        'default_tools_approval_mode = "approve"',
        "",
    ]
    return {".fleet/codex/config.toml": "\n".join(lines)}


def _codex_argv(launch: Launch) -> list[str]:
    # --no-daemon: else the TUI starts a shared app-server daemon that outlives its tmux
    # session (and every agent's CLI would share it).
    argv = ["codex", "--no-daemon"]
    url = launch.environ.get("OPENAI_BASE_URL")
    if url:
        # A custom provider ignores OPENAI_BASE_URL: the runner's value goes in as an
        # override (an address, never a key: the key stays in the environment).
        argv += ["-c", f"model_providers.fleet.base_url={_toml(url)}"]
    if launch.model:
        argv += ["--model", launch.model]
    if launch.permissions == FULL:
        argv += ["--dangerously-bypass-approvals-and-sandbox"]
    else:
        argv += ["--sandbox", "workspace-write", "--ask-for-approval", "never"]
        # A linked worktree's index, refs and objects live in the repository's .git:
        # writable too, or `git commit` fails on index.lock inside the sandbox.
        common = git_common_dir(launch.directory)
        if common:
            argv += ["-c", f"sandbox_workspace_write.writable_roots={_toml([common])}"]
    if launch.prompt:
        argv.append(launch.prompt)
    return argv


def git_common_dir(directory: str) -> str:
    """The repository's .git of a linked worktree (its ``.git`` is a file naming
    ``<repo>/.git/worktrees/<name>``); "" for anything else."""
    try:
        with open(f"{directory}/.git") as f:
            line = f.read().strip()
    except OSError:
        return ""
    if not line.startswith("gitdir:"):
        return ""
    gitdir = line.removeprefix("gitdir:").strip()
    if not gitdir.startswith("/"):
        gitdir = f"{directory}/{gitdir}"
    parts = gitdir.rstrip("/").split("/")
    return "/".join(parts[:-2]) if len(parts) > 2 and parts[-2] == "worktrees" else ""


CODEX = Harness(
    name="codex",
    title="Codex CLI",
    binary="codex",
    # The input line, its status line (model · directory) and the footer: the prompt
    # shows alone for a second at start, before the session is configured.
    ready=r"^› .*\n.+ · .+\n.*\? for shortcuts",
    busy=r"esc to interrupt",
    exit_keys=("/quit", ""),
    argv=_codex_argv,
    files=_codex_files,
    env=("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    env_set=lambda launch: {"CODEX_HOME": f"{launch.directory}/.fleet/codex"},
    interrupt=("Escape",),
    input_line=r"^›",
)

# --- Gemini CLI -------------------------------------------------------------


def _gemini_files(launch: Launch) -> dict[str, str]:
    settings = {
        "mcpServers": {"fleet": {**_mcp_server(launch), "trust": True}},
        "hooks": {},
    }
    if launch.permissions != FULL:
        # Edits are approved by --approval-mode auto_edit; these shell commands too.
        settings["tools"] = {"allowed": [f"run_shell_command({c})" for c in ALLOWED_COMMANDS]}
    return {".gemini/settings.json": json.dumps(settings, indent=2) + "\n"}


def _gemini_argv(launch: Launch) -> list[str]:
    argv = ["gemini"]
    if launch.model:
        argv += ["--model", launch.model]
    argv += ["--yolo"] if launch.permissions == FULL else ["--approval-mode", "auto_edit"]
    if launch.prompt:
        argv += ["--prompt-interactive", launch.prompt]
    return argv


GEMINI = Harness(
    name="gemini",
    title="Gemini CLI",
    binary="gemini",
    ready=r"Type your message",
    busy=r"esc to cancel",
    exit_keys=("/quit", ""),
    argv=_gemini_argv,
    files=_gemini_files,
    env=("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
)

# --- OpenCode ---------------------------------------------------------------


def _opencode_files(launch: Launch) -> dict[str, str]:
    server = _mcp_server(launch)
    config = {
        "$schema": "https://opencode.ai/config.json",
        "mcp": {
            "fleet": {
                "type": "local",
                "command": [server["command"], *server["args"]],
                "environment": server["env"],
                "enabled": True,
            }
        },
        "permission": {
            "edit": "allow",
            "bash": "allow"
            if launch.permissions == FULL
            else {**{f"{c} *": "allow" for c in ALLOWED_COMMANDS}, "*": "ask"},
        },
    }
    return {"opencode.json": json.dumps(config, indent=2) + "\n"}


def _opencode_argv(launch: Launch) -> list[str]:
    argv = ["opencode"]
    if launch.model:
        argv += ["--model", launch.model]
    if launch.prompt:
        argv += ["--prompt", launch.prompt]
    return argv


OPENCODE = Harness(
    name="opencode",
    title="OpenCode",
    binary="opencode",
    ready=r"ctrl\+p|enter send",
    busy=r"esc interrupt|working",
    exit_keys=("/exit", ""),
    argv=_opencode_argv,
    files=_opencode_files,
    env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENCODE_CONFIG"),
)

# --- any command ------------------------------------------------------------


def _command_argv(launch: Launch) -> list[str]:
    return shlex.split(launch.command)


COMMAND = Harness(
    name="command",
    title="Command",
    binary="",  # the command's first word
    ready=r"^\s*(?:[>❯$]|fleet>)\s*$",
    busy=r"\.\.\. ?working",
    exit_keys=("C-d",),
    argv=_command_argv,
    busy_lines=1,
    typed_prompt=True,
)

HARNESSES: dict[str, Harness] = {h.name: h for h in (CLAUDE, CODEX, GEMINI, OPENCODE, COMMAND)}
CHOICES = [(h.name, h.title) for h in HARNESSES.values()]
# Files of any harness's configuration: untracked, like the rest of the identity layer.
CONFIG_PATTERNS = [
    "/.mcp.json",
    "/.claude/settings.local.json",
    "/.gemini/",
    "/opencode.json",
]


def opening(role: str, hooks: bool) -> str:
    """Fleet's opening instruction for a session of ``role`` (the first prompt)."""
    if hooks:
        return (
            f"You are a Fleet {role} agent. Your session summary from Fleet is above: "
            "follow its loop now."
        )
    return (
        f"You are a Fleet {role} agent. Call the fleet MCP tool `boot` first and follow "
        "the loop it gives you."
    )
