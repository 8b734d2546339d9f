"""kombu's Redis transport, with three changes: an item on a queue that is no message kombu can
read goes to the dead letters instead of stopping the worker; a worker pops and books each
message in one step (`TAKE`, with BLMOVE to wait), so that a worker killed between the two no
longer loses the message; and a received message costs the worker's event loop less (`QoS`,
`CheckedItems._create_client`).

kombu pops a queue item and parses it as a JSON envelope before any of Celery's error handling
can see it; a raw non-JSON item, or JSON without the envelope's fields, raised out of the event
loop and stopped the worker ("Unrecoverable error", celery/celery#7975, #4308), and every
restart met the next one. This channel checks the envelope first (`envelope`), the way kombu's
own `SentinelChannel` specialises the channel. `celeryconfig` names `Transport` for
`redis://` and `rediss://` brokers, and `SentinelTransport` (kombu's, with the same check) for
`sentinel://` ones. Messages that are envelopes but not tasks of ours are
Celery's to refuse, and `worker.KakarotConsumer` moves those aside too.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import threading
import time
from queue import Empty
from typing import Any

import msgspec
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import json as kombu_json
from kombu.utils.encoding import bytes_to_str

from kakarot_workers import deadletters

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


class PoisonItem(Exception):
    """A queue item that is no envelope kombu can deliver; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def envelope(text: str, decode_body: Any) -> dict[str, Any]:
    """The envelope of a queue item, checked for what kombu's Message and its QoS read;
    PoisonItem otherwise. `decode_body` is the channel's (base64 bodies)."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PoisonItem(f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(payload, dict):
        raise PoisonItem(f"not an envelope: a JSON {type(payload).__name__}")
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        raise PoisonItem("not an envelope: no properties.delivery_tag")
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or "exchange" not in info or "routing_key" not in info:
        raise PoisonItem("not an envelope: no properties.delivery_info exchange/routing_key")
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        raise PoisonItem(f"not an envelope: a body that is a {type(body).__name__}")
    if body:
        try:
            decode_body(body, properties.get("body_encoding"))
        except (ValueError, binascii.Error, TypeError) as exc:
            raise PoisonItem(f"body not decodable: {str(exc)[:100]}") from None
    return payload


TAKE = """
-- broker.CheckedItems's take of a message: pop the first message of the landing lists and the
-- queues and book it as unacknowledged in the same step, as QoS.append would (its envelope,
-- exchange and routing key, under its delivery tag, in the unacked hash and its index), so a
-- message is always in a queue or booked, never only in a worker's memory. Also deletes the
-- bookings of acknowledged messages.
-- KEYS[1] the unacked hash, KEYS[2] its index, KEYS[3..] the queues' landing lists, then their
-- lists in BRPOP's order.
-- ARGV[1] the time now; ARGV[2..] the acknowledged tags.
-- Returns nil (the queues are empty) or {queue key, item, tag}; the tag is '' when the item is
-- no envelope this script can book (the worker checks it and books or dead-letters it).
for from = 2, #ARGV, 1000 do  -- unpack has a stack limit
  local to = math.min(from + 999, #ARGV)
  redis.call('ZREM', KEYS[2], unpack(ARGV, from, to))
  redis.call('HDEL', KEYS[1], unpack(ARGV, from, to))
end
for i = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, envelope = pcall(cjson.decode, item)
    local properties = ok and type(envelope) == 'table' and envelope.properties
    local info = type(properties) == 'table' and properties.delivery_info
    local tag = type(properties) == 'table' and properties.delivery_tag
    if type(tag) == 'string' and tag ~= '' and type(info) == 'table'
        and type(info.exchange) == 'string' and type(info.routing_key) == 'string' then
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info.exchange) .. ','
                                        .. cjson.encode(info.routing_key) .. ']')
      return {KEYS[i], item, tag}
    end
    return {KEYS[i], item, ''}
  end
end
return false
"""
_TAKE_SHA = hashlib.sha1(TAKE.encode()).hexdigest()


class CheckedItems:
    """kombu's Redis channel reading of queue items, with each item checked first."""

    client: Any
    connection: Any
    connection_errors: Any
    sep: str
    priority_steps: Any
    _queue_cycle: Any
    _in_poll: Any
    conn_or_acquire: Any
    pool: Any
    _q_for_pri: Any
    _maybe_update_queues_expire: Any
    _flush_brpop_reauth: Any
    brpop_timeout: Any
    active_queues: Any
    qos: Any
    global_keyprefix: Any
    _brpop_sent_at: Any

    def _connparams(self, asynchronous: bool = False) -> Any:
        # kombu has taken this connection apart (Celery's cleanup of a lost broker connection
        # calls `collect()`), and an ack, a reject or a restore of one of its messages comes
        # late (a task that ended during the outage): say so as a connection error, which
        # Celery logs and survives, the message staying in `unacked` for the visibility
        # timeout, not as an AttributeError that stops the worker ("Unrecoverable error",
        # seen in `make faults` with Redis killed)
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous)  # type: ignore[misc]

    _client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu makes a new client for every booking, acknowledgement and publish made outside
        # its poll, building its table of reply callbacks each time (a tenth of a worker's event
        # loop per micro-batch); one client per connection pool serves them all, as redis-py
        # clients are safe to share between threads
        if asynchronous:
            return super()._create_client(asynchronous)  # type: ignore[misc]
        client = self._client
        if client is None or client.connection_pool is not self.pool:
            client = self._client = super()._create_client(asynchronous)  # type: ignore[misc]
        return client

    # Taking a message. kombu BRPOPs it and then books it as unacknowledged (`QoS.append`) in a
    # second round trip: a worker killed in between, after Redis popped the message and before
    # the booking reached it, loses the message (a micro-batch of trades never judged; measured:
    # 5 of 23 kill -9s of a loaded alerts worker). Here a message is taken with `TAKE`, which
    # pops and books it in one step. While the queues have messages (the last take found one),
    # a worker sends TAKE at once. A worker that found them empty waits for the next message
    # without taking it: BLMOVE moves it, atomically, from its queue to the queue's landing list,
    # and TAKE, sent next, takes from the landing lists first; whatever a worker killed in
    # between left there is taken by the next TAKE of any worker (each one that waits in vain
    # sends one when its wait times out, every `brpop_timeout`, 1 s). BLMOVE waits on one list:
    # a message sent with a priority (on a list of its own) is taken when the wait times out,
    # and a worker consuming several queues, or served by a Redis older than 6.2, waits in
    # BRPOP as kombu does and books what that brings the old way.
    _busy = False  # the last take found a message: the queues likely hold more
    _taking: list[str] | None = None  # a TAKE in flight: the acknowledgements it deletes

    _waking = False  # a BLMOVE in flight
    _blmove = True  # False: the server has no BLMOVE (Redis < 6.2)

    def _brpop_start(self, timeout: Any = None) -> None:
        lost, self._taking = self._taking, None  # a TAKE whose connection went away unread
        if lost:
            self.qos.give_back_acked(lost)
        self._waking = False
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        prefix = self.global_keyprefix
        connection = self.client.connection
        if not self._busy and (len(queues) > 1 or not self._blmove):
            super()._brpop_start(timeout)  # type: ignore[misc]
            return
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        if not self._busy:  # wait for one, moved to the landing list
            self._waking = True
            connection.send_command(
                "BLMOVE",
                prefix + self._q_for_pri(queues[0], 0),
                prefix + self._landing(queues[0]),
                "RIGHT",
                "LEFT",
                self.brpop_timeout if timeout is None else timeout,
            )
            return
        qos = self.qos
        keys = [
            qos.unacked_key,
            qos.unacked_index_key,
            *(self._landing(queue) for queue in queues),
            *(self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues),
        ]
        acked = qos.take_acked()
        self._taking = acked
        connection.send_command(
            "EVALSHA", _TAKE_SHA, len(keys), *(prefix + k for k in keys), time.time(), *acked
        )

    def _landing(self, queue: str) -> str:
        """The list a waiting worker moves a message of `queue` to, for TAKE to take."""
        return f"{queue}{self.sep}landing"

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's _brpop_read, with the item checked before it is delivered, and TAKE's reply
        taking, self._taking = self._taking, None
        waking, self._waking = self._waking, False
        try:
            try:
                if waking:  # a message moved to the landing list, or none in time: TAKE next
                    self._woken(**options)
                    raise Empty()
                if taking is None:
                    reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
                    booked = None
                else:
                    reply = self._taken(taking, **options)
                    if reply:
                        reply, booked = reply[:2], bytes_to_str(reply[2]) or None
            except self.connection_errors:
                # a connection error: disconnect, the next iteration reconnects
                self.client.connection.disconnect()
                raise
            if not reply:
                self._busy = False
                raise Empty()
            self._busy = True
            dest, item = reply
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = self._checked(dest, item)
            if payload is None:  # dead-lettered: its booking goes with the acknowledgements
                if booked is not None:
                    self.qos.give_back_acked([booked])
                raise Empty()
            self._booked = booked
            try:
                self.connection._deliver(payload, dest)
            finally:
                self._booked = None
            return True
        finally:
            self._in_poll = None  # as kombu resets it
            self._flush_brpop_reauth()

    _booked: str | None = None  # the tag of the message being delivered, if TAKE booked it

    def _taken(self, acked: list[str], **options: Any) -> Any:
        """TAKE's reply: [queue key, item, tag booked ('' if none)], or None (queues empty)."""
        try:
            reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: load it again
            self.qos.give_back_acked(acked)
            with self.conn_or_acquire() as client:
                client.script_load(TAKE)
            return None
        except BaseException:
            self.qos.give_back_acked(acked)  # deleted or not: deleting again is harmless
            raise
        if reply and self.global_keyprefix:
            reply[0] = bytes_to_str(reply[0])[len(self.global_keyprefix) :]
        return reply

    def _woken(self, **options: Any) -> None:
        """BLMOVE's reply (a message moved to the landing list, or none in time): TAKE next."""
        try:
            self.client.parse_response(self.client.connection, "BLMOVE", **options)
        except redis.exceptions.ResponseError as exc:  # not a connection error: no BLMOVE
            log.warning("the broker's Redis has no BLMOVE (%s): waiting with BRPOP", exc)
            self._blmove = False
        self._busy = True

    def _poll_error(self, type: str, **options: Any) -> None:
        if type == "BRPOP" and self._taking is not None:  # the reply to read is TAKE's
            acked, self._taking = self._taking, None
            self._taken(acked, **options)
            return
        if type == "BRPOP" and self._waking:  # BLMOVE's
            self._waking = False
            self._woken(**options)
            return
        super()._poll_error(type, **options)  # type: ignore[misc]

    def _get(self, queue: str, timeout: Any = None) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    payload = self._checked(queue, item)
                    if payload is not None:
                        return payload
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    def _checked(self, queue: str, item: bytes | str) -> dict[str, Any] | None:
        text = bytes_to_str(item)
        try:
            return envelope(text, self._decode_and_keep)
        except PoisonItem as poison:
            deadletters.put(queue, poison.reason, raw=text)
            return None

    # The check decodes the body (base64, 0.1 ms for a 53 KB micro-batch); kombu's Message,
    # made next on the same thread from the same payload, takes that result instead of
    # decoding the body a second time.
    _kept: tuple[str, Any] | None = None

    def _decode_and_keep(self, body: str, encoding: str | None) -> Any:
        decoded = super().decode_body(body, encoding)  # type: ignore[misc]
        self._kept = (body, decoded)
        return decoded

    def decode_body(self, body: str, encoding: str | None = None) -> Any:
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] is body:
            return kept[1]
        return super().decode_body(body, encoding)  # type: ignore[misc]


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with less per message: a received message is booked as
    unacknowledged with its envelope encoded by msgspec (a tenth of the standard library's cost
    for a 53 KB micro-batch; the same JSON, read back by kombu's `restore_by_tag`), and
    acknowledgements are written in batches: an ack frees its prefetch slot at once, and its
    booking is deleted with the next booking (one round trip for both), or by the event loop's
    flush within `ACK_FLUSH_S`, or once `ACKS_AT_ONCE` are waiting, or before the channel gives
    its messages back. A worker killed in between leaves those messages booked: kombu gives them
    back after the visibility timeout, and the pool judges them again without writing anything
    twice (as for any message of a lost worker)."""

    ACK_FLUSH_S = 0.05
    ACKS_AT_ONCE = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acked: list[str] = []
        self._acked_lock = threading.Lock()

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag is not None and delivery_tag == self.channel._booked:  # TAKE booked it
            virtual.QoS.append(self, message, delivery_tag)
            return
        delivery = message.delivery_info
        entry = [message._raw, delivery["exchange"], delivery["routing_key"]]
        try:
            booked = _encode(entry)
        except TypeError:  # not plain JSON: kombu's encoder knows more types
            booked = kombu_json.dumps(entry).encode()
        self._write(
            lambda pipe: pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}).hset(
                self.unacked_key, delivery_tag, booked
            )
        )
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        with self._acked_lock:
            self._acked.append(delivery_tag)
            full = len(self._acked) >= self.ACKS_AT_ONCE
        virtual.QoS.ack(self, delivery_tag)
        if full:
            self.flush_acks()

    def take_acked(self) -> list[str]:
        """The acknowledged tags waiting for their bookings' deletion, handed to the caller."""
        with self._acked_lock:
            acked, self._acked = self._acked, []
        return acked

    def give_back_acked(self, acked: list[str]) -> None:
        """Tags whose bookings are still to be deleted (a round trip that failed, a message
        booked and then refused)."""
        if acked:
            with self._acked_lock:
                self._acked[:0] = acked

    def flush_acks(self) -> None:
        """Delete the bookings of the messages acknowledged since the last flush (kept for the
        next one if Redis cannot be reached)."""
        self._write()

    def _write(self, also: Any = None) -> None:
        """One round trip: the waiting acknowledgements' deletions, and `also(pipe)`."""
        acked = self.take_acked()
        if not acked and also is None:
            return
        try:
            with self.pipe_or_acquire() as pipe:
                if acked:
                    pipe.zrem(self.unacked_index_key, *acked).hdel(self.unacked_key, *acked)
                if also is not None:
                    also(pipe)
                pipe.execute()
        except BaseException:
            self.give_back_acked(acked)  # kept for the next round trip
            raise

    def restore_unacked(self, client: Any = None) -> None:
        self._flush_before_closing()
        super().restore_unacked(client)

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        # kombu's channel close: it restores only when messages are unacknowledged, and the
        # acknowledged ones must be written either way
        self._flush_before_closing()
        return super().restore_unacked_once(stderr)

    def _flush_before_closing(self) -> None:
        try:
            self.flush_acks()
        except redis.exceptions.RedisError as exc:  # they come back later: judged again
            log.warning("acknowledgements not written before closing: %s", exc)


class FlushesAcks:
    """A transport whose event loop writes its channels' batched acknowledgements (`QoS`)."""

    channels: Any
    _acks_tref: Any = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)  # type: ignore[misc]
        if self._acks_tref is not None:  # a reconnection: one timer, not one more each time
            self._acks_tref.cancel()
        self._acks_tref = loop.call_repeatedly(QoS.ACK_FLUSH_S, self.flush_acks)

    def flush_acks(self) -> None:
        for channel in list(self.channels):
            qos = channel._qos  # only a channel that has received messages has one
            if qos is not None:
                try:
                    qos.flush_acks()
                except redis.exceptions.RedisError as exc:  # kept: the next flush tries again
                    log.debug("acknowledgements not written yet: %s", exc)


class Channel(CheckedItems, kombu_redis.Channel):
    QoS = QoS


class SentinelChannel(CheckedItems, kombu_redis.SentinelChannel):
    QoS = QoS


class Transport(FlushesAcks, kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(FlushesAcks, kombu_redis.SentinelTransport):
    Channel = SentinelChannel
