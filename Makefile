# The two commands of the README. Each makes its own virtual environment (.venv) and installs what it needs.
#   make demo   set up, then serve the interactive lab (Voilà) on http://localhost:8866/ (PORT=... to change)
#   make test   set up (the browser for the UI tests and a C compiler too), then run the whole test suite
#   (make test-fast: the tests not marked slow, for the edit-test loop)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test test-fast lint browser compiler clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	# the independent evaluator the tests hold noiselab's attacks against; --no-deps: its metadata pins
	# requests~=2.25.1, which JupyterLab's server cannot run with (it imports fine with the newer one)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps torchattacks==3.5.1
	touch $(STAMP)

PORT ?= 8866

demo: $(STAMP)
	$(BIN)/noiselab-app --port $(PORT)

# Debian's chromium, driven by Playwright in the browser tests (Playwright's own browser download
# cannot work offline). Installing it needs root, as on CI and Binder-like machines.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: install Debian's package 'chromium' (apt-get install chromium) as root"; exit 1; fi; }

# A C compiler, which builds noiselab's fused CPU kernels on first use (noiselab/native; torch ops where there is
# none): the tests hold the kernels to the torch formulation, so they need one.
compiler:
	@command -v cc >/dev/null || command -v gcc >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gcc >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq gcc >/dev/null; \
	  else echo "no C compiler: install Debian's package 'gcc' (apt-get install gcc) as root"; exit 1; fi; }

lint: $(STAMP)
	$(BIN)/ruff check noiselab tests bench

# The suite on TEST_WORKERS pytest-xdist workers (one torch thread each; tests/conftest.py says how they share the
# machine, and in which order the files go out: --no-loadscope-reorder keeps that order); TEST_WORKERS=0 runs it in
# one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP) browser compiler lint
	$(PYTEST)

# The edit-test loop: everything not marked slow (the core, attacks, training, the CLI), in under 2 minutes
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
