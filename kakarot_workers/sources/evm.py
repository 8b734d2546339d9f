"""The EVM source: Uniswap-V2 `Swap` logs over JSON-RPC (PancakeSwap V2 on BSC has the same ABI).

Live: one WebSocket per batch, `eth_subscribe` `logs` for the `Swap` and `Sync` topics on the
batch's pair addresses (a `block` task: `Swap` on every pair of the chain, the market-wide radar).
Calls (`token0`, `decimals`, `totalSupply`, `getReserves`, `getPair`) and back-fill
(`eth_getLogs`) go over HTTP: `http_url` of the chain, or the WebSocket URL's HTTP twin.

A swap becomes an event like this, the batch's token T traded against a quote token Q:
- side: `buy` when T leaves the pool (T out > T in), else `sell`; amounts from the log's data,
  scaled by each token's `decimals`;
- price: from the pair's reserves after the swap (the `Sync` the pair emits just before `Swap`,
  or `getReserves`): (reserve Q / reserve T) × Q's USD price;
- Q's USD price: the chain's `quotes` map (1.0 for a stablecoin), or, for the wrapped native
  token (`null` there), `native_usd` if set, else the reference pair (wrapped native/stablecoin)
  reserves, kept current from its `Sync` logs;
- prices are those *as of the trade's place in the chain*, on every path (live, back-fill,
  re-org replay): a back-fill starts from every reserve as it stood at the end of the block
  before it (the last `Sync` at or before that block, found with `eth_getLogs`, which pruned
  nodes answer too; `eth_call` at a block tag needs an archive node) and replays the `Sync` logs
  in order with the swaps. A `Sync` at or before the last one applied to its pair (the live
  subscription repeats what the back-fill read) is ignored; a re-org that removes an applied
  one puts the pair's reserves back to the end of the block before, and the replacement
  block's `Sync` logs apply;
- amount_usd: the Q amount × Q's USD price; market cap: `totalSupply` × price (cached).

The decoding and the price math are pure functions in `uniswap_v2`; this module does the I/O
and keeps the state (the pairs' facts and reserves).

Checkpoint and back-fill: the consumer saves `progress_block` (every log up to it has been
emitted) in Redis; a new owner starts from it minus `evm_backfill_overlap_blocks`, fetches the
gap with `eth_getLogs` in ranges of `evm_backfill_chunk` blocks (at most
`evm_backfill_max_blocks`), subscribing first so nothing falls between back-fill and live. A
batch's first consumer (no checkpoint) starts from the first block at or after the batch was
created (`since_ms`, found by bisecting block timestamps; within the same bound), so swaps
between allocation and subscription alert too; `stats.since_ms` says from when the batch is
covered. Logs seen twice are emitted once. A log with `removed: true` (a re-org) yields a
`Retraction`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import websocket
from eth_abi.exceptions import DecodingError

from kakarot_workers.errors import ConfigError, KakarotError
from kakarot_workers.events import SwapEvent
from kakarot_workers.reconnect import backoff
from kakarot_workers.settings import EvmChain, Settings
from kakarot_workers.sources import BatchPlan, Retraction, SourceStats
from kakarot_workers.sources.feed import excerpt
from kakarot_workers.sources.uniswap_v2 import (
    DECIMALS,
    GET_RESERVES,
    SWAP_TOPIC,
    SYNC_TOPIC,
    TOKEN0,
    TOKEN1,
    TOTAL_SUPPLY,
    ZERO_ADDRESS,
    Pair,
    decode_address,
    decode_reserves,
    decode_swap,
    decode_sync,
    decode_uint,
    get_pair_call,
    is_priceable,
    log_data,
    native_usd_price,
    retraction,
)

log = logging.getLogger(__name__)

# What a malformed log raises in the decoding (eth-abi's DecodingError for short data).
_MALFORMED_LOG = (
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    ArithmeticError,
    DecodingError,
)
CONNECT_TIMEOUT_S = 5.0
TICK_S = 0.05
RECENT_IDS = 20_000


class RpcError(KakarotError):
    """A JSON-RPC call failed (transport or an error answer)."""


class HttpRpc:
    """JSON-RPC over HTTP, one pooled client."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.client = httpx.Client(timeout=timeout_s)
        self._ids = 0

    def call(self, method: str, params: list[Any]) -> Any:
        self._ids += 1
        try:
            response = self.client.post(
                self.url,
                json={"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params},
            )
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RpcError(f"{method} at {self.url}: {exc}") from exc
        if answer.get("error"):
            raise RpcError(f"{method} at {self.url}: {answer['error'].get('message')}")
        return answer.get("result")

    def eth_call(self, to: str, data: str, block: int | None = None) -> bytes:
        tag = "latest" if block is None else hex(block)
        result = self.call("eth_call", [{"to": to, "data": data}, tag])
        return bytes.fromhex((result or "0x")[2:])

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def block_timestamp(self, block: int) -> int:
        """The block's timestamp (seconds)."""
        found = self.call("eth_getBlockByNumber", [hex(block), False])
        if not found:
            raise RpcError(f"eth_getBlockByNumber at {self.url}: no block {block}")
        return int(found["timestamp"], 16)

    def get_logs(
        self, first: int, last: int, addresses: list[str] | None, topics: list[Any]
    ) -> Any:
        query: dict[str, Any] = {"fromBlock": hex(first), "toBlock": hex(last), "topics": topics}
        if addresses is not None:
            query["address"] = addresses
        return self.call("eth_getLogs", [query])

    def close(self) -> None:
        self.client.close()


class EvmSource:
    """A batch's Uniswap-V2 swaps from an EVM node, with back-fill and reconnects."""

    def __init__(
        self,
        chain_name: str,
        chain: EvmChain,
        tokens: list[str],
        pairs: dict[str, str],
        *,
        radar: bool = False,
        checkpoint: int | None = None,
        since_ms: int | None = None,
        idle_timeout_s: float = 30.0,
        max_backoff_s: float = 10.0,
        backfill_chunk: int = 2_000,
        backfill_max_blocks: int = 50_000,
        backfill_overlap: int = 20,
        tick_s: float = TICK_S,
    ) -> None:
        self.chain_name = chain_name
        self.chain = chain
        self.tokens = [t.lower() for t in tokens]
        self.given_pairs = {ca.lower(): pair.lower() for ca, pair in pairs.items()}
        self.radar = radar
        self.idle_timeout_s = idle_timeout_s
        self.max_backoff_s = max_backoff_s
        self.backfill_chunk = backfill_chunk
        self.backfill_max_blocks = backfill_max_blocks
        self.tick_s = tick_s
        self.stats = SourceStats()
        self.rpc = HttpRpc(chain.backfill_url)
        self.quotes = {a.lower(): usd for a, usd in chain.quotes.items()}
        self.reference = (chain.reference_pair or "").lower() or None
        self.pairs: dict[str, Pair] = {}
        self._unpriceable: set[str] = set()
        self.unpriced = 0
        # every log up to this block has been yielded (the consumer saves it as the checkpoint)
        self.progress_block: int | None = None
        self._resume_from = None if checkpoint is None else max(0, checkpoint - backfill_overlap)
        self._since_ms = since_ms  # the batch's creation: a first start back-fills from there
        # per pair (and the reference), where its last applied `Sync` stands: (block, log index)
        self._synced_at: dict[str, tuple[int, int]] = {}
        self._block_times: dict[int, int] = {}
        # pairs (or the reference) whose applied `Sync` a re-org removed: → the block before
        self._stale: dict[str, int] = {}
        self._recent: deque[tuple[str, int]] = deque(maxlen=RECENT_IDS)
        self._recent_set: set[tuple[str, int]] = set()
        self._reference_reserves: tuple[int, int] | None = None
        self._reference_facts: tuple[bool, int, int, float] = (True, 18, 18, 1.0)
        self._ids = 0

    # --- set-up ------------------------------------------------------------------------------
    def _resolve_pairs(self) -> None:
        """Find each token's pair (given, or from the factory) and read its fixed facts."""
        for ca in self.tokens:
            if ca in {p.target for p in self.pairs.values()}:
                continue
            address = self.given_pairs.get(ca) or self._find_pair(ca)
            if address is None:
                log.error("evm %s: no pair found for %s; it is not watched", self.chain_name, ca)
                continue
            pair = self._describe_pair(address, ca)
            if pair is not None:
                self.pairs[address] = pair
        if self.reference and self._reference_reserves is None:
            token0 = decode_address(self.rpc.eth_call(self.reference, TOKEN0))
            token1 = decode_address(self.rpc.eth_call(self.reference, TOKEN1))
            native_is_0 = token0 == (self.chain.wrapped_native or "").lower()
            native, stable = (token0, token1) if native_is_0 else (token1, token0)
            self._reference_facts = (
                native_is_0,
                decode_uint(self.rpc.eth_call(native, DECIMALS)),
                decode_uint(self.rpc.eth_call(stable, DECIMALS)),
                self.quotes.get(stable) or 1.0,
            )
            self._reference_reserves = self._reserves(self.reference)

    def _find_pair(self, ca: str) -> str | None:
        if not self.chain.factory:
            return None
        for quote in self.quotes:
            found = decode_address(self.rpc.eth_call(self.chain.factory, get_pair_call(ca, quote)))
            if found != ZERO_ADDRESS:
                return found
        return None

    def _describe_pair(self, address: str, target: str | None) -> Pair | None:
        token0 = decode_address(self.rpc.eth_call(address, TOKEN0))
        token1 = decode_address(self.rpc.eth_call(address, TOKEN1))
        if target is None:  # the radar: the side that is not a quote token
            if token0 in self.quotes and token1 not in self.quotes:
                target = token1
            elif token1 in self.quotes and token0 not in self.quotes:
                target = token0
            else:
                return None
        if target not in (token0, token1):
            log.error("evm %s: pair %s does not trade %s", self.chain_name, address, target)
            return None
        quote = token1 if target == token0 else token0
        if quote not in self.quotes:
            log.error(
                "evm %s: pair %s quotes %s, not a configured quote", self.chain_name, address, quote
            )
            return None
        return Pair(
            address=address,
            target=target,
            quote=quote,
            target_is_token0=target == token0,
            target_decimals=decode_uint(self.rpc.eth_call(target, DECIMALS)),
            quote_decimals=decode_uint(self.rpc.eth_call(quote, DECIMALS)),
            quote_usd=self.quotes[quote],
            total_supply=decode_uint(self.rpc.eth_call(target, TOTAL_SUPPLY)),
        )

    def _reserves(self, address: str) -> tuple[int, int]:
        return decode_reserves(self.rpc.eth_call(address, GET_RESERVES))

    # --- the stream -----------------------------------------------------------------------
    def events(self, stop: threading.Event) -> Iterator[SwapEvent | Retraction | None]:
        try:
            yield from self._events(stop)
        finally:
            self.rpc.close()

    def _events(self, stop: threading.Event) -> Iterator[SwapEvent | Retraction | None]:
        failures = 0
        while not stop.is_set():
            try:
                self._resolve_pairs()
                conn = self._subscribe()
            except (OSError, websocket.WebSocketException, RpcError) as exc:
                failures += 1
                delay = backoff(failures, self.max_backoff_s)
                log.warning(
                    "evm %s: connect failed (%s); retry in %.1fs", self.chain_name, exc, delay
                )
                self.stats.reconnects += 1
                if stop.wait(delay):
                    return
                continue
            failures = 0
            try:
                yield from self._backfill()
                self.stats.live = True
                yield from self._read(conn, stop)
            except (OSError, websocket.WebSocketException, RpcError) as exc:
                log.warning("evm %s: connection lost (%s); reconnecting", self.chain_name, exc)
            finally:
                self.stats.live = False
                conn.close(timeout=1)
                conn.shutdown()
            if self.progress_block is not None:
                self._resume_from = self.progress_block
            if not stop.is_set():
                self.stats.reconnects += 1
                if stop.wait(backoff(1, self.max_backoff_s)):
                    return

    def _filter(self) -> tuple[list[str] | None, list[Any]]:
        """(addresses, topics) of the subscription and the back-fill: the batch's pairs (and the
        reference pair), or every address for the radar."""
        topics: list[Any] = [[SWAP_TOPIC, SYNC_TOPIC]]
        if self.radar:
            return None, topics
        return sorted(self.pairs) + ([self.reference] if self.reference else []), topics

    def _subscribe(self) -> websocket.WebSocket:
        conn = websocket.create_connection(self.chain.ws_url, timeout=CONNECT_TIMEOUT_S)
        try:
            addresses, topics = self._filter()
            query: dict[str, Any] = {"topics": topics}
            if addresses is not None:
                query["address"] = addresses
            self._ids += 1
            conn.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": self._ids,
                        "method": "eth_subscribe",
                        "params": ["logs", query],
                    }
                )
            )
            answer = json.loads(conn.recv())
            if answer.get("error"):
                raise RpcError(f"eth_subscribe: {answer['error'].get('message')}")
            conn.settimeout(self.tick_s)
        except BaseException:
            conn.close(timeout=1)
            conn.shutdown()
            raise
        return conn

    def _backfill(self) -> Iterator[SwapEvent | Retraction | None]:
        """The logs between the checkpoint and the head, fetched while the subscription
        already buffers what comes next."""
        head = self.rpc.block_number()
        start = self._resume_from
        if start is None and self._since_ms is not None:  # first start: from the creation
            start = self._first_block_since(self._since_ms // 1000, head)
            if start > head:  # created after the newest block: nothing to back-fill
                self.progress_block = head
                if self.stats.since_ms is None:
                    self.stats.since_ms = self._since_ms
                return
        if start is None:  # no creation time known: live from here
            self.progress_block = head
            self._covered_from(head)
            return
        start = max(start, head - self.backfill_max_blocks + 1, 0)
        self._covered_from(start)
        self._reserves_as_of(start - 1)
        addresses, topics = self._filter()
        for first in range(start, head + 1, self.backfill_chunk):
            last = min(head, first + self.backfill_chunk - 1)
            for entry in self.rpc.get_logs(first, last, addresses, topics):
                item = self._on_log_or_reject(entry)
                if item is not None:
                    yield item
            self.progress_block = last
            yield None
        log.info("evm %s: back-filled blocks %d–%d", self.chain_name, start, head)

    def _covered_from(self, block: int) -> None:
        """Say from when the batch is covered (the first time only): the block's timestamp."""
        if self.stats.since_ms is None:
            self.stats.since_ms = self.rpc.block_timestamp(block) * 1000

    def _first_block_since(self, since_s: int, head: int) -> int:
        """The first block with a timestamp at or after `since_s` (bisecting the block
        timestamps, at most `evm_backfill_max_blocks` back); head + 1 when none is."""
        low, high = max(0, head - self.backfill_max_blocks + 1), head + 1
        while low < high:
            middle = (low + high) // 2
            if self.rpc.block_timestamp(middle) >= since_s:
                high = middle
            else:
                low = middle + 1
        return low

    def _reserves_as_of(self, block: int) -> None:
        """Every watched pair's reserves, and the reference pair's, as they stood at the end of
        `block`: a back-fill from `block + 1` replays the `Sync` logs from there."""
        for pair in self.pairs.values():
            pair.reserves = None  # read when its first swap needs it (a `Sync` comes first)
            self._synced_at[pair.address] = (block, 1 << 62)
        if block < 0:  # from the genesis: every `Sync` is replayed
            return
        if self.reference and self.chain.native_usd is None:
            self._reference_reserves = self._reserves_at(self.reference, block)
            self._synced_at[self.reference] = (block, 1 << 62)

    def _reserves_at(self, address: str, block: int) -> tuple[int, int]:
        """The pair's reserves at the end of `block`: its last `Sync` log at or before it, found
        going back `evm_backfill_chunk` blocks at a time (at most `evm_backfill_max_blocks`);
        failing that, `eth_call` at the block (an archive node), then at the head."""
        floor = max(0, block - self.backfill_max_blocks + 1)
        last = block
        while last >= floor:
            first = max(floor, last - self.backfill_chunk + 1)
            logs = self.rpc.get_logs(first, last, [address], [SYNC_TOPIC])
            if logs:
                return decode_sync(log_data(logs[-1]))
            last = first - 1
        try:
            return decode_reserves(self.rpc.eth_call(address, GET_RESERVES, block))
        except RpcError as exc:
            log.warning(
                "evm %s: reserves of %s at block %d unknown (%s); using the latest",
                self.chain_name,
                address,
                block,
                exc,
            )
            return self._reserves(address)

    def _read(
        self, conn: websocket.WebSocket, stop: threading.Event
    ) -> Iterator[SwapEvent | Retraction | None]:
        last_frame = time.monotonic()
        while not stop.is_set():
            try:
                raw = conn.recv()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_frame > self.idle_timeout_s:
                    log.warning(
                        "evm %s: nothing for %.0fs; treating as dead",
                        self.chain_name,
                        self.idle_timeout_s,
                    )
                    return
                yield None
                continue
            if not raw:
                return
            last_frame = time.monotonic()
            self.stats.frames += 1
            try:
                message = json.loads(raw)
                entry = message["params"]["result"]
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                self.stats.reject("frame")
                log.warning(
                    "evm %s: rejected frame (%s): %s",
                    self.chain_name,
                    f"{type(exc).__name__}: {exc}"[:200],
                    excerpt(raw),
                )
                continue
            item = self._on_log_or_reject(entry)
            if item is not None:
                yield item
            else:
                yield None

    # --- one log ---------------------------------------------------------------------------
    def _on_log_or_reject(self, entry: Any) -> SwapEvent | Retraction | None:
        """`_on_log`, or None for a log no real node sends (missing fields, short data, a
        zero reserve): counted and logged, and the stream goes on. RPC failures propagate."""
        try:
            return self._on_log(entry)
        except _MALFORMED_LOG as exc:
            self.stats.reject("log")
            log.warning(
                "evm %s: rejected log (%s): %s",
                self.chain_name,
                f"{type(exc).__name__}: {exc}"[:200],
                excerpt(json.dumps(entry, default=str)),
            )
            return None

    def _on_log(self, entry: dict[str, Any]) -> SwapEvent | Retraction | None:
        address = entry["address"].lower()
        topic = entry["topics"][0].lower()
        block = int(entry["blockNumber"], 16)
        identity = (entry["transactionHash"], int(entry["logIndex"], 16))
        if entry.get("removed"):
            self._unapply(address, block, identity[1])
            gone = retraction(entry, self.chain_name)
            pair = self.pairs.get(address)
            if gone is not None and pair is not None:
                self._forget(identity)  # a later inclusion of it is a new trade
                return replace(gone, ca=pair.target)
            return gone
        data = log_data(entry)
        if topic == SYNC_TOPIC:
            if address != self.reference and address not in self.pairs:
                return None  # the radar's: a pair becomes watched at its first swap
            position = (block, identity[1])
            if position <= self._synced_at.get(address, (-1, -1)):
                return None  # the subscription repeats a `Sync` the back-fill applied
            self._synced_at[address] = position
            self._stale.pop(address, None)
            reserves = decode_sync(data)
            if address == self.reference:
                self._reference_reserves = reserves
            if address in self.pairs:
                self.pairs[address].reserves = reserves
            return None
        if identity in self._recent_set:
            return None  # seen in the back-fill and live, or in the overlap
        if self.progress_block is None or block - 1 > self.progress_block:
            self.progress_block = block - 1
        # The RPC calls below can fail (the node restarts, or answers mid-block): the log is
        # remembered only once they succeeded, so the back-fill after the reconnect reads it again.
        pair = self.pairs.get(address)
        if pair is None and self.radar and address not in self._unpriceable:
            pair = self._describe_pair(address, None)
            if pair is None:
                self._unpriceable.add(address)  # no quote side: never asked again
                return None
            self.pairs[address] = pair
        if pair is None:
            return None
        event = self._swap_event(pair, entry)
        self._remember(identity)
        return event

    def _unapply(self, address: str, block: int, log_index: int) -> None:
        """A re-org removed a log at (block, log index): if a `Sync` of its pair at or after it
        was applied, the pair's reserves go back to the end of the block before (read when a
        swap needs them, `_stale`), and the replacement block's `Sync` logs apply."""
        applied = self._synced_at.get(address)
        if applied is None or applied < (block, log_index):
            return
        self._synced_at[address] = (block - 1, 1 << 62)
        self._stale[address] = block - 1

    def _fresh_reserves(self, address: str) -> tuple[int, int] | None:
        """The reserves of a pair (or the reference) a re-org made stale, read again as of the
        block before it; None when they are not stale."""
        block = self._stale.pop(address, None)
        if block is None:
            return None
        try:
            return self._reserves_at(address, block)
        except BaseException:
            self._stale[address] = block  # read again at the next swap (or after a reconnect)
            raise

    def _forget(self, identity: tuple[str, int]) -> None:
        if identity in self._recent_set:
            self._recent_set.discard(identity)
            self._recent = deque((i for i in self._recent if i != identity), maxlen=RECENT_IDS)

    def _remember(self, identity: tuple[str, int]) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(identity)
        self._recent_set.add(identity)

    def _block_time_ms(self, entry: dict[str, Any]) -> int:
        """The log's block time (ms), for a node whose logs carry no `blockTimestamp`: a
        back-filled swap is dated by its block, not by when it was read (cached per block)."""
        block = int(entry["blockNumber"], 16)
        found = self._block_times.get(block)
        if found is None:
            if len(self._block_times) >= 4096:
                self._block_times.clear()
            found = self._block_times[block] = self.rpc.block_timestamp(block) * 1000
        return found

    def _native_usd(self) -> float | None:
        if self.chain.native_usd is not None:
            return self.chain.native_usd
        if self._reference_reserves is None:
            return None
        return native_usd_price(self._reference_reserves, *self._reference_facts)

    def _swap_event(self, pair: Pair, entry: dict[str, Any]) -> SwapEvent | None:
        if self._stale:
            for address in (pair.address, self.reference):
                reserves = self._fresh_reserves(address) if address else None
                if reserves is not None and address == self.reference:
                    self._reference_reserves = reserves
                elif reserves is not None:
                    pair.reserves = reserves
        quote_usd = pair.quote_usd if pair.quote_usd is not None else self._native_usd()
        if pair.reserves is None and is_priceable(entry, pair, quote_usd):
            # no `Sync` of it seen yet (one precedes each swap): as of the swap's block
            pair.reserves = self._reserves_at(pair.address, int(entry["blockNumber"], 16))
        event = decode_swap(
            entry,
            pair,
            quote_usd=quote_usd,
            reserves=pair.reserves,
            chain=self.chain_name,
            now_ms=0 if entry.get("blockTimestamp") else self._block_time_ms(entry),
        )
        if event is None:
            self.unpriced += 1
        return event


def open_evm_source(plan: BatchPlan, settings: Settings, checkpoint: int | None) -> EvmSource:
    chain = settings.evm_chains.get(plan.chain)
    if chain is None:
        raise ConfigError(
            f"task {plan.task_id}: chain {plan.chain!r} has no entry in KAKAROT_EVM_CHAINS "
            f"(configured: {', '.join(sorted(settings.evm_chains)) or 'none'})"
        )
    return EvmSource(
        plan.chain,
        chain,
        plan.tokens,
        plan.pairs,
        radar=plan.task_type == "block",
        checkpoint=checkpoint,
        since_ms=plan.created_ms,
        idle_timeout_s=settings.source_idle_timeout_s,
        max_backoff_s=settings.reconnect_max_backoff_s,
        backfill_chunk=settings.evm_backfill_chunk,
        backfill_max_blocks=settings.evm_backfill_max_blocks,
        backfill_overlap=settings.evm_backfill_overlap_blocks,
    )
