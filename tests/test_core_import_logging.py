"""Importing saltnado configures no logging: the host program owns it.

A library that adds a handler, a filter or a level when imported changes what an
embedding program logs before it has made a single object (``saltnado_runtime``
used to attach its token filter at import; ``Service.__init__`` does it now).
Each package's modules are imported in a fresh interpreter, so nothing this test
run imported or configured hides an import-time change; the checker is itself
tested on a module that does configure logging, so a checker that accepts
everything fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGES = ("saltnado_core", "saltnado_runtime", "saltnado_salt", "saltnado_trio", "saltnado_asyncio", "saltnado_cli")

# Run in the fresh interpreter: argv names packages (every module in them is
# imported) or plain modules; prints what importing them changed, as JSON.
CHECK = r"""
import importlib, json, logging, pkgutil, sys

def state():
    loggers = {"": logging.getLogger()}
    loggers.update((name, lg) for name, lg in logging.Logger.manager.loggerDict.items()
                   if isinstance(lg, logging.Logger))
    return {
        name: (lg.level, [repr(h) for h in lg.handlers], [repr(f) for f in lg.filters], lg.propagate, lg.disabled)
        for name, lg in loggers.items()
    }, (logging.Logger.manager.disable, repr(logging.getLoggerClass()), repr(logging.getLogRecordFactory()))

UNTOUCHED = (logging.NOTSET, [], [], True, False)  # what logging.getLogger gives a new name
before, before_globals = state()
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        importlib.import_module(info.name)
after, after_globals = state()
changes = [f"logger {name or 'root'!r}: {before.get(name, UNTOUCHED)} -> {now}"
           for name, now in after.items() if now != before.get(name, UNTOUCHED)]
if after_globals != before_globals:
    changes.append(f"logging module: {before_globals} -> {after_globals}")
print(json.dumps(changes))
"""


def import_changes(*modules: str, path: Path | None = None) -> list[str]:
    """What importing ``modules`` (every module of a package) in a fresh interpreter changes in logging."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", CHECK, *modules], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    changes: list[str] = json.loads(result.stdout.splitlines()[-1])
    return changes


def test_importing_saltnado_leaves_logging_untouched() -> None:
    assert import_changes(*PACKAGES) == []


def test_the_checker_sees_a_module_that_configures_logging(tmp_path: Path) -> None:
    (tmp_path / "configures_logging.py").write_text(
        "import logging\n"
        "logging.getLogger('saltnado').addFilter(logging.Filter('x'))\n"
        "logging.getLogger('other').setLevel(logging.INFO)\n"
        "logging.getLogger().addHandler(logging.NullHandler())\n"
    )
    (tmp_path / "quiet_logging.py").write_text("import logging\nlog = logging.getLogger('quiet')\n")
    changes = import_changes("configures_logging", "quiet_logging", path=tmp_path)
    assert [change.split(":")[0] for change in changes] == ["logger 'root'", "logger 'saltnado'", "logger 'other'"]
