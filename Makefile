# The two commands of the README: `make run` and `make test`. Everything else is a helper.
# The interpreter of .venv: scripts/make_venv.sh picks the distribution's optimized Python 3.11
# when there is one, else python3.11 on PATH; PYTHON=... chooses (remove .venv first to remake it).
PYTHON ?=
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8084
export TIKTOKEN_CACHE_DIR ?= $(abspath ../shared/data/tiktoken)

.PHONY: lock run test lint format worker beat bench bench-full bench-peers smoke migrate clean

$(BIN)/python:
	bash scripts/make_venv.sh $(VENV) $(PYTHON)
	$(BIN)/pip install -q --upgrade pip

# constraints.txt pins every package (the versions the suite last passed with), so a fresh
# install is the tested one; regenerate it with `make lock` after changing pyproject.toml.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt '.[test]'
	@touch $@

## run: install, migrate, set up the embedded defaults, serve on $(PORT) with the production server
run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py collectstatic --no-input -v 0
	$(BIN)/python manage.py bootstrap
	PORT=$(PORT) exec $(BIN)/gunicorn -c gatewaysite/gunicorn.conf.py gatewaysite.wsgi:application

## test: install and run the whole test suite (Postgres and Redis: DATABASE_URL / REDIS_URL or the local defaults)
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest --create-db $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## lock: write constraints.txt from the virtualenv (after `pip install -U` of what changed)
lock: $(VENV)/.installed
	$(BIN)/pip freeze --exclude-editable | grep -v -e '^llm-gateway' -e ' @ ' > constraints.txt

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate

## worker / beat: the Celery processes (need REDIS_URL and DATABASE_URL)
worker: $(VENV)/.installed
	$(BIN)/celery -A gatewaysite worker -Q default,usage,latency --concurrency 2 --loglevel INFO

beat: $(VENV)/.installed
	$(BIN)/celery -A gatewaysite beat --loglevel INFO --schedule var/celerybeat-schedule

## bench: the benchmark, quick run (~3 min); bench-full: 8,000 concurrent streams (~8 min). See docs/benchmark.md
bench: $(VENV)/.installed
	bash bench/run.sh --quick

bench-full: $(VENV)/.installed
	bash bench/run.sh

## bench-peers: the quick run plus Portkey's gateway and LiteLLM's proxy beside it (pinned; installed once into bench/.peers/)
bench-peers: $(VENV)/.installed
	bash bench/run.sh --quick --peers

## smoke: start the embedded default in a scratch directory, one completion through the mock provider, stop
smoke: $(VENV)/.installed
	bash scripts/smoke_embedded.sh

clean:
	rm -rf $(VENV) var
