# nanuGPT: set-up and the two everyday commands. Each target does all set-up it needs, idempotently.
#   make run    venv + project + DVC, then `dvc repro` of params.yaml
#   make test   venv + project, then ruff (lint and format check) and the whole test suite
#
# PyTorch: the CPU build is installed when no NVIDIA GPU is visible. TORCH_SPEC / TORCH_INDEX
# choose another build, e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`.

VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
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

.PHONY: setup run lint test test-fast clean

setup: $(VENV)/.installed .dvc/config

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install torch; \
	else \
		$(PY) -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -e ".[test]"
	touch $@

.dvc/config:
	git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(VENV)/bin/dvc init -q

run: setup
	$(VENV)/bin/dvc repro
	$(VENV)/bin/python -m pipeline.summary

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PYTEST) -n $(or $(PYTEST_WORKERS),3) $(PYTEST_ARGS)

test-fast: lint
	$(PYTEST) -n $(or $(PYTEST_WORKERS),2) -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf out .snakemake .pytest_cache .ruff_cache
