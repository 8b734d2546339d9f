"""The simulator server and the feed source adapter, talking over real WebSockets on 127.0.0.1."""

import asyncio
import json
import threading
import time

import pytest
import websocket
from websockets.asyncio.server import serve

from kakarot_workers.sources.feed import FeedSource, parse_trade
from kakarot_workers.tools.market import Market, token_address
from kakarot_workers.tools.simulator import FEED_MAX_TOKENS, SimulatorServer


def _collect(source: FeedSource, count: int, timeout_s: float = 10.0) -> list:
    stop = threading.Event()
    events, deadline = [], time.monotonic() + timeout_s
    for event in source.events(stop):
        if event is not None:
            events.append(event)
        if len(events) >= count or time.monotonic() > deadline:
            stop.set()
    return events


def test_feed_source_receives_only_its_tokens_from_the_simulator():
    market = Market.with_tokens(seed=5, count=20)
    mine = [token_address(5, i) for i in range(5)]
    with SimulatorServer(market, rate=2000, record=True) as sim:
        events = _collect(FeedSource(sim.url, "bsc", mine), 100)
    assert len(events) == 100
    assert {e.ca for e in events} <= set(mine)
    delivered = {(t.tx_hash, t.log_index): t for t in sim.delivered_snapshot()}
    for event in events:  # every field maps from what the simulator sent
        trade = delivered[(event.tx_hash, event.log_index)]
        assert (event.side, event.amount_usd, event.block_number, event.symbol) == (
            trade.side,
            trade.amount_usd,
            trade.block_number,
            trade.symbol,
        )
        assert event.price_usd == pytest.approx(trade.price_usd)
        assert event.market_cap_usd == pytest.approx(trade.market_cap_usd)


def test_simulator_rate_is_controlled():
    with SimulatorServer(Market.with_tokens(seed=1, count=10), rate=400) as sim:
        time.sleep(1.0)  # the rate is what is measured: count what one second produces
        generated = sim.generated
    assert 250 < generated < 600


def test_simulator_protocol_errors():
    with SimulatorServer(Market.with_tokens(seed=1, count=1), rate=1) as sim:
        conn = websocket.create_connection(sim.url, timeout=5)
        try:
            conn.send("not json")
            assert "expected a JSON object" in json.loads(conn.recv())["message"]
            conn.send(
                json.dumps(
                    {
                        "op": "subscribe",
                        "tokens": [f"0x{i:040x}" for i in range(FEED_MAX_TOKENS + 1)],
                    }
                )
            )
            assert "at most 99 tokens" in json.loads(conn.recv())["message"]
            conn.send(json.dumps({"op": "dance"}))
            assert "unknown op 'dance'" in json.loads(conn.recv())["message"]
            conn.send(json.dumps({"op": "subscribe", "tokens": [token_address(1, 0)]}))
            assert json.loads(conn.recv()) == {"type": "subscribed", "count": 1}
        finally:
            conn.close()


GOOD_TRADE = {
    "type": "trade",
    "token": "0x" + "a" * 40,
    "txHash": "0x" + "1" * 64,
    "logIndex": 0,
    "timestamp": int(time.time() * 1000),
    "side": "buy",
    "priceUsd": 1.5,
    "volumeUsd": 300,
}


class ScriptedFeed:
    """A feed that plays one script entry per connection: (frames to send, then "close"|"hold")."""

    def __init__(self, script: list[tuple[list[str], str]]) -> None:
        self.script = list(script)
        self.connections = 0
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, conn):
        self.connections += 1
        await conn.recv()  # the subscribe
        frames, then = self.script.pop(0) if self.script else ([], "hold")
        for frame in frames:
            await conn.send(frame)
        if then == "hold":
            await self._stop.wait()  # silent, the connection open, until the feed stops

    async def _main(self):
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def test_bad_frames_are_counted_and_the_stream_goes_on_through_a_reconnect():
    second = {**GOOD_TRADE, "txHash": "0x" + "2" * 64}
    script = [
        (
            ["{broken json", json.dumps({**GOOD_TRADE, "side": "hold"}), json.dumps(GOOD_TRADE)],
            "close",
        ),
        (
            [
                '["a list"]',
                json.dumps({"type": "error", "message": "slow down"}),
                json.dumps(second),
            ],
            "hold",
        ),
    ]
    with ScriptedFeed(script) as feed:
        source = FeedSource(
            f"ws://127.0.0.1:{feed.port}", "bsc", [GOOD_TRADE["token"]], max_backoff_s=0.2
        )
        events = _collect(source, 2)
    assert [e.tx_hash for e in events] == [GOOD_TRADE["txHash"], second["txHash"]]
    assert source.stats.frames_rejected == 3
    assert source.stats.reconnects == 1
    assert feed.connections == 2


def test_silent_feed_is_treated_as_dead_and_reconnected():
    with ScriptedFeed([([], "hold"), ([json.dumps(GOOD_TRADE)], "hold")]) as feed:
        source = FeedSource(
            f"ws://127.0.0.1:{feed.port}",
            "bsc",
            [GOOD_TRADE["token"]],
            idle_timeout_s=0.5,
            max_backoff_s=0.2,
        )
        events = _collect(source, 1)
    assert len(events) == 1
    assert source.stats.reconnects == 1 and feed.connections == 2


def test_unreachable_feed_backs_off_and_stops_when_asked():
    source = FeedSource("ws://127.0.0.1:9", "bsc", ["0x" + "a" * 40], max_backoff_s=0.2)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    assert [e for e in source.events(stop) if e is not None] == []
    assert time.monotonic() - started < 3
    assert source.stats.reconnects >= 2


def test_parse_trade_maps_the_documented_fields():
    event = parse_trade({**GOOD_TRADE, "marketCapUsd": 1e6, "amount": 200, "blockNumber": 9}, "bsc")
    assert (
        event.ca,
        event.tx_hash,
        event.ts_ms,
        event.amount_usd,
        event.amount_token,
        event.market_cap_usd,
        event.block_number,
        event.chain,
    ) == (
        GOOD_TRADE["token"],
        GOOD_TRADE["txHash"],
        GOOD_TRADE["timestamp"],
        300,
        200,
        1e6,
        9,
        "bsc",
    )
    assert event.top10_holders_pct is None


def test_each_bad_field_is_rejected_alone_with_its_reason_and_the_valid_trades_go_on():
    """The bad fields an operator's feed has sent beside valid trades: every valid trade is
    yielded, in order, and every bad frame is counted under the field that was wrong."""
    deep = "[" * 100_000 + "]" * 100_000  # JSON nested too deep for the parser
    bad = [
        ({"logIndex": 10**30}, "log_index"),
        ({"timestamp": 10**18}, "ts_ms"),
        ({"txHash": 12345}, "tx_hash"),
        ({"symbol": ["PEPE"]}, "symbol"),
        ({"token": {"address": "0x" + "a" * 40}}, "ca"),
        ({"volumeUsd": 1e300}, "amount_usd"),
        ({"chain": "mars"}, "chain"),
        ({"symbol": "X" * 1_000_000}, "symbol"),
    ]
    frames = []
    valid = []
    for n, (change, _) in enumerate(bad):
        good = {**GOOD_TRADE, "txHash": f"0x{n:064x}"}
        valid.append(good["txHash"])
        frames += [json.dumps({**GOOD_TRADE, **change}), json.dumps(good)]
    frames.append(deep)
    last = {**GOOD_TRADE, "txHash": "0x" + "f" * 64}
    frames.append(json.dumps(last))
    valid.append(last["txHash"])
    with ScriptedFeed([(frames, "hold")]) as feed:
        source = FeedSource(f"ws://127.0.0.1:{feed.port}", "bsc", [GOOD_TRADE["token"]])
        events = _collect(source, len(valid))
    assert [e.tx_hash for e in events] == valid
    expected = {}
    for _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    expected["frame"] = 1
    assert dict(source.stats.take_rejects()) == expected
    assert source.stats.frames_rejected == len(bad) + 1
    assert dict(source.stats.take_rejects()) == {}, "taken once"
