"""Leases, fencing tokens and dispatch against a real Redis (the broker is the same server)."""

import base64
import json
import threading

from kakarot_workers import runtime
from kakarot_workers.streams import leases
from kakarot_workers.streams.dispatch import dispatch_unserved
from tests.support.scenario import wait_for


def _dispatched(client) -> list[int]:
    messages = [json.loads(m) for m in client.lrange("streams", 0, -1)]
    assert all(m["content-type"] == "application/json" for m in messages)  # never pickle
    assert {m["headers"]["task"] for m in messages} <= {"kakarot.streams.consume_batch"}
    return sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in messages)


def test_acquire_is_exclusive_and_each_acquisition_takes_a_larger_token(redis_client):
    keys = runtime.keys()
    seconds, micros = redis_client.time()
    first = leases.Leases(redis_client, keys).acquire(7, "a", ttl_s=5)
    assert first is not None and first.token >= seconds * 1_000_000 + micros
    assert leases.Leases(redis_client, keys).acquire(7, "b", ttl_s=5) is None
    assert first.renew()
    assert first.release()
    second = leases.Leases(redis_client, keys).acquire(7, "b", ttl_s=5)
    assert second is not None and second.token > first.token
    assert not first.renew(), "a released lease must not be renewable"
    assert not first.release(), "releasing must not delete someone else's lease"
    assert leases.Leases(redis_client, keys).fences([7, 8]) == {7: second.token, 8: 0}
    assert leases.Leases(redis_client, keys).holders([7, 8]) == {7: f"b:{second.token}", 8: None}


def test_an_expired_lease_is_lost_to_whoever_takes_it(redis_client):
    keys = runtime.keys()
    zombie = leases.Leases(redis_client, keys).acquire(3, "zombie", ttl_s=0.5)
    assert zombie is not None
    lease_key = keys.batch_lease(3)
    assert 0 < redis_client.pttl(lease_key) <= 500
    # once Redis has let the lease go, the holder's own clock must say so too
    wait_for(
        lambda: not redis_client.exists(lease_key),
        5,
        "the zombie's 0.5 s lease to expire in Redis",
        poll_s=0.01,
    )
    assert zombie.expired_locally()
    heir = leases.Leases(redis_client, keys).acquire(3, "heir", ttl_s=5)
    assert heir is not None and heir.token > zombie.token
    assert not zombie.renew()


def test_a_lapsed_lease_is_taken_back_with_its_token_only_if_nobody_took_the_batch(redis_client):
    """After an outage longer than the TTL, the holder takes its lease back with the same token
    (what it sent before still passes the fence); not once anyone else has taken a token."""
    keys = runtime.keys()
    store = leases.Leases(redis_client, keys)
    holder = store.acquire(4, "holder", ttl_s=5)
    assert holder is not None
    redis_client.delete(keys.batch_lease(4))  # lapsed while Redis was away
    assert not holder.renew()
    assert holder.reacquire()
    assert holder.renew() and store.fences([4]) == {4: holder.token}
    redis_client.delete(keys.batch_lease(4))
    other = store.acquire(4, "other", ttl_s=5)
    assert other is not None and other.release()
    assert not holder.reacquire(), "a token was taken since: the holder needs a new one"
    taken = store.acquire(4, "taken", ttl_s=5)
    assert taken is not None and not holder.reacquire()  # and never while someone holds it


def test_a_graceful_hand_over_keeps_the_old_token_valid_until_the_successor_is_live(redis_client):
    keys = runtime.keys()
    leaving = leases.Leases(redis_client, keys).acquire(9, "leaving", ttl_s=5)
    assert leaving is not None and leaving.fenced
    assert leaving.release(handover_s=10)
    successor = leases.Leases(redis_client, keys).acquire(9, "successor", ttl_s=5)
    assert successor is not None and not successor.fenced
    # the successor holds the lease, but until it is live the leaving consumer's events count
    assert leases.Leases(redis_client, keys).fences([9]) == {9: leaving.token}
    assert not leaving.fence_passed()
    successor.raise_fence()
    assert leases.Leases(redis_client, keys).fences([9]) == {9: successor.token}
    assert leaving.fence_passed()
    # a later, ungraceful takeover fences at once
    assert successor.release()
    third = leases.Leases(redis_client, keys).acquire(9, "third", ttl_s=5)
    assert third is not None and third.fenced
    assert leases.Leases(redis_client, keys).fences([9]) == {9: third.token}


def test_concurrent_acquirers_get_exactly_one_lease(redis_client):
    keys = runtime.keys()
    won: list[leases.Lease] = []
    barrier = threading.Barrier(16)

    def contend(i: int) -> None:
        barrier.wait()
        lease = leases.Leases(redis_client, keys).acquire(11, f"c{i}", ttl_s=5)
        if lease is not None:
            won.append(lease)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and won[0].fenced


def test_only_unowned_batches_are_dispatched_and_only_once(redis_client):
    keys = runtime.keys()
    assert leases.Leases(redis_client, keys).acquire(1, "w1", ttl_s=30) is not None
    assert leases.Leases(redis_client, keys).acquire(2, "w2", ttl_s=30) is not None
    assert dispatch_unserved([1, 2, 3, 4]) == [3, 4]
    # a second reconciler (another beat) finds the dispatch markers and sends nothing
    assert dispatch_unserved([1, 2, 3, 4]) == []
    assert _dispatched(redis_client) == [3, 4]


def test_a_lost_dispatch_is_sent_again_when_its_marker_expires(redis_client, use_env):
    use_env(KAKAROT_DISPATCH_MARKER_TTL_S="1")
    assert dispatch_unserved([5]) == [5]
    redis_client.delete("streams")  # the message is lost
    assert dispatch_unserved([5]) == []
    marker = runtime.keys().batch_dispatch(5)
    assert 0 < redis_client.pttl(marker) <= 1000
    wait_for(lambda: not redis_client.exists(marker), 5, "the 1 s dispatch marker to expire")
    assert dispatch_unserved([5]) == [5]
    assert _dispatched(redis_client) == [5]


def test_tokens_keep_rising_when_redis_loses_its_data(redis_client):
    """A Redis restarted without its data has no token counter: the next token must still be
    above every earlier one, or the alert pool would take a zombie's events for the new
    owner's. Tokens are at least the server's clock in microseconds."""
    keys = runtime.keys()
    store = leases.Leases(redis_client, keys)
    before = store.acquire(5, "before", ttl_s=5)
    assert before is not None and before.release()
    again = store.acquire(5, "again", ttl_s=5)
    assert again is not None and again.token > before.token
    redis_client.flushall()  # what a restart without persistence leaves
    after = store.acquire(5, "after", ttl_s=5)
    assert after is not None and after.token > again.token
    assert store.fences([5]) == {5: after.token}
    assert after.renew(), "the lease value is the token written exactly, not rounded"
