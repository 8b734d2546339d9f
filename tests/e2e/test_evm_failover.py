"""Failover on the EVM source, with real worker processes and a real local node (anvil).

Two streams workers serve three batches (one Uniswap pair each); the one holding them is killed
with `kill -9`. Swaps made while nobody owned the batches are back-filled by the new owner from
the checkpoint, and every swap alerts exactly once.
"""

import json

from kakarot_workers.control.reconcile import ensure_allocated
from kakarot_workers.db.session import session_scope
from kakarot_workers.tools.admin import add_targets, create_config, create_task, target_row
from tests.e2e.test_ownership import holder_pid, live_by, reconcile_until
from tests.support.anvil import Uniswap
from tests.support.scenario import alert_keys, wait_for, wait_quiet

E18 = 10**18


def test_swaps_made_while_nobody_owned_the_batch_are_back_filled_and_alert_once(
    db_url, redis_client, workers, use_env, anvil
):
    uni = Uniswap.deploy(anvil)
    usd = uni.token()
    tokens = [uni.token() for _ in range(3)]
    pairs = [uni.pair(t, usd, 1_000_000 * E18, 1_000_000 * E18) for t in tokens]
    use_env(
        KAKAROT_BATCH_CAP="1",
        KAKAROT_EVM_CHAINS=json.dumps({"eth": {"ws_url": anvil.ws_url, "quotes": {usd: 1.0}}}),
    )
    with session_scope() as session:
        config = create_config(
            session,
            name="evm",
            chain="eth",
            source="evm",
            min_transaction_usd=1.0,
            events_config={"cooldown": {"seconds": 0}},
        )
        task = create_task(session, name="evm", task_type="batch", chain="eth", config_id=config.id)
        add_targets(
            session,
            task.id,
            [target_row("eth", t, "T", p) for t, p in zip(tokens, pairs, strict=True)],
        )
        task_id = task.id
    batch_ids = ensure_allocated(task_id)
    assert len(batch_ids) == 3

    first = workers("streams")
    workers("alerts", pool="prefork", concurrency=2)
    reconcile_until(lambda: live_by(redis_client, batch_ids, first.pid), 20, "first live")
    second = workers("streams")
    swaps = [uni.swap(p, usd, (i + 1) * E18) for i, p in enumerate(pairs)]
    wait_for(lambda: len(alert_keys(task_id)) == 3, 10, "alerts of the live swaps")

    first.kill()  # kill -9
    orphaned = [
        uni.swap(p, t, (i + 2) * E18) for i, (t, p) in enumerate(zip(tokens, pairs, strict=True))
    ]
    orphaned += [uni.swap(p, usd, 7 * E18) for p in pairs]
    assert all(holder_pid(redis_client, b) in (first.pid, None) for b in batch_ids)
    taken = reconcile_until(lambda: live_by(redis_client, batch_ids, second.pid), 10, "failover")
    print(f"EVM failover after kill -9: {taken:.1f}s")
    after = [uni.swap(p, usd, 3 * E18) for p in pairs]
    wait_for(lambda: len(set(alert_keys(task_id))) >= 12, 15, "every swap alerted")
    wait_quiet(redis_client)

    rows = alert_keys(task_id)
    assert len(rows) == len(set(rows)), "a swap alerted twice"
    expected = {(s.tx_hash, s.log_index) for s in swaps + orphaned + after}
    assert set(rows) == expected
