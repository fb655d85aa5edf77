"""Process settings: one frozen object built at the entry point from the environment.

Nothing reads the environment at import time; ``Settings.from_env()`` is called once by
``metacloud <command>`` (or by a test fixture) and the object is passed down.
Every setting has a default that works for the one-machine stack; the README lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["Settings", "app_url_from_owner_url"]

APP_ROLE = "metacloud_app"


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"setting {key} must be a whole number, got {raw!r}") from exc


def app_url_from_owner_url(owner_url: str, role: str = APP_ROLE, password: str = "") -> str:
    """The application's connection: the owner's URL with the non-owner app role as its user.

    The app must never connect as a table owner or superuser, or row-level security is bypassed.
    """
    parts = urlsplit(owner_url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = quote(role, safe="")
    if password:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class Settings:
    # --- where state lives on one machine
    state_dir: Path = Path(".metacloud")
    environment: str = "dev"  # dev | test | production

    # --- PostgreSQL: the owner URL runs migrations; the app URL is a NOSUPERUSER NOBYPASSRLS role
    database_url: str | None = field(default=None, repr=False)
    app_database_url: str | None = field(default=None, repr=False)
    app_db_password: str = field(default="", repr=False)
    db_pool_size: int = 10

    # --- Temporal
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "metacloud"
    temporal_api_key: str | None = field(default=None, repr=False)
    temporal_tls: bool = False
    # Temporal Cloud mTLS: paths of the client certificate and key (turns TLS on)
    temporal_tls_cert: str | None = None
    temporal_tls_key: str | None = None
    # ports of the dev server `metacloud dev` starts when TEMPORAL_ADDRESS is unset; no UI port = headless
    temporal_port: int = 7233
    temporal_ui_port: int | None = None

    # --- Stripe
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    # port of the localstripe stand-in `metacloud dev` starts when STRIPE_API_KEY is unset
    stripe_port: int = 8420

    # --- gateway
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str = field(default="dev-only-secret-change-me", repr=False)
    session_idle_minutes: int = 120
    session_absolute_hours: int = 168
    # how long a cluster's registration token (the install command) stays redeemable
    registration_token_ttl_minutes: int = 60

    # --- observability
    log_level: str = "INFO"
    log_json: bool = True
    otel_exporter: str = "none"  # none | console | otlp
    otel_endpoint: str | None = None
    service_name: str = "metacloud"

    # --- metering: raw usage records older than this are refused and their monthly partitions dropped
    # (hourly rollups are kept); must cover billing's grace for late usage.
    usage_raw_retention_days: int = 400
    # --- housekeeping (the daily ``maintenance.daily``): sent mail, expired sessions, tokens and invites
    # are deleted this many days after they stopped mattering
    housekeeping_keep_days: int = 30

    # --- email
    smtp_url: str | None = field(default=None, repr=False)  # may carry a password
    mail_from: str = "Metacloud <no-reply@metacloud.local>"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        environment = e.get("METACLOUD_ENV", "dev")
        secret = e.get("METACLOUD_SECRET_KEY", "")
        if environment == "production" and len(secret) < 32:
            raise ValueError("METACLOUD_SECRET_KEY must be set to at least 32 characters in production")
        keep_days = _int(e, "HOUSEKEEPING_KEEP_DAYS", 30)
        if keep_days < 1:  # a cutoff in the future would delete live sessions and unsent mail
            raise ValueError("setting HOUSEKEEPING_KEEP_DAYS must be at least 1")
        return cls(
            state_dir=Path(e.get("METACLOUD_STATE_DIR", ".metacloud")),
            environment=environment,
            database_url=e.get("DATABASE_URL") or None,
            app_database_url=e.get("APP_DATABASE_URL") or None,
            app_db_password=e.get("APP_DB_PASSWORD", ""),
            db_pool_size=_int(e, "DB_POOL_SIZE", 10),
            temporal_address=e.get("TEMPORAL_ADDRESS") or None,
            temporal_namespace=e.get("TEMPORAL_NAMESPACE", "default"),
            temporal_task_queue=e.get("TEMPORAL_TASK_QUEUE", "metacloud"),
            temporal_api_key=e.get("TEMPORAL_API_KEY") or None,
            temporal_tls=_bool(e.get("TEMPORAL_TLS"), False),
            temporal_tls_cert=e.get("TEMPORAL_TLS_CERT") or None,
            temporal_tls_key=e.get("TEMPORAL_TLS_KEY") or None,
            temporal_port=_int(e, "METACLOUD_TEMPORAL_PORT", 7233),
            temporal_ui_port=_int(e, "METACLOUD_TEMPORAL_UI_PORT", 0) or None,
            stripe_api_key=e.get("STRIPE_API_KEY") or None,
            stripe_api_base=e.get("STRIPE_API_BASE") or None,
            stripe_webhook_secret=e.get("STRIPE_WEBHOOK_SECRET") or None,
            stripe_port=_int(e, "METACLOUD_STRIPE_PORT", 8420),
            host=e.get("METACLOUD_HOST", "127.0.0.1"),
            port=_int(e, "METACLOUD_PORT", 8000),
            public_url=e.get("METACLOUD_PUBLIC_URL", "")
            or f"http://{e.get('METACLOUD_HOST', '127.0.0.1')}:{_int(e, 'METACLOUD_PORT', 8000)}",
            secret_key=secret or "dev-only-secret-change-me",
            session_idle_minutes=_int(e, "SESSION_IDLE_MINUTES", 120),
            session_absolute_hours=_int(e, "SESSION_ABSOLUTE_HOURS", 168),
            registration_token_ttl_minutes=_int(e, "REGISTRATION_TOKEN_TTL_MINUTES", 60),
            log_level=e.get("LOG_LEVEL", "INFO").upper(),
            log_json=_bool(e.get("LOG_JSON"), True),
            otel_exporter=e.get("OTEL_EXPORTER", "none"),
            otel_endpoint=e.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            service_name=e.get("OTEL_SERVICE_NAME", "metacloud"),
            usage_raw_retention_days=_int(e, "USAGE_RAW_RETENTION_DAYS", 400),
            housekeeping_keep_days=keep_days,
            smtp_url=e.get("SMTP_URL") or None,
            mail_from=e.get("MAIL_FROM", "Metacloud <no-reply@metacloud.local>"),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def sqlalchemy_url(self, url: str) -> str:
        """asyncpg dialect URL for SQLAlchemy from a libpq-style URL."""
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise ValueError("DATABASE_URL must start with postgresql://")

    @property
    def owner_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("database_url is not resolved yet: start embedded Postgres or set DATABASE_URL")
        return self.database_url

    @property
    def resolved_app_database_url(self) -> str:
        return self.app_database_url or app_url_from_owner_url(
            self.owner_database_url, APP_ROLE, self.app_db_password
        )
