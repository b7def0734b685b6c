# Everything runs inside a project-local virtual environment that the first target creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (as on CI
# machines) Python never writes them either: every process, each `airflow` command a test starts among
# them, would then compile Airflow's ~2,000 modules again (seconds each time).
UV_INSTALL = uv pip install --quiet --compile-bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/$(UV_INSTALL) --python $(BIN)/python -e ".[test,emulator]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite runs on PYTEST_WORKERS processes (pytest-xdist); the tests of a real deployment form groups
# (tests/conftest.py), each run by one worker that starts its deployment once.
PYTEST_WORKERS ?= 3
XDIST = -n $(PYTEST_WORKERS) --dist loadgroup

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q $(XDIST)

# example_dags/example_kling_basic.py end to end in .demo/ against the bundled emulator, or against the
# real service when KLING_API_KEY is set (KLING_IMAGE_URL picks the image). Ends with the MP4's path.
demo: $(STAMP)
	@BIN="$(abspath $(BIN))" bash scripts/demo.sh

# Only the tests that start a real Airflow deployment (api-server, scheduler, dag-processor, triggerer,
# LocalExecutor, SQLite) with the emulator; `make test` runs them too. Logs land in test-artifacts/.
.PHONY: e2e
e2e: $(STAMP)
	$(BIN)/pytest -q -m e2e

# The suite (less the real-deployment tests) on another Airflow release, each minor in its own venv:
#   make test-airflow AIRFLOW_VERSION=3.1.8      (venv .venv-af-3.1)
# Airflow's own constraints files cannot be fetched here, so constraints/airflow-<minor>.txt holds the
# few pins, found by trying, that keep newer libraries from breaking that release inside Airflow itself
# (each line says why). Tests marked airflow3 / airflow2 are selected by tests/conftest.py.
AIRFLOW_VERSION ?=
AIRFLOW_MINOR = $(word 1,$(subst ., ,$(AIRFLOW_VERSION))).$(word 2,$(subst ., ,$(AIRFLOW_VERSION)))
AIRFLOW_CONSTRAINTS = constraints/airflow-$(AIRFLOW_MINOR).txt
VENV_AF ?= .venv-af-$(AIRFLOW_MINOR)
BIN_AF = $(VENV_AF)/bin
STAMP_AF = $(VENV_AF)/.installed-$(AIRFLOW_VERSION)

.PHONY: test-airflow test-airflow2

$(STAMP_AF): pyproject.toml $(AIRFLOW_CONSTRAINTS)
	rm -f $(VENV_AF)/.installed-*
	$(PYTHON) -m venv $(VENV_AF)
	echo '*' > $(VENV_AF)/.gitignore
	$(BIN_AF)/pip install --quiet --upgrade pip uv
	$(BIN_AF)/$(UV_INSTALL) --python $(BIN_AF)/python -e ".[test,emulator]" \
		"apache-airflow==$(AIRFLOW_VERSION)" --constraint $(AIRFLOW_CONSTRAINTS)
	touch $@

test-airflow:
	@test -n "$(AIRFLOW_VERSION)" || { echo "usage: make test-airflow AIRFLOW_VERSION=3.1.8"; exit 2; }
	@test -f $(AIRFLOW_CONSTRAINTS) || { echo "no $(AIRFLOW_CONSTRAINTS): add one (see constraints/)"; exit 2; }
	@$(MAKE) --no-print-directory $(STAMP_AF)
	$(BIN_AF)/python -c "import airflow; print('Airflow', airflow.__version__)"
	$(BIN_AF)/pytest -q $(XDIST) -m "not e2e and not distributed and not wheel $(AF_MARKS)" $(AF_TESTS)

# Every Airflow 3 minor between the floor and the newest, in CI: on each, side by side in its own venv
# with its pins file, the whole suite less the deployments, less the few scale runs of code no minor
# changes (marker same_on_every_minor: the batch's fault mix at 200 rows, 100,000-row manifests, a
# 256 MB upload), which run on 3.3 and 2.11. MINOR_TESTS narrows the files (e.g. one module while
# working on it). Tests that need a later minor carry airflow31 / airflow32 / airflow33 and are
# deselected before it (tests/conftest.py); constraints/README-minors.txt has the figures.
MINOR_VERSIONS ?= 3.0.6 3.1.8 3.2.2
MINOR_TESTS ?=
MINOR_MARKS = and not same_on_every_minor
.PHONY: test-minors
test-minors:
	@$(MAKE) --no-print-directory -j3 -O $(addprefix test-minor-,$(MINOR_VERSIONS))

test-minor-%:
	@$(MAKE) --no-print-directory test-airflow AIRFLOW_VERSION=$* AF_TESTS="$(MINOR_TESTS)" \
		AF_MARKS="$(MINOR_MARKS)" PYTEST_WORKERS=2

# The oldest Airflow the provider supports (pyproject's floor), 2.11.0 exactly rather than the newest
# 2.11 patch: the floor is what `apache-airflow>=2.11.0` promises.
VENV_AF2 ?= .venv-af2
AIRFLOW2_VERSION ?= 2.11.0

test-airflow2:
	@$(MAKE) --no-print-directory test-airflow AIRFLOW_VERSION=$(AIRFLOW2_VERSION) VENV_AF=$(VENV_AF2)

# Benchmarks against baselines measured in the same run (PERFORMANCE.md); not part of `make test`.
# The bench extra brings the HTTP and dbt Cloud providers whose operators serve as baselines.
bench: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test,bench]"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV_AF2) .venv-af-* .demo .pytest_cache .mypy_cache .ruff_cache

# The documentation site (mkdocs.yml, docs/) into site/, built strictly: any warning fails it.
# NO_MKDOCS_2_WARNING silences Material's banner about its own end of life (May 2027); it is not a
# build warning, only a notice printed at import.
.PHONY: docs
docs: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

# The provider on CeleryExecutor with PostgreSQL and Redis: two Celery workers, two triggerers, failover
# (a triggerer and a worker SIGKILLed, PostgreSQL restarted mid-run) and 200 mapped generations
# (tests/e2e/test_distributed.py). scripts/ensure_postgres_redis.sh installs Debian's postgresql and
# redis-server when missing; the celery and postgres extras bring the Celery provider and the drivers.
# Prints the measured figures; logs land in test-artifacts/e2e-distributed-logs/.
.PHONY: e2e-distributed
e2e-distributed: $(STAMP)
	bash scripts/ensure_postgres_redis.sh
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test,celery,postgres]"
	$(BIN)/pytest -q -s --durations=0 -m distributed tests/e2e/test_distributed.py
	@echo "Figures:" && cat test-artifacts/e2e-distributed-figures.txt

# The release files: sdist and wheel into dist/, their metadata checked by twine, then the wheel
# installed into a clean venv with Airflow, where the demo DAG runs against the wheel's own emulator
# (tests/e2e/test_wheel.py).
.PHONY: dist
dist: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test,dist]"
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*
	KLING_WHEEL_DIST=dist $(BIN)/pytest -q -m wheel tests/e2e/test_wheel.py
