# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
# Both install into a virtual environment (.venv by default) that they create when it is missing.
PYTHON ?= python3
VENV ?= .venv
# torch is pinned to the release this project is tested with. Elsewhere, a CPU-only build
# (a few hundred MB instead of several GB of CUDA wheels) comes from PyTorch's CPU wheel index:
#   make serve TORCH_INDEX=<PyTorch's CPU wheel index URL>
TORCH_INDEX ?=
TORCH = 'torch==2.14.1' 'torchvision==0.29.1'
PY = $(VENV)/bin/python
PIP_INSTALL = $(PY) -m pip install --disable-pip-version-check --progress-bar off

.PHONY: venv install install-dev serve test bench

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

install: $(PY)
	@echo "installing torch and w1 (client, estimator and server: the [all] extra) into $(VENV) (first time: a few minutes)"
	$(PIP_INSTALL) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(PIP_INSTALL) -e '.[all]'

install-dev: $(PY)
	@echo "installing torch, w1 and its test extras into $(VENV) (first time: a few minutes)"
	$(PIP_INSTALL) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(PIP_INSTALL) -e '.[dev]'

serve: install
	$(PY) -m service.cli serve

test: install-dev
	$(PY) -m pytest -q

bench:
	$(PIP_INSTALL) -e '.[dev,bench]'
	$(PY) bench/critic_speed.py
