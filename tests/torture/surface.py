"""vfiod's D-Bus surface as the running daemon introspects it, and hostile values for it.

The suite enumerates objects, interfaces, methods and properties from the daemon
itself, so methods added later are covered without an edit here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dbus_fast import Message, SignatureTree, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.introspection import Node
from dbus_fast.signature import SignatureType

BUS_NAME = "org.vfiod1"
ROOT = "/org/vfiod1"


@dataclass(frozen=True)
class Method:
    """One method of one interface of one object."""

    path: str
    interface: str
    name: str
    in_signature: str


@dataclass(frozen=True)
class Prop:
    """One property of one interface of one object."""

    path: str
    interface: str
    name: str
    signature: str
    access: str


@dataclass
class Surface:
    """Everything the daemon exports."""

    methods: list[Method]
    properties: list[Prop]
    signals: list[tuple[str, str, str, str]]  # (path, interface, member, signature)


async def introspect(bus: MessageBus, root: str = ROOT) -> Surface:
    """Walk vfiod's object tree from *root* by Introspect."""
    surface = Surface([], [], [])
    todo = [root]
    while todo:
        path = todo.pop()
        node: Node = await bus.introspect(BUS_NAME, path)
        for iface in node.interfaces:
            for m in iface.methods:
                surface.methods.append(Method(path, iface.name, m.name, m.in_signature))
            for p in iface.properties:
                surface.properties.append(Prop(path, iface.name, p.name, p.signature,
                                               p.access.value))
            for s in iface.signals:
                surface.signals.append((path, iface.name, s.name,
                                        "".join(a.signature for a in s.args)))
        for child in node.nodes:
            if child.name:
                todo.append(path.rstrip("/") + "/" + child.name)
    return surface


#: Strings that are never a device vfiod would act on (hostile, malformed or unknown).
HOSTILE_STRINGS = [
    "", " ", "\n", "0000:06:00.0\n", " 06:00.0", "06:00.0 ", "0000:06:00.0z",
    "0000:77:00.0", "ffff:ff:1f.7", "00:00.0.0", "../../../../etc/passwd", "/sys/bus/pci",
    "\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "%s%s%n%x", "{0.__class__}", "$(reboot)", "`id`",
    "gpu; rm -rf /", "ガー", "\u202e0.00:60:0000", "\ufeff0000:06:00.0", "A" * 4096,
    "Ā" * 20000, "0" * 100_000, "0000:06:00.0" * 3, "0x06", "-1", "NaN", "None", "null",
]
#: Option names the daemon knows (given wrong types) and ones it does not.
OPTION_NAMES = ["group", "force", "dry_run", "timeout", "clear", "", "GROUP", "force\n",
                "\x1b[31m", "a" * 5000]
WRONG_SIGNATURES = ["", "s", "ss", "sss", "i", "u", "b", "as", "a{ss}", "a{sv}", "sa{ss}",
                    "sa{sv}", "v", "(si)", "sas", "ay", "o", "ssa{sv}", "a(ss)", "ao", "t",
                    "d", "g", "sv", "a{sv}s", "aas", "a{sa{sv}}"]


class Hostile:
    """A seeded source of hostile values for any D-Bus signature."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def string(self) -> str:
        """A string that names no device vfiod would act on."""
        rng = self.rng
        if rng.random() < 0.7:
            return rng.choice(HOSTILE_STRINGS)
        alphabet = "0123456789abcdefABCDEF:.-_/ \t\x7f\x1b\u2028é😀"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))

    def object_path(self) -> str:
        """A well-formed object path that is probably nothing of vfiod's."""
        return self.rng.choice(["/", "/org/vfiod1/job/999999", "/org/vfiod1/job/0",
                                "/org/vfiod1", "/org/vfiod1/device/pci_0000_77_00_0",
                                "/a/b/c", "/org/vfiod1/job/_1"])

    def variant(self, depth: int = 0) -> Variant:
        """A variant of a random (often wrong) type."""
        rng = self.rng
        kind = rng.randrange(9 if depth < 2 else 7)
        if kind == 0:
            return Variant("b", rng.random() < 0.5)
        if kind == 1:
            return Variant("s", self.string()[:200])
        if kind == 2:
            return Variant("i", rng.randint(-2**31, 2**31 - 1))
        if kind == 3:
            return Variant("u", rng.randint(0, 2**32 - 1))
        if kind == 4:
            return Variant("as", [self.string()[:20] for _ in range(rng.randint(0, 3))])
        if kind == 5:
            return Variant("ay", bytes(rng.randrange(256) for _ in range(rng.randint(0, 16))))
        if kind == 6:
            return Variant("d", rng.choice([0.0, -1.5, 1e308, float("inf")]))
        if kind == 7:
            return Variant("v", self.variant(depth + 1))
        return Variant("a{sv}", {self.string()[:10]: self.variant(depth + 1)})

    def options(self) -> dict[str, Variant]:
        """An a{sv} with at least one option vfiod must refuse (unknown, or of a wrong
        type): an a{sv} of valid options would make a real call."""
        rng = self.rng
        out: dict[str, Variant] = {}
        for _ in range(rng.randint(0, 2)):
            out[rng.choice(OPTION_NAMES)] = self.variant()
        bad_name = rng.choice(OPTION_NAMES[:3])
        wrong = self.variant()
        while wrong.signature == "b":
            wrong = self.variant()
        out[bad_name if rng.random() < 0.5 else self.string()[:30] + "?"] = wrong
        return out

    def value(self, t: SignatureType) -> object:
        """A value of type *t* (hostile where it is a string)."""
        rng = self.rng
        token = t.token
        if token == "s":
            return self.string()
        if token == "o":
            return self.object_path()
        if token == "g":
            return rng.choice(["", "s", "a{sv}", "(ii)"])
        if token == "b":
            return rng.random() < 0.5
        if token in "ynqiuxt":
            bits = {"y": 8, "n": 16, "q": 16, "i": 32, "u": 32, "x": 64, "t": 64}[token]
            signed = token in "nix"
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            return rng.choice([lo, hi, 0, 1, rng.randint(lo, hi)])
        if token == "d":
            return rng.choice([0.0, -1.0, 1e300, float("nan")])
        if token == "v":
            return self.variant()
        if token == "h":
            raise ValueError("no file descriptors")
        if token == "(":
            return [self.value(c) for c in t.children]
        if token == "a":
            child = t.children[0]
            if child.token == "{":
                if child.signature == "{sv}":
                    return self.options()
                key, val = child.children
                return {self.value(key): self.value(val) for _ in range(rng.randint(0, 3))}
            if child.token == "y":
                return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            return [self.value(child) for _ in range(rng.randint(0, 4))]
        raise ValueError(f"no hostile value for {token!r}")

    def body(self, signature: str) -> list[object]:
        """A body for *signature*."""
        return [self.value(t) for t in SignatureTree(signature).types]


def call_message(method: Method, signature: str, body: list[object],
                 no_reply: bool = False) -> Message:
    """A method call message to vfiod."""
    from dbus_fast import MessageFlag

    return Message(destination=BUS_NAME, path=method.path, interface=method.interface,
                   member=method.name, signature=signature, body=body,
                   flags=MessageFlag.NO_REPLY_EXPECTED if no_reply else MessageFlag.NONE)


def plausible(t: SignatureType, marker: str = "0000:06:00.0") -> object:
    """A well-formed value of type *t* that a real call could use (a real device, no
    options): what an unprivileged caller must be refused."""
    token = t.token
    if token == "s":
        return marker
    if token == "o":
        return "/org/vfiod1/job/1"
    if token == "g":
        return "s"
    if token == "b":
        return False
    if token in "ynqiuxt":
        return 1
    if token == "d":
        return 1.0
    if token == "v":
        return Variant("s", marker)
    if token == "(":
        return [plausible(c, marker) for c in t.children]
    if token == "a":
        child = t.children[0]
        if child.token == "{":
            return {}
        if child.token == "y":
            return b""
        return [plausible(child, marker)]
    raise ValueError(f"no value for {token!r}")


def plausible_body(signature: str, marker: str = "0000:06:00.0") -> list[object]:
    """A well-formed body for *signature*."""
    return [plausible(t, marker) for t in SignatureTree(signature).types]
