"""saltnado_asyncio: the saltnado server on asyncio, and the API to embed it.

The same contract as the trio binding over the same core objects; host
programs that already run an asyncio loop start it inside that loop::

    async with Server(settings, master_opts) as server:
        async for event in server.hub.subscribe("salt/job/"):
            ...

Needs Python 3.11+ (``asyncio.TaskGroup``, ``asyncio.timeout``).
"""

from .server import Server

__all__ = ["Server"]
