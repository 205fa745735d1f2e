# The two commands: `make run` (install, migrate, demo data, serve) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
PORT ?= 8000

# First Python >= 3.12 found: $PYTHON, then python3.13/3.12 on PATH (pyenv shims
# included), then pyenv's install folders.
define find_python
for c in "$${PYTHON:-}" python3.13 python3.12 python3 \
    $$(ls -d $$HOME/.pyenv/versions/3.1[3-9]*/bin/python3 $$HOME/.pyenv/versions/3.12*/bin/python3 2>/dev/null | sort -rV); do \
  [ -n "$$c" ] || continue; \
  p=$$(command -v "$$c" 2>/dev/null) || continue; \
  "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { "$$p" -c 'import sys; print(sys.executable)'; exit 0; }; \
done; exit 1
endef

.PHONY: help install run test lint bench cluster clean

help:
	@echo "make run    install, migrate, load demo data, print the admin login, serve on :$(PORT)"
	@echo "make test   lint + the whole test suite against PostgreSQL and Redis"
	@echo "make bench  the benchmark harness (prints one table)"
	@echo "make cluster  nginx + 2 app instances + PostgreSQL primary/standby + Redis, here"
	@echo "make stop   stop the embedded PostgreSQL that make run started (without DATABASE_URL)"

$(VENV)/.synced: pyproject.toml uv.lock Makefile
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  base=$$($(find_python)) || { echo "error: Python 3.12+ is required (Django 6); install python3.13 or set PYTHON=/path/to/python3.13" >&2; exit 1; }; \
	  echo "Using $$base"; "$$base" -m venv $(VENV); \
	fi; \
	uv=$$(command -v $(VENV)/bin/uv || command -v uv || true); \
	if [ -z "$$uv" ] || ! "$$uv" --version >/dev/null 2>&1; then \
	  $(PY) -m ensurepip --upgrade >/dev/null 2>&1 || true; \
	  $(PY) -m pip install --quiet --disable-pip-version-check uv; uv=$(VENV)/bin/uv; \
	fi; \
	UV_PROJECT_ENVIRONMENT=$(VENV) "$$uv" sync --frozen --inexact --compile-bytecode --python $(PY) --quiet
	@touch $@

install: $(VENV)/.synced

# A first run writes a local .env (a random SECRET_KEY, an admin login, plain
# HTTP on localhost); every variable in it can be overridden by the environment.
.env:
	@$(PY) -c 'import secrets; print(f"SECRET_KEY={secrets.token_urlsafe(50)}\nALLOWED_HOSTS=localhost,127.0.0.1,[::1]\nSECURE_SSL_REDIRECT=False\nSESSION_COOKIE_SECURE=False\nCSRF_COOKIE_SECURE=False\nSECURE_HSTS_SECONDS=0\nADMIN_EMAIL=admin@example.com\nADMIN_PASSWORD={secrets.token_urlsafe(12)}")' > .env
	@echo "Wrote .env (local settings, git-ignored)."

# The environment wins over .env: config.dotenv prints exports only for the
# variables the environment lacks (`set -a; source .env` would override them).
LOAD_DOTENV = dotenv=$$($(PY) -m config.dotenv .env); eval "$$dotenv"; export PORT=$${PORT:-8000}

run: install .env
	@set -e; $(LOAD_DOTENV); \
	$(MANAGE) ensure_database; \
	$(MANAGE) migrate --noinput -v 0; \
	$(MANAGE) collectstatic --noinput -v 0; \
	$(MANAGE) seed_demo --users 50 --products 500 --categories 8 --seed 1; \
	$(MANAGE) ensure_admin --email "$$ADMIN_EMAIL" --password "$$ADMIN_PASSWORD"; \
	echo ""; \
	echo "  Admin:    http://127.0.0.1:$$PORT/admin/   login: $$ADMIN_EMAIL / $$ADMIN_PASSWORD"; \
	echo "  API docs: http://127.0.0.1:$$PORT/api/docs/ (ReDoc: /api/redoc/)"; \
	echo ""; \
	$(MANAGE) db_worker & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(PY) -m config.serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint
	DJANGO_SETTINGS_MODULE=tests.settings $(MANAGE) spectacular --validate --fail-on-warn --file /dev/null
	$(PY) -m pytest -q

# The embedded PostgreSQL outlives `make run` (the next run reuses it); this
# stops it, as the user it runs as (another one when run as root).
.PHONY: stop
stop: install
	$(PY) -m config.embedded stop

# make bench ARGS="--products 100000 --only admin,cache" (see python -m bench --help)
bench: install
	$(PY) -m bench $(ARGS)

# nginx (docker/nginx.conf) + 2 app instances + PostgreSQL primary and standby + Redis,
# all on this machine until Ctrl-C (python -m bench.cluster --help for ARGS).
cluster: install
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }
	$(PY) -m bench.cluster $(ARGS)

clean:
	rm -rf $(VENV) staticfiles
