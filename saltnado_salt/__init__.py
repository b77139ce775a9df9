"""saltnado_salt: the Salt side shared by every binding (no event loop here).

* :class:`SaltBridge` runs the core's Salt call descriptions with Salt's own
  classes; bindings call it from worker threads.
* :func:`load_master_opts` reads a master config the way salt-api does.
* :class:`PrivateSalt` starts a real private master + minion (demo, tests, benchmarks).
"""

from .bridge import SaltBridge, load_master_opts

__all__ = ["SaltBridge", "load_master_opts"]
