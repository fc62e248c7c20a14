"""The distribution tier's disk image: a cached Debian base, then vfiod installed into a
copy of it natively, the way the README says, and the copy made into an ext4 image.

Two layers:
- the base (``base-<key>/``): ``debootstrap --variant=minbase`` of RELEASE with
  PACKAGES, then base-setup.sh in it. *key* hashes the release, the package list and
  base-setup.sh, so changing any of them builds a new base (and drops the old one).
  The .debs are kept in ``debs/`` for the next build from nothing.
- the product (every run, in the run folder): a copy of the base; this checkout's
  tracked files at /srv/vfiod; there, the README's own install line
  (``make install BUNDLE_DEPS=1``) in systemd-nspawn; a config claiming the first NIC at
  boot; ``vfioctl initramfs install --root /`` (offline) and ``update-initramfs``; the
  guest's check unit; ``mkfs.ext4 -d``.

systemd-nspawn mounts /sys read-only and gives the container its own /dev: nothing run
there can touch this machine's devices (the same as tests/minbase.sh).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.vm.qemu import serial_tail

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RELEASE = "bookworm"
#: What the image has besides minbase: a kernel and systemd as PID 1; the bus and
#: polkitd (D-Bus-activated, as on any server; it needs logind, which debootstrap does
#: not resolve: libpam-systemd provides it); initramfs-tools; make and the README's
#: build dependencies for ``make install BUNDLE_DEPS=1`` (systemd-python is compiled).
PACKAGES: tuple[str, ...] = (
    "linux-image-amd64", "systemd-sysv", "udev", "dbus", "polkitd", "libpam-systemd", "kmod",
    "initramfs-tools", "zstd", "procps", "iproute2", "pciutils",
    "make", "python3", "python3-pip", "python3-wheel", "python3-setuptools",
    "python3-dev", "gcc", "pkg-config", "libsystemd-dev",
)
#: The dracut layer's packages, installed over the base (Debian's dracut replaces
#: initramfs-tools): the third boot proves the shim's dracut module.
DRACUT_PACKAGES: tuple[str, ...] = ("dracut",)
#: Each generator's native rebuild of every installed kernel's initramfs, in nspawn.
REBUILD: dict[str, tuple[str, ...]] = {
    "initramfs-tools": ("update-initramfs", "-u", "-k", "all"),
    "dracut": ("dracut", "--regenerate-all", "--force"),
}
BASE_SETUP = HERE / "base-setup.sh"
#: The image file system's size (sparse; about 1.6 GB is used).
DISK_BYTES = 4 * 1024 ** 3
#: Where the checkout goes in the image (not /root: make runs as root, but the checks'
#: unprivileged users read nothing there; /srv as a user would clone it).
IMAGE_CHECKOUT = "/srv/vfiod"


class BuildError(RuntimeError):
    """The image could not be built; the message says which step and why."""


def mirror() -> str:
    """The Debian mirror: MIRROR, else the first one in this machine's apt sources."""
    explicit = os.environ.get("MIRROR")
    if explicit:
        return explicit
    pattern = re.compile(r"(?:URIs:|deb)\s+(https?://\S*/debian/?)(?:\s|$)")
    for path in [Path("/etc/apt/sources.list"),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            match = pattern.search(path.read_text(errors="replace"))
        except OSError:
            continue
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_key(release: str = RELEASE, packages: Sequence[str] = PACKAGES,
             setup_script: bytes | None = None) -> str:
    """The base image's cache key: the release, the package list and the setup script."""
    script = BASE_SETUP.read_bytes() if setup_script is None else setup_script
    digest = hashlib.sha256()
    digest.update(release.encode() + b"\0")
    digest.update(" ".join(sorted(set(packages))).encode() + b"\0")
    digest.update(script)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Base:
    """A cached base root file system."""

    root: Path

    @property
    def kernel_version(self) -> str:
        """The one kernel installed in it (6.1.0-N-amd64)."""
        versions = sorted(p.name for p in (self.root / "lib" / "modules").iterdir())
        if len(versions) != 1:
            raise BuildError(f"expected one kernel in the base, found {versions}")
        return versions[0]


def pip_cert_options(target: str = "/run/vfiod-distro-ca.crt") -> list[str]:
    """nspawn options lending this machine's PIP_CERT (a TLS-intercepting proxy's CA).

    Under /run, the container's tmpfs: a bind mount's mount point elsewhere would stay
    in the image as an empty file.
    """
    cert = os.environ.get("PIP_CERT")
    if cert and os.path.isfile(cert):
        return [f"--bind-ro={cert}:{target}", f"--setenv=PIP_CERT={target}"]
    return []


def nspawn(root: Path, argv: Sequence[str], log: Path, *options: str,
           timeout: float = 900) -> None:
    """Run *argv* in *root* with systemd-nspawn (PID 2; /sys read-only); output to *log*.

    Not registered with machined: this machine need not run systemd as PID 1.
    """
    command = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--as-pid2",
               "--pipe", "-D", str(root), *options, *argv]
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{' '.join(argv)} timed out after {timeout:g} s (see {log})") \
                from exc
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed with exit {proc.returncode} "
                         f"(see {log}):\n{serial_tail(log, 15)}")


Say = Callable[[str], None]


def _cached_layer(cache: Path, name: str, key: str,
                  build: Callable[[Path, Path], None]) -> Base:
    """``cache/NAME-KEY``, built when missing by *build(staging, log)* into a fresh
    ``NAME-KEY.building`` and then renamed; the layers of older keys are dropped.

    ``NAME-KEY.done`` (beside the root: nothing of the tier's in the image) marks a
    finished build; apt's and debootstrap's .debs are kept in ``cache/debs``.
    """
    root = cache / f"{name}-{key}"
    done = cache / f"{name}-{key}.done"
    if done.exists() and root.is_dir():
        return Base(root)
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    staging = cache / f"{name}-{key}.building"
    shutil.rmtree(staging, ignore_errors=True)
    log = cache / f"{name}-{key}.log"
    log.unlink(missing_ok=True)
    build(staging, log)
    for old in cache.glob(f"{name}-*"):
        if old.name != staging.name:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            elif old.suffix == ".done":
                old.unlink()
    os.replace(staging, root)
    done.write_text(f"{key}\n")
    return Base(root)


def ensure_base(cache: Path, say: Say = print) -> Base:
    """The cached base for the current key, built (debootstrap, setup) when missing."""

    def build(staging: Path, log: Path) -> None:
        started = time.monotonic()
        say(f"distro: building the base image from nothing: debootstrap --variant=minbase "
            f"{RELEASE} with {len(PACKAGES)} packages (several minutes; log {log})")
        command = ["debootstrap", "--variant=minbase", f"--cache-dir={cache / 'debs'}",
                   f"--include={','.join(PACKAGES)}", RELEASE, str(staging), mirror()]
        with open(log, "ab") as out:
            proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise BuildError(f"debootstrap failed with exit {proc.returncode}:\n{serial_tail(log, 15)}")
        say(f"distro: debootstrap took {time.monotonic() - started:.0f} s")
        shutil.copy2(BASE_SETUP, staging / "base-setup.sh")
        nspawn(staging, ["/bin/sh", "/base-setup.sh"], log)
        (staging / "base-setup.sh").unlink()
        # apt's own copies of the .debs: debs/ keeps them for the next build.
        for deb in (staging / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()

    return _cached_layer(cache, "base", base_key(), build)


def dracut_key(key: str | None = None, packages: Sequence[str] = DRACUT_PACKAGES) -> str:
    """The dracut layer's cache key: the base's key and the layer's package list."""
    digest = hashlib.sha256()
    digest.update((base_key() if key is None else key).encode() + b"\0")
    digest.update(" ".join(sorted(set(packages))).encode())
    return digest.hexdigest()[:16]


def ensure_dracut_base(cache: Path, base: Base, say: Say = print) -> Base:
    """The cached base with dracut installed (apt in nspawn), built when missing.

    Keyed like the base (a new base, a new layer); apt's .debs go to ``debs/`` with
    debootstrap's, so a rebuild after a change downloads nothing it has.
    """

    def build(staging: Path, log: Path) -> None:
        started = time.monotonic()
        say(f"distro: building the dracut layer: apt-get install {' '.join(DRACUT_PACKAGES)} "
            f"over the base (log {log})")
        subprocess.run(["cp", "-a", "--reflink=auto", f"{base.root}/.", str(staging)],
                       check=True)
        nspawn(staging, ["apt-get", "install", "-y", "--no-install-recommends",
                         "-o", "Dir::Cache::Archives=/run/vfiod-debs", *DRACUT_PACKAGES], log,
               f"--bind={cache / 'debs'}:/run/vfiod-debs",
               "--setenv=DEBIAN_FRONTEND=noninteractive")
        say(f"distro: dracut layer built in {time.monotonic() - started:.0f} s")

    return _cached_layer(cache, "dracut", dracut_key(), build)


#: The config the image boots with: the first NIC claimed at boot by the shim; names
#: for the devices the checks use (the ids pin each name to what QEMU emulates there).
CONFIG = """\
# Written by tests/distro/image.py: the distribution tier's devices.
[[device]]
match = "8086:10d3@0000:02:00.0"
name = "boot-nic"
boot = "vfio"
on_release = "keep"

[[device]]
match = "8086:10d3@0000:03:00.0"
name = "spare-nic"
boot = "host"
on_release = "host"
"""
#: The unit that runs the checks once the system is up, then powers off however they
#: ended (a refusal, a crash, a hang past RuntimeMaxSec): QEMU exits, the host goes on.
CHECK_UNIT = f"""\
# Written by tests/distro/image.py: the distribution tier's checks, then power off.
[Unit]
Description=vfiod distribution tier checks
After=multi-user.target vfiod.service dbus.service
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=exec
ExecStart=/usr/bin/python3 {IMAGE_CHECKOUT}/tests/distro/guest/checks.py
RuntimeMaxSec=1500
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Image:
    """A built disk image and the kernel and initramfs it boots with."""

    disk: Path
    kernel: Path
    initrd: Path


def tracked_files(repo: Path = REPO) -> list[str]:
    """This checkout's tracked files that exist (edits included, as a user's tree has)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True,
                         check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (repo / f).is_file()]


def copy_checkout(dest: Path, repo: Path = REPO) -> None:
    """This checkout's tracked files into *dest* (no venv, no caches, no .git)."""
    for name in tracked_files(repo):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def build_image(base: Base, work: Path, cache: Path, say: Say = print,
                generator: str = "initramfs-tools") -> Image:
    """vfiod installed into a copy of *base* the README's way; the copy as an ext4 image.

    *generator* is the initramfs tool the base has (``REBUILD``'s keys): the shim goes
    into its initramfs by its own rebuild. *work* is the run folder: the root file system
    is made there and removed once the disk image is written; with dracut every file
    made (rootfs, disk image, kernel, initramfs, log) has ``-dracut`` in its name.
    """
    seconds: dict[str, float] = {}
    suffix = "" if generator == "initramfs-tools" else f"-{generator}"
    log = work / f"build{suffix}.log"
    root = work / f"rootfs{suffix}"
    mark = time.monotonic()

    def step(name: str) -> None:
        nonlocal mark
        seconds[name] = time.monotonic() - mark
        mark = time.monotonic()

    subprocess.run(["cp", "-a", "--reflink=auto", f"{base.root}/.", str(root)], check=True)
    copy_checkout(root / IMAGE_CHECKOUT.lstrip("/"))
    step("copy")
    pip_cache = cache / "pip"
    pip_cache.mkdir(exist_ok=True)
    # The README's install line (its apt-get line's packages are in the base already).
    nspawn(root, ["make", "install", "BUNDLE_DEPS=1"], log, f"--chdir={IMAGE_CHECKOUT}",
           f"--bind={pip_cache}:/root/.cache/pip", *pip_cert_options())
    step("make install")
    (root / "etc/vfiod/vfiod.toml").write_text(CONFIG)
    # Offline: the shim for the config, checked against the devices at boot.
    nspawn(root, ["vfioctl", "initramfs", "install", "--root", "/"], log)
    nspawn(root, list(REBUILD[generator]), log)
    step(f"shim + {REBUILD[generator][0]}")
    nspawn(root, ["systemctl", "enable", "vfiod.service"], log)
    (root / "etc/systemd/system/vfiod-distro-checks.service").write_text(CHECK_UNIT)
    nspawn(root, ["systemctl", "enable", "vfiod-distro-checks.service"], log)
    boot = root / "boot"
    version = base.kernel_version
    kernel = shutil.copy2(boot / f"vmlinuz-{version}", work / f"vmlinuz-{version}{suffix}")
    initrd = shutil.copy2(boot / f"initrd.img-{version}",
                          work / f"initrd.img-{version}{suffix}")
    disk = work / f"disk{suffix}.img"
    with open(log, "ab") as out:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "vfiod-distro", "-d", str(root),
                        str(disk), str(DISK_BYTES // 1024) + "k"], stdout=out,
                       stderr=subprocess.STDOUT, check=True)
    shutil.rmtree(root)
    step("mkfs.ext4")
    say(f"distro: {generator} image built: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return Image(disk, Path(kernel), Path(initrd))


def read_results(disk: Path, dest: Path, guest_dir: str) -> None:
    """Copy a folder out of the (unmounted) disk image with debugfs, into *dest*.

    Afresh: rdump stops at a folder that exists already. What it could not copy is
    missing there (the caller reads the results file, and fails the checks without one).
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest / Path(guest_dir).name, ignore_errors=True)
    subprocess.run(["debugfs", "-R", f"rdump {guest_dir} {dest}", str(disk)],
                   capture_output=True, text=True, check=False)
