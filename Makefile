# `make demo` and `make test` each create .venv when it is missing and install the pinned set first.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-fast browser bench lint format constraints clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,procgen]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/workbench demo

test: $(STAMP) browser
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# Unit and pipeline tiers only (tests/conftest.py assigns the tiers): no shipped artifacts, browser, notebooks or
# slow tests. `make test` still runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile -m "(unit or pipeline) and not slow"

# The app's browser test (tests/test_app_browser.py) drives Debian's chromium through chromedriver; install both
# (once, quietly, with apt-get) when either is missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing chromium + chromium-driver (apt-get) for the browser test"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null; \
	fi

bench: $(STAMP)
	$(PY) benchmarks/run.py --threads 1
	$(PY) benchmarks/run.py --threads 2

lint: $(STAMP)
	$(VENV)/bin/ruff check workbench tests benchmarks
	$(VENV)/bin/ruff format --check workbench tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format workbench tests benchmarks
	$(VENV)/bin/ruff check --fix workbench tests benchmarks

constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu//' > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
