"""A stand-in for QEMU: a process that holds a VFIO group, and a device fd if asked.

It may also hold the device fd alone: having closed its group fd (``close_group``), or
having received the fd over a unix socket from a process that has exited (``passed``).

In a test: ``Holder(group, address)`` forks a child that takes what it was asked to and
keeps it until ``stop()`` (a fresh Python would cost seconds under TCG). From a shell:
``python -m tests.vm.guest.vfio_holder GROUP [ADDRESS]`` prints ``ready`` (or ``error
ERRNO`` and exits 1) and holds until stdin closes. Test guest only.
"""

from __future__ import annotations

import os
import signal
import sys

from ..marker import GUEST_MARKER, in_test_guest


def hold(group: int, address: str | None, close_group: bool = False) -> int:
    """Open the group (attach it and take the device fd when *address* is given).

    Returns the group fd (-1 when *close_group* closed it once the device fd was taken:
    the holder then shows in /proc only as ``anon_inode:[vfio-device]``); raises OSError
    as the kernel refuses.
    """
    from . import vfio_api  # refuses to import outside the test guest

    group_fd = vfio_api.open_group(group)
    if address is not None:
        vfio_api.attach_container(group_fd)
        vfio_api.device_fd(group_fd, address)
        if close_group:
            os.close(group_fd)
            return -1
    return group_fd


def receive_device_fd(group: int, address: str) -> int:
    """Get *address*'s device fd from a helper process over a unix socket (SCM_RIGHTS),
    as a guest handed its fds by a management process; the helper then exits, so only
    the received device fd keeps the device. Returns it; OSError as the kernel refuses."""
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the helper: open, take the device fd, send it, exit
        code = 0
        try:
            ours.close()
            try:
                from . import vfio_api

                group_fd = vfio_api.open_group(group)
                vfio_api.attach_container(group_fd)
                fd = vfio_api.device_fd(group_fd, address)
                socket.send_fds(theirs, [b"ok"], [fd])
            except OSError as exc:
                theirs.sendall(f"{exc.errno}".encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    try:
        message, fds, _flags, _addr = socket.recv_fds(ours, 64, 1)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    if message != b"ok" or not fds:
        err = int(message) if message.isdigit() else 5
        raise OSError(err, os.strerror(err))
    return fds[0]


class Holder:
    """A forked child holding a group (and device) until stop()."""

    def __init__(self, group: int, address: str | None = None, *, close_group: bool = False,
                 passed: bool = False) -> None:
        if not in_test_guest():
            raise RuntimeError(f"Holder runs only in the test guest ({GUEST_MARKER})")
        from . import vfio_api  # noqa: F401  (imported before fork: no import in the child)

        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: hold, report, wait; never return into pytest
            code = 0
            try:
                os.close(ready_r)
                os.close(stop_w)
                try:
                    if passed and address is not None:
                        receive_device_fd(group, address)
                    else:
                        hold(group, address, close_group)
                    os.write(ready_w, b"ready")
                except OSError as exc:
                    os.write(ready_w, f"error {exc.errno}".encode())
                os.close(ready_w)
                os.read(stop_r, 1)  # until the parent closes its end or kills us
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(stop_r)
        self.pid = pid
        self._stop = stop_w
        with os.fdopen(ready_r, "rb") as ready:
            #: "ready", or "error ERRNO" when the kernel refused.
            self.reply = ready.read().decode()

    def stop(self) -> None:
        """Kill the child (its fds close with it) and reap it."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            os.close(self._stop)
            self.pid = 0


def main(argv: list[str]) -> int:
    """Hold the group (and device) named in *argv* until stdin closes."""
    if not in_test_guest():
        print(f"vfio_holder: refusing to run outside the test guest ({GUEST_MARKER})",
              file=sys.stderr)
        return 2
    try:
        group_fd = hold(int(argv[0]), argv[1] if len(argv) > 1 else None)
    except OSError as exc:
        print(f"error {exc.errno}", flush=True)
        return 1
    print("ready", flush=True)
    sys.stdin.read()
    os.close(group_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
