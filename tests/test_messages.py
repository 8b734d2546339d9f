from kakarot_workers.messages import alert_line, short, usd


def test_alert_line_has_what_a_trader_needs():
    line = alert_line(
        task_id=3,
        symbol="PEPE",
        ca="0x" + "ab" * 20,
        rule="min_transaction",
        values={"amount_usd": 12345.0, "threshold_usd": 5000.0, "side": "buy"},
        price_usd=0.0123,
        tx_hash="0x" + "cd" * 32,
        explorer_url="https://bscscan.com/tx/0x" + "cd" * 32,
    )
    assert "task 3" in line and "PEPE" in line and "0xabab" in line
    assert "single buy $12,345.00 ≥ $5,000.00" in line
    assert "price $0.0123" in line
    assert line.endswith("https://bscscan.com/tx/0x" + "cd" * 32)


def test_short_and_usd():
    assert short("0x1234567890abcdef") == "0x1234…cdef"
    assert short("0x12") == "0x12"
    assert usd(None) == "?" and usd(1234.5) == "$1,234.50" and usd(0.000012345) == "$1.2345e-05"
