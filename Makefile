# gpuforge: `make demo` sets everything up and runs the main job on built-in data;
# `make test` runs every test suite on a CPU-only machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
LOCK    = requirements.lock
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# Numba's on-disk cache lives beside the venv, not in the source folders.
export NUMBA_CACHE_DIR ?= $(abspath $(VENV))/numba-cache
# Safe-path mode for every Python started from here (and their children): the root
# folders kernels/, core/, cli/, hardware/, plugins/ must not shadow installed packages
# (transformers imports Hugging Face's `kernels`). Python 3.10 ignores the variable, so
# Python is started through console scripts (bin/pytest, bin/gpuforge), whose
# sys.path[0] is the venv's bin/ on every version, or with $(SAFE) (-P on 3.11+).
export PYTHONSAFEPATH = 1
SAFE   := $(shell $(PYTHON) -c 'import sys; print("-P" if sys.version_info >= (3, 11) else "")')

.PHONY: setup demo test test-unit test-cudasim test-latest lock check-lock gpu-bundle gpu-check gpu-check-venv gpu-check-bare bench clean

# Installs exactly the versions in requirements.lock (see `make lock`).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) $(SAFE) -m pip install -q --upgrade pip
	# torch first, exactly this version: it is the CPU build; anything else pulls CUDA wheels.
	$(PY) $(SAFE) -m pip install -q torch==2.13.0
	$(PY) $(SAFE) -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/gpuforge demo --out gpuforge-demo --force

# Two pytest processes: the simulator must be switched on before numba is imported.
test: setup test-unit test-cudasim

test-unit: setup
	$(VENV)/bin/pytest -q -m "not gpu and not cudasim" -p no:cacheprovider

# The simulator runs one Python thread per test: two pytest workers (pytest-xdist) use
# both cores of the CI machine. SIM_WORKERS=0 runs them in this one process.
SIM_WORKERS ?= 2
test-cudasim: setup
	NUMBA_ENABLE_CUDASIM=1 $(VENV)/bin/pytest -q -m cudasim -p no:cacheprovider -n $(SIM_WORKERS)

# Refresh requirements.lock: the newest versions pyproject.toml's ranges allow, resolved
# in a throwaway venv (torch stays the CPU build 2.13.0). Run it after changing any
# dependency range, then `make test`, and commit both files.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python $(SAFE) -m pip install -q --upgrade pip
	.venv-lock/bin/python $(SAFE) -m pip install -q torch==2.13.0
	.venv-lock/bin/python $(SAFE) -m pip install -q -e ".[dev]"
	.venv-lock/bin/python $(SAFE) -m pip freeze --exclude-editable > .venv-lock/freeze.txt
	.venv-lock/bin/python $(SAFE) -m gpuforge.core.lockfile write .venv-lock/freeze.txt
	rm -rf .venv-lock

check-lock: setup
	$(PY) $(SAFE) -m gpuforge.core.lockfile check

# The main suite against the newest versions the ranges allow (not the lock), in a
# throwaway venv: drift such as a dependency that starts to import a name our root
# folders shadow shows up here before it reaches the lock. Not part of CI.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python $(SAFE) -m pip install -q --upgrade pip
	.venv-latest/bin/python $(SAFE) -m pip install -q torch==2.13.0
	.venv-latest/bin/python $(SAFE) -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" torch==2.13.0
	.venv-latest/bin/python $(SAFE) -m pip freeze --exclude-editable > .venv-latest/versions.txt
	NUMBA_CACHE_DIR=$(abspath .venv-latest)/numba-cache .venv-latest/bin/pytest -q -m "not gpu and not cudasim" -p no:cacheprovider

# The lent GPU machine has no network, no venv and no gpuforge (FIELD-NOTES.md "The GPU
# machine"): `make gpu-bundle` (here) downloads the wheels it lacks for Python 3.12 into
# $(GPU_BUNDLE), plus gpuforge's own wheel; the device tool carries that folder.
GPU_BUNDLE ?= .gpu-bundle
GPU_SITE   ?= /tmp/gpuforge-site
GPU_REPORT_DIR ?= .gpu-report

gpu-bundle: setup
	$(PY) $(SAFE) -m gpuforge.core.gpu_bundle build --dest $(GPU_BUNDLE)

# With a venv (here, or any machine that ran `make setup`) it runs from the venv; on the
# bare GPU machine (no $(VENV)) it installs the bundle offline into $(GPU_SITE) and runs
# with the machine's own python3. Without a GPU it runs what it can and reports the GPU
# parts as "no GPU". One JSON report: $(GPU_REPORT_DIR)/gpu-report.json.
gpu-check:
	@if [ -x "$(PY)" ]; then \
		$(MAKE) --no-print-directory gpu-check-venv; \
	else \
		$(MAKE) --no-print-directory gpu-check-bare; \
	fi

gpu-check-venv: setup
	GPU_REPORT_DIR=$(GPU_REPORT_DIR) $(PY) $(SAFE) -m gpuforge.core.gpucheck

gpu-check-bare:
	@test -f $(GPU_BUNDLE)/BUNDLE.json || { echo "gpu-check: no $(GPU_BUNDLE)/ here: run 'make gpu-bundle' where pip works and carry it"; exit 2; }
	rm -rf $(GPU_SITE)
	$(PYTHON) $(SAFE) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $(GPU_SITE) $(GPU_BUNDLE)/*.whl
	PYTHONPATH=$(GPU_SITE) NUMBA_CACHE_DIR=$(GPU_SITE)/numba-cache GPU_REPORT_DIR=$(GPU_REPORT_DIR) \
		GPU_BUNDLE=$(GPU_BUNDLE) $(PYTHON) $(SAFE) -m gpuforge.core.gpucheck

bench: setup
	$(VENV)/bin/gpuforge bench

clean:
	rm -rf $(VENV) .venv-lock .venv-latest build dist *.egg-info gpuforge-demo .gpu-report $(GPU_BUNDLE) .gpu-bundle-cache
