"""Fleet's agent side: a stdlib-only client, CLI, Claude Code hooks and an MCP bridge.

Importing this package never imports Django, so it runs from any worktree with
only ``PYTHONPATH`` pointing at Fleet's checkout (``fleet/__init__.py`` is empty).
"""
