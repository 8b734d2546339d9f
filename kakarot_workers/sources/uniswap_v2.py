"""Uniswap-V2 logs and calls decoded, and swaps priced: pure, no I/O, so the decoder is tested
against recorded JSON-RPC frames (`tests/golden/uniswap_v2/`) without a node. A `Swap` log
becomes a `SwapEvent` from the pair's fixed facts, the quote's USD price and the reserves the
caller passes in; `EvmSource` (`evm.py`) does the transport, back-fill, de-duplication and keeps
the reserves current from `Sync` logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from kakarot_workers.events import Side, SwapEvent
from kakarot_workers.sources import Retraction


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def _unit(decimals: int) -> int:
    """10 ** decimals as an int: `amount / _unit(d)` is one correctly rounded division."""
    unit: int = 10**decimals
    return unit


SWAP_TOPIC = _topic("Swap(address,uint256,uint256,uint256,uint256,address)")
SYNC_TOPIC = _topic("Sync(uint112,uint112)")
TOKEN0, TOKEN1 = _selector("token0()"), _selector("token1()")
DECIMALS, TOTAL_SUPPLY = _selector("decimals()"), _selector("totalSupply()")
GET_RESERVES = _selector("getReserves()")
GET_PAIR = _selector("getPair(address,address)")
ZERO_ADDRESS = "0x" + "0" * 40  # the factory's `getPair` answer when there is no pair


@dataclass
class Pair:
    """A pair the batch watches: which side is the batch's token, and the quote's USD price."""

    address: str
    target: str
    quote: str
    target_is_token0: bool
    target_decimals: int
    quote_decimals: int
    quote_usd: float | None  # None: the wrapped native, priced from the reference pair
    total_supply: int
    reserves: tuple[int, int] | None = None  # (token0, token1)


@dataclass(frozen=True, slots=True)
class SwapAmounts:
    """A `Swap` log's amounts seen from the target token, scaled by each token's decimals."""

    side: Side
    amount_token: float
    amount_quote: float


# --- calls -------------------------------------------------------------------------------------
def get_pair_call(token_a: str, token_b: str) -> str:
    """The `data` of the factory's `getPair(token_a, token_b)` call."""
    return GET_PAIR + abi_encode(["address", "address"], [token_a, token_b]).hex()


def decode_address(result: bytes) -> str:
    """An `address` call result (`token0`, `getPair`), lower-case `0x…`."""
    return "0x" + result[-20:].hex()


def decode_uint(result: bytes) -> int:
    """A `uint` call result (`decimals`, `totalSupply`); an empty result reads as 0."""
    return int.from_bytes(result[:32], "big") if result else 0


def decode_reserves(result: bytes) -> tuple[int, int]:
    """A `getReserves()` call result: (reserve0, reserve1)."""
    r0, r1, _ = abi_decode(["uint112", "uint112", "uint32"], result)
    return int(r0), int(r1)


# --- logs --------------------------------------------------------------------------------------
def log_data(entry: Mapping[str, Any]) -> bytes:
    """A log's `data` field as bytes."""
    data: str = entry["data"]
    return bytes.fromhex(data[2:])


def decode_sync(data: bytes) -> tuple[int, int]:
    """A `Sync` log's data: the pair's reserves (reserve0, reserve1) after the transfer."""
    r0, r1 = abi_decode(["uint112", "uint112"], data)
    return int(r0), int(r1)


def retraction(entry: Mapping[str, Any], chain: str) -> Retraction | None:
    """A `removed: true` log (a re-org): the swap it withdraws, or None for a `Sync`."""
    if entry["topics"][0].lower() != SWAP_TOPIC:
        return None
    return Retraction(
        chain, entry["transactionHash"], int(entry["logIndex"], 16), int(entry["blockNumber"], 16)
    )


def swap_amounts(data: bytes, pair: Pair) -> SwapAmounts:
    """A `Swap` log's data (amount0In, amount1In, amount0Out, amount1Out) from the target's side:
    `buy` when more of the target leaves the pool than enters it, else `sell`."""
    a0_in, a1_in, a0_out, a1_out = (int(v) for v in abi_decode(["uint256"] * 4, data))
    if pair.target_is_token0:
        t_in, t_out, q_in, q_out = a0_in, a0_out, a1_in, a1_out
    else:
        t_in, t_out, q_in, q_out = a1_in, a1_out, a0_in, a0_out
    return SwapAmounts(
        side="buy" if t_out > t_in else "sell",
        amount_token=abs(t_out - t_in) / _unit(pair.target_decimals),
        amount_quote=abs(q_in - q_out) / _unit(pair.quote_decimals),
    )


# --- prices ------------------------------------------------------------------------------------
def price_in_quote(pair: Pair, reserves: tuple[int, int]) -> float:
    """The target's price in the quote token at these reserves (reserve0, reserve1)."""
    r0, r1 = reserves
    r_target, r_quote = (r0, r1) if pair.target_is_token0 else (r1, r0)
    return (r_quote / _unit(pair.quote_decimals)) / (r_target / _unit(pair.target_decimals))


def native_usd_price(
    reserves: tuple[int, int],
    native_is_token0: bool,
    native_decimals: int,
    stable_decimals: int,
    stable_usd: float,
) -> float | None:
    """The wrapped native token's USD price from a native/stablecoin reference pair's reserves
    (reserve0, reserve1); None when the pair holds no native token."""
    native, stable = reserves
    if not native_is_token0:
        native, stable = stable, native
    if not native:
        return None
    return (stable / _unit(stable_decimals)) / (native / _unit(native_decimals)) * stable_usd


def is_priceable(entry: Mapping[str, Any], pair: Pair, quote_usd: float | None) -> bool:
    """Whether `decode_swap` prices this `Swap` log (else it returns None): the quote's USD price
    is known and the target amount is not zero. A caller reads reserves only when they are used."""
    return quote_usd is not None and swap_amounts(log_data(entry), pair).amount_token != 0


def decode_swap(
    entry: Mapping[str, Any],
    pair: Pair,
    *,
    quote_usd: float | None,
    reserves: tuple[int, int] | None,
    chain: str,
    now_ms: int,
) -> SwapEvent | None:
    """The event of a `Swap` log (an `eth_subscribe` `logs` result or an `eth_getLogs` item) on
    `pair`, priced at `reserves` (reserve0, reserve1) with the quote at `quote_usd` dollars.

    None when unpriceable: the quote's USD price is unknown, or no target token moved.
    `ts_ms` is the log's `blockTimestamp` when the node sends one, else `now_ms`. Raises
    ValueError for a `removed` log (see `retraction`) and when a priceable swap has no reserves.
    """
    if entry.get("removed"):
        raise ValueError("a removed log is a retraction, not a swap")
    amounts = swap_amounts(log_data(entry), pair)
    if quote_usd is None or amounts.amount_token == 0:  # the rule of `is_priceable`
        return None
    if reserves is None:
        raise ValueError(f"swap on {pair.address}: no reserves to price it at")
    price_usd = price_in_quote(pair, reserves) * quote_usd
    timestamp = entry.get("blockTimestamp")
    return SwapEvent(
        chain=chain,
        ca=pair.target,
        tx_hash=entry["transactionHash"],
        log_index=int(entry["logIndex"], 16),
        ts_ms=int(timestamp, 16) * 1000 if timestamp else now_ms,
        side=amounts.side,
        amount_usd=amounts.amount_quote * quote_usd,
        price_usd=price_usd,
        amount_token=amounts.amount_token,
        block_number=int(entry["blockNumber"], 16),
        pair=pair.address,
        market_cap_usd=pair.total_supply / _unit(pair.target_decimals) * price_usd,
    )
