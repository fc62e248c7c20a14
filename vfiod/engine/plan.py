"""What an operation would do, decided before it does anything: the plan.

Bind, Unbind and Reset each build a ``Plan`` first: every member of the IOMMU group
with the driver it is on and the one it would go to (or why it stays), the guards that
refuse or need force, the reset rungs that would be tried, the modules that would
load, and the error the call would answer when it is refused. The real run
(vfiod.engine.transactions, vfiod.engine.reset) executes that plan; a dry run stops
after building it. One builder for both, so the two cannot disagree.

Building writes nothing to the host. It reads the group afresh, scans /proc for
holders, asks each disk below a member whether it is claimed (an exclusive open, as
the real guard does), and opens the group node as the fence (the kernel's own answer
to "does a guest hold it"): a real run keeps that fence to the end, ``release()``
closes it at once after a dry run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from vfiod.engine import progress
from vfiod.engine.fence import Fence, raise_fence
from vfiod.engine.inventory import Holders, Inventory
from vfiod.errors import GroupNotViable, InUse, InvalidArgument, ResetFailed, VfiodError
from vfiod.guards import Usage, find_usages, usage_refusal
from vfiod.host import paths
from vfiod.journal import Journal
from vfiod.model import VFIO_DRIVER, PciDevice

Operation = Literal["bind", "unbind", "reset"]

#: The rung name of VFIO's hot reset of the whole bus in a plan; the reset it performs
#: answers "bus", as the kernel's own bus reset does.
HOT_RESET = "hot_reset"

IOMMU_OFF_HELP = (
    "the IOMMU is off: enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup and "
    "boot with intel_iommu=on (Intel; AMD enables it by default), then check with "
    "`vfioctl doctor`")

# Why a member stays where it is (MemberStep.note); "" means it moves.
BRIDGE_STAYS = "a bridge: stays on its driver"
ALREADY_VFIO = "already on vfio-pci"
ALREADY_HOST = "not on vfio-pci: stays"
NOT_ASKED = "not asked for (group=false)"
RESET_IN_PLACE = "reset in place"


@dataclass(frozen=True)
class MemberStep:
    """One member of the group: the driver it is on and the one it would be on."""

    address: str
    from_driver: str  # "" for none
    to_driver: str  # "" for none, or the kernel's choice when it cannot be known
    note: str = ""  # why it stays; "" when it moves

    @property
    def moves(self) -> bool:
        """True when the operation moves this member to another driver."""
        return not self.note


@dataclass(frozen=True)
class GuardFinding:
    """One way the host uses a member: ``hard`` always refuses, ``soft`` unless forced."""

    address: str
    kind: Literal["hard", "soft"]
    reason: str

    @classmethod
    def of(cls, usage: Usage) -> GuardFinding:
        """The finding for one of vfiod.guards' usages."""
        return cls(usage.address, "hard" if usage.hard else "soft", usage.reason)


@dataclass
class Plan:
    """What one operation would do (or why it is refused), and what executing it needs.

    ``targets``, ``holders`` and ``fence`` are for the executor, not for clients: the
    members to move as read, the /proc scan taken, and the group fence held.
    """

    operation: Operation
    address: str
    #: The whole group (True) or the named function alone (Bind/Unbind's ``group``).
    group: bool = True
    members: list[MemberStep] = field(default_factory=list)
    guards: list[GuardFinding] = field(default_factory=list)
    rungs: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    refusal: VfiodError | None = None
    targets: list[PciDevice] = field(default_factory=list, repr=False, compare=False)
    holders: Holders | None = field(default=None, repr=False, compare=False)
    fence: Fence | None = field(default=None, repr=False, compare=False)
    device: PciDevice | None = field(default=None, repr=False, compare=False)

    @property
    def moves(self) -> list[str]:
        """The addresses that would move, in the order the run moves them."""
        return [m.address for m in self.members if m.moves]

    def answer(self) -> list[str] | str:
        """What the real call would answer: its error (raised), the addresses that
        would move (bind, unbind), or the reset method tried first (reset)."""
        if self.refusal is not None:
            raise self.refusal
        if self.operation != "reset":
            return self.moves
        return "bus" if self.rungs[0] == HOT_RESET else self.rungs[0]

    def release(self) -> None:
        """Let go of what building took (the group fence): after a dry run, or when
        the plan is not executed."""
        if self.fence is not None:
            self.fence.close()
            self.fence = None

    def take_fence(self) -> Fence | None:
        """Hand the fence over to the executor (who closes it)."""
        fence, self.fence = self.fence, None
        return fence


def refuse_bridge(dev: PciDevice) -> None:
    """Bind and Unbind name endpoints: a bridge stays on its driver, and its group's
    endpoints move only when one of them is named."""
    if dev.is_bridge:
        raise InvalidArgument(f"{dev.address}: is a PCI bridge; bridges stay on their "
                              "driver and are never bound or unbound: name a device of "
                              "its IOMMU group instead")


def check_not_held(inventory: Inventory, dev: PciDevice, action: str,
                   holders: Holders) -> None:
    """Refuse while a process holds the group node or a member's VFIO device node.

    Writing ``unbind`` then would block in the kernel until the guest exits.
    *holders* is a scan that covered the group's nodes (Inventory.nodes_of).
    """
    if dev.iommu_group is None:
        return
    nodes = [paths.group_node(dev.iommu_group)]
    for member in inventory.scanner.group_members(dev.iommu_group):
        nodes += [paths.vfio_device_node(n) for n in
                  inventory.host.listdir(paths.device_file(member, "vfio-dev"))]
    if any(holders.get(node) for node in nodes):
        who = ", ".join(f"{p} through {node}" for node in nodes for p in holders.get(node, []))
        raise InUse(f"{dev.address}: refusing to {action}: IOMMU group {dev.iommu_group} "
                    f"is in use by {who}")


def _stays(dev: PciDevice, note: str) -> MemberStep:
    return MemberStep(dev.address, dev.driver or "", dev.driver or "", note)


def plan_bind(inventory: Inventory, address: str, *, group: bool = True,
              force: bool = False) -> Plan:
    """The plan of a Bind of *address* (resolved already): every endpoint of its group
    not on vfio-pci moves there (only itself with ``group`` False); refused without a
    group, for a bridge, for a partial group, and by the guards."""
    dev, members = inventory.fresh(address)
    plan = Plan("bind", address, group, device=dev)
    endpoints = [m for m in members if m.is_endpoint]
    if group:
        targets = [m for m in endpoints if not m.on_vfio]
    else:
        targets = [] if dev.on_vfio else [dev]
    for m in members:
        if m.is_bridge:
            plan.members.append(_stays(m, BRIDGE_STAYS))
        elif m.on_vfio:
            plan.members.append(_stays(m, ALREADY_VFIO))
        elif m in targets:
            plan.members.append(MemberStep(m.address, m.driver or "", VFIO_DRIVER))
        else:
            plan.members.append(_stays(m, NOT_ASKED))
    try:
        if dev.iommu_group is None:
            raise GroupNotViable(f"{address}: has no IOMMU group: {IOMMU_OFF_HELP}")
        refuse_bridge(dev)
        if not group:
            blocking = [m for m in endpoints if m.address != address and m.driver
                        and not m.on_vfio and m.driver != "pci-stub"]
            if targets and blocking:
                names = ", ".join(f"{m.address} ({m.driver})" for m in blocking)
                raise GroupNotViable(
                    f"{address}: IOMMU group {dev.iommu_group} would not be viable: {names} "
                    "would stay on host drivers; bind the whole group instead")
    except VfiodError as exc:
        return _refused(plan, exc)
    plan.targets = targets
    if not targets:
        return plan
    progress.step("checking that the host does not use "
                  + ", ".join(m.address for m in targets))
    # The one /proc scan of a bind: the guards' nodes and the group's node.
    plan.holders = inventory.scan_holders(inventory.nodes_of(members))
    usages = find_usages(inventory.host, targets, plan.holders)
    plan.guards = [GuardFinding.of(u) for u in usages]
    plan.refusal = usage_refusal(usages, force=force, action="bind it to vfio-pci")
    if not inventory.host.exists(paths.driver_dir(VFIO_DRIVER)):
        plan.modules.append(VFIO_DRIVER)
    return plan


def plan_unbind(inventory: Inventory, journal: Journal, address: str, *,
                group: bool = True) -> Plan:
    """The plan of an Unbind of *address* (resolved already): every endpoint of its
    group on vfio-pci (only itself with ``group`` False) goes to its recorded host
    driver, else the kernel's choice; refused for a bridge and while a guest holds
    the group (the fence, held by the plan from here on)."""
    dev, members = inventory.fresh(address)
    plan = Plan("unbind", address, group, device=dev)
    if group:
        targets = [m for m in members if m.is_endpoint and m.on_vfio]
    else:
        targets = [dev] if dev.on_vfio else []
    for m in members:
        if m.is_bridge:
            plan.members.append(_stays(m, BRIDGE_STAYS))
        elif m in targets:
            to = inventory.host_driver(m)
            plan.members.append(MemberStep(m.address, m.driver or "", to))
            module = _module_to_load(inventory, journal, m, to)
            if module and module not in plan.modules:
                plan.modules.append(module)
        elif not m.on_vfio:
            plan.members.append(_stays(m, ALREADY_HOST))
        else:
            plan.members.append(_stays(m, NOT_ASKED))
    try:
        refuse_bridge(dev)  # else it would stand for its whole group, as Bind refuses to
    except VfiodError as exc:
        return _refused(plan, exc)
    plan.targets = targets
    if not targets:
        return plan
    # The kernel's answer, not /proc's: a guest holding only a device fd (group fd
    # closed, or received over a socket) or the cdev shows in no /dev path.
    progress.step(f"making sure no guest holds IOMMU group {dev.iommu_group}")
    try:
        plan.fence = raise_fence(inventory, dev, "unbind it")
        if plan.fence is None:  # no group node: /proc is all there is to ask
            holders = inventory.scan_holders(inventory.nodes_of(members))
            check_not_held(inventory, dev, "unbind it", holders)
    except InUse as exc:
        return _refused(plan, exc)
    return plan


def _module_to_load(inventory: Inventory, journal: Journal, dev: PciDevice,
                    to: str) -> str:
    """The module an unbind would load for *dev* (by its modalias): the one of the
    driver it goes to, when that driver is not loaded; "" when none would load."""
    want = journal.host_driver(dev.address) or to
    if want and dev.modalias and not inventory.host.exists(paths.driver_dir(want)):
        return want
    return ""


def plan_reset(inventory: Inventory, address: str, *, force: bool,
               rungs_of: Callable[[str], list[str]]) -> Plan:
    """The plan of a Reset of *address* (resolved already): the rungs *rungs_of* says
    would be tried, in order; refused while a guest holds its group (the fence, held
    by the plan from here on) and, on a host driver, by the guards."""
    dev, members = inventory.fresh(address)
    plan = Plan("reset", address, device=dev)
    plan.members.append(_stays(dev, RESET_IN_PLACE))
    progress.step(f"making sure no guest holds {address}")
    try:
        plan.fence = raise_fence(inventory, dev, "reset it")
        if plan.fence is None:  # no group node: /proc is all there is to ask
            plan.holders = inventory.scan_holders(inventory.nodes_of(members))
            check_not_held(inventory, dev, "reset it", plan.holders)
        elif dev.driver and not dev.on_vfio:  # the fence answered; the guards need /proc
            plan.holders = inventory.scan_holders(inventory.nodes_of([dev]))
    except InUse as exc:
        return _refused(plan, exc)
    if dev.driver and not dev.on_vfio:
        usages = find_usages(inventory.host, [dev], plan.holders)
        plan.guards = [GuardFinding.of(u) for u in usages]
        plan.refusal = usage_refusal(usages, force=force, action="reset it")
    plan.rungs = rungs_of(address)
    if plan.refusal is None and not plan.rungs:
        # The executor still runs the ladder, which says in its own words why each way
        # is closed (and records it); a dry run answers with this.
        plan.refusal = ResetFailed(f"{address}: no reset method would be tried: the kernel "
                                   "offers none of its own for it and its bus does not "
                                   "qualify for VFIO's hot reset")
    return plan


def _refused(plan: Plan, exc: VfiodError) -> Plan:
    """The plan as refused by *exc*, holding nothing (its members still say what the
    operation would have moved)."""
    plan.release()
    plan.refusal = exc
    return plan
