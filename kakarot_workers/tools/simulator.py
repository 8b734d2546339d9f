"""The built-in market-data feed: a local WebSocket server streaming simulated trades.

It speaks the feed protocol of `sources/feed.py`: a client sends
`{"op": "subscribe", "tokens": [CA, …]}` (at most 99) and then receives one `trade` frame per trade
of those tokens. Trades arrive as a Poisson process at `rate` trades/s over all tokens, whether
or not anyone listens, like a real market. Runs on its own thread and event loop, bound to
127.0.0.1, and stops by itself when asked or after `max_trades`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kakarot_workers.tools.market import Market, Trade

log = logging.getLogger(__name__)

FEED_MAX_TOKENS = 99
CLIENT_QUEUE_LIMIT = 50_000
TICK_S = 0.005
START_TIMEOUT_S = 10.0


class SimulatorServer:
    """`with SimulatorServer(Market.with_tokens(7, 200), rate=50) as sim: sim.url`."""

    def __init__(
        self,
        market: Market,
        rate: float,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = False,
        max_trades: int | None = None,
        on_trade: Callable[[Trade], None] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.market = market
        self.rate = rate
        self.host = host
        self.port = port
        self.record = record
        self.max_trades = max_trades
        self.on_trade = on_trade
        self.generated = 0
        # with record=True: trades sent to ≥1 subscriber, and trades nobody was subscribed to
        self.delivered: list[Trade] = []
        self.undelivered: list[Trade] = []
        self.dropped = 0  # frames not sent because a client fell too far behind
        self._arrivals = random.Random(f"arrivals:{market.seed}")
        self._subscribers: dict[str, set[_Client]] = {}
        self._paused = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"simulator did not start: {self._error!r}")
        log.info(
            "simulator on %s: %d tokens, %.0f trades/s",
            self.url,
            len(self.market.tokens),
            self.rate,
        )
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)
            self._thread = None

    def pause(self) -> None:
        """Stop generating trades (connections stay open)."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def subscribed_tokens(self) -> set[str]:
        with self._lock:
            return {ca for ca, clients in self._subscribers.items() if clients}

    def delivered_snapshot(self) -> list[Trade]:
        with self._lock:
            return list(self.delivered)

    def undelivered_snapshot(self) -> list[Trade]:
        with self._lock:
            return list(self.undelivered)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the event loop -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start(); the thread must not die silently
            self._error = exc
            self._ready.set()
            log.exception("simulator stopped with an error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._serve_client, self.host, self.port, max_size=2**20) as server:
            self.port = server.sockets[0].getsockname()[1] if self.port == 0 else self.port
            self._ready.set()
            generator = asyncio.create_task(self._generate())
            await self._stop.wait()
            generator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generator

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.max_trades is None or self.generated < self.max_trades:
            now = loop.time()
            if self._paused.is_set():
                next_at = now
            while next_at <= now and not self._paused.is_set():
                self._publish(self.market.next_trade())
                next_at += self._arrivals.expovariate(self.rate)
                if self.max_trades is not None and self.generated >= self.max_trades:
                    return
            await asyncio.sleep(max(0.0, min(TICK_S, next_at - loop.time())))

    def _publish(self, trade: Trade) -> None:
        self.generated += 1
        if self.on_trade is not None:
            self.on_trade(trade)
        clients = self._subscribers.get(trade.ca)
        if not clients:
            if self.record:
                with self._lock:
                    self.undelivered.append(trade)
            return
        frame = json.dumps(trade.to_feed_message(int(time.time() * 1000)))
        sent = False
        for client in list(clients):
            if client.queue.qsize() >= CLIENT_QUEUE_LIMIT:
                self.dropped += 1
                continue
            client.queue.put_nowait(frame)
            sent = True
        if sent and self.record:
            with self._lock:
                self.delivered.append(trade)

    async def _serve_client(self, connection: ServerConnection) -> None:
        client = _Client(connection)
        writer = asyncio.create_task(client.drain())
        try:
            async for raw in connection:
                reply = self._handle(client, raw)
                if reply is not None:
                    client.queue.put_nowait(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                for ca in client.tokens:
                    self._subscribers.get(ca, set()).discard(client)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _handle(self, client: _Client, raw: str | bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(raw)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            return {"type": "error", "message": "expected a JSON object with an 'op' field"}
        if op == "subscribe":
            tokens = message.get("tokens")
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                return {"type": "error", "message": "subscribe: 'tokens' must be a list of strings"}
            if len(set(tokens) | client.tokens) > FEED_MAX_TOKENS:
                return {
                    "type": "error",
                    "message": f"subscribe: at most {FEED_MAX_TOKENS} tokens per connection",
                }
            with self._lock:
                for ca in tokens:
                    self.market.add_token(ca)
                    self._subscribers.setdefault(ca, set()).add(client)
                    client.tokens.add(ca)
            return {"type": "subscribed", "count": len(client.tokens)}
        if op == "unsubscribe":
            with self._lock:
                for ca in message.get("tokens") or list(client.tokens):
                    self._subscribers.get(ca, set()).discard(client)
                    client.tokens.discard(ca)
            return {"type": "unsubscribed", "count": len(client.tokens)}
        return {"type": "error", "message": f"unknown op {op!r}"}


class _Client:
    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.tokens: set[str] = set()
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def drain(self) -> None:
        while True:
            frame = await self.queue.get()
            await self.connection.send(frame)
