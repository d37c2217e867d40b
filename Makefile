# gpuforge: `make demo` sets everything up and runs the main job on built-in data;
# `make test` runs every test suite on a CPU-only machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# Numba's on-disk cache lives beside the venv, not in the source folders.
export NUMBA_CACHE_DIR ?= $(abspath $(VENV))/numba-cache

.PHONY: setup demo test test-unit test-cudasim gpu-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, exactly this version: it is the CPU build; anything else pulls CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/gpuforge demo --out gpuforge-demo --force

# Two pytest processes: the simulator must be switched on before numba is imported.
test: setup
	$(PY) -m pytest -q -m "not gpu and not cudasim" -p no:cacheprovider
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -m cudasim -p no:cacheprovider

gpu-check: setup
	GPU_REPORT_DIR=$${GPU_REPORT_DIR:-.gpu-report} $(PY) -m gpuforge.core.gpucheck

bench: setup
	$(VENV)/bin/gpuforge bench

clean:
	rm -rf $(VENV) build dist *.egg-info gpuforge-demo .gpu-report
