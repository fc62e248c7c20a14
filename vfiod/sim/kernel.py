"""The simulated kernel: the PCI core, the driver core, VFIO and module loading.

Every rule here is a rule of the real kernel (drivers/base/bus.c, drivers/base/dd.c,
drivers/pci/pci-driver.c, pci-sysfs.c, pci.c, drivers/vfio), as listed in
shared/notes/kernel-facts.md: which driver may bind a device, what each control file
accepts, the errno of each bad write, the order of uevents, when an unbind blocks.

Concurrency follows the kernel's shape: one lock for the model (held by a write for its
whole duration, so writes are atomic to each other), plus a per-device "device lock" a
write holds while it works on a device. The only write that waits is an unbind (or
remove) of a device whose VFIO device fd is held: it keeps the device lock, drops the
model lock while it polls for the holder to go, and so blocks only that device.
"""

from __future__ import annotations

import copy
import errno
import fnmatch
import os
import re
import uuid
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vfiod import vendor_reset_ids
from vfiod.errors import ModuleLoadError
from vfiod.sim import render
from vfiod.sim.events import EventHub
from vfiod.sim.parse import (c_string, kstrtoul, sscanf_hex, synth_uevent,
                             sysfs_streq)
from vfiod.sim.storage import Storage
from vfiod.sim.spec import RESET_METHOD_NAMES, VFIO_DRIVER, Profile, modalias
from vfiod.sim.machine_state import DeviceState, MachineState, save
from vfiod.sim.tree import Control, Node, Tree

#: How often a blocked unbind looks for the holder of the device fd.
HOLDER_POLL = 0.02
RESET_OUTCOMES = ("ok", "enotty", "dies")
PCI_ANY_ID = 0xFFFFFFFF
PAGE_SIZE = 4096
UEVENT_ACTIONS = ("add", "remove", "change", "move", "online", "offline", "bind", "unbind")
KERNEL_RELEASE = "6.1.0-sim-amd64"


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


def _simple_strtoul(value: str) -> int:
    """simple_strtoul(buf, NULL, 0): the leading number, 0 when there is none."""
    m = re.match(r"0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*)", c_string(value))
    if m is None:
        return 0
    if m.group(1):
        return int(m.group(1), 16)
    return int(m.group(2), 8) if m.group(2) is not None else int(m.group(3))


def _synth_uevent(value: str) -> tuple[str, dict[str, str]]:
    """A write to a ``uevent`` file: its action and the event's extra variables, or
    EINVAL (kobject_synth_uevent)."""
    parsed = synth_uevent(value, UEVENT_ACTIONS)
    if parsed is None:
        raise _err(errno.EINVAL)
    return parsed


def _pci_id_fields(value: str, fields: int) -> tuple[int, list[int]]:
    """new_id/remove_id: how many hex fields were given, and all seven with the kernel's
    defaults (subsystem ids PCI_ANY_ID, class, mask and driver_data 0)."""
    given = sscanf_hex(value, fields)
    if len(given) < 2:
        raise _err(errno.EINVAL)
    return len(given), (given + [PCI_ANY_ID, PCI_ANY_ID, 0, 0, 0][len(given) - 2:])[:7]


class Kernel:
    """The model of one machine's kernel, rendering itself into a directory tree."""

    def __init__(self, profile: Profile, root: Path, hub: EventHub,
                 is_held: Callable[[str], bool], pci_ids: str,
                 saved: MachineState | None = None) -> None:
        self.profile = profile
        self.root = root
        self.hub = hub
        self.specs = {d.address: d for d in profile.devices}
        self.modules = {m.name: m for m in profile.modules}
        self.driver_module = {m.driver: m.name for m in profile.modules if m.driver}
        self._aliases = [(re.compile(fnmatch.translate(a)), m.name)
                         for m in profile.modules for a in m.aliases]
        self._driver_aliases: dict[str, list[re.Pattern[str]]] = {}
        for pattern, module in self._aliases:
            driver = self.modules[module].driver
            if driver is not None:
                self._driver_aliases.setdefault(driver, []).append(pattern)
        self._is_held = is_held
        self._pci_ids = pci_ids
        self.tree = Tree(root)
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._busy: set[str] = set()
        self._dirty: set[str] = set()
        self._changed = False
        self._events: list[tuple[str, str, str, dict[str, str]]] = []
        self._threads: list[threading.Thread] = []
        self.closing = False
        #: Multiplies every modelled reset time (DeviceSpec.reset_seconds): tests run a
        #: 60 s FLR in a fraction of a second.
        self.time_scale = 1.0
        #: /sys/bus/pci/drivers_autoprobe: while 0, a driver that registers binds nothing
        #: by itself. A PCI rescan still probes what it adds (pci_bus_add_device calls
        #: device_attach itself), and drivers_probe and bind work as ever.
        self.autoprobe = 1
        #: Called (under the lock) after the tree changed: the watcher re-syncs its watches.
        self.on_change: Callable[[], None] | None = None
        self._index_topology()

        # Boot: built-in drivers bind, then the boot modules load, in order. The result
        # is the reference the saved state is a difference from.
        self.states = {a: DeviceState(group=self.specs[a].group) for a in self.specs}
        self._index_groups()
        self.loaded: list[str] = []
        self.drivers = [m.driver for m in profile.modules if m.builtin and m.driver]
        self.dynids: dict[str, list[list[int]]] = {}
        self.vtcon = {name: int(name == "vtcon1") for name in render.VTCONSOLES}
        for driver in list(self.drivers):
            self._driver_attach(driver)
        for name in profile.boot_modules:
            self._load(name)
        self._events.clear()
        self._boot = copy.deepcopy(self.states)
        self._deltas: dict[str, dict[str, Any]] = {}
        #: /proc/sys/kernel/random/boot_id: new when the machine boots, kept on re-attach.
        self.boot_id = str(uuid.uuid4())
        if saved is not None:
            self._restore(saved)
        self._index_groups()
        self.storage = Storage(profile, self._block_devices, self._storage_changed)
        self._dirty = set(self._all_owners())
        self._changed = True
        self._commit(fresh=saved is None)
        if saved is not None:
            self.tree.prune()

    # -- topology ----------------------------------------------------------------------
    def _index_topology(self) -> None:
        self._kids: dict[str | None, list[str]] = {}
        self._ancestors: dict[str, tuple[str, ...]] = {}
        self._dirs: dict[str, str] = {}
        self._vfs: dict[str, list[str]] = {}
        self._slots: dict[str, list[str]] = {}
        for addr, spec in self.specs.items():
            self._kids.setdefault(spec.parent, []).append(addr)
            if spec.physfn is not None:
                self._vfs.setdefault(spec.physfn, []).append(addr)
            else:
                self._slots.setdefault(addr.rsplit(".", 1)[0], []).append(addr)
        for addr in self.specs:
            chain: list[str] = []
            parent = self.specs[addr].parent
            while parent is not None:
                chain.append(parent)
                parent = self.specs[parent].parent
            self._ancestors[addr] = tuple(reversed(chain))
            self._dirs[addr] = "/sys/devices/pci0000:00/" + "/".join([*reversed(chain), addr])
        # Parents before children, so a rescan can add a bridge before what is behind it.
        self._topo_order = sorted(self.specs, key=lambda a: (len(self._ancestors[a]),
                                                             self.specs[a].physfn is not None, a))
        self._buses: dict[str, tuple[int, int, int]] = {}
        for addr, spec in self.specs.items():
            if spec.is_bridge:
                below = [int(self.specs[d].bus.split(":")[1], 16)
                         for d in self.specs if addr in self._ancestors[d]]
                direct = [int(self.specs[d].bus.split(":")[1], 16)
                          for d in self._kids.get(addr, [])]
                primary = int(spec.bus.split(":")[1], 16)
                self._buses[addr] = (primary, min(direct, default=0), max(below, default=0))

    def sysfs_dir(self, address: str) -> str:
        """The device's directory, e.g. /sys/devices/pci0000:00/0000:00:02.0/..."""
        return self._dirs[address]

    def devpath(self, address: str) -> str:
        """The uevent DEVPATH of a device (its sysfs directory without /sys)."""
        return self._dirs[address][len("/sys"):]

    def bridge_buses(self, address: str) -> tuple[int, int, int] | None:
        """(primary, secondary, subordinate) bus numbers of a bridge."""
        return self._buses.get(address)

    def multifunction(self, address: str) -> bool:
        """True for function 0 of a slot with several functions (header type bit 7)."""
        return address.endswith(".0") and len(self._slots.get(address[:-2], ())) > 1

    def virtfns(self, address: str) -> list[str]:
        """An SR-IOV PF's VFs, in VF order."""
        return self._vfs.get(address, [])

    def group_members(self, group: int) -> list[str]:
        """The devices of an IOMMU group that exist now."""
        return list(self._groups.get(group, []))

    def vfio_members(self, group: int) -> list[str]:
        """The group's devices on vfio-pci (also one whose unbind is waiting)."""
        return [a for a in self._groups.get(group, []) if self.states[a].driver == VFIO_DRIVER]

    # -- IOMMU groups ------------------------------------------------------------------
    def _index_groups(self) -> None:
        """The members of every IOMMU group, from the devices' states."""
        self._groups: dict[int, list[str]] = {}
        for address in sorted(self.states):
            st = self.states[address]
            if st.present and st.group is not None:
                self._groups.setdefault(st.group, []).append(address)

    def _join_group(self, address: str) -> None:
        """Give a device being added its IOMMU group, as iommu_probe_device does.

        At boot every device is in the profile's group (the IOMMU driver groups them
        once PCI enumeration is over). A device added later is grouped on its own:
        function 0 of a slot (its header says multifunction) joins the group of
        another function of the slot; any other function gets a new group, the lowest
        free number (the kernel marks functions 1-7 multifunction only after they were
        added, so a re-added HDA function of a GPU lands in a group of its own).
        Bridges without ACS are not modelled: every port isolates what is behind it.
        """
        st = self.states[address]
        if self.specs[address].group is None:
            st.group = None  # no IOMMU, or a device it does not translate for
            return
        group = None
        if self.multifunction(address):
            group = next((self.states[a].group for a in self._slots[address[:-2]]
                          if a != address and self.states[a].present
                          and self.states[a].group is not None), None)
        if group is None:
            group = next(n for n in range(len(self.specs) + len(self._groups) + 1)
                         if not self._groups.get(n))
        st.group = group
        self._groups.setdefault(group, []).append(address)
        self._groups[group].sort()

    def _leave_group(self, address: str) -> None:
        """A device going away leaves its group (the last one frees the number)."""
        group = self.states[address].group
        if group is not None and address in self._groups.get(group, []):
            self._groups[group].remove(address)
            self._dirty.update((f"group:{group}", f"vfio:{group}"))

    def children_active(self, address: str) -> bool:
        """True while the host driver that creates the device's children is bound."""
        st = self.states[address]
        return st.present and st.driver is not None and st.driver == self.specs[address].host_driver

    def module_users(self, name: str) -> list[str]:
        """Loaded modules that depend on *name*."""
        return [m for m in self.loaded if name in self.modules[m].depends]

    def _subtree(self, address: str) -> list[str]:
        """The device, everything behind it and its VFs; deepest first."""
        out: list[str] = []

        def visit(a: str) -> None:
            for kid in self._kids.get(a, []):
                if self.specs[kid].physfn is None:  # VFs go with their PF, below
                    visit(kid)
            for vf in self._vfs.get(a, []):
                visit(vf)
            out.append(a)

        visit(address)
        return out

    # -- the block layer ---------------------------------------------------------------
    def _block_devices(self) -> dict[str, tuple[str, str]]:
        """Disks and partitions that exist now: name -> (MAJ:MIN, sysfs folder)."""
        out = {}
        for address, spec in self.specs.items():
            if not spec.children.disks or not self.children_active(address):
                continue
            for disk in spec.children.disks:
                blk = render.disk_dir(self.sysfs_dir(address), disk)
                out[disk.name] = (f"8:{disk.minor}", blk)
                for i, part in enumerate(disk.partition_names, 1):
                    out[part] = (f"8:{disk.minor + i}", f"{blk}/{part}")
        return out

    def _storage_changed(self, change: Callable[[], None]) -> None:
        """Apply a change to the block layer (a mount, a dm device) and render it."""
        with self._op():
            change()
            self._dirty.add("storage")

    # -- rendering and committing ------------------------------------------------------
    def _all_owners(self) -> list[str]:
        owners = ["base", "vtcon", "proc-modules", "proc-route", "storage"]
        owners += [f"mod:{m}" for m in self.modules]
        owners += [f"drv:{d}" for d in self.driver_module]
        groups = set(self._groups) | {s.group for s in self.specs.values() if s.group is not None}
        owners += [f"group:{g}" for g in groups] + [f"vfio:{g}" for g in groups]
        owners += [f"dev:{a}" for a in self.specs]
        return owners

    def _render(self, owner: str) -> dict[str, Node]:
        kind, _, key = owner.partition(":")
        if kind == "dev":
            return render.device_nodes(self, key)
        if kind == "drv":
            return render.driver_nodes(self, key)
        if kind == "mod":
            return render.module_nodes(self, key)
        if kind == "group":
            return render.group_nodes(self, int(key))
        if kind == "vfio":
            return render.vfio_group_nodes(self, int(key))
        if owner == "base":
            return render.base_nodes(self, self._pci_ids)
        if owner == "vtcon":
            return render.vtcon_nodes(self)
        if owner == "proc-modules":
            return render.proc_modules_nodes(self)
        if owner == "proc-route":
            return render.proc_route_nodes(self)
        if owner == "storage":
            return self.storage.nodes()
        raise KeyError(owner)

    def _touch(self, address: str) -> None:
        """Mark everything that shows this device's state for re-rendering."""
        spec, group = self.specs[address], self.states[address].group
        self._dirty.add(f"dev:{address}")
        if group is not None:
            self._dirty.update((f"group:{group}", f"vfio:{group}"))
        if spec.children.net is not None:
            self._dirty.add("proc-route")
        if spec.children.disks:
            self._dirty.add("storage")
        if spec.physfn is not None:
            self._dirty.add(f"dev:{spec.physfn}")
        self._dirty.update(f"dev:{vf}" for vf in self._vfs.get(address, ()))

    def _commit(self, fresh: bool = True) -> None:
        """Render what changed, save the state, then send the queued uevents."""
        if self.closing:
            return  # the machine stays as last committed; a write woken by close is void
        if self._dirty:
            owners, self._dirty = self._dirty, set()
            self.tree.apply({o: self._render(o) for o in owners}, trust_disk=fresh)
            for owner in owners:
                if owner.startswith("dev:"):
                    addr = owner[4:]
                    self._deltas[addr] = self.states[addr].delta(self._boot[addr])
            self._changed = True
        if self._changed:
            self._changed = False
            save(self.root, MachineState(
                profile=self.profile.name, devices=self._deltas, modules=self.loaded,
                dynids=self.dynids, vtcon=self.vtcon, seqnum=self.hub.seqnum,
                boot_id=self.boot_id, autoprobe=self.autoprobe).to_json())
            if self.on_change is not None:
                self.on_change()
        events, self._events = self._events, []
        for event in events:
            self.hub.emit(*event)

    def _restore(self, saved: MachineState) -> None:
        for addr, delta in saved.devices.items():
            if addr in self.states:
                self.states[addr] = self._boot[addr].with_delta(delta)
        self.loaded = [m for m in saved.modules if m in self.modules]
        self.drivers = [m.driver for m in self.profile.modules if m.builtin and m.driver]
        self.drivers += [d for m in self.loaded if (d := self.modules[m].driver)]
        self.dynids = {k: [list(i) for i in v] for k, v in saved.dynids.items()}
        self.vtcon.update(saved.vtcon)
        self.hub.seqnum = saved.seqnum
        self.boot_id = saved.boot_id or self.boot_id
        self.autoprobe = saved.autoprobe

    @contextmanager
    def _op(self) -> Iterator[None]:
        """One write: atomic to other writes, committed when it ends (also on error)."""
        with self.lock:
            try:
                yield
            finally:
                self._commit()

    @contextmanager
    def _device_lock(self, address: str) -> Iterator[None]:
        """The kernel's device_lock(): waits while another write works on the device."""
        while address in self._busy:
            if self.closing:
                raise _err(errno.EINTR)
            self._cond.wait(0.05)
        self._busy.add(address)
        try:
            yield
        finally:
            self._busy.discard(address)
            self._cond.notify_all()

    # -- uevents -----------------------------------------------------------------------
    def _pci_event(self, action: str, address: str, **extra: str) -> None:
        # DRIVER is there while the device has one: on bind, not on unbind, add or remove.
        props = render.pci_properties(self.specs[address], self.states[address].driver)
        self._events.append((action, self.devpath(address), "pci", {**props, **extra}))

    def _children_events(self, action: str, address: str) -> None:
        kids = render.child_devices(self.specs[address], self.sysfs_dir(address))
        if action == "remove":
            kids.reverse()
        for path, subsystem, props in kids:
            self._events.append((action, path[len("/sys"):], subsystem, props))

    # -- the write entry point ---------------------------------------------------------
    def write(self, host_path: str, value: str) -> None:
        """One write(2) of *value* to *host_path*, with the kernel's semantics and errno."""
        with self.lock:
            control = self.control_at(host_path)
        if not value:
            return  # sysfs_kf_write: a zero-length write never reaches the attribute's store
        handler: Callable[[str, str], None] = getattr(self, f"_w_{control.scope}_{control.attr}")
        handler(control.key, value)

    def control_at(self, host_path: str) -> Control:
        """The control a path leads to (links followed), or the errno open() would give."""
        root = os.fspath(self.root)
        resolved = os.path.realpath(root + host_path)
        if resolved != root and not resolved.startswith(root + "/"):
            raise _err(errno.EACCES, host_path)
        if not os.path.lexists(resolved):
            raise _err(errno.ENOENT, host_path)
        if os.path.isdir(resolved):
            raise _err(errno.EISDIR, host_path)
        node = self.tree.node(resolved[len(root):])
        if node is None or node.control is None:
            # A read-only attribute: sysfs refuses the open for writing, even to root.
            raise _err(errno.EACCES, host_path)
        return node.control

    def _find(self, value: str) -> str | None:
        """The present device a buffer names (bus_find_device_by_name + sysfs_streq)."""
        s = c_string(value)
        name = s[:-1] if s.endswith("\n") else s
        return name if name in self.specs and self.states[name].present else None

    # -- /sys/bus/pci ------------------------------------------------------------------
    def _w_bus_drivers_probe(self, _key: str, value: str) -> None:
        with self._op():
            address = self._find(value)
            if address is None:
                raise _err(errno.ENODEV)
            with self._device_lock(address):
                st = self.states[address]
                # A bound device: success, nothing happens. No match: success too.
                if st.present and st.driver is None:
                    self._device_attach(address)

    def _w_bus_drivers_autoprobe(self, _key: str, value: str) -> None:
        # drivers_autoprobe_store: any write that is not "0..." turns it on.
        with self._op():
            self.autoprobe = 0 if c_string(value).startswith("0") else 1
            self._dirty.add("base")
            self._changed = True

    def _w_pcibus_rescan(self, bridge: str, value: str) -> None:
        # bus_rescan_store: the bus and everything below it; the root bus rescans all.
        # The key is the bridge whose secondary bus this is ("" for the root bus).
        if kstrtoul(value):
            with self._op():
                present = bridge in self.states and self.states[bridge].present
                self._rescan(scope=bridge if present else None)

    def _w_bus_rescan(self, _key: str, value: str) -> None:
        if kstrtoul(value):
            with self._op():
                self._rescan(scope=None)

    # -- /sys/bus/pci/drivers/X --------------------------------------------------------
    def _w_driver_bind(self, driver: str, value: str) -> None:
        with self._op():
            address = self._find(value)
            if address is None:
                raise _err(errno.ENODEV)
            with self._device_lock(address):
                if not self.states[address].present or not self._match(driver, address):
                    raise _err(errno.ENODEV)
                if self.states[address].driver is not None:
                    raise _err(errno.EBUSY)
                err = self._probe(address, driver)
                if err:
                    raise _err(err)

    def _w_driver_unbind(self, driver: str, value: str) -> None:
        with self._op():
            address = self._find(value)
            if address is None:
                raise _err(errno.ENODEV)
            with self._device_lock(address):
                if self.states[address].driver != driver:
                    raise _err(errno.ENODEV)
                self._detach(address)

    def _w_driver_new_id(self, driver: str, value: str) -> None:
        count, (vendor, device, subv, subd, klass, mask, data) = _pci_id_fields(value, 7)
        with self._op():
            if count != 7 and self._ids_match(driver, vendor, device, subv, subd, klass):
                raise _err(errno.EEXIST)
            if data:
                # Only driver_data of an existing id_table entry is accepted; ours are 0.
                raise _err(errno.EINVAL)
            self.dynids.setdefault(driver, []).append([vendor, device, subv, subd, klass, mask])
            self._changed = True
            self._driver_attach(driver)

    def _w_driver_remove_id(self, driver: str, value: str) -> None:
        _, (vendor, device, subv, subd, klass, mask, _) = _pci_id_fields(value, 6)
        with self._op():
            ids = self.dynids.get(driver, [])
            for i, (v, d, sv, sd, c, _m) in enumerate(ids):
                if (v == vendor and d == device and subv in (PCI_ANY_ID, sv)
                        and subd in (PCI_ANY_ID, sd) and not ((c ^ klass) & mask)):
                    del ids[i]
                    self._changed = True
                    return
            raise _err(errno.ENODEV)

    # -- /sys/devices/.../ADDRESS --------------------------------------------------------
    def _w_device_driver_override(self, address: str, value: str) -> None:
        if len(value.encode("utf-8", "surrogateescape")) >= PAGE_SIZE - 1:
            raise _err(errno.EINVAL)
        # Cut at the first newline; "" or "\n" clears the override.
        override = c_string(value).split("\n", 1)[0] or None
        with self._op(), self._device_lock(address):
            self.states[address].override = override
            self._touch(address)

    def _w_device_reset(self, address: str, value: str) -> None:
        if kstrtoul(value) != 1:
            raise _err(errno.EINVAL)
        with self._op(), self._device_lock(address):
            self._reset(address)

    def _w_device_reset_method(self, address: str, value: str) -> None:
        spec = self.specs[address]
        with self._op():
            st = self.states[address]
            if sysfs_streq(value, ""):
                st.reset_selected = []  # every method disabled
            elif sysfs_streq(value, "default"):
                # pci_init_reset_methods: every method is probed again, now.
                st.reset_selected = self._selection(address, self._probed(address))
            else:
                chosen: list[str] = []
                for name in c_string(value).split(" "):
                    if sysfs_streq(name, ""):
                        continue
                    name = name.strip()
                    # Each name is probed as it is selected: a method the device has
                    # but cannot use now (bus, with another function on the bus) is
                    # "Invalid reset method" too, and the selection stays as it was.
                    if name == "device_specific" and self._vendor_reset_covers(address):
                        chosen.append(name)  # vendor-reset's probe says yes
                        continue
                    if (name not in RESET_METHOD_NAMES or name not in spec.reset_methods
                            or not self._probe_ok(address, name)):
                        raise _err(errno.EINVAL)
                    chosen.append(name)
                st.reset_selected = chosen
            self._touch(address)

    def _w_device_remove(self, address: str, value: str) -> None:
        if kstrtoul(value):
            with self._op():
                self._sleep(self._seconds(address, "remove"))
                self._remove(address, unplug=False)

    def _w_device_rescan(self, address: str, value: str) -> None:
        if kstrtoul(value):
            spec = self.specs[address]
            with self._op():
                self._rescan(scope=address if spec.is_bridge else spec.parent)

    def _w_device_enable(self, address: str, value: str) -> None:
        enable = kstrtoul(value)
        with self._op(), self._device_lock(address):
            st = self.states[address]
            if st.driver is not None:
                raise _err(errno.EBUSY)
            if enable:
                st.enabled = True
            elif st.enabled:
                st.enabled = False
            else:
                raise _err(errno.EIO)
            self._touch(address)

    def _w_device_uevent(self, address: str, value: str) -> None:
        action, extra = _synth_uevent(value)
        with self._op():
            self._pci_event(action, address, **extra)

    def _w_drm_uevent(self, key: str, value: str) -> None:
        """A DRM minor's uevent file (``/sys/class/drm/card0/uevent``): a synthetic
        event, the device stays. What a compositor that honours ``remove`` sees."""
        address, _, minor = key.partition("/")
        action, extra = _synth_uevent(value)
        with self._op():
            for path, subsystem, props in render.child_devices(
                    self.specs[address], self.sysfs_dir(address)):
                if subsystem == "drm" and path.rsplit("/", 1)[1] == minor:
                    self._events.append((action, path[len("/sys"):], subsystem,
                                         {**props, **extra}))

    def _w_vtcon_bind(self, name: str, value: str) -> None:
        with self._op():
            self.vtcon[name] = 1 if _simple_strtoul(value) else 0
            self._dirty.add("vtcon")

    # -- the driver core -----------------------------------------------------------------
    def _match(self, driver: str, address: str) -> bool:
        """pci_match_device(): driver_override first, then the ids; an override always
        matches the driver it names."""
        override = self.states[address].override
        if override is not None and override != driver:
            return False
        s = self.specs[address]
        return (self._ids_match(driver, s.vendor, s.device, s.subsystem_vendor,
                                s.subsystem_device, s.class_code)
                or override is not None)

    def _ids_match(self, driver: str, vendor: int, device: int, subv: int, subd: int,
                   klass: int) -> bool:
        """Do these ids match the driver's dynamic ids or its id table?"""
        for v, d, sv, sd, c, mask in self.dynids.get(driver, ()):
            if (v in (PCI_ANY_ID, vendor) and d in (PCI_ANY_ID, device)
                    and sv in (PCI_ANY_ID, subv) and sd in (PCI_ANY_ID, subd)
                    and not ((c ^ klass) & mask)):
                return True
        if driver == VFIO_DRIVER:
            return False  # its table is "override only": never a match by id alone
        alias = modalias(vendor, device, subv, subd, klass)
        return any(p.match(alias) for p in self._driver_aliases.get(driver, ()))

    def _device_attach(self, address: str) -> bool:
        """Offer the device to every registered driver in order; the first probe wins."""
        for driver in self.drivers:
            if self._match(driver, address) and self._probe(address, driver) == 0:
                return True
        return False

    def _driver_attach(self, driver: str) -> None:
        """A driver just registered (or got a new id): it probes every free device."""
        for address in self._topo_order:
            st = self.states[address]
            if st.present and st.driver is None and self._match(driver, address):
                self._probe(address, driver)

    def _probe(self, address: str, driver: str) -> int:
        """Bind a matching, unbound device; 0, or the errno of a failed probe."""
        st = self.states[address]
        if driver == VFIO_DRIVER:
            group = st.group
            if group is None:
                return errno.EINVAL  # no IOMMU group: vfio-pci refuses the device
            used = {self.states[a].vfio_index for a in self.specs}
            index = next(i for i in range(len(self.specs) + 1) if i not in used)
            first = not self.vfio_members(group)
            st.driver, st.vfio_index, st.enabled = VFIO_DRIVER, index, False
            self._touch(address)
            if first:
                self._events.append(("add", f"/devices/virtual/vfio/{group}", "vfio",
                                     render.vfio_group_properties(group)))
            self._events.append(("add", f"{self.devpath(address)}/vfio-dev/vfio{index}",
                                 "vfio-dev",
                                 render.vfio_device_properties(index, self.profile.vfio_cdev)))
        else:
            if st.dead:
                return errno.ENODEV  # config space reads all ones: the probe fails
            st.driver, st.enabled = driver, True
            self._touch(address)
            if self.children_active(address):
                self._children_events("add", address)
        self._pci_event("bind", address)
        return 0

    def _detach(self, address: str) -> None:
        """Release the device from its driver (the caller holds its device lock).

        On vfio-pci, while a process holds the device's fd, the ``driver`` link goes at
        once and the call waits until the fd is closed, as vfio_unregister_group_dev does.
        """
        st = self.states[address]
        if st.driver == VFIO_DRIVER:
            # The cdev (6.6+) and the device fd got through the group (an anonymous
            # inode, modelled by a private stand-in): either keeps the device.
            nodes = {render.device_fd_node(st.vfio_index or 0, cdev)
                     for cdev in (self.profile.vfio_cdev, False)}
            if any(self._is_held(n) for n in nodes):
                st.releasing = True
                self._touch(address)
                self._commit()
                while any(self._is_held(n) for n in nodes):
                    if self.closing:
                        raise _err(errno.EINTR)
                    self._cond.wait(HOLDER_POLL)
            self._events.append(("remove", f"{self.devpath(address)}/vfio-dev/vfio{st.vfio_index}",
                                 "vfio-dev", render.vfio_device_properties(
                                     st.vfio_index or 0, self.profile.vfio_cdev)))
            group = st.group
            assert group is not None
            if self.vfio_members(group) == [address]:
                self._events.append(("remove", f"/devices/virtual/vfio/{group}", "vfio",
                                     render.vfio_group_properties(group)))
            st.vfio_index, st.releasing = None, False
        elif self.children_active(address):
            self._children_events("remove", address)
        st.driver, st.enabled = None, False
        self._touch(address)
        self._pci_event("unbind", address)

    def _finish_release(self, address: str) -> None:
        """Complete an unbind a previous process left waiting for a holder."""
        try:
            with self._op(), self._device_lock(address):
                if self.states[address].releasing:
                    self._detach(address)
        except OSError:
            pass  # shutting down: the next SimHost on this root resumes it

    def resume(self) -> None:
        """Finish, in the background, unbinds that were waiting when the state was saved."""
        for address, st in self.states.items():
            if st.releasing:
                t = threading.Thread(target=self._finish_release, args=(address,),
                                     name=f"sim release {address}", daemon=True)
                self._threads.append(t)
                t.start()

    # -- hotplug -----------------------------------------------------------------------
    def _remove(self, address: str, unplug: bool) -> None:
        for sub in self._subtree(address):
            st = self.states[sub]
            if unplug:
                st.plugged = False
            if not st.present:
                continue
            with self._device_lock(sub):
                if st.driver is not None:
                    self._detach(sub)
                self._pci_event("remove", sub)
                self._leave_group(sub)
                # Gone from the kernel: override, reset selection, group and death go
                # with it.
                self.states[sub] = DeviceState(present=False, plugged=st.plugged,
                                               outcomes=st.outcomes, broken=st.broken)
                self._touch(sub)

    def _rescan(self, scope: str | None, only: set[str] | None = None) -> None:
        # As pci_rescan_bus: the scan adds every device it finds (pci_device_add: its
        # reset methods probed, its "add" uevent), then pci_bus_add_devices offers each
        # to the drivers, in the same order.
        added: list[str] = []
        for address in self._topo_order:
            st, spec = self.states[address], self.specs[address]
            if st.present or not st.plugged or (only is not None and address not in only):
                continue
            if scope is not None and scope not in self._ancestors[address]:
                continue
            if spec.parent is not None and not self.states[spec.parent].present:
                continue
            if spec.physfn is not None and not self.states[spec.physfn].present:
                continue
            self.states[address] = DeviceState(outcomes=st.outcomes, broken=st.broken)
            self._join_group(address)
            # Probed before the device joins its bus: function 0 scanned with its
            # siblings is still alone there. Without a method the reset and
            # reset_method files are never made.
            methods = self._probed(address)
            self.states[address].reset_selected = self._selection(address, methods)
            self.states[address].reset_files = bool(methods)
            self._touch(address)
            self._pci_event("add", address)
            self._sleep(self._seconds(address, "rescan"))
            added.append(address)
        # pci_bus_add_device attaches each device itself: drivers_autoprobe does not
        # stop a PCI rescan (seen on 6.1).
        for address in added:
            self._device_attach(address)

    def unplug(self, address: str) -> None:
        """Pull the device (and what is behind it) out of the machine: a surprise removal."""
        with self._op():
            self._remove(self._known(address), unplug=True)

    def plug(self, address: str) -> None:
        """Put an unplugged device back: the slot reports it and the kernel adds it."""
        address = self._known(address)
        with self._op():
            subtree = set(self._subtree(address))
            for sub in subtree:
                self.states[sub].plugged = True
            self._rescan(scope=None, only=subtree)

    # -- reset -------------------------------------------------------------------------
    def _reset(self, address: str) -> None:
        spec, st = self.specs[address], self.states[address]
        methods = list(spec.reset_methods) if st.reset_selected is None else st.reset_selected
        for method in methods:
            # The device lock is held, the model's lock is not, while the kernel waits.
            self._sleep(self._seconds(address, method))
            outcome = st.outcomes.get(method) or self._natural_outcome(address, method)
            if outcome == "enotty":
                continue  # __pci_reset_function_locked tries the next method
            if outcome == "dies":
                st.dead = True
            elif method == "device_specific":
                # vendor-reset's reset: the card comes back even from the AMD reset bug.
                st.dead = st.used = False
            elif self._reset_bug(address):
                pass  # the reset "worked" and left the card as the bug leaves it
            elif method == "bus":
                for other in self.specs:
                    if self.specs[other].bus == spec.bus and self.states[other].dead:
                        self.states[other].dead = False
                        self._touch(other)
            self._touch(address)
            return
        raise _err(errno.ENOTTY)

    def _reset_bug(self, address: str) -> bool:
        """Apply a dying card's bug to a reset that reports success; True when it did."""
        spec, st = self.specs[address], self.states[address]
        if spec.reset_bug == "never_back" and (st.used or st.broken):
            st.broken = True
            return True
        if spec.reset_bug == "amd" and st.used:
            st.dead = True
            return True
        return False

    def _seconds(self, address: str, what: str) -> float:
        """How long *what* (a reset method, hot_reset, remove, rescan) takes on the device."""
        for name, seconds in self.specs[address].reset_seconds:
            if name == what:
                return seconds * self.time_scale
        return 0.0

    def _sleep(self, seconds: float) -> None:
        """Wait as the kernel does inside a write, letting other writes run meanwhile."""
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.closing:
                raise _err(errno.EINTR)
            self._cond.wait(left)

    def guest_used(self, addresses: list[str]) -> None:
        """A guest drove these functions (opened their group): dying cards now misbehave
        at their next reset."""
        with self._op():
            for address in addresses:
                if address in self.states and self.states[address].present:
                    self.states[address].used = True
                    self._touch(address)

    def hot_reset(self, address: str, is_held: Callable[[str], bool]) -> list[str]:
        """VFIO_DEVICE_PCI_HOT_RESET through *address*'s device fd; return who was reset.

        The kernel resets the bus below the parent bridge when every function on it is
        on vfio-pci (else the caller cannot give their group fds: EPERM) and no other
        process holds their groups (opening one fails EBUSY). Every function comes back,
        whatever outcome a test set for its own methods: this is the bridge's reset.
        """
        address = self._known(address)
        with self._op():
            spec, st = self.specs[address], self.states[address]
            if not st.present or st.driver != VFIO_DRIVER or st.group is None:
                raise _err(errno.ENODEV)
            if spec.parent is None:
                raise _err(errno.ENOTTY)  # no bridge above a root-bus device
            on_bus = [a for a in self._kids.get(spec.parent, [])
                      if self.specs[a].bus == spec.bus and self.states[a].present]
            if any(self.states[a].driver != VFIO_DRIVER for a in on_bus):
                raise _err(errno.EPERM)
            groups = {self.states[a].group for a in on_bus}
            if any(is_held(f"/dev/vfio/{g}") for g in groups):
                raise _err(errno.EBUSY)
            self._sleep(max(self._seconds(a, "hot_reset") for a in on_bus))
            for a in on_bus:
                if not self._reset_bug(a):
                    self.states[a].dead = False
                self._touch(a)
            return sorted(on_bus)

    def _vendor_reset_covers(self, address: str) -> bool:
        """vendor-reset is loaded and has this card in its table."""
        spec = self.specs[address]
        return (self.module_loaded(vendor_reset_ids.MODULE)
                and vendor_reset_ids.family(spec.vendor, spec.device) is not None)

    def _natural_outcome(self, address: str, method: str) -> str:
        """What a method does on this machine when no test said otherwise."""
        if not self._probe_ok(address, method):
            return "enotty"
        for name, outcome in self.specs[address].reset_outcomes:
            if name == method:
                return outcome
        return "ok"

    def _probe_ok(self, address: str, method: str) -> bool:
        """The method's PCI_RESET_PROBE: can it reset the device as the bus is now?"""
        spec = self.specs[address]
        if method == "bus":
            # pci_parent_bus_reset: not on the root bus, and alone on its bus.
            return spec.parent is not None and not any(
                a != address and self.specs[a].bus == spec.bus and self.states[a].present
                for a in self._kids.get(spec.parent, []))
        return True

    def _probed(self, address: str) -> list[str]:
        """The device's methods that pass their probe now, best first."""
        return [m for m in self.specs[address].reset_methods if self._probe_ok(address, m)]

    def _selection(self, address: str, methods: list[str]) -> list[str] | None:
        """A device's reset_selected for *methods* (None: all the methods it has)."""
        return None if methods == list(self.specs[address].reset_methods) else methods

    def set_reset_outcome(self, address: str, method: str, outcome: str) -> None:
        """Decide what *method* does to the device from now on: ok, enotty or dies."""
        if outcome not in RESET_OUTCOMES:
            raise ValueError(f"reset outcome {outcome!r}: expected one of {RESET_OUTCOMES}")
        if method not in RESET_METHOD_NAMES:
            raise ValueError(f"unknown reset method {method!r}")
        address = self._known(address)
        with self._op():
            self.states[address].outcomes[method] = outcome
            self._touch(address)

    def kill_device(self, address: str) -> None:
        """The device stops answering: its config space reads all ones."""
        address = self._known(address)
        with self._op():
            self.states[address].dead = True
            self._touch(address)

    def _known(self, address: str) -> str:
        if address not in self.specs:
            raise KeyError(f"no device {address} in profile {self.profile.name}")
        return address

    # -- modules -----------------------------------------------------------------------
    def load_module(self, name_or_modalias: str) -> None:
        """modprobe: load a module by name (``vfio-pci`` or ``vfio_pci``) or modalias."""
        with self._op():
            for name in self._resolve_module(name_or_modalias):
                self._load(name)

    def module_loaded(self, name: str) -> bool:
        """True for a loaded or built-in module (or the module of a driver name)."""
        name = name.replace("-", "_")
        m = self.modules.get(name)
        return m is not None and (m.builtin or name in self.loaded)

    def driver_loadable(self, name: str) -> bool:
        """True when a driver of this name is registered or a module provides it."""
        return name in self.drivers or name in self.driver_module

    def kernel_choice(self, modalias: str) -> str | None:
        """The driver of the one module (not VFIO's) whose aliases match *modalias*."""
        drivers = {self.modules[m].driver for p, m in self._aliases
                   if p.match(modalias) and self.modules[m].driver
                   and "vfio" not in m}
        return drivers.pop() if len(drivers) == 1 else None

    def _resolve_module(self, what: str) -> list[str]:
        name = what.strip().replace("-", "_")
        if name in self.modules:
            return [name]
        found: list[str] = []
        for pattern, module in self._aliases:
            if pattern.match(what.strip()) and module not in found:
                found.append(module)
        if not found:
            raise ModuleLoadError(f"modprobe {what} failed: Module {what} not found in "
                                  f"directory /lib/modules/{KERNEL_RELEASE}")
        return found

    def _load(self, name: str) -> None:
        m = self.modules[name]
        if m.builtin or name in self.loaded:
            return
        for dep in m.depends:
            self._load(dep)
        self.loaded.append(name)
        self._dirty.update({f"mod:{name}", "proc-modules", *(f"mod:{d}" for d in m.depends)})
        self._changed = True
        self._events.append(("add", f"/module/{name}", "module", {}))
        if m.driver is not None:
            self.drivers.append(m.driver)
            self._dirty.add(f"drv:{m.driver}")
            if self.autoprobe:  # bus_add_driver attaches only with drivers_autoprobe on
                self._driver_attach(m.driver)

    # -- shutdown ----------------------------------------------------------------------
    def close(self) -> None:
        """Wake and end every waiting write (they fail EINTR and stay resumable)."""
        with self.lock:
            self.closing = True
            self.on_change = None
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=2.0)
