"""Config files that are not config files, and hostile domain XML for the libvirt hook.

Config: FIFOs, devices, directories, links to them, deep nesting, huge files, binary
and invalid UTF-8, NUL bytes, sockets. Each must be refused as a config error naming the
file (or read, when it is a valid config), within seconds, never another exception.

Domain XML through the installed hook (a fake busctl records its calls): external
entities (XXE), entity expansion (billion laughs, quadratic), huge and deep documents,
duplicated hostdevs, addresses that are no PCI address. Each hostile domain must be
refused (exit 1, one line per problem) with no Bind, and no traceback; a huge domain of
duplicates binds each device once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vfiod.config import Config, ConfigError, load_config
from vfiod.libvirt_hook import install_hook

from test_libvirt_hook import FAKE_BUSCTL, run_hook, verbs

from .report import Sizes, Summary

SCENARIO = "hostile files"
#: How long reading one file, or the hook on one domain, may take.
BOUND = 20.0
HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
           "<address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev>")


def _configs(tmp: Path) -> dict[str, Path]:
    """Every hostile config file, made in *tmp*."""
    made: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        made[name] = tmp / name
        made[name].write_bytes(data)

    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    made["a FIFO with no writer"] = fifo
    made["/dev/zero"] = Path("/dev/zero")
    made["/dev/null"] = Path("/dev/null")
    made["/dev/urandom"] = Path("/dev/urandom")
    made["a directory"] = tmp
    (tmp / "zero-link").symlink_to("/dev/zero")
    made["a link to /dev/zero"] = tmp / "zero-link"
    (tmp / "loop").symlink_to(tmp / "loop")
    made["a link to itself"] = tmp / "loop"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "socket"))
    sock.close()
    made["a socket"] = tmp / "socket"
    write("nested-arrays", b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n")
    write("nested-tables", b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n")
    write("huge", b"# " + b"x" * (2 << 20) + b"\n")
    write("long-string", b'[[device]]\nmatch = "' + b"0" * 900_000 + b'"\n')
    write("binary", bytes(range(256)) * 64)
    write("invalid-utf8", b'[[device]]\nmatch = "\xff\xfe"\n')
    write("nul", b'[[device]]\nmatch = "06:00.0\x00"\n')
    write("many-devices", b'[[device]]\nmatch = "06:00.0"\n' * 20_000)
    write("wrong-types", b'device = 7\n[[device]]\nmatch = []\nboot = 1\n')
    write("escapes", b'[[device]]\nmatch = "06:00.0"\nname = "\\u001b]0;pwned\\u0007"\n')
    return made


def _bounded(call: Callable[[], object]) -> tuple[object, float]:
    """(result or exception, seconds); a TimeoutError when it outlives BOUND."""
    box: list[object] = [TimeoutError(f"still running after {BOUND:g} s")]

    def run() -> None:
        try:
            box[0] = call()
        except BaseException as exc:  # noqa: BLE001 (judged by the caller)
            box[0] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    return box[0], time.monotonic() - started


def test_config_files_that_are_not_config_files_are_refused_in_bounded_time(
        tmp_path: Path, summary: Summary) -> None:
    refused = accepted = 0
    wrong: list[str] = []
    slowest = 0.0
    for name, path in _configs(tmp_path).items():
        outcome, seconds = _bounded(lambda path=path: load_config(path))
        slowest = max(slowest, seconds)
        if isinstance(outcome, ConfigError):
            refused += 1
            if str(path) not in str(outcome) or "\n" in str(outcome).strip():
                wrong.append(f"{name}: the error does not name the file in one line: "
                             f"{str(outcome)[:200]}")
        elif isinstance(outcome, Config):
            accepted += 1
        else:
            wrong.append(f"{name}: {outcome!r}"[:300])
    summary.add(SCENARIO, "config files tried", refused + accepted + len(wrong))
    summary.add(SCENARIO, "config files refused as a config error", refused)
    summary.add(SCENARIO, "config: slowest answer (s)", slowest)
    summary.add(SCENARIO, "config: other exceptions, hangs, errors without the file",
                len(wrong), must_be_zero=True)
    assert wrong == []
    assert refused >= 15


def _domain(devices: str, doctype: str = "") -> str:
    return f"{doctype}<domain type='kvm'><name>w</name><devices>{devices}</devices></domain>"


def _hostile_domains(copies: int) -> dict[str, str]:
    laughs = "<!DOCTYPE d [<!ENTITY a0 'ha'>" + "".join(
        f"<!ENTITY a{i} '{('&a' + str(i - 1) + ';') * 10}'>" for i in range(1, 10)) + "]>"
    quadratic = "<!DOCTYPE d [<!ENTITY q '" + "q" * 50_000 + "'>]>"
    return {
        "XXE: a file as an external entity": _domain(
            HOSTDEV.replace("bus='0x06'", "bus='&x;'"),
            "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/hostname'>]>"),
        "XXE: a parameter entity from the network": _domain(
            HOSTDEV, "<!DOCTYPE d [<!ENTITY % p SYSTEM 'http://127.0.0.1:9/x.dtd'> %p;]>"),
        "billion laughs": _domain(HOSTDEV.replace("bus='0x06'", "bus='&a9;'"), laughs),
        "quadratic blow-up": _domain(HOSTDEV.replace(
            "bus='0x06'", "bus='" + "&q;" * 5_000 + "'"), quadratic),
        "an address with no attributes": _domain(
            "<hostdev mode='subsystem' type='pci'><source><address/></source></hostdev>"),
        "a hostdev with no address": _domain(
            "<hostdev mode='subsystem' type='pci'><source/></hostdev>"),
        "a bus out of range": _domain(HOSTDEV.replace("bus='0x06'", "bus='0x1ff'")),
        "a slot that is no number": _domain(HOSTDEV.replace("slot='0x00'", "slot='zz'")),
        "a function out of range": _domain(HOSTDEV.replace("function='0x0'", "function='8'")),
        "a negative domain": _domain(HOSTDEV.replace("domain='0x0000'", "domain='-1'")),
        "a usb address": _domain(HOSTDEV.replace("<address ", "<address type='usb' ")),
        "an SR-IOV interface with a bad address": _domain(
            "<interface type='hostdev'><source><address type='pci' bus='x'/></source>"
            "</interface>"),
        "terminal escapes in an address": _domain(
            HOSTDEV.replace("bus='0x06'", "bus='\x1b]0;pwned\x07'")),
        "not XML": "\x00\x01 not xml at all <<<",
        "deep nesting around a bad hostdev": "<domain>" + "<a>" * 100_000 + _domain(
            "<hostdev mode='subsystem' type='pci'><source><address/></source></hostdev>")
        + "</a>" * 100_000 + "</domain>",
        "huge, with one bad hostdev at the end": _domain(
            HOSTDEV * copies + "<hostdev mode='subsystem' type='pci'><source><address/>"
            "</source></hostdev>"),
    }


def _hook(tmp: Path) -> Path:
    import sys

    fake = tmp / "busctl"
    fake.write_text(FAKE_BUSCTL.format(python=sys.executable))
    fake.chmod(0o755)
    return install_hook(tmp / "root", busctl=str(fake), timeout=5)


def test_hostile_domain_xml_is_refused_without_a_bind(tmp_path: Path, sizes: Sizes,
                                                      summary: Summary) -> None:
    hook = _hook(tmp_path)
    refused = 0
    wrong: list[str] = []
    slowest = 0.0
    for n, (name, xml) in enumerate(_hostile_domains(sizes.xml_copies).items()):
        work = tmp_path / f"run-{n}"
        work.mkdir()
        started = time.monotonic()
        proc, calls = run_hook(hook, work, "w", "prepare", "begin", "-", xml=xml)
        slowest = max(slowest, time.monotonic() - started)
        binds = [v for v in verbs(calls) if v[0] == "Bind"]
        if proc.returncode == 1 and not binds and "Traceback" not in proc.stderr \
                and "\x1b" not in proc.stderr:
            refused += 1
        else:
            wrong.append(f"{name}: exit {proc.returncode}, binds {binds[:3]}, "
                         f"{proc.stderr[-300:]!r}")
    summary.add(SCENARIO, "hostile domain XML documents tried", refused + len(wrong))
    summary.add(SCENARIO, "domain XML: refused with no Bind", refused)
    summary.add(SCENARIO, "domain XML: slowest answer (s)", slowest)
    summary.add(SCENARIO, "domain XML: accepted, bound, traceback or escape",
                len(wrong), must_be_zero=True)
    assert wrong == [], wrong


def test_a_huge_domain_of_duplicated_hostdevs_binds_each_device_once(
        tmp_path: Path, sizes: Sizes, summary: Summary) -> None:
    hook = _hook(tmp_path)
    started = time.monotonic()
    proc, calls = run_hook(hook, tmp_path, "w", "prepare", "begin", "-",
                           xml=_domain(HOSTDEV * sizes.xml_copies))
    seconds = time.monotonic() - started
    binds = [v for v in verbs(calls) if v[0] == "Bind"]
    summary.add(SCENARIO, f"domain XML: {sizes.xml_copies:,} duplicated hostdevs, seconds",
                seconds)
    summary.add(SCENARIO, "domain XML: Bind calls beyond one per device", len(binds) - 1,
                must_be_zero=True)
    assert proc.returncode == 0, proc.stderr
    assert binds == [("Bind", "0000:06:00.0")]
    assert seconds < BOUND
