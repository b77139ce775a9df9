"""What re-checking stream tokens costs, and that revocation still closes streams:
one listing of Salt's token store per tick whatever the number of tokens, a
removed token file closing its streams at the next tick without a ``get_tok``,
expiry without Salt, and a bounded ``get_tok`` rotation for stores that cannot
be listed."""

from __future__ import annotations

import math
import os
from pathlib import Path

from wsproto.frame_protocol import Opcode

from saltnado_core import EventStreams, Phase
from saltnado_core.revocation import RECHECKS_PER_TICK, TokenRecheck, TokenStore
from saltnado_core.salt_calls import GetToken, ScanTokenStore
from saltnado_salt import SaltBridge
from test_core_security import NOW, OTHER, RECORD, TOKEN, Client, frames, open_streams, ws_request, READY

MANY = {f"{i:064x}": 1 for i in range(3000)}  # 3,000 distinct stream tokens → streams holding each


def listed(recheck: TokenRecheck, tokens: dict[str, int], listing: dict[str, int]) -> None:
    """One tick of a store that is a directory: the listing, and nothing else, is asked for."""
    assert recheck.calls(tokens) == [ScanTokenStore()]
    assert recheck.done(ScanTokenStore(), listing, NOW, []) == []


def test_3000_tokens_cost_one_listing_per_tick() -> None:
    recheck = TokenRecheck()
    stamps = {token: i for i, token in enumerate(MANY)}
    for _ in range(5):  # not one get_tok per token per tick: one listing
        listed(recheck, MANY, stamps)
    assert recheck.store is TokenStore.LISTED and len(recheck) == 0


def test_a_removed_token_file_closes_its_streams_at_the_next_tick() -> None:
    streams, clients = open_streams()
    conns = [client.conn for client in clients.values()]
    recheck = TokenRecheck()
    listed(recheck, streams.tokens, {TOKEN: 1, OTHER: 2})
    # Salt's rm_token (or /logout) removes <cachedir>/tokens/<TOKEN>.p
    [scan] = recheck.calls(streams.tokens)
    closed = recheck.done(scan, {OTHER: 2}, NOW, conns)  # no GetToken asked
    assert closed == [clients[name].conn for name in ("ws1", "ws2", "formatted", "sse")]
    assert frames(clients["ws1"].conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token revoked"))]
    assert clients["sse"].conn.data_to_send() == b"0\r\n\r\n"
    assert clients["other"].conn.phase is Phase.STREAMING
    assert streams.tokens == {OTHER: 1}
    assert recheck.calls(streams.tokens) == [ScanTokenStore()]


def test_an_emptied_store_closes_every_stream() -> None:
    streams, clients = open_streams()
    recheck = TokenRecheck()
    [scan] = recheck.calls(streams.tokens)
    closed = recheck.done(scan, {}, NOW, [client.conn for client in clients.values()])  # the bank flushed
    assert len(closed) == 5 and streams.tokens == {}


def test_a_stream_opened_after_the_listing_was_asked_for_is_not_revoked_by_it() -> None:
    streams = EventStreams()
    recheck = TokenRecheck()
    [scan] = recheck.calls(streams.tokens)  # no stream yet
    late = Client(streams)  # its token's file was made after the listing began
    late.feed(ws_request("all_events") + READY)
    assert recheck.done(scan, {}, NOW, [late.conn]) == []
    assert late.conn.phase is Phase.STREAMING
    listed(recheck, streams.tokens, {TOKEN: 1})  # the next listing has it


def test_a_rewritten_token_file_is_asked_about_once() -> None:
    streams, clients = open_streams()
    conns = [client.conn for client in clients.values()]
    recheck = TokenRecheck()
    listed(recheck, streams.tokens, {TOKEN: 1, OTHER: 2})
    listed(recheck, streams.tokens, {TOKEN: 1, OTHER: 3})  # OTHER's file rewritten (a new inode)
    assert recheck.calls(streams.tokens) == [ScanTokenStore(), GetToken(OTHER)]
    assert recheck.done(GetToken(OTHER), {**RECORD, "token": OTHER, "expire": NOW - 1}, NOW, conns) == [conns[4]]
    assert frames(clients["other"].conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token expired"))]
    assert recheck.done(ScanTokenStore(), {TOKEN: 1, OTHER: 3}, NOW, conns) == []
    assert recheck.calls(streams.tokens) == [ScanTokenStore()]


def test_expiry_closes_the_stream_without_a_salt_call() -> None:
    streams, clients = open_streams()
    recheck = TokenRecheck()
    listed(recheck, streams.tokens, {TOKEN: 1, OTHER: 2})
    expiry = NOW + 100  # RECORD["expire"]
    assert not clients["ws1"].conn.expire(expiry - 0.001)
    assert all(client.conn.expire(expiry) for name, client in clients.items() if name != "http")
    assert frames(clients["ws1"].conn.data_to_send()) == [(Opcode.CLOSE, (1008, "token expired"))]
    assert streams.tokens == {}
    listed(recheck, streams.tokens, {})  # nothing to ask Salt


def test_a_failed_listing_falls_back_to_get_token_for_a_tick() -> None:
    streams, _ = open_streams()
    recheck = TokenRecheck()
    [scan] = recheck.calls(streams.tokens)
    recheck.failed(scan)  # e.g. the directory is not readable
    assert recheck.calls(streams.tokens) == [ScanTokenStore(), GetToken(TOKEN), GetToken(OTHER)]
    assert recheck.done(ScanTokenStore(), {TOKEN: 1, OTHER: 2}, NOW, []) == []
    for token in (TOKEN, OTHER):
        assert recheck.done(GetToken(token), {**RECORD, "token": token}, NOW, []) == []
    listed(recheck, streams.tokens, {TOKEN: 1, OTHER: 2})


def test_an_unlisted_store_rechecks_each_token_in_turn_at_a_bounded_rate() -> None:
    recheck = TokenRecheck()
    [scan] = recheck.calls(MANY)
    recheck.done(scan, None, NOW, [])  # rediscluster, a redis cache…: no listing
    ticks = math.ceil(len(MANY) / RECHECKS_PER_TICK)
    asked: list[str] = []
    for _ in range(ticks):
        calls = recheck.calls(MANY)
        assert len(calls) <= RECHECKS_PER_TICK and all(isinstance(call, GetToken) for call in calls)
        for call in calls:
            assert isinstance(call, GetToken)
            asked.append(call.token)
            recheck.done(call, {**RECORD, "token": call.token}, NOW, [])
    # every token once within ceil(3000 / per_tick) ticks, then round again
    assert len(set(asked[: len(MANY)])) == len(MANY) and asked[len(MANY) :] == asked[: len(asked) - len(MANY)]


# -- the bridge's half: listing a token directory (no Salt needed) ---------------------


def test_the_bridge_lists_a_localfs_token_store(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / f"{TOKEN}.p").write_bytes(b"x")
    (tokens / f"{OTHER}.p").write_bytes(b"x")
    (tokens / "tmpa1b2c3").write_bytes(b"")  # Salt's cache writing a token: not one yet
    bridge = SaltBridge({"cachedir": str(tmp_path), "master_uri": "tcp://127.0.0.1:1"})
    first = bridge.execute(ScanTokenStore())
    assert sorted(first) == sorted([TOKEN, OTHER])
    rewritten = tokens / "tmpd4e5f6"
    rewritten.write_bytes(b"y")
    os.replace(rewritten, tokens / f"{OTHER}.p")  # as salt/cache/localfs.py stores
    second = bridge.execute(ScanTokenStore())
    assert second[TOKEN] == first[TOKEN] and second[OTHER] != first[OTHER]
    (tokens / f"{TOKEN}.p").unlink()
    (tokens / f"{OTHER}.p").unlink()
    (tokens / "tmpa1b2c3").unlink()
    tokens.rmdir()  # Salt's flush of the whole bank
    assert bridge.execute(ScanTokenStore()) == {}


def test_the_bridge_does_not_list_other_token_stores(tmp_path: Path) -> None:
    for opts in ({"eauth_tokens.cache_driver": "rediscluster"}, {"cache": "redis_cache"}):
        bridge = SaltBridge({"cachedir": str(tmp_path), "master_uri": "tcp://127.0.0.1:1", **opts})
        assert bridge.execute(ScanTokenStore()) is None
