"""The alert set is exact across an EVM failover, checked against an independent model.

Real processes on a real local node (anvil): a USD stablecoin (6 decimals), WETH priced from a
WETH/USD reference pair, and nine watched tokens, a third of them quoted in WETH. A seeded random
sequence of swaps runs while worker A serves the batches; A then fails (kill -9, or SIGSTOP and,
once B took over, SIGCONT: a zombie); while nobody serves the batches more swaps are made, the
WETH price is moved by about 18 % on the reference pair, and more WETH-quoted swaps follow; B
takes over and back-fills; a last part of swaps runs under B.

The expected alerts come from `tests.support.evm_model`: every Swap and Sync log of the pairs
read back with `eth_getLogs`, replayed in chain order, priced as of each swap's place in the
chain and judged by a plain re-statement of the rules (not the product's rule code). The alert
log must be exactly that set (task, tx hash, log index, alert type), with no duplicate row, and
the values on each row must be the model's. WETH-quoted swaps are sized near the single-trade
threshold, so pricing the gap at the wrong WETH price (the price at restart, or the stale one
from before the move) changes the set: the test checks that it would. Against the product as it
was before "EVM prices as of the trade's block" (08fa2ad) it fails (precision 0.79–0.89,
recall 0.94–1.0): the WETH-quoted swaps B back-fills before the move are valued 18 % high.

`KAKAROT_TEST_SHOW_MODEL=1` prints the model's verdict on every swap.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from kakarot_workers import runtime
from kakarot_workers.control.reconcile import ensure_allocated
from kakarot_workers.db.models import MonitorAlertLog
from kakarot_workers.db.session import session_scope
from kakarot_workers.tools.admin import add_targets, create_config, create_task, target_row
from tests.e2e.test_ownership import holder_pid, live_by, reconcile_until
from tests.support.anvil import Uniswap
from tests.support.evm_model import (
    Judged,
    Market,
    Trade,
    Trader,
    alert_set,
    judge_all,
    read_logs,
    replay,
    repriced,
)
from tests.support.scenario import wait_for, wait_quiet

pytestmark = pytest.mark.faults  # a failover each (about 25 s): `make faults`

E18 = 10**18
E6 = 10**6
MIN_USD = 1_000.0  # min_transaction_usd
CUMULATIVE_USD = 5_000.0  # cumulative_min_amount_usd, both sides, within WINDOW_S
WINDOW_S = 3
TOKENS = 9
PACE_S = 0.12  # one swap per this many seconds: the trades spread over several block seconds
REFERENCE_MOVE = 1.18  # WETH's USD price × this during the outage
# swaps: A live (the WETH price drifting, then still), the outage (before and after the WETH
# move), B live
PART1_DRIFT, PART1_STILL, OUTAGE_MIXED, OUTAGE_NATIVE, PART3 = 10, 24, 14, 12, 30


def _block(anvil) -> int:
    return int(anvil.rpc("eth_blockNumber"), 16)


def _swaps(
    trader: Trader,
    rng: random.Random,
    pairs: list[str],
    count: int,
    *,
    drift: bool = False,
    native_size: tuple[float, float] = (0.85, 1.15),
) -> None:
    """`count` seeded swaps on `pairs`: WETH-quoted ones near the single-trade threshold (a
    fraction of it drawn from `native_size`: a mis-pricing of 10 % moves many across it),
    stablecoin-quoted ones of 10–140 % of it; with `drift`, now and then a small trade on the
    reference pair moves WETH's price while a consumer is live."""
    market = trader.market
    for _ in range(count):
        started = time.monotonic()
        if drift and rng.random() < 0.1:
            trader.swap_usd(market.reference, rng.choice(["buy", "sell"]), rng.uniform(5e3, 2e4))
        pair = rng.choice(pairs)
        side = rng.choice(["buy", "sell"])
        if market.quote_of[pair] == market.native:
            usd = rng.uniform(*native_size) * MIN_USD
        else:
            usd = rng.uniform(0.1, 1.4) * MIN_USD
        trader.swap_usd(pair, side, usd)
        time.sleep(max(0.0, PACE_S - (time.monotonic() - started)))


def _move_reference(trader: Trader, factor: float) -> tuple[float, float]:
    """Buy WETH with the stablecoin on the reference pair (three swaps) until its price is
    about `factor` times what it was; return (before, after)."""
    market = trader.market
    before = trader.native_usd()
    r0, r1 = trader.uni.reserves(market.reference)
    stable = r1 if market.token0[market.reference] == market.native else r0
    # x·y=k: the price goes as the square of the stable reserve
    usd_in = stable * (factor**0.5 - 1) / 0.997 / 10 ** market.decimals[market.stable]
    for _ in range(3):
        trader.swap_usd(market.reference, "buy", usd_in / 3)
    return before, trader.native_usd()


def _alert_rows(task_id: int) -> list[MonitorAlertLog]:
    with session_scope() as session:
        rows = session.scalars(select(MonitorAlertLog).where(MonitorAlertLog.task_id == task_id))
        found = list(rows)
        session.expunge_all()
        return found


def _price_as_of(moves: dict[int, float], block: int) -> float:
    return moves[max(b for b in moves if b <= block)]


def _describe(trade: Trade, phase: str, judged: Judged) -> str:
    """One trade as the model sees it, for a failure's report."""
    return (
        f"{trade.tx_hash}:{trade.log_index} block {trade.block} ts {trade.ts_s} [{phase}] "
        f"{trade.ca[:10]} {trade.quote[:10]}-quoted "
        f"{trade.side} ${trade.amount_usd:.2f} @ ${trade.price_usd:.6f} "
        f"(window ${judged.window_usd:.2f} over {judged.window_trades} trades) "
        f"→ {judged.alert_type}"
    )


def run_exact_failover(fault: str, seed: int, redis_client, workers, use_env, anvil) -> None:
    uni = Uniswap.deploy(anvil)
    usd = uni.token(decimals=6)
    weth = uni.token()
    reference = uni.pair(weth, usd, 1_000 * E18, 2_000_000 * E6)  # WETH at $2,000
    tokens = [uni.token() for _ in range(TOKENS)]
    quote_of_token = {t: (weth if i % 3 == 0 else usd) for i, t in enumerate(tokens)}
    pair_of = {
        t: uni.pair(t, q, 1_000_000 * E18, 500 * E18 if q == weth else 1_000_000 * E6)
        for t, q in quote_of_token.items()
    }  # every token at about $1
    market = Market(
        stable=usd,
        native=weth,
        reference=reference,
        stable_usd=1.0,
        decimals={usd: 6, weth: 18, **{t: 18 for t in tokens}},
        token0={p: uni.token0(p) for p in [reference, *pair_of.values()]},
        target_of={p: t for t, p in pair_of.items()},
        quote_of={p: quote_of_token[t] for t, p in pair_of.items()},
    )
    trader = Trader(uni, market)
    use_env(
        KAKAROT_BATCH_CAP="3",
        KAKAROT_EVM_CHAINS=json.dumps(
            {
                "eth": {
                    "ws_url": anvil.ws_url,
                    "quotes": {usd: 1.0, weth: None},
                    "wrapped_native": weth,
                    "reference_pair": reference,
                }
            }
        ),
    )
    with session_scope() as session:
        config = create_config(
            session,
            name="exact",
            chain="eth",
            source="evm",
            min_transaction_usd=MIN_USD,
            cumulative_min_amount_usd=CUMULATIVE_USD,
            time_interval=f"{WINDOW_S}s",
            events_config={"cooldown": {"seconds": 0}},
        )
        task = create_task(
            session, name="exact", task_type="batch", chain="eth", config_id=config.id
        )
        add_targets(
            session,
            task.id,
            [target_row("eth", t, f"T{i}", pair_of[t]) for i, t in enumerate(tokens)],
        )
        task_id = task.id
    batch_ids = ensure_allocated(task_id)
    assert len(batch_ids) >= 3

    # A sends its micro-batches at most every second: when it fails it holds trades it has read
    # and not sent (B must back-fill them; woken from SIGSTOP, A sends them late: refused)
    first = workers(
        "streams", env={"KAKAROT_EMIT_MAX_MS": "1000", "KAKAROT_EMIT_MAX_EVENTS": "100000"}
    )
    workers("alerts", pool="prefork", concurrency=2)
    reconcile_until(lambda: live_by(redis_client, batch_ids, first.pid), 20, "first live")
    second = workers("streams")  # the standby: idle until a batch is dispatched to it

    rng = random.Random(seed)
    pairs = sorted(pair_of.values())
    native_pairs = [p for p in pairs if market.quote_of[p] == weth]
    _swaps(trader, rng, pairs, PART1_DRIFT, drift=True)
    # No reference trade in the last ~50 blocks before the fault: B's back-fill (from A's last
    # checkpoint, at most ~1 s old, less 20 blocks of overlap) meets no WETH/USD Sync before the
    # move, so only reserves read as of its first block price the gap's first swaps right.
    _swaps(trader, rng, pairs, PART1_STILL)

    fault_block = _block(anvil)
    fault_at = time.monotonic()
    stopped = False
    if fault == "kill":
        first.kill()  # kill -9
    else:
        os.kill(first.pid, signal.SIGSTOP)
        stopped = True
    try:
        # just below the threshold at the price of the moment: priced at the (higher) price of
        # the takeover, they would alert
        _swaps(trader, rng, pairs, OUTAGE_MIXED, native_size=(0.87, 0.99))
        move_block = _block(anvil) + 1
        before, after = _move_reference(trader, REFERENCE_MOVE)
        # just above it: priced at the stale price from before the move, they would not
        _swaps(trader, rng, native_pairs, OUTAGE_NATIVE, native_size=(1.01, 1.13))
        assert after / before - 1 >= 0.10, f"WETH moved only {before:.2f} → {after:.2f}"
        assert all(holder_pid(redis_client, b) in (first.pid, None) for b in batch_ids), (
            "a batch was taken over before the outage's swaps were made"
        )
        taken = reconcile_until(
            lambda: live_by(redis_client, batch_ids, second.pid), 20, "failover"
        )
        takeover_block = _block(anvil)
        print(
            f"\nEVM failover after {fault}: live under B {time.monotonic() - fault_at:.1f}s "
            f"after the fault ({taken:.1f}s of reconcile after the outage's swaps); "
            f"WETH ${before:.2f} → ${after:.2f}"
        )
    finally:
        if stopped:
            os.kill(first.pid, signal.SIGCONT)  # woken: a zombie that lost its leases
    _swaps(trader, rng, pairs, PART3, drift=True)

    # --- the model -----------------------------------------------------------------------
    trades, moves = replay(market, read_logs(anvil, market.addresses))
    judged = judge_all(trades, min_usd=MIN_USD, cumulative_usd=CUMULATIVE_USD, window_s=WINDOW_S)
    expected = alert_set(judged)

    def phase(block: int) -> str:
        if block <= fault_block:
            return "A live"
        if block < move_block:
            return "outage"
        if block <= takeover_block:
            return "outage, after the WETH move"
        return "B live"

    # The scenario must be able to tell a right price from a wrong one: the gap priced at the
    # WETH price of the takeover (a back-fill pricing at restart), or at the price from before
    # the outage (a stale reference), gives another alert set.
    at_restart = _price_as_of(moves, takeover_block)
    stale = _price_as_of(moves, fault_block)
    in_gap = lambda t: fault_block < t.block <= takeover_block  # noqa: E731
    variants = {
        "priced at restart": repriced(trades, weth, lambda t: at_restart if in_gap(t) else None),
        "priced stale": repriced(trades, weth, lambda t: stale if in_gap(t) else None),
    }
    if os.environ.get("KAKAROT_TEST_SHOW_MODEL"):
        for t in trades:
            print(_describe(t, phase(t.block), judged[t.key]))
    blind = {}
    for name, variant in variants.items():
        wrong = alert_set(
            judge_all(variant, min_usd=MIN_USD, cumulative_usd=CUMULATIVE_USD, window_s=WINDOW_S)
        )
        blind[name] = len(wrong ^ expected)
    print(f"model: alerts that would differ if the gap were {blind}")

    # --- the fleet -----------------------------------------------------------------------
    # until every expected trade has a row (bounded, not asserted: the sets are compared below,
    # with the differences printed), then until nothing more comes
    wanted = {(tx, li) for tx, li, _ in expected}
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: wanted <= {(r.tx_hash, r.log_index) for r in _alert_rows(task_id)},
            20,
            "a row for every expected alert",
            poll_s=0.2,
        )
    wait_quiet(redis_client, quiet_s=1.5)
    if stopped:
        assert live_by(redis_client, batch_ids, second.pid), "the zombie disturbed the heir"
        first.kill()
    rows = _alert_rows(task_id)

    listed = [(r.tx_hash, r.log_index, r.alert_type) for r in rows]
    got = set(listed)
    duplicates = len(listed) - len(got)
    per_trade = len(listed) - len({(r.tx_hash, r.log_index) for r in rows})
    hits = got & expected
    precision = len(hits) / len(got) if got else 1.0
    recall = len(hits) / len(expected) if expected else 1.0
    by_type = {
        kind: sum(1 for *_, k in expected if k == kind)
        for kind in ("min_transaction", "cumulative_interval")
    }
    keys = runtime.keys()
    fenced = int(redis_client.get(keys.events_fenced) or 0)
    conflicts = int(redis_client.get(keys.alert_stat("window_conflicts")) or 0)
    rejected = int(redis_client.get(keys.events_rejected) or 0)
    print(
        f"{fault} seed {seed}: {len(trades)} watched swaps "
        f"({sum(1 for t in trades if t.quote == weth)} WETH-quoted, "
        f"{sum(1 for t in trades if fault_block < t.block <= takeover_block)} in the gap); "
        f"expected {len(expected)} alerts {by_type}; got {len(listed)} rows, "
        f"{len(got)} distinct; precision {precision:.3f} recall {recall:.3f}; "
        f"duplicates {duplicates} (rows per trade beyond one: {per_trade}); "
        f"events fenced {fenced}, window conflicts {conflicts}, events rejected {rejected}"
    )

    trade_of = {t.key: t for t in trades}
    problems = []
    for tx, li, _ in sorted(expected - got, key=lambda k: trade_of[k[:2]].block):
        j = judged[(tx, li)]
        made = sorted(r.alert_type for r in rows if (r.tx_hash, r.log_index) == (tx, li))
        problems.append(f"MISSING {_describe(j.trade, phase(j.trade.block), j)}; got {made}")
    for tx, li, kind in sorted(
        got - expected, key=lambda k: trade_of[k[:2]].block if k[:2] in trade_of else 0
    ):
        j = judged.get((tx, li))
        if j is None:
            problems.append(f"UNEXPECTED {tx}:{li} {kind}: no such watched swap on the chain")
            continue
        row = next(r for r in rows if (r.tx_hash, r.log_index, r.alert_type) == (tx, li, kind))
        problems.append(
            f"UNEXPECTED {kind} on {_describe(j.trade, phase(j.trade.block), j)}; the row says "
            f"${float(row.amount_usd):.2f} @ ${float(row.price_usd):.6f}"
        )
    if duplicates:
        problems.append(f"{duplicates} duplicate row(s)")

    # the values each row carries are the model's (prices as of the trade's block)
    for row in rows:
        j = judged.get((row.tx_hash, row.log_index))
        if j is None:
            continue
        t = j.trade
        when = datetime.fromtimestamp(t.ts_s, UTC).replace(tzinfo=None)
        checks = {
            "amount_usd": (float(row.amount_usd), t.amount_usd),
            "price_usd": (float(row.price_usd), t.price_usd),
        }
        for name, (value, model) in checks.items():
            if abs(value - model) > 1e-6 + 1e-9 * abs(model):
                problems.append(
                    f"VALUE {name} of {row.tx_hash}:{row.log_index} [{phase(t.block)}]: "
                    f"row {value!r}, model {model!r} ({value / model - 1:+.4%})"
                )
        side = (row.alert_data or {}).get("side")
        if side != t.side or row.event_time != when or row.ca != t.ca:
            problems.append(
                f"VALUE of {row.tx_hash}:{row.log_index}: row {side} {row.event_time} {row.ca}, "
                f"model {t.side} {when} {t.ca}"
            )
    for line in problems:
        print(line)
    assert not problems, f"{len(problems)} difference(s) from the model (printed above)"
    assert precision == 1.0 and recall == 1.0 and duplicates == 0
    for name, differ in blind.items():
        assert differ, f"the scenario cannot tell a gap {name} from one priced right"


def test_alerts_are_exact_across_a_kill_9_failover(db_url, redis_client, workers, use_env, anvil):
    run_exact_failover("kill", 7, redis_client, workers, use_env, anvil)


def test_alerts_are_exact_across_a_paused_owner_and_its_zombie(
    db_url, redis_client, workers, use_env, anvil
):
    run_exact_failover("sigstop", 11, redis_client, workers, use_env, anvil)
