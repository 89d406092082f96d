# The README's commands. Each works on a fresh clone: it creates .venv, installs the pinned
# requirements and this package, and prepares the offline assets when they are missing.
# `make demo` installs the runtime only (requirements.txt); `make test` adds the test stack
# (requirements-test.txt: pytest, torch, the tfds source, the formatter).
PYTHON ?= python3
VENV ?= .venv
# The oldest Python the pins install on, stated once in setup.cfg (python_requires).
MIN_PYTHON := $(shell sed -n 's/^python_requires = >=//p' setup.cfg)
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test

.PHONY: demo test assets install install-test adapters-venv format format-check

demo: assets
	$(VENV)/bin/hyperx train --config=configs/demo.py --workdir=workdirs/demo

test: assets adapters-venv $(TEST_INSTALLED)
	$(PY) -m pytest -q tests

# A no-op (under a second) when ${HYPERX_CACHE:-~/.cache/hyperx_jax} is complete.
assets: $(INSTALLED)
	$(PY) -m hyperx_jax.assets prepare

install: $(INSTALLED)

install-test: $(TEST_INSTALLED)

$(INSTALLED): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$(MIN_PYTHON)'.split('.'))) and 'hyperx_jax needs Python >= $(MIN_PYTHON); run make PYTHON=python$(MIN_PYTHON), or first: uv venv --python $(MIN_PYTHON) $(VENV)')"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt -e .
	touch $@

$(TEST_INSTALLED): requirements-test.txt $(INSTALLED)
	$(PY) -m pip install --disable-pip-version-check -r requirements-test.txt
	touch $@

# pyink (Google's black: 2-space indents, one quote style) and isort, as pyproject.toml sets.
FORMATTED := hyperx_jax configs tests

format: $(TEST_INSTALLED)
	$(VENV)/bin/isort $(FORMATTED)
	$(VENV)/bin/pyink $(FORMATTED)

format-check: $(TEST_INSTALLED)
	$(VENV)/bin/isort --check-only --diff $(FORMATTED)
	$(VENV)/bin/pyink --check --diff $(FORMATTED)

# The AdapterHub check of tests/test_export_torch.py: `adapters` pins an older transformers, so
# it gets its own venv. Its torch is .venv's (a .pth after the new venv's own site-packages: the
# new venv's transformers, numpy, ... come first, torch is found in .venv's).
ADAPTERS_VENV ?= .venv-adapters
ADAPTERS_PY := $(ADAPTERS_VENV)/bin/python

adapters-venv: $(ADAPTERS_VENV)/.installed

$(ADAPTERS_VENV)/.installed: requirements-adapters.txt $(TEST_INSTALLED)
	$(PY) -m venv --clear $(ADAPTERS_VENV)
	$(ADAPTERS_PY) -m pip install --disable-pip-version-check -r requirements-adapters.txt
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	  > "$$($(ADAPTERS_PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz-torch-from-main-venv.pth"
	$(ADAPTERS_PY) -c "import adapters, torch; print('adapters', adapters.__version__, 'torch', torch.__version__)"
	touch $@
