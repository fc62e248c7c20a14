#!/bin/sh
# Run once in the freshly debootstrapped image (systemd-nspawn --as-pid2), before it is
# cached: what a Debian host has that vfiod's install does not add. Its hash is part of
# the base image's cache key, so changing this rebuilds the base.
set -eu
echo vfiod-distro > /etc/hostname
# The image is one ext4 file system, /dev/vda in the guest.
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > /etc/fstab
# Nobody logs in: the checks run from a unit. No console login prompt on the serial line.
systemctl mask serial-getty@ttyS0.service getty@tty1.service >/dev/null 2>&1
# The polkit checks' callers: alice (rules name her), bob (a rule names his group).
groupadd --system vfiodops
useradd --create-home --shell /bin/sh alice
useradd --create-home --shell /bin/sh --groups vfiodops bob
# The journal on disk: the second boot's checks read the first boot's too.
mkdir -p /var/log/journal
