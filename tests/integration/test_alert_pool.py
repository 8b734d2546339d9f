"""The alert pool with real parts: real alerts workers, Redis, SQLite, and local servers that
answer as Telegram, WeCom, a webhook receiver, the backend WebSocket and a metrics provider do."""

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import make_url, select, update

from kakarot_workers import runtime
from kakarot_workers.alerts import evaluate as alerts
from kakarot_workers.alerts.tasks import evaluate_events
from kakarot_workers.alerts.windows import Windows
from kakarot_workers.celery import app
from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox, MonitorConfig
from kakarot_workers.db.session import SQLITE_BUSY_TIMEOUT_MS, session_scope
from tests.support.notify_servers import (
    BOT_TOKEN,
    WEBHOOK_SECRET,
    WECOM_KEY,
    BackendServer,
    NotifyServer,
)
from tests.support.scenario import create_task_with, wait_drained, wait_for, wire_event

CAS = [f"0x{i:040x}" for i in range(1, 6)]
ALL_CHANNELS = {
    "telegram": {"chat_id": "-1001"},
    "wecom": {},
    "webhook": {},
    "backend": {},
}


@pytest.fixture
def services(use_env):
    with NotifyServer() as server, BackendServer() as backend:
        use_env(
            KAKAROT_TELEGRAM_API_URL=server.url,
            KAKAROT_TELEGRAM_BOT_TOKEN=BOT_TOKEN,
            KAKAROT_WECOM_WEBHOOK_URL=f"{server.url}/cgi-bin/webhook/send",
            KAKAROT_WECOM_KEY=WECOM_KEY,
            KAKAROT_WEBHOOK_URL=f"{server.url}/hook",
            KAKAROT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            KAKAROT_BACKEND_WS_URL=backend.url,
            KAKAROT_BACKEND_TOKEN=BACKEND_TOKEN,
            KAKAROT_BACKEND_ALERT_ACKS="true",
            KAKAROT_NOTIFY_MAX_BACKOFF_S="1",
        )
        yield server, backend


BACKEND_TOKEN = "backend-test-token"
SECRETS = (BOT_TOKEN, WECOM_KEY, WEBHOOK_SECRET, BACKEND_TOKEN)


def _no_secret_in_the_logs(*processes) -> None:
    """The worker logs (INFO) hold none of the secrets configured, in any form."""
    for process in processes:
        text = process.log_text()
        assert text, "no log to check"
        for secret in SECRETS:
            assert secret not in text and secret.replace(":", "%3A") not in text, secret


def _outbox(task_id):
    with session_scope() as session:
        return list(
            session.scalars(select(MonitorAlertOutbox).where(MonitorAlertOutbox.task_id == task_id))
        )


def _alerts(task_id):
    with session_scope() as session:
        return list(
            session.scalars(select(MonitorAlertLog).where(MonitorAlertLog.task_id == task_id))
        )


def _settled(task_id):
    rows = _outbox(task_id)
    return bool(rows) and all(r.status in ("sent", "failed") for r in rows)


def test_every_alert_reaches_every_channel_once(db_url, redis_client, workers, services):
    # Given a task notifying on all four channels, and two alerts workers
    server, backend = services
    task_id = create_task_with(
        CAS,
        min_transaction_usd=1000,
        events_config={"cooldown": {"seconds": 0}},
        notify_methods=ALL_CHANNELS,
    )
    pool = [workers("alerts,notify", pool="threads", concurrency=2) for _ in range(2)]

    # When 5 trades above the threshold and 5 below arrive, one message twice
    events = [wire_event(task_id, CAS[i % 5], i, amount_usd=5000.0) for i in range(5)]
    events += [wire_event(task_id, CAS[i % 5], 100 + i, amount_usd=10.0) for i in range(5)]
    for message in (events[:6], events[6:], events[:6]):
        app.send_task("kakarot.alerts.evaluate_events", args=[message])
    wait_for(lambda: len(_outbox(task_id)) == 20 and _settled(task_id), 15, "deliveries")
    # every message judged (the repeated one too) and every delivery task done: anything
    # doubled would show up now
    wait_drained(redis_client, ["alerts", "notify"])

    # Then each alert is one row and one message per channel
    rows = _alerts(task_id)
    assert len(rows) == 5 and {r.notify_status for r in rows} == {"sent"}
    assert {r.status for r in _outbox(task_id)} == {"sent"}
    telegram = server.messages("telegram")
    assert len(telegram) == 5 and {m["chat_id"] for m in telegram} == {"-1001"}
    assert all(m["parse_mode"] == "HTML" and "TKN on BSC" in m["text"] for m in telegram)
    assert all("https://bscscan.com/tx/0x" in m["text"] for m in telegram)
    assert len(server.messages("wecom")) == 5
    hooks = server.messages("webhook")  # the server checked every signature
    assert len(hooks) == 5 and {h["type"] for h in hooks} == {"alert"}
    assert {h["alert"]["tx_hash"] for h in hooks} == {e["tx_hash"] for e in events[:5]}
    wait_for(lambda: len(backend.alerts) == 5, 10, "backend alerts")
    assert {f["data"]["alertId"] for f in backend.alerts} == {r.id for r in rows}
    # nothing before `registered`: a connection that pushes alerts registers first, as any
    # client does (the nodes' own links register, beat and ping on theirs)
    pushing = [s for s in backend.sessions if any(f["type"] == "alert" for f in s)]
    assert pushing and all(s[0]["type"] == "register" for s in pushing)
    assert int(redis_client.get(runtime.keys().notify_stat("telegram", "sent"))) == 5
    _no_secret_in_the_logs(*pool)


def test_rate_limits_and_outages_are_retried_then_recorded(
    db_url, redis_client, workers, services, use_env
):
    server, _ = services
    use_env(KAKAROT_NOTIFY_MAX_ATTEMPTS="3")
    task_id = create_task_with(
        CAS[:1],
        min_transaction_usd=1000,
        events_config={"cooldown": {"seconds": 0}},
        notify_methods={"telegram": {"chat_id": "-1001"}, "wecom": {}, "webhook": {}},
    )
    # Telegram: two 429s then success; WeCom: its rate-limit errcode once (retried after its
    # wait); the webhook: down for good
    server.fail_next("telegram", 2, "429")
    server.fail_next("wecom", 1, "wecom_limit")
    server.fail_next("webhook", 100, "500")
    use_env(KAKAROT_NOTIFY_MAX_BACKOFF_S="0.2")
    worker = workers("alerts,notify", concurrency=2)
    app.send_task(
        "kakarot.alerts.evaluate_events",
        args=[[wire_event(task_id, CAS[0], 1, amount_usd=5000.0)]],
    )
    wait_for(lambda: len(_outbox(task_id)) == 3 and _settled(task_id), 15, "outcomes")

    by_channel = {r.channel: r for r in _outbox(task_id)}
    assert by_channel["telegram"].status == "sent" and by_channel["telegram"].attempts == 3
    assert server.attempts["telegram"] == 3 and len(server.messages("telegram")) == 1
    assert by_channel["wecom"].status == "sent" and by_channel["wecom"].attempts == 2
    hook = by_channel["webhook"]
    assert hook.status == "failed" and hook.attempts == 3
    assert "HTTP 503" in hook.last_error and server.attempts["webhook"] == 3
    assert _alerts(task_id)[0].notify_status == "failed"
    _no_secret_in_the_logs(worker)  # the failed attempts' lines too


def test_a_permanent_error_fails_at_once_with_the_reason(db_url, redis_client, workers, services):
    server, _ = services
    task_id = create_task_with(
        CAS[:1],
        min_transaction_usd=1000,
        notify_methods={"telegram": {"chat_id": "-999"}},
    )
    workers("alerts,notify", concurrency=1)
    app.send_task(
        "kakarot.alerts.evaluate_events",
        args=[[wire_event(task_id, CAS[0], 1, amount_usd=5000.0)]],
    )
    wait_for(lambda: _settled(task_id), 15, "the outcome")
    (row,) = _outbox(task_id)
    assert row.status == "failed" and row.attempts == 1
    assert "chat not found" in row.last_error
    assert BOT_TOKEN not in row.last_error


@pytest.mark.parametrize("digest", [None, "1s"], ids=["alone", "digest"])
def test_a_message_the_database_could_not_mark_sent_is_not_sent_again(
    db_url, redis_client, workers, services, use_env, digest
):
    # Given a task notifying a webhook, and claims that expire after a second
    server, _ = services
    use_env(KAKAROT_NOTIFY_CLAIM_S="1", KAKAROT_OUTAGE_RETRY_MAX_S="1")
    methods: dict = {"webhook": {}}
    if digest:
        methods["digest"] = {"window": digest}
    task_id = create_task_with(
        CAS[:2],
        min_transaction_usd=1000,
        events_config={"cooldown": {"seconds": 0}},
        notify_methods=methods,
    )
    worker = workers("alerts,notify", concurrency=2)

    # When another writer locks the database for longer than SQLite's busy timeout from the
    # moment the webhook has the message until after the claim expired
    locked, released = threading.Event(), threading.Event()

    def lock_the_database() -> None:
        locker = sqlite3.connect(
            make_url(db_url).database, isolation_level=None, check_same_thread=False
        )
        locker.execute("BEGIN EXCLUSIVE")
        locked.set()

        def release() -> None:
            locker.execute("ROLLBACK")
            locker.close()
            released.set()

        threading.Timer(SQLITE_BUSY_TIMEOUT_MS / 1000 + 2, release).start()

    server.before_answer("webhook", lock_the_database)
    app.send_task(
        "kakarot.alerts.evaluate_events",
        args=[[wire_event(task_id, CAS[i], i, amount_usd=5000.0) for i in range(2)]],
    )
    wait_for(locked.is_set, 15, "the webhook to receive the message")
    wait_for(released.is_set, 20, "the lock to be released")
    wait_for(lambda: len(_outbox(task_id)) == 2 and _settled(task_id), 20, "the rows to settle")
    wait_drained(redis_client, ["alerts", "notify"])

    # Then the message went once, and its rows are sent (not left claimed, not sent again)
    hooks = server.messages("webhook")
    expected = 1 if digest else 2
    assert len(hooks) == expected, [h.get("_delivery") for h in hooks]
    rows = _outbox(task_id)
    assert {r.status for r in rows} == {"sent"}
    assert {a.notify_status for a in _alerts(task_id)} == {"sent"}
    assert "could not record" in worker.log_text()
    sent = int(redis_client.get(runtime.keys().notify_stat("webhook", "sent")))
    assert sent == expected, "each message counted once, when it is recorded"
    assert not redis_client.keys(runtime.keys().notify_sent(0).removesuffix("0") + "*")


def test_digest_sends_one_message_listing_the_window(db_url, redis_client, workers, services):
    server, _ = services
    task_id = create_task_with(
        CAS,
        min_transaction_usd=1000,
        events_config={"cooldown": {"seconds": 0}},
        notify_methods={"telegram": {"chat_id": "-1002"}, "digest": {"window": "2s"}},
    )
    workers("alerts,notify", concurrency=2)
    for i in range(5):
        app.send_task(
            "kakarot.alerts.evaluate_events",
            args=[[wire_event(task_id, CAS[i], i, amount_usd=5000.0, symbol=f"T{i}")]],
        )
    wait_for(lambda: len(_outbox(task_id)) == 5 and _settled(task_id), 15, "the digest")
    messages = server.messages("telegram")
    assert len(messages) == 1
    assert messages[0]["text"].startswith("<b>5 alerts of task")
    assert all(f"T{i}" in messages[0]["text"] for i in range(5))
    assert len({r.message_ref for r in _outbox(task_id)}) == 1


def test_cooldown_keeps_a_token_quiet_and_judges_windows(db_url, redis_client):
    # In this process: 10 trades of one token, volume rule over 5m, cooldown 1 s
    task_id = create_task_with(
        CAS[:1],
        events_config={"volume": {"min_usd": 1000, "window": "5m"}, "cooldown": {"seconds": 1}},
    )
    now = int(time.time() * 1000)
    events = [wire_event(task_id, CAS[0], i, amount_usd=300.0, ts_ms=now + i) for i in range(10)]
    assert evaluate_events.run(events[:5]) == 1  # the 4th trade reaches $1,200
    first = _alerts(task_id)[0]
    assert first.alert_type == "volume" and first.tx_hash == events[3]["tx_hash"]
    assert first.alert_data["rules"][0]["values"]["volume_usd"] == 1200.0
    assert evaluate_events.run(events[5:8]) == 0  # cooling down
    keys = runtime.keys()
    cooldown = keys.cooldown(task_id, CAS[0])
    assert 0 < redis_client.pttl(cooldown) <= 1000
    wait_for(lambda: not redis_client.exists(cooldown), 5, "the 1 s cooldown to end")
    assert evaluate_events.run(events[8:]) == 1
    assert evaluate_events.run(events) == 0  # re-delivered: nothing new
    assert len(_alerts(task_id)) == 2
    window = Windows(redis_client, keys).snapshot(task_id, CAS[0], 300)
    assert window.trades == 10 and window.volume_usd == 3000.0
    assert int(redis_client.get(keys.alert_stat("cooldown"))) >= 3


def test_an_invalid_config_version_leaves_the_last_valid_one_in_force(
    db_url, redis_client, use_env
):
    use_env(KAKAROT_CONFIG_CACHE_TTL_S="0")
    task_id = create_task_with(
        CAS[:1], min_transaction_usd=1000, events_config={"cooldown": {"seconds": 0}}
    )
    assert evaluate_events.run([wire_event(task_id, CAS[0], 1, amount_usd=2000.0)]) == 1
    with session_scope() as session:
        session.execute(
            update(MonitorConfig).values(
                events_config={"cooldown": {"seconds": 0}, "volume": {"min_usd": "lots"}},
                version=MonitorConfig.version + 1,
            )
        )
    alerts._profiles.invalidate()  # what a config-changed notice does
    # the refused version 2 names its field; version 1 stays in force
    assert evaluate_events.run([wire_event(task_id, CAS[0], 2, amount_usd=2000.0)]) == 1
    assert int(redis_client.get(runtime.keys().configs_rejected)) == 1
    assert {r.config_version for r in _alerts(task_id)} == {1}


class _MetricsProvider:
    """A metrics provider on 127.0.0.1 that can be down, then up."""

    def __init__(self):
        self.up = False
        self.calls = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_GET(self):  # noqa: N802
                provider.calls += 1
                if not provider.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"market_cap_usd": 2.5e6, "top10_holders_pct": 41.5}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/tokens/{{chain}}/{{ca}}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_missing_metrics_alert_marked_incomplete_and_enrichment_retries_soon(
    db_url, redis_client, use_env
):
    provider = _MetricsProvider()
    try:
        use_env(KAKAROT_METRICS_URL=provider.url, KAKAROT_METRICS_RETRY_S="1")
        task_id = create_task_with(
            CAS[:1],
            min_transaction_usd=1000,
            events_config={"cooldown": {"seconds": 0}, "market_cap": {"min_usd": 1e6}},
            top_holders_threshold=50,
        )

        def trade(n):
            return wire_event(
                task_id, CAS[0], n, amount_usd=2000.0, market_cap_usd=None, top10_holders_pct=None
            )

        # the provider is down: the alert goes out on what is known, marked incomplete
        assert evaluate_events.run([trade(1)]) == 1
        assert evaluate_events.run([trade(2)]) == 1
        assert provider.calls == 1  # the failure is cached, briefly
        first = _alerts(task_id)[0]
        assert first.incomplete_data == 1
        assert first.alert_data["missing"] == ["market_cap_usd", "top10_holders_pct"]
        # the provider comes back: after the short back-off the metrics are there
        provider.up = True
        cached = runtime.keys().token_metrics("bsc", CAS[0])
        assert 0 < redis_client.pttl(cached) <= 1000
        wait_for(lambda: not redis_client.exists(cached), 5, "the cached failure to expire")
        assert evaluate_events.run([trade(3)]) == 1
        latest = max(_alerts(task_id), key=lambda r: r.id)
        assert latest.incomplete_data == 0 and latest.alert_data["market_cap_usd"] == 2.5e6
        assert provider.calls == 2
    finally:
        provider.close()


def test_under_a_deep_backlog_the_pool_sheds_lookups_then_single_notifications(
    db_url, redis_client, use_env, services
):
    provider = _MetricsProvider()
    provider.up = True
    try:
        use_env(KAKAROT_METRICS_URL=provider.url, KAKAROT_DEGRADE_BACKLOG="[5, 10, 20]")
        alerts.reset_caches()  # the new thresholds
        task_id = create_task_with(
            CAS,
            min_transaction_usd=1000,
            events_config={"cooldown": {"seconds": 0}},
            notify_methods={"webhook": {}},
        )

        def trade(n: int) -> dict:
            ca = CAS[n % len(CAS)]
            return wire_event(task_id, ca, n, amount_usd=2000.0, market_cap_usd=None)

        assert evaluate_events.run([trade(0)]) == 1  # no backlog: looked up, sent alone
        assert provider.calls == 1 and _outbox(task_id)[0].digest_s is None
        redis_client.lpush("alerts", *["{}"] * 25)  # a backlog nobody drains here
        time.sleep(1.1)  # the pool reads the backlog at most once a second
        assert evaluate_events.run([trade(1)]) == 1  # level 3: no lookup, a digest
        assert provider.calls == 1, "no lookup under a backlog"
        newest = max(_outbox(task_id), key=lambda r: r.id)
        assert newest.digest_s == 60
        redis_client.delete("alerts")
        time.sleep(1.1)
        assert evaluate_events.run([trade(2)]) == 1  # back to normal
        assert provider.calls == 2 and max(_outbox(task_id), key=lambda r: r.id).digest_s is None
    finally:
        provider.close()


def test_malformed_and_retracted_events_are_counted_and_skipped(db_url, redis_client):
    task_id = create_task_with(
        CAS[:1], min_transaction_usd=1000, events_config={"cooldown": {"seconds": 0}}
    )
    good = wire_event(task_id, CAS[0], 1, amount_usd=2000.0)
    retracted = wire_event(task_id, CAS[0], 2, amount_usd=2000.0)
    keys = runtime.keys()
    redis_client.hset(keys.retracted, f"bsc:{retracted['tx_hash']}:0", 123)
    bad = {**good, "side": "hold"}
    assert evaluate_events.run([bad, good, retracted, "junk"]) == 1
    assert int(redis_client.get(keys.events_rejected)) == 2
    assert [r.tx_hash for r in _alerts(task_id)] == [good["tx_hash"]]


# every trade of $1,000 or more alerts; a 5-minute window is kept (its rule never fires)
RADAR = {
    "large_trade": {"min_usd": 1000},
    "volume": {"min_usd": 1e12, "window": "5m"},
    "cooldown": {"seconds": 0},
}


def test_a_copy_with_other_values_is_not_judged_again_one_row_per_rule(db_url, redis_client):
    # a back-fill re-sends a trade priced otherwise: judged again it would alert
    task_id = create_task_with(CAS[:1], events_config=RADAR)
    now = int(time.time() * 1000)
    first = wire_event(task_id, CAS[0], 1, amount_usd=500.0, ts_ms=now)
    second = wire_event(task_id, CAS[0], 2, amount_usd=2000.0, ts_ms=now + 1)
    assert evaluate_events.run([first, second]) == 1  # the large trade
    copies = [{**first, "amount_usd": 6000.0}, {**first, "amount_usd": 9000.0, "side": "sell"}]
    assert evaluate_events.run(copies) == 0  # a conflict: the first copy counts
    assert evaluate_events.run([first, second]) == 0  # identical copies: judged as before
    assert [r.tx_hash for r in _alerts(task_id)] == [second["tx_hash"]]
    keys = runtime.keys()
    assert redis_client.get(keys.alert_stat("window_conflicts")) == "2"
    window = Windows(redis_client, keys).snapshot(task_id, CAS[0], 300)
    assert (window.trades, window.volume_usd) == (2, 2500.0)


def test_a_retracted_trade_leaves_its_windows_and_its_alert_is_marked(
    db_url, redis_client, services
):
    from kakarot_workers.alerts.retract import retract

    task_id = create_task_with(CAS[:1], events_config=RADAR, notify_methods={"webhook": {}})
    now = int(time.time() * 1000)
    trades = [
        wire_event(task_id, CAS[0], i, amount_usd=1500.0 + i, ts_ms=now + i) for i in range(3)
    ]
    assert evaluate_events.run(trades) == 3
    assert retract(task_id, CAS[0], "bsc", trades[1]["tx_hash"], 0) == (True, 1)
    window = Windows(redis_client, runtime.keys()).snapshot(task_id, CAS[0], 300)
    assert (window.trades, window.volume_usd) == (2, 1500.0 + 1502.0)
    # the newest withdrawn too, while a worker is sending its notification: the head moves
    # back to the first trade, and the notification is not tried again
    newest = next(r for r in _alerts(task_id) if r.tx_hash == trades[2]["tx_hash"])
    with session_scope() as session:
        session.execute(
            update(MonitorAlertOutbox)
            .where(MonitorAlertOutbox.alert_id == newest.id)
            .values(status="sending")
        )
    assert retract(task_id, CAS[0], "bsc", trades[2]["tx_hash"], 0) == (True, 1)
    window = Windows(redis_client, runtime.keys()).snapshot(task_id, CAS[0], 300)
    assert (window.trades, window.volume_usd, window.last_price) == (1, 1500.0, 1.0)
    marked = {r.tx_hash: r.retracted for r in _alerts(task_id)}
    assert marked == {trades[0]["tx_hash"]: 0, trades[1]["tx_hash"]: 1, trades[2]["tx_hash"]: 1}
    statuses = {r.alert_id: r.status for r in _outbox(task_id)}
    assert sorted(statuses.values()) == ["pending", "retracted", "retracted"]
    assert {r.tx_hash: r.notify_status for r in _alerts(task_id)}[trades[1]["tx_hash"]] == (
        "retracted"
    )
    assert retract(task_id, CAS[0], "bsc", "0x" + "9" * 64, 0) == (False, 0)
    # mined again later (its consumer took it out of `kakarot:retracted`): judged again, it
    # counts in its windows and its alert stands again, its notification pending
    assert evaluate_events.run([trades[1]]) == 0  # its row exists: no second one
    window = Windows(redis_client, runtime.keys()).snapshot(task_id, CAS[0], 300)
    assert window.trades == 2
    again = {r.tx_hash: (r.retracted, r.notify_status) for r in _alerts(task_id)}
    assert again[trades[1]["tx_hash"]] == (0, "pending")
    assert sorted(r.status for r in _outbox(task_id)) == ["pending", "pending", "retracted"]


def test_bad_fields_beside_valid_trades_are_rejected_alone_and_counted_by_reason_and_batch(
    db_url, redis_client
):
    """Each of these failed the whole micro-batch before (an OverflowError, a year out of range,
    an AttributeError, a database error retried 40 times): now each event is rejected alone and
    every valid trade beside it is judged and recorded, in one pass, with no retry."""
    task_id = create_task_with(
        CAS[:1], min_transaction_usd=1000, events_config={"cooldown": {"seconds": 0}}
    )
    valid = [wire_event(task_id, CAS[0], n, amount_usd=2000.0, batch_id=7) for n in range(1, 5)]
    bad = [
        wire_event(task_id, CAS[0], 11, amount_usd=2000.0, batch_id=7, log_index=10**30),
        wire_event(task_id, CAS[0], 12, amount_usd=2000.0, batch_id=7, ts_ms=10**18),
        wire_event(task_id, CAS[0], 13, amount_usd=2000.0, batch_id=7, tx_hash=12345),
        wire_event(task_id, CAS[0], 14, amount_usd=2000.0, batch_id=7, symbol=["PEPE"]),
        wire_event(task_id, CAS[0], 15, amount_usd=2000.0, symbol="X" * 1_000_000),
        wire_event(task_id, CAS[0], 16, amount_usd=1e300, batch_id=7),
        wire_event(task_id, CAS[0], 17, amount_usd=2000.0, batch_id=7, chain="mars"),
    ]
    message = [bad[0], valid[0], bad[1], bad[2], valid[1], bad[3], bad[4], bad[5], valid[2]]
    message += [bad[6], valid[3]]
    assert evaluate_events.run(message) == 4
    assert sorted(r.tx_hash for r in _alerts(task_id)) == sorted(e["tx_hash"] for e in valid)
    keys = runtime.keys()
    assert redis_client.get(keys.events_rejected) == "7"
    assert redis_client.hgetall(keys.rejects_by_reason) == {
        "pool:log_index": "1",
        "pool:ts_ms": "1",
        "pool:tx_hash": "1",
        "pool:symbol": "2",
        "pool:amount_usd": "1",
        "pool:chain": "1",
    }
    assert redis_client.hgetall(keys.rejects_by_batch) == {"7": "6"}  # one named no batch
