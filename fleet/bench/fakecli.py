"""A stand-in agent CLI for the runner's tests and benchmark (the command harness
runs it in tmux).

It boots for a moment, then shows the prompt ``fleet>`` and reads lines: each line
is appended to ``received.log`` in its directory. ``work N`` keeps it busy for N
seconds (``... working`` on screen), ``crash N`` exits with code N, end of input
(Ctrl-D, the harness's exit key) exits 0. ``received.times`` has each line with the
time it arrived (the benchmark's wake latency).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    log = Path("received.log")
    print(f"fake cli {os.getpid()} booting", flush=True)
    time.sleep(float(os.environ.get("FAKECLI_BOOT", "0.3")))
    while True:
        sys.stdout.write("\nfleet> ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            print("bye")
            return 0
        line = line.rstrip("\n")
        with log.open("a") as out:
            out.write(line + "\n")
        with Path("received.times").open("a") as out:
            out.write(f"{time.time():.4f}\t{line}\n")
        word, _, arg = line.partition(" ")
        if word == "crash":
            return int(arg or 7)
        if word == "work":
            print("... working", flush=True)
            time.sleep(float(arg or 1))
        print(f"got: {line}")


if __name__ == "__main__":
    sys.exit(main())
