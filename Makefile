# vfiod: make demo | make test | make install
# The first two set themselves up on a fresh Debian or Ubuntu (apt when root, a venv).

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PREFIX   ?= /usr/local
DESTDIR  ?=

# Debian packages the daemon, the tests and the real-kernel tier need.
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev \
	libdbus-1-dev libglib2.0-dev dbus dbus-daemon dbus-bin systemd udev pci.ids \
	procps iproute2 qemu-system-x86 busybox-static kmod cpio dmsetup e2fsprogs pciutils \
	shellcheck python3-pip python3-wheel zstd lz4 debootstrap systemd-container \
	xvfb xfce4-panel dunst xdotool imagemagick
# Why the less obvious ones: dbus (dbus.socket, for `systemd-analyze verify` of the unit),
# procps (`kill`, `ps`), zstd and lz4 (the doctor reads initramfs images compressed
# with them; so do its tests), iproute2 (`ip`, which the guest tier runs); xvfb,
# xfce4-panel (its tray hosts StatusNotifierItems), dunst, xdotool and imagemagick
# (screenshots) for the applet's desktop test; dmsetup and e2fsprogs (mkfs.ext4) for the
# real-kernel tier's block-device guards (the guest runs this machine's tools); pciutils
# (lspci) for the benchmark's side-by-side figure; debootstrap and systemd-container
# (systemd-nspawn) build the distribution tier's image.

.PHONY: all setup apt venv demo test test-host test-vm test-distro test-minbase torture bench bench-readme install uninstall clean

all: venv

setup: apt venv

# apt runs only as root on a Debian-like system, and only when something is missing.
apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "apt: installing $$(echo $$missing | wc -w) Debian packages (a minute or more, quietly):" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "apt: not root; make sure these are installed: $(APT_PACKAGES)"; \
	fi

venv: $(VENV)/.stamp

# pyproject keeps `license` as a table: the string form needs setuptools 77, and
# `make install` builds with the distribution's (Debian 12: 66). The setuptools pip
# fetches here warns about the table and about editable installs; those two only.
VENV_WARNINGS := ignore:`project.license` as a TOML table is deprecated,ignore:Editable installation

$(VENV)/.stamp: pyproject.toml | apt
	@echo "venv: creating $(VENV) and installing vfiod with its test dependencies from PyPI (quietly)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@PYTHONWARNINGS='$(VENV_WARNINGS)' $(PY) -m pip install -q --disable-pip-version-check \
	  -e '.[systemd,test]'
	@touch $@

demo: setup
	$(PY) -m vfiod.demo

# Every tier runs whatever the others give, then one summary (tests/tiers.py): the host
# tier, the real-kernel tier (busybox guest), the distribution tier (Debian booted by
# systemd with vfiod installed; root; tests/distro/README.md).
test: setup
	$(PY) -m tests.tiers

test-host: setup
	$(PY) -m tests.tiers --host-only

test-vm: setup
	$(PY) -m tests.tiers --vm-only

test-distro: setup
	$(PY) -m tests.tiers --distro-only

# The bare-Debian proof (root, needs debootstrap and systemd-nspawn; never part of
# `make test`): a fresh debootstrap minbase bookworm with git and make, a clone of this
# repository's HEAD, and `make test` in it. See tests/minbase.sh.
test-minbase:
	tests/minbase.sh

# The torture suite at full size (tests/torture: 20,000 malformed D-Bus calls, 50 clients
# for 60 s, a kill at every host write of every group, every errno, 4,096-event uevent
# storms...); `make test` runs its short form. Its table goes to build/torture-full.md
# and .json (README's "Torture suite" shows the last one).
torture: setup
	VFIOD_TORTURE=full $(PY) -m pytest tests/torture -p no:randomly -q

# Prints every figure with its goal and writes benchmarks/last.json; bench-readme then
# writes the README's figures from that file (run both on an idle machine).
bench: setup
	$(PY) benchmarks/bench.py

bench-readme:
	$(PY) benchmarks/readme_table.py

# -- install ---------------------------------------------------------------------------
# `make install [DESTDIR=...] [PREFIX=/usr/local]`: what a distribution package ships.
#
# The Python package goes, with pip, into a private directory $(PKGLIBDIR) and the
# commands (vfiod, vfioctl, vfiod-applet) are small wrappers in $(BINDIR) that run
# $(INSTALL_PYTHON) on it. This is the
# layout packagers use for an application (Debian's Python policy: private modules in
# /usr/lib/<package>): no virtualenv, whose scripts and pyvenv.cfg would carry the
# DESTDIR staging path and whose dependencies would come from PyPI at build time; and
# no `pip install --prefix`, whose site-packages path depends on the interpreter's
# scheme (Debian's python3 turns --prefix=/usr/local into /usr/local/local/lib/...
# dist-packages, off sys.path). Dependencies come from the distribution (or pip) for
# $(INSTALL_PYTHON): dbus-fast, pyudev, pydantic 2, inotify_simple, systemd-python.
# --no-build-isolation builds offline with the interpreter's setuptools and wheel.
#
# System integration files go where their tools look, whatever PREFIX is: the unit,
# the D-Bus policy and activation file, the polkit action, the initramfs integrations.
# @bindir@ is replaced on the units' Exec lines only (their comments name it too). The
# bus policy's one copy is the package's (vfiod/data/), which vfiod.privatebus reads.
INSTALL_PYTHON    ?= /usr/bin/python3
PIP_INSTALL_FLAGS ?= --no-build-isolation
# `make install BUNDLE_DEPS=1` puts the dependencies from PyPI into $(PKGLIBDIR) too
# (Debian 12 packages neither dbus-fast nor pydantic 2); packagers leave it unset.
PIP_DEPS          := $(if $(BUNDLE_DEPS),,--no-deps)
PIP_SOURCE        := $(if $(BUNDLE_DEPS),.[systemd],.)
BINDIR            ?= $(PREFIX)/bin
PKGLIBDIR         ?= $(PREFIX)/lib/vfiod
DATADIR           ?= $(PREFIX)/share/vfiod
SYSCONFDIR        ?= /etc
SYSTEMDUNITDIR    ?= /lib/systemd/system
DBUSSYSTEMDIR     ?= /usr/share/dbus-1/system.d
DBUSSERVICEDIR    ?= /usr/share/dbus-1/system-services
POLKITACTIONDIR   ?= /usr/share/polkit-1/actions
INITRAMFSTOOLSDIR ?= /usr/share/initramfs-tools
DRACUTMODULESDIR  ?= /usr/lib/dracut/modules.d
INITCPIODIR       ?= /usr/lib/initcpio
AUTOSTARTDIR      ?= $(SYSCONFDIR)/xdg/autostart
# vfiod's state (StateDirectory=vfiod): journal, host-driver records, the rendered shim.
STATEDIR          ?= /var/lib/vfiod

install:
	rm -rf '$(DESTDIR)$(PKGLIBDIR)'
	$(INSTALL_PYTHON) -m pip install --quiet $(PIP_DEPS) --no-compile --no-warn-script-location \
	  --disable-pip-version-check $(PIP_INSTALL_FLAGS) --target '$(DESTDIR)$(PKGLIBDIR)' "$(PIP_SOURCE)"
	rm -rf '$(DESTDIR)$(PKGLIBDIR)/bin' build
	# Compiled here, because /usr is read-only under the unit (ProtectSystem=strict): the
	# daemon would otherwise compile every module in memory at every start. -d records
	# the installed path (not a target: no DESTDIR) in tracebacks.
	$(INSTALL_PYTHON) -m compileall -q -j0 -d "$(PKGLIBDIR)" '$(DESTDIR)$(PKGLIBDIR)'
	install -d '$(DESTDIR)$(BINDIR)'
	for cmd in vfiod:vfiod.daemon.main vfioctl:vfiod.ctl.main vfiod-applet:vfiod.applet.main; do \
	  name=$${cmd%%:*}; module=$${cmd#*:}; \
	  printf '%s\n' '#!$(INSTALL_PYTHON) -I' 'import sys' \
	    'sys.path.insert(0, "$(PKGLIBDIR)")' "from $$module import main" \
	    'sys.exit(main())' > '$(DESTDIR)$(BINDIR)/'$$name; \
	  chmod 0755 '$(DESTDIR)$(BINDIR)/'$$name; \
	done
	install -d '$(DESTDIR)$(SYSTEMDUNITDIR)' '$(DESTDIR)$(DBUSSYSTEMDIR)' \
	  '$(DESTDIR)$(DBUSSERVICEDIR)' '$(DESTDIR)$(POLKITACTIONDIR)'
	sed '/^Exec/s|@bindir@|$(BINDIR)|g' systemd/vfiod.service > '$(DESTDIR)$(SYSTEMDUNITDIR)/vfiod.service'
	chmod 0644 '$(DESTDIR)$(SYSTEMDUNITDIR)/vfiod.service'
	install -m 0644 vfiod/data/org.vfiod1.conf '$(DESTDIR)$(DBUSSYSTEMDIR)/org.vfiod1.conf'
	sed '/^Exec/s|@bindir@|$(BINDIR)|g' dbus/org.vfiod1.service > '$(DESTDIR)$(DBUSSERVICEDIR)/org.vfiod1.service'
	chmod 0644 '$(DESTDIR)$(DBUSSERVICEDIR)/org.vfiod1.service'
	install -m 0644 dbus/org.vfiod1.policy '$(DESTDIR)$(POLKITACTIONDIR)/org.vfiod1.policy'
	install -D -m 0755 initramfs/initramfs-tools/hooks/vfiod '$(DESTDIR)$(INITRAMFSTOOLSDIR)/hooks/vfiod'
	install -D -m 0755 initramfs/initramfs-tools/scripts/init-top/00-vfiod \
	  '$(DESTDIR)$(INITRAMFSTOOLSDIR)/scripts/init-top/00-vfiod'
	install -D -m 0755 initramfs/dracut/90vfiod/module-setup.sh '$(DESTDIR)$(DRACUTMODULESDIR)/90vfiod/module-setup.sh'
	install -D -m 0755 initramfs/dracut/90vfiod/vfiod-pre-udev.sh '$(DESTDIR)$(DRACUTMODULESDIR)/90vfiod/vfiod-pre-udev.sh'
	install -D -m 0644 initramfs/mkinitcpio/install/vfiod '$(DESTDIR)$(INITCPIODIR)/install/vfiod'
	install -D -m 0644 initramfs/mkinitcpio/hooks/vfiod '$(DESTDIR)$(INITCPIODIR)/hooks/vfiod'
	# The shim template and integrations, for `vfioctl initramfs install`.
	install -d '$(DESTDIR)$(DATADIR)'
	rm -rf '$(DESTDIR)$(DATADIR)/initramfs'
	cp -R initramfs '$(DESTDIR)$(DATADIR)/initramfs'
	# The tray applet starts with every XDG desktop session.
	install -d '$(DESTDIR)$(AUTOSTARTDIR)'
	sed '/^Exec/s|@bindir@|$(BINDIR)|g' desktop/vfiod-applet.desktop > '$(DESTDIR)$(AUTOSTARTDIR)/vfiod-applet.desktop'
	chmod 0644 '$(DESTDIR)$(AUTOSTARTDIR)/vfiod-applet.desktop'
	# The example config, never over one that is there.
	if [ ! -e '$(DESTDIR)$(SYSCONFDIR)/vfiod/vfiod.toml' ]; then \
	  install -D -m 0644 etc/vfiod.toml '$(DESTDIR)$(SYSCONFDIR)/vfiod/vfiod.toml'; \
	fi

# `make uninstall [DESTDIR=...] [PREFIX=...] [REBUILD_INITRAMFS=1]`: everything install
# put there, the initramfs hooks `vfioctl initramfs install` writes (the same paths), the
# rendered shim and vfiod's state go; the config stays. The initramfs built before still
# holds the shim and claims its devices at every boot until it is rebuilt: with
# REBUILD_INITRAMFS=1 (and no DESTDIR) this rebuilds it with the tool the system has
# (or INITRAMFS_REBUILD, a command), otherwise it says what to run. Stop the service first: systemctl disable --now vfiod.
INITRAMFS_REBUILD ?=
UNINSTALL_FILES := $(BINDIR)/vfiod $(BINDIR)/vfioctl $(BINDIR)/vfiod-applet \
	$(AUTOSTARTDIR)/vfiod-applet.desktop $(SYSTEMDUNITDIR)/vfiod.service \
	$(DBUSSYSTEMDIR)/org.vfiod1.conf $(DBUSSERVICEDIR)/org.vfiod1.service \
	$(POLKITACTIONDIR)/org.vfiod1.policy $(INITRAMFSTOOLSDIR)/hooks/vfiod \
	$(INITRAMFSTOOLSDIR)/scripts/init-top/00-vfiod $(INITCPIODIR)/install/vfiod \
	$(INITCPIODIR)/hooks/vfiod
UNINSTALL_DIRS  := $(PKGLIBDIR) $(DATADIR) $(DRACUTMODULESDIR)/90vfiod $(STATEDIR)

uninstall:
	@if [ -n '$(REBUILD_INITRAMFS)' ] && [ -n '$(DESTDIR)' ]; then \
	  echo 'uninstall: REBUILD_INITRAMFS rebuilds this system'"'"'s initramfs; not with DESTDIR' >&2; exit 2; \
	fi
	rm -f $(foreach f,$(UNINSTALL_FILES),'$(DESTDIR)$(f)')
	rm -rf $(foreach d,$(UNINSTALL_DIRS),'$(DESTDIR)$(d)')
	@echo 'uninstall: kept the config, $(DESTDIR)$(SYSCONFDIR)/vfiod'
	@root='$(DESTDIR)'; rebuild='$(INITRAMFS_REBUILD)'; \
	if [ -n "$$rebuild" ]; then :; \
	elif [ -e "$$root/usr/sbin/update-initramfs" ] || [ -e "$$root/sbin/update-initramfs" ]; then rebuild='update-initramfs -u -k all'; \
	elif [ -e "$$root/usr/bin/dracut" ] || [ -e "$$root/usr/sbin/dracut" ]; then rebuild='dracut --regenerate-all --force'; \
	elif [ -e "$$root/usr/bin/mkinitcpio" ]; then rebuild='mkinitcpio -P'; \
	  echo 'uninstall: remove "vfiod" from HOOKS in /etc/mkinitcpio.conf first'; fi; \
	if [ -n '$(REBUILD_INITRAMFS)' ] && [ -n "$$rebuild" ]; then \
	  echo "uninstall: taking the shim out of the initramfs: $$rebuild"; $$rebuild; \
	elif [ -n "$$rebuild" ]; then \
	  echo "uninstall: the initramfs built before still has the shim and claims its devices at every boot; rebuild it: $$rebuild (or make uninstall REBUILD_INITRAMFS=1)"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
