# Two commands on a fresh machine: `make demo` boots the demo tree, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser demo nats test lint soak bench clean

$(STAMP): pyproject.toml setup.py theater_otp/chain/_native.c theater_otp/worker/_valconv.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/theater-otp build manifests/demo/supervision.toml
	$(VENV)/bin/theater-otp up manifests/demo/supervision.toml

# a development NATS server with JetStream for `up --cluster` (docs/cluster.md), until Ctrl-C
nats: install
	$(VENV)/bin/theater-otp nats

# three pytest workers (pytest-xdist) on two cores: the integration tests spend much of their time
# waiting on real processes (with two workers the cores were ~58% busy; three: 6:10 -> 5:32, four:
# 6:19); every test has its own home, sockets and ports. --dist loadfile: a module's tests share
# one worker, so a module-scoped fixture (a kept Python build) runs once
test: install lint browser
	$(PY) -m pytest -q -n 3 --dist loadfile -W error::ResourceWarning

# Debian's chromium and chromedriver, for tests/test_dashboard.py (headless, through selenium):
# installed with apt-get when missing (as root, else with `sudo -n`). Where that cannot be done the
# run goes on and that test skips, saying why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; } \
	    || echo "make browser: could not install chromium and chromium-driver; tests/test_dashboard.py will skip"; \
	else echo "make browser: no apt-get here; tests/test_dashboard.py will skip"; fi

# ruff (rules chosen in pyproject.toml) and mypy (strict for supervision/, protocol/, config/,
# chain/; the whole package checked): part of `make test`, so CI fails on either
lint: install
	$(VENV)/bin/ruff check theater_otp tests bench
	$(VENV)/bin/mypy

# the long runs kept out of `make test` (pytest marker `slow`)
soak: install
	$(PY) -m pytest -q -m slow -W error::ResourceWarning

bench: install
	$(PY) bench/restart.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache theater_otp/chain/_native*.so theater_otp/worker/_valconv*.so
