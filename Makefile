# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-dev serve test bench

install:
	$(PIP_INSTALL) 'torch==2.14.1' 'torchvision==0.29.1' -e .

install-dev:
	$(PIP_INSTALL) 'torch==2.14.1' 'torchvision==0.29.1' -e '.[dev]'

serve: install
	$(PYTHON) -m service.cli serve

test: install-dev
	$(PYTHON) -m pytest -q

bench:
	$(PIP_INSTALL) -e '.[dev,bench]'
	$(PYTHON) bench/critic_speed.py
