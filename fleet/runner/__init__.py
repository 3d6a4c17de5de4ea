"""The runner: a supervisor on a host that starts each agent's CLI in its own tmux
session inside the agent's worktree and keeps what runs equal to what Fleet wants.

Standard-library Python like ``fleet.agent`` (no Django): it speaks HTTP to Fleet with
its own runner token (``python -m fleet.runner``) and drives tmux. Fleet keeps the
desired state in its database; each sync the runner reports what it holds (alive,
ready at its prompt, busy, exited with a code, the last lines of the screen) and
reconciles towards the answer, so repeating a step is always safe.
"""
