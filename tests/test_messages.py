import pytest

from kakarot_workers.notify.messages import (
    TELEGRAM_MAX_CHARS,
    WECOM_MAX_BYTES,
    alert_line,
    short,
    telegram_html,
    usd,
    wecom_markdown,
)

TX = "0x" + "cd" * 32
CA = "0x" + "ab" * 20


def _summary(**fields):
    summary = {
        "task_id": 3,
        "chain": "bsc",
        "ca": CA,
        "symbol": "PEPE<&>",
        "rule": "price_change",
        "rules": [
            {
                "rule": "price_change",
                "values": {
                    "change_pct": 12.4,
                    "threshold_pct": 10,
                    "direction": "up",
                    "window": "5m",
                },
            },
            {
                "rule": "min_transaction",
                "values": {"amount_usd": 12345.0, "threshold_usd": 5000.0, "side": "buy"},
            },
        ],
        "price_usd": 0.0123,
        "change_pct": 12.4,
        "market_cap_usd": 2_500_000.0,
        "top10_holders_pct": None,
        "incomplete": True,
        "missing": ["top10_holders_pct"],
        "tx_hash": TX,
        "explorer_url": f"https://bscscan.com/tx/{TX}",
    }
    summary.update(fields)
    return summary


def test_alert_line_has_what_a_trader_needs():
    line = alert_line(_summary())
    assert "task 3" in line and "PEPE" in line and "0xabab" in line
    assert "price +12.40% in 5m (up ≥ 10%)" in line
    assert "single buy $12,345.00 ≥ $5,000.00" in line
    assert "price $0.0123" in line and "change +12.40%" in line and "mcap $2,500,000.00" in line
    assert "incomplete data: top10_holders_pct unknown" in line
    assert line.endswith(f"https://bscscan.com/tx/{TX}")


def test_telegram_html_escapes_and_links():
    text = telegram_html([_summary()])
    assert "<b>PEPE&lt;&amp;&gt; on BSC</b>" in text
    assert f"<code>{CA}</code>" in text
    assert f'<a href="https://bscscan.com/tx/{TX}">tx</a>' in text
    assert "⚠ incomplete data" in text


def test_wecom_markdown():
    text = wecom_markdown([_summary(incomplete=False)])
    assert text.startswith("### PEPE<&> on BSC")
    assert "> price +12.40% in 5m" in text and f"[tx](https://bscscan.com/tx/{TX})" in text
    assert "incomplete" not in text


def test_digest_lists_every_alert_with_a_header():
    text = telegram_html([_summary(symbol="AAA"), _summary(symbol="BBB")])
    assert text.startswith("<b>2 alerts of task 3: AAA, BBB</b>")
    assert text.count("🚨") == 2


@pytest.mark.parametrize(
    "render, fits",
    [
        (telegram_html, lambda t: len(t) <= TELEGRAM_MAX_CHARS),
        (wecom_markdown, lambda t: len(t.encode()) <= WECOM_MAX_BYTES),
    ],
)
def test_a_long_digest_keeps_whole_alerts_within_the_limit(render, fits):
    text = render([_summary(symbol=f"T{i}") for i in range(100)])
    assert fits(text)
    assert "… and " in text and text.rstrip().endswith("more")
    assert text.count(f"https://bscscan.com/tx/{TX}") >= 5


def test_short_and_usd():
    assert short("0x1234567890abcdef") == "0x1234…cdef"
    assert short("0x12") == "0x12"
    assert usd(None) == "?" and usd(1234.5) == "$1,234.50" and usd(0.000012345) == "$1.2345e-05"
