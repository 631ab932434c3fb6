# Two commands, each sets itself up on a fresh machine: `make demo` and `make test`.
# The first run creates .venv with Python 3.10 and the pinned stack (requirements.txt);
# later runs find the stamp file up to date and start at once.

PYTHON310 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python) \
                         $(shell command -v python3.10 2>/dev/null))
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hnm_d2-installed

.PHONY: demo test test-upstream venv clean-demo browser

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

# tests/test_review_browser.py opens the mining review page in Debian's headless Chromium; CI
# runs as root, and gets chromium and chromium-driver installed here where they are missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  test "$$(id -u)" = 0 || { echo "The browser test needs Chromium: sudo apt-get install -y chromium chromium-driver"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# HNM_REQUIRE_BROWSER: the browser test fails instead of skipping when Chromium is missing.
test: $(STAMP) browser
	HNM_REQUIRE_BROWSER=1 $(PY) -m pytest -q tests

# The suite against an upstream detectron2 source checkout instead of the pinned build, which it
# shadows through PYTHONPATH (tools/prepare_upstream_d2.sh makes one from a tag or branch):
#   make test-upstream D2_SRC=../d2-src/v0.6
D2_PATH = $(abspath $(D2_SRC))/.deps:$(abspath $(D2_SRC))
test-upstream: $(STAMP)
	@test -n "$(D2_SRC)" || { echo "Set D2_SRC=/path/to/a detectron2 checkout (tools/prepare_upstream_d2.sh makes one)"; exit 1; }
	PYTHONPATH=$(D2_PATH) $(PY) -c "import sys, detectron2; print('detectron2', detectron2.__version__, 'from', detectron2.__file__); sys.exit(not detectron2.__file__.startswith('$(abspath $(D2_SRC))/'))"
	PYTHONPATH=$(D2_PATH) $(PY) -m pytest -q -rs tests  # -rs: why a test is skipped there
