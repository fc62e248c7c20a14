#!/bin/sh
# dracut pre-udev hook: run vfiod's early-boot shim before udevd starts.
# dracut sources hooks, so this must not exit; the shim runs in its own shell.

if [ -x /usr/lib/vfiod/early-boot.sh ]; then
	/usr/lib/vfiod/early-boot.sh || :
fi
