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
    connection.collect()
    with pytest.raises(redis.exceptions.ConnectionError), channel.conn_or_acquire():
        pass
