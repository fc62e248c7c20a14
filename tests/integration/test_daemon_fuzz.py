"""No bad input to any method yields a traceback, to the client or on the terminal."""

from __future__ import annotations

import asyncio

from dbus_fast import Message, MessageType, Variant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import DEVICE_IFACE, MANAGER, Vfiod, client, device_path

EXPECTED_ERRORS = {
    "org.vfiod1.Error.InvalidArgument", "org.vfiod1.Error.NoSuchDevice",
    "org.vfiod1.Error.InUse", "org.vfiod1.Error.GroupNotViable",
    "org.vfiod1.Error.ResetFailed",
    # dbus-fast's own answer to a signature no method has.
    "org.freedesktop.DBus.Error.UnknownMethod",
}

# D-Bus strings are UTF-8 without NUL; the bus itself refuses anything else, and a lone
# surrogate cannot even be encoded by the client (category Cs).
texts = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                       blacklist_categories=("Cs",)), max_size=200)
devices = st.one_of(
    texts,
    st.sampled_from(["0000:06:00.0", "06:00.1", "00:1b.0", "0000:77:00.0", "gpu", "../../x",
                     "0000:06:00.0\n", "06:00.0 ", "/sys/bus/pci", "a" * 5000]),
    st.from_regex(r"[0-9a-fA-F:.]{1,16}", fullmatch=True),
)
variants = st.one_of(
    st.booleans().map(lambda b: Variant("b", b)),
    texts.map(lambda s: Variant("s", s[:20])),
    st.integers(-2**31, 2**31 - 1).map(lambda i: Variant("i", i)),
    st.lists(texts.map(lambda s: s[:5]), max_size=3).map(lambda xs: Variant("as", xs)),
)
option_dicts = st.dictionaries(
    st.one_of(st.sampled_from(["group", "force"]), texts.map(lambda s: s[:30])), variants,
    max_size=3)
members = st.sampled_from(["Bind", "Unbind", "Reset"])


def _check(reply: Message, log: str) -> None:
    if reply.message_type is MessageType.ERROR:
        assert reply.error_name in EXPECTED_ERRORS, (reply.error_name, reply.body)
        text = str(reply.body[0]) if reply.body else ""
        assert "Traceback" not in text and 'File "' not in text and "\n" not in text
    assert "Traceback" not in log


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(member=members, device=devices, opts=option_dicts, on_device=st.booleans())
def test_bad_input_to_any_method_never_yields_a_traceback(
        vfiod: Vfiod, member: str, device: str, opts: dict[str, Variant],
        on_device: bool) -> None:
    async def go() -> Message:
        async with client(vfiod.address) as bus:
            if on_device:
                msg = Message(destination="org.vfiod1", path=device_path("0000:00:1b.0"),
                              interface=DEVICE_IFACE, member=member, signature="a{sv}",
                              body=[opts])
            else:
                msg = Message(destination="org.vfiod1", path=MANAGER,
                              interface="org.vfiod1.Manager", member=member,
                              signature="sa{sv}", body=[device, opts])
            return await bus.call(msg)

    _check(asyncio.run(go()), vfiod.log())


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(member=st.sampled_from(["Bind", "Status", "Reload", "Nope"]),
       body=st.lists(variants.map(lambda v: v.value), max_size=3))
def test_calls_with_any_wrong_arguments_are_refused_cleanly(
        vfiod: Vfiod, member: str, body: list[object]) -> None:
    signature = "".join({bool: "b", str: "s", int: "i", list: "as"}[type(v)] for v in body)

    async def go() -> Message:
        async with client(vfiod.address) as bus:
            return await bus.call(Message(destination="org.vfiod1", path=MANAGER,
                                          interface="org.vfiod1.Manager", member=member,
                                          signature=signature, body=body))

    reply = asyncio.run(go())
    if reply.message_type is MessageType.ERROR:
        assert reply.error_name in EXPECTED_ERRORS | {"org.freedesktop.DBus.Error.InvalidArgs"}
    assert "Traceback" not in vfiod.log()
