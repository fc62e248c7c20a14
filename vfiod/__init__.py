"""vfiod: manage VFIO passthrough on a Linux host."""

__version__ = "0.1.0"
