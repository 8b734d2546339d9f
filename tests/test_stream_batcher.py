from kakarot_workers.streams.consumer import EventBatcher


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
