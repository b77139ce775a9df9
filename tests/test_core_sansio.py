"""The core does no I/O and keeps no time: checked on the AST of every module.

The checker parses source (so comments, strings and docstrings that mention
``socket`` or ``time.time()`` cannot fool it) and is itself tested on small
bad sources, so a checker that silently accepts everything would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import saltnado_core

CORE_DIR = Path(saltnado_core.__file__).parent

FORBIDDEN_MODULES = frozenset(
    {
        "socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "trio",
        "threading",
        "subprocess",
        "tornado",
        "salt",
    }
)

# (module, attribute) pairs that read a clock.
CLOCK_CALLS = frozenset(
    {
        ("time", "time"),
        ("time", "time_ns"),
        ("time", "monotonic"),
        ("time", "monotonic_ns"),
        ("time", "perf_counter"),
        ("time", "perf_counter_ns"),
        ("datetime", "now"),
        ("datetime", "utcnow"),
        ("datetime", "today"),
        ("date", "today"),
    }
)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` → ``["a", "b", "c"]``; None for anything that is not a plain name chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def violations(source: str, filename: str = "<string>") -> list[str]:
    """Every forbidden import or clock call in ``source``, as ``"file:line: what"``."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    # Names bound by ``from time import time`` / ``from datetime import datetime`` etc.,
    # so that ``monotonic()`` or ``datetime.now()`` are recognised after such imports.
    clock_aliases: dict[str, tuple[str, str]] = {}
    module_aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in FORBIDDEN_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
                module_aliases[alias.asname or _top(alias.name)] = (
                    alias.name if alias.asname else _top(alias.name)
                )
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and _top(module) in FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno}: from {module} import ...")
            if node.level == 0:
                for alias in node.names:
                    bound = alias.asname or alias.name
                    if (_top(module), alias.name) in CLOCK_CALLS:
                        clock_aliases[bound] = (_top(module), alias.name)
                    elif _top(module) == "datetime" and alias.name in ("datetime", "date"):
                        module_aliases[bound] = alias.name
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        parts = _dotted(func)
        if parts in (["__import__"], ["importlib", "import_module"]) and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                if _top(target.value) in FORBIDDEN_MODULES:
                    found.append(f"{filename}:{node.lineno}: {'.'.join(parts)}({target.value!r})")
            else:  # a computed module name cannot be checked: refuse it
                found.append(f"{filename}:{node.lineno}: {'.'.join(parts)}(<dynamic>)")
            continue
        if isinstance(func, ast.Name) and func.id in clock_aliases:
            found.append(f"{filename}:{node.lineno}: {'.'.join(clock_aliases[func.id])}()")
            continue
        if not parts or len(parts) < 2:
            continue
        owner, attr = module_aliases.get(parts[-2], parts[-2]), parts[-1]
        if (owner, attr) in CLOCK_CALLS:
            found.append(f"{filename}:{node.lineno}: {'.'.join(parts)}()")
    return found


def core_sources() -> list[Path]:
    return sorted(CORE_DIR.rglob("*.py"))


def test_core_modules_are_found() -> None:
    names = {p.name for p in core_sources()}
    # A checker that scanned nothing would pass vacuously.
    assert {"__init__.py", "http.py", "websocket.py", "eventbus.py", "connection.py"} <= names


@pytest.mark.parametrize("path", core_sources(), ids=lambda p: p.name)
def test_core_module_does_no_io_and_reads_no_clock(path: Path) -> None:
    assert violations(path.read_text("utf-8"), path.name) == []


# -- the checker itself --------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import ssl",
        "import select",
        "import selectors",
        "import asyncio",
        "import trio",
        "import threading",
        "import subprocess",
        "import tornado",
        "import salt",
        "import os, socket",
        "import socket as s",
        "import asyncio.streams",
        "import salt.utils.event",
        "import tornado.web as web",
        "from socket import socket",
        "from asyncio import get_event_loop",
        "from trio.lowlevel import checkpoint",
        "from salt.utils import event",
        "from tornado import ioloop",
        "from threading import Thread",
        "def f():\n    import trio\n",
        "if False:\n    import subprocess\n",
        "try:\n    import ssl\nexcept ImportError:\n    pass\n",
        "sock = __import__('socket')",
        "import importlib\nmod = importlib.import_module('trio.lowlevel')",
        "import importlib\nname = 'sel' + 'ect'\nmod = importlib.import_module(name)",
    ],
)
def test_checker_flags_forbidden_imports(source: str) -> None:
    assert len(violations(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "import time\nt = time.time()",
        "import time\nt = time.monotonic()",
        "import time\nt = time.perf_counter()",
        "import time as clock\nt = clock.monotonic()",
        "from time import time\nt = time()",
        "from time import monotonic as m\nt = m()",
        "from time import perf_counter\nt = perf_counter()",
        "import datetime\nt = datetime.datetime.now()",
        "from datetime import datetime\nt = datetime.now()",
        "from datetime import datetime as dt\nt = dt.now()",
        "def f():\n    import time\n    return time.time()\n",
    ],
)
def test_checker_flags_clock_calls(source: str) -> None:
    assert len(violations(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "# import socket\n# time.time()\n",
        '"""We never import socket, nor call time.time()."""\n',
        "x = 'import trio; time.monotonic()'\n",
        "import socketserver_like_name_is_not_socket as x\n",
        "from .salt_calls import GetToken\n",  # relative: the core's own salt_calls module
        "import msgpack\nimport h11\nimport wsproto\n",
        "def f(now: float) -> float:\n    return now + 1\n",
        "import time\nx = time.sleep\n",  # referenced, never a clock read
    ],
)
def test_checker_accepts_clean_sources(source: str) -> None:
    assert violations(source) == []


def test_checker_reports_file_and_line() -> None:
    assert violations("import os\n\nimport socket\n", "bad.py") == ["bad.py:3: import socket"]
