"""The data directory is 0700 and the SQLite database (with its -wal and -shm) 0600:
it holds session keys. Checked on real processes, started with a permissive umask."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# While its connection is open after a write: the modes of the data dir and the files.
REPORT = """
import json, os, stat
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
store = SessionStore()
store["k"] = "v"
store.save()
data = settings.FLEET_DATA_DIR
paths = {"dir": data, "db": data / "fleet.sqlite3"}
paths.update({s: data / f"fleet.sqlite3-{s}" for s in ("wal", "shm")})
print(json.dumps({k: stat.S_IMODE(os.stat(p).st_mode) for k, p in paths.items()}))
"""


def manage(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(FLEET_DATA_DIR=str(data), DEBUG="1")
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        umask=0o022,  # what most shells set: files 0644, directories 0755 by default
        check=True,
    )


def modes(data: Path) -> dict[str, int]:
    return json.loads(manage(data, "shell", "-c", REPORT).stdout.strip().splitlines()[-1])


def test_a_new_data_dir_and_database_are_private(tmp_path):
    data = tmp_path / "fresh" / "data"
    manage(data, "migrate", "--noinput")
    assert modes(data) == {"dir": 0o700, "db": 0o600, "wal": 0o600, "shm": 0o600}


def test_an_existing_world_readable_database_is_tightened_on_start(tmp_path):
    data = tmp_path / "data"
    manage(data, "migrate", "--noinput")
    files = [data / f"fleet.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]
    # An older Fleet's files, with a connection open so the -wal and -shm exist.
    held = sqlite3.connect(files[0])
    try:
        held.execute("PRAGMA journal_mode=WAL")
        held.execute("CREATE TABLE scratch (x)")
        held.commit()
        for path in files:
            path.chmod(0o644)
        data.chmod(0o755)

        manage(data, "check")
        assert {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in files} == {
            p.name: 0o600 for p in files
        }
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    finally:
        held.close()
