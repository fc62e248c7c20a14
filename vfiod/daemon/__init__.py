"""The vfiod daemon: a thin asyncio shell around the binding engine.

main (the command line), runtime (start-up, operations on worker threads serialised
per IOMMU group, reactions to the host, stop), service (the D-Bus objects), bus (the
connection, with dbus-fast's ObjectManager signals and write buffering corrected, and
GetManagedObjects/PropertiesChanged answered from the objects' own values), view (the
exported objects kept in step with the engine), auth (who may call what), watch
(uevents and /dev/vfio holders), notify (sd_notify), log (journald or stderr),
gc_freeze (garbage collection around start-up).
"""
