"""The package's layering, checked on its source: one host layer, no import loops.

- Only the host layer (vfiod/host/) and the simulated host (vfiod/sim/) spell a /sys,
  /proc or /dev path; everything else asks vfiod.host.paths.
- Only they touch the machine with os calls (listing, reading links, stat, pidfds,
  inotify); the daemon makes no os call on the machine at all.
- No module imports, directly or through others, a module that imports it back.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vfiod"
HOST_LAYER = ("host", "sim")
MACHINE_PATH = re.compile(r"^/(sys|proc|dev)(/|$)")
#: os functions that look at or act on the machine (files, links, processes).
MACHINE_OS_CALLS = {"listdir", "scandir", "readlink", "stat", "lstat", "open", "walk",
                    "pidfd_open", "kill", "access", "realpath", "lexists", "exists",
                    "isdir", "isfile", "islink", "getmtime"}
#: The daemon's own process and environment, which are no part of the machine.
DAEMON_OS_ALLOWED = {"environ", "getpid", "_exit", "fstat"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def _os_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """``os.x`` and ``os.path.x`` attribute uses, as (line, "x")."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name) and base.id == "os":
                found.append((node.lineno, node.attr))
            elif isinstance(base, ast.Attribute) and base.attr == "path" and \
                    isinstance(base.value, ast.Name) and base.value.id == "os":
                found.append((node.lineno, node.attr))
    return found


def _is_docstring_or_message(value: str) -> bool:
    return "\n" in value or " " in value


def test_no_machine_path_is_spelt_outside_the_host_layer() -> None:
    offenders = []
    for module, path in _modules().items():
        if _layer(module) in HOST_LAYER:
            continue
        for line, value in _strings(ast.parse(path.read_text())):
            if MACHINE_PATH.match(value) and not _is_docstring_or_message(value):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}")
    assert offenders == []


def test_nothing_outside_the_host_layer_looks_at_the_machine_through_os() -> None:
    offenders = []
    for module, path in _modules().items():
        if _layer(module) in HOST_LAYER:
            continue
        tree = ast.parse(path.read_text())
        for line, name in _os_calls(tree):
            if name in MACHINE_OS_CALLS:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: os.{name}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any("inotify" in n for n in names):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: "
                                     "inotify")
    # Config files, the state directory's own files (atomicfile, journal), installed hook and
    # initramfs files, vfioctl's own stdout, the demo's vfioctl script and the private
    # bus harness's own child processes (its pidfds) are no part of the machine.
    allowed = {"vfiod/config.py", "vfiod/ctl/commands.py", "vfiod/ctl/main.py",
               "vfiod/atomicfile.py", "vfiod/journal.py",
               "vfiod/libvirt_hook.py", "vfiod/initramfs.py", "vfiod/demo.py",
               "vfiod/privatebus.py"}
    offenders = [o for o in offenders if o.split(":")[0] not in allowed]
    assert offenders == []


def test_the_daemon_makes_no_os_call_on_the_machine() -> None:
    offenders = []
    for module, path in _modules().items():
        if not module.startswith("vfiod.daemon."):
            continue
        for line, name in _os_calls(ast.parse(path.read_text())):
            if name not in DAEMON_OS_ALLOWED:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: os.{name}")
    assert offenders == []


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules this one imports (anywhere in it, TYPE_CHECKING included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n != module}
    return found


def _cycles() -> list[list[str]]:
    modules = _modules()
    known = set(modules)
    graph = {m: _imports(m, p, known) for m, p in modules.items()}
    # A package's __init__ importing its own submodules is no loop of design.
    for m in graph:
        graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_module_of_the_package_is_in_an_import_loop() -> None:
    assert _cycles() == []
