"""The hot standby: which trades it sends when it takes over from the owner's mark, and the slot
it holds."""

from kakarot_workers.events import SwapEvent
from kakarot_workers.sources import Retraction
from kakarot_workers.streams.standby import Buffer, Mark, mark_of


def _trade(n: int, ts_ms: int) -> SwapEvent:
    return SwapEvent("bsc", "0x" + "a" * 40, f"0x{n:064x}", n % 4, ts_ms, "buy", 10.0, 1.0)


def _buffer(*trades: tuple[float, SwapEvent], keep_s: float = 30) -> Buffer:
    buffer = Buffer(keep_s)
    for at, trade in trades:
        buffer.add(trade, at)
    return buffer


def test_the_trades_after_the_owners_mark_exactly():
    trades = [_trade(i, 1_000 + i) for i in range(6)]
    buffer = _buffer(*((float(i), t) for i, t in enumerate(trades)))
    assert buffer.after(mark_of(trades[3])) == trades[4:]
    assert buffer.after(mark_of(trades[5])) == []
    assert buffer.after(None) == trades, "an owner that sent nothing: everything"


def test_a_mark_never_seen_here_sends_what_is_not_older_than_it():
    trades = [_trade(i, 1_000 + 10 * i) for i in range(5)]
    buffer = _buffer(*((float(i), t) for i, t in enumerate(trades)))
    unseen = Mark("0x" + "f" * 64, 0, 1_020)
    assert buffer.after(unseen) == trades[2:]


def test_old_trades_leave_and_retracted_ones_are_not_sent():
    trades = [_trade(i, 1_000 + i) for i in range(5)]
    buffer = _buffer(*((float(10 * i), t) for i, t in enumerate(trades)), keep_s=25)
    assert buffer.after(None) == trades[2:]  # arrived more than 25 s before the last one
    buffer.drop(Retraction("bsc", trades[3].tx_hash, trades[3].log_index, None))
    assert buffer.after(None) == [trades[2], trades[4]]


def test_a_mark_survives_its_text_form():
    mark = mark_of(_trade(7, 123))
    assert Mark.decode(mark.encode()) == mark
    assert Mark.decode("") is None and Mark.decode("junk") is None


def test_a_standby_holds_a_slot_as_a_batch_does():
    from kakarot_workers.streams.node import could_take_a_batch

    node = {"queues": "streams", "slots": "4", "batch_count": "2"}
    assert could_take_a_batch({**node, "standby_count": "1"})
    assert not could_take_a_batch({**node, "standby_count": "2"})
