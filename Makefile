# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create (or reuse) .venv, install the pinned stack and the project, then run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test test-fast ablation venv lock clean-demo chromium

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: on these machines pip takes 2.14.1 from the local disk
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vaplan run --preset sim-small

ablation: $(STAMP)
	$(PY) -m vaplan.cli ablation --preset sim-small

# Headless Chromium for the screenshot test (tests/test_report.py): the Debian package chromium, installed
# once when missing and run as root, quietly; elsewhere that one test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	{ export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } || \
	echo "chromium could not be installed: the screenshot test will be skipped" >&2

test: $(STAMP) chromium
	$(PY) -m pytest -q --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow"

lock:
	$(PY) -m pip freeze --exclude-editable | grep -iv '^vaplan' > requirements.lock

clean-demo:
	rm -rf mlruns/mlflow.db mlruns/artifacts mlruns/work
