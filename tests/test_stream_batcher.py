from kakarot_workers.streams.emitter import EventBatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_flushes_when_full():
    sent: list[list[dict]] = []
    batcher = EventBatcher(3, 1000, sent.append, Clock())
    for i in range(7):
        batcher.add({"i": i})
    assert [len(b) for b in sent] == [3, 3]
    batcher.flush()
    assert [len(b) for b in sent] == [3, 3, 1]


def test_flushes_when_due_not_before():
    sent: list[list[dict]] = []
    clock = Clock()
    batcher = EventBatcher(100, 50, sent.append, clock)
    batcher.add({"i": 1})
    clock.now = 0.049
    batcher.flush_if_due()
    assert sent == []
    clock.now = 0.050
    batcher.flush_if_due()
    assert sent == [[{"i": 1}]]
    batcher.flush_if_due()
    assert len(sent) == 1  # nothing pending, nothing sent


def test_age_counts_from_the_first_pending_event():
    sent: list[list[dict]] = []
    clock = Clock()
    batcher = EventBatcher(100, 50, sent.append, clock)
    batcher.add({"i": 1})
    clock.now = 0.04
    batcher.add({"i": 2})
    clock.now = 0.05
    batcher.flush_if_due()
    assert sent == [[{"i": 1}, {"i": 2}]]


class Broker:
    """A send that fails while `down`, as kombu does when Redis does not answer."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[list[dict]] = []

    def send(self, events: list[dict]) -> None:
        import kombu.exceptions

        if self.down:
            raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1. Refused.")
        self.sent.append(events)


def _events(*ids: int) -> list[dict]:
    return [{"tx_hash": f"0x{i}", "fencing_token": 1} for i in ids]


def test_the_emitter_keeps_events_while_the_broker_is_away_and_sends_them_in_order():
    from kakarot_workers.streams.emitter import RETRY_S, Emitter

    clock, broker = Clock(), Broker()
    emitter = Emitter(broker.send, cap_events=100, clock=clock)
    emitter.emit(_events(1))
    broker.down = True
    emitter.emit(_events(2, 3))
    emitter.emit(_events(4))  # within RETRY_S of the failure: kept without a try
    assert emitter.broker_down and emitter.unsent_events == 3
    clock.now += RETRY_S
    emitter.retry()  # still down: kept
    assert emitter.unsent_events == 3
    broker.down = False
    clock.now += RETRY_S
    emitter.retry()  # the broker is back, but the consumer has not confirmed its lease yet
    emitter.emit(_events(5))  # behind the kept ones
    assert [e["tx_hash"] for m in broker.sent for e in m] == ["0x1"]
    emitter.resume()
    emitter.retry()
    assert [e["tx_hash"] for m in broker.sent for e in m] == ["0x1", "0x2", "0x3", "0x4", "0x5"]
    assert not emitter.broker_down and emitter.unsent_events == 0 and emitter.sent_events == 5
    emitter.emit(_events(6))  # and new events go straight out again
    assert broker.sent[-1] == _events(6)


def test_the_emitter_drops_the_newest_beyond_its_cap_and_keeps_the_oldest():
    from kakarot_workers.streams.emitter import Emitter

    clock, broker = Clock(), Broker()
    broker.down = True
    emitter = Emitter(broker.send, cap_events=3, clock=clock)
    emitter.emit(_events(1, 2))
    emitter.emit(_events(3, 4))  # would make 4: dropped, and counted
    emitter.emit(_events(5))
    assert emitter.unsent_events == 3 and emitter.dropped == 2
    broker.down = False
    clock.now += 5
    emitter.resume()
    emitter.retry()
    assert [e["tx_hash"] for m in broker.sent for e in m] == ["0x1", "0x2", "0x5"]


def test_a_retracted_event_the_emitter_keeps_is_never_sent():
    from kakarot_workers.streams.emitter import Emitter

    clock, broker = Clock(), Broker()
    broker.down = True
    emitter = Emitter(broker.send, cap_events=10, clock=clock)
    emitter.emit(_events(1, 2))
    emitter.emit(_events(3))
    assert emitter.keep_only(lambda e: e["tx_hash"] not in ("0x2", "0x3")) == 2
    assert emitter.keep_only(lambda e: e["tx_hash"] != "0x9") == 0
    broker.down = False
    clock.now += 5
    emitter.resume()
    emitter.retry()
    assert broker.sent == [_events(1)] and emitter.unsent_events == 0
