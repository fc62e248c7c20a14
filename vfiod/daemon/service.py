"""The D-Bus objects: org.vfiod1.Manager at /org/vfiod1 and one org.vfiod1.Device per function.

This module only shapes calls and answers: it checks options, asks the Authorizer,
hands the work to the Daemon and turns every failure into a D-Bus error with a
one-line message. The names and signatures are DESIGN.md's (and dbus/org.vfiod1.xml's).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, ParamSpec, Protocol, TypeVar

from dbus_fast import Variant
from dbus_fast import introspection as intr
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.errors import DBusError
from dbus_fast.service import dbus_method, dbus_property, dbus_signal

import vfiod
from vfiod.contract import DEVICE_INTERFACE, JOB_INTERFACE, MANAGER_INTERFACE, device_path
from vfiod.daemon.auth import reply_expected
from vfiod.daemon.bus import PropertiesInterface
from vfiod.daemon.log import fields, log
from vfiod.engine.checks import DeviceCheck
from vfiod.engine.plan import Plan
from vfiod.errors import InvalidArgument, VfiodError
from vfiod.printable import printable
from vfiod.records import DeviceStatus



class Operations(Protocol):
    """What the D-Bus objects ask of the daemon (vfiod.daemon.runtime.Daemon has it)."""

    iommu_enabled: bool
    simulated: bool

    @property
    def statuses(self) -> list[DeviceStatus]:
        """The last published status of every function."""

    async def authorize(self) -> None:
        """Return when the current caller may manage devices; AccessDenied if not."""

    async def operate(self, op: str, device: str, *, group: bool = True,
                      force: bool = False, wait: int = 0, clear: bool = False) -> Any:
        """Run bind, unbind or reset; return what the engine returns."""

    async def reload_config(self) -> Any:
        """Reread the config file."""

    async def plan(self, op: str, device: str, *, group: bool = True,
                   force: bool = False) -> Plan:
        """The dry run of bind, unbind or reset: its plan, no write."""

    async def check_devices(self, devices: list[str]) -> list[DeviceCheck]:
        """Every problem with handing these devices to a guest, with its fix."""

    async def start_job(self, op: str, device: str, *, group: bool = True,
                        force: bool = False, wait: int = 0, clear: bool = False,
                        dry_run: bool = False) -> str:
        """Start bind, unbind or reset as a job; its object path."""

    def running_jobs(self) -> list[str]:
        """The object paths of the jobs still running."""

    def cancel_job(self, path: str) -> None:
        """Ask a running job to stop at its next safe step."""

FAILED = "org.vfiod1.Error.Failed"
#: Manager signal Releasing(s device, as holders, u timeout_ms): before a forced Bind
#: asks the host's desktop to let go of a GPU it holds.
RELEASING_SIGNATURE = "sasu"
EMITS_CHANGED = "org.freedesktop.DBus.Property.EmitsChangedSignal"
DEVICE_CHANGED_SIGNATURE = "sss"

Options = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Str = Annotated[str, DBusSignature("s")]
AddressList = Annotated[list[str], DBusSignature("as")]
#: Manager.Status's out signature (DESIGN.md); status_reply.py marshals it once per list.
STATUS_SIGNATURE = "a(sssssis)"
StatusRows = Annotated[list[list[Any]], DBusSignature(STATUS_SIGNATURE)]
NoValue = Annotated[None, DBusSignature("")]
CheckRows = Annotated[list[list[str]], DBusSignature("a(sss)")]
PLAN_SIGNATURE = "sa(ssss)a(sss)asasss"
PlanReply = Annotated[list[Any], DBusSignature(PLAN_SIGNATURE)]

#: The options each operation accepts, with their D-Bus types.
BIND_OPTIONS = {"group": "b", "force": "b", "dry_run": "b"}
UNBIND_OPTIONS = {"group": "b", "dry_run": "b"}
RESET_OPTIONS = {"force": "b", "clear": "b", "dry_run": "b"}
# Every operation may wait (seconds) for a process to let go of the device.
for _accepted in (BIND_OPTIONS, UNBIND_OPTIONS, RESET_OPTIONS):
    _accepted["wait"] = "u"
#: Plan's options by operation: the operation's own (dry_run is implied; wait and
#: clear are accepted and change nothing, as in a dry run).
PLAN_OPTIONS = {"bind": BIND_OPTIONS, "unbind": UNBIND_OPTIONS, "reset": RESET_OPTIONS}
_TYPE_NAMES = {"b": "a boolean (b)", "u": "an unsigned integer (u)"}
#: CheckDevices checks one guest's list: more than any machine has slots is a mistake.
MAX_CHECKED_DEVICES = 256
JOB_FINISHED_SIGNATURE = "osass"
ObjectPath = Annotated[str, DBusSignature("o")]
ObjectPaths = Annotated[list[str], DBusSignature("ao")]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _shown(text: str) -> str:
    """A client-supplied string, made short and printable for a message."""
    short = text[:40].encode("unicode_escape").decode("ascii")
    return repr(short) + ("…" if len(text) > 40 else "")


def parse_options(options: Mapping[str, Variant], accepted: Mapping[str, str],
                  method: str) -> dict[str, Any]:
    """Check an a{sv} against the accepted keys and types; the plain values by key."""
    allowed = ", ".join(f"{k} ({t})" for k, t in accepted.items()) or "none"
    values: dict[str, Any] = {}
    for key, variant in options.items():
        if key not in accepted:
            raise InvalidArgument(f"{method}: unknown option {_shown(key)}; "
                                  f"accepted options: {allowed}")
        want = accepted[key]
        if variant.signature != want:
            raise InvalidArgument(f"{method}: option {key!r} must be "
                                  f"{_TYPE_NAMES.get(want, want)}, not {variant.signature!r}")
        values[key] = variant.value
    return values


#: The options a plan is made with: a dry run waits for nothing (wait) nor lifts a
#: quarantine (clear); it plans as the call with them would.
_PLANNED_OPTIONS = ("group", "force")


def plan_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an operation's parsed options that Daemon.plan takes."""
    return {key: opts[key] for key in _PLANNED_OPTIONS if key in opts}


async def dry_run_or_operate(daemon: Operations, op: str, device: str,
                             opts: dict[str, Any]) -> Any:
    """Bind, Unbind or Reset: with ``dry_run`` the plan's answer (the addresses that
    would move, the method tried first, or the error the call would raise), else the
    operation itself."""
    if opts.pop("dry_run", False):
        return (await daemon.plan(op, device, **plan_options(opts))).answer()
    return await daemon.operate(op, device, **opts)


def plan_reply(plan: Plan) -> list[Any]:
    """A Plan as Plan()'s out arguments (PLAN_SIGNATURE, documented in dbus/)."""
    refusal = plan.refusal
    return [plan.address,
            [[m.address, printable(m.from_driver), printable(m.to_driver), printable(m.note)]
             for m in plan.members],
            [[g.address, g.kind, printable(g.reason)] for g in plan.guards],
            list(plan.rungs), list(plan.modules),
            refusal.dbus_name if refusal is not None else "",
            one_line(str(refusal)) if refusal is not None else ""]


def one_line(text: str) -> str:
    """Error messages cross the bus as one printable line (they may quote a mount
    point or a process name: anything)."""
    return printable(" ".join(text.split()))


def dbus_errors(method: str) -> Callable[[Callable[_P, Awaitable[_R]]],
                                         Callable[_P, Awaitable[_R]]]:
    """Turn whatever a method raises into a DBusError with a one-line message.

    VfiodError keeps its own D-Bus name; anything else is a bug: logged here with its
    traceback and sent as org.vfiod1.Error.Failed without one.

    A call sent with NO_REPLY_EXPECTED gets no error at all: dbus-fast would log any
    exception of such a call as "unexpected exception in future" with a traceback, so
    that any user could fill the log by sending denied calls that want no answer.
    """
    def decorate(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(fn)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return await fn(*args, **kwargs)
            except DBusError:
                if not reply_expected.get():
                    return None  # type: ignore[return-value]  # nobody reads the reply
                raise
            except VfiodError as err:
                if not reply_expected.get():
                    return None  # type: ignore[return-value]
                raise DBusError(err.dbus_name, one_line(str(err))) from None
            except Exception:
                log.exception("%s: internal error", method, extra=fields(operation=method))
                if not reply_expected.get():
                    return None  # type: ignore[return-value]
                raise DBusError(FAILED, f"{method} failed: internal error in vfiod "
                                "(details are in its log)") from None
        return wrapper
    return decorate


class _DescribedInterface(PropertiesInterface):
    """Adds what dbus-fast's decorators cannot say to the introspection data.

    Names for out-arguments and signal arguments, and EmitsChangedSignal=const on
    properties that never change, so that ``busctl introspect`` and generated clients
    read well. (Its properties can be read all at once: PropertiesInterface.)
    """

    arg_names: dict[str, tuple[str, ...]] = {}
    const_properties: frozenset[str] = frozenset()

    def introspect(self) -> intr.Interface:
        data = super().introspect()
        for method in data.methods:
            for arg, name in zip(method.out_args, self.arg_names.get(method.name, ())):
                arg.name = name
        for sig in data.signals:
            for arg, name in zip(sig.args, self.arg_names.get(sig.name, ())):
                arg.name = name
        for prop in data.properties:
            if prop.name in self.const_properties:
                prop.annotations[EMITS_CHANGED] = "const"
        return data


class ManagerInterface(_DescribedInterface):
    """org.vfiod1.Manager: operations by device argument, Status, Reload, DeviceChanged."""

    arg_names = {"Bind": ("moved",), "Unbind": ("moved",), "Reset": ("method",),
                 "Status": ("devices",), "DeviceChanged": ("address", "state", "driver"),
                 "Releasing": ("device", "holders", "timeout_ms"),
                 "Plan": ("address", "members", "guards", "rungs", "modules", "error",
                          "message"),
                 "CheckDevices": ("checks",)}
    arg_names = {**arg_names, "BindJob": ("job",), "UnbindJob": ("job",),
                 "ResetJob": ("job",), "Jobs": ("jobs",),
                 "JobFinished": ("job", "result", "devices", "error")}
    const_properties = frozenset({"Version", "IommuEnabled", "Simulated"})

    def __init__(self, daemon: Operations) -> None:
        super().__init__(MANAGER_INTERFACE)
        self.daemon = daemon

    # -- jobs: the same operations, answered at once with the job's path ---------------
    @dbus_method(name="BindJob")
    @dbus_errors("BindJob")
    async def bind_job(self, device: Str, options: Options) -> ObjectPath:
        opts = parse_options(options, BIND_OPTIONS, "BindJob")
        await self.daemon.authorize()
        return await self.daemon.start_job("bind", device, **opts)

    @dbus_method(name="UnbindJob")
    @dbus_errors("UnbindJob")
    async def unbind_job(self, device: Str, options: Options) -> ObjectPath:
        opts = parse_options(options, UNBIND_OPTIONS, "UnbindJob")
        await self.daemon.authorize()
        return await self.daemon.start_job("unbind", device, **opts)

    @dbus_method(name="ResetJob")
    @dbus_errors("ResetJob")
    async def reset_job(self, device: Str, options: Options) -> ObjectPath:
        opts = parse_options(options, RESET_OPTIONS, "ResetJob")
        await self.daemon.authorize()
        return await self.daemon.start_job("reset", device, **opts)

    @dbus_method(name="Jobs")
    @dbus_errors("Jobs")
    async def jobs(self) -> ObjectPaths:
        return self.daemon.running_jobs()

    @dbus_method(name="Cancel")
    @dbus_errors("Cancel")
    async def cancel(self, job: ObjectPath) -> NoValue:
        await self.daemon.authorize()
        self.daemon.cancel_job(job)

    @dbus_signal(name="JobFinished")
    def job_finished(self, job: str, result: str, devices: list[str], error: str) -> Annotated[
            list[Any], DBusSignature(JOB_FINISHED_SIGNATURE)]:
        # Declares the signal; vfiod.daemon.jobs sends it with ObjectManagerBus.send_signal.
        return [job, result, devices, error]

    @dbus_method(name="Bind")
    @dbus_errors("Bind")
    async def bind(self, device: Str, options: Options) -> AddressList:
        opts = parse_options(options, BIND_OPTIONS, "Bind")
        await self.daemon.authorize()
        return await dry_run_or_operate(self.daemon, "bind", device, opts)

    @dbus_method(name="Unbind")
    @dbus_errors("Unbind")
    async def unbind(self, device: Str, options: Options) -> AddressList:
        opts = parse_options(options, UNBIND_OPTIONS, "Unbind")
        await self.daemon.authorize()
        return await dry_run_or_operate(self.daemon, "unbind", device, opts)

    @dbus_method(name="Reset")
    @dbus_errors("Reset")
    async def reset(self, device: Str, options: Options) -> Str:
        opts = parse_options(options, RESET_OPTIONS, "Reset")
        await self.daemon.authorize()
        return await dry_run_or_operate(self.daemon, "reset", device, opts)

    @dbus_method(name="Status")
    @dbus_errors("Status")
    async def status(self) -> StatusRows:
        return [list(s.status_row()) for s in self.daemon.statuses]

    @dbus_method(name="Reload")
    @dbus_errors("Reload")
    async def reload(self) -> NoValue:
        await self.daemon.authorize()
        await self.daemon.reload_config()

    @dbus_method(name="Plan")
    @dbus_errors("Plan")
    async def plan(self, operation: Str, device: Str, options: Options) -> PlanReply:
        accepted = PLAN_OPTIONS.get(operation)
        if accepted is None:
            raise InvalidArgument(f"Plan: unknown operation {_shown(operation)}; "
                                  "one of: bind, unbind, reset")
        opts = plan_options(parse_options(options, accepted, "Plan"))
        # The real call's checks (an exclusive open of each disk below, the group node)
        # are the manager's to ask for, as Status's table-only reading is everyone's.
        await self.daemon.authorize()
        return plan_reply(await self.daemon.plan(operation, device, **opts))

    @dbus_method(name="CheckDevices")
    @dbus_errors("CheckDevices")
    async def check_devices(self, devices: Annotated[list[str], DBusSignature("as")]
                            ) -> CheckRows:
        if len(devices) > MAX_CHECKED_DEVICES:
            raise InvalidArgument(f"CheckDevices: {len(devices)} devices; at most "
                                  f"{MAX_CHECKED_DEVICES} at once")
        await self.daemon.authorize()
        checks = await self.daemon.check_devices(list(devices))
        return [[c.device, c.severity, one_line(c.message)] for c in checks]

    @dbus_signal(name="DeviceChanged")
    def device_changed(self, address: str, state: str, driver: str) -> Annotated[
            list[str], DBusSignature(DEVICE_CHANGED_SIGNATURE)]:
        # Declares the signal; DeviceView sends it with ObjectManagerBus.send_signal,
        # which skips dbus-fast's search of every exported path for this object's.
        return [address, state, driver]

    @dbus_signal(name="Releasing")
    def releasing(self, device: str, holders: list[str], timeout_ms: int) -> Annotated[
            list[Any], DBusSignature(RELEASING_SIGNATURE)]:
        # Declared here; the daemon sends it with ObjectManagerBus.send_signal, as
        # DeviceChanged: a forced Bind is about to ask the desktop to let go of a GPU.
        return [device, holders, timeout_ms]

    def property_values(self) -> dict[str, Any]:
        """Version, IommuEnabled and Simulated (what the getters below return)."""
        return {"Version": vfiod.__version__, "IommuEnabled": self.daemon.iommu_enabled,
                "Simulated": self.daemon.simulated}

    @dbus_property(name="Version", access=PropertyAccess.READ)
    def version(self) -> Str:
        return self.property_values()["Version"]

    @dbus_property(name="IommuEnabled", access=PropertyAccess.READ)
    def iommu_enabled(self) -> Annotated[bool, DBusSignature("b")]:
        return self.property_values()["IommuEnabled"]

    @dbus_property(name="Simulated", access=PropertyAccess.READ)
    def simulated(self) -> Annotated[bool, DBusSignature("b")]:
        return self.property_values()["Simulated"]


# Device property name -> how it is read from a DeviceStatus.
_DEVICE_PROPERTIES: dict[str, Callable[[DeviceStatus], Any]] = {
    "Address": lambda s: s.address,
    "VendorId": lambda s: s.vendor_id,
    "DeviceId": lambda s: s.device_id,
    "Name": lambda s: s.name,
    "Class": lambda s: s.class_code,
    "Driver": lambda s: s.driver,
    "HostDriver": lambda s: s.host_driver,
    "State": lambda s: s.state.value,
    "IommuGroup": lambda s: s.iommu_group,
    "Holder": lambda s: s.holder,
    "HolderPid": lambda s: s.holder_pid,
    "ResetMethods": lambda s: list(s.reset_methods),
    "Healthy": lambda s: s.healthy,
    "BootVga": lambda s: s.boot_vga,
    "IsBridge": lambda s: s.is_bridge,
    "Error": lambda s: s.error,
    "UsedBy": lambda s: s.used_by,
    # The health record (DESIGN.md "Additions").
    "ResetCount": lambda s: s.reset_count,
    "LastResetMethod": lambda s: s.last_reset_method,
    "LastResetOutcome": lambda s: s.last_reset_outcome,
    "LastResetTime": lambda s: s.last_reset_time,
    "LastResetRungs": lambda s: s.last_reset_rungs,
    "ConsecutiveResetFailures": lambda s: s.consecutive_reset_failures,
    "GuestRuns": lambda s: [list(run) for run in s.guest_runs],
    "Quarantined": lambda s: s.quarantined,
    "QuarantineReason": lambda s: s.quarantine_reason,
    "Releasing": lambda s: s.releasing,
}


def device_properties(status: DeviceStatus, config_name: str = "") -> dict[str, Any]:
    """Every Device property's value for *status* (and its name in the config file)."""
    values = {name: get(status) for name, get in _DEVICE_PROPERTIES.items()}
    values["ConfigName"] = config_name
    return values


class DeviceInterface(_DescribedInterface):
    """org.vfiod1.Device: one PCI function's properties and operations on it."""

    arg_names = {"Bind": ("moved",), "Unbind": ("moved",), "Reset": ("method",)}
    const_properties = frozenset({"Address", "VendorId", "DeviceId", "Class", "IsBridge"})
    keeps_values = True  # update() replaces _values, never changes it in place

    def __init__(self, daemon: Operations, status: DeviceStatus, config_name: str = "") -> None:
        super().__init__(DEVICE_INTERFACE)
        self.daemon = daemon
        self.address = status.address
        self.path = device_path(status.address)
        self._status = status
        self._config_name = config_name
        self._values = device_properties(status, config_name)
        # No Variants kept: GetManagedObjects keeps each object's marshalled entry
        # instead (bus.py), and 18 Variants per function were a tenth of vfiod's
        # memory on 4,161 functions (issue 14's tracemalloc).

    def property_values(self) -> dict[str, Any]:
        """Every property's current value, by D-Bus name."""
        return self._values

    def update(self, status: DeviceStatus, config_name: str = "") -> dict[str, Variant]:
        """Take a new status; the properties that changed, as Variants, for
        PropertiesChanged (in the order dbus-fast would list them)."""
        if status == self._status and config_name == self._config_name:
            return {}  # the common case: every sync compares every function
        self._status = status
        self._config_name = config_name
        values = device_properties(status, config_name)
        old = self._values
        self._values = values
        return {name: Variant(signature, values[name])
                for name, signature in self.readable_properties()
                if old.get(name) != values[name]}

    @dbus_method(name="Bind")
    @dbus_errors("Bind")
    async def bind(self, options: Options) -> AddressList:
        opts = parse_options(options, BIND_OPTIONS, "Bind")
        await self.daemon.authorize()
        return await dry_run_or_operate(self.daemon, "bind", self.address, opts)

    @dbus_method(name="Unbind")
    @dbus_errors("Unbind")
    async def unbind(self, options: Options) -> AddressList:
        opts = parse_options(options, UNBIND_OPTIONS, "Unbind")
        await self.daemon.authorize()
        return await dry_run_or_operate(self.daemon, "unbind", self.address, opts)

    @dbus_method(name="Reset")
    @dbus_errors("Reset")
    async def reset(self, options: Options) -> Str:
        opts = parse_options(options, RESET_OPTIONS, "Reset")
        await self.daemon.authorize()
        return await dry_run_or_operate(self.daemon, "reset", self.address, opts)

    @dbus_property(name="Address", access=PropertyAccess.READ)
    def address_(self) -> Str:
        return self._values["Address"]

    @dbus_property(name="VendorId", access=PropertyAccess.READ)
    def vendor_id(self) -> Annotated[int, DBusSignature("q")]:
        return self._values["VendorId"]

    @dbus_property(name="DeviceId", access=PropertyAccess.READ)
    def device_id(self) -> Annotated[int, DBusSignature("q")]:
        return self._values["DeviceId"]

    @dbus_property(name="Name", access=PropertyAccess.READ)
    def name_(self) -> Str:
        return self._values["Name"]

    @dbus_property(name="Class", access=PropertyAccess.READ)
    def class_(self) -> Annotated[int, DBusSignature("u")]:
        return self._values["Class"]

    @dbus_property(name="Driver", access=PropertyAccess.READ)
    def driver(self) -> Str:
        return self._values["Driver"]

    @dbus_property(name="HostDriver", access=PropertyAccess.READ)
    def host_driver(self) -> Str:
        return self._values["HostDriver"]

    @dbus_property(name="State", access=PropertyAccess.READ)
    def state(self) -> Str:
        return self._values["State"]

    @dbus_property(name="IommuGroup", access=PropertyAccess.READ)
    def iommu_group(self) -> Annotated[int, DBusSignature("i")]:
        return self._values["IommuGroup"]

    @dbus_property(name="Holder", access=PropertyAccess.READ)
    def holder(self) -> Str:
        return self._values["Holder"]

    @dbus_property(name="HolderPid", access=PropertyAccess.READ)
    def holder_pid(self) -> Annotated[int, DBusSignature("u")]:
        return self._values["HolderPid"]

    @dbus_property(name="ResetMethods", access=PropertyAccess.READ)
    def reset_methods(self) -> Annotated[list[str], DBusSignature("as")]:
        return self._values["ResetMethods"]

    @dbus_property(name="Healthy", access=PropertyAccess.READ)
    def healthy(self) -> Annotated[bool, DBusSignature("b")]:
        return self._values["Healthy"]

    @dbus_property(name="BootVga", access=PropertyAccess.READ)
    def boot_vga(self) -> Annotated[bool, DBusSignature("b")]:
        return self._values["BootVga"]

    @dbus_property(name="IsBridge", access=PropertyAccess.READ)
    def is_bridge(self) -> Annotated[bool, DBusSignature("b")]:
        return self._values["IsBridge"]

    @dbus_property(name="Error", access=PropertyAccess.READ)
    def error(self) -> Str:
        return self._values["Error"]

    @dbus_property(name="UsedBy", access=PropertyAccess.READ)
    def used_by(self) -> Str:
        return self._values["UsedBy"]

    @dbus_property(name="Releasing", access=PropertyAccess.READ)
    def releasing(self) -> Annotated[bool, DBusSignature("b")]:
        return self._values["Releasing"]

    @dbus_property(name="ConfigName", access=PropertyAccess.READ)
    def config_name(self) -> Str:
        return self._values["ConfigName"]

    # -- the health record --------------------------------------------------------------
    @dbus_property(name="ResetCount", access=PropertyAccess.READ)
    def reset_count(self) -> Annotated[int, DBusSignature("u")]:
        return self._values["ResetCount"]

    @dbus_property(name="LastResetMethod", access=PropertyAccess.READ)
    def last_reset_method(self) -> Str:
        return self._values["LastResetMethod"]

    @dbus_property(name="LastResetOutcome", access=PropertyAccess.READ)
    def last_reset_outcome(self) -> Str:
        return self._values["LastResetOutcome"]

    @dbus_property(name="LastResetTime", access=PropertyAccess.READ)
    def last_reset_time(self) -> Annotated[int, DBusSignature("t")]:
        return self._values["LastResetTime"]

    @dbus_property(name="LastResetRungs", access=PropertyAccess.READ)
    def last_reset_rungs(self) -> Annotated[int, DBusSignature("u")]:
        return self._values["LastResetRungs"]

    @dbus_property(name="ConsecutiveResetFailures", access=PropertyAccess.READ)
    def consecutive_reset_failures(self) -> Annotated[int, DBusSignature("u")]:
        return self._values["ConsecutiveResetFailures"]

    @dbus_property(name="GuestRuns", access=PropertyAccess.READ)
    def guest_runs(self) -> Annotated[list[list[Any]], DBusSignature("a(tts)")]:
        return self._values["GuestRuns"]

    @dbus_property(name="Quarantined", access=PropertyAccess.READ)
    def quarantined(self) -> Annotated[bool, DBusSignature("b")]:
        return self._values["Quarantined"]

    @dbus_property(name="QuarantineReason", access=PropertyAccess.READ)
    def quarantine_reason(self) -> Str:
        return self._values["QuarantineReason"]


class JobInterface(_DescribedInterface):
    """org.vfiod1.Job: one Bind, Unbind or Reset as it runs (vfiod.daemon.jobs.Job).

    The values come from the job (``values()``); ``update`` returns what changed for
    PropertiesChanged. Read-only: a job is cancelled through Manager.Cancel.
    """

    const_properties = frozenset({"Operation", "StartedAt"})

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(JOB_INTERFACE)
        self._values = dict(values)
        self._variants = super().property_variants()

    def property_values(self) -> dict[str, Any]:
        """Every property's current value, by D-Bus name."""
        return self._values

    def property_variants(self) -> dict[str, Variant]:
        """Every property as a Variant (kept, not made anew)."""
        return self._variants

    def update(self, values: dict[str, Any]) -> dict[str, Variant]:
        """Take the job's values now; the properties that changed, as Variants."""
        old = self._values
        self._values = dict(values)
        changed = {name: Variant(signature, self._values[name])
                   for name, signature in self.readable_properties()
                   if old.get(name) != self._values[name]}
        if changed:
            self._variants = {**self._variants, **changed}
        return changed

    @dbus_property(name="Operation", access=PropertyAccess.READ)
    def operation(self) -> Str:
        return self._values["Operation"]

    @dbus_property(name="Devices", access=PropertyAccess.READ)
    def devices(self) -> AddressList:
        return self._values["Devices"]

    @dbus_property(name="Phase", access=PropertyAccess.READ)
    def phase(self) -> Str:
        return self._values["Phase"]

    @dbus_property(name="StartedAt", access=PropertyAccess.READ)
    def started_at(self) -> Annotated[int, DBusSignature("t")]:
        return self._values["StartedAt"]

    @dbus_property(name="WaitingFor", access=PropertyAccess.READ)
    def waiting_for(self) -> Str:
        return self._values["WaitingFor"]

    @dbus_property(name="Result", access=PropertyAccess.READ)
    def result(self) -> Str:
        return self._values["Result"]

    @dbus_property(name="Error", access=PropertyAccess.READ)
    def error(self) -> Str:
        return self._values["Error"]

    @dbus_property(name="Method", access=PropertyAccess.READ)
    def method(self) -> Str:
        return self._values["Method"]
