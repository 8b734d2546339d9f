"""Dispatch against a real Redis broker: batches with a consumer are not sent again."""

import json

from kakarot_workers import runtime
from kakarot_workers.control import dispatch_unserved


def test_only_batches_without_a_consumer_are_dispatched(redis_client):
    keys = runtime.keys()
    redis_client.hset(keys.batch_status(1), "status", "running")
    redis_client.hset(keys.batch_status(2), "status", "connecting")
    redis_client.hset(keys.batch_status(3), "status", "stopped")
    assert dispatch_unserved([1, 2, 3, 4]) == [3, 4]
    messages = [json.loads(m) for m in redis_client.lrange("streams", 0, -1)]
    assert sorted(m["headers"]["task"] for m in messages) == ["kakarot.streams.consume_batch"] * 2
    assert sorted(json.loads(__import__("base64").b64decode(m["body"]))[0][0] for m in messages) == [3, 4]
    assert all(m["content-type"] == "application/json" for m in messages)  # never pickle
