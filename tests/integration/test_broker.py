"""kombu's Redis channel, as the fleet's broker transport configures it."""

from __future__ import annotations

import kombu
import pytest
import redis

from kakarot_workers.broker import Transport


def test_a_channel_of_a_connection_taken_apart_fails_as_a_lost_connection(redis_server):
    """Celery's cleanup of a lost broker connection takes it apart (`collect()`); an ack or
    reject of one of its messages that comes later must fail as a connection error, which
    Celery logs and survives, not as an AttributeError that stops the worker. (The Sentinel
    channel shares the code: `broker.CheckedItems`.)"""
    connection = kombu.Connection(redis_server.url, transport=Transport)
    channel = connection.channel()
    with channel.conn_or_acquire() as client:  # the channel keeps this client
        client.ping()
    connection.collect()
    with pytest.raises(redis.exceptions.ConnectionError), channel.conn_or_acquire():
        pass


def test_a_booked_message_comes_back_whole_when_restored(redis_server):
    """A received message is booked as unacknowledged (its envelope encoded by msgspec);
    kombu's restore reads that booking back: a message given back, or left by a worker lost
    before its ack, is delivered again with the same body and headers."""
    body = {"v": 1, "rows": [["bsc", "0xabc", 1.5, None, "é"]], "n": 2**40}
    connection = kombu.Connection(redis_server.url, transport=Transport)
    client = redis.Redis.from_url(redis_server.url)
    with connection, connection.SimpleQueue("restore-test", serializer="json") as queue:
        queue.put(body, headers={"task": "t"})
        first = queue.get(timeout=5)
        assert client.hlen("unacked") == 1, "booked as unacknowledged"
        first.requeue()  # kombu's restore_by_tag, from the booking
        assert client.hlen("unacked") == 0
        again = queue.get(timeout=5)
        assert again.payload == body and again.headers["task"] == "t"
        queue.put(body)
        queue.get(timeout=5)  # booked, never acknowledged: as a worker killed mid-task
        connection.default_channel.qos.restore_unacked()
        assert queue.get(timeout=5).payload == body


def test_acknowledgements_are_written_in_batches_and_none_is_lost(redis_server):
    """An ack frees its slot at once; its booking goes with the next booking (one round trip),
    or with the event loop's flush, and always before the channel gives messages back (an
    acknowledged message never comes back)."""
    connection = kombu.Connection(redis_server.url, transport=Transport)
    client = redis.Redis.from_url(redis_server.url)
    with connection, connection.SimpleQueue("ack-test", serializer="json") as queue:
        for n in range(4):
            queue.put({"n": n})
        first = queue.get(timeout=5)
        first.ack()
        assert client.hlen("unacked") == 1, "not yet written: waits for the next round trip"
        second = queue.get(timeout=5)  # its booking deletes the first one's
        assert client.hkeys("unacked") == [second.delivery_tag.encode()]
        second.ack()
        connection.transport.flush_acks()  # the event loop's timer
        assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
        third = queue.get(timeout=5)
        third.ack()
        fourth = queue.get(timeout=5)  # received, not acknowledged: given back on shutdown
        connection.default_channel.qos.restore_unacked()
        assert client.hlen("unacked") == 0
        back = queue.get(timeout=5)
        assert back.payload == fourth.payload == {"n": 3}
        back.ack()
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)
    # the channel closed with an acknowledgement waiting and nothing unacknowledged: written
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
