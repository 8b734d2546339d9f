"""Records the Uniswap-V2 golden files: real JSON-RPC frames from anvil with the events they mean.

Run from the repository root: `python -m tests.support.record_uniswap_v2`; it rewrites
`tests/golden/uniswap_v2/*.json`. For each scenario it deploys tokens and pairs on a fresh anvil
(`tests/support/anvil.py`), subscribes to the pairs' `Swap` and `Sync` logs over WebSocket with
the filter `EvmSource` uses, swaps both ways, and keeps the `logs` notification frames as
received, the `eth_getLogs` answer for the same blocks, and the facts a decoder is given. The
expected events are the recorder's own account of what it did: the amounts it sent and got back,
the supply it minted, `getReserves` read while the swap's block was the head, the block's
timestamp; they are computed here with exact fractions (one rounding, to the nearest float) and
never by the decoder under test, which this module does not import.

A golden file holds:
- `pairs`: the watched pairs' fixed facts (the fields of `uniswap_v2.Pair` but `reserves`);
- `reference`: the wrapped native/stablecoin pair that prices a native quote, or null;
- `reserves_before`: (reserve0, reserve1) of every watched pair when the subscription began;
- `subscription`: the `eth_subscribe` request, its answer and the notification frames;
- `get_logs`: the `eth_getLogs` request over the same blocks and its result;
- `expected_swaps`: one per swap on a watched pair, in order, with `made`, the figures it came
  from (`token_in` is `target` or `quote`; `reserves_after` is (reserve0, reserve1));
- `reorg` (one file): hand-made `removed: true` copies of a recorded `Swap` and `Sync`, since
  anvil does not send them, and the retraction expected.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import websocket
from eth_utils import keccak

from tests.support.anvil import ROOT, Anvil, Swap, Uniswap, find_anvil

OUT = ROOT / "tests" / "golden" / "uniswap_v2"
CHAIN = "eth"
E18 = 10**18
SWAP_TOPIC = "0x" + keccak(text="Swap(address,uint256,uint256,uint256,uint256,address)").hex()
SYNC_TOPIC = "0x" + keccak(text="Sync(uint112,uint112)").hex()
FRAME_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Watched:
    """A pair whose swaps become events, as the decoder is told about it."""

    address: str
    target: str
    quote: str
    target_is_token0: bool
    target_decimals: int
    quote_decimals: int
    quote_usd: float | None  # None: the wrapped native, priced from the reference pair
    total_supply: int


@dataclass(frozen=True)
class Reference:
    """The wrapped native/stablecoin pair that gives the native token's USD price."""

    address: str
    native_is_token0: bool
    native_decimals: int
    stable_decimals: int
    stable_usd: float


@dataclass(frozen=True)
class Made:
    """One swap as the recorder made it, with what it read from the chain right after."""

    pair: str
    swap: Swap
    reference_reserves: tuple[int, int] | None
    timestamp: int


def _token_on_side(
    uni: Uniswap, other: str, *, token0: bool, supply: int, decimals: int = 18
) -> str:
    """A new token that sorts before `other` (token0 of their pair) or after it (token1).
    Addresses follow from the deployer's nonce, so the same tokens are found on every run."""
    for _ in range(32):
        token = uni.token(supply, decimals)
        if (int(token, 16) < int(other, 16)) == token0:
            return token
    raise RuntimeError("no token address on the wanted side after 32 deployments")


def _watched(
    uni: Uniswap, pair: str, target: str, quote: str, decimals: tuple[int, int], usd: float | None
) -> Watched:
    (supply,) = uni.call(target, "totalSupply()", [], [], ["uint256"])
    return Watched(
        address=pair,
        target=target,
        quote=quote,
        target_is_token0=uni.token0(pair) == target,
        target_decimals=decimals[0],
        quote_decimals=decimals[1],
        quote_usd=usd,
        total_supply=int(supply),
    )


def _head(node: Anvil) -> int:
    return int(node.rpc("eth_blockNumber"), 16)


def _exact_native_usd(reference: Reference, reserves: tuple[int, int]) -> Fraction:
    r_native, r_stable = reserves if reference.native_is_token0 else reserves[::-1]
    return (
        Fraction(r_stable, 10**reference.stable_decimals)
        / Fraction(r_native, 10**reference.native_decimals)
        * Fraction(reference.stable_usd)
    )


def _expected(made: Made, pair: Watched, reference: Reference | None) -> dict[str, Any]:
    """The event a swap must become, from the recorder's own figures."""
    swap = made.swap
    sold_target = swap.token_in == pair.target
    target_units, quote_units = (
        (swap.amount_in, swap.amount_out) if sold_target else (swap.amount_out, swap.amount_in)
    )
    r0, r1 = swap.reserves_after
    r_target, r_quote = (r0, r1) if pair.target_is_token0 else (r1, r0)
    if pair.quote_usd is not None:
        quote_usd = Fraction(pair.quote_usd)
    else:
        assert reference is not None and made.reference_reserves is not None
        quote_usd = _exact_native_usd(reference, made.reference_reserves)
    price = (
        Fraction(r_quote, 10**pair.quote_decimals)
        / Fraction(r_target, 10**pair.target_decimals)
        * quote_usd
    )
    made_facts: dict[str, Any] = {
        "token_in": "target" if sold_target else "quote",
        "amount_in": swap.amount_in,
        "amount_out": swap.amount_out,
        "reserves_after": list(swap.reserves_after),
    }
    if made.reference_reserves is not None:
        made_facts["reference_reserves"] = list(made.reference_reserves)
    return {
        "chain": CHAIN,
        "ca": pair.target,
        "pair": pair.address,
        "tx_hash": swap.tx_hash,
        "log_index": swap.log_index,
        "block_number": swap.block,
        "ts_ms": made.timestamp * 1000,
        "side": "sell" if sold_target else "buy",
        "amount_token": float(Fraction(target_units, 10**pair.target_decimals)),
        "amount_usd": float(Fraction(quote_units, 10**pair.quote_decimals) * quote_usd),
        "price_usd": float(price),
        "market_cap_usd": float(Fraction(pair.total_supply, 10**pair.target_decimals) * price),
        "made": made_facts,
    }


def _record(
    uni: Uniswap,
    pairs: list[Watched],
    reference: Reference | None,
    trades: list[tuple[str, str, int]],
) -> dict[str, Any]:
    """Subscribe, make `trades` (pair, token in, amount in), and keep what the node said."""
    node = uni.node
    addresses = sorted(p.address for p in pairs) + ([reference.address] if reference else [])
    query = {"address": addresses, "topics": [[SWAP_TOPIC, SYNC_TOPIC]]}
    reserves_before = {address: list(uni.reserves(address)) for address in addresses}
    start = _head(node)
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", query]}
    conn = websocket.create_connection(node.ws_url, timeout=FRAME_TIMEOUT_S)
    try:
        conn.send(json.dumps(request))
        answer = json.loads(conn.recv())
        assert "result" in answer, answer
        made: list[Made] = []
        for pair, token_in, amount in trades:
            swap = uni.swap(pair, token_in, amount)
            # nothing else is sent, so the reserves read in `swap` were those of its block
            assert _head(node) == swap.block, "a block was mined between the swap and its reads"
            block = node.rpc("eth_getBlockByNumber", hex(swap.block), False)
            made.append(
                Made(
                    pair=pair,
                    swap=swap,
                    reference_reserves=uni.reserves(reference.address) if reference else None,
                    timestamp=int(block["timestamp"], 16),
                )
            )
        logs_query = {**query, "fromBlock": hex(start + 1), "toBlock": hex(_head(node))}
        result = node.rpc("eth_getLogs", logs_query)
        frames = [json.loads(conn.recv()) for _ in result]
        conn.settimeout(0.5)
        try:
            extra = conn.recv()
        except websocket.WebSocketTimeoutException:
            extra = None
        assert extra is None, f"a frame that eth_getLogs did not return: {extra}"
    finally:
        conn.close()
    by_address = {p.address: p for p in pairs}
    return {
        "chain": CHAIN,
        "pairs": [asdict(p) for p in pairs],
        "reference": asdict(reference) if reference else None,
        "reserves_before": reserves_before,
        "subscription": {"request": request, "answer": answer, "frames": frames},
        "get_logs": {
            "request": {"jsonrpc": "2.0", "method": "eth_getLogs", "params": [logs_query]},
            "result": result,
        },
        "expected_swaps": [
            _expected(m, by_address[m.pair], reference) for m in made if m.pair in by_address
        ],
    }


def _reorg(golden: dict[str, Any]) -> dict[str, Any]:
    """`removed: true` copies of the last recorded `Swap` and of the `Sync` before it."""
    results = [frame["params"]["result"] for frame in golden["subscription"]["frames"]]
    swap_at = max(i for i, entry in enumerate(results) if entry["topics"][0] == SWAP_TOPIC)
    sync = results[swap_at - 1]
    assert (
        sync["topics"][0] == SYNC_TOPIC
        and sync["transactionHash"] == (results[swap_at]["transactionHash"])
    )
    frames = []
    for entry in (sync, results[swap_at]):
        frame = json.loads(json.dumps(golden["subscription"]["frames"][0]))
        frame["params"]["result"] = {**entry, "removed": True}
        frames.append(frame)
    last = golden["expected_swaps"][-1]
    return {
        "note": "hand-made: anvil sends no removed logs; a removed Sync retracts nothing",
        "frames": frames,
        "expected_retractions": [
            {
                "chain": CHAIN,
                "tx_hash": last["tx_hash"],
                "log_index": last["log_index"],
                "block_number": last["block_number"],
            }
        ],
    }


def stablecoin_18(uni: Uniswap) -> dict[str, Any]:
    """A token quoted in an 18-decimal stablecoin at $1, the token being token0."""
    usd = uni.token()
    token = _token_on_side(uni, usd, token0=True, supply=10**27)
    pair = uni.pair(token, usd, 1_000_000 * E18, 2_000_000 * E18)  # 2 USD per token
    watched = _watched(uni, pair, token, usd, (18, 18), 1.0)
    trades = [(pair, usd, 10_000 * E18), (pair, token, 3_000 * E18)]
    golden = _record(uni, [watched], None, trades)
    golden["reorg"] = _reorg(golden)
    return golden


def stablecoin_6(uni: Uniswap) -> dict[str, Any]:
    """A 9-decimal token quoted in a 6-decimal stablecoin at $0.9998, the token being token1."""
    token = uni.token(supply=5 * 10**17, decimals=9)
    usdc = _token_on_side(uni, token, token0=True, supply=10**15, decimals=6)
    pair = uni.pair(token, usdc, 2_000_000 * 10**9, 500_000 * 10**6)  # 0.25 USDC per token
    watched = _watched(uni, pair, token, usdc, (9, 6), 0.9998)
    trades = [(pair, usdc, 1_500 * 10**6), (pair, token, 40_000 * 10**9)]
    return _record(uni, [watched], None, trades)


def wrapped_native(uni: Uniswap) -> dict[str, Any]:
    """A token quoted in the wrapped native token, priced through a wrapped native/6-decimal
    stablecoin reference pair; the native gets dearer between the token's buy and its sell."""
    weth, usdc = uni.token(), uni.token(supply=10**15, decimals=6)
    reference = uni.pair(weth, usdc, 1_000 * E18, 3_000_000 * 10**6)  # 3,000 USDC per WETH
    token = uni.token(supply=10**26)
    pair = uni.pair(token, weth, 500_000 * E18, 100 * E18)
    watched = _watched(uni, pair, token, weth, (18, 18), None)
    ref = Reference(
        address=reference,
        native_is_token0=uni.token0(reference) == weth,
        native_decimals=18,
        stable_decimals=6,
        stable_usd=0.9998,
    )
    trades = [
        (pair, weth, 1 * E18),
        (reference, usdc, 300_000 * 10**6),
        (pair, token, 20_000 * E18),
    ]
    return _record(uni, [watched], ref, trades)


SCENARIOS: dict[str, Callable[[Uniswap], dict[str, Any]]] = {
    "stablecoin_18": stablecoin_18,
    "stablecoin_6": stablecoin_6,
    "wrapped_native": wrapped_native,
}


def write(path: Path, golden: dict[str, Any]) -> None:
    path.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")


def main() -> None:
    binary = find_anvil()
    if binary is None:
        sys.exit("anvil and @uniswap/v2-core are not installed (`make test` installs them)")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, scenario in SCENARIOS.items():
        node = Anvil(binary).start()
        try:
            uni = Uniswap.deploy(node)
            golden = {
                "about": (
                    f"{scenario.__doc__} Recorded by `python -m tests.support.record_uniswap_v2`"
                    " from a real anvil; re-record, do not edit. `expected_swaps` come from the"
                    " recorder's own swaps and chain reads, never from the decoder."
                ),
                "node": node.rpc("web3_clientVersion"),
                **scenario(uni),
            }
        finally:
            node.stop()
        path = OUT / f"{name}.json"
        write(path, golden)
        frames = len(golden["subscription"]["frames"])
        print(f"{path.relative_to(ROOT)}: {frames} frames, {len(golden['expected_swaps'])} swaps")


if __name__ == "__main__":
    main()
