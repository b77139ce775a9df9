"""Files the core asks to serve (:class:`~saltnado_core.files.ReadFile`), read in a
worker thread, and the contents kept in a bounded cache shared by every client.

The cache is what keeps many downloads of one file cheap: every client of a
version of a file — keyed by its real path, device, inode, modification time and
size, so an edited or replaced file is a new entry — gets the very same ``bytes``
object, which the connection hands to the socket in ``write_chunk_bytes`` slices
(:mod:`saltnado_core.http`): a slow reader of a 10 MiB file holds a slice, not a
copy. The least recently used entries go once the total passes
``static_cache_bytes``; a client still downloading one keeps its own reference.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections import OrderedDict

from saltnado_core import Settings
from saltnado_core.files import FileAnswer, FileContent, FileRefusal, ReadFile

log = logging.getLogger("saltnado.files")

_Key = tuple[str, int, int, int, int]  # real path, device, inode, mtime_ns, size
# O_NONBLOCK: a FIFO put where a file was does not block the worker thread on open
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK


class StaticFiles:
    """Runs :class:`ReadFile` calls (:meth:`read`, from worker threads only: it
    blocks on the filesystem), with a cache of at most ``cache_bytes`` of contents."""

    def __init__(self, cache_bytes: int = Settings().static_cache_bytes) -> None:
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[_Key, FileContent] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.reads = 0  # files read from disk (cache misses), for tests and benchmarks

    def read(self, call: ReadFile) -> FileAnswer:
        """The file ``call`` names, or why not: :attr:`FileRefusal.MISSING` when it
        does not exist, cannot be read, is not a regular file (a directory is never
        listed), or — ``call.confined`` — its real path is outside the real
        directory; :attr:`FileRefusal.TOO_LARGE` over ``call.max_bytes``."""
        if os.path.isabs(call.name) or ".." in call.name.split("/") or "\0" in call.name:
            return FileRefusal.MISSING  # the core never asks this; a second lock on the door
        real = os.path.realpath(os.path.join(call.directory, call.name))
        if call.confined:
            root = os.path.realpath(call.directory)
            if os.path.commonpath((root, real)) != root or real == root:
                return FileRefusal.MISSING  # a symlink (or ..) leading out of the mount
        try:
            info = os.stat(real)
        except OSError:
            return FileRefusal.MISSING
        if not stat.S_ISREG(info.st_mode):
            return FileRefusal.MISSING
        if info.st_size > call.max_bytes:
            return FileRefusal.TOO_LARGE
        key = (real, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        try:
            answer = self._read_file(real, call.max_bytes)
        except OSError as exc:  # unreadable (permissions, I/O error): the operator's to see
            log.warning("cannot serve %s: %s", real, exc.strerror or type(exc).__name__)
            return FileRefusal.MISSING
        if isinstance(answer, FileContent):
            self._keep((real, info.st_dev, answer.inode, answer.mtime_ns, answer.size), answer)
        return answer

    def _read_file(self, real: str, max_bytes: int) -> FileAnswer:
        """Open ``real`` (never through a symlink swapped in since it was resolved),
        check it is still a regular file of at most ``max_bytes``, read it whole."""
        fd = os.open(real, _OPEN_FLAGS)
        with os.fdopen(fd, "rb", buffering=0) as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return FileRefusal.MISSING
            if info.st_size > max_bytes:
                return FileRefusal.TOO_LARGE
            data = file.read(max_bytes + 1)  # a file growing as it is read is caught too
            while data is not None and len(data) < info.st_size:  # a short read
                more = file.read(max_bytes + 1 - len(data))
                if not more:
                    break
                data += more
        self.reads += 1
        if data is None or len(data) > max_bytes:
            return FileRefusal.TOO_LARGE if data is not None else FileRefusal.MISSING
        return FileContent(data, info.st_ino, info.st_mtime_ns)

    def _keep(self, key: _Key, content: FileContent) -> None:
        if content.size > self.cache_bytes:
            return
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = content
            self._cached_bytes += content.size
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.size

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes


def static_warnings(settings: Settings) -> list[str]:
    """What is configured to be served but cannot be, now (``static`` not a
    directory, ``app`` or ``favicon`` not a readable file), for ``check-config``
    and the start-up log: a typo is otherwise only a 404 in a browser."""
    warnings = []
    if settings.static and not os.path.isdir(settings.static):
        warnings.append(f"'{settings.dialect.value}: static' {settings.static} is not a directory: {settings.static_path} serves nothing")
    for key, path, where in (("app", settings.app, settings.app_path), ("favicon", settings.favicon, "/favicon.ico")):
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            warnings.append(f"'{settings.dialect.value}: {key}' {path} is not a readable file: {where} answers 404")
    return warnings
