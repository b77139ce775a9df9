"""Reading a file to serve, as an effect: the core says which file, a binding reads it.

A static-file handler (:mod:`saltnado_core.static`) yields a :class:`ReadFile`,
as a REST handler yields a Salt call (:mod:`saltnado_core.salt_calls`); the
runtime runs it in a worker thread (``saltnado_runtime.files.StaticFiles``) and
sends back a :class:`FileContent`, or a :class:`FileRefusal` saying why there is
none. The core itself never opens a file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReadFile:
    """Read ``name`` in ``directory`` → :class:`FileContent` or :class:`FileRefusal`.

    ``name`` is relative, ``/``-separated and already checked by the core (no
    empty, ``.`` or ``..`` segment, no backslash, no NUL). With ``confined`` (the
    name came from the client) the reader refuses a file whose real path, symlinks
    resolved, is not inside the real ``directory``; a file named by the operator's
    config (``app``, ``favicon``) may be a symlink to anywhere. A file of more than
    ``max_bytes`` is :attr:`FileRefusal.TOO_LARGE`, and is not read."""

    directory: str
    name: str
    max_bytes: int
    confined: bool = True


@dataclass(frozen=True, slots=True)
class FileContent:
    """A regular file's bytes and what identifies its version. ``data`` may be
    the very object every other client of that version gets (the runtime keeps a
    bounded cache of them): it must never be changed, only sliced."""

    data: bytes = field(repr=False)
    inode: int
    mtime_ns: int

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """A strong entity tag (RFC 9110 §8.8.3), quoted: the version's inode,
        modification time and size, so a file replaced or rewritten gets a new one."""
        return f'"{self.inode:x}-{self.mtime_ns:x}-{self.size:x}"'


class FileRefusal(enum.Enum):
    """Why a :class:`ReadFile` has no content; the value is the client's reason."""

    MISSING = "no such file"  # absent, unreadable, not a regular file, or outside its directory
    TOO_LARGE = "the file is larger than the server's static_max_file_bytes limit"


FileAnswer = FileContent | FileRefusal

__all__ = ["FileAnswer", "FileContent", "FileRefusal", "ReadFile"]
