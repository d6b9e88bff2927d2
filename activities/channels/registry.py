"""The providers of each channel, built from settings, in order of preference.

A provider takes part once its credentials are set; a channel with none
configured fails its sends with a message that says so (no silent drops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tidings.activities.channels import ChannelProvider, EmailProvider
from tidings.activities.channels.fcm import FcmConfig, FcmPush
from tidings.activities.channels.http import url_allowed
from tidings.activities.channels.inbox import InboxProvider
from tidings.activities.channels.sendgrid import SendGridConfig, SendGridEmail
from tidings.activities.channels.slack import SlackConfig, SlackWebhook
from tidings.activities.channels.teams import TeamsConfig, TeamsWebhook
from tidings.activities.channels.twilio import TwilioConfig, TwilioSms
from tidings.activities.channels.vonage import VonageConfig, VonageSms
from tidings.activities.channels.webhook import StandardWebhook, WebhookConfig
from tidings.db.engine import Database
from tidings.errors import TidingsError
from tidings.settings import Settings


def _twilio(s: Settings) -> ChannelProvider | None:
    if not (s.twilio_account_sid and s.twilio_auth_token and s.twilio_from):
        return None
    return TwilioSms(
        TwilioConfig(s.twilio_account_sid, s.twilio_auth_token, s.twilio_from, s.twilio_base_url)
    )


def _vonage(s: Settings) -> ChannelProvider | None:
    if not (s.vonage_api_key and s.vonage_api_secret and s.vonage_from):
        return None
    return VonageSms(
        VonageConfig(s.vonage_api_key, s.vonage_api_secret, s.vonage_from, s.vonage_base_url)
    )


def _slack(s: Settings) -> ChannelProvider | None:
    if not s.slack_webhook_url:
        return None
    return SlackWebhook(
        SlackConfig(s.slack_webhook_url, allowed_hosts=tuple(s.slack_allowed_hosts))
    )


def _teams(s: Settings) -> ChannelProvider | None:
    if not s.teams_webhook_url:
        return None
    return TeamsWebhook(
        TeamsConfig(s.teams_webhook_url, allowed_hosts=tuple(s.teams_allowed_hosts))
    )


SMS: dict[str, Callable[[Settings], ChannelProvider | None]] = {
    "twilio": _twilio,
    "vonage": _vonage,
}
CHAT: dict[str, Callable[[Settings], ChannelProvider | None]] = {
    "slack": _slack,
    "teams": _teams,
}


def channel_providers(settings: Settings, database: Database) -> dict[str, list[ChannelProvider]]:
    """channel -> its configured providers, first preferred."""
    found: dict[str, list[ChannelProvider]] = {
        "sms": _ordered("sms", settings.sms_providers, SMS, settings),
        "chat": _ordered("chat", settings.chat_providers, CHAT, settings),
        "in_app": [InboxProvider(database)],
    }
    if settings.fcm_project_id and settings.fcm_client_email and settings.fcm_private_key:
        found["push"] = [
            FcmPush(
                FcmConfig(
                    project_id=settings.fcm_project_id,
                    client_email=settings.fcm_client_email,
                    private_key_pem=settings.fcm_private_key,
                    token_url=settings.fcm_token_url,
                    base_url=settings.fcm_base_url,
                )
            )
        ]
    if settings.webhook_url and settings.webhook_secret:
        found["webhook"] = [
            StandardWebhook(
                WebhookConfig(
                    secret=settings.webhook_secret,
                    default_url=settings.webhook_url,
                    allowed_hosts=tuple(settings.webhook_allowed_hosts),
                )
            )
        ]
    return {channel: providers for channel, providers in found.items() if providers}


def _ordered(
    channel: str,
    names: list[str],
    known: dict[str, Callable[[Settings], ChannelProvider | None]],
    settings: Settings,
) -> list[ChannelProvider]:
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TidingsError(
            f"unknown {channel} provider {', '.join(unknown)}; "
            f"TIDINGS_{channel.upper()}_PROVIDERS takes {', '.join(known)}"
        )
    built = (known[name](settings) for name in names)
    return [provider for provider in built if provider is not None]


def email_fallbacks(settings: Settings) -> list[EmailProvider]:
    """Email providers after SMTP, in order: SendGrid once its key is set."""
    if not settings.sendgrid_api_key:
        return []
    return [SendGridEmail(SendGridConfig(settings.sendgrid_api_key, settings.sendgrid_base_url))]


def chat_provider_for(url: str, providers: Sequence[ChannelProvider]) -> ChannelProvider:
    """The chat provider (Slack or Teams, with its wire format) whose allow-list admits
    a person's own webhook URL; else the first, which refuses it naming the setting."""
    for provider in providers:
        hosts = getattr(getattr(provider, "config", None), "allowed_hosts", ())
        if url_allowed(url, hosts):
            return provider
    return providers[0]
