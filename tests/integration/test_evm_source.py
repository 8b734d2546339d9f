"""The EVM source against a real local node (anvil) running the Uniswap V2 contracts.

Every figure the source derives is checked against the chain's own numbers: the amounts we
swapped, and the reserves the pair reports after the swap.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import websockets

from kakarot_workers.settings import EvmChain
from kakarot_workers.sources import Retraction
from kakarot_workers.sources.evm import EvmSource
from tests.support.anvil import Uniswap
from tests.support.scenario import wait_for

E18 = 10**18


class Collector:
    """Runs a source in a thread and keeps what it yields."""

    def __init__(self, source: EvmSource) -> None:
        self.source = source
        self.items: list[object] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for item in self.source.events(self.stop):
            if item is not None:
                self.items.append(item)

    def __enter__(self) -> Collector:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.source.stats.live:
            assert time.monotonic() < deadline, "the source never went live"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def wait(self, count: int, timeout_s: float = 10) -> list:
        deadline = time.monotonic() + timeout_s
        while len(self.items) < count:
            assert time.monotonic() < deadline, f"got {len(self.items)} of {count} items"
            time.sleep(0.02)
        return self.items


def test_swaps_both_ways_are_decoded_and_priced_as_the_chain_says(anvil):
    uni = Uniswap.deploy(anvil)
    token, usd = uni.token(supply=10**27), uni.token()
    pair = uni.pair(token, usd, 1_000_000 * E18, 2_000_000 * E18)  # 2 USD per token
    chain = EvmChain(ws_url=anvil.ws_url, quotes={usd: 1.0})
    source = EvmSource("eth", chain, [token], {token: pair})
    with Collector(source) as seen:
        buy = uni.swap(pair, usd, 10_000 * E18)  # USD in, token out
        sell = uni.swap(pair, token, 3_000 * E18)  # token in, USD out
        first, second = seen.wait(2)

    token_is_0 = uni.token0(pair) == token
    for event, swap, side in ((first, buy, "buy"), (second, sell, "sell")):
        assert (event.tx_hash, event.log_index, event.block_number) == (
            swap.tx_hash,
            swap.log_index,
            swap.block,
        )
        assert event.side == side and event.ca == token and event.pair == pair
        r_token, r_usd = swap.reserves_after if token_is_0 else swap.reserves_after[::-1]
        assert event.price_usd == pytest.approx(r_usd / r_token, rel=1e-12)
        assert event.market_cap_usd == pytest.approx(10**9 * r_usd / r_token, rel=1e-12)
    assert first.amount_token == pytest.approx(buy.amount_out / E18, rel=1e-12)
    assert first.amount_usd == pytest.approx(buy.amount_in / E18, rel=1e-12)
    assert second.amount_token == pytest.approx(sell.amount_in / E18, rel=1e-12)
    assert second.amount_usd == pytest.approx(sell.amount_out / E18, rel=1e-12)
    assert first.price_usd > 2.0 and second.price_usd < first.price_usd  # buy up, sell down


def test_a_token_quoted_in_the_wrapped_native_is_priced_through_the_reference_pair(anvil):
    uni = Uniswap.deploy(anvil)
    token, weth, usd = uni.token(), uni.token(), uni.token()
    reference = uni.pair(weth, usd, 1_000 * E18, 3_000_000 * E18)  # 3,000 USD per WETH
    pair = uni.pair(token, weth, 500_000 * E18, 100 * E18)
    chain = EvmChain(
        ws_url=anvil.ws_url,
        quotes={usd: 1.0, weth: None},
        wrapped_native=weth,
        reference_pair=reference,
    )
    # the factory finds the pair: this target names none
    chain_with_factory = chain.model_copy(update={"factory": uni.factory})
    source = EvmSource("eth", chain_with_factory, [token], {})
    with Collector(source) as seen:
        first = uni.swap(pair, weth, 1 * E18)
        uni.swap(reference, usd, 300_000 * E18)  # WETH gets dearer
        second = uni.swap(pair, weth, 1 * E18)
        a, b = seen.wait(2)

    def weth_usd(reserves: tuple[int, int]) -> float:
        r_weth, r_usd = reserves if uni.token0(reference) == weth else reserves[::-1]
        return r_usd / r_weth

    usd_before = weth_usd(
        (1_000 * E18, 3_000_000 * E18)
        if uni.token0(reference) == weth
        else (3_000_000 * E18, 1_000 * E18)
    )
    usd_after = weth_usd(uni.reserves(reference))
    assert usd_after > usd_before
    assert a.amount_usd == pytest.approx(1 * usd_before, rel=1e-9)
    assert b.amount_usd == pytest.approx(1 * usd_after, rel=1e-9)
    for event, swap in ((a, first), (b, second)):
        r_token, r_weth = (
            swap.reserves_after if uni.token0(pair) == token else swap.reserves_after[::-1]
        )
        rate = usd_before if event is a else usd_after
        assert event.price_usd == pytest.approx(r_weth / r_token * rate, rel=1e-9)
        assert event.side == "buy"


def test_a_restart_back_fills_from_the_checkpoint_and_emits_each_swap_once(anvil):
    uni = Uniswap.deploy(anvil)
    token, usd = uni.token(), uni.token()
    pair = uni.pair(token, usd, 1_000_000 * E18, 1_000_000 * E18)
    chain = EvmChain(ws_url=anvil.ws_url, quotes={usd: 1.0})
    checkpoint = int(anvil.rpc("eth_blockNumber"), 16)
    missed = [uni.swap(pair, usd, (i + 1) * E18) for i in range(5)]  # while nobody watched
    source = EvmSource(
        "eth",
        chain,
        [token],
        {token: pair},
        checkpoint=checkpoint,
        backfill_chunk=2,
        backfill_overlap=3,
    )
    with Collector(source) as seen:
        live = [uni.swap(pair, token, (i + 1) * E18) for i in range(3)]
        items = seen.wait(8)
        # a quiet period: nothing marks "no more is coming", and a swap emitted twice would
        # show up within it
        time.sleep(0.3)
    got = [(e.tx_hash, e.log_index) for e in seen.items]
    assert got == [(s.tx_hash, s.log_index) for s in missed + live]
    assert source.progress_block >= live[-1].block - 1
    assert len(items) == 8


def test_back_filled_swaps_are_priced_at_their_own_block_when_the_reference_moved(anvil):
    """WETH moves between the checkpoint, the swaps of the outage and the restart: each
    back-filled WETH-quoted swap is priced with WETH as it stood at the swap, not at the restart
    (anvil keeps no old state: the reserves come from the `Sync` logs)."""
    uni = Uniswap.deploy(anvil)
    token, weth, usd = uni.token(), uni.token(), uni.token()
    reference = uni.pair(weth, usd, 1_000 * E18, 3_000_000 * E18)
    pair = uni.pair(token, weth, 500_000 * E18, 100 * E18)
    chain = EvmChain(
        ws_url=anvil.ws_url,
        quotes={usd: 1.0, weth: None},
        wrapped_native=weth,
        reference_pair=reference,
    )
    weth_is_0 = uni.token0(reference) == weth

    def weth_usd() -> float:  # the chain's own figure, now
        r0, r1 = uni.reserves(reference)
        return r1 / r0 if weth_is_0 else r0 / r1

    uni.swap(reference, usd, 100_000 * E18)  # the reference moves before the checkpoint too
    uni.transfer(token, uni.factory, 1)  # a block of no interest: the checkpoint
    checkpoint = int(anvil.rpc("eth_blockNumber"), 16)
    expected = []
    for i in range(4):  # the outage: WETH moves after each swap
        swap = uni.swap(pair, weth, (i + 1) * E18)
        expected.append((swap, weth_usd()))
        uni.swap(reference, usd if i % 2 == 0 else weth, (200_000 if i % 2 == 0 else 40) * E18)
    uni.swap(reference, weth, 150 * E18)  # and once more before the restart: WETH falls ~20 %
    source = EvmSource(
        "eth", chain, [token], {token: pair}, checkpoint=checkpoint, backfill_overlap=0
    )
    with Collector(source) as seen:
        items = seen.wait(4)
    token_is_0 = uni.token0(pair) == token
    for event, (swap, rate) in zip(items, expected, strict=True):
        assert event.tx_hash == swap.tx_hash
        r_token, r_weth = swap.reserves_after if token_is_0 else swap.reserves_after[::-1]
        assert event.amount_usd == pytest.approx(swap.amount_in / E18 * rate, rel=1e-9)
        assert event.price_usd == pytest.approx(r_weth / r_token * rate, rel=1e-9)
    assert abs(weth_usd() / expected[-1][1] - 1) > 0.1, "the restart's price differs"


def test_a_new_batch_is_covered_from_its_creation_not_from_its_first_subscription(anvil):
    uni = Uniswap.deploy(anvil)
    token, usd = uni.token(), uni.token()
    pair = uni.pair(token, usd, 1_000_000 * E18, 1_000_000 * E18)
    chain = EvmChain(ws_url=anvil.ws_url, quotes={usd: 1.0})
    before = uni.swap(pair, usd, 1 * E18)
    time.sleep(1.1)  # block timestamps are in seconds
    created_ms = int(time.time() * 1000)
    time.sleep(1.1)
    between = [uni.swap(pair, usd, (i + 2) * E18) for i in range(3)]  # before any consumer
    source = EvmSource("eth", chain, [token], {token: pair}, since_ms=created_ms)
    with Collector(source) as seen:
        live = uni.swap(pair, token, 1 * E18)
        seen.wait(4)
        time.sleep(0.3)
    got = [e.tx_hash for e in seen.items]
    assert got == [s.tx_hash for s in [*between, live]] and before.tx_hash not in got
    first = anvil.rpc("eth_getBlockByNumber", hex(between[0].block), False)
    assert created_ms // 1000 <= source.stats.since_ms // 1000 <= int(first["timestamp"], 16)


def test_a_batch_created_after_the_newest_block_goes_live_at_once_on_a_quiet_chain(anvil):
    uni = Uniswap.deploy(anvil)
    token, usd = uni.token(), uni.token()
    pair = uni.pair(token, usd, 1_000_000 * E18, 1_000_000 * E18)
    chain = EvmChain(ws_url=anvil.ws_url, quotes={usd: 1.0})
    time.sleep(1.1)  # no block at or after the creation: nothing to back-fill
    created_ms = int(time.time() * 1000)
    source = EvmSource("eth", chain, [token], {token: pair}, since_ms=created_ms)
    with Collector(source) as seen:  # live without waiting for a block
        swap = uni.swap(pair, usd, 1 * E18)
        seen.wait(1)
    assert [e.tx_hash for e in seen.items] == [swap.tx_hash]
    assert source.stats.since_ms == created_ms and source.stats.reconnects == 0


class RecordedNode:
    """A WebSocket JSON-RPC peer that answers `eth_subscribe` and then plays recorded frames."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _serve(self, connection) -> None:
        request = json.loads(await connection.recv())
        await connection.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))
        for frame in self.frames:
            await connection.send(frame)
        assert self._stop is not None
        await self._stop.wait()  # silent, the connection open, until the node stops

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with websockets.serve(self._serve, "127.0.0.1", 0) as server:
            self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> RecordedNode:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def test_removed_logs_retract_and_bad_frames_are_counted_and_skipped(anvil):
    uni = Uniswap.deploy(anvil)
    token, usd = uni.token(), uni.token()
    pair = uni.pair(token, usd, 1_000_000 * E18, 1_000_000 * E18)
    swap = uni.swap(pair, usd, 5 * E18)
    (entry,) = [
        e
        for e in anvil.rpc(
            "eth_getLogs",
            {"fromBlock": hex(swap.block), "toBlock": hex(swap.block), "address": pair},
        )
        if int(e["logIndex"], 16) == swap.log_index
    ]

    def note(log: dict) -> str:
        return json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "eth_subscription",
                "params": {"subscription": "0x1", "result": log},
            }
        )

    frames = [
        note({**entry, "data": "0x01", "logIndex": "0x63"}),  # a Swap too short to decode
        note({**entry, "topics": []}),  # a log with no topic
        note(entry),
        "{not json",
        json.dumps({"params": {}}),
        note({**entry, "removed": True}),
    ]
    with RecordedNode(frames) as node:
        # calls (token0, decimals, …) still go to the real node over HTTP
        chain = EvmChain(ws_url=node.url, http_url=anvil.http_url, quotes={usd: 1.0})
        source = EvmSource("eth", chain, [token], {token: pair})
        with Collector(source) as seen:
            event, retraction = seen.wait(2)
            time.sleep(0.2)  # a quiet period: anything extra would show up within it
    assert (event.tx_hash, event.log_index) == (swap.tx_hash, swap.log_index)
    assert retraction == Retraction("eth", swap.tx_hash, swap.log_index, swap.block, ca=token)
    assert source.stats.frames_rejected == 4
    assert dict(source.stats.take_rejects()) == {"log": 2, "frame": 2}
    assert len(seen.items) == 2


def test_after_a_re_org_the_replacement_blocks_swap_is_priced_at_its_own_reserves(anvil):
    """Recorded frames (anvil sends no `removed` logs): a swap and its `Sync`, both removed by a
    re-org, then another swap in the replacement block with another `Sync` at the same place.
    The new swap is priced at the new reserves, not at the removed ones."""
    from eth_abi.abi import encode

    uni = Uniswap.deploy(anvil)
    token, usd = uni.token(), uni.token()
    pair = uni.pair(token, usd, 1_000_000 * E18, 1_000_000 * E18)
    swap = uni.swap(pair, usd, 5 * E18)
    sync, log = anvil.rpc(
        "eth_getLogs", {"fromBlock": hex(swap.block), "toBlock": hex(swap.block), "address": pair}
    )

    def note(entry: dict) -> str:
        return json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "eth_subscription",
                "params": {"subscription": "0x1", "result": entry},
            }
        )

    token_is_0 = uni.token0(pair) == token
    # the replacement block: the token at twice the price (reserves token 500k, USD 1M)
    doubled = (500_000 * E18, 1_000_000 * E18) if token_is_0 else (1_000_000 * E18, 500_000 * E18)
    other_tx = "0x" + "ab" * 32
    frames = [
        note(sync),
        note(log),
        note({**log, "removed": True}),
        note({**sync, "removed": True}),
        note(
            {
                **sync,
                "transactionHash": other_tx,
                "data": "0x" + encode(["uint112", "uint112"], list(doubled)).hex(),
            }
        ),
        note({**log, "transactionHash": other_tx}),
    ]
    with RecordedNode(frames) as node:
        chain = EvmChain(ws_url=node.url, http_url=anvil.http_url, quotes={usd: 1.0})
        source = EvmSource("eth", chain, [token], {token: pair})
        with Collector(source) as seen:
            first, gone, second = seen.wait(3)
            time.sleep(0.2)
    r_token, r_usd = swap.reserves_after if token_is_0 else swap.reserves_after[::-1]
    assert first.price_usd == pytest.approx(r_usd / r_token, rel=1e-12)
    assert isinstance(gone, Retraction) and gone.tx_hash == swap.tx_hash
    assert second.tx_hash == other_tx
    assert second.price_usd == pytest.approx(2.0, rel=1e-12)


def test_the_block_radar_sees_every_pair_with_a_quote_token_and_no_other(anvil):
    uni = Uniswap.deploy(anvil)
    usd = uni.token()
    a, b, c, d = (uni.token() for _ in range(4))
    pair_a = uni.pair(a, usd, 1_000 * E18, 1_000 * E18)
    pair_b = uni.pair(b, usd, 1_000 * E18, 4_000 * E18)
    unquoted = uni.pair(c, d, 1_000 * E18, 1_000 * E18)  # neither side is a quote: not priced
    chain = EvmChain(ws_url=anvil.ws_url, quotes={usd: 1.0})
    source = EvmSource("eth", chain, [], {}, radar=True)
    with Collector(source) as seen:
        swaps = [uni.swap(pair_a, usd, E18), uni.swap(unquoted, c, E18), uni.swap(pair_b, b, E18)]
        first, second = seen.wait(2)
        time.sleep(0.3)  # a quiet period: the unquoted pair's swap would show up within it
    assert len(seen.items) == 2
    assert (first.ca, first.side, first.tx_hash) == (a, "buy", swaps[0].tx_hash)
    assert (second.ca, second.side, second.tx_hash) == (b, "sell", swaps[2].tx_hash)
    r_b, r_usd = (
        swaps[2].reserves_after if uni.token0(pair_b) == b else swaps[2].reserves_after[::-1]
    )
    assert second.price_usd == pytest.approx(r_usd / r_b, rel=1e-12)


class FlakyRpc:
    """An HTTP JSON-RPC proxy in front of the node that fails the next `failures` eth_calls
    once armed, as a node does mid-restart (anvil: "block height is 24 but requested was 23")."""

    def __init__(self, upstream: str) -> None:
        self.failures = 0
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the source's pooled client expects

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                if request["method"] == "eth_call" and proxy.failures > 0:
                    proxy.failures -= 1
                    proxy.failed += 1
                    error = {"code": -32603, "message": "BlockOutOfRangeError"}
                    answer = json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error})
                    payload = answer.encode()
                else:
                    headers = {"Content-Type": "application/json"}
                    payload = httpx.post(
                        upstream, content=body, headers=headers, timeout=10
                    ).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyRpc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_swap_whose_pricing_call_fails_is_read_again_after_the_reconnect(anvil):
    uni = Uniswap.deploy(anvil)
    usd = uni.token()
    token = uni.token()
    pair = uni.pair(token, usd, 1_000 * E18, 1_000 * E18)
    with FlakyRpc(anvil.http_url) as rpc:
        chain = EvmChain(ws_url=anvil.ws_url, http_url=rpc.url, quotes={usd: 1.0})
        source = EvmSource("eth", chain, [], {}, radar=True, max_backoff_s=0.2)
        with Collector(source) as seen:
            rpc.failures = 1  # the radar's first look at the new pair fails
            swap = uni.swap(pair, usd, E18)
            (event,) = seen.wait(1)
            # the event came from the back-fill after the reconnect; once the source is live
            # again that back-fill is over, and a second copy would have been yielded
            wait_for(lambda: source.stats.live, 5, "the source live again after its back-fill")
    assert rpc.failed == 1 and source.stats.reconnects >= 1
    assert (event.ca, event.tx_hash, event.log_index) == (token, swap.tx_hash, swap.log_index)
    assert len(seen.items) == 1
