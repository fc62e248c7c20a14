"""A private system-like D-Bus and a vfiod on it, for tests, the demo and applet work.

``PrivateBus`` runs a real ``dbus-daemon`` with a configuration modelled on the system
bus (``<type>system</type>``, a default policy that denies owning names and method
calls) plus the project's own bus policy, dbus/org.vfiod1.conf, through ``<include>``.
The policy is therefore enforced for real: only root may own ``org.vfiod1``.

``start_vfiod`` launches ``python -m vfiod.daemon.main --simulate ...`` on that bus and
waits until the daemon owns ``org.vfiod1`` (which it does last, once it is fully up).
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from vfiod.contract import BUS_NAME


#: The project's bus policy (written by the packaging side; installed to system.d).
PROJECT_POLICY = Path(__file__).resolve().parent.parent / "dbus" / "org.vfiod1.conf"

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
# private bus without activation needs.
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

    ``policy`` is the bus policy file to include (the project's by default);
    ``polkit`` adds the bus policy polkit ships, so that a mock polkitd may run.
    The socket's directory is world-searchable so that an unprivileged caller (a test
    run under ``setpriv``) can connect and be judged by the policy, not by file modes.
    """

    def __init__(self, policy: str | os.PathLike[str] | None = None, *,
                 polkit: bool = True, start_timeout: float = 10.0) -> None:
        self.policy = Path(policy) if policy is not None else PROJECT_POLICY
        self.polkit = polkit
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
            config = self.dir / "bus.conf"
            config.write_text(_CONFIG.format(
                socket=escape(str(self.socket_path)),
                polkit=_POLKIT_POLICY if self.polkit else "",
                policy=escape(str(self.policy)),
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


def vfiod_command(bus: PrivateBus | str, sim_root: str | os.PathLike[str] | None,
                  profile: str | None, state_dir: str | os.PathLike[str],
                  config: str | os.PathLike[str] | None = None, *,
                  real_host: bool = False) -> list[str]:
    """The command line that runs vfiod on the simulated *profile* on *bus*.

    With *real_host* (and neither *sim_root* nor *profile*) vfiod manages the machine
    it runs on: only ever inside a test guest.
    """
    address = bus.address if isinstance(bus, PrivateBus) else bus
    cmd = [sys.executable, "-m", "vfiod.daemon.main"]
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
    return cmd


def start_vfiod(bus: PrivateBus, sim_root: str | os.PathLike[str] | None,
                profile: str | None = "seed-x99",
                state_dir: str | os.PathLike[str] | None = None,
                config: str | os.PathLike[str] | None = None,
                extra_env: Mapping[str, str] | None = None, *,
                log: str | os.PathLike[str] | None = None,
                timeout: float = 30.0, real_host: bool = False) -> subprocess.Popen[bytes]:
    """Launch vfiod on the simulated host and return once it serves ``org.vfiod1``.

    *real_host*: vfiod manages this machine (pass ``sim_root=None, profile=None`` and a
    *state_dir*); only the real-kernel tier's guest tests do that.

    vfiod owns its name only when it is fully up (recovered, scanned, exported,
    watching), so the name being owned is the readiness signal here; NOTIFY_SOCKET is
    passed only when *extra_env* brings one (a test of sd_notify). *log*: a file that
    receives the daemon's stdout and stderr (inherited otherwise). On failure to start
    the process is stopped and PrivateBusError raised with the end of its log.
    """
    if state_dir is None:
        if sim_root is None:
            raise ValueError("a state dir is needed when there is no sim root")
        state_dir = Path(sim_root).with_name(Path(sim_root).name + "-state")
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    env = bus.env()
    for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(inherited, None)
    env.update(extra_env or {})
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(vfiod_command(bus, sim_root, profile, state_dir, config,
                                              real_host=real_host),
                                env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out is not None else None,
                                preexec_fn=die_with_parent)
    finally:
        if out is not None:
            out.close()
    try:
        _wait_name(proc, bus.address, timeout)
    except BaseException as exc:
        stop_vfiod(proc)
        if isinstance(exc, PrivateBusError) and log is not None:
            tail = Path(log).read_text(errors="replace")[-2000:]
            raise PrivateBusError(f"{exc}; its log ends:\n{tail}") from None
        raise
    return proc


def stop_vfiod(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM vfiod (only that pid), wait, SIGKILL after *timeout*; its exit status."""
    return _terminate(proc, timeout)


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


def _wait_name(proc: subprocess.Popen[bytes], address: str, timeout: float) -> None:
    """Until *proc* itself owns the name (another vfiod owning it does not count)."""
    deadline = time.monotonic() + timeout
    while name_owner_pid(address) != proc.pid:
        if proc.poll() is not None:
            raise PrivateBusError(f"vfiod exited with status {proc.returncode} "
                                  f"before owning {BUS_NAME}")
        if time.monotonic() > deadline:
            raise PrivateBusError(f"vfiod did not own {BUS_NAME} within {timeout:g} s")
        time.sleep(0.05)
