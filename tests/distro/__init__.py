"""The distribution tier: Debian 12 with vfiod installed the README's way, booted by
systemd under QEMU with an emulated IOMMU, checked from inside (see README.md here)."""
