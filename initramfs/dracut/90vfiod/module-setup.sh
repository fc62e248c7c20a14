#!/bin/bash
# dracut module: vfiod's early-boot shim, run from the pre-udev hook (before udevd
# starts and loads host drivers). Included whenever `vfioctl initramfs install` has
# generated the shim, i.e. some device has boot = "vfio".

check() {
	[[ -f /var/lib/vfiod/early-boot.sh ]] || return 1
	return 0
}

depends() {
	return 0
}

installkernel() {
	# Not only the modules loaded now: vfio-pci is usually not loaded when this runs.
	# vfio_virqfd is a module of its own before Linux 6.2; instmods skips missing ones.
	hostonly='' instmods vfio vfio_pci vfio_iommu_type1 vfio_virqfd
}

install() {
	inst_simple /var/lib/vfiod/early-boot.sh /usr/lib/vfiod/early-boot.sh
	# shellcheck disable=SC2154  # moddir is set by dracut
	inst_hook pre-udev 00 "$moddir/vfiod-pre-udev.sh"
}
