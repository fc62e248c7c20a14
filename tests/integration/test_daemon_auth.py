"""Who may manage devices: root always; another user only when polkit says so."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from vfiod.privatebus import PrivateBus

from .helpers import NOBODY, Vfiod, polkit_allow, sim_driver

GPU = "0000:06:00.0"

# A dbus-fast call made as the unprivileged user: busctl shows only the message of an
# error, this shows its name too.
_CALL_AS_NOBODY = textwrap.dedent("""
    import asyncio, json, sys
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

    async def main():
        bus = await MessageBus(bus_address=sys.argv[1]).connect()
        reply = await bus.call(Message(destination="org.vfiod1", path="/org/vfiod1",
                                       interface="org.vfiod1.Manager", member="Bind",
                                       signature="sa{sv}", body=[sys.argv[2], {}]))
        print(json.dumps([reply.error_name, reply.body[0] if reply.body else None]))

    asyncio.run(main())
""")


def bind_as_nobody(daemon: Vfiod) -> tuple[str | None, object]:
    """(error name or None, first reply value) of Bind GPU called as uid 65534."""
    result = subprocess.run([*NOBODY, sys.executable, "-c", _CALL_AS_NOBODY, daemon.address, GPU],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    name, value = json.loads(result.stdout)
    return name, value


def test_nobody_is_denied_bind_when_polkit_is_absent(vfiod: Vfiod) -> None:
    name, message = bind_as_nobody(vfiod)
    assert name == "org.freedesktop.DBus.Error.AccessDenied"
    assert "only root may manage devices when the system has no polkit" in str(message)
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_nobody_is_denied_bind_when_polkit_says_no(vfiod: Vfiod, polkit: str) -> None:
    name, message = bind_as_nobody(vfiod)
    assert name == "org.freedesktop.DBus.Error.AccessDenied"
    assert "uid 65534 is not authorized for org.vfiod1.manage (polkit said no)" in str(message)
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_busctl_as_nobody_reports_access_denied(vfiod: Vfiod, polkit: str) -> None:
    # busctl shows AccessDenied as errno EACCES's text, without the daemon's message.
    result = vfiod.call("Bind", "sa{sv}", GPU, "0", user="nobody")
    assert result.returncode != 0
    assert "Access denied" in result.stderr


def test_nobody_may_bind_when_polkit_says_yes(vfiod: Vfiod, polkit: str,
                                             private_bus: PrivateBus) -> None:
    polkit_allow(private_bus, "org.vfiod1.manage")
    result = vfiod.call("Bind", "sa{sv}", GPU, "0", user="nobody")
    assert result.returncode == 0, result.stderr
    assert sim_driver(vfiod.sim_root, GPU) == "vfio-pci"


def test_polkit_allowing_another_action_does_not_allow_manage(
        vfiod: Vfiod, polkit: str, private_bus: PrivateBus) -> None:
    polkit_allow(private_bus, "org.example.other")
    name, message = bind_as_nobody(vfiod)
    assert name == "org.freedesktop.DBus.Error.AccessDenied"
    assert "polkit said no" in str(message)


def test_status_and_properties_are_open_to_everyone(vfiod: Vfiod) -> None:
    status = vfiod.call("Status", user="nobody")
    assert status.returncode == 0, status.stderr
    assert GPU in status.stdout
    prop = vfiod.busctl("get-property", "org.vfiod1", "/org/vfiod1/device/pci_0000_06_00_0",
                        "org.vfiod1.Device", "Driver", user="nobody")
    assert prop.stdout.strip() == 's "nvidia"', prop.stderr


def test_reload_needs_authorization_too(vfiod: Vfiod) -> None:
    result = vfiod.call("Reload", user="nobody")
    assert result.returncode != 0
    assert "Access denied" in result.stderr


NO_REPLY_FLOOD = """
import asyncio, sys
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.constants import MessageFlag
from dbus_fast.signature import Variant

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    for member in ("Bind", "Unbind", "Reset") * 10:
        await bus.send(Message(destination="org.vfiod1", path="/org/vfiod1",
                               interface="org.vfiod1.Manager", member=member,
                               signature="sa{sv}", body=["0000:06:00.0", {}],
                               flags=MessageFlag.NO_REPLY_EXPECTED))
    await bus.send(Message(destination="org.vfiod1", path="/org/vfiod1",
                           interface="org.vfiod1.Manager", member="Reload",
                           flags=MessageFlag.NO_REPLY_EXPECTED))
    await bus.send(Message(destination="org.vfiod1", path="/org/vfiod1",
                           interface="org.vfiod1.Manager", member="Bind", signature="sa{sv}",
                           body=["0000:06:00.0", {"nope": Variant("b", True)}],
                           flags=MessageFlag.NO_REPLY_EXPECTED))
    # The same connection's last call, answered: the ones above were served before it.
    reply = await bus.call(Message(destination="org.vfiod1", path="/org/vfiod1",
                                   interface="org.vfiod1.Manager", member="Bind",
                                   signature="sa{sv}", body=["0000:06:00.0", {}]))
    print(reply.error_name)

asyncio.run(main())
"""


def test_denied_calls_that_want_no_reply_leave_no_traceback_in_the_log(vfiod: Vfiod) -> None:
    result = subprocess.run([*NOBODY, sys.executable, "-c", NO_REPLY_FLOOD, vfiod.address],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == "org.freedesktop.DBus.Error.AccessDenied", result.stderr
    log = vfiod.log()
    assert "unexpected exception in future" not in log
    assert "Traceback" not in log
    assert vfiod.status()[GPU]["driver"] == "nvidia"


NO_REPLY_PROPERTIES = """
import asyncio, sys
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.constants import MessageFlag
from dbus_fast.signature import Variant

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    path = "/org/vfiod1/device/pci_0000_06_00_0"
    for interface, member, signature, body in [
            ("org.freedesktop.DBus.Properties", "GetAll", "sv", ["x", Variant("b", True)]),
            ("org.freedesktop.DBus.Properties", "Get", "ss", ["`id`", "State"]),
            ("org.freedesktop.DBus.Properties", "Set", "ssv",
             ["org.vfiod1.Device", "State", Variant("s", "host")]),
            ("org.freedesktop.DBus.Introspectable", "Introspect", "s", ["x"]),
            ("org.freedesktop.DBus.Peer", "Ping", "i", [1])]:
        await bus.send(Message(destination="org.vfiod1", path=path, interface=interface,
                               member=member, signature=signature, body=body,
                               flags=MessageFlag.NO_REPLY_EXPECTED))
    reply = await bus.call(Message(destination="org.vfiod1", path=path,
                                   interface="org.freedesktop.DBus.Properties", member="Get",
                                   signature="ss", body=["org.vfiod1.Device", "State"]))
    print(reply.body[0].value)

asyncio.run(main())
"""


def test_wrong_standard_interface_calls_that_want_no_reply_leave_no_traceback_in_the_log(
        vfiod: Vfiod) -> None:
    result = subprocess.run([*NOBODY, sys.executable, "-c", NO_REPLY_PROPERTIES, vfiod.address],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == "host", result.stderr
    log = vfiod.log()
    assert "Unexpected error processing message" not in log
    assert "Traceback" not in log
