"""saltnado_trio: the saltnado server on trio (the ``saltnado`` command)."""

from .server import Server

__all__ = ["Server"]
