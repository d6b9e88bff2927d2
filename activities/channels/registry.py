"""The providers of each channel, built from settings, in order of preference.

A provider takes part once its credentials are set; a channel with none
configured fails its sends with a message that says so (no silent drops).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from tidings.activities.channels import ChannelProvider, EmailProvider
from tidings.activities.channels.fcm import FcmConfig, FcmPush
from tidings.activities.channels.http import url_allowed
from tidings.activities.channels.inbox import InboxProvider
from tidings.activities.channels.sendgrid import SendGridConfig, SendGridEmail
from tidings.activities.channels.sendgrid_batch import BatchingSendGridEmail, BatchSettings
from tidings.activities.channels.slack import SlackConfig, SlackWebhook
from tidings.activities.channels.teams import TeamsConfig, TeamsWebhook
from tidings.activities.channels.twilio import TwilioConfig, TwilioSms
from tidings.activities.channels.vonage import VonageConfig, VonageSms
from tidings.activities.channels.webhook import StandardWebhook, WebhookConfig
from tidings.activities.channels.webpush import WebPush, WebPushConfig
from tidings.db.engine import Database
from tidings.errors import TidingsError
from tidings.push_subscriptions import is_web_push
from tidings.settings import Settings

P = TypeVar("P", ChannelProvider, EmailProvider)


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


def _webpush(s: Settings) -> ChannelProvider:
    return WebPush(
        WebPushConfig(
            vapid_private_key=s.webpush_vapid_private_key,
            subject=s.webpush_subject,
            ttl_seconds=s.webpush_ttl_seconds,
            topic_collapse=s.webpush_topic_collapse,
            allowed_hosts=tuple(s.webpush_allowed_hosts),
        )
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
    found["push"] = []
    if settings.fcm_project_id and settings.fcm_client_email and settings.fcm_private_key:
        found["push"] += [
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
    if settings.webpush_vapid_private_key:
        found["push"].append(_webpush(settings))
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
    names: Iterable[str],
    known: Mapping[str, Callable[[Settings], P | None]],
    settings: Settings,
) -> list[P]:
    """The providers `names` lists (TIDINGS_<CHANNEL>_PROVIDERS), in its order, leaving
    out those not configured; an unknown name is refused naming the setting."""
    names = list(names)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TidingsError(
            f"unknown {channel} provider {', '.join(unknown)}; "
            f"TIDINGS_{channel.upper()}_PROVIDERS takes {', '.join(known)}"
        )
    built = (known[name](settings) for name in names)
    return [provider for provider in built if provider is not None]


def email_providers(settings: Settings, smtp: EmailProvider) -> list[EmailProvider]:
    """The email providers in TIDINGS_EMAIL_PROVIDERS order, first preferred: `smtp`
    (given: tests and the dev server bring their own) and SendGrid once its key is set."""
    known: dict[str, Callable[[Settings], EmailProvider | None]] = {
        "smtp": lambda _: smtp,
        "sendgrid": _sendgrid,
    }
    providers = _ordered("email", dict.fromkeys(settings.email_providers), known, settings)
    if not providers:
        raise TidingsError(
            f"no email provider: TIDINGS_EMAIL_PROVIDERS lists "
            f"{', '.join(settings.email_providers) or 'none'}, and sendgrid takes part only "
            "once TIDINGS_SENDGRID_API_KEY is set; add smtp or set the key"
        )
    return providers


def _sendgrid(settings: Settings) -> EmailProvider | None:
    if not settings.sendgrid_api_key:
        return None
    config = SendGridConfig(settings.sendgrid_api_key, settings.sendgrid_base_url)
    if not settings.sendgrid_batch_purposes:
        return SendGridEmail(config)
    batching = BatchSettings(
        max_messages=settings.sendgrid_batch_max,
        linger_seconds=settings.sendgrid_batch_linger_ms / 1000,
    )
    return BatchingSendGridEmail(config, batching)


def chat_provider_for(url: str, providers: Sequence[ChannelProvider]) -> ChannelProvider:
    """The chat provider (Slack or Teams, with its wire format) whose allow-list admits
    a person's own webhook URL; else the first, which refuses it naming the setting."""
    for provider in providers:
        hosts = getattr(getattr(provider, "config", None), "allowed_hosts", ())
        if url_allowed(url, hosts):
            return provider
    return providers[0]


class NoProviderError(TidingsError):
    """The channel has providers, but none that can deliver to this address."""


def providers_for(
    channel: str, address: str, providers: Sequence[ChannelProvider]
) -> Sequence[ChannelProvider]:
    """The channel's providers that can deliver to `address`, first preferred. Push
    addresses are of two kinds: a browser's Web Push subscription goes to Web Push,
    an app's FCM token to FCM; the other channels' providers all take any address."""
    if channel != "push":
        return providers
    web = is_web_push(address)
    fitting = [p for p in providers if (p.name == WebPush.name) == web]
    if not fitting:
        raise NoProviderError(
            "the contact's push address is a Web Push subscription and Web Push is not "
            "configured: set TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY and TIDINGS_WEBPUSH_SUBJECT"
            if web
            else "the contact's push address is an FCM token and FCM is not configured: set "
            "TIDINGS_FCM_PROJECT_ID, TIDINGS_FCM_CLIENT_EMAIL and TIDINGS_FCM_PRIVATE_KEY"
        )
    return fitting
