"""Runtime configuration, read once from `TIDINGS_*` environment variables.

Temporal's own connection settings (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY`, TLS, `temporal.toml` profiles) are read by Temporal's
envconfig in `tidings.connection`, not here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidings.models.contact import TimeZoneName

PACKAGE_DIR = Path(__file__).resolve().parent


class Settings(BaseSettings):
    """Everything tidings needs besides the Temporal connection."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".tidings"),
        description="Where the embedded defaults keep their files (SQLite, dev outbox).",
    )
    database_url: str = Field(
        default="",
        description="Any SQLAlchemy URL; empty means SQLite in the data dir.",
    )
    journeys_dir: Path = Field(default=PACKAGE_DIR / "journeys")
    templates_dir: Path = Field(default=PACKAGE_DIR / "templates")
    policy_file: Path = Field(default=PACKAGE_DIR / "policy.yaml")
    default_timezone: TimeZoneName = Field(
        default="UTC", description="Time zone of contacts that have none."
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 30.0
    email_from: str = "Tidings <hello@tidings.example>"

    history_event_limit: int = Field(
        default=2_000,
        ge=20,
        description="A journey continues as new once its history has this many events.",
    )

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'tidings.db').resolve()}"
        return self

    @property
    def outbox_dir(self) -> Path:
        """The dev SMTP server's Maildir (used by `tidings dev` and `tidings outbox`)."""
        return self.data_dir / "outbox"
