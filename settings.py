"""Runtime configuration, read once from `TIDINGS_*` environment variables.

Temporal's own connection settings (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY`, TLS, `temporal.toml` profiles) are read by Temporal's
envconfig in `tidings.connection`, not here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tidings.errors import TidingsError
from tidings.models.contact import PhoneRegion, TimeZoneName
from tidings.models.primitives import Purpose

PACKAGE_DIR = Path(__file__).resolve().parent


def keep_secret_file(path: Path, make: Callable[[], str]) -> None:
    """Write `make()` to `path` unless it exists, readable by its owner only from the
    first byte; a process racing to make it too keeps the one already there."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as handle:
        handle.write(make())


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
    segments_dir: Path = Field(
        default=PACKAGE_DIR / "segments",
        description="Named segments that journeys' conditions ask about (contact.in_segment).",
    )
    policy_file: Path = Field(default=PACKAGE_DIR / "policy.yaml")
    directory_file: Path = Field(
        default=PACKAGE_DIR / "directory.yaml",
        description="Staff who approve and answer escalations: logins, roles, addresses.",
    )
    compliance_file: Path = Field(
        default=PACKAGE_DIR / "compliance.yaml",
        description="Compliance lint rules, checked on submit and at every send.",
    )
    send_drafts: bool = Field(
        default=False,
        description="Send the newest draft when no version is approved (local development only).",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Where recipients reach the HTTP service (unsubscribe links).",
    )
    secret_key: str = Field(
        default="",
        description="Signs unsubscribe links; empty means a key kept in the data dir.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    write_keys: str = Field(
        default="",
        description="The HTTP event API's write keys: `name:key` or `name:key:rate` (messages "
        "per second) entries, separated by commas. Empty: the API refuses every call "
        "(`tidings dev` makes a `dev` key).",
    )
    ingest_rate_limit: float = Field(
        default=1000, ge=0, description="Messages per second per write key; 0: no limit."
    )
    metrics_bind: str = Field(
        default="",
        description="host:port where the worker serves Prometheus metrics (/metrics): "
        "tidings' own and the Temporal SDK's. Empty: no endpoint.",
    )
    default_timezone: TimeZoneName = Field(
        default="UTC", description="Time zone of contacts that have none."
    )
    default_phone_region: PhoneRegion = Field(
        default="",
        description="Country (GB, US) whose numbering phone numbers written without + "
        "follow; empty: such numbers are refused.",
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 30.0
    smtp_record: str = Field(
        default="",
        description="The SMTP relay's record of what it accepted, asked when a send was cut "
        "short mid-hand-over: `maildir:PATH` (a Maildir the relay archives every accepted "
        "message into) or `postfix-log:PATH` (a Postfix mail log). Empty: such sends are "
        "`uncertain` (`tidings dev` uses its SMTP sink's Maildir).",
    )
    email_from: str = "Tidings <hello@tidings.example>"

    # Channel providers. A provider takes part once its credentials are set;
    # a channel's providers are tried in the order listed (failover).
    sms_providers: list[str] = Field(default=["twilio", "vonage"])
    chat_providers: list[str] = Field(default=["slack", "teams"])
    channel_rate_limits: dict[str, float] = Field(
        default={},
        description='Sends per second per channel, e.g. {"sms": 30, "email": 100}: enforced '
        "by the Temporal server on the channel's task queue, for all workers together.",
    )
    channel_rate_margin: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="The share of each channel's limit that sends are dispatched at: rate "
        "limiters let a send or two through early, and this keeps the vendor's busiest "
        "second under its limit.",
    )
    provider_attempts: int = Field(
        default=3, ge=1, description="Transient failures on one provider before the next."
    )
    sendgrid_api_key: str = Field(
        default="", description="With a key, SendGrid takes email when SMTP keeps failing."
    )
    sendgrid_base_url: str = "https://api.sendgrid.com"
    email_providers: list[str] = Field(
        default=["smtp", "sendgrid"],
        description="Email providers in order of preference (failover): smtp, sendgrid. "
        "SendGrid takes part once TIDINGS_SENDGRID_API_KEY is set.",
    )
    sendgrid_batch_purposes: list[Purpose] = Field(
        default=["marketing"],
        description="Purposes whose emails SendGrid may send many to a request "
        "(personalizations); empty: one request per message.",
    )
    sendgrid_batch_max: int = Field(
        default=500, ge=1, le=1000, description="Messages per batched SendGrid request (API: 1000)."
    )
    sendgrid_batch_linger_ms: float = Field(
        default=200,
        ge=0,
        description="How long a batch waits for more messages after its first, at most.",
    )
    sendgrid_webhook_key: str = Field(
        default="", description="The event webhook's verification key (base64 DER)."
    )
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from: str = ""
    twilio_base_url: str = "https://api.twilio.com"
    vonage_api_key: str = ""
    vonage_api_secret: str = ""
    vonage_from: str = ""
    vonage_base_url: str = "https://rest.nexmo.com"
    fcm_project_id: str = ""
    fcm_client_email: str = ""
    fcm_private_key: str = Field(default="", description="The service account's PEM key.")
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    fcm_base_url: str = "https://fcm.googleapis.com"
    webpush_vapid_private_key: str = Field(
        default="",
        description="The VAPID key (RFC 8292) Web Push messages are signed with: a P-256 "
        "private key as PEM (EC or PKCS8), or its raw 32 bytes in base64url (what "
        "`vapid --gen` or `web-push generate-vapid-keys` print). Browsers subscribe with its "
        "public key; a new key orphans every subscription made with the old one.",
    )
    webpush_subject: str = Field(
        default="",
        description="Who push services contact about your messages: a mailto: address or "
        "an https: URL; required with the VAPID key.",
    )
    webpush_ttl_seconds: dict[Purpose, int] = Field(
        default={"critical": 86_400, "transactional": 172_800, "service": 604_800,
                 "marketing": 2_419_200},
        description="How long a push service keeps a message for a device that is offline, "
        "per purpose: an alert is useless a day late; an offer may wait up to 4 weeks.",
    )  # fmt: skip
    webpush_topic_collapse: bool = Field(
        default=False,
        description="Send the journey step's topic as the Web Push Topic header: a newer "
        "message on the topic replaces one still waiting for an offline device.",
    )
    webpush_allowed_hosts: list[str] = Field(
        default=["fcm.googleapis.com", "updates.push.services.mozilla.com",
                 "*.push.apple.com", "*.notify.windows.com"],
        description="The push services subscriptions may point at (`*.` for subdomains): "
        "a contact's subscription is a URL tidings posts to, so others are refused.",
    )  # fmt: skip
    slack_webhook_url: str = ""
    teams_webhook_url: str = ""
    webhook_url: str = ""
    webhook_secret: str = Field(default="", description="Standard Webhooks secret (whsec_...).")
    # Where a contact's own webhook URL (its chat or webhook address) may point:
    # host names, `*.` for subdomains. Anything else is refused, so a contact's
    # address cannot aim tidings at an internal service.
    slack_allowed_hosts: list[str] = Field(default=["hooks.slack.com"])
    teams_allowed_hosts: list[str] = Field(default=["*.webhook.office.com", "*.logic.azure.com"])
    webhook_allowed_hosts: list[str] = Field(
        default=[], description="None by default: contacts' webhook URLs are refused."
    )

    history_event_limit: int = Field(
        default=2_000,
        ge=20,
        description="A journey continues as new once its history has this many events.",
    )

    # Payload encryption (tidings.codec) and the codec server the Temporal UI
    # decodes through (starter/codec_http.py).
    payload_keys: str = Field(
        default="",
        description="`id:base64key` pairs separated by commas: the first encrypts payloads, "
        "all decrypt. Empty: the data dir's dev key if `tidings dev` made one, else "
        "payloads are stored unencrypted.",
    )
    codec_tokens: list[str] = Field(
        default=[],
        description="Bearer tokens of the operators the codec server decodes payloads for.",
    )
    codec_cors_origins: list[str] = Field(
        default=[],
        description="Origins of the Temporal UI that may call the codec server from a browser.",
    )
    codec_allow_loopback_ui: bool = Field(
        default=False,
        description="Decode for a listed UI origin calling from this machine without a token "
        "(`tidings dev` only: anyone on the machine could then decode).",
    )

    @field_validator("smtp_record")
    @classmethod
    def _known_record(cls, value: str) -> str:
        from tidings.activities.channels.relay_record import parse  # settings load first

        parse(value)
        return value

    @field_validator("webpush_subject")
    @classmethod
    def _webpush_subject(cls, value: str) -> str:
        """RFC 8292's `sub`: how a push service reaches the sender (empty: Web Push is off)."""
        text = value.strip()
        mailto = text.startswith("mailto:") and "@" in text
        if text and not (mailto or (text.startswith("https://") and len(text) > 8)):
            raise ValueError(
                f"TIDINGS_WEBPUSH_SUBJECT {value!r} is not a mailto: address or https: URL; "
                "push services require one of them, e.g. mailto:push@example.com"
            )
        return text

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'tidings.db').resolve()}"
        return self

    def signing_key(self, *, create: bool = True) -> str:
        """The configured secret, or one generated once and kept in the data dir
        (`create=False`: never make one up, for commands that check old signatures).

        Links signed with it must keep working for years: changing it breaks
        every unsubscribe link already sent.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if not path.exists() and not create:
            raise TidingsError(
                f"no secret key: TIDINGS_SECRET_KEY is not set and {path} does not exist; "
                "use the workers' secret (set TIDINGS_SECRET_KEY, or --data-dir for theirs)"
            )
        keep_secret_file(path, lambda: secrets.token_urlsafe(32))
        return path.read_text().strip()

    def audit_key(self, *, create: bool = True) -> bytes:
        """Seals the audit log's hash chains; derived from `signing_key()`, so it is not
        in the database (database access alone cannot forge a chain) and knowing it
        tells nothing about the key that signs links. A changed secret makes
        `tidings audit verify` report every record sealed before the change."""
        secret = self.signing_key(create=create)
        return hmac.new(secret.encode(), b"tidings-audit-chain", hashlib.sha256).digest()

    def dispatch_rate(self, channel: str) -> float | None:
        """Sends per second a channel's queue dispatches at, or None when unlimited."""
        limit = self.channel_rate_limits.get(channel)
        return None if limit is None else limit * self.channel_rate_margin

    @property
    def provider_outbox(self) -> Path:
        """What the dev stand-ins for SMS, push, chat and webhook vendors received."""
        return self.data_dir / "provider-outbox.jsonl"

    @property
    def receipts_dir(self) -> Path:
        """Sends a provider accepted that the database has yet to record (see receipts.py)."""
        return self.data_dir / "receipts"

    @property
    def outbox_dir(self) -> Path:
        """The dev SMTP server's Maildir (used by `tidings dev` and `tidings outbox`)."""
        return self.data_dir / "outbox"
