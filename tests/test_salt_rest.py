"""The REST API against the session's real salt-master and salt-minion."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

import trio
import websocket
import yaml

from conftest import RunningServer, login


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request → (status, lower-cased headers, decoded body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = {"Accept": accept, **(headers or {})}
    if token:
        hdrs["X-Auth-Token"] = token
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        hdrs["Content-Type"] = content_type
    conn.request(method, path, body=data, headers=hdrs)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    got = {k.lower(): v for k, v in response.getheaders()}
    ctype = got.get("content-type", "")
    decoded: Any = raw
    if ctype == "application/json":
        decoded = json.loads(raw)
    elif ctype == "application/x-yaml":
        decoded = yaml.safe_load(raw)
    return response.status, got, decoded


async def api(*args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    return await trio.to_thread.run_sync(lambda: call(*args, **kwargs))


async def test_local_runs_and_waits_for_returns(server: RunningServer, token: str) -> None:
    status, _, body = await api(server.port, "POST", "/", {"client": "local", "tgt": "*", "fun": "test.ping"}, token)
    assert (status, body) == (200, {"return": [{"minion1": True}]})


async def test_local_with_args_and_a_list_of_chunks(server: RunningServer, token: str) -> None:
    low = [
        {"client": "local", "tgt": "minion1", "fun": "test.echo", "arg": "hello"},  # scalar arg → list
        {"client": "local", "tgt": "minion1", "fun": "test.arg", "arg": ["a"], "kwarg": {"k": "v"}},
    ]
    status, _, body = await api(server.port, "POST", "/", low, token)
    assert status == 200
    echo, args = body["return"]
    assert echo == {"minion1": "hello"}
    assert args["minion1"]["args"] == ["a"] and args["minion1"]["kwargs"]["k"] == "v"


async def test_local_async_runner_runner_async_wheel(server: RunningServer, token: str) -> None:
    low = [
        {"client": "local_async", "tgt": "*", "fun": "test.ping"},
        {"client": "runner", "fun": "jobs.list_jobs"},
        {"client": "runner_async", "fun": "test.arg", "arg": ["x"]},
        {"client": "wheel", "fun": "key.list_all"},
        {"client": "wheel_async", "fun": "key.list_all"},
    ]
    status, _, body = await api(server.port, "POST", "/", low, token)
    assert status == 200
    local_async, runner, runner_async, wheel, wheel_async = body["return"]
    assert local_async["minions"] == ["minion1"] and local_async["jid"].isdigit()
    assert isinstance(runner, dict)
    assert runner_async["tag"] == f"salt/run/{runner_async['jid']}"
    assert wheel["data"]["success"] is True and "minion1" in wheel["data"]["return"]["minions"]
    assert wheel_async["tag"].startswith("salt/wheel/")


async def test_yaml_out_and_form_and_yaml_in(server: RunningServer, token: str) -> None:
    form = "client=local&tgt=minion1&fun=test.echo&arg=viaform"
    status, headers, body = await api(
        server.port, "POST", "/", form, token, "application/x-www-form-urlencoded", "application/x-yaml"
    )
    assert status == 200 and headers["content-type"] == "application/x-yaml"
    assert body == {"return": [{"minion1": "viaform"}]}
    doc = "- client: local\n  tgt: minion1\n  fun: test.echo\n  arg: [viayaml]\n"
    status, _, body = await api(server.port, "POST", "/", doc, token, "application/x-yaml")
    assert (status, body) == (200, {"return": [{"minion1": "viayaml"}]})


async def test_q_values_choose_the_output(server: RunningServer) -> None:
    status, headers, _ = await api(server.port, "GET", "/", accept="application/json;q=0.2, application/x-yaml")
    assert status == 200 and headers["content-type"] == "application/x-yaml"
    status, headers, body = await api(server.port, "GET", "/", accept="text/html")
    assert status == 406 and body["status"] == "406 Not Acceptable"


async def test_error_paths(server: RunningServer, token: str) -> None:
    port = server.port
    low = {"client": "local", "tgt": "*", "fun": "test.ping"}
    cases = [
        (("POST", "/", low), {}, 401),  # no token
        (("POST", "/", low, "ab" * 32), {}, 401),  # unknown token
        (("POST", "/", low, "not-a-token"), {}, 401),  # wrong shape never reaches Salt
        (("POST", "/", b"", token), {}, 400),  # empty body (the reference hangs)
        (("POST", "/", b"{oops", token), {}, 400),  # bad JSON
        (("POST", "/", b"- [", token, "application/x-yaml"), {}, 400),  # bad YAML
        (("POST", "/", b"x=1", token, "application/xml"), {}, 415),  # unsupported content type
        (("POST", "/", {"client": "nope", "fun": "test.ping"}, token), {}, 400),
        (("POST", "/", [low, {"client": "ssh", "tgt": "*", "fun": "x"}], token), {}, 400),
        (("PUT", "/"), {}, 405),
        (("GET", "/nowhere"), {}, 404),
        (("GET", "/run"), {}, 405),
        (("POST", "/minions/minion1", low, token), {}, 405),
    ]
    for args, extra, expected in cases:
        status, headers, body = await api(port, *args, **extra)
        assert status == expected, (args, status, body)
        assert headers["content-type"] == "application/json", args
        assert body["status"].startswith(str(expected)) and body["return"], (args, body)


async def test_minions_and_jobs(server: RunningServer, token: str) -> None:
    port = server.port
    status, _, body = await api(port, "GET", "/minions", token=token)
    assert status == 200 and body["return"][0]["minion1"]["id"] == "minion1"
    status, _, body = await api(port, "GET", "/minions/minion1", token=token)
    assert status == 200 and list(body["return"][0]) == ["minion1"]
    status, _, body = await api(port, "POST", "/minions", {"tgt": "minion1", "fun": "test.ping"}, token)
    assert status == 202
    [pub] = body["return"]
    assert pub["minions"] == ["minion1"]
    assert body["_links"] == {"jobs": [{"href": f"/jobs/{pub['jid']}"}]}
    status, _, body = await api(port, "POST", "/minions", {"client": "local", "tgt": "*", "fun": "test.ping"}, token)
    assert status == 400
    deadline = time.monotonic() + 30
    while True:  # the job cache is written when the minion returns
        status, _, body = await api(port, "GET", f"/jobs/{pub['jid']}", token=token)
        if body["return"][0].get("Result", {}).get("minion1") or time.monotonic() > deadline:
            break
        await trio.sleep(0.5)
    assert status == 200
    job = body["return"][0]
    assert job["jid"] == pub["jid"] and job["Function"] == "test.ping"
    assert job["Result"]["minion1"]["return"] is True
    status, _, body = await api(port, "GET", "/jobs", token=token)
    assert status == 200 and pub["jid"] in body["return"][0]


async def test_run_with_inline_credentials(server: RunningServer) -> None:
    low = {"client": "local", "tgt": "*", "fun": "test.ping", "username": "saltdev", "password": "x", "eauth": "auto"}
    status, _, body = await api(server.port, "POST", "/run", low)
    assert (status, body) == (200, {"return": [{"minion1": True}]})
    status, _, body = await api(server.port, "POST", "/run", {"client": "local", "tgt": "*", "fun": "test.ping"})
    assert (status, body) == (200, {"return": ["Failed to authenticate"]})


async def test_acl_refusal_is_failed_to_authenticate(server: RunningServer) -> None:
    nobody = (await trio.to_thread.run_sync(login, server.port, "nobody"))["token"]
    status, _, body = await api(server.port, "POST", "/", {"client": "local", "tgt": "*", "fun": "test.ping"}, nobody)
    assert (status, body) == (200, {"return": ["Failed to authenticate"]})


async def test_logout_revokes_the_token(server: RunningServer) -> None:
    token = (await trio.to_thread.run_sync(login, server.port))["token"]
    status, headers, body = await api(server.port, "POST", "/logout", token=token)
    assert status == 200 and body == {"return": "Your token has been cleared"}
    assert headers["set-cookie"].startswith("session_id=; Path=/") and "Max-Age=0" in headers["set-cookie"]
    status, _, _ = await api(server.port, "GET", "/minions", token=token)
    assert status == 401
    with_cookie = {"Cookie": f"session_id={token}"}
    status, _, _ = await api(server.port, "GET", "/jobs", headers=with_cookie)
    assert status == 401


async def test_cookie_auth(server: RunningServer, token: str) -> None:
    status, _, body = await api(server.port, "GET", "/minions/minion1", headers={"Cookie": f"a=b; session_id={token}"})
    assert status == 200 and "minion1" in body["return"][0]


async def test_a_cookie_form_post_needs_an_origin_of_ours(server: RunningServer, token: str) -> None:
    form, form_type = "client=local&tgt=minion1&fun=test.ping", "application/x-www-form-urlencoded"
    cookie = {"Cookie": f"session_id={token}"}
    forged = {**cookie, "Origin": "http://evil.example"}
    status, _, body = await api(server.port, "POST", "/", form, content_type=form_type, headers=forged)
    assert status == 403 and "cross-site request forgery" in body["return"]
    own = {**cookie, "Origin": f"http://127.0.0.1:{server.port}"}  # http.client's Host
    status, _, body = await api(server.port, "POST", "/", form, content_type=form_type, headers=own)
    assert (status, body) == (200, {"return": [{"minion1": True}]})


async def test_preflight_without_request_headers(server: RunningServer) -> None:
    status, headers, _ = await api(server.port, "OPTIONS", "/")
    assert status == 204
    assert headers["access-control-allow-methods"] == "OPTIONS, GET, POST"
    assert headers["access-control-expose-headers"] == "X-Auth-Token"


def _sse_open(port: int, token: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    buf = b""
    while b"retry: 400\n" not in buf:
        buf += sock.recv(65536)
    return sock, buf


async def test_events_stream_and_hook_without_the_token(server: RunningServer, token: str) -> None:
    def scenario() -> tuple[bytes, dict[str, Any], tuple[int, Any]]:
        sock, head = _sse_open(server.port, token)
        ws = websocket.create_connection(server.ws_url(token), timeout=30)
        ws.send("websocket client ready")
        time.sleep(0.3)
        try:
            hooked = call(
                server.port, "POST", "/hook/ci/build?x=1", {"revision": "aa22"}, token,
                headers={"X-My-Secret": "s3", "X-My-Header": "h", "Cookie": f"session_id={token}"},
            )
            buf = head
            while b"salt/netapi/hook/ci/build" not in buf:
                buf += sock.recv(65536)
            while b"\n\n" not in buf.split(b"salt/netapi/hook/ci/build", 1)[1]:
                buf += sock.recv(65536)
            while True:
                message = json.loads(ws.recv())
                if message["tag"] == "salt/netapi/hook/ci/build":
                    return buf, message, (hooked[0], hooked[2])
        finally:
            ws.close()
            sock.close()

    buf, message, (status, answer) = await trio.to_thread.run_sync(scenario)
    assert (status, answer) == (200, {"success": True})
    head, _, body = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-type: text/event-stream" in head.lower() and b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"b\r\nretry: 400\n\r\n")
    sse = body.split(b"tag: salt/netapi/hook/ci/build\ndata: ", 1)[1].split(b"\n\n", 1)[0]
    assert json.loads(sse) == message  # the same JSON on both streams
    data = message["data"]
    assert data["post"] == {"revision": "aa22"} and data["get"] == {"x": "1"}
    assert data["headers"]["X-My-Header"] == "h" and data["headers"]["Content-Type"] == "application/json"
    assert "X-My-Secret" not in data["headers"]  # credential-like names are not broadcast either
    assert token not in json.dumps(data)  # X-Auth-Token and Cookie are not broadcast


async def test_events_needs_a_token_and_no_query(server: RunningServer, token: str) -> None:
    status, _, _ = await api(server.port, "GET", "/events")
    assert status == 401
    status, _, body = await api(server.port, "GET", f"/events?token={token}")
    assert status == 400 and "query" in body["return"]
