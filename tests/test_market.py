from kakarot_workers.tools.market import WHALE_PROBABILITY, Market, token_address


def test_same_seed_same_trades():
    a = Market.with_tokens(seed=3, count=20)
    b = Market.with_tokens(seed=3, count=20)
    assert [a.next_trade() for _ in range(500)] == [b.next_trade() for _ in range(500)]


def test_other_seed_other_trades():
    a = Market.with_tokens(seed=3, count=20)
    b = Market.with_tokens(seed=4, count=20)
    assert [t.tx_hash for t in (a.next_trade() for _ in range(10))] != [
        t.tx_hash for t in (b.next_trade() for _ in range(10))
    ]


def test_trades_are_unique_and_plausible():
    market = Market.with_tokens(seed=1, count=50)
    trades = [market.next_trade() for _ in range(20_000)]
    assert len({(t.tx_hash, t.log_index) for t in trades}) == len(trades)
    assert {t.ca for t in trades} == {token_address(1, i) for i in range(50)}
    assert all(t.amount_usd > 0 and t.price_usd > 0 for t in trades)
    sides = [t.side for t in trades]
    assert 0.4 < sides.count("buy") / len(sides) < 0.65
    whales = sum(t.amount_usd > 20 * 300 * 3 for t in trades)  # far beyond the log-normal body
    assert 0.3 * WHALE_PROBABILITY * len(trades) < whales < 4 * WHALE_PROBABILITY * len(trades)


def test_tokens_added_later_trade_too():
    market = Market.with_tokens(seed=1, count=1)
    market.add_token("0x" + "c" * 40, "LATE")
    assert "0x" + "c" * 40 in {market.next_trade().ca for _ in range(2000)}
