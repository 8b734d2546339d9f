"""`/ready`'s answers: each check by name, a failure said without any secret in it, and a check
still hanging from an earlier call not started again."""

import threading
import time

from kakarot_workers import probes


def test_ready_names_each_check_masks_secrets_and_never_piles_up_threads(use_env):
    use_env(KAKAROT_TELEGRAM_BOT_TOKEN="123456:probe-secret-token")
    probes._redact = None  # read the settings again
    release = threading.Event()
    calls = []

    def hung() -> None:
        calls.append(1)
        release.wait(10)

    def failing() -> None:
        raise ConnectionError("refused by https://api.example/bot123456:probe-secret-token/x")

    checker = probes.Probes(0, "127.0.0.1", {"ok": lambda: None, "bad": failing, "hung": hung})
    probes.CHECK_TIMEOUT_S, saved = 0.2, probes.CHECK_TIMEOUT_S
    try:
        ready, checks = checker.ready()
        assert not ready and checks["ok"] == "ok"
        assert checks["bad"] == "ConnectionError: refused by https://api.example/bot***/x"
        assert checks["hung"].startswith("no answer in")
        for _ in range(5):
            assert checker.ready()[1]["hung"].startswith("no answer yet")
        assert len(calls) == 1, "a hanging check is not started again"
        release.set()
        time.sleep(0.1)
        checker.ready()
        assert len(calls) == 2
    finally:
        probes.CHECK_TIMEOUT_S = saved
        release.set()
