# Two commands, each sets itself up on a fresh machine: `make demo` and `make test`.
# The first run creates .venv with Python 3.10 and the pinned stack (requirements.txt);
# later runs find the stamp file up to date and start at once.

PYTHON310 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python) \
                         $(shell command -v python3.10 2>/dev/null))
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hnm_d2-installed

.PHONY: demo test venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	@test -n "$(PYTHON310)" || { echo "Python 3.10 not found: install it (pyenv install 3.10) or set PYTHON310=/path/to/python3.10"; exit 1; }
	test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The main job on the embedded synthetic default: generate data, train stock detectron2 and
# hnm_d2 side by side on the CPU, and compare them at the same recall (table, how sure, FROC
# plot), then mine the pool once. Progress bars and results on the terminal, the rest in
# output/demo/log.txt (VERBOSE=1 prints it too). Runs resume: `make clean-demo demo` starts over.
demo: $(STAMP)
	$(PY) -m hnm_d2.demo --output output/demo $(if $(VERBOSE),--verbose)

clean-demo:
	rm -rf output/demo

test: $(STAMP)
	$(PY) -m pytest -q tests
