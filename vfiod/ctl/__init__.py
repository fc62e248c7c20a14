"""vfioctl: the command-line client of vfiod.

``main`` parses the command line and dispatches; ``client`` speaks D-Bus to the daemon;
``devices`` turns Device properties into records; ``format`` renders them for a
terminal or as JSON; ``monitor`` follows changes; ``local`` runs the commands that need
no daemon (doctor, initramfs, libvirt-hook). Modules are imported only by the commands
that need them, so that ``vfioctl --help`` and ``vfioctl status`` start fast.
"""
