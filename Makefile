# Fleet: `make run` for a live demo, `make test` for the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The living demo (simulated agents) plays with `make run` unless FLEET_DEMO=0.
FLEET_DEMO ?= 1
DEMO_SPEED ?= 2

# The first Python >= 3.12 found: $PYTHON, then pythonX.Y/python3 on PATH, then pyenv's
# installed versions (pyenv shims only work with PYENV_VERSION set, so ask pyenv for the prefix).
FIND_PYTHON = \
  ok() { "$$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }; \
  for c in "$$PYTHON" python3.14 python3.13 python3.12 python3 python; do \
    [ -n "$$c" ] || continue; p=$$(command -v "$$c" 2>/dev/null) || continue; \
    if ok "$$p"; then echo "$$p"; exit 0; fi; \
  done; \
  if command -v pyenv >/dev/null 2>&1; then \
    for v in $$(pyenv versions --bare 2>/dev/null | sort -rV); do \
      p="$$(pyenv prefix "$$v" 2>/dev/null)/bin/python"; \
      if [ -x "$$p" ] && ok "$$p"; then echo "$$p"; exit 0; fi; \
    done; \
  fi; \
  echo "Fleet needs Python >= 3.12; none found (set PYTHON=/path/to/python3.12)." >&2; exit 1

# The agent CLIs a runner can start, pinned, installed into .tools/ (make clis): the
# real-CLI tests drive them against scripted model servers; make run's runner finds them.
CLIS ?= @anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0
TOOLS := .tools

.PHONY: help venv clis run test lint format clean-data bench

help:
	@echo "make run    - set up, seed the demo, serve http://$(HOST):$(PORT) with the worker"
	@echo "make test   - run the whole test suite (SQLite, in-memory channel layer)"
	@echo "make clis   - install the pinned agent CLIs (Claude Code, Codex) into $(TOOLS)/ (npm)"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make bench  - every benchmark and a 10-minute soak (fleet_bench all)"

$(VENV)/.installed: requirements.txt
	@set -e; py=$$($(FIND_PYTHON)); \
	if [ ! -x "$(PY)" ] || ! "$(PY)" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	  rm -rf "$(VENV)"; echo "Creating $(VENV) with $$py"; "$$py" -m venv "$(VENV)"; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

venv: $(VENV)/.installed

$(TOOLS)/.installed: Makefile
	@command -v npm >/dev/null || { echo "make clis needs Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error $(CLIS)
	@$(TOOLS)/node_modules/.bin/claude --version && $(TOOLS)/node_modules/.bin/codex --version
	@touch $@

clis: $(TOOLS)/.installed

run: venv
	$(PY) manage.py migrate --noinput
	@# The living demo brings its own fleet: seed the static one only without it.
	$(PY) manage.py fleet_demo $(if $(filter 0,$(FLEET_DEMO)),,--logins-only)
	@echo
	@echo "Fleet is starting on http://$(HOST):$(PORT)/  (Ctrl-C stops the web server, the worker and the demo)"
	@if [ "$(FLEET_DEMO)" != 0 ]; then \
	  echo "The living demo plays too (simulated agents, speed x$(DEMO_SPEED)); FLEET_DEMO=0 turns it off."; \
	  echo "Its story starts when you sign in (FLEET_DEMO_START=now: at once)."; \
	  export FLEET_HEARTBEAT_TTL=$${FLEET_HEARTBEAT_TTL:-30} FLEET_LEASE_TTL=$${FLEET_LEASE_TTL:-45} \
	    FLEET_HEARTBEAT_INTERVAL=$${FLEET_HEARTBEAT_INTERVAL:-10} FLEET_WORKER_INTERVAL=$${FLEET_WORKER_INTERVAL:-2}; \
	fi; \
	$(PY) manage.py fleet_worker & worker=$$!; \
	log=$${FLEET_DATA_DIR:-data}/access.log; mkdir -p "$$(dirname "$$log")"; \
	echo "(daphne's access log: $$log)"; \
	$(VENV)/bin/daphne --access-log "$$log" -b $(HOST) -p $(PORT) fleet.asgi:application & web=$$!; \
	token=$${FLEET_DATA_DIR:-data}/runner-local.token; \
	$(PY) manage.py fleet_runner --register local --token-file "$$token" >/dev/null; \
	FLEET_RUNNER_PATH=$(CURDIR)/.tools/node_modules/.bin $(PY) -m fleet.runner \
	  --url http://$(HOST):$(PORT) --token-file "$$token" 2>>$${FLEET_DATA_DIR:-data}/runner.log & runner=$$!; \
	echo "(the local runner's log: $${FLEET_DATA_DIR:-data}/runner.log)"; \
	sim=; if [ "$(FLEET_DEMO)" != 0 ]; then \
	  under=; if command -v tmux >/dev/null; then under=--under-runner; \
	  else echo "tmux is not installed: the demo's agents run as plain processes, not under the runner."; fi; \
	  $(PY) manage.py fleet_simulate --url http://$(HOST):$(PORT) --speed $(DEMO_SPEED) $$under & sim=$$!; \
	fi; \
	trap 'kill -TERM $$worker $$web $$sim $$runner 2>/dev/null' INT TERM; \
	wait $$web; kill -TERM $$worker $$sim $$runner 2>/dev/null; wait $$worker $$sim $$runner; \
	echo "Fleet stopped (agents' tmux sessions keep running: tmux ls)."

# Every benchmark (about 20 minutes); BENCH_ARGS="--database-url postgres://… --redis-url redis://…"
bench: venv
	$(PY) manage.py fleet_bench all $(BENCH_ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
