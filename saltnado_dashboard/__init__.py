"""saltnado's own live page: static files shipped in the package (no build step,
nothing fetched from outside), served at ``dashboard_path`` when ``dashboard: True``."""

from __future__ import annotations

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent / "static"  # index.html and what it loads

__all__ = ["DIRECTORY"]
