"""``vfioctl status NAME``: config names resolve to addresses as vfiod resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest
from ctl_samples import gpu, hdmi_audio, seed_devices

from vfiod.ctl import exitcodes
from vfiod.ctl.client import CtlError
from vfiod.ctl.commands import _address_for_name
from vfiod.ctl.devices import DeviceProperties


@pytest.fixture
def devices() -> dict[str, DeviceProperties]:
    return {d.address: d for d in seed_devices()}


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "vfiod.toml"
    path.write_text(text)
    monkeypatch.setenv("VFIOD_CONFIG", str(path))


def test_the_daemon_s_config_name_property_wins(devices: dict[str, DeviceProperties],
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("VFIOD_CONFIG", str(tmp_path / "absent.toml"))
    devices["0000:06:00.0"].extra["ConfigName"] = "gpu"
    assert _address_for_name("gpu", devices) == "0000:06:00.0"


def test_an_address_entry_gives_its_address(devices: dict[str, DeviceProperties], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, '[[device]]\nmatch = "06:00.1"\nname = "hdmi"\n')
    assert _address_for_name("hdmi", devices) == "0000:06:00.1"


def test_an_ids_entry_gives_the_one_device_with_those_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, '[[device]]\nmatch = "10de:10ef"\nname = "hdmi"\n')
    assert _address_for_name("hdmi", {"0000:06:00.1": hdmi_audio(), "0000:06:00.0": gpu()}) \
        == "0000:06:00.1"


def test_an_ids_entry_matching_two_devices_is_a_usage_error(
        devices: dict[str, DeviceProperties], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, '[[device]]\nmatch = "10de:1b06"\nname = "gpu"\n')
    with pytest.raises(CtlError) as info:
        _address_for_name("gpu", devices)
    assert info.value.exit_code == exitcodes.USAGE
    assert "0000:05:00.0, 0000:06:00.0" in info.value.message


def test_an_ids_entry_matching_nothing_is_no_such_device(
        devices: dict[str, DeviceProperties], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, '[[device]]\nmatch = "1002:67df"\nname = "amd"\n')
    with pytest.raises(CtlError) as info:
        _address_for_name("amd", devices)
    assert info.value.exit_code == 3


def test_a_name_no_entry_has_is_a_usage_error(devices: dict[str, DeviceProperties],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFIOD_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(CtlError) as info:
        _address_for_name("gpu", devices)
    assert info.value.exit_code == exitcodes.USAGE
    assert info.value.message.startswith("'gpu' is neither a PCI address")
