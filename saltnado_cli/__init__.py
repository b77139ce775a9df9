"""saltnado_cli: the ``saltnado`` program — ``serve`` (on trio or asyncio, one
process or ``num_processes``) and ``demo`` (a private master + minion and the
server in front)."""

from .main import main

__all__ = ["main"]
