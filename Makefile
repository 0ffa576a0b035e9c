# swinv2 developer entry points. Each target builds .venv from nothing when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist
RUN ?= runs/default-$(shell date +%Y%m%d-%H%M%S)

.PHONY: venv data test lint format run clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST from Debian's package where apt can install it; otherwise `swinv2 train` looks in
# $$SWINV2_DATA and the user cache, and tries a download. Never fails: tests that need it skip.
data:
	@if [ -z "$$SWINV2_DATA" ] && [ ! -f $(FMNIST)/t10k-labels-idx1-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	      || echo "note: could not install dataset-fashion-mnist"; \
	  else echo "note: Fashion-MNIST not installed; set SWINV2_DATA or install dataset-fashion-mnist"; fi; \
	fi

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

# Two workers, a file each at a time (module fixtures run once); the 15 slowest tests are printed so
# that a slow one is seen the day it lands.
test: venv data
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

# The main job: the default training run on Fashion-MNIST, ending with its measured accuracy and time.
run: venv data
	$(VENV)/bin/swinv2 train --output $(RUN)
	@echo "summary: $$(cat $(RUN)/summary.json | tr -d '\n ')"

format: venv
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
