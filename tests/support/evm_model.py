"""An independent model of what the fleet should alert on, for whole-fleet EVM scenarios.

Nothing here imports the product: the swaps are read back from the node (`eth_getLogs`) and
priced as the specification says, and the rules are a plain re-statement of their documented
semantics (SPEC.md §5, the docstrings of `alerts/rules.py` and `alerts/windows.py`):

- a `Swap` on a watched pair is priced from the pair's reserves after it (the `Sync` just before
  it): price = (reserve quote / reserve target) × the quote's USD price; amount_usd = the quote
  amount × the quote's USD price; a stablecoin quote is worth its configured price, the wrapped
  native the reference pair's (stable / native) reserves *as of that place in the chain*;
  side `buy` when more of the target leaves the pool than enters it; ts = the block's timestamp;
- layer 1: the trade alone reaches `min_transaction_usd` ("min_transaction"), or the token's
  volume (both sides, in integer cents) within `time_interval` reaches
  `cumulative_min_amount_usd` ("cumulative_interval"); no layer-2 rule, no cooldown. A window
  of W seconds for a trade at t holds the token's trades with ts in (t − W, t] up to and
  including that trade in chain order (a live feed cannot know the trades after it);
- one alert row per alerting trade, filed under its most specific rule: cumulative_interval
  before min_transaction.

`Trader` makes swaps of a chosen USD size on a `tests.support.anvil.Uniswap`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from eth_abi import decode
from eth_utils import keccak

from tests.support.anvil import FEE_DENOMINATOR, FEE_NUMERATOR, Swap, Uniswap

SWAP_TOPIC = "0x" + keccak(text="Swap(address,uint256,uint256,uint256,uint256,address)").hex()
SYNC_TOPIC = "0x" + keccak(text="Sync(uint112,uint112)").hex()


@dataclass(frozen=True)
class Market:
    """The pairs of a scenario: which token each watched pair trades against which quote."""

    stable: str
    native: str
    reference: str  # native/stable
    stable_usd: float
    decimals: dict[str, int]  # token → decimals
    token0: dict[str, str]  # pair (watched and reference) → its token0
    target_of: dict[str, str]  # watched pair → its target token
    quote_of: dict[str, str]  # watched pair → its quote token (stable or native)

    @property
    def addresses(self) -> list[str]:
        return sorted(self.target_of) + [self.reference]


@dataclass(frozen=True)
class Trade:
    """One swap of a watched token, as the model prices it."""

    tx_hash: str
    log_index: int
    block: int
    ts_s: int
    ca: str
    pair: str
    quote: str
    side: str
    quote_amount: float  # in quote tokens
    quote_usd: float
    amount_usd: float
    price_usd: float

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


def read_logs(node: Any, addresses: list[str]) -> list[dict[str, Any]]:
    """Every `Swap` and `Sync` log of `addresses`, in chain order (block, log index)."""
    logs = node.rpc(
        "eth_getLogs",
        {
            "fromBlock": "0x0",
            "toBlock": "latest",
            "address": addresses,
            "topics": [[SWAP_TOPIC, SYNC_TOPIC]],
        },
    )
    return sorted(logs, key=lambda e: (int(e["blockNumber"], 16), int(e["logIndex"], 16)))


def replay(market: Market, logs: Iterable[dict[str, Any]]) -> tuple[list[Trade], dict[int, float]]:
    """The watched swaps of `logs` priced as of their place in the chain, and the native's USD
    price after each block that moved it."""
    reserves: dict[str, tuple[int, int]] = {}
    native_usd: float | None = None
    native_moves: dict[int, float] = {}
    trades: list[Trade] = []
    for entry in logs:
        address = entry["address"].lower()
        topic = entry["topics"][0].lower()
        block = int(entry["blockNumber"], 16)
        data = bytes.fromhex(entry["data"][2:])
        if topic == SYNC_TOPIC:
            r0, r1 = (int(v) for v in decode(["uint112", "uint112"], data))
            reserves[address] = (r0, r1)
            if address == market.reference:
                native_is_0 = market.token0[address] == market.native
                native, stable = (r0, r1) if native_is_0 else (r1, r0)
                native_usd = (
                    (stable / 10 ** market.decimals[market.stable])
                    / (native / 10 ** market.decimals[market.native])
                    * market.stable_usd
                )
                native_moves[block] = native_usd
            continue
        if address not in market.target_of:
            continue  # a swap on the reference pair: not a watched token
        target, quote = market.target_of[address], market.quote_of[address]
        a0_in, a1_in, a0_out, a1_out = (int(v) for v in decode(["uint256"] * 4, data))
        target_is_0 = market.token0[address] == target
        if target_is_0:
            t_in, t_out, q_in, q_out = a0_in, a0_out, a1_in, a1_out
        else:
            t_in, t_out, q_in, q_out = a1_in, a1_out, a0_in, a0_out
        if t_in == t_out:
            continue  # no target moved: no trade
        if quote == market.stable:
            quote_usd = market.stable_usd
        else:
            assert native_usd is not None, "a native-quoted swap before any reference Sync"
            quote_usd = native_usd
        r0, r1 = reserves[address]
        r_target, r_quote = (r0, r1) if target_is_0 else (r1, r0)
        t_unit, q_unit = 10 ** market.decimals[target], 10 ** market.decimals[quote]
        quote_amount = abs(q_in - q_out) / q_unit
        trades.append(
            Trade(
                tx_hash=entry["transactionHash"],
                log_index=int(entry["logIndex"], 16),
                block=block,
                ts_s=int(entry["blockTimestamp"], 16),
                ca=target,
                pair=address,
                quote=quote,
                side="buy" if t_out > t_in else "sell",
                quote_amount=quote_amount,
                quote_usd=quote_usd,
                amount_usd=quote_amount * quote_usd,
                price_usd=(r_quote / q_unit) / (r_target / t_unit) * quote_usd,
            )
        )
    return trades, native_moves


@dataclass(frozen=True)
class Judged:
    """What the model says about one trade: its window volume and the alert type (or None)."""

    trade: Trade
    window_usd: float
    window_trades: int
    alert_type: str | None


def judge_all(
    trades: list[Trade], *, min_usd: float, cumulative_usd: float, window_s: int
) -> dict[tuple[str, int], Judged]:
    """Every trade judged on its own amount and its token's window (see the module doc)."""
    by_token: dict[str, list[Trade]] = defaultdict(list)
    for trade in trades:  # chain order
        by_token[trade.ca].append(trade)
    judged: dict[tuple[str, int], Judged] = {}
    for token_trades in by_token.values():
        for i, trade in enumerate(token_trades):
            inside = [t for t in token_trades[: i + 1] if t.ts_s > trade.ts_s - window_s]
            cents = sum(round(t.amount_usd * 100) for t in inside)
            volume = cents / 100
            alert_type = None
            if volume >= cumulative_usd:
                alert_type = "cumulative_interval"
            elif trade.amount_usd >= min_usd:
                alert_type = "min_transaction"
            judged[trade.key] = Judged(trade, volume, len(inside), alert_type)
    return judged


def alert_set(judged: dict[tuple[str, int], Judged]) -> set[tuple[str, int, str]]:
    return {(*k, j.alert_type) for k, j in judged.items() if j.alert_type is not None}


def repriced(
    trades: list[Trade], native: str, native_usd: Callable[[Trade], float | None]
) -> list[Trade]:
    """The trades with `native`-quoted ones re-valued at `native_usd(trade)` where it gives a
    price: the trades as a fleet that priced them at another moment would see them."""
    out = []
    for trade in trades:
        price = native_usd(trade) if trade.quote == native else None
        if price is None:
            out.append(trade)
            continue
        factor = price / trade.quote_usd
        out.append(
            replace(
                trade,
                quote_usd=price,
                amount_usd=trade.quote_amount * price,
                price_usd=trade.price_usd * factor,
            )
        )
    return out


class Trader:
    """Swaps of a chosen USD size (at the current reserves) on a Uniswap deployment."""

    def __init__(self, uni: Uniswap, market: Market) -> None:
        self.uni = uni
        self.market = market

    def native_usd(self) -> float:
        m = self.market
        r0, r1 = self.uni.reserves(m.reference)
        native, stable = (r0, r1) if m.token0[m.reference] == m.native else (r1, r0)
        return (
            (stable / 10 ** m.decimals[m.stable])
            / (native / 10 ** m.decimals[m.native])
            * m.stable_usd
        )

    def quote_usd(self, quote: str) -> float:
        return self.market.stable_usd if quote == self.market.stable else self.native_usd()

    def swap_usd(self, pair: str, side: str, usd: float) -> Swap:
        """Buy (pay the quote) or sell (receive the quote) about `usd` dollars of the pair's
        target token."""
        m = self.market
        quote = m.quote_of.get(pair, m.stable if pair == m.reference else "")
        target = m.target_of.get(pair, m.native if pair == m.reference else "")
        q_amount = int(usd / self.quote_usd(quote) * 10 ** m.decimals[quote])
        if side == "buy":
            return self.uni.swap(pair, quote, q_amount)
        r0, r1 = self.uni.reserves(pair)
        r_target, r_quote = (r0, r1) if m.token0[pair] == target else (r1, r0)
        # the target amount whose output (x·y=k less the fee) is q_amount of the quote
        t_in = q_amount * r_target * FEE_DENOMINATOR // ((r_quote - q_amount) * FEE_NUMERATOR) + 1
        return self.uni.swap(pair, target, t_in)
