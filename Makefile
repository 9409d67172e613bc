# nanuGPT: set-up and the two everyday commands. Each target does all set-up it needs, idempotently.
#   make run    venv + project + DVC, then `dvc repro` of params.yaml
#   make test   venv + project, then ruff (lint and format check) and the whole test suite
#   make lock   rewrite the lock files from pyproject.toml (LOCK_ARGS=--upgrade: every pin to its newest release)
#
# The environment is pinned (docs/reproducibility.md): `make setup` installs every package at the version and sha256
# of a lock file written by pip-compile, for CPython 3.11 on Linux x86_64: requirements-cuda.txt (PyPI's CUDA build of
# torch) where an NVIDIA GPU is visible, else requirements-cpu.txt (PyTorch's CPU build: no multi-GB CUDA download).
# Where pip has no copy of the CPU build on disk or on its index, name PyTorch's:
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`.

VENV        ?= .venv
PY          := $(VENV)/bin/python
LOCK_CPU    := requirements-cpu.txt
LOCK_CUDA   := requirements-cuda.txt
LOCK        ?= $(if $(shell command -v nvidia-smi 2>/dev/null),$(LOCK_CUDA),$(LOCK_CPU))
TORCH_INDEX ?=
# pip is pinned too: the fingerprint's digest of the installed packages counts it.
PIP_SPEC    := pip==26.3
LOCK_TOOLS  ?= $(VENV)/.lock-tools
LOCK_ARGS   ?=
PYTEST_ARGS ?=
# pytest-xdist workers, each taking a whole test file at a time, in the order collected (the Slurm files first, as
# one unit: tests/worker_groups.py).
# `make test` on three workers on two cores: the Slurm, DVC-queue and Snakemake tests spend part of their time
# waiting on jobs, and a third worker fills it. `make test-fast` on two: its tests never wait, and a third
# worker only adds contention. PYTEST_WORKERS=N sets both. Every test process, and what it starts, uses one CPU
# thread: workers that each start a thread per core slow each other down many times over.
PYTEST_WORKERS ?=
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest --dist loadfile --no-loadscope-reorder

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR ?= $(CURDIR)/.dvc/tmp/site-cache
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# A local copy of Tiny Shakespeare, used instead of downloading it when it exists
# (development machines and CI have one beside the repository).
SHARED_CORPUS := $(abspath $(wildcard ../shared/data/tinyshakespeare/input.txt))
ifneq ($(SHARED_CORPUS),)
export NANUGPT_TINYSHAKESPEARE ?= $(SHARED_CORPUS)
endif

.PHONY: setup run lint test test-fast test-quality lock clean

setup: $(VENV)/.installed .dvc/config

# The stamp holds the installed lock's `sha256sum` line, which the run's fingerprint reads (nanugpt/train/environment.py).
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_SPEC)"
	$(PY) -m pip install -q --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r $(LOCK) || { \
		echo "make setup: $(LOCK) did not install; if pip found no torch==2.13.0+cpu, add" \
			"TORCH_INDEX=https://download.pytorch.org/whl/cpu" >&2; exit 1; }
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	sha256sum $(LOCK) > $@

# pip-compile with pip's own configuration, so the CPU lock takes the CPU build where pip finds it. The CUDA lock is
# resolved against PyPI alone: pip would prefer a local copy of the CPU build (2.13.0+cpu sorts above 2.13.0).
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile -q --extra test --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

lock: $(LOCK_TOOLS)/bin/pip-compile
	$(PIP_COMPILE) --extra cpu $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -o $(LOCK_CPU) pyproject.toml
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(PIP_COMPILE) --extra cuda -o $(LOCK_CUDA) pyproject.toml

$(LOCK_TOOLS)/bin/pip-compile:
	python3 -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q "$(PIP_SPEC)" pip-tools==7.7.0

.dvc/config:
	git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(VENV)/bin/dvc init -q

run: setup
	$(VENV)/bin/dvc repro
	$(VENV)/bin/python -m pipeline.summary

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The quality test (tests/e2e/test_quality.py) trains the default experiment for 2000 steps: a seventh of the CPU
# time of CI's whole run, on a machine whose cores every test keeps busy. It runs alone, with test-quality.
test: lint
	$(PYTEST) -n $(or $(PYTEST_WORKERS),3) -m "not quality" $(PYTEST_ARGS)

test-fast: lint
	$(PYTEST) -n $(or $(PYTEST_WORKERS),2) -m "not slow" $(PYTEST_ARGS)

test-quality: lint
	$(PYTEST) -n 0 -m quality $(PYTEST_ARGS)

clean:
	rm -rf out .snakemake .pytest_cache .ruff_cache
