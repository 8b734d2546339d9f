"""kombu's Redis channel, as the fleet's broker transport configures it."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time

import kombu
import pytest
import redis

from kakarot_workers.broker import Transport
from kakarot_workers.tools.embedded_redis import EmbeddedRedis


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


def test_a_busy_queue_is_taken_from_with_pop_and_booking_in_one_step(redis_client, redis_server):
    """Messages are taken with `broker.TAKE`, which pops and books in one step (a worker killed
    between kombu's BRPOP and its booking lost that message: `tests/faults/test_alerts_taken.py`).
    What it books is what kombu's restore reads: messages given back come back whole. An item
    that is no envelope, or an envelope whose body cannot be read, goes to the dead letters and
    stays booked nowhere."""
    from kakarot_workers import deadletters, runtime

    connection = kombu.Connection(redis_server.url, transport=Transport)
    queue = kombu.Queue("take-test", routing_key="take-test")
    received: list[kombu.Message] = []
    booked_when_delivered = []

    def on_message(body: object, message: kombu.Message) -> None:
        received.append(message)
        booked_when_delivered.append(redis_client.hexists("unacked", message.delivery_tag))

    bad_body = json.dumps(
        {
            "body": "%%% not base64 %%%",
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": "bad-body-tag",
                "delivery_info": {"exchange": "", "routing_key": "take-test"},
            },
        }
    )
    with connection:
        producer = connection.Producer(serializer="json")
        for n in range(3):
            producer.publish({"n": n}, routing_key="take-test", declare=[queue])
        redis_client.lpush("take-test", "not an envelope", bad_body)
        for n in range(3, 6):
            producer.publish({"n": n}, routing_key="take-test", declare=[queue])
        redis_client.config_resetstat()
        with connection.Consumer(queue, callbacks=[on_message], accept=["json"]):
            while len(received) < 6:
                connection.drain_events(timeout=5)
        takes = redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        assert takes >= 8, "each taken with TAKE"
        assert [m.payload for m in received] == [{"n": n} for n in range(6)]
        assert all(booked_when_delivered)
        reasons = [
            letter.reason
            for letter in deadletters.entries(
                runtime.redis_client(), runtime.keys(), "take-test", 10
            )
        ]
        assert len(reasons) == 2, reasons
        channel = connection.default_channel
        connection.transport.flush_acks()  # the refused envelope's booking goes
        assert sorted(redis_client.hkeys("unacked")) == sorted(m.delivery_tag for m in received)
        channel.qos.restore_unacked()  # never acknowledged: given back, whole
        assert redis_client.hlen("unacked") == 0
        back = [json.loads(item) for item in redis_client.lrange("take-test", 0, -1)]
        assert sorted(
            kombu.serialization.loads(
                base64.b64decode(e["body"]), e["content-type"], e["content-encoding"]
            )["n"]
            for e in back
        ) == list(range(6))


def test_a_message_left_on_the_landing_list_is_taken_by_the_next_worker(redis_client, redis_server):
    """A worker that found its queue empty waits with BLMOVE, which moves the next message to
    the queue's landing list without taking it; TAKE takes it from there. A worker killed in
    between leaves it on the landing list, where any worker's next take finds it (one whose
    wait times out takes too): put there by hand here, as such a worker leaves it."""
    connection = kombu.Connection(redis_server.url, transport=Transport)
    queue = kombu.Queue("land-test", routing_key="land-test")
    received: list[kombu.Message] = []
    with connection:
        producer = connection.Producer(serializer="json")
        producer.publish({"n": 1}, routing_key="land-test", declare=[queue])
        landing = "land-test\x06\x16landing"
        assert redis_client.lmove("land-test", landing, "RIGHT", "LEFT") is not None
        redis_client.config_resetstat()
        with connection.Consumer(
            queue, callbacks=[lambda body, message: received.append(message)], accept=["json"]
        ):
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError, socket.timeout):
                    connection.drain_events(timeout=1)
        assert [m.payload for m in received] == [{"n": 1}]
        assert redis_client.llen(landing) == 0
        assert redis_client.hexists("unacked", received[0].delivery_tag), "booked by TAKE"
        stats = redis_client.info("commandstats")
        assert "cmdstat_blmove" in stats and "cmdstat_brpop" not in stats


def test_a_redis_without_blmove_is_waited_on_with_brpop(caplog):
    """A server older than 6.2 has no BLMOVE (here one that has it renamed away): the worker
    says so once and waits with BRPOP, as kombu does; messages are taken all the same."""
    with EmbeddedRedis(extra_args=("--rename-command", "BLMOVE", "")) as server:
        connection = kombu.Connection(server.url, transport=Transport)
        queue = kombu.Queue("old-test", routing_key="old-test")
        received: list[object] = []
        with (
            connection,
            connection.Consumer(
                queue, callbacks=[lambda body, message: received.append(body)], accept=["json"]
            ),
        ):
            producer = connection.Producer(serializer="json")
            for n in range(3):
                producer.publish({"n": n}, routing_key="old-test", declare=[queue])
                deadline = time.monotonic() + 10
                while len(received) <= n and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError, socket.timeout):
                        connection.drain_events(timeout=1)
        assert received == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert "has no BLMOVE" in caplog.text
