# Two commands do all the set-up on a fresh machine:
#   make bench   - installs into .venv and prints the side-by-side benchmark
#   make test    - installs into .venv and runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastinit-installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a CPU build; a looser pin pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,bench,tensorflow,jax]'
	touch $(STAMP)

.PHONY: install test bench clean
install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q bench --benchmark-disable

bench: $(STAMP)
	$(PY) -m fastinit bench

clean:
	rm -rf $(VENV) build *.egg-info
	find fastinit kernels -name __pycache__ -type d -prune -exec rm -rf {} +
