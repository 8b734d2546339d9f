"""A seedable model of DEX trade flow for N tokens. Pure: no clock, no sockets.

Prices follow a random walk with trade impact; trade sizes are log-normal with occasional whale
trades; now and then a token pumps for a while (buy-heavy, rising). The same seed gives the same
sequence of trades, whatever the wall clock does, so tests can predict which trades must alert.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

MEDIAN_TRADE_USD = 300.0
TRADE_SIGMA = 1.2
WHALE_PROBABILITY = 0.01
WHALE_MULTIPLIER = (20.0, 100.0)
PUMP_PROBABILITY = 0.002
PUMP_TRADES = 30
FIRST_BLOCK = 1_000_000
TRADES_PER_BLOCK = 20


def token_address(seed: int, index: int) -> str:
    """A deterministic EVM-style contract address for simulated token `index`."""
    return "0x" + hashlib.sha256(f"token:{seed}:{index}".encode()).hexdigest()[:40]


@dataclass
class TokenState:
    ca: str
    symbol: str
    pair: str
    price_usd: float
    supply: float
    liquidity_usd: float
    top10_holders_pct: float
    pump_left: int = 0

    @property
    def market_cap_usd(self) -> float:
        return self.price_usd * self.supply


@dataclass(frozen=True)
class Trade:
    """One simulated trade, the simulator's own record of what it sent."""

    seq: int
    chain: str
    ca: str
    symbol: str
    pair: str
    tx_hash: str
    log_index: int
    block_number: int
    side: str
    amount_usd: float
    amount_token: float
    price_usd: float
    market_cap_usd: float
    top10_holders_pct: float

    def to_feed_message(self, ts_ms: int) -> dict[str, Any]:
        """The frame a market-data feed sends for this trade (see sources/feed.py)."""
        return {
            "type": "trade",
            "chain": self.chain,
            "token": self.ca,
            "symbol": self.symbol,
            "pair": self.pair,
            "txHash": self.tx_hash,
            "logIndex": self.log_index,
            "blockNumber": self.block_number,
            "timestamp": ts_ms,
            "side": self.side,
            "priceUsd": self.price_usd,
            "volumeUsd": self.amount_usd,
            "amount": self.amount_token,
            "marketCapUsd": self.market_cap_usd,
            "top10HolderPct": self.top10_holders_pct,
        }


@dataclass
class Market:
    """Trade flow over a fixed set of tokens; more can be added (a feed client may ask for any)."""

    seed: int
    chain: str = "bsc"
    tokens: list[TokenState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._seq = 0
        self._weights: list[float] = []
        self._cumulative: list[float] = []
        self._by_ca: dict[str, TokenState] = {t.ca: t for t in self.tokens}

    @classmethod
    def with_tokens(cls, seed: int, count: int, chain: str = "bsc") -> Market:
        market = cls(seed=seed, chain=chain)
        for index in range(count):
            market.add_token(token_address(seed, index), f"SIM{index}")
        return market

    def add_token(self, ca: str, symbol: str | None = None) -> TokenState:
        """Add a token with random but seed-determined fundamentals (idempotent)."""
        if ca in self._by_ca:
            return self._by_ca[ca]
        rng = random.Random(f"{self.seed}:{ca}")
        price = math.exp(rng.uniform(math.log(1e-6), math.log(5.0)))
        token = TokenState(
            ca=ca,
            symbol=symbol or f"T{len(self.tokens)}",
            pair="0x" + hashlib.sha256(f"pair:{ca}".encode()).hexdigest()[:40],
            price_usd=price,
            supply=math.exp(rng.uniform(math.log(1e6), math.log(1e11))),
            liquidity_usd=math.exp(rng.uniform(math.log(2e4), math.log(5e6))),
            top10_holders_pct=round(rng.uniform(8.0, 85.0), 2),
        )
        self.tokens.append(token)
        self._by_ca[ca] = token
        self._weights.append(rng.lognormvariate(0.0, 1.0))
        self._cumulative = list(accumulate(self._weights))
        return token

    def token(self, ca: str) -> TokenState | None:
        return self._by_ca.get(ca)

    def next_trade(self) -> Trade:
        """The next trade of the market, on a token chosen by its activity."""
        if not self.tokens:
            raise ValueError("market has no tokens")
        rng = self._rng
        pick = rng.random() * self._cumulative[-1]
        token = self.tokens[min(bisect.bisect_right(self._cumulative, pick), len(self.tokens) - 1)]
        if token.pump_left == 0 and rng.random() < PUMP_PROBABILITY:
            token.pump_left = PUMP_TRADES
        pumping = token.pump_left > 0
        side = "buy" if rng.random() < (0.8 if pumping else 0.5) else "sell"
        amount_usd = rng.lognormvariate(math.log(MEDIAN_TRADE_USD), TRADE_SIGMA)
        if rng.random() < WHALE_PROBABILITY:
            amount_usd *= rng.uniform(*WHALE_MULTIPLIER)
        impact = amount_usd / token.liquidity_usd
        drift = rng.gauss(0.0, 0.002) + (rng.uniform(0.01, 0.03) if pumping else 0.0)
        token.price_usd *= math.exp(drift + (impact if side == "buy" else -impact))
        if pumping:
            token.pump_left -= 1
        seq = self._seq
        self._seq += 1
        return Trade(
            seq=seq,
            chain=self.chain,
            ca=token.ca,
            symbol=token.symbol,
            pair=token.pair,
            tx_hash="0x" + hashlib.sha256(f"tx:{self.seed}:{seq}".encode()).hexdigest(),
            log_index=rng.randrange(0, 4),
            block_number=FIRST_BLOCK + seq // TRADES_PER_BLOCK,
            side=side,
            amount_usd=round(amount_usd, 2),
            amount_token=amount_usd / token.price_usd,
            price_usd=token.price_usd,
            market_cap_usd=round(token.market_cap_usd, 2),
            top10_holders_pct=token.top10_holders_pct,
        )
