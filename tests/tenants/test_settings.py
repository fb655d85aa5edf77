"""Settings come from the environment once, with defaults for one machine and clear errors."""

from __future__ import annotations

import pytest

from tenants.settings import Settings, app_url_from_owner_url


def test_defaults_run_the_one_machine_stack() -> None:
    s = Settings.from_env({})
    assert s.port == 8000 and s.public_url == "http://127.0.0.1:8000"
    assert s.database_url is None and s.temporal_address is None and s.stripe_api_key is None
    assert str(s.state_dir) == ".metacloud"


def test_environment_overrides() -> None:
    s = Settings.from_env({"METACLOUD_PORT": "9000", "DATABASE_URL": "postgresql://u:p@db:5432/mc",
                           "TEMPORAL_ADDRESS": "temporal:7233", "METACLOUD_STATE_DIR": "/tmp/x"})
    assert s.port == 9000 and s.public_url == "http://127.0.0.1:9000"
    assert s.temporal_address == "temporal:7233"
    assert s.resolved_app_database_url == "postgresql://metacloud_app@db:5432/mc"


def test_app_url_uses_the_non_owner_role_and_its_password() -> None:
    url = app_url_from_owner_url("postgresql://postgres:secret@/postgres?host=/tmp/pg", password="p@ss")
    assert url == "postgresql://metacloud_app:p%40ss@/postgres?host=/tmp/pg"


def test_a_bad_number_names_the_setting() -> None:
    with pytest.raises(ValueError, match="METACLOUD_PORT must be a whole number"):
        Settings.from_env({"METACLOUD_PORT": "eighty"})


def test_production_refuses_the_dev_secret() -> None:
    with pytest.raises(ValueError, match="METACLOUD_SECRET_KEY"):
        Settings.from_env({"METACLOUD_ENV": "production"})
    assert Settings.from_env({"METACLOUD_ENV": "production", "METACLOUD_SECRET_KEY": "x" * 40}).is_production


def test_no_secret_appears_in_repr() -> None:
    s = Settings(secret_key="hunter2hunter2", database_url="postgresql://u:dbpass@h/db",
                 stripe_api_key="sk_test_abc", smtp_url="smtp://u:mailpass@h", app_db_password="apppass",
                 temporal_api_key="tmpkey", stripe_webhook_secret="whsec_x")
    text = repr(s)
    for secret in ("hunter2hunter2", "dbpass", "sk_test_abc", "mailpass", "apppass", "tmpkey", "whsec_x"):
        assert secret not in text


def test_sqlalchemy_url_needs_postgres() -> None:
    assert Settings().sqlalchemy_url("postgres://a@b/c") == "postgresql+asyncpg://a@b/c"
    with pytest.raises(ValueError, match="postgresql://"):
        Settings().sqlalchemy_url("mysql://a@b/c")
