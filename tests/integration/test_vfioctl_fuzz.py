"""No input makes vfioctl print a traceback: odd device arguments through the real binary."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import Vfiod
from .vfioctl_helpers import DOCUMENTED_CODES, vfioctl

# Arguments a process can receive: no NUL, no lone surrogates (argv is bytes).
_ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=60)
DEVICE_ARGUMENTS = st.one_of(
    _ARG_TEXT,
    st.from_regex(r"\A[0-9a-fA-F]{0,4}:?[0-9a-fA-F]{1,3}:[0-9a-fA-F]{1,3}\.[0-9]\Z"),
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,70}\Z"),
    st.sampled_from(["../../x", "-", "--", "--json", "0000:06:00.0/../..", "gpu;reboot",
                     "x" * 200, "06:00.0\n", " 06:00.0", "ĝpu", "\u202e06:00.0"]),
)


def test_odd_device_arguments_give_one_error_line_and_a_documented_status(
        vfiod: Vfiod) -> None:
    seen: set[int] = set()

    @settings(max_examples=30, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(command=st.sampled_from(["status", "bind"]), device=DEVICE_ARGUMENTS)
    def check(command: str, device: str) -> None:
        result = vfioctl(vfiod.address, command, "--", device)
        seen.add(result.returncode)
        assert result.returncode in DOCUMENTED_CODES, result
        assert "Traceback" not in result.stderr and 'File "' not in result.stderr
        if result.returncode != 0:
            assert result.stderr.splitlines()[-1].startswith("vfioctl: "), result.stderr

    check()
    assert 2 in seen  # the strategies did reach the argument checks
    assert vfiod.proc is not None and vfiod.proc.poll() is None  # and vfiod is still up
