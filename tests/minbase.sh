#!/bin/sh
# `make test` on a bare Debian 12: debootstrap --variant=minbase bookworm, add only git
# and make, clone this repository's HEAD into it and run `make test` there, in
# systemd-nspawn (which mounts /sys read-only: nothing in it can touch this machine's
# devices). Run as root: `make test-minbase` or tests/minbase.sh [ROOT].
#
# ROOT (default /var/tmp/vfiod-minbase) is made afresh, outside the repository, and
# removed afterwards unless KEEP=1. MIRROR overrides the Debian mirror (default: the
# first deb.debian.org-style URI in this machine's apt sources). Exits with make's code.
set -eu

ROOT=${1:-/var/tmp/vfiod-minbase}
[ $# -le 1 ] || { echo "usage: tests/minbase.sh [ROOT]" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${MIRROR:-$(grep -rhoE '(URIs:|deb) +https?://[^ ]*/debian/?( |$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | awk '{print $2; exit}')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || { echo "minbase: run as root" >&2; exit 2; }
for tool in debootstrap systemd-nspawn; do
    command -v "$tool" >/dev/null || {
        echo "minbase: $tool is missing (Debian: debootstrap, systemd-container)" >&2; exit 2; }
done
case "$ROOT/" in "$REPO"/*) echo "minbase: $ROOT is inside the repository" >&2; exit 2 ;; esac

# Behind a TLS-intercepting proxy pip needs this machine's CA bundle (PIP_CERT): lend
# it to the container read-only, so pip there trusts what pip here trusts.
set --
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    set -- --bind-ro="$PIP_CERT:/etc/vfiod-minbase-ca.crt" \
        --setenv=PIP_CERT=/etc/vfiod-minbase-ca.crt
fi
# This machine need not run systemd as PID 1 (no machined): do not register the container.
nspawn() { systemd-nspawn -q --register=no --keep-unit --as-pid2 --pipe -D "$ROOT" "$@"; }
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$ROOT" "$ROOT.debootstrap.log"; }
trap cleanup EXIT

started=$(date +%s)
rm -rf "$ROOT"
echo "minbase: debootstrap --variant=minbase bookworm $ROOT $MIRROR"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
echo "minbase: apt-get install git make"
nspawn sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq git make >/dev/null'
# A clone of what is committed here, as a user would have it.
# Not /root: it is 0700, and some tests run vfiod's client as the user nobody.
git clone -q --branch "$(git -C "$REPO" rev-parse --abbrev-ref HEAD)" "$REPO" "$ROOT/srv/vfiod"
echo "minbase: make test (in $ROOT/srv/vfiod, commit $(git -C "$REPO" rev-parse --short HEAD))"
code=0
nspawn "$@" --chdir=/srv/vfiod make test || code=$?
echo "minbase: make test exited $code after $(( $(date +%s) - started )) s in all"
exit "$code"
