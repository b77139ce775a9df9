"""Settings from a master's options, and the token checks that depend on them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from saltnado_core import ConfigError, Limits, Settings, Timeouts, TokenStatus, check_token
from saltnado_core.config import KNOWN_KEYS, block_values, unknown_key_warnings
from saltnado_core.formatted import SNAPSHOT_SLACK
from saltnado_core.tokens import is_token_shaped, redact_path, same_token

PLAIN = {"rest_tornado": {"port": 8000, "disable_ssl": True}}


# -- Settings.from_opts ----------------------------------------------------------


def test_minimal_plain_http_config() -> None:
    settings = Settings.from_opts(PLAIN)
    assert settings == Settings(port=8000, disable_ssl=True)
    assert settings.limits == Limits()
    assert settings.hash_type == "sha256"
    assert settings.sock_dir == "/var/run/salt/master"


def test_full_config() -> None:
    opts: dict[str, Any] = {
        "rest_tornado": {
            "port": "8443",
            "address": "127.0.0.1",
            "ssl_crt": "/etc/pki/api.crt",
            "ssl_key": "/etc/pki/api.key",
            "websockets": True,
            "debug": True,
            "cors_origin": ["https://a.example", "https://b.example"],
            "max_body_bytes": 4096,
            "outbox_max_messages": "50",
        },
        "sock_dir": "/run/salt/master",
        "hash_type": "sha512",
        "external_auth": {"pam": {"saltuser": [".*"]}},
        "netapi_enable_clients": ["wheel", "local", "ssh", "runner_async"],
    }
    settings = Settings.from_opts(opts)
    assert settings == Settings(
        port=8443,
        address="127.0.0.1",
        disable_ssl=False,
        ssl_crt="/etc/pki/api.crt",
        ssl_key="/etc/pki/api.key",
        websockets=True,
        debug=True,
        cors_origin=["https://a.example", "https://b.example"],
        sock_dir="/run/salt/master",
        hash_type="sha512",
        external_auth={"pam": {"saltuser": [".*"]}},
        netapi_enable_clients=("wheel", "local", "ssh", "runner_async"),
        limits=Limits(max_body_bytes=4096, outbox_max_messages=50),
    )
    # Only clients saltnado supports, in its own order; "ssh" is not one of them.
    assert settings.enabled_clients == ("local", "runner_async", "wheel")


@pytest.mark.parametrize(
    "opts",
    [{}, {"rest_tornado": None}, {"rest_tornado": "yes"}, {"rest_tornado": [8000]}, {"rest_cherrypy": None}],
)
def test_missing_block(opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="rest_tornado"):
        Settings.from_opts(opts)


def test_missing_port() -> None:
    with pytest.raises(ConfigError, match="port.*required"):
        Settings.from_opts({"rest_tornado": {"disable_ssl": True}})


@pytest.mark.parametrize("port", ["http", None, [8000], 65536, -1])
def test_bad_port(port: Any) -> None:
    with pytest.raises(ConfigError, match="port"):
        Settings.from_opts({"rest_tornado": {"port": port, "disable_ssl": True}})


@pytest.mark.parametrize("block", [{"port": 8000}, {"port": 8000, "ssl_key": "/k"}, {"port": 8000, "ssl_crt": ""}])
def test_tls_without_certificate(block: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="ssl_crt"):
        Settings.from_opts({"rest_tornado": block})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("hash_type", ["nope", "sha257", "shake_128"])
def test_bad_hash_type(hash_type: str) -> None:
    with pytest.raises(ConfigError, match="hash_type"):
        Settings.from_opts({**PLAIN, "hash_type": hash_type})


@pytest.mark.parametrize(("hash_type", "length"), [("md5", 32), ("sha1", 40), ("sha256", 64), ("sha512", 128)])
def test_token_length(hash_type: str, length: int) -> None:
    assert Settings.from_opts({**PLAIN, "hash_type": hash_type}).token_length == length


def test_bad_limit_value() -> None:
    with pytest.raises(ConfigError, match="max_header_bytes"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": True, "max_header_bytes": "16k"}})


def test_limit_and_timeout_defaults() -> None:
    limits = Settings.from_opts(PLAIN).limits
    assert (limits.max_header_bytes, limits.max_header_count, limits.max_body_bytes) == (16384, 100, 1048576)
    assert (limits.max_ws_message_bytes, limits.max_connections) == (65536, 15_000)
    assert limits.timeouts == Timeouts(
        handshake_timeout=10, header_timeout=10, keepalive_timeout=60, ws_ping_interval=20, ws_pong_timeout=20,
        shutdown_timeout=10,
    )


def test_every_limit_and_timeout_is_a_config_key() -> None:
    block = {
        "port": 8000, "disable_ssl": True,
        "max_header_count": 20, "max_connections": "500",
        "handshake_timeout": 3, "header_timeout": "2.5", "keepalive_timeout": 0,
        "ws_ping_interval": 5, "ws_pong_timeout": 7.5, "shutdown_timeout": 2,
    }
    limits = Settings.from_opts({"rest_tornado": block}).limits
    assert limits == Limits(
        max_header_count=20,
        max_connections=500,
        timeouts=Timeouts(
            handshake_timeout=3, header_timeout=2.5, keepalive_timeout=0, ws_ping_interval=5, ws_pong_timeout=7.5,
            shutdown_timeout=2,
        ),
    )


@pytest.mark.parametrize("value", [-1, "soon", None, True, float("inf"), float("nan"), [10]])
def test_bad_timeout(value: Any) -> None:
    with pytest.raises(ConfigError, match="'rest_tornado: header_timeout' must be a number of seconds >= 0"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": True, "header_timeout": value}})


@pytest.mark.parametrize("key", ["max_connections", "max_header_count", "max_body_bytes", "outbox_max_messages"])
def test_limits_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"'rest_tornado: {key}' must be at least 1, got 0"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": True, key: 0}})


def test_webhook_headers_are_lower_cased_names() -> None:
    assert Settings.from_opts(PLAIN).webhook_headers is None
    block = {**PLAIN["rest_tornado"], "webhook_headers": ["X-GitHub-Event", "X-Hub-Signature-256"]}
    assert Settings.from_opts({"rest_tornado": block}).webhook_headers == ("x-github-event", "x-hub-signature-256")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("X-GitHub-Event", "must be a list of header names, got 'X-GitHub-Event'"),
        ({"X-GitHub-Event": 1}, "must be a list of header names"),
        (["X GitHub Event"], "holds 'X GitHub Event', which is not a header name"),
        (["X-Evil\r\nSet-Cookie"], "which is not a header name"),
        ([7], "holds 7, which is not a header name"),
        (["X-Auth-Token"], "may not list X-Auth-Token: it carries the caller's session token"),
        (["cookie"], "may not list cookie"),
    ],
)
def test_bad_webhook_headers(value: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=f"'rest_tornado: webhook_headers' (holds .*, )?{re.escape(error)}"):
        Settings.from_opts({"rest_tornado": {**PLAIN["rest_tornado"], "webhook_headers": value}})


def test_websocket_ping_budget_is_a_config_key() -> None:
    plain = {"port": 8000, "disable_ssl": True}
    assert Settings.from_opts({"rest_tornado": plain}).limits.max_ws_pings_per_second == 10
    limits = Settings.from_opts({"rest_tornado": {**plain, "max_ws_pings_per_second": "3"}}).limits
    assert limits.max_ws_pings_per_second == 3
    with pytest.raises(ConfigError, match="'rest_tornado: max_ws_pings_per_second' must be at least 1, got 0"):
        Settings.from_opts({"rest_tornado": {**plain, "max_ws_pings_per_second": 0}})


def test_no_netapi_clients_enabled_by_default() -> None:
    assert Settings.from_opts(PLAIN).enabled_clients == ()


# -- tokens ----------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("record", "status"),
    [
        ({"token": "t", "start": NOW - 10, "expire": NOW + 100, "name": "u", "eauth": "pam"}, TokenStatus.VALID),
        ({"expire": NOW + 0.001}, TokenStatus.VALID),
        ({"expire": int(NOW) + 1}, TokenStatus.VALID),
        ({"expire": NOW}, TokenStatus.EXPIRED),  # expiry is exclusive
        ({"expire": NOW - 1, "name": "u"}, TokenStatus.EXPIRED),
        ({}, TokenStatus.UNKNOWN),  # get_tok's answer for unknown or deleted tokens
        (None, TokenStatus.UNKNOWN),
        ({"name": "u"}, TokenStatus.UNKNOWN),
        ({"expire": None}, TokenStatus.UNKNOWN),
        ({"expire": "9999999999"}, TokenStatus.UNKNOWN),
        ({"expire": True}, TokenStatus.UNKNOWN),
        ({"expire": [NOW + 100]}, TokenStatus.UNKNOWN),
    ],
)
def test_check_token(record: Any, status: TokenStatus) -> None:
    assert check_token(record, NOW) is status


def test_is_token_shaped() -> None:
    assert is_token_shaped("a" * 64, 64)
    assert is_token_shaped("0123456789abcdefABCDEF" + "0" * 42, 64)
    assert not is_token_shaped("a" * 63, 64)
    assert not is_token_shaped("a" * 65, 64)
    assert not is_token_shaped("g" * 64, 64)
    assert not is_token_shaped("", 64)


def test_same_token() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("abc", "abcd")


def test_redact_path() -> None:
    token = "0f" * 32
    assert redact_path(f"/all_events/{token}", 64) == "/all_events/<token>"
    assert redact_path(f"/all_events/{token}?x=1", 64) == "/all_events/<token>?x=1"
    assert redact_path(f"/formatted_events/{token.upper()}/", 64) == "/formatted_events/<token>/"
    # Elsewhere only the master's token shape is masked; after a websocket route, anything.
    assert redact_path(f"/hook/{token}0", 64) == f"/hook/{token}0"
    assert redact_path(f"/hook/{token}", 64) == "/hook/<token>"
    assert redact_path(f"/all_events/{token}0", 64) == "/all_events/<token>"
    assert redact_path("/all_events/", 64) == "/all_events/"
    assert redact_path("/jobs/20240101120000123456", 64) == "/jobs/20240101120000123456"
    assert redact_path(f"/all_events/{'a' * 32}", 32) == "/all_events/<token>"
    assert redact_path("/", 64) == "/"
    # Percent-encoded (the router decodes the path before matching it).
    encoded = "".join(f"%{ord(c):02x}" for c in token)
    assert redact_path(f"/minions/{encoded}", 64) == "/minions/<token>"
    # The query: secret keys whatever the value, any token-shaped value.
    assert redact_path(f"/events?token={token}", 64) == "/events?token=<token>"
    assert redact_path("/events?Token=short&x=1", 64) == "/events?Token=<token>&x=1"
    assert redact_path("/login?password=s3cret&eauth=pam", 64) == "/login?password=<token>&eauth=pam"
    assert redact_path(f"/x?a=1&b={token}&c", 64) == "/x?a=1&b=<token>&c"
    assert redact_path(f"/x?session_id={token}", 64) == "/x?session_id=<token>"


# -- /formatted_events view bounds -------------------------------------------------


def test_formatted_view_defaults_fit_the_default_outbox() -> None:
    settings = Settings.from_opts(PLAIN)
    assert settings.formatted_max_view_bytes == 4 * 1024 * 1024
    assert (settings.formatted_max_return_bytes, settings.formatted_max_job_minions) == (65536, 1000)
    assert settings.formatted_max_view_bytes + SNAPSHOT_SLACK <= settings.limits.outbox_max_bytes


def test_formatted_view_keys() -> None:
    block = {
        "port": 8000, "disable_ssl": True, "outbox_max_bytes": 1 << 20,
        "formatted_max_view_bytes": "500000", "formatted_max_return_bytes": 1000, "formatted_max_job_minions": 5,
    }
    settings = Settings.from_opts({"rest_tornado": block})
    assert (settings.formatted_max_view_bytes, settings.formatted_max_return_bytes) == (500_000, 1000)
    assert settings.formatted_max_job_minions == 5


def test_formatted_view_default_shrinks_with_the_outbox() -> None:
    settings = Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": True, "outbox_max_bytes": 1 << 20}})
    assert settings.formatted_max_view_bytes == 1 << 18  # a quarter of it


def test_a_formatted_view_larger_than_the_outbox_is_refused() -> None:
    block = {"port": 8000, "disable_ssl": True, "outbox_max_bytes": 1 << 20, "formatted_max_view_bytes": 1 << 20}
    with pytest.raises(ConfigError, match=r"'rest_tornado: formatted_max_view_bytes' \(1048576\) must be at most"):
        Settings.from_opts({"rest_tornado": block})


def test_an_outbox_too_small_for_any_view_is_refused() -> None:
    with pytest.raises(ConfigError, match="outbox_max_messages' must be at least 3"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": True, "outbox_max_messages": 2}})


@pytest.mark.parametrize("key", ["formatted_max_view_bytes", "formatted_max_return_bytes", "formatted_max_job_minions"])
def test_formatted_view_bounds_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"'rest_tornado: {key}' must be at least 1, got 0"):
        Settings.from_opts({"rest_tornado": {"port": 8000, "disable_ssl": True, key: 0}})


def test_event_history_bounds() -> None:
    base = {"port": 8000, "disable_ssl": True}
    settings = Settings.from_opts({"rest_tornado": base})
    assert (settings.event_history_max_events, settings.event_history_max_bytes) == (1000, 4 * 1024 * 1024)
    small = Settings.from_opts({"rest_tornado": {**base, "outbox_max_bytes": 10_000}})
    assert small.event_history_max_bytes == 5000  # half the outbox when that is less
    off = Settings.from_opts({"rest_tornado": {**base, "event_history_max_events": 0}})
    assert off.event_history_max_events == 0
    with pytest.raises(ConfigError, match="'rest_tornado: event_history_max_events' must be 0 .keep none. or more"):
        Settings.from_opts({"rest_tornado": {**base, "event_history_max_events": -1}})
    with pytest.raises(ConfigError, match="'rest_tornado: event_history_max_bytes. .20000. must be at most"):
        Settings.from_opts({"rest_tornado": {**base, "outbox_max_bytes": 10_000, "event_history_max_bytes": 20_000}})


# -- the keys of the rest_tornado: block ---------------------------------------------


def test_block_values_name_every_key_from_opts_reads() -> None:
    """``block_values`` read back by ``from_opts`` gives the same settings, every
    field away from its default: so KNOWN_KEYS (its keys) is what from_opts reads."""
    block = {
        "port": 8443, "address": "127.0.0.1", "ssl_crt": "/etc/pki/api.crt", "ssl_key": "/etc/pki/api.key",
        "websockets": True, "debug": True, "cors_origin": ["https://a.example"], "webhook_disable_auth": True,
        "webhook_headers": ("x-github-event",), "disable_ssl": False, "formatted_max_jobs": 7, "formatted_max_job_age": 3600,
        "formatted_max_view_bytes": 70_000, "formatted_max_return_bytes": 99, "formatted_max_job_minions": 9,
        "num_processes": 2, "metrics_disable_auth": True, "stats_disable_auth": True, "collect_stats": True, "event_history_max_events": 5, "event_history_max_bytes": 20_000, "slow_client_policy": "gap", "slow_client_close_code": 1008,
        "slow_client_close_reason": "slow", "app": "/srv/saltgui/index.html", "app_path": "/ui",
        "static": "/srv/saltgui/static", "static_path": "/ui-static", "favicon": "/srv/saltgui/favicon.ico",
        "dashboard": True, "dashboard_path": "/live", "static_max_file_bytes": 1000, "static_cache_bytes": 5000,
        "webhook_url": "/events-in", "root_prefix": "/api", "enable_sessions": False,
        "api_acl": {"users": {"alice": ["10.0.0.1"], "*": ["10.0.0.0/8"]}}, "authorized_ips": ["10.0.0.1", "::1"],
        "log_access_file": "/var/log/saltnado/access.log", "log_error_file": "/var/log/saltnado/error.log",
        "salt_threads": 100, "backlog": 30,
        # commands: false is only for a node without masters (test_core_masters.py)
        "masters": {"site1": "/etc/salt/master", "site2": "/etc/salt/site2/master"}, "default_master": "site2",
        "commands": True,
        "event_log": {
            "servers": ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"], "master": "m1", "role": "edge",
            "stream": "EV", "subject_prefix": "salt.ev", "max_msgs": 10, "max_bytes": 100, "max_age": 60.0,
            "replicas": 3, "duplicate_window": 30.0, "max_in_flight": 8, "creds": "/etc/nats/x.creds",
        },
        **{name: 90_000 + i for i, name in enumerate(Limits.__dataclass_fields__)
                                               if name not in ("overflow", "timeouts")},
        **{name: 1.5 + i for i, name in enumerate(Timeouts.__dataclass_fields__)},
    }
    settings = Settings.from_opts({"rest_tornado": block})
    assert block_values(settings) == block
    assert Settings.from_opts({"rest_tornado": block_values(settings)}) == settings
    assert KNOWN_KEYS == set(block)
    assert unknown_key_warnings({"rest_tornado": block}) == []


@pytest.mark.parametrize(
    ("key", "warning"),
    [
        ("prot", "unknown key 'rest_tornado: prot' is ignored; did you mean 'port'?"),
        ("max_body_size", "unknown key 'rest_tornado: max_body_size' is ignored; did you mean 'max_body_bytes'?"),
        ("ws_pong_timout", "unknown key 'rest_tornado: ws_pong_timout' is ignored; did you mean 'ws_pong_timeout'?"),
        ("xyzzy", "unknown key 'rest_tornado: xyzzy' is ignored"),  # nothing near it
    ],
)
def test_an_unknown_key_is_a_warning_naming_the_nearest_known_one(key: str, warning: str) -> None:
    opts = {"rest_tornado": {"port": 8000, "disable_ssl": True, key: 1}}
    Settings.from_opts(opts)  # valid all the same
    assert unknown_key_warnings(opts) == [warning]
