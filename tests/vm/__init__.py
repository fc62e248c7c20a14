"""The real-kernel test tier: a QEMU guest with an emulated Intel IOMMU.

``python -m tests.vm.run`` fetches a Debian kernel, builds a small initramfs, boots the
guest with a fixed PCI layout (layout.py) and runs the pytest suite in ``guest/`` inside
it. Nothing in here touches this machine's own devices; see README.md.
"""
