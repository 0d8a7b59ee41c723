# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench install clean chromium

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m federation.demo

check: $(STAMP)
	$(BIN)/ruff check federation tests bench
	$(BIN)/ruff format --check federation tests bench
	$(BIN)/mypy

test: check chromium
	$(BIN)/pytest -q -p no:cacheprovider -n auto --dist loadfile

# The feed's browser test drives Debian's Chromium through Playwright (its wheel bundles
# the driver; no browser is ever downloaded). Installed here when missing: CI runs as
# root on Debian. Without apt the browser test is skipped, and says why.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the feed's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "no apt-get: cannot install chromium; the feed's browser test will be skipped"; \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-federation
