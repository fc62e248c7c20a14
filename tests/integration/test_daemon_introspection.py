"""dbus/org.vfiod1.xml is what the running daemon introspects."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from .helpers import MANAGER, Vfiod, device_path

XML = Path(__file__).resolve().parents[2] / "dbus" / "org.vfiod1.xml"

Shape = dict[str, set[tuple[str, ...]]]


def shape(node: ET.Element, names: set[str]) -> Shape:
    """Members, arguments (name, type, direction of method args), annotations; by interface."""
    out: Shape = {}
    for iface in node.findall("interface"):
        name = iface.get("name", "")
        if name not in names:
            continue
        items: set[tuple[str, ...]] = set()
        for member in iface:
            kind, mname = member.tag, member.get("name", "")
            if kind == "property":
                items.add((kind, mname, member.get("type", ""), member.get("access", "")))
            else:
                items.add((kind, mname))
            for i, arg in enumerate(member.findall("arg")):
                direction = arg.get("direction", "in") if kind == "method" else ""
                items.add(("arg", mname, kind, str(i), arg.get("name", ""),
                           arg.get("type", ""), direction))
            for note in member.findall("annotation"):
                items.add(("annotation", mname, note.get("name", ""), note.get("value", "")))
        out[name] = items
    return out


def introspect(daemon: Vfiod, path: str) -> ET.Element:
    result = subprocess.run(
        ["busctl", f"--address={daemon.address}", "call", "org.vfiod1", path,
         "org.freedesktop.DBus.Introspectable", "Introspect", "--json=short"],
        capture_output=True, text=True, check=True)
    return ET.fromstring(json.loads(result.stdout)["data"][0])


def test_introspection_xml_file_matches_the_running_daemon(vfiod: Vfiod) -> None:
    documented = shape(ET.parse(XML).getroot(),
                       {"org.vfiod1.Manager", "org.vfiod1.Device", "org.vfiod1.Job"})
    live = shape(introspect(vfiod, MANAGER), {"org.vfiod1.Manager"})
    live |= shape(introspect(vfiod, device_path("0000:06:00.0")), {"org.vfiod1.Device"})
    # A job's object stays a while after it ends: long enough to introspect it.
    started = vfiod.call("BindJob", "sa{sv}", "0000:06:00.0", "0")
    assert started.returncode == 0, started.stderr
    live |= shape(introspect(vfiod, json.loads(started.stdout)["data"][0]), {"org.vfiod1.Job"})
    assert documented == live


def test_manager_object_offers_the_object_manager_interface(vfiod: Vfiod) -> None:
    names = {i.get("name") for i in introspect(vfiod, MANAGER).findall("interface")}
    assert "org.freedesktop.DBus.ObjectManager" in names
