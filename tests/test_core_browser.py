"""Issue 13, bugs a browser (SaltGUI) meets: literal bytes through the core.

* ``EventSource`` sends ``Accept: text/event-stream``: ``/events`` answers it
  with the stream; its error answers stay JSON.
* ``/events`` over HTTP/1.0 (nginx's default to its backends) is close-delimited:
  no chunks, no ``Transfer-Encoding``; the close ends it (RFC 9112 §6.3).
* A missing resource is 404 whatever the ``Accept`` (SaltGUI asks for optional
  ``/static/salt-motd.txt`` with ``Accept: text/plain``).
* A Salt error that is not an outage (an undefined nodegroup) is not a 503.
"""

from __future__ import annotations

from typing import Any

import pytest

from core_literals import NOW, RECORD, TOKEN
from saltnado_core import App, EventStreams, Limits, SaltEvent, ServerConnection, Settings
from saltnado_core.messages import http_chunk, sse_chunk, unchunk
from saltnado_core.salt_calls import GetAuthList, GetToken, RunLowstate, classify_salt_error
from saltnado_core.testing import Driver

SETTINGS = Settings.from_opts(
    {
        "rest_tornado": {"port": 8000, "disable_ssl": True},
        "external_auth": {"pam": {"saltuser": [".*"]}},
        "netapi_enable_clients": ["local"],
    }
)
SALT = {GetToken: RECORD, GetAuthList: [".*"]}
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nserver: saltnado\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\n"
)
EVENT = SaltEvent("salt/test", {"a": 1})
EVENT_SSE = b'tag: salt/test\ndata: {"data": {"a": 1}, "tag": "salt/test"}\n\n'


def driver(answers: dict[type, Any] = SALT) -> tuple[Driver, EventStreams]:
    streams = EventStreams()
    return Driver(ServerConnection(Limits(), streams), App(SETTINGS), answers, now=NOW), streams


def get_events(version: bytes = b"1.1", *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET /events HTTP/" + version, b"Host: salt.example", *headers, b"", b""])


AUTH = b"X-Auth-Token: " + TOKEN.encode()


def json_answer(status: bytes, reason: bytes) -> bytes:
    """The literal JSON error response ``status`` with ``reason``."""
    body = b'{"status": "%b", "return": "%b"}' % (status, reason)
    return b"HTTP/1.1 %b\r\nserver: saltnado\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        status, len(body), body
    )


# -- EventSource: Accept: text/event-stream -------------------------------------------
@pytest.mark.parametrize("accept", [b"Accept: text/event-stream", b"Accept: */*", b"Accept: text/*"])
def test_eventsource_accept_gets_the_stream(accept: bytes) -> None:
    client, streams = driver()
    head = client.feed(get_events(b"1.1", AUTH, accept, b"Cache-Control: no-cache"))
    assert head == STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\nb\r\nretry: 400\n\r\n"
    streams.dispatch(EVENT)
    assert client.conn.data_to_send() == http_chunk(EVENT_SSE)


def test_eventsource_without_a_token_gets_a_json_401() -> None:
    client, _ = driver({GetToken: {}})
    out = client.feed(get_events(b"1.1", b"Accept: text/event-stream"))
    assert out == (
        b"HTTP/1.1 401 Unauthorized\r\nserver: saltnado\r\ncontent-type: application/json\r\n"
        b'content-length: 57\r\nwww-authenticate: Session\r\n\r\n{"status": "401 Unauthorized", "return": "Please log in"}'
    )


# -- /events over HTTP/1.0: close-delimited -------------------------------------------
def test_events_over_http_1_0_is_close_delimited() -> None:
    client, streams = driver()
    head = client.feed(get_events(b"1.0", AUTH, b"Accept: text/event-stream"))
    # RFC 9112 §6.3: no Content-Length, no Transfer-Encoding; h11 says it will close.
    assert head == STREAM_HEAD + b"Connection: close\r\n\r\nretry: 400\n"
    streams.dispatch(EVENT)
    streams.dispatch(SaltEvent("x" * 300, {}))  # a chunk size of more than one hex digit
    streams.keepalive()
    assert client.conn.data_to_send() == (
        EVENT_SSE + b'tag: ' + b"x" * 300 + b'\ndata: {"data": {}, "tag": "' + b"x" * 300 + b'"}\n\n'
        + b": keep-alive\n\n"
    )
    client.conn.close()
    assert client.conn.data_to_send() == b""  # the end of the stream is the close: no last chunk
    assert client.conn.finished


def test_events_over_http_1_0_byte_by_byte() -> None:
    client, streams = driver()
    raw = get_events(b"1.0", AUTH)
    head = client.feed(*(raw[i : i + 1] for i in range(len(raw))))
    assert head == STREAM_HEAD + b"Connection: close\r\n\r\nretry: 400\n"
    streams.dispatch(EVENT)
    assert client.conn.data_to_send() == EVENT_SSE


def test_events_over_http_1_1_still_ends_with_the_last_chunk() -> None:
    client, streams = driver()
    client.feed(get_events(b"1.1", AUTH))
    streams.dispatch(EVENT)
    client.conn.close()
    assert client.conn.data_to_send() == http_chunk(EVENT_SSE) + b"0\r\n\r\n"


def test_unchunk_takes_whole_chunks_apart() -> None:
    tricky = b"a\r\n0\r\n\r\n" * 20  # CRLFs and a last-chunk look-alike inside the data
    assert unchunk(http_chunk(tricky) + sse_chunk("t", b"{}")) == tricky + b"tag: t\ndata: {}\n\n"
    assert unchunk(b"") == b""


# -- 404 whatever the Accept ----------------------------------------------------------
@pytest.mark.parametrize("path", [b"/static/salt-motd.txt", b"/static/salt-auth.txt", b"/static/minions.txt"])
@pytest.mark.parametrize("accept", [b"text/plain", b"text/html"])
def test_a_missing_resource_is_404_whatever_the_accept(path: bytes, accept: bytes) -> None:
    client, _ = driver()
    out = client.feed(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n")
    assert out == json_answer(b"404 Not Found", b"no such resource: " + path)


def test_a_missing_resource_is_404_in_yaml_when_yaml_is_asked() -> None:
    client, _ = driver()
    out = client.feed(b"GET /static/salt-motd.html HTTP/1.1\r\nHost: x\r\nAccept: application/x-yaml\r\n\r\n")
    assert out.endswith(b"\r\n\r\n{status: 404 Not Found, return: 'no such resource: /static/salt-motd.html'}\n")


@pytest.mark.parametrize(("path", "accept"), [(b"/login", b"text/html"), (b"/", b"text/event-stream")])
def test_an_existing_resource_is_still_406_when_no_type_it_offers_is_acceptable(path: bytes, accept: bytes) -> None:
    client, _ = driver()
    out = client.feed(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 406 Not Acceptable\r\n")


# -- Salt errors that are not an outage -------------------------------------------------
class SaltException(Exception):
    """Like Salt's base exception (matched by class name along the MRO): it keeps
    only the message of what it is given (salt/exceptions.py)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(message if isinstance(message, str) else str(message))


class SaltClientError(SaltException):
    pass


class SaltInvocationError(SaltException):
    pass


class SaltReqTimeoutError(SaltException):
    pass


def wrapped(inner: BaseException, message: str | None = None) -> BaseException:
    """What Salt 3008's LocalClient.run_job raises for an error of pub():
    ``except Exception as general_exception: raise SaltClientError(general_exception)``,
    or, with ``message``, ``except SaltClientError: raise SaltClientError(message)``."""
    try:
        try:
            raise inner
        except Exception as general_exception:
            raise SaltClientError(general_exception if message is None else message)
    except SaltClientError as exc:
        return exc


NODEGROUP = "Node group x unavailable in /etc/salt/master"
NOT_CONTACTED = "The salt master could not be contacted. Is master running?"
UNREACHABLE = "The Salt master could not be reached; try again later"
RETURNER = "Master job cache returner [x] failed to verify jid. Exception details: 'jid'"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # LocalClient.run_job: `except Exception as general_exception: raise SaltClientError(general_exception)`
        (wrapped(SaltInvocationError(NODEGROUP)), (400, NODEGROUP)),
        (wrapped(SaltInvocationError(f"bad token {TOKEN}")), (400, "bad token <token>")),
        (wrapped(SaltClientError(), NOT_CONTACTED), (503, UNREACHABLE)),
        (SaltClientError(), (503, UNREACHABLE)),  # pub() finds no publisher socket
        (wrapped(SaltReqTimeoutError("Message timed out")), (503, UNREACHABLE)),
        (wrapped(OSError("Stream is closed")), (503, UNREACHABLE)),  # pub()'s transport failed
        (wrapped(KeyError("jid"), RETURNER), (500, RETURNER)),  # Salt's own message
        (wrapped(KeyError("nodegroups")), (500, "Internal error while calling Salt")),  # a bug: text for the log
    ],
)
def test_classify_salt_error(exc: BaseException, expected: tuple[int, str]) -> None:
    assert classify_salt_error(exc) == expected


def test_an_undefined_nodegroup_is_400_with_salts_message() -> None:
    low = b'{"client": "local", "tgt": "N@x", "tgt_type": "compound", "fun": "test.version"}'
    client, _ = driver({**SALT, RunLowstate: wrapped(SaltInvocationError(NODEGROUP))})
    out = client.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + AUTH
        + b"\r\nContent-Length: %d\r\n\r\n%b" % (len(low), low)
    )
    assert out == json_answer(b"400 Bad Request", NODEGROUP.encode())


def test_another_salt_error_is_the_references_string_with_tokens_masked() -> None:
    low = b'{"client": "local", "tgt": "*", "fun": "test.version"}'
    returner = f"Returner x could not fetch jid data. Exception details: token {TOKEN}"
    client, _ = driver({**SALT, RunLowstate: wrapped(KeyError("jid"), returner)})
    out = client.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + AUTH
        + b"\r\nContent-Length: %d\r\n\r\n%b" % (len(low), low)
    )
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(
        b'{"return": ["Unexpected exception while handling request: '
        b'Returner x could not fetch jid data. Exception details: token <token>"]}'
    )
