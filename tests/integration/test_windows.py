"""Sliding windows and cooldowns on a real Redis: exact, idempotent, order-independent, and
correct when several processes feed the same token at once."""

import multiprocessing
import random

import hypothesis
from hypothesis import strategies as st

from kakarot_workers import runtime
from kakarot_workers.alerts.cooldown import Claim, Cooldowns
from kakarot_workers.alerts.rules import WindowStats
from kakarot_workers.alerts.windows import Observation, Windows
from kakarot_workers.events import SwapEvent
from tests.support.scenario import wait_for

CA = "0x" + "ab" * 20
W = 60  # seconds


def _trade(n: int, ts_ms: int, amount: float, price: float = 1.0, side: str = "buy") -> SwapEvent:
    return SwapEvent(
        chain="bsc",
        ca=CA,
        tx_hash=f"0x{n:064x}",
        log_index=n % 3,
        ts_ms=ts_ms,
        side=side,  # type: ignore[arg-type]
        amount_usd=amount,
        price_usd=price,
    )


def _seen(windows: Windows, observations: list[Observation]) -> list[WindowStats]:
    return [found[W] for found in windows.observe(observations)]


def _windows() -> Windows:
    return Windows(runtime.redis_client(), runtime.keys())


def _final(windows: Windows) -> WindowStats:
    return windows.snapshot(1, CA, W)


def test_sums_are_exact_and_old_trades_leave(redis_client):
    windows = _windows()
    t0 = 1_000_000
    trades = [
        _trade(i, t0 + i * 10_000, 100.01, price=1.0 + i, side="buy" if i % 2 else "sell")
        for i in range(12)
    ]
    seen = _seen(windows, [Observation(1, (W,), t) for t in trades])
    # trade 11 at t0+110 s sees (t0+50 s, t0+110 s]: trades 6..11
    last = seen[-1]
    assert last.trades == 6 and last.volume_usd == round(6 * 100.01, 2)
    assert last.buy_usd == round(3 * 100.01, 2) and last.sell_usd == round(3 * 100.01, 2)
    assert (last.open_price, last.last_price) == (7.0, 12.0)
    # trade 9 saw trades 4..9; judged again (a re-delivered message) it sees the same
    assert (seen[9].open_price, seen[9].last_price) == (5.0, 10.0)
    again = _seen(windows, [Observation(1, (W,), trades[9])])[0]
    assert again == seen[9]
    # trade 3 has left the window: judged again, it sees the window as it is now
    assert _seen(windows, [Observation(1, (W,), trades[3])])[0] == last


def test_out_of_order_and_duplicates_give_the_same_window(redis_client):
    t0 = 5_000_000
    rng = random.Random(7)
    trades = [
        _trade(i, t0 + rng.randrange(0, 50_000), round(rng.uniform(1, 500), 2), rng.uniform(1, 2))
        for i in range(200)
    ]
    in_order = sorted(trades, key=lambda t: t.ts_ms)
    shuffled = trades[:] + rng.sample(trades, 50)  # with re-deliveries
    rng.shuffle(shuffled)

    ordered = _windows()
    _seen(ordered, [Observation(1, (W,), t) for t in in_order])
    expected = _final(ordered)
    redis_client.flushall()
    mixed = _windows()
    for start in range(0, len(shuffled), 17):
        _seen(mixed, [Observation(1, (W,), t) for t in shuffled[start : start + 17]])
    got = _final(mixed)

    assert got.trades == expected.trades == 200
    assert got.volume_usd == expected.volume_usd == round(sum(t.amount_usd for t in trades), 2)
    assert (got.open_price, got.last_price) == (expected.open_price, expected.last_price)
    first = min(trades, key=lambda t: (t.ts_ms, t.tx_hash))
    assert got.open_price == first.price_usd


def test_a_late_trade_inside_the_window_counts_one_outside_does_not(redis_client):
    windows = _windows()
    t0 = 9_000_000
    _seen(windows, [Observation(1, (W,), _trade(1, t0 + 100_000, 10.0))])
    late = _seen(windows, [Observation(1, (W,), _trade(2, t0 + 50_000, 20.0, price=0.5))])[0]
    assert late.volume_usd == 30.0 and late.open_price == 0.5
    too_old = _seen(windows, [Observation(1, (W,), _trade(3, t0 + 30_000, 40.0))])[0]
    assert too_old.volume_usd == 30.0 and too_old.trades == 2


def test_a_trade_sent_three_times_with_different_values_counts_once(redis_client):
    # a back-fill re-sends a trade priced otherwise: identity (chain, tx, log index) decides
    windows = _windows()
    t0 = 2_000_000
    first = _seen(windows, [Observation(1, (W,), _trade(1, t0, 100.0, price=2.0))])[0]
    copies = [
        _trade(1, t0, 130.0, price=2.6),  # other amount and price
        _trade(1, t0 + 5_000, 100.0, price=2.0, side="sell"),  # another time and side
        _trade(1, t0, 100.0, price=2.0),  # the very same values: a re-delivery
    ]
    seen = windows.observe([Observation(1, (W,), c) for c in copies])
    assert seen[0] is None and seen[1] is None, "a copy with other values is a conflict"
    assert seen[2] == {W: first}, "an identical copy is judged as the first one was"
    after = _seen(windows, [Observation(1, (W,), _trade(2, t0 + 10_000, 1.0, price=3.0))])[0]
    assert (after.trades, after.volume_usd, after.buy_usd) == (2, 101.0, 101.0)
    assert (after.open_price, after.last_price) == (2.0, 3.0)
    assert _final(windows) == after


def test_windows_of_different_tasks_and_lengths_are_separate(redis_client):
    windows = _windows()
    trade = _trade(1, 1_000, 10.0)
    stats = windows.observe([Observation(1, (60, 300), trade), Observation(2, (60,), trade)])
    assert [sorted(s) for s in stats] == [[60, 300], [60]]
    assert all(w.volume_usd == 10.0 and w.trades == 1 for s in stats for w in s.values())


def test_one_token_keeps_each_window_length_exact(redis_client):
    # trades every 10 s for 10 min: the 1m window holds 6, the 5m window 30
    windows = _windows()
    t0 = 40_000_000
    trades = [_trade(i, t0 + i * 10_000, 1.0 + i, price=1.0 + i) for i in range(60)]
    seen = windows.observe([Observation(1, (60, 300), t) for t in trades])
    last = seen[-1]
    assert last[60].trades == 6 and last[60].volume_usd == sum(1.0 + i for i in range(54, 60))
    assert last[300].trades == 30 and last[300].volume_usd == sum(1.0 + i for i in range(30, 60))
    assert (last[60].open_price, last[300].open_price, last[300].last_price) == (55.0, 31.0, 60.0)
    # a window length the config did not have before is built from the trades kept
    assert windows.snapshot(1, CA, 120).trades == 0
    grown = windows.observe([Observation(1, (120, 300), _trade(99, t0 + 600_000, 5.0))])[0]
    assert grown[120].trades == 12 and grown[300].trades == 30


def test_a_server_that_lost_its_scripts_loads_them_again(redis_client):
    windows = _windows()
    first = _seen(windows, [Observation(1, (W,), _trade(1, 1_000, 10.0))])[0]
    redis_client.script_flush()  # a restarted or flushed Redis forgets its scripts
    second = _seen(windows, [Observation(1, (W,), _trade(2, 2_000, 5.0))])[0]
    assert (first.trades, second.trades, second.volume_usd) == (1, 2, 15.0)


def test_many_trades_in_one_call_keep_their_order(redis_client):
    # msgpack arrays change their header at 16 and 65,536 elements: results still line up
    windows = _windows()
    trades = [_trade(i, 1_000 + i // 2, 1.0) for i in range(70_000)]  # all within 60 s
    seen = _seen(windows, [Observation(1, (W,), t) for t in trades])
    assert len(seen) == len(trades)
    assert [s.trades for s in seen[:20]] == list(range(1, 21))
    assert seen[-1].trades == len(trades) and seen[-1].volume_usd == len(trades)


def _feed(trades: list[tuple[int, int, float, str]], seed: int) -> None:
    rng = random.Random(seed)
    windows = _windows()
    events = [_trade(n, ts, amount, side=side) for n, ts, amount, side in trades]
    rng.shuffle(events)
    for start in range(0, len(events), 25):
        windows.observe([Observation(1, (W,), e) for e in events[start : start + 25]])


def test_several_processes_feeding_one_token_add_up_exactly(redis_client):
    # Given 1,200 trades over 100 s, each sent by two of four processes at once
    rng = random.Random(3)
    t0 = 20_000_000
    trades = [
        (
            n,
            t0 + rng.randrange(0, 100_000),
            round(rng.uniform(1, 1000), 2),
            rng.choice(["buy", "sell"]),
        )
        for n in range(1200)
    ]
    shares = [[] for _ in range(4)]
    for trade in trades:
        for who in rng.sample(range(4), 2):
            shares[who].append(trade)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_feed, args=(share, i)) for i, share in enumerate(shares)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    # Then the window holds exactly the trades of the last 60 s before the newest
    head = max(ts for _, ts, _, _ in trades)
    inside = [t for t in trades if t[1] > head - W * 1000]
    got = _final(_windows())
    assert got.trades == len(inside)
    assert round(got.volume_usd * 100) == sum(round(a * 100) for _, _, a, _ in inside)
    assert round(got.buy_usd * 100) == sum(round(a * 100) for _, _, a, s in inside if s == "buy")


def test_cooldown_claims_once_and_the_claimant_keeps_it(redis_client):
    cooldowns = Cooldowns(runtime.redis_client(), runtime.keys())
    first, second = Claim(1, CA, "bsc:0x1:0", 1), Claim(1, CA, "bsc:0x2:0", 1)
    assert cooldowns.claim([first, second]) == [True, False]
    assert cooldowns.claim([first]) == [True]  # the same event again: a re-delivery
    assert cooldowns.claim([second]) == [False]
    assert cooldowns.claim([Claim(2, CA, "bsc:0x2:0", 1)]) == [True]  # another task
    assert cooldowns.claim([Claim(1, CA, "bsc:0x3:0", 0)]) == [True]  # cooldown off
    key = runtime.keys().cooldown(1, CA)
    assert 0 < redis_client.pttl(key) <= 1000
    # the end this process remembers is never later than Redis's
    wait_for(lambda: not redis_client.exists(key), 5, "the 1 s cooldown to end", poll_s=0.01)
    assert cooldowns.claim([second]) == [True]


def _claim_calls(client) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_cooldown_seen_held_is_answered_without_redis_until_it_ends(redis_client):
    here = Cooldowns(runtime.redis_client(), runtime.keys())
    there = Cooldowns(runtime.redis_client(), runtime.keys())  # another process's view
    holder, rival = Claim(1, CA, "bsc:0x1:0", 1), Claim(1, CA, "bsc:0x2:0", 1)
    assert there.claim([holder]) == [True]
    assert here.claim([rival]) == [False]  # asked Redis, and learnt who holds it until when
    calls = _claim_calls(redis_client)
    assert here.claim([rival, holder]) == [False, True]  # the holder again: a re-delivery
    assert there.claim([holder, rival]) == [True, False]
    assert here.claim([Claim(1, CA, "bsc:0x3:0", 0)]) == [True]  # cooldown off
    assert _claim_calls(redis_client) == calls  # all answered from memory
    # the remembered end is never later than Redis's: once the key is gone, the rival wins
    key = runtime.keys().cooldown(1, CA)
    wait_for(lambda: not redis_client.exists(key), 5, "the 1 s cooldown to end", poll_s=0.01)
    assert here.claim([rival]) == [True]
    assert _claim_calls(redis_client) == calls + 1
    assert there.claim([holder]) == [False]  # the rival holds it now


class _ModelWindows:
    """The windows from first principles, for one token: every counted trade kept, each window
    summed afresh over (head − W, head] after each trade. What `window_observe.lua` must equal."""

    def __init__(self, lengths_ms: tuple[int, ...]) -> None:
        self.lengths = sorted(lengths_ms)
        self.counted: dict[str, tuple[int, str, int, str, str]] = {}  # id → ts, member, …
        self.seen: dict[str, tuple[str, tuple[WindowStats, ...]]] = {}  # id → member, result
        self.head: tuple[int, str, str] | None = None  # ts, member, price

    def observe(self, trade_id: str, ts: int, cents: int, price: str, side: str, quiet: bool):
        """What the trade saw; {} for a quiet trade (what it saw is not kept: a copy that
        reads it sees the windows as they are then)."""
        member = f"{trade_id}|{cents}|{price}|{side}"
        if trade_id in self.seen:
            first, result = self.seen[trade_id]
            if first != member:
                return None
            return {} if quiet else result or self._windows()
        if self.head is not None and ts <= self.head[0] - self.lengths[-1]:
            return {} if quiet else self._windows()  # older than the longest: not counted
        self.counted[trade_id] = (ts, member, cents, price, side)
        if self.head is None or (ts, member) > self.head[:2]:
            self.head = (ts, member, price)
        for gone in [i for i, t in self.counted.items() if t[0] <= self.head[0] - self.lengths[-1]]:
            del self.counted[gone]  # left every window: forgotten, its record too
            self.seen.pop(gone, None)
        result = self._windows()
        self.seen[trade_id] = (member, () if quiet else result)
        return {} if quiet else result

    def _windows(self) -> tuple[WindowStats, ...]:
        out = []
        for w in self.lengths:
            inside = sorted(
                (ts, member, cents, price, side)
                for ts, member, cents, price, side in self.counted.values()
                if ts > self.head[0] - w  # type: ignore[index]
            )
            buys = sum(c for _, _, c, _, s in inside if s == "b")
            sells = sum(c for _, _, c, _, s in inside if s == "s")
            out.append(
                WindowStats(
                    w // 1000,
                    (buys + sells) / 100,
                    buys / 100,
                    sells / 100,
                    len(inside),
                    float(inside[0][3]) if inside else 0.0,
                    float(self.head[2]),  # type: ignore[index]
                )
            )
        return tuple(out)


_model_runs = iter(range(1, 10**9))


@hypothesis.settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    trades=st.lists(
        st.tuples(
            st.integers(0, 11),  # the trade's id: copies, and copies with other values
            # ts ms on a coarse grid: ties, late trades, trades right on a window's edge,
            # trades leaving every window
            st.integers(0, 36).map(lambda q: q * 250),
            st.integers(1, 500),  # cents
            st.sampled_from([0.5, 1.0, 1.25, 2.0]),
            st.sampled_from(["buy", "sell"]),
            st.booleans(),  # quiet: its caller reads no window of it
        ),
        min_size=1,
        max_size=40,
    ),
    lengths=st.sampled_from([(1,), (3,), (1, 3), (2, 5)]),
    cuts=st.lists(st.integers(1, 50), max_size=4),
    copies=st.lists(st.tuples(st.integers(0, 39), st.booleans()), max_size=10),
)
def test_the_windows_equal_a_model_summed_afresh_after_every_trade(
    redis_client, trades, lengths, cuts, copies
):
    """Any sequence of trades of one token, sent in micro-batches cut anywhere: each trade sees
    exactly the windows a model that keeps every trade and sums each window afresh sees; a copy
    sees what its first did (the windows as they are, if its first was quiet), a copy with other
    values is a conflict. Quiet trades count alike and are given no windows."""
    task_id, windows = next(_model_runs), _windows()
    model = _ModelWindows(tuple(s * 1000 for s in lengths))
    # re-deliveries: the same values again, read or not
    trades = trades + [(*trades[i % len(trades)][:5], q) for i, q in copies]
    t0 = 1_000_000_000
    events = [
        SwapEvent(
            chain="bsc",
            ca=CA,
            tx_hash=f"0x{n:064x}",
            log_index=0,
            ts_ms=t0 + ts,
            side=side,  # type: ignore[arg-type]
            amount_usd=cents / 100,
            price_usd=price,
        )
        for n, ts, cents, price, side, _ in trades
    ]
    quiet = [q for *_, q in trades]
    expected = [
        model.observe(e.key, e.ts_ms - t0, trade[2], repr(e.price_usd), e.side[0], trade[5])
        for e, trade in zip(events, trades, strict=True)
    ]
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    seen = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        seen += windows.observe(
            [
                Observation(task_id, lengths, e, quiet=q)
                for e, q in zip(events[start:end], quiet[start:end], strict=True)
            ]
        )
    got = [
        None if s is None else {} if not s else tuple(s[w] for w in sorted(lengths)) for s in seen
    ]
    assert got == expected
