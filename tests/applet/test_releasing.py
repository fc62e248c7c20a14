"""The applet during a handover of the desktop's GPU: the Releasing signal becomes a
notification naming the programs and the timeout, and the menu shows the device as
being released."""

from __future__ import annotations

from dbus_fast import Message

from vfiod.applet.follower import Transition, VfiodFollower
from vfiod.applet.model import build_menu, device_title, shown_devices
from vfiod.applet.notifier import Notifier, notice_for
from vfiod.applet.settings import parse_settings
from vfiod.ctl.devices import DeviceProperties

DESKTOP_GPU = "0000:05:00.0"


def desktop_gpu(releasing: bool) -> DeviceProperties:
    return DeviceProperties(DESKTOP_GPU, name="GP102 [GeForce GTX 1080 Ti]",
                            state="busy" if releasing else "host", driver="nvidia",
                            releasing=releasing)


def releasing_signal(body: list[object], signature: str = "sasu") -> Message:
    msg = Message.new_signal("/org/vfiod1", "org.vfiod1.Manager", "Releasing", signature,
                             body)
    msg.sender = ":1.7"
    return msg


def follow(*messages: Message) -> list[Transition]:
    """What a running follower that knows the desktop GPU reports for *messages*."""
    seen: list[Transition] = []
    follower = VfiodFollower(None, seen.extend)  # type: ignore[arg-type]
    follower.devices = {DESKTOP_GPU: desktop_gpu(True)}
    follower.running = True
    for msg in messages:
        follower._handle(msg)
    return seen


def test_the_releasing_signal_is_a_transition_with_the_holders_and_the_timeout() -> None:
    [change] = follow(releasing_signal([DESKTOP_GPU, ["Xorg (pid 42)"], 10000]))
    assert change.kind == "releasing" and change.device.address == DESKTOP_GPU
    assert (change.holders, change.timeout_ms) == (("Xorg (pid 42)",), 10000)


def test_a_releasing_signal_of_another_shape_is_ignored() -> None:
    assert follow(releasing_signal([DESKTOP_GPU, "Xorg", 10000], "ssu")) == []


def test_holder_names_with_control_characters_are_made_printable() -> None:
    [change] = follow(releasing_signal([DESKTOP_GPU, ["\x1b[2Jevil (pid 7)"], 5000]))
    assert change.holders == ("\\x1b[2Jevil (pid 7)",)


def test_the_notice_names_the_programs_and_the_timeout() -> None:
    notice = notice_for(Transition("releasing", desktop_gpu(True), "",
                                   ("Xorg (pid 42)", "kwin_wayland (pid 43)"), 10000))
    assert notice.kind == "releasing" and notice.urgency == 2
    assert notice.summary == ("GP102 [GeForce GTX 1080 Ti] (0000:05:00.0) is being "
                              "handed to vfio-pci")
    assert "Held by Xorg (pid 42), kwin_wayland (pid 43)" in notice.body
    assert "they have 10 s to close it" in notice.body


def test_the_releasing_notice_can_be_turned_off() -> None:
    notifier = Notifier(None, parse_settings("[notifications]\nreleasing = false\n"))  # type: ignore[arg-type]
    notifier.send(notice_for(Transition("releasing", desktop_gpu(True), "", ("Xorg",), 1)))
    assert notifier.sent == []


def test_a_releasing_device_is_shown_even_without_a_config_name() -> None:
    assert [d.address for d in shown_devices({DESKTOP_GPU: desktop_gpu(True)})] == \
        [DESKTOP_GPU]
    assert shown_devices({DESKTOP_GPU: desktop_gpu(False)}) == []


def test_the_menu_says_the_device_is_being_released() -> None:
    [entry] = build_menu({DESKTOP_GPU: desktop_gpu(True)}, running=True)
    assert entry.label == device_title(desktop_gpu(True))
    assert entry.label.endswith("(05:00.0): being released by the desktop")
    labels = [child.label for child in entry.children]
    assert "Releasing: waiting for the desktop to close the card…" in labels
    assert not any(child.enabled for child in entry.children if child.action)
