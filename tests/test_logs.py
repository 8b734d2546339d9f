"""No secret reaches a log line or a traceback (`logs.Redact`)."""

import io
import logging

from kakarot_workers.logs import JsonFormatter, Redact, secrets_of
from kakarot_workers.settings import load_settings


def _logger(redact: Redact, json_lines: bool = False) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
    handler.addFilter(redact)
    logger = logging.getLogger(f"test-redact-{id(redact)}-{json_lines}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, out


def test_settings_secrets_url_passwords_and_secret_named_variables_are_masked():
    settings = load_settings(
        # an `@` left unescaped in the password: a parser may cut the password there
        database_url="mysql+pymysql://kakarot:p@ssw0rd@db/kakarot",
        redis_url="redis://:redis-pass-1@127.0.0.1:6379/0",
        telegram_bot_token="123456:ABC-token",
    )
    secrets = secrets_of(settings, {"MY_WECOM_KEY": "wecom-own-key", "PATH": "/usr/bin"})
    logger, out = _logger(Redact(secrets))
    logger.warning("POST https://api.telegram.org/bot%s/sendMessage", "123456:ABC-token")
    logger.warning("redis redis://:redis-pass-1@127.0.0.1 and wecom-own-key and /usr/bin")
    try:
        raise ValueError("can't connect to MySQL server on 'ssw0rd@db' (kakarot:p@ssw0rd)")
    except ValueError:
        logger.exception("database unreachable")
    text = out.getvalue()
    for secret in ("123456:ABC-token", "redis-pass-1", "wecom-own-key", "ssw0rd"):
        assert secret not in text, secret
    assert "bot***/sendMessage" in text and "/usr/bin" in text
    assert "Traceback" in text and "ValueError" in text  # the traceback stays, masked


def test_json_lines_keep_the_masked_traceback():
    logger, out = _logger(Redact(["s3cret-value"]), json_lines=True)
    try:
        raise RuntimeError("token s3cret-value refused")
    except RuntimeError:
        logger.exception("failed with s3cret-value")
    text = out.getvalue()
    assert "s3cret-value" not in text and '"exc": "Traceback' in text and "***" in text


def test_celerys_lines_about_each_alert_message_are_debug_lines():
    from kakarot_workers.logs import HotTasksToDebug

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    trace = logging.getLogger("test-celery-trace")
    trace.handlers[:] = [handler]
    trace.propagate = False
    trace.addFilter(HotTasksToDebug())
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        trace.info("Task kakarot.alerts.evaluate_events[1f] succeeded in 0.01s: 1")
        trace.info("Task kakarot.control.reconcile[2a] succeeded in 0.05s: None")
        root.setLevel(logging.DEBUG)
        trace.info("Task kakarot.notify.deliver[3b] received")
    finally:
        root.setLevel(level)
    assert out.getvalue().splitlines() == [
        "INFO Task kakarot.control.reconcile[2a] succeeded in 0.05s: None",
        "DEBUG Task kakarot.notify.deliver[3b] received",
    ]


def test_json_lines_carry_the_bound_context_fields():
    import json

    from kakarot_workers.logs import Context, bound

    logger, out = _logger(Redact([]), json_lines=True)
    logger.handlers[0].addFilter(Context())
    with bound(task_id=7, batch_id=12, consumer_id="host-1-1", epoch=3):
        logger.warning("lease lost")
        with bound(epoch=4):
            logger.info("inner")  # below the logger's level: not written
            logger.warning("epoch moved")
    logger.warning("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["lease lost", "epoch moved", "outside"]
    assert {k: lines[0][k] for k in ("task_id", "batch_id", "consumer_id", "epoch")} == {
        "task_id": 7,
        "batch_id": 12,
        "consumer_id": "host-1-1",
        "epoch": 3,
    }
    assert lines[1]["epoch"] == 4 and "batch_id" not in lines[2]
    assert lines[0]["level"] == "WARNING" and lines[0]["ts"].endswith("+00:00")


def test_extras_api_keys_in_urls_are_masked_and_ordinary_values_are_not():
    import json

    from kakarot_workers.settings import EvmChain

    settings = load_settings(
        evm_chains={"eth": EvmChain(ws_url="wss://eth.example/v2/AbCdEf0123456789XyZ")},
        redis_key_prefix="kakarot",
    )
    environ = {
        "TOKENIZERS_PARALLELISM": "false",
        "PASSWORD_STORE_DIR": "/home/u/.pw",
        "HOOK_SECRET": "hook-secret-value",
        "KAKAROT_REDIS_KEY_PREFIX": "kakarot",
    }
    secrets = secrets_of(settings, environ)
    assert "AbCdEf0123456789XyZ" in secrets and "hook-secret-value" in secrets
    assert not {"false", "/home/u/.pw", "kakarot"} & set(secrets)
    logger, out = _logger(Redact(secrets), json_lines=True)
    logger.error(
        "task failed",
        extra={"data": {"exc": "refused hook-secret-value", "tb": ["AbCdEf0123456789XyZ"]}},
    )
    logger.warning("value %d", "not a number")  # a malformed call: reported, never raised
    entry = json.loads(out.getvalue().splitlines()[0])
    assert entry["data"] == {"exc": "refused ***", "tb": ["***"]}
