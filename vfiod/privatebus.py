"""A private system-like D-Bus and a vfiod on it, for tests, the demo and applet work.

``PrivateBus`` runs a real ``dbus-daemon`` with a configuration modelled on the system
bus (``<type>system</type>``, a default policy that denies owning names and method
calls) plus the project's own bus policy through ``<include>``. The policy is package
data (vfiod/data/org.vfiod1.conf, the one copy: `make install` installs it to system.d
from there), so an installed vfiod has it too. It is enforced for real: only root may
own ``org.vfiod1``.

``start_vfiod`` launches ``python -m vfiod.daemon.main --simulate ...`` on that bus the
way systemd would start the unit: with a NOTIFY_SOCKET of its own, returning once the
daemon says READY=1 (which it does last, once it is fully up and owns its name).
``stop_vfiod`` ends exactly that process.

The daemon runs ``--simulate`` unless a caller passes ``real_host=True``, which only
the real-kernel tier does, inside its QEMU guest: that daemon manages the machine it
runs on.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

from vfiod.contract import BUS_NAME


#: The project's bus policy, shipped in the package (`make install` installs the
#: system's copy from this file; dbus/org.vfiod1.conf in a checkout links to it).
PROJECT_POLICY: Traversable = resources.files("vfiod").joinpath("data", "org.vfiod1.conf")

# The stand-in for polkit's own bus policy (a real system ships it in
# /usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf): lets a mock polkitd run
# as root own its name, and everyone call it.
_POLKIT_POLICY = """
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
"""

# The default policy of Debian's /usr/share/dbus-1/system.conf, trimmed to what a
# private bus needs. Activation ({servicedirs}) is direct: no setuid launch helper, so
# an activated service runs as the bus's user with the bus's environment.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
{servicedirs}
{polkit}
  <include>{policy}</include>
</busconfig>
"""


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (preexec_fn): get *sig* when the process that started it dies.

    A test run that is killed (a timeout, Ctrl-C twice) then leaves no dbus-daemon,
    vfiod or QEMU behind: a --nofork child would otherwise outlive it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass


class PrivateBusError(RuntimeError):
    """The private bus or the daemon on it did not come up."""


class PrivateBus:
    """A dbus-daemon with system-bus policy on a socket in a temp dir; a context manager.

    ``policy`` is the bus policy file to include (the project's by default; a copy
    goes into the bus's temp dir, so a policy inside a zipped package works too);
    ``polkit`` adds the bus policy polkit ships, so that a mock polkitd may run.
    ``servicedirs`` are folders of D-Bus ``.service`` files the bus activates on demand
    (none by default: then nothing is activatable, as on a system without the service).
    The socket's directory is world-searchable so that an unprivileged caller (a test
    run under ``setpriv``) can connect and be judged by the policy, not by file modes.
    """

    def __init__(self, policy: str | os.PathLike[str] | None = None, *,
                 polkit: bool = True, servicedirs: Sequence[str | os.PathLike[str]] = (),
                 start_timeout: float = 10.0) -> None:
        self.policy: Traversable = Path(policy) if policy is not None else PROJECT_POLICY
        self.polkit = polkit
        self.servicedirs = [Path(d) for d in servicedirs]
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.address = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The dbus-daemon's pid (0 when not running)."""
        return self.process.pid if self.process is not None else 0

    @property
    def socket_path(self) -> Path:
        """The bus socket."""
        if self.dir is None:
            raise PrivateBusError("the private bus is not running")
        return self.dir / "system_bus_socket"

    def env(self) -> dict[str, str]:
        """os.environ plus DBUS_SYSTEM_BUS_ADDRESS naming this bus, for subprocesses."""
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        return env

    def start(self) -> PrivateBus:
        """Write the config and start dbus-daemon; returns self once it listens."""
        if not self.policy.is_file():
            raise PrivateBusError(f"bus policy {self.policy} is missing")
        self.dir = Path(tempfile.mkdtemp(prefix="vfiod-bus-"))
        try:
            os.chmod(self.dir, 0o755)
            policy = self.dir / "policy.conf"
            policy.write_text(self.policy.read_text(encoding="utf-8"), encoding="utf-8")
            config = self.dir / "bus.conf"
            config.write_text(_CONFIG.format(
                socket=escape(str(self.socket_path)),
                polkit=_POLKIT_POLICY if self.polkit else "",
                servicedirs="\n".join(f"  <servicedir>{escape(str(d))}</servicedir>"
                                      for d in self.servicedirs),
                policy=escape(str(policy)),
            ))
            # --nofork: the daemon is our own child, so its pid is ours to stop. Its
            # complaints (it cannot raise its fd limit in a container) go to a log file.
            with open(self.dir / "dbus-daemon.log", "wb") as errors:
                self.process = subprocess.Popen(
                    ["dbus-daemon", f"--config-file={config}", "--nofork", "--nosyslog",
                     "--print-address=1"],
                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=errors,
                    preexec_fn=die_with_parent)
            assert self.process.stdout is not None
            line = _read_line(self.process.stdout, self.start_timeout)
            if not line:
                code = self.process.poll()
                raise PrivateBusError(f"dbus-daemon did not start (exit status {code})")
            self.address = line
            return self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the dbus-daemon (by its pid) and delete the temp dir."""
        if self.process is not None:
            _terminate(self.process, 5.0)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.address = ""

    def __enter__(self) -> PrivateBus:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Notification(NamedTuple):
    """One sd_notify datagram: when it arrived (time.monotonic()) and its text."""

    at: float
    text: str

    @property
    def lines(self) -> list[str]:
        """Its assignments, ``READY=1``, ``STATUS=...``, one per item."""
        return self.text.split("\n")


# struct ucred: pid, uid, gid
_UCRED = struct.Struct("iII")


class Notifications:
    """The NOTIFY_SOCKET of one vfiod process: what systemd would hear from it.

    A datagram socket in a temp dir of its own. Once ``follow(pid)`` is called a thread
    receives every notification that process sends (others' are ignored, as with
    systemd's NotifyAccess=main) until the process exits; then it closes the socket and
    removes the dir. Reading on until the end matters: a sender blocks once a datagram
    socket's queue is full, and vfiod sends from its event loop.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vfiod-notify-"))
        #: The socket's path, for $NOTIFY_SOCKET.
        self.path = str(self.dir / "notify")
        self.received: list[Notification] = []
        #: True once the process exited and everything it sent was read.
        self.ended = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.bind(self.path)
        except BaseException:
            self.close()
            raise

    def follow(self, pid: int) -> None:
        """Receive what *pid* (a child not yet waited for) sends, until it exits."""
        pidfd = os.pidfd_open(pid)
        self._thread = threading.Thread(target=self._receive_until_exit, args=(pid, pidfd),
                                        name=f"notify {pid}", daemon=True)
        self._thread.start()

    def wait(self, predicate: Callable[[list[Notification]], Any], timeout: float) -> Any:
        """Until *predicate* over what was received is true; its last value.

        Also returns (with that falsy value) once the process has ended or after
        *timeout* seconds.
        """
        with self._changed:
            self._changed.wait_for(lambda: self.ended or predicate(self.received), timeout)
            return predicate(self.received)

    def ready(self, timeout: float) -> bool:
        """True once READY=1 came within *timeout*; False if the process ended first."""
        return bool(self.wait(lambda got: any("READY=1" in n.lines for n in got), timeout))

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the reading thread (it ends once the process has exited); without
        one (``follow`` was never called, or failed), close the socket now."""
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.close()

    def close(self) -> None:
        """Close the socket and remove its dir (the thread does this itself at the end)."""
        self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _receive_until_exit(self, pid: int, pidfd: int) -> None:
        try:
            while True:
                readable, _, _ = select.select([self._sock, pidfd], [], [])
                if self._sock in readable:
                    self._receive_one(pid, block=True)
                elif pidfd in readable:
                    # It exited: what it sent before is still queued.
                    while self._receive_one(pid, block=False):
                        pass
                    return
        except OSError:
            return  # the socket was closed under us: nothing more to hear
        finally:
            os.close(pidfd)
            self.close()
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def _receive_one(self, pid: int, *, block: bool) -> bool:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(
                65536, socket.CMSG_SPACE(_UCRED.size), 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        sender = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = _UCRED.unpack(payload[:_UCRED.size])[0]
        if sender == pid:
            with self._changed:
                self.received.append(Notification(time.monotonic(),
                                                  data.decode(errors="replace")))
                self._changed.notify_all()
        return True


class VfiodProcess(subprocess.Popen[bytes]):
    """A vfiod started by ``start_vfiod``, with what it told its service manager."""

    notifications: Notifications


def vfiod_command(bus: PrivateBus | str, sim_root: str | os.PathLike[str] | None,
                  profile: str | None, state_dir: str | os.PathLike[str],
                  config: str | os.PathLike[str] | None = None, *,
                  real_host: bool = False, program: Sequence[str] | None = None,
                  write_timeout: float | None = None) -> list[str]:
    """The command line that runs vfiod on the simulated *profile* on *bus*.

    *program* is what runs vfiod (``python -m vfiod.daemon.main`` with this Python by
    default; an installed ``vfiod``, or a test's launcher). With *real_host* (and
    neither *sim_root* nor *profile*) vfiod manages the machine it runs on: only ever
    inside a test guest.
    """
    address = bus.address if isinstance(bus, PrivateBus) else bus
    cmd = list(program) if program is not None else [sys.executable, "-m", "vfiod.daemon.main"]
    if real_host:
        if sim_root is not None or profile is not None:
            raise ValueError("a vfiod on the real host takes no simulated profile or root")
    else:
        if sim_root is None or profile is None:
            raise ValueError("a simulated vfiod needs a profile and a sim root "
                             "(real_host=True runs it on this machine)")
        cmd += ["--simulate", profile, "--sim-root", os.fspath(sim_root)]
    cmd += ["--address", address, "--state-dir", os.fspath(state_dir)]
    if config is not None:
        cmd += ["--config", os.fspath(config)]
    if write_timeout is not None:
        cmd += ["--write-timeout", f"{write_timeout:g}"]
    return cmd


def same_vfiod_env(env: Mapping[str, str]) -> dict[str, str]:
    """*env* with this vfiod's directory first on PYTHONPATH.

    A ``python -m vfiod...`` child then runs the copy of vfiod its parent runs (an
    installed one, a checkout), whatever else is on its interpreter's path.
    """
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    return {**env, "PYTHONPATH": os.pathsep.join([here, *rest])}


def start_vfiod(bus: PrivateBus, sim_root: str | os.PathLike[str] | None,
                profile: str | None = "seed-x99",
                state_dir: str | os.PathLike[str] | None = None,
                config: str | os.PathLike[str] | None = None,
                extra_env: Mapping[str, str] | None = None, *,
                log: str | os.PathLike[str] | None = None,
                timeout: float = 30.0, real_host: bool = False,
                program: Sequence[str] | None = None) -> VfiodProcess:
    """Launch vfiod on the simulated host and return once it says READY=1.

    *real_host*: vfiod manages this machine (pass ``sim_root=None, profile=None`` and a
    *state_dir*); only the real-kernel tier's guest tests do that. *program*: see
    ``vfiod_command``.

    The harness plays systemd's part: the daemon gets a NOTIFY_SOCKET of the harness's
    own and sends READY=1 when it is fully up (recovered, scanned, exported, watching,
    owning its name). Everything it sends is kept in ``proc.notifications``; a caller
    cannot bring a NOTIFY_SOCKET of its own. *log*: a file that receives the daemon's
    stdout and stderr (inherited otherwise). On failure to start the process is
    stopped and PrivateBusError raised with the end of its log.
    """
    if extra_env and "NOTIFY_SOCKET" in extra_env:
        raise ValueError("start_vfiod gives vfiod its NOTIFY_SOCKET; read "
                         "proc.notifications instead")
    if state_dir is None:
        if sim_root is None:
            raise ValueError("a state dir is needed when there is no sim root")
        state_dir = Path(sim_root).with_name(Path(sim_root).name + "-state")
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    command = vfiod_command(bus, sim_root, profile, state_dir, config, real_host=real_host,
                            program=program)
    env = same_vfiod_env(bus.env())
    for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(inherited, None)
    env.update(extra_env or {})
    notifications = Notifications()
    env["NOTIFY_SOCKET"] = notifications.path
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed below)
    try:
        proc = VfiodProcess(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT if out is not None else None,
                            preexec_fn=die_with_parent)
    except BaseException:
        notifications.close()
        raise
    finally:
        if out is not None:
            out.close()
    proc.notifications = notifications
    try:
        notifications.follow(proc.pid)
        if not notifications.ready(timeout):
            code = proc.poll()
            if code is not None:
                raise PrivateBusError(f"vfiod exited with status {code} before it was ready")
            raise PrivateBusError(f"vfiod was not ready (no READY=1) within {timeout:g} s")
    except BaseException as exc:
        stop_vfiod(proc)
        if isinstance(exc, PrivateBusError) and log is not None:
            tail = Path(log).read_text(errors="replace")[-2000:]
            raise PrivateBusError(f"{exc}; its log ends:\n{tail}") from None
        raise
    return proc


def stop_vfiod(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM vfiod (only that pid), wait, SIGKILL after *timeout*; its exit status."""
    code = _terminate(proc, timeout)
    if isinstance(proc, VfiodProcess):
        proc.notifications.join()
    return code


def name_has_owner(address: str, name: str = BUS_NAME) -> bool:
    """True when *name* is owned on the bus at *address*."""
    return name_owner_pid(address, name) is not None


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _read_line(stream: object, timeout: float) -> str:
    """One line from a pipe, or "" when nothing came within *timeout*."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode().strip()


def name_owner_pid(address: str, name: str = BUS_NAME) -> int | None:
    """The pid of the process owning *name* on the bus at *address*, None when unowned."""
    result = subprocess.run(
        ["busctl", f"--address={address}", "call", "org.freedesktop.DBus",
         "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s",
         name], capture_output=True, text=True, timeout=10, check=False)
    fields = result.stdout.split()
    return int(fields[1]) if result.returncode == 0 and len(fields) == 2 else None
