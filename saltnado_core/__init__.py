"""saltnado_core: the sans-IO heart of saltnado.

Pure state machines for HTTP/1.1 (h11), websockets (wsproto), routing, token
checks, the Salt event-bus codec and fan-out. No sockets, no event loop, no
clock: bindings (``saltnado_trio``, ``saltnado_asyncio``) supply those.
"""

from .app import AcceptWebSocket, App, Exchange
from .bounded import Overflow, SlowClientPolicy
from .broadcast import Broadcast, Outbox
from .config import ConfigError, Limits, Settings, Timeouts
from .connection import Phase, ServerConnection
from .eventbus import EventBusDecoder, EventBusError, SaltEvent, encode_pub_message, encode_pull_message
from .http import HTTPConnection, HTTPError, Request, Response, error_response
from .messages import all_events_frame, event_json, text_frame
from .router import Route, Router
from .salt_calls import GetToken, MakeToken, SaltCall, classify_salt_error
from .streams import EventStreams
from .tagfilter import BadTagPattern, TagFilter, glob_filter, tag_filter
from .tokens import TokenStatus, check_token
from .websocket import WebSocketSession

__all__ = [
    "AcceptWebSocket", "App", "BadTagPattern", "Broadcast", "ConfigError", "EventBusDecoder", "EventBusError",
    "Exchange", "GetToken", "HTTPConnection", "HTTPError", "Limits", "MakeToken", "Outbox",
    "Overflow", "Phase", "Request", "Response", "Route", "Router", "SaltCall", "SaltEvent",
    "EventStreams", "ServerConnection", "Settings", "SlowClientPolicy", "TagFilter", "Timeouts", "TokenStatus",
    "WebSocketSession", "all_events_frame", "check_token", "classify_salt_error", "encode_pub_message",
    "encode_pull_message", "error_response", "event_json", "glob_filter", "tag_filter", "text_frame",
]
