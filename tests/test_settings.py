import pytest

from kakarot_workers.errors import ConfigError
from kakarot_workers.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("KAKAROT_CONFIG_FILE", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("KAKAROT_BATCH_CAP", "many", "KAKAROT_BATCH_CAP: Input should be a valid integer"),
        ("KAKAROT_BATCH_CAP", "0", "KAKAROT_BATCH_CAP: Input should be greater than or equal to 1"),
        (
            "KAKAROT_DATABASE_URL",
            "postgres://x",
            "KAKAROT_DATABASE_URL: Value error, expected sqlite",
        ),
        ("KAKAROT_REDIS_URL", "http://x", "KAKAROT_REDIS_URL: Value error, expected redis://"),
        ("KAKAROT_LOG_LEVEL", "LOUD", "KAKAROT_LOG_LEVEL: Value error, expected one of DEBUG"),
        ("KAKAROT_EMIT_MAX_MS", "-5", "KAKAROT_EMIT_MAX_MS"),
        ("KAKAROT_JSON_LOGS", "perhaps", "KAKAROT_JSON_LOGS: Input should be a valid boolean"),
    ],
)
def test_invalid_variable_is_named(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert message in str(error.value)


def test_secrets_in_urls_are_not_echoed(clean_env):
    clean_env.setenv("KAKAROT_DATABASE_URL", "postgres://user:hunter2@db/x")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "hunter2" not in str(error.value)


def test_safe_dump_masks_passwords(clean_env):
    clean_env.setenv("KAKAROT_DATABASE_URL", "mysql+pymysql://kakarot:hunter2@db:3306/kakarot")
    clean_env.setenv("KAKAROT_REDIS_URL", "redis://:s3cret@cache:6379/0")
    dump = load_settings().safe_dump()
    assert dump["database_url"] == "mysql+pymysql://kakarot:***@db:3306/kakarot"
    assert "s3cret" not in dump["redis_url"]


def test_yaml_file_and_env_precedence(clean_env, tmp_path):
    file = tmp_path / "kakarot.yaml"
    file.write_text("batch_cap: 50\nemit_max_ms: 20\n")
    clean_env.setenv("KAKAROT_CONFIG_FILE", str(file))
    clean_env.setenv("KAKAROT_EMIT_MAX_MS", "10")
    settings = load_settings()
    assert settings.batch_cap == 50  # from the file
    assert settings.emit_max_ms == 10  # the environment wins


@pytest.mark.parametrize(
    "content, message",
    [
        ("batch_cap: [1", "is not valid YAML"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("batch_cpa: 5\n", "unknown setting(s): batch_cpa"),
        ("batch_cap: nope\n", "KAKAROT_BATCH_CAP: Input should be a valid integer"),
    ],
)
def test_bad_yaml_file(clean_env, tmp_path, content, message):
    file = tmp_path / "kakarot.yaml"
    file.write_text(content)
    clean_env.setenv("KAKAROT_CONFIG_FILE", str(file))
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert message in str(error.value)


def test_missing_yaml_file(clean_env, tmp_path):
    clean_env.setenv("KAKAROT_CONFIG_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="KAKAROT_CONFIG_FILE: no such file"):
        load_settings()


def test_the_readme_lists_every_setting_as_the_settings_describe_it():
    """The README's configuration table is generated (`kakarot config reference`): after a
    setting changes, regenerate it, or this fails."""
    from pathlib import Path

    from kakarot_workers.tools.reference import settings_block

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert settings_block() in readme, "README.md: paste the output of `kakarot config reference`"


def test_the_reference_names_every_variable_its_default_and_secrets():
    from kakarot_workers.settings import Settings
    from kakarot_workers.tools.reference import settings_table

    table = settings_table()
    rows = table.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    assert "| `KAKAROT_BATCH_CAP` | 99 | targets per batch" in table
    assert "| `KAKAROT_TELEGRAM_BOT_TOKEN` (secret) | — |" in table
    assert "| `KAKAROT_REDIS_KEY_PREFIX` | empty |" in table
    assert "| `KAKAROT_EXPLORER_TX_URL` | `eth`, `bsc`, `base`, `sol` |" in table


def test_a_kakarot_variable_that_is_no_setting_is_named_with_the_setting_it_may_mean():
    from kakarot_workers.settings import unknown_variables

    environ = {
        "KAKAROT_REDIS_URL": "redis://x",
        "KAKAROT_LEASE_TTL": "5",  # the setting is KAKAROT_LEASE_TTL_S
        "KAKAROT_FOO": "1",
        "KAKAROT_CONFIG_FILE": "/etc/kakarot.yaml",
        "KAKAROT_TEST_REQUIRE_EVM": "1",
        "PATH": "/usr/bin",
    }
    assert unknown_variables(environ) == [
        "KAKAROT_FOO",
        "KAKAROT_LEASE_TTL (did you mean KAKAROT_LEASE_TTL_S?)",
    ]
