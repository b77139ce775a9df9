"""saltnado_runtime: what every binding runs, with no event loop of its own.

* :class:`~saltnado_runtime.service.Service` — one master's core objects, the
  request path (requests through the app, their Salt calls through the
  binding's worker threads), timers' work, the event feed's bookkeeping, logs;
* :class:`~saltnado_runtime.hub.EventHub` — in-process subscribers;
* :func:`~saltnado_runtime.tls.load_ssl_context` — the TLS context;
* :mod:`~saltnado_runtime.logs` — tokens never reach a log.
"""

from .hub import EventHub, LiveEvents, Wakeup
from .service import SaltRunner, ServedMaster, Service, Spawn
from .tls import load_ssl_context

__all__ = ["EventHub", "LiveEvents", "SaltRunner", "ServedMaster", "Service", "Spawn", "Wakeup", "load_ssl_context"]
