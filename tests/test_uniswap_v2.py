"""The pure Uniswap-V2 decoder against recorded JSON-RPC frames (`tests/golden/uniswap_v2/`).

The golden files are written by `python -m tests.support.record_uniswap_v2` from a real anvil:
the frames are what the node sent, the expected events what the recorder knows it did. Floats
are compared with a relative tolerance of 1e-9: the recorder rounds once from exact fractions,
the decoder divides and multiplies in floats (a few ulps, ~1e-16 relative, apart), while every
mistake worth catching (a wrong decimals scale, the reserves before the swap instead of after,
the quote's price missing or applied twice, a swapped side) is off by 1e-4 or far more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode

from kakarot_workers.events import SwapEvent
from kakarot_workers.sources import Retraction
from kakarot_workers.sources.uniswap_v2 import (
    DECIMALS,
    GET_PAIR,
    GET_RESERVES,
    SWAP_TOPIC,
    SYNC_TOPIC,
    TOKEN0,
    TOKEN1,
    TOTAL_SUPPLY,
    Pair,
    decode_swap,
    decode_sync,
    is_priceable,
    log_data,
    native_usd_price,
    retraction,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "tests" / "golden" / "uniswap_v2").glob("*.json"))
REL = 1e-9  # see the module docstring
FLOATS = ("amount_token", "amount_usd", "price_usd", "market_cap_usd")
EXACT = ("chain", "ca", "pair", "side", "tx_hash", "log_index", "block_number", "ts_ms")
NOW_MS = 1  # any log that carries a blockTimestamp must not be stamped with this


def load(path: Path) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads(path.read_text())
    return golden


def decode_all(golden: dict[str, Any], entries: list[dict[str, Any]]) -> list[SwapEvent]:
    """The logs in order, as `EvmSource` wires the pure functions: a `Sync` updates its pair's
    reserves, a `Swap` on a watched pair is priced at them, a native quote through the
    reference pair's."""
    pairs = {p["address"]: Pair(**p) for p in golden["pairs"]}
    reserves = {a: (r[0], r[1]) for a, r in golden["reserves_before"].items()}
    ref = golden["reference"]
    events = []
    for entry in entries:
        address, topic = entry["address"].lower(), entry["topics"][0].lower()
        if topic == SYNC_TOPIC:
            reserves[address] = decode_sync(log_data(entry))
            continue
        assert topic == SWAP_TOPIC
        pair = pairs.get(address)
        if pair is None:  # the reference pair's own swaps are no events
            continue
        quote_usd = pair.quote_usd
        if quote_usd is None:
            quote_usd = native_usd_price(
                reserves[ref["address"]],
                ref["native_is_token0"],
                ref["native_decimals"],
                ref["stable_decimals"],
                ref["stable_usd"],
            )
        event = decode_swap(
            entry,
            pair,
            quote_usd=quote_usd,
            reserves=reserves[address],
            chain=golden["chain"],
            now_ms=NOW_MS,
        )
        assert event is not None, f"swap {entry['transactionHash']} was not priced"
        events.append(event)
    return events


def frame_results(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [frame["params"]["result"] for frame in frames]


def test_the_golden_files_cover_both_sides_both_stablecoin_scales_and_a_native_quote():
    assert len(GOLDEN) >= 3, "re-record: python -m tests.support.record_uniswap_v2"
    pairs = [p for path in GOLDEN for p in load(path)["pairs"]]
    assert {p["target_is_token0"] for p in pairs} == {True, False}
    assert {p["quote_decimals"] for p in pairs if p["quote_usd"] is not None} >= {6, 18}
    assert any(p["quote_usd"] is None for p in pairs)
    assert any("reorg" in load(path) for path in GOLDEN)
    swaps = [s for path in GOLDEN for s in load(path)["expected_swaps"]]
    assert {s["side"] for s in swaps} == {"buy", "sell"}


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_subscription_frames_decode_to_the_swaps_the_recorder_made(path):
    golden = load(path)
    events = decode_all(golden, frame_results(golden["subscription"]["frames"]))
    expected = golden["expected_swaps"]
    assert len(events) == len(expected)
    for event, want in zip(events, expected, strict=True):
        assert {k: getattr(event, k) for k in EXACT} == {k: want[k] for k in EXACT}
        for name in FLOATS:
            assert getattr(event, name) == pytest.approx(want[name], rel=REL, abs=0), name


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_get_logs_decodes_to_the_same_events_as_the_subscription(path):
    golden = load(path)
    live = decode_all(golden, frame_results(golden["subscription"]["frames"]))
    backfill = decode_all(golden, golden["get_logs"]["result"])
    assert backfill == live and live


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_the_sync_before_each_swap_holds_the_reserves_the_pair_reported(path):
    golden = load(path)
    entries = frame_results(golden["subscription"]["frames"])
    for want in golden["expected_swaps"]:
        (at,) = [
            i
            for i, e in enumerate(entries)
            if e["transactionHash"] == want["tx_hash"]
            and int(e["logIndex"], 16) == want["log_index"]
        ]
        sync = entries[at - 1]
        assert sync["topics"][0] == SYNC_TOPIC and sync["transactionHash"] == want["tx_hash"]
        assert list(decode_sync(log_data(sync))) == want["made"]["reserves_after"]


def test_a_removed_swap_is_retracted_and_a_removed_sync_retracts_nothing():
    (golden,) = [g for g in map(load, GOLDEN) if "reorg" in g]
    reorg = golden["reorg"]
    entries = frame_results(reorg["frames"])
    assert all(e["removed"] is True for e in entries)
    got = [r for r in (retraction(e, golden["chain"]) for e in entries) if r is not None]
    assert got == [Retraction(**r) for r in reorg["expected_retractions"]]
    with pytest.raises(ValueError, match="retraction"):
        decode_swap(
            entries[-1],
            Pair(**golden["pairs"][0]),
            quote_usd=1.0,
            reserves=(1, 1),
            chain="eth",
            now_ms=NOW_MS,
        )


# --- edge cases on hand-built logs ------------------------------------------------------------
TARGET, QUOTE, ADDRESS = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def pair_of(*, target_is_token0: bool, quote_usd: float | None = 1.0) -> Pair:
    return Pair(
        address=ADDRESS,
        target=TARGET,
        quote=QUOTE,
        target_is_token0=target_is_token0,
        target_decimals=18,
        quote_decimals=6,
        quote_usd=quote_usd,
        total_supply=1_000_000 * 10**18,
    )


def swap_log(amounts: tuple[int, int, int, int], **extra: Any) -> dict[str, Any]:
    """A `Swap` log with (amount0In, amount1In, amount0Out, amount1Out)."""
    return {
        "address": ADDRESS,
        "topics": [SWAP_TOPIC, "0x" + "00" * 32, "0x" + "00" * 32],
        "data": "0x" + encode(["uint256"] * 4, list(amounts)).hex(),
        "blockNumber": "0x10",
        "transactionHash": "0x" + "dd" * 32,
        "logIndex": "0x3",
        **extra,
    }


E18, E6 = 10**18, 10**6


@pytest.mark.parametrize(
    "target_is_token0, amounts, reserves, side, amount_token, amount_usd, price_usd",
    [
        # target token0: 2 USDC in, 1 token out, pool 1,000 tokens / 3,000 USDC after
        (True, (0, 2 * E6, 1 * E18, 0), (1_000 * E18, 3_000 * E6), "buy", 1.0, 2.0, 3.0),
        (True, (5 * E18, 0, 0, 7 * E6), (1_000 * E18, 3_000 * E6), "sell", 5.0, 7.0, 3.0),
        # target token1: the same trades with the sides of the pool swapped
        (False, (2 * E6, 0, 0, 1 * E18), (3_000 * E6, 1_000 * E18), "buy", 1.0, 2.0, 3.0),
        (False, (0, 5 * E18, 7 * E6, 0), (3_000 * E6, 1_000 * E18), "sell", 5.0, 7.0, 3.0),
        # the target both in and out (a flash swap): the net amount, sold when more came in
        (True, (5 * E18, 0, 2 * E18, 1 * E6), (500 * E18, 250 * E6), "sell", 3.0, 1.0, 0.5),
        (False, (0, 1 * E18, 0, 4 * E18), (250 * E6, 500 * E18), "buy", 3.0, 0.0, 0.5),
    ],
)
def test_side_amounts_and_price_follow_the_target_side(
    target_is_token0, amounts, reserves, side, amount_token, amount_usd, price_usd
):
    pair = pair_of(target_is_token0=target_is_token0, quote_usd=1.0)
    event = decode_swap(
        swap_log(amounts), pair, quote_usd=1.0, reserves=reserves, chain="eth", now_ms=NOW_MS
    )
    assert event is not None
    assert (event.side, event.ca, event.pair) == (side, TARGET, ADDRESS)
    assert (event.tx_hash, event.log_index, event.block_number) == ("0x" + "dd" * 32, 3, 16)
    assert event.amount_token == pytest.approx(amount_token, rel=REL)
    assert event.amount_usd == pytest.approx(amount_usd, rel=REL)
    assert event.price_usd == pytest.approx(price_usd, rel=REL)
    assert event.market_cap_usd == pytest.approx(1_000_000 * price_usd, rel=REL)


@pytest.mark.parametrize(
    "amounts, quote_usd, why",
    [
        ((0, 2 * E6, 0, 0), 1.0, "no target token moved"),
        ((3 * E18, 0, 3 * E18, 1 * E6), 1.0, "as much target in as out"),
        ((0, 2 * E6, 1 * E18, 0), None, "the quote's USD price is unknown"),
        ((0, 0, 0, 0), None, "neither"),
    ],
)
@pytest.mark.parametrize("target_is_token0", [True, False])
def test_an_unpriceable_swap_is_none_and_needs_no_reserves(
    amounts, quote_usd, why, target_is_token0
):
    if not target_is_token0:  # the same trade with token0 and token1 exchanged
        amounts = (amounts[1], amounts[0], amounts[3], amounts[2])
    pair = pair_of(target_is_token0=target_is_token0, quote_usd=quote_usd)
    entry = swap_log(amounts)
    assert not is_priceable(entry, pair, quote_usd), why
    assert (
        decode_swap(entry, pair, quote_usd=quote_usd, reserves=None, chain="eth", now_ms=NOW_MS)
        is None
    ), why


def test_a_priceable_swap_without_reserves_is_an_error_not_a_guess():
    pair = pair_of(target_is_token0=True)
    entry = swap_log((0, 2 * E6, 1 * E18, 0))
    assert is_priceable(entry, pair, 1.0)
    with pytest.raises(ValueError, match="no reserves"):
        decode_swap(entry, pair, quote_usd=1.0, reserves=None, chain="eth", now_ms=NOW_MS)


@pytest.mark.parametrize(
    "extra, ts_ms",
    [
        ({"blockTimestamp": "0x65000000"}, 0x65000000 * 1000),
        ({}, 42),
        ({"blockTimestamp": None}, 42),
    ],
)
def test_the_time_is_the_blocks_when_the_node_sends_it(extra, ts_ms):
    entry = swap_log((0, 2 * E6, 1 * E18, 0), **extra)
    event = decode_swap(
        entry,
        pair_of(target_is_token0=True),
        quote_usd=1.0,
        reserves=(E18, E6),
        chain="eth",
        now_ms=42,
    )
    assert event is not None and event.ts_ms == ts_ms


@pytest.mark.parametrize(
    "reserves, native_is_token0, native_decimals, stable_decimals, stable_usd, expected",
    [
        ((1_000 * E18, 3_000_000 * E6), True, 18, 6, 1.0, 3_000.0),
        ((3_000_000 * E6, 1_000 * E18), False, 18, 6, 1.0, 3_000.0),
        ((2 * E18, 5_000 * E18), True, 18, 18, 0.9998, 2_500 * 0.9998),
        ((0, 3_000_000 * E6), True, 18, 6, 1.0, None),  # an empty reference pair: no price
        ((3_000_000 * E6, 0), False, 18, 6, 1.0, None),
    ],
)
def test_the_native_usd_price_from_the_reference_pair(
    reserves, native_is_token0, native_decimals, stable_decimals, stable_usd, expected
):
    got = native_usd_price(reserves, native_is_token0, native_decimals, stable_decimals, stable_usd)
    assert got == (None if expected is None else pytest.approx(expected, rel=REL))


def test_sync_data_decodes_to_both_reserves():
    data = encode(["uint112", "uint112"], [2**112 - 1, 12345])
    assert decode_sync(data) == (2**112 - 1, 12345)


def test_topics_and_selectors_are_the_uniswap_v2_abi():
    # published values (Etherscan's event and method ids), not derived from our own code
    assert SWAP_TOPIC == "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
    assert SYNC_TOPIC == "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
    assert (TOKEN0, TOKEN1, DECIMALS, TOTAL_SUPPLY) == (
        "0x0dfe1681",
        "0xd21220a7",
        "0x313ce567",
        "0x18160ddd",
    )
    assert (GET_RESERVES, GET_PAIR) == ("0x0902f1ac", "0xe6a43905")


def test_importing_the_decoder_loads_no_transport_queue_or_database():
    heavy = ("celery", "kombu", "sqlalchemy", "redis", "httpx", "websocket", "websockets")
    code = (
        "import json, sys\n"
        "import kakarot_workers.sources.uniswap_v2 as decoder\n"
        f"heavy = {heavy!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps({'file': decoder.__file__, 'loaded': loaded}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAKAROT_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["file"]) == ROOT / "kakarot_workers" / "sources" / "uniswap_v2.py"
    assert seen["loaded"] == []
