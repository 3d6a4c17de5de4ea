"""The runner is standard-library Python: it imports no Django (and no third-party
package), so it runs on a host that has only Python and tmux; and ``python -m
fleet.runner`` says clearly what it lacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
import fleet.runner.__main__, fleet.runner.supervisor, fleet.runner.harnesses, fleet.runner.tmux
stdlib = set(sys.stdlib_module_names)
foreign = sorted({m.split(".")[0] for m in sys.modules} - stdlib - {"fleet", "__main__"})
print(",".join(foreign))
"""


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "FLEET_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_imports_nothing_but_the_standard_library():
    done = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_without_a_token_it_says_how_to_get_one():
    done = subprocess.run(
        [sys.executable, "-m", "fleet.runner", "--once"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert done.returncode == 2
    assert "fleet_runner --register" in done.stderr
