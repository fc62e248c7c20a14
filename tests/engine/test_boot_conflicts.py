"""The engine refuses a config whose boot values conflict inside an IOMMU group on this
machine, keeps the one it had, and never claims a hot-added member of such a group."""

from __future__ import annotations

import logging

import pytest

from vfiod.config import ConfigError, parse_config
from vfiod.engine import Engine

GPU = "0000:06:00.0"
CLAIM_GPU = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n'
AUDIO_HOME = '\n[[device]]\nmatch = "0000:06:00.1"\nname = "gpu-audio"\nboot = "host"\n'


def test_a_config_with_conflicting_boot_in_a_group_is_refused_and_the_old_one_stays(
        engine: Engine) -> None:
    good = parse_config(CLAIM_GPU, "vfiod.toml")
    engine.set_config(good)
    with pytest.raises(ConfigError, match=r"vfiod\.toml:9: device\[1\]\.boot"):
        engine.set_config(parse_config(CLAIM_GPU + AUDIO_HOME, "vfiod.toml"))
    assert engine.config is good


def test_check_config_accepts_a_member_without_boot(engine: Engine) -> None:
    follows = CLAIM_GPU + AUDIO_HOME.replace('boot = "host"\n', "")
    engine.check_config(parse_config(follows))
    engine.set_config(parse_config(follows))
    assert engine.config is not None and len(engine.config.devices) == 2


def test_a_hot_added_function_whose_group_now_conflicts_is_not_claimed(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    engine.set_config(parse_config(CLAIM_GPU, "vfiod.toml"))
    assert engine.wants_vfio(GPU)
    # As if the groups had changed since the config was checked (a card moved).
    engine.config = parse_config(CLAIM_GPU + AUDIO_HOME, "vfiod.toml")
    with caplog.at_level(logging.ERROR, logger="vfiod.engine"):
        assert not engine.wants_vfio(GPU)
    assert "not claiming it" in caplog.text and "IOMMU group 31" in caplog.text
