# vfiod: make demo | make test | make install
# The first two set themselves up on a fresh Debian or Ubuntu (apt when root, a venv).

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PREFIX   ?= /usr/local
DESTDIR  ?=

# Debian packages the daemon, the tests and the real-kernel tier need.
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev \
	libdbus-1-dev libglib2.0-dev dbus-daemon dbus-bin systemd udev pci.ids \
	qemu-system-x86 busybox-static kmod cpio

.PHONY: all setup apt venv demo test test-host test-vm bench install clean

all: venv

setup: apt venv

# apt runs only as root on a Debian-like system, and only when something is missing.
apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "apt: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "apt: not root; make sure these are installed: $(APT_PACKAGES)"; \
	fi

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml | apt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[systemd,test]'
	touch $@

demo: setup
	$(PY) -m vfiod.demo

test: setup
	$(PY) -m pytest tests
	$(PY) -m tests.vm.run

test-host: setup
	$(PY) -m pytest tests

test-vm: setup
	$(PY) -m tests.vm.run

bench: setup
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
