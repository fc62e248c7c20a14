"""The engine's progress hook: the steps it reports, cancel at a safe step, the holder wait."""

from __future__ import annotations

import threading

import pytest

from vfiod.engine import Engine
from vfiod.engine.progress import Cancelled
from vfiod.errors import Failed, InUse
from vfiod.sim import SimHost

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
ONBOARD_AUDIO = "0000:00:1b.0"


class Recorder:
    """A progress hook that keeps every report."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str, bool]] = []

    def __call__(self, phase: str, waiting_for: str = "", *, in_kernel: bool = False) -> None:
        self.reports.append((phase, waiting_for, in_kernel))

    @property
    def phases(self) -> list[str]:
        """The phases in order, each once."""
        seen: list[str] = []
        for phase, _, _ in self.reports:
            if not seen or seen[-1] != phase:
                seen.append(phase)
        return seen


def test_a_bind_reports_each_step_in_words(engine: Engine) -> None:
    progress = Recorder()
    engine.run("bind", GPU, progress=progress)
    assert progress.phases == [
        f"checking that the host does not use {GPU}, {AUDIO}",
        "loading the vfio-pci module",
        f"writing driver_override of {GPU}", f"unbinding {GPU} from nvidia",
        f"probing vfio-pci for {GPU}",
        f"writing driver_override of {AUDIO}", f"unbinding {AUDIO} from snd_hda_intel",
        f"probing vfio-pci for {AUDIO}"]


def test_each_kernel_write_is_what_the_step_waits_for_while_it_runs(engine: Engine) -> None:
    progress = Recorder()
    engine.run("bind", GPU, progress=progress)
    unbinding = [(w, k) for p, w, k in progress.reports if p == f"unbinding {GPU} from nvidia"]
    assert unbinding == [("", False),
                         (f"the kernel: writing {GPU} to /sys/bus/pci/devices/{GPU}/driver/"
                          "unbind", True),
                         ("", False)]


def test_a_reset_reports_the_method_it_tries(engine: Engine) -> None:
    progress = Recorder()
    assert engine.run("reset", ONBOARD_AUDIO, progress=progress) == "flr"
    assert f"resetting {ONBOARD_AUDIO} by flr" in progress.phases


def test_cancel_at_a_safe_step_rolls_the_bind_back(engine: Engine, host: SimHost) -> None:
    progress = Recorder()

    def cancelled() -> bool:  # true from the step after the GPU's move
        return f"probing vfio-pci for {GPU}" in progress.phases

    with pytest.raises(Failed, match="cancelled while"):
        engine.run("bind", GPU, progress=progress, cancelled=cancelled)
    assert "rolling back" in progress.phases
    engine.rescan()
    assert {a: engine.devices()[a].driver for a in (GPU, AUDIO)} == \
        {GPU: "nvidia", AUDIO: "snd_hda_intel"}


def test_without_a_wait_a_held_device_is_refused_at_once(engine: Engine,
                                                          host: SimHost) -> None:
    with host.spawn_holder(["/dev/snd/pcmC0D0p"], comm="aplay"):
        with pytest.raises(InUse, match=r"held open by aplay .*use force to override\)$"):
            engine.run("bind", ONBOARD_AUDIO, progress=Recorder())


def test_a_wait_names_the_holder_and_goes_ahead_once_it_lets_go(engine: Engine,
                                                                host: SimHost) -> None:
    progress = Recorder()
    with host.spawn_holder(["/dev/snd/pcmC0D0p"], comm="aplay") as aplay:
        threading.Timer(1.0, aplay.close).start()
        moved = engine.run("bind", ONBOARD_AUDIO, progress=progress, wait=30)
    assert moved == [ONBOARD_AUDIO]
    assert (f"checking that the host does not use {ONBOARD_AUDIO}",
            f"aplay (pid {aplay.pid}) to release {ONBOARD_AUDIO}", False) in progress.reports


def test_cancel_stops_a_wait_for_a_holder_before_any_write(engine: Engine,
                                                           host: SimHost) -> None:
    progress = Recorder()
    with host.spawn_holder(["/dev/snd/pcmC0D0p"], comm="aplay"):
        with pytest.raises(Cancelled):
            engine.run("bind", ONBOARD_AUDIO, progress=progress, wait=30,
                       cancelled=lambda: any(w for _, w, _ in progress.reports))
    assert not any(k for _, _, k in progress.reports)  # no kernel write at all


def test_a_guest_holding_the_group_is_waited_for_by_unbind(engine: Engine,
                                                           host: SimHost) -> None:
    engine.run("bind", GPU)
    progress = Recorder()
    with host.spawn_holder(["/dev/vfio/31"], comm="qemu-system-x86") as guest:
        threading.Timer(1.0, guest.close).start()
        moved = engine.run("unbind", GPU, progress=progress, wait=30)
    assert moved == [GPU, AUDIO]
    assert any(w == f"qemu-system-x86 (pid {guest.pid}) to release {GPU}"
               for _, w, _ in progress.reports)
