# Every target installs what it needs; all of them are safe to run again.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PY := $(VENV)/.py-stamp
APT_PACKAGES := redis-server haproxy nftables iproute2 coturn iptables conntrack libnetfilter-queue-dev gcc tcpdump \
	docker.io debootstrap dpkg-dev rsync openssh-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_WORKERS ?= auto

.PHONY: all deps lab test lint loadtest bench bench-signaling fuzz-signaling clean deploy-test

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

deps: $(STAMP_APT) $(STAMP_PY)

test: deps
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd ansible && ../$(VENV)/bin/ansible-lint

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

# Capacity of one instance (and three with redis) on this machine, against a bare echo server.
bench-signaling: deps
	$(PY) -m loadtest.bench $(BENCH_ARGS)

# Every attack of tests/adversarial for longer (20 s each, directly and through haproxy), then the
# random frame fuzzer; prints the resource table, fails past 64 MiB or /healthz p99 50 ms;
# e.g. FUZZ_ARGS='--seconds 60 --attack pong_flood --mode direct'.
fuzz-signaling: deps
	PYTHONPATH=$(CURDIR) $(PY) -m tests.adversarial $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
