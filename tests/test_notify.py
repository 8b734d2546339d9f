import hashlib
import hmac

import pytest

from kakarot_workers.errors import ConfigError
from kakarot_workers.notify.channels import parse_notify_methods
from kakarot_workers.notify.outbox import backoff_s
from kakarot_workers.notify.webhook import signature
from kakarot_workers.settings import load_settings


def test_a_list_of_channel_names_uses_the_fleet_defaults():
    settings = load_settings(
        telegram_chat_id="-100", webhook_url="https://example.org/h", backend_ws_url="ws://b"
    )
    methods = parse_notify_methods(["telegram", "wechat", "webhook", "backend"])
    assert methods.targets(settings) == [
        ("telegram", "-100"),
        ("wecom", "KAKAROT_WECOM_KEY"),
        ("webhook", '{"url":"https://example.org/h","secret_env":"KAKAROT_WEBHOOK_SECRET"}'),
        ("backend", "ws://b"),
    ]
    assert methods.digest_s is None


def test_an_object_names_destinations_and_a_digest():
    methods = parse_notify_methods(
        '{"telegram": {"chat_id": -1001}, "wecom": {"key_env": "OPS_KEY"},'
        ' "webhook": {"url": "http://h/x", "secret_env": "HOOK"}, "backend": {"enabled": false},'
        ' "digest": {"window": "2m"}}'
    )
    assert methods.targets(load_settings()) == [
        ("telegram", "-1001"),
        ("wecom", "OPS_KEY"),
        ("webhook", '{"url":"http://h/x","secret_env":"HOOK"}'),
    ]
    assert methods.digest_s == 120


@pytest.mark.parametrize(
    "raw, where",
    [
        (["telegram", "pager"], "notify_methods[1]: unknown channel 'pager'"),
        ([3], "notify_methods[0]: expected a channel name"),
        ({"telegram": {"chat": "-1"}}, "notify_methods.telegram.chat"),
        ({"webhook": {"url": "ftp://x"}}, "notify_methods.webhook.url"),
        ({"digest": {"window": "soon"}}, "notify_methods.digest.window"),
        ({"sms": {}}, "notify_methods.sms"),
        ("{", "notify_methods: not valid JSON"),
        (7, "notify_methods: expected a list or an object"),
    ],
)
def test_invalid_notify_methods_name_the_entry(raw, where):
    with pytest.raises(ConfigError) as error:
        parse_notify_methods(raw)
    assert where in str(error.value)


def test_empty_notify_methods_notify_nobody():
    for raw in (None, "", [], {}):
        assert parse_notify_methods(raw).targets(load_settings()) == []


def test_webhook_signature_is_hmac_sha256_of_timestamp_and_body():
    body = b'{"type":"alert"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret", "1700000000", body) == f"sha256={expected}"
    assert signature("other", "1700000000", body) != f"sha256={expected}"


@pytest.mark.parametrize(
    "attempts, retry_after, low, high",
    [(1, None, 0.8, 1.2), (3, None, 3.2, 4.8), (10, None, 48, 72), (2, 7.0, 7.0, 7.0)],
)
def test_backoff_honours_retry_after_else_doubles_with_jitter(attempts, retry_after, low, high):
    wait = backoff_s(attempts, max_backoff_s=60, retry_after_s=retry_after)
    assert low <= wait <= high
